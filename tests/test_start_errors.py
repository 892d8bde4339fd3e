"""Settings and options a process cannot start with: one line naming the variable or option,
exit 2 for a malformed or unusable value (docs/operations.md, Configuration), exit 1 for one
that is well formed but taken (a port, a data dir another process holds); never a traceback."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pymongo import MongoClient

from gateway.auth.keyring import KeyRing
from gateway.auth.secretbox import SecretBox
from gateway.config import ConfigError, Settings
from tests.processes import free_port
from tests.support import SECRET_KEY, gateway_command


def _environment(**env: str) -> dict[str, str]:
    return {
        **os.environ,
        "GATEWAY_SECRET_KEY": SECRET_KEY,
        "GATEWAY_LOG_JSON": "false",
        "MONGODB_URI": "",
        **env,
    }


def _gateway(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=_environment(**env),
    )


def _refused_at_once(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`gateway ARGS` refused before it starts anything, run in this process
    (`gateway_command`): its settings and arguments are read as a child reads them, without the
    interpreter's start and the gateway's imports. What only a process shows (its exit, its
    start) stays tested with real ones (`_gateway`, here and in tests/test_cli.py)."""
    return gateway_command(*args, env=_environment(**env))


def _refused(result: subprocess.CompletedProcess[str], status: int, *said: str) -> None:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, result.stderr
    for text in said:
        assert text in lines[0], result.stderr
    assert "embedded database started" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("GATEWAY_SCHEMA_DIR", "{tmp}/nowhere", "does not exist"),
        ("GATEWAY_SCHEMA_DIR", "{tmp}", "has no entities/ directory"),
        ("GATEWAY_DATA_DIR", "{tmp}/file", "is not a directory"),
        ("GATEWAY_DATA_DIR", "{tmp}/file/data", "cannot be created: {tmp}/file is not a directory"),
        ("GATEWAY_DATA_DIR", "/proc/gateway-data", "/proc/gateway-data"),
        ("PROMETHEUS_MULTIPROC_DIR", "{tmp}/file", "is not a directory"),
        ("GATEWAY_PUBLIC_URL", "http://", "a host is required"),
        ("GATEWAY_PUBLIC_URL", "https://exa mple.com/x", "no blanks"),
        ("GATEWAY_PUBLIC_URL", "http://gw.example.com:99999", "Port out of range"),
        ("GATEWAY_PUBLIC_URL", "http://gw.example.com:0", "the port must be 1-65535"),
        ("GATEWAY_PUBLIC_URL", "https://gw.example.com/?a=1", "no user, query or fragment"),
        ("GATEWAY_PUBLIC_URL", "ftp://gw.example.com", "http(s) URL"),
        ("GATEWAY_ADMIN_JWKS_URL", "http://", "a host is required"),
        ("GATEWAY_WORKERS", ", ,", "no job named"),
    ],
)
def test_an_unusable_setting_stops_serve_in_one_line_naming_it(
    tmp_path: Path, variable: str, value: str, said: str
) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    env = {
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "GATEWAY_ADMIN_JWT_AUDIENCE": "gateway",
        variable: value.format(tmp=tmp_path),
    }
    if variable == "PROMETHEUS_MULTIPROC_DIR" or value.startswith("/proc"):
        # In a real process: prometheus_client reads PROMETHEUS_MULTIPROC_DIR once, when it is
        # first imported, which this process did long before; a data dir the system refuses
        # is found once the port is bound.
        result = _gateway("serve", "--port", str(free_port()), **env)
    else:
        # On a port in use: a setting taken by mistake gets as far as the port, refused there
        # (exit 1) before anything starts, instead of serving in this process.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = str(taken.getsockname()[1])
            result = _refused_at_once("serve", "--port", port, **env)
    _refused(result, 2, "configuration error", variable, said.format(tmp=tmp_path))


def test_a_worker_s_jobs_of_commas_only_are_refused() -> None:
    result = _gateway("worker", "--jobs", ",")
    assert result.returncode == 2 and "--jobs" in result.stderr and "no job named" in result.stderr


def test_urls_with_a_host_are_taken() -> None:
    taken = ("https://gw.example.com", "http://[::1]:8080/base/", "https://gw.example.com:8443")
    for url in (*taken, "https://gw.example.com/@gw/"):  # an `@` in the path is a path's
        settings = Settings.from_env({"GATEWAY_PUBLIC_URL": url})
        assert settings.public_url == url
    with pytest.raises(ConfigError, match="GATEWAY_PUBLIC_URL"):
        Settings.from_env({"GATEWAY_PUBLIC_URL": "http://user:pw@gw.example.com"})


@pytest.mark.parametrize(
    "url", ["https://gw.example.com#", "https://gw.example.com?", "https://@gw.example.com"]
)
def test_a_public_url_with_an_empty_fragment_query_or_user_is_refused(url: str) -> None:
    """Empty, they are none to a URL parser, and a trigger URL appended after `#` was a
    fragment (`https://gw.example.com#/hooks/trg_…`)."""
    with pytest.raises(ConfigError, match="GATEWAY_PUBLIC_URL"):
        Settings.from_env({"GATEWAY_PUBLIC_URL": url})


def test_a_public_url_s_scheme_in_capitals_is_read_as_its_scheme() -> None:
    """`HTTPS://…` is https: the admin UI's cookies are Secure under it (they were not)."""
    settings = Settings.from_env({"GATEWAY_PUBLIC_URL": "HTTPS://gw.example.com/base"})
    assert settings.public_url == "https://gw.example.com/base"


@pytest.mark.parametrize(
    "token",
    ["scrape-me", "a 64-character token with spaces in it, never sent as set ......", "é" * 20],
)
def test_a_metrics_token_too_short_or_no_bearer_token_is_refused_without_showing_it(
    token: str,
) -> None:
    """A short one is guessed within the budget of refused calls; one outside RFC 6750's
    token characters can never arrive in an `Authorization` header as set (every scrape a
    401)."""
    with pytest.raises(ConfigError, match="GATEWAY_METRICS_TOKEN") as refused:
        Settings.from_env({"GATEWAY_METRICS_TOKEN": token})
    assert token not in str(refused.value)
    hexed = "0f" * 32  # `openssl rand -hex 32`
    taken = Settings.from_env({"GATEWAY_METRICS_TOKEN": hexed}).metrics_token
    assert taken is not None and taken.value == hexed


@pytest.mark.parametrize("days", ["99999999999", "800000", "10001"])
def test_cleanup_days_beyond_any_history_is_an_argument_error(tmp_path: Path, days: str) -> None:
    """The value reached the database: `Python int too large to convert to C int`, `date value
    out of range`, after it had opened."""
    result = _refused_at_once(
        "cleanup", "--days", days, "--dry-run", GATEWAY_DATA_DIR=str(tmp_path)
    )
    assert result.returncode == 2, result.stderr
    assert "--days: must be at most 10000" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "db").exists()


def test_demo_partners_on_a_port_in_use_or_a_host_that_is_none_say_which_option() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = _gateway("demo-partners", "--port", port, "--smtp-port", str(free_port()))
    _refused(busy, 1, f"127.0.0.1:{port} is already in use", "(--port)")
    nowhere = _gateway("demo-partners", "--host", "999.1.1.1", "--port", str(free_port()))
    _refused(nowhere, 1, "cannot listen on 999.1.1.1", "(--host)")


@pytest.mark.parametrize("command", [["worker", "--jobs", "delivery"], ["serve"]])
def test_a_process_with_another_secret_key_than_the_database_s_is_refused(
    tmp_path: Path, mongodb_uri: str, command: list[str]
) -> None:
    """Its keys open nothing the other processes sealed (a worker on another host, started
    with another GATEWAY_SECRET_KEY or none): it was ready and parked every signed delivery."""
    env = {
        "MONGODB_URI": mongodb_uri,
        "GATEWAY_DATABASE": f"keycheck_{os.getpid()}_{command[0]}",
        "GATEWAY_DATA_DIR": str(tmp_path),
    }
    # The first process, sealing the key check: run in this process (`gateway_command`).
    first = gateway_command("reseal", env=_environment(**env))
    assert first.returncode == 0, first.stderr
    other = "another-secret-key-of-another-host-0000000"
    result = _gateway(*command, "--port", str(free_port()), **env, GATEWAY_SECRET_KEY=other)
    _refused(result, 2, "configuration error", "GATEWAY_SECRET_KEY", "none of its keys opens")


def test_a_backup_taken_mid_rotation_started_on_the_new_key_alone_is_refused(
    tmp_path: Path, mongodb_uri: str
) -> None:
    """The database as a backup taken between `<new>,<old>` and `gateway reseal` left it,
    restored once the rotation is finished: the key check opens under `<new>`, what was
    sealed under `<old>` would not. It started ready and failed every signed delivery."""
    env = {
        "MONGODB_URI": mongodb_uri,
        "GATEWAY_DATABASE": f"keylist_{os.getpid()}",
        "GATEWAY_DATA_DIR": str(tmp_path),
    }
    new = "the-new-secret-key-of-a-rotation-00000000"
    for keys in (SECRET_KEY, f"{new},{SECRET_KEY}"):  # the first start, then step 2
        step = gateway_command(
            "reseal", "--dry-run", env=_environment(**env, GATEWAY_SECRET_KEY=keys)
        )
        assert step.returncode == 0, step.stderr
        if keys == SECRET_KEY:  # a partner's credentials, sealed under the old key
            sealed = SecretBox(KeyRing([SECRET_KEY])).seal({"token": "x"})
            with MongoClient(mongodb_uri) as client:
                partners = client[env["GATEWAY_DATABASE"]]["partners"]
                partners.insert_one({"tenant": "acme", "name": "ERP", "auth_sealed": sealed})
    result = _gateway("serve", "--port", str(free_port()), **env, GATEWAY_SECRET_KEY=new)
    _refused(
        result,
        2,
        "configuration error",
        "GATEWAY_SECRET_KEY lacks a key the stored secrets are sealed under",
        "none opens partners/",
        "`<new>,<old>`), then run `gateway reseal`",
    )


def _with_open_files(soft: int, hard: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return limit


@pytest.mark.parametrize(
    ("soft", "hard", "said"),
    [
        (512, 8192, "open-file limit raised from 512 to 3024 (hard 8192)"),
        (512, 1536, "GATEWAY_OUTBOUND_CONNECTIONS=2000 needs an open-file limit of about 3024"),
    ],
)
def test_a_process_raises_its_open_file_limit_to_its_outbound_capacity_or_says_it_cannot(
    tmp_path: Path, mongodb_uri: str, soft: int, hard: int, said: str
) -> None:
    """A plain host or systemd service starts with a soft limit of 1,024, below the default
    outbound capacity (2000): the process raises it towards the hard limit, and warns
    naming both settings when the hard limit is too low (it ran out of descriptors first)."""
    env = {
        **os.environ,
        "GATEWAY_SECRET_KEY": SECRET_KEY,
        "GATEWAY_LOG_JSON": "false",
        "MONGODB_URI": mongodb_uri,
        "GATEWAY_DATABASE": f"openfiles_{os.getpid()}_{soft}_{hard}",
        "GATEWAY_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "reseal", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
        preexec_fn=_with_open_files(soft, hard),
    )
    assert result.returncode == 0, result.stderr
    assert said in result.stderr, result.stderr
