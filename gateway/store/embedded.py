"""The embedded SecantusDB server, run as a separate child process (it is GPL; never imported)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

EXECUTABLE = "secantusd-py"


class EmbeddedServerError(RuntimeError):
    pass


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _find_executable() -> str:
    # Prefer the one installed beside this interpreter (the project's virtualenv).
    sibling = Path(sys.executable).with_name(EXECUTABLE)
    if sibling.exists():
        return str(sibling)
    found = shutil.which(EXECUTABLE)
    if found is None:
        raise EmbeddedServerError(
            f"{EXECUTABLE} not found: install the 'embedded' extra "
            "(pip install -e '.[embedded]') or set MONGODB_URI"
        )
    return found


class EmbeddedServer:
    """Starts `secantusd-py` on a free loopback port, waits until it answers, stops it."""

    def __init__(
        self, storage_path: Path | str, *, host: str = "127.0.0.1", cache_size: str = "256M"
    ) -> None:
        self.storage_path = Path(storage_path)
        self.host = host
        self.cache_size = cache_size
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = self.storage_path.parent / (self.storage_path.name + ".log")

    @property
    def uri(self) -> str:
        # retryWrites=false: SecantusDB keeps every retryable write's reply and scans them all
        # on each write, so its write rate collapses within minutes otherwise (SPEC §8).
        return f"mongodb://{self.host}:{self.port}/?retryWrites=false&directConnection=true"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def exit_code(self) -> int | None:
        """None while running; the child's exit code once it has died."""
        return self._proc.poll() if self._proc else None

    def start(self, timeout: float = 30.0) -> None:
        self.storage_path.mkdir(parents=True, exist_ok=True)
        self.port = _free_port(self.host)
        cmd = [
            _find_executable(),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--storage-path",
            str(self.storage_path),
            "--log-level",
            "WARNING",
            "--cache-size",
            self.cache_size,
        ]
        log_file = self._log_path.open("ab")
        # A new session keeps a Ctrl-C in the terminal from reaching the child before we stop it.
        self._proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log_file.close()
        self._wait_until_listening(timeout)
        log.info(
            "embedded database started",
            extra={"port": self.port, "pid": self._proc.pid, "storage": str(self.storage_path)},
        )

    def _wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.exit_code()
            if code is not None:
                raise EmbeddedServerError(
                    f"{EXECUTABLE} exited with code {code} while starting; see {self._log_path}:"
                    f"\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedServerError(f"{EXECUTABLE} did not listen within {timeout:.0f}s")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded database ignored SIGTERM; killing it")
            proc.kill()
            proc.wait()
