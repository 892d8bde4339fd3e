"""The trigger URL base of the gateway serving on a data dir, for one-shot commands beside it.

`gateway trigger create|list` build a trigger's URL from `Settings.base_url`: their own
settings, not the serving process's, so a gateway started with `--port 19401` had the CLI hand
out URLs on 8080, where nothing listens. The serving process (`gateway serve`, `gateway demo`,
the parent of `--workers`) records the base its admin API gives (GATEWAY_PUBLIC_URL, else the
address it listens on) in `GATEWAY_DATA_DIR/serving_url`, and removes it when it stops; a
one-shot command without GATEWAY_PUBLIC_URL uses it while that process runs (docs/triggers.md
"CLI").

The file names the process by its pid, its start time (`/proc/<pid>/stat`) and the host's
boot id: a pid alone is no proof. A data dir copied to another host, a container started
again on the same volume (the gateway is PID 1 there, and so is a one-shot run in a new
container), or a reboot make the recorded pid some other live process; the file then named
the old gateway's URL.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path

from gateway.config import Settings

FILE = "serving_url"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def record(settings: Settings) -> str | None:
    """Record this process's trigger URL base in the data dir (written whole, then renamed):
    the line written, for `remove`; None when it could not be (no proof of this process
    to give, or a read-only data dir: one-shot commands use their own settings)."""
    path = settings.data_dir / FILE
    pid = os.getpid()
    if (who := _identity(pid)) is None:
        return None
    line = f"{pid} {who} {settings.base_url}\n"
    with contextlib.suppress(OSError):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{FILE}.{pid}")
        partial.write_text(line)
        partial.replace(path)
        return line
    return None


def remove(settings: Settings, line: str | None) -> None:
    """The record removed at a clean stop, when it is still the one this process wrote."""
    path = settings.data_dir / FILE
    with contextlib.suppress(OSError):
        if line is not None and path.read_text() == line:
            path.unlink()


def served(settings: Settings) -> Settings:
    """`settings` with the running gateway's trigger URL base when GATEWAY_PUBLIC_URL is
    unset and the process that recorded one provably still runs; `settings` otherwise."""
    if settings.public_url:
        return settings
    url = _running(settings.data_dir / FILE)
    return settings if url is None else replace(settings, public_url=url)


def _running(path: Path) -> str | None:
    try:
        pid_text, start, boot, url = path.read_text().strip().split(" ", 3)
        pid = int(pid_text)
    except (OSError, ValueError):
        return None  # none, or written by a version that recorded the pid alone
    if _identity(pid) != f"{start} {boot}":
        return None  # stopped, or another process under the same pid (another boot, host)
    return url or None


def _identity(pid: int) -> str | None:
    """`<start time> <boot id>` of process `pid` on this host, None when it runs no more or
    either cannot be read (no /proc: nothing is proven)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = _BOOT_ID.read_text().strip()
    except OSError:
        return None
    # Field 22 (starttime, clock ticks after boot), counted after the command name's ")":
    # the name may hold blanks and parentheses.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or not boot or " " in boot:
        return None
    return f"{fields[19]} {boot}"
