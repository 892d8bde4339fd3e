"""The trigger URL base of the gateway serving on a data dir, for one-shot commands beside it.

`gateway trigger create|list` build a trigger's URL from `Settings.base_url`: their own
settings, not the serving process's, so a gateway started with `--port 19401` had the CLI hand
out URLs on 8080, where nothing listens. The serving process (`gateway serve`, `gateway demo`,
the parent of `--workers`) records the base its admin API gives (GATEWAY_PUBLIC_URL, else the
address it listens on) with its pid in `GATEWAY_DATA_DIR/serving_url`; a one-shot command
without GATEWAY_PUBLIC_URL uses it while that process runs (docs/triggers.md "CLI").
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path

from gateway.config import Settings

FILE = "serving_url"


def record(settings: Settings) -> None:
    """Record this process's trigger URL base in the data dir (written whole, then renamed)."""
    path = settings.data_dir / FILE
    with contextlib.suppress(OSError):  # a read-only data dir: one-shot commands guess
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{FILE}.{os.getpid()}")
        partial.write_text(f"{os.getpid()} {settings.base_url}\n")
        partial.replace(path)


def served(settings: Settings) -> Settings:
    """`settings` with the running gateway's trigger URL base when GATEWAY_PUBLIC_URL is
    unset and a gateway that recorded one still runs; `settings` otherwise."""
    if settings.public_url:
        return settings
    url = _running(settings.data_dir / FILE)
    return settings if url is None else replace(settings, public_url=url)


def _running(path: Path) -> str | None:
    try:
        pid_text, _, url = path.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # it stopped: its URL may no longer be served
    except PermissionError:
        pass  # another user's process, running
    return url or None
