"""The gateway's clock follows the database server's (`gateway/clock.py` `utcnow`).

Leases and due times are compared across processes, on hosts whose clocks may disagree: a
host 60 s ahead took over the deliveries and schedules the others still held; and so are the
times stamped (a host behind stamped its events in the past, counted as lag). So every
process reads the database server's clock (`hello`'s `localTime`, the best of a few round
trips, taken as read halfway through) at start, before its background jobs (which wait for a
first reading when the database does not answer then: `known`,
`Background.start_once_checked`), and again every `CHECK_SECONDS`; in between `utcnow` counts
on from the last reading on this host's clock that counts a suspend too (`clock.ticks`), so a
step of this host's wall clock never reaches it, a suspend of the host or a paused VM is
counted at once on resuming, and a reading corrects only how far the two clocks drifted apart
in a minute. A reading whose server time is `WARN_SECONDS` or more off what that clock counted
(the server's clock stepped) is logged, and followed.
The host's offset to the server's clock is exported (`gateway_clock_offset_seconds`) and logged
past `WARN_SECONDS`: the hosts should still run NTP. A server that gives no time leaves the
host's clock in use, said once in the log.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Final

from gateway import clock
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.store import Store

log = logging.getLogger(__name__)

CHECK_SECONDS: Final = 60.0
RETRY_SECONDS: Final = 5.0  # until a first measurement passes
WARN_SECONDS: Final = 2.0
_SAMPLES: Final = 3
_PRECISION: Final = 0.001  # BSON dates are milliseconds


class ServerClock:
    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        self._measured = False
        self._untimed = False  # the server gave no time (said once)
        self._warned: timedelta | None = None  # the offset last warned about

    @property
    def known(self) -> bool:
        """Whether leases may be taken: a measurement passed, or the server gives no time
        (the host's clock is then all there is)."""
        return self._measured or self._untimed

    async def measure(self) -> None:
        """One measurement, applied. StoreUnavailable when the database does not answer."""
        samples = []
        for _ in range(_SAMPLES):
            sample = await self._store.clock_sample()
            if sample is None:
                if not self._untimed:
                    log.warning(
                        "the database gives no time (`hello` without `localTime`): leases, due "
                        "times and stamps use this host's clock; keep every host's clock in "
                        "sync (NTP)"
                    )
                self._untimed = True
                return
            samples.append(sample)
        best = min(samples, key=lambda s: s.trip)
        server, offset = best.server, best.offset
        if abs(offset.total_seconds()) <= best.trip / 2 + _PRECISION:
            # Within what the reading can tell: this host's clock then.
            server, offset = server - offset, timedelta()
        if self._measured:
            self._tell_jump(server - clock.at_ticks(best.at))
        clock.measured(server, best.at, offset)
        self._metrics.clock_offset.set(offset.total_seconds())
        self._measured = True
        self._tell(offset)

    @staticmethod
    def _tell_jump(jump: timedelta) -> None:
        seconds = jump.total_seconds()
        if abs(seconds) >= WARN_SECONDS:
            log.warning(
                "the database server's clock moved %.1f s %s than this host's clock counted "
                "since the last reading (the server's clock stepped): the gateway's time "
                "follows the server's",
                abs(seconds),
                "further" if seconds > 0 else "less far",
            )

    def _tell(self, offset: timedelta) -> None:
        seconds = offset.total_seconds()
        if abs(seconds) >= WARN_SECONDS:
            if self._warned is None or abs((offset - self._warned).total_seconds()) >= 1:
                log.warning(
                    "this host's clock is %.1f s %s the database server's: leases, due times "
                    "and stamps follow the server's clock; check the host's NTP",
                    abs(seconds),
                    "behind" if seconds > 0 else "ahead of",
                )
                self._warned = offset
        elif self._warned is not None:
            log.info("this host's clock is within %.1f s of the database server's", abs(seconds))
            self._warned = None

    async def follow(self) -> None:
        """Until cancelled: measured again every `CHECK_SECONDS` (every `RETRY_SECONDS`
        until a first measurement passes); a failure keeps the last offset."""
        while True:
            await asyncio.sleep(CHECK_SECONDS if self._measured else RETRY_SECONDS)
            try:
                await self.measure()
            except StoreUnavailable as exc:
                log.debug("measuring the database server's clock failed: %s", exc.detail)
