"""The event loop under the gateway's long-running processes (`serve`, `worker`, `demo`):
uvloop, asyncio's interface on libuv, where it is installed (a dependency on Linux and macOS);
the standard library's loop otherwise, or when `GATEWAY_EVENT_LOOP=asyncio` asks for it.

The code is the same on both. Measured side by side in one run (docs/benchmarks.md, "The
event loop"): uvloop takes 6-10% off the gateway's CPU per entity POST and 2-5% off a position
POST; throughput does not move, since the database is the limit there. Short commands
(`gateway trigger`, `gateway ui-user`) and the tests' in-process apps keep asyncio's loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def run(main: Coroutine[Any, Any, T], loop: str | None) -> T:
    """`asyncio.run(main)` on the named loop (`uvloop`, `asyncio`; None: uvloop where it is
    installed)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop == "uvloop" or (loop is None and uvloop_installed()):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop() -> str:
    """The name of the loop running this code: `uvloop` or `asyncio`."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"


class Turns:
    """Lets the rest of the process run while one request works through a long loop of CPU
    work (a batch's items mapped one after another): `await turns.share()` after each step
    yields to the event loop once `slice_s` has passed since it last did, so a health check
    or another partner's call waits for a slice, not for the whole batch. Yielding costs
    nothing when the loop is short."""

    __slots__ = ("_slice", "_until")

    def __init__(self, slice_s: float = 0.02) -> None:
        self._slice = slice_s
        self._until = time.monotonic() + slice_s

    async def share(self) -> None:
        if time.monotonic() >= self._until:
            await asyncio.sleep(0)
            self._until = time.monotonic() + self._slice
