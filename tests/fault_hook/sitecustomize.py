"""A fault injected into a real gateway process at a named store method (tests that start
`gateway serve` put this directory first on the child's PYTHONPATH; Python imports
`sitecustomize` at start-up):

    GATEWAY_TEST_FAULT_AT      module.Class.method (an async method), e.g.
                               gateway.store.deliveries.DeliveryStore.recovered
    GATEWAY_TEST_FAULT         kill: SIGKILL of the process as the method is entered;
                               unavailable: the method raises StoreUnavailable, unrun
    GATEWAY_TEST_FAULT_MARKER  a file written as the fault fires: the fault fires once, not
                               again in the process restarted on the same data
    GATEWAY_TEST_FAULT_CALL    which call of the method fires it (default 1: the first)
    GATEWAY_TEST_FAULT_WHEN    enter (default): before the method runs; return: a kill once
                               it has returned (what it wrote is written)

Nothing happens without GATEWAY_TEST_FAULT_AT (the embedded database's launcher runs
isolated, `-I`, and never reads this)."""

from __future__ import annotations

import os

_AT = os.environ.get("GATEWAY_TEST_FAULT_AT")


def _install(at: str) -> None:
    import functools
    import importlib
    import signal
    from pathlib import Path
    from typing import Any

    from gateway.errors import StoreUnavailable

    module, cls_name, name = at.rsplit(".", 2)
    cls = getattr(importlib.import_module(module), cls_name)
    original = getattr(cls, name)
    kind = os.environ.get("GATEWAY_TEST_FAULT", "kill")
    marker = Path(os.environ["GATEWAY_TEST_FAULT_MARKER"])
    nth = int(os.environ.get("GATEWAY_TEST_FAULT_CALL", "1"))
    on_return = os.environ.get("GATEWAY_TEST_FAULT_WHEN", "enter") == "return"
    calls = [0]

    @functools.wraps(original)
    async def faulty(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        fires = calls[0] == nth and not marker.exists()
        if fires and not on_return:
            marker.write_text(kind)
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise StoreUnavailable(f"injected before {name}", answered=True)
        result = await original(self, *args, **kwargs)
        if fires:
            marker.write_text(kind)
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(cls, name, faulty)


if _AT:
    _install(_AT)
