"""The `gateway` command as an operator runs it: a real process, real signals."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway import __version__
from gateway.__main__ import _parser
from gateway.auth.keyring import KeyRing
from gateway.auth.tokens import verify_admin_token
from gateway.config import ConfigError, Settings
from gateway.entities import Origin
from gateway.schemas.registry import default_schema_dir
from gateway.services import Services
from gateway.store.client import check_uri
from gateway.web.state import services_key
from tests.processes import Gateway, beside, free_port, skewed_gateway
from tests.support import SECRET_KEY, auth, cli_env, gateway_command, run_command


def _command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`gateway ARGS` in this process (`gateway_command`), for a command refused before it
    starts anything (a usage or configuration error); `_run` runs the real console script."""
    return gateway_command(*args, env={**os.environ, **(env or {})})


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_every_command() -> None:
    result = _command("--help")
    assert result.returncode == 0
    for command in ("serve", "worker", "admin-token", "mapping", "demo"):
        assert command in result.stdout


async def test_admin_token_prints_the_token_alone(
    settings: Settings, mongodb_uri: str, services: Services
) -> None:
    args = ("admin-token", "--tenant", "acme", "--role", "viewer", "--ttl", "2h")
    # In this process (`run_command`): what it prints is the question; a real `admin-token`
    # process: the clock-skew test below.
    result = await run_command(cli_env(settings, mongodb_uri), *args)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    claims = verify_admin_token(KeyRing.from_secret(SECRET_KEY), token)
    assert (claims.tenant, claims.role) == ("acme", "viewer")


@pytest.mark.parametrize("skew", [120, -3600])
async def test_admin_token_of_a_host_whose_clock_is_off_is_accepted_for_its_ttl(
    client: Any, mongodb_uri: str, tmp_path: Path, skew: int
) -> None:
    """Its iat and exp follow the database server's clock, as every time the gateway stamps
    (docs/operations.md): signed with the host's clock before the database was opened, a
    host 120 s ahead printed a token refused as issued in the future, one an hour behind a
    30-minute token already expired."""
    settings = client.app[services_key].settings
    env = beside(tmp_path, mongodb_uri, settings.database)
    proc = await asyncio.create_subprocess_exec(
        *skewed_gateway(skew), "admin-token", "--tenant", "acme", "--ttl", "30m",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    token = out.decode().strip()
    resp = await client.get("/api/v1/triggers", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200, (skew, resp.status, await resp.text())
    claims = verify_admin_token(KeyRing.from_secret(SECRET_KEY), token)
    assert claims.expires_at is not None
    lifetime = (claims.expires_at - datetime.now(UTC)).total_seconds()
    assert 29 * 60 < lifetime <= 30 * 60, lifetime


def test_malformed_setting_is_named_and_exits_2() -> None:
    result = _command("admin-token", "--tenant", "acme", env={"GATEWAY_PORT": "eighty"})
    assert result.returncode == 2
    assert "GATEWAY_PORT" in result.stderr and "eighty" in result.stderr


def test_bad_ttl_is_a_usage_error(tmp_path: Path) -> None:
    result = _command(
        "admin-token",
        "--tenant",
        "acme",
        "--ttl",
        "forever",
        env={"GATEWAY_SECRET_KEY": SECRET_KEY, "GATEWAY_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 2 and "--ttl" in result.stderr


def test_a_token_for_a_tenant_no_user_could_belong_to_is_refused(tmp_path: Path) -> None:
    env = {"GATEWAY_SECRET_KEY": SECRET_KEY, "GATEWAY_DATA_DIR": str(tmp_path)}
    for tenant in (" ", "", "acme corp", "x" * 101, "acme\n"):
        result = _command("admin-token", "--tenant", tenant, env=env)
        assert result.returncode == 2 and result.stdout == ""
        assert "a tenant is 1-100 letters, digits, _.-" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["trigger", "create", "--name", "sp", "--entity-type", "driver"],
        ["trigger", "list"],
        ["ui-user", "create", "--email", "ops@example.com"],
        ["ui-user", "list"],
        ["fold-failures"],
        ["demo"],
        ["admin-token"],
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_every_command_refuses_a_tenant_no_token_could_name(
    tmp_path: Path, command: list[str]
) -> None:
    """`trigger create --tenant 'acme '` (a CRLF env file's value) stored a trigger whose
    printed token was refused on every call, under a tenant no admin token can name: every
    command checks `--tenant` as `admin-token` does, before it touches anything."""
    env = {"GATEWAY_SECRET_KEY": SECRET_KEY, "GATEWAY_DATA_DIR": str(tmp_path)}
    for tenant in ("acme ", "acme\r", "b a d", "x" * 300):
        result = _command(*command, "--tenant", tenant, env=env)
        assert result.returncode == 2 and result.stdout == ""
        assert f"a tenant is 1-100 letters, digits, _.-, not {tenant!r}" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no database started, no key written


async def test_admin_token_with_a_key_the_database_refuses_prints_no_token(
    settings: Settings, mongodb_uri: str, services: Services
) -> None:
    """`admin-token` never looked at the database: a typo'd GATEWAY_SECRET_KEY printed a
    token (exit 0) that the gateway refused on every call. It refuses as the other one-shot
    commands do."""
    env = {**cli_env(settings, mongodb_uri), "GATEWAY_SECRET_KEY": "C" * 32}
    result = await run_command(env, "admin-token", "--tenant", "acme")  # a real one: above
    assert result.returncode == 2 and result.stdout == ""
    assert "GATEWAY_SECRET_KEY: none of its keys opens the key check" in result.stderr


@pytest.mark.parametrize(
    ("command", "stdin"),
    [
        (["ui-user", "create", "--tenant", "acme", "--email", "ops@example.com"], "a long pass 1"),
        (["trigger", "create", "--tenant", "acme", "--name", "sp", "--entity-type", "driver"], ""),
        (["cleanup"], ""),
        (["reseal"], ""),
        (["fold-failures"], ""),
        (["admin-token", "--tenant", "acme"], ""),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else "",
)
def test_a_one_shot_command_on_a_data_dir_without_a_database_refuses_to_make_one(
    tmp_path: Path, command: list[str], stdin: str
) -> None:
    """On a data dir holding no database (a typo, a cron job's relative `./var` from another
    directory) a one-shot command started a new, empty one and reported success: a user, a
    trigger, a cleanup "of 0" against a database no gateway serves. Refused before anything
    starts: run in this process (`gateway_command`)."""
    (tmp_path / "secret_key").write_text(SECRET_KEY)
    env = {**os.environ, "GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_SECRET_KEY": ""}
    env.pop("MONGODB_URI", None)
    result = gateway_command(*command, env=env, stdin=stdin + "\n")
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr.splitlines() == [
        f"configuration error: GATEWAY_DATA_DIR {tmp_path} holds no database ({tmp_path}/db "
        "does not exist): set GATEWAY_DATA_DIR to the gateway's data directory (or "
        "MONGODB_URI to its database); `gateway serve` creates it at its first start"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret_key"]


@pytest.mark.parametrize("content", ["", "\n", "short\n"], ids=["empty", "blank", "truncated"])
@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["admin-token", "--tenant", "acme"]])
def test_a_damaged_generated_key_file_is_one_line_naming_the_file(
    tmp_path: Path, content: str, command: list[str]
) -> None:
    """An empty or truncated `GATEWAY_DATA_DIR/secret_key` (a crash while it was written) was
    a traceback blaming the unset GATEWAY_SECRET_KEY: the operator was sent to the wrong place.
    Refused before anything starts: run in this process (`_command`)."""
    (tmp_path / "secret_key").write_text(content)
    env = {"GATEWAY_SECRET_KEY": "", "GATEWAY_DATA_DIR": str(tmp_path), "MONGODB_URI": ""}
    result = _command(*command, env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"configuration error: GATEWAY_SECRET_KEY is unset and the key file "
        f"{tmp_path}/secret_key is damaged (empty, or a key shorter than 16 characters): "
        "restore it from a backup of the data directory, or set GATEWAY_SECRET_KEY to the "
        "gateway's key"
    ]
    assert (tmp_path / "secret_key").read_text() == content  # left for the operator


def test_the_generated_key_file_is_written_whole_and_alone(tmp_path: Path) -> None:
    """Written under another name, synced, then linked to `secret_key`: nothing else is left
    in the data dir, and the key is one the next process reads back."""
    from gateway.services import load_secret_key

    settings = Settings.from_env({"GATEWAY_DATA_DIR": str(tmp_path)})
    key = load_secret_key(settings)
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]
    assert (tmp_path / "secret_key").read_text() == key + "\n"
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert load_secret_key(settings, generate=False) == key


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_serve_on_the_embedded_database_stops_gracefully_on_sigterm_or_sighup(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGHUP (a terminal or SSH session closed, a `kill -HUP` for a log reopen) killed the
    process outright, its database stopped by its launcher under the requests in flight."""
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(tmp_path),
        "GATEWAY_PORT": str(port),
        "GATEWAY_SECRET_KEY": SECRET_KEY,
    }
    env.pop("MONGODB_URI", None)
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        try:
            # The server says where it listens once the database is up and indexes exist.
            for line in proc.stderr:
                if "gateway listening on" in line:
                    break
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                assert r.status == 200
            proc.send_signal(sig)
            assert proc.wait(timeout=30) == 0
            assert "embedded database stopped" in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
    # The embedded database child was stopped with the gateway, not orphaned.
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "db")], capture_output=True)
    assert leftover.stdout == b""


def test_serve_runs_on_uvloop_unless_the_setting_asks_for_asyncio(
    tmp_path: Path, mongodb_uri: str
) -> None:
    for setting, loop in ((None, "uvloop"), ("asyncio", "asyncio")):
        env = {"MONGODB_URI": mongodb_uri, "GATEWAY_DATABASE": f"loop_{loop}"}
        gateway = Gateway(
            tmp_path / loop, **env, **({"GATEWAY_EVENT_LOOP": setting} if setting else {})
        )
        try:
            status, metrics = gateway.start().get("/metrics")
        finally:
            gateway.stop()
        assert status == 200
        assert f'gateway_build_info{{event_loop="{loop}",version="{__version__}"}} 1.0' in metrics


def test_an_unknown_event_loop_is_a_configuration_error() -> None:
    result = _command("admin-token", "--tenant", "acme", env={"GATEWAY_EVENT_LOOP": "trio"})
    assert result.returncode == 2
    assert "GATEWAY_EVENT_LOOP must be one of uvloop, asyncio, got 'trio'" in result.stderr


def test_an_unknown_forwarded_header_is_a_configuration_error() -> None:
    result = _command(
        "admin-token", "--tenant", "acme", env={"GATEWAY_FORWARDED_HEADER": "x-real-ip"}
    )
    assert result.returncode == 2
    assert (
        "GATEWAY_FORWARDED_HEADER must be one of x-forwarded-for, forwarded, got 'x-real-ip'"
        in result.stderr
    )


def test_an_unknown_log_level_is_a_configuration_error() -> None:
    result = _command("admin-token", "--tenant", "acme", env={"GATEWAY_LOG_LEVEL": "loud"})
    assert result.returncode == 2
    assert "GATEWAY_LOG_LEVEL must be one of DEBUG, INFO, WARNING" in result.stderr
    assert "'loud'" in result.stderr and "Traceback" not in result.stderr


def test_a_short_secret_key_is_a_configuration_error_that_does_not_show_it() -> None:
    result = _command(
        "admin-token", "--tenant", "acme", env={"GATEWAY_SECRET_KEY": f"{SECRET_KEY},hunter2"}
    )
    assert result.returncode == 2
    assert "configuration error: GATEWAY_SECRET_KEY" in result.stderr
    assert "at least 16 characters" in result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_a_database_name_mongodb_refuses_is_a_configuration_error() -> None:
    result = _command("admin-token", "--tenant", "acme", env={"GATEWAY_DATABASE": "rabbot.prod"})
    assert result.returncode == 2
    assert "configuration error: GATEWAY_DATABASE" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_log_level_in_any_case_is_taken() -> None:
    assert Settings.from_env({"GATEWAY_LOG_LEVEL": "warning"}).log_level == "WARNING"


def test_identity_provider_without_an_audience_is_a_configuration_error() -> None:
    result = _command(
        "admin-token",
        "--tenant",
        "acme",
        env={"GATEWAY_ADMIN_JWKS_URL": "https://idp.example.com/certs"},
    )
    assert result.returncode == 2 and "GATEWAY_ADMIN_JWT_AUDIENCE" in result.stderr


async def test_worker_relays_events_and_stops_on_sigterm(
    settings: Settings, mongodb_uri: str, services: Services
) -> None:
    await services.entities.create("acme", "vehicle", {"plate": "ABC1D23"}, Origin("admin", "t"))
    env = cli_env(settings, mongodb_uri)
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            await asyncio.to_thread(_wait_for_line, proc, "gateway worker running")
            # The worker process, not this one, moves the event out of the entity's outbox.
            async with asyncio.timeout(20):
                while not await services.store.events.find("acme", {}, before=None, limit=1):
                    await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def _wait_for_line(proc: subprocess.Popen[str], text: str) -> str:
    assert proc.stderr is not None
    for line in proc.stderr:
        if text in line:
            return line
    raise AssertionError(f"the process ended without printing {text!r}")


async def test_the_start_line_names_the_socket_bound_not_the_public_url(
    settings: Settings, mongodb_uri: str
) -> None:
    """`gateway listening on URL` is where this process listens (the port the system chose
    for port 0), not GATEWAY_PUBLIC_URL, a proxy's address in front of it."""
    env = {
        **cli_env(settings, mongodb_uri),
        "GATEWAY_PORT": "0",
        "GATEWAY_PUBLIC_URL": "https://gw.example.com",
    }
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            line = await asyncio.to_thread(_wait_for_line, proc, "gateway listening on")
            url = line.split("gateway listening on ", 1)[1].strip()
            assert re.fullmatch(r"http://127\.0\.0\.1:[1-9][0-9]*", url), line
            with await asyncio.to_thread(urllib.request.urlopen, f"{url}/healthz", timeout=5) as r:
                assert r.status == 200
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


async def test_a_gateway_on_port_0_hands_out_trigger_urls_on_the_port_it_bound(
    settings: Settings, mongodb_uri: str
) -> None:
    """GATEWAY_PORT=0 and no GATEWAY_PUBLIC_URL: the start line named the port the system
    chose, but the admin API's trigger URLs and `gateway trigger create`'s (through
    `serving_url`) named port 0, where nothing listens."""
    env = {**cli_env(settings, mongodb_uri), "GATEWAY_PORT": "0"}
    env.pop("GATEWAY_PUBLIC_URL", None)
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            line = await asyncio.to_thread(_wait_for_line, proc, "gateway listening on")
            url = line.split("gateway listening on ", 1)[1].strip()
            body = {"name": "port-zero", "entity_type": "vehicle", "methods": ["POST"]}
            request = urllib.request.Request(
                f"{url}/api/v1/triggers",
                data=json.dumps(body).encode(),
                headers={**auth(), "Content-Type": "application/json"},
            )
            with await asyncio.to_thread(urllib.request.urlopen, request, timeout=30) as r:
                assert json.loads(r.read())["url"].startswith(f"{url}/hooks/trg_")
            created = await run_command(
                env,
                "trigger",
                "create",
                "--tenant",
                "acme",
                "--name",
                "cli",
                "--entity-type",
                "vehicle",
            )
            assert created.returncode == 0, created.stderr
            assert json.loads(created.stdout)["url"].startswith(f"{url}/hooks/trg_")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
            # Stopped cleanly, it no longer names a URL: the next one-shot uses its own.
            assert not (settings.data_dir / "serving_url").exists()
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.parametrize(
    "recorded",
    [
        "{pid} {url}",  # a version that recorded the pid alone
        "{pid} 1 {boot} {url}",  # the pid's process started at another time (PID 1 again)
        "{pid} {start} another-boot-id {url}",  # another boot, or another host
    ],
)
async def test_a_serving_url_left_by_another_process_under_a_live_pid_is_not_believed(
    settings: Settings, mongodb_uri: str, recorded: str
) -> None:
    """A data dir copied to another host, or a container started again on the same volume:
    the `serving_url` left there names a pid that is alive (this test's, standing in for a
    reused pid, PID 1 in a container), not the gateway that wrote it. `gateway trigger
    create` handed out the old gateway's URL; it hands out its own."""
    stat = Path(f"/proc/{os.getpid()}/stat").read_text().rpartition(")")[2].split()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    old = "http://old-host.example:42874"
    line = recorded.format(pid=os.getpid(), url=old, boot=boot, start=stat[19])
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "serving_url").write_text(line + "\n")
    port = free_port()
    env = {**cli_env(settings, mongodb_uri), "GATEWAY_PORT": str(port)}
    env.pop("GATEWAY_PUBLIC_URL", None)
    args = ("trigger", "create", "--tenant", "acme", "--name", "moved", "--entity-type", "vehicle")
    created = await run_command(env, *args)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["url"].startswith(f"http://127.0.0.1:{port}/hooks/trg_")


async def test_the_serving_url_of_this_host_s_live_process_is_believed(
    settings: Settings, mongodb_uri: str
) -> None:
    """Its pid, start time and boot id all match (this process stands in for the gateway)."""
    from gateway import served_url

    live = replace(settings, public_url="http://gw.example:19401")
    assert served_url.record(live) is not None
    env = cli_env(settings, mongodb_uri)
    env.pop("GATEWAY_PUBLIC_URL", None)
    args = ("trigger", "create", "--tenant", "acme", "--name", "here", "--entity-type", "vehicle")
    created = await run_command(env, *args)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["url"].startswith("http://gw.example:19401/hooks/trg_")


async def test_demo_for_a_tenant_no_token_can_name_exits_2_before_seeding(
    settings: Settings, mongodb_uri: str
) -> None:
    """The demo's admin token is issued after seeding: a tenant the token refuses used to seed
    the whole demo into it, then exit 1 without the summary or a server."""
    env = {**cli_env(settings, mongodb_uri), "GATEWAY_PORT": str(free_port())}
    result = await asyncio.to_thread(_run, "demo", "--tenant", "acme corp", env=env)
    assert result.returncode == 2 and result.stdout == "", result
    assert "--tenant: a tenant is 1-100 letters, digits, _.-" in result.stderr


async def test_demo_seeds_then_serves_and_stops_on_sigterm(
    settings: Settings, mongodb_uri: str
) -> None:
    port = free_port()
    env = {**cli_env(settings, mongodb_uri), "GATEWAY_PORT": str(port)}
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            await asyncio.to_thread(_wait_for_line, proc, "gateway listening on")
            assert proc.stdout is not None
            summary = await asyncio.to_thread(_read_until, proc.stdout, "Try the curl examples")
            # The demo's loopback allowance is said where its operator reads the token.
            assert "DEMO ONLY: the SSRF guard lets every tenant here call 127.0.0.1 on any" in (
                summary
            )
            token = summary.split("export ADMIN_TOKEN=", 1)[1].split()[0]
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/entities/vehicle/ABC1D23",
                headers={"Authorization": f"Bearer {token}"},
            )
            with await asyncio.to_thread(urllib.request.urlopen, request, timeout=5) as answer:
                assert json.loads(answer.read())["plate"] == "ABC1D23"
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


async def test_demo_points_its_partners_at_the_ports_it_is_given(
    settings: Settings, mongodb_uri: str
) -> None:
    """`gateway demo --partners-port --smtp-port`: the demo's partners and e-mail channel call
    `gateway demo-partners` where it was moved to (8090 and 8025 were fixed), and the summary
    says how to start it there."""
    port, partners_port, smtp_port = free_port(), free_port(), free_port()
    env = {**cli_env(settings, mongodb_uri), "GATEWAY_PORT": str(port)}
    command = ["demo", "--partners-port", str(partners_port), "--smtp-port", str(smtp_port)]
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            await asyncio.to_thread(_wait_for_line, proc, "gateway listening on")
            assert proc.stdout is not None
            summary = await asyncio.to_thread(_read_until, proc.stdout, "demo-partners")
            assert f"`gateway demo-partners --port {partners_port} --smtp-port {smtp_port}`" in (
                summary
            )
            token = summary.split("export ADMIN_TOKEN=", 1)[1].split()[0]

            def read(path: str) -> Any:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/v1/{path}",
                    headers={"Authorization": f"Bearer {token}"},
                )
                with urllib.request.urlopen(request, timeout=5) as answer:
                    return json.loads(answer.read())

            partners = (await asyncio.to_thread(read, "partners"))["items"]
            local = {p["name"]: p["base_url"] for p in partners if p["name"] != "Geotab (demo)"}
            assert local == {
                name: f"http://127.0.0.1:{partners_port}/{name.lower()}"
                for name in ("HR", "ERP", "Zenvia", "FCM")
            }
            email = await asyncio.to_thread(read, "channels/email")
            assert (email["smtp"]["host"], email["smtp"]["port"]) == ("127.0.0.1", smtp_port)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_a_command_interrupted_while_the_embedded_database_starts_leaves_no_process(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(tmp_path),
        "GATEWAY_SECRET_KEY": SECRET_KEY,
        "GATEWAY_LOG_JSON": "false",
    }
    env.pop("MONGODB_URI", None)
    (tmp_path / "db").mkdir()  # a stopped gateway's (a one-shot command never makes one)
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "trigger", "list", "--tenant", "acme"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            _wait_for_line(proc, "embedded database started")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) in (0, 130)
        finally:
            if proc.poll() is None:
                proc.kill()
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "db")], capture_output=True)
    assert leftover.stdout == b""


def _read_until(stream: Any, text: str) -> str:
    lines = []
    for line in stream:
        lines.append(line)
        if text in line:
            break
    return "".join(lines)


def test_a_port_out_of_range_is_a_usage_error_of_every_command_that_listens(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`serve --port 99999` used to start, say it listened on 99999, and listen on 34463
    (the port modulo 65536) instead; -5 failed with a traceback once the database was up."""
    for argv in (
        ["serve", "--port", "99999"],
        ["serve", "--port", "-5"],
        ["demo", "--port", "65536"],
        ["demo-partners", "--port", "99999"],
        ["demo-partners", "--smtp-port", "x"],
        ["worker", "--port", "70000"],
    ):
        with pytest.raises(SystemExit) as exit_:
            _parser().parse_args(argv)
        assert exit_.value.code == 2, argv
        assert f"not a port: '{argv[-1]}'" in capsys.readouterr().err, argv
    assert _parser().parse_args(["serve", "--port", "0"]).port == 0
    assert _parser().parse_args(["demo-partners", "--smtp-port", "8025"]).smtp_port == 8025


def test_a_count_that_is_not_a_whole_number_is_named_in_the_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv, said in (
        (["serve", "--workers", "x"], "must be a whole number, not 'x'"),
        (["cleanup", "--days", "1.5"], "must be a whole number, not '1.5'"),
        (["cleanup", "--days", "0"], "must be at least 1"),
    ):
        with pytest.raises(SystemExit):
            _parser().parse_args(argv)
        err = capsys.readouterr().err
        assert said in err and "_positive" not in err, err


def test_a_group_of_commands_without_its_command_names_what_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for group in ("mapping", "trigger", "ui-user"):
        with pytest.raises(SystemExit):
            _parser().parse_args([group])
        err = capsys.readouterr().err
        assert "the following arguments are required: COMMAND" in err, err


def test_a_mongodb_uri_the_driver_cannot_parse_is_one_line_naming_it(tmp_path: Path) -> None:
    """Past its scheme, a URI the driver's parser refused (no host, a port out of range, an
    unescaped `@`) was a logged traceback, exit 1, the variable unnamed."""
    env = {"GATEWAY_SECRET_KEY": SECRET_KEY, "GATEWAY_DATA_DIR": str(tmp_path)}
    for uri, said in (
        ("mongodb://", "Must provide at least one hostname or IP"),
        ("mongodb://127.0.0.1:99999", "Port must be an integer between 0 and 65535"),
        ("mongodb://u:s3cret@@x", "Username and password must be escaped"),
        ("mongodb+srv://db.example.com:27017", None),
    ):
        result = _command("cleanup", "--dry-run", env={**env, "MONGODB_URI": uri})
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith("configuration error: MONGODB_URI is not a valid connection")
        assert said is None or said in line
        assert "s3cret" not in line
    assert list(tmp_path.iterdir()) == []


def test_a_mongodb_uri_option_with_a_value_the_driver_refuses_stops_the_start(
    tmp_path: Path,
) -> None:
    """`tls=yes` was dropped by the driver with a plain-text warning: the gateway connected
    without TLS (a mistyped readPreference read the primary, a mistyped authMechanism fell
    back to the default). An unknown option stays the driver's warning."""
    env = {"GATEWAY_SECRET_KEY": SECRET_KEY, "GATEWAY_DATA_DIR": str(tmp_path)}
    for option, said in (
        ("tls=yes", "tls"),
        ("ssl=on", "tls"),
        ("readPreference=secondaryPreferd", "read preference"),
        ("authMechanism=SCRAM-SHA-265", "authmechanism"),
        ("maxPoolSize=-1", "maxpoolsize"),
        ("tlsCAFile=/no/such/ca.pem", "tlscafile"),
    ):
        uri = f"mongodb://u:s3cret@127.0.0.1:1/?{option}"
        result = _command("cleanup", "--dry-run", env={**env, "MONGODB_URI": uri})
        assert result.returncode == 2, (option, result.stderr)
        [line] = result.stderr.splitlines()
        assert line.startswith("configuration error: MONGODB_URI "), line
        assert said in line.lower() and "s3cret" not in line
    check_uri("MONGODB_URI", "mongodb://u:p@db1/?replicaSet=rs0&someNewOption=1")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(180)  # two gateway processes started
def test_a_schema_dir_with_a_schema_it_cannot_use_stops_serve_at_start(tmp_path: Path) -> None:
    """A vehicle schema in GATEWAY_SCHEMA_DIR that is not JSON: `serve` logged a traceback
    and exited 1 without naming the variable, and `serve --workers 2` started the database
    and restarted its processes for ever. Both now exit 2 at start, in one line."""
    schemas = tmp_path / "schemas"
    shutil.copytree(default_schema_dir(), schemas)
    (schemas / "entities" / "vehicle.schema.json").write_text("{bad")
    env = {"GATEWAY_SECRET_KEY": SECRET_KEY, "GATEWAY_SCHEMA_DIR": str(schemas)}
    env.update(GATEWAY_PORT=str(free_port()), GATEWAY_LOG_JSON="false")
    for command in (["serve"], ["serve", "--workers", "2"]):
        data_dir = tmp_path / "-".join(command)
        result = _run(*command, env={**env, "GATEWAY_DATA_DIR": str(data_dir)})
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        line = result.stderr.splitlines()[-1]
        assert line.startswith("configuration error: GATEWAY_SCHEMA_DIR: "), line
        assert "vehicle.schema.json" in line
    assert not (tmp_path / "serve---workers-2" / "db").exists()  # nothing started


def test_no_mongodb_uri_and_no_embedded_database_is_one_line_exit_2(tmp_path: Path) -> None:
    """The image (no `embedded` extra) started without MONGODB_URI logged a traceback and
    exited 1: a known configuration problem, said in one line."""
    shim = (
        "import sys, gateway.store.embedded as e; e.EXECUTABLE = 'no-such-secantusd'; "
        "from gateway.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "GATEWAY_SECRET_KEY": SECRET_KEY, "GATEWAY_DATA_DIR": str(tmp_path)}
    env.pop("MONGODB_URI", None)
    (tmp_path / "db").mkdir()  # a gateway's data dir: `cleanup` would use its database
    for command in (["cleanup", "--dry-run"], ["serve", "--port", str(free_port())]):
        result = subprocess.run(
            [sys.executable, "-c", shim, *command], capture_output=True, text=True, env=env
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines()[-1] == (
            "configuration error: MONGODB_URI is unset and the embedded database "
            "(no-such-secantusd) is not installed: set MONGODB_URI, or install the 'embedded' "
            "extra (pip install '.[embedded]')"
        )
        assert "Traceback" not in result.stderr and "command failed" not in result.stderr


def test_a_mongodb_uri_that_is_not_a_connection_string_is_a_configuration_error() -> None:
    """The driver took `db.example.com:27017` or `mongodb:/db` as a host name: the gateway
    started, waited 5 s on it and served 503s, never saying that the setting was wrong."""
    secret = "s3cret-in-the-uri"
    for uri in ("db.example.com:27017", f"mongodb:/rabbot:{secret}@db", "https://db.example.com"):
        with pytest.raises(ConfigError) as refused:
            Settings.from_env({"MONGODB_URI": uri})
        assert str(refused.value) == "MONGODB_URI must start with mongodb:// or mongodb+srv://"
    result = _command(
        "admin-token", "--tenant", "acme", env={"MONGODB_URI": f"mongo://u:{secret}@h"}
    )
    assert result.returncode == 2
    assert "configuration error: MONGODB_URI" in result.stderr and secret not in result.stderr
    for uri in ("mongodb://u:p@db1,db2/?replicaSet=rs0", "mongodb+srv://cluster0.example.net"):
        assert Settings.from_env({"MONGODB_URI": uri}).mongodb_uri == uri


def test_a_number_outside_its_range_names_the_range() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"GATEWAY_DB_TIMEOUT_MS": "5"})
    assert str(refused.value) == "GATEWAY_DB_TIMEOUT_MS must be between 100 and 600000, got 5"
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"GATEWAY_PORT": "70000"})
    assert str(refused.value) == "GATEWAY_PORT must be between 0 and 65535, got 70000"


@pytest.mark.parametrize(
    ("name", "high"),
    [
        ("GATEWAY_DELIVERY_LEASE_SECONDS", 86_400),
        ("GATEWAY_SCHEDULE_LEASE_SECONDS", 86_400),
        ("GATEWAY_PARTNER_PROBE_SECONDS", 86_400),
        ("GATEWAY_STALL_SECONDS", 86_400),
        ("GATEWAY_HUNG_SECONDS", 3600),
        ("GATEWAY_DELIVERY_POLL_SECONDS", 3600),
        ("GATEWAY_DELIVERY_SHUTDOWN_SECONDS", 3600),
        ("GATEWAY_DB_TIMEOUT_MS", 600_000),
        ("GATEWAY_MAX_BODY_BYTES", 1024**3),
    ],
)
def test_a_duration_or_size_past_its_ceiling_stops_the_start_naming_it(
    tmp_path: Path, name: str, high: int
) -> None:
    """Documented as "1+": a lease of 99999999999999 s crashed the start with a traceback
    (`days=...; must have magnitude <= 999999999`), a probe interval as long failed every
    delivery housekeeping round behind a ready /readyz, a body limit past 8-byte integers
    failed every trigger creation. Each now has a ceiling, said at start."""
    longer = {
        "GATEWAY_FOLD_GAP_SECONDS": "3600",
        "GATEWAY_SHARD_LEASE_SECONDS": "3600",
        "GATEWAY_EVENTS_FEED_SETTLE_SECONDS": "3600",
    }
    assert Settings.from_env({name: str(high), **longer})  # the ceiling itself is taken
    env = {"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_SECRET_KEY": SECRET_KEY}
    result = _command("serve", "--port", "0", env={**env, name: "99999999999999"})
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"configuration error: {name} must be between ")
    assert line.endswith(f" and {high}, got 99999999999999")
    assert list(tmp_path.iterdir()) == []


def test_a_number_in_other_digits_than_ascii_is_refused() -> None:
    """`int()` read `GATEWAY_PORT=٨٠` (Arabic-Indic digits) as 80, and `1_000` as 1000."""
    for raw in ("٨٠", "1_000", "+80"):
        with pytest.raises(ConfigError) as refused:
            Settings.from_env({"GATEWAY_PORT": raw})
        assert str(refused.value) == f"GATEWAY_PORT must be an integer, got {raw!r}"


def test_every_option_of_every_command_says_what_it_is_for() -> None:
    """`gateway demo --help` listed `--host HOST --port PORT --tenant TENANT` and nothing else;
    so did demo-partners' and admin-token's options."""

    def bare(parser: argparse.ArgumentParser, path: str) -> list[str]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += bare(sub, f"{path} {name}")
            elif action.option_strings and not action.help:
                found.append(f"{path} {action.option_strings[-1]}")
        return found

    assert bare(_parser(), "gateway") == []
    epilog = _parser().format_help()
    assert "Settings come from the environment" in epilog and "docs/operations.md" in epilog


async def test_a_one_shot_command_without_the_secret_key_uses_the_data_dirs_key(
    settings: Settings, mongodb_uri: str, services: Services
) -> None:
    """`serve` generated the data dir's key; a later `admin-token` without
    GATEWAY_SECRET_KEY signs with that key, so the running gateway verifies its token. Run in
    this process (`run_command`) on the test's database (the gateway's, `services`): where
    the key comes from is the question, not the process, nor which database it opens."""
    (settings.data_dir / "secret_key").write_text(SECRET_KEY + "\n")
    env = {**cli_env(settings, mongodb_uri), "GATEWAY_SECRET_KEY": ""}
    result = await run_command(env, "admin-token", "--tenant", "acme")
    assert result.returncode == 0, result.stderr
    claims = verify_admin_token(KeyRing.from_secret(SECRET_KEY), result.stdout.strip())
    assert claims.tenant == "acme"


@pytest.mark.parametrize(
    "command",
    [
        ("admin-token", "--tenant", "acme"),
        ("cleanup", "--dry-run"),
        ("reseal", "--dry-run"),
        ("ui-user", "list", "--tenant", "acme"),
    ],
)
def test_a_one_shot_command_without_any_secret_key_refuses_instead_of_making_one(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Without GATEWAY_SECRET_KEY nor a key in the data dir, a one-shot command used to
    generate a key of its own there: the tokens it printed did not verify in the gateway
    running with its GATEWAY_SECRET_KEY, and a later `serve` without it took the new key.
    Refused before anything starts: run in this process (`_command`)."""
    env = {"GATEWAY_SECRET_KEY": "", "GATEWAY_DATA_DIR": str(tmp_path)}
    result = _command(*command, env=env)
    assert result.returncode == 2, result.stderr
    assert "GATEWAY_SECRET_KEY" in result.stderr and "secret_key" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize(
    "command",
    [("serve",), ("serve", "--workers", "2"), ("demo",), ("worker", "--port")],
    ids=["serve", "serve-workers", "demo", "worker"],
)
def test_a_port_in_use_is_refused_before_the_database_starts(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """The port was bound only once the embedded database had started and the indexes were
    created (about 20 s on a loaded machine), and the failure was a traceback. Refused
    before anything starts: run in this process (`_command`)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        args = (*command, port) if command[-1] == "--port" else (*command, "--port", port)
        env = {
            "GATEWAY_DATA_DIR": str(tmp_path),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_SECRET_KEY": SECRET_KEY,
            "GATEWAY_LOG_JSON": "false",
            "MONGODB_URI": "",
        }
        result = _command(*args, env=env)
    assert result.returncode == 1, result.stderr
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert "embedded database started" not in result.stderr
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize(
    ("env", "warned"),
    [
        ({"GATEWAY_HOST": "0.0.0.0"}, True),
        ({"GATEWAY_HOST": "::"}, True),
        ({"GATEWAY_HOST": "0.0.0.0", "GATEWAY_PUBLIC_URL": "https://gw.acme.com.br"}, False),
        ({"GATEWAY_HOST": "10.1.2.3"}, False),
        ({}, False),
    ],
)
def test_serve_warns_when_trigger_urls_would_name_an_unspecified_address(
    env: dict[str, str], warned: bool
) -> None:
    from gateway.cli import unreachable_url_warning

    warning = unreachable_url_warning(Settings.from_env({"GATEWAY_SECRET_KEY": SECRET_KEY, **env}))
    assert (warning is not None) == warned, warning
    if warning is not None:
        assert "GATEWAY_PUBLIC_URL" in warning
        assert "//0.0.0.0:8080," in warning or "//[::]:8080," in warning


async def test_trigger_commands_hand_out_urls_on_the_port_the_running_gateway_serves(
    settings: Settings, mongodb_uri: str
) -> None:
    """`gateway serve --port P` (no GATEWAY_PORT, no GATEWAY_PUBLIC_URL), then `gateway
    trigger create|list` on the same data dir: the URL is the one the running gateway serves,
    as its admin API gives, not one on 8080 (the command's own default) where nothing listens;
    GATEWAY_PUBLIC_URL, when the command has it, still wins; once the gateway stops, the
    command's own settings are back. The commands run in this process (`run_command`): what
    they say is the question, not their process."""
    port = free_port()
    env = cli_env(settings, mongodb_uri)
    env.pop("GATEWAY_PORT", None)
    env.pop("GATEWAY_PUBLIC_URL", None)
    args = ("trigger", "create", "--tenant", "acme", "--entity-type", "driver", "--name")
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            await asyncio.to_thread(_wait_for_line, proc, "gateway listening on")
            created = await run_command(env, *args, "sp")
            assert created.returncode == 0, created.stderr
            url = json.loads(created.stdout)["url"]
            assert url.startswith(f"http://127.0.0.1:{port}/hooks/trg_"), url
            listed = await run_command(env, "trigger", "list", "--tenant", "acme")
            assert [t["url"] for t in json.loads(listed.stdout)["items"]] == [url]
            public = {**env, "GATEWAY_PUBLIC_URL": "https://gw.example.com"}
            named = json.loads((await run_command(public, *args, "sp2")).stdout)["url"]
            assert named.startswith("https://gw.example.com/hooks/trg_"), named
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    after = json.loads((await run_command(env, *args, "sp3")).stdout)["url"]
    assert after.startswith("http://127.0.0.1:8080/hooks/trg_"), after
