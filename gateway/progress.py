"""Whether a background loop (the event relay, a delivery worker) moves work forward.

A loop calls `moved()` after each round that succeeded (work done, or none to do) and
`stuck(reason)` after a round that failed with work waiting. `/readyz` turns unready when a
loop has been stuck past a threshold: a relay that keeps failing on the same batch holds
every tenant's events back, and that must not look healthy.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._stuck_since: float | None = None
        self.reason: str | None = None

    def moved(self) -> None:
        self._stuck_since, self.reason = None, None

    def stuck(self, reason: str) -> None:
        if self._stuck_since is None:
            self._stuck_since = self._clock()
        self.reason = reason

    def stalled_for(self) -> float:
        """Seconds since the loop last moved while work waited (0 when it is moving)."""
        return 0.0 if self._stuck_since is None else self._clock() - self._stuck_since


class Readiness:
    """What `/readyz` last answered: it logs a change of its answer, not each probe (a
    probe every second would fill the log with the same refusal)."""

    def __init__(self) -> None:
        self.refused: str | None = None  # the reason of the last refusal; None: ready

    def changed(self, refused: str | None) -> bool:
        """Record this answer (None: ready); whether it changes readiness."""
        before, self.refused = self.refused, refused
        return (before is None) != (refused is None)
