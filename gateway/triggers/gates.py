"""What this process verified about triggers, kept while it is known to be current.

A partner call is admitted on its trigger's gate: status, config version and live token ids
(`store/triggers.py` `gate`). Reading it on every call costs a database round trip a
request; this cache keeps it instead, and forgets it (SPEC §7: a revocation holds in every
process within 1 s):

- at once, when this process changed the trigger (`forget`, called by the trigger use case);
- when the `triggers` change stream reports a change made by any process (milliseconds);
- an entry is trusted only while the stream is known to be current: its last empty wait
  ended less than `trust_seconds` ago. A stream that stalls or fails stops vouching, and
  entries are then re-read once they are `poll_seconds` old, which is also the rule
  without change streams (a standalone MongoDB, or `GATEWAY_CHANGE_STREAMS=false`).

A read that raced with a change is not kept (`_generation`), and everything read before a
stream (re)opened is forgotten when it opens: a change the stream did not see cannot linger.

An id that names no trigger is remembered too, by the same rules, apart (a flood of made-up
ids must not push real triggers out): a caller repeating an unknown id costs no database
read, and a trigger created with that id is found once the stream reports it (or 0.5 s on).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.background import cancel_and_wait
from gateway.metrics import Metrics
from gateway.store import Doc, Store
from gateway.store.changes import EVERYTHING, ChangeStreamsUnavailable

log = logging.getLogger(__name__)

_RETRY_SECONDS: Final = (0.5, 30.0)  # first and longest wait before reopening a stream


@dataclass(frozen=True, slots=True)
class _Entry:
    gate: Doc | None  # None: no such trigger
    read_at: float  # the clock when its read began


class TriggerGates:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        follow_changes: bool = True,
        poll_seconds: float = 0.5,
        trust_seconds: float = 0.75,
        await_ms: int = 250,
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._follow = follow_changes
        self._poll = poll_seconds
        self._trust = trust_seconds
        self._await_ms = await_ms
        self._max = max_cached
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._unknown: dict[str, _Entry] = {}  # ids that named no trigger, kept apart
        # Ids last read as a trigger, kept through every forget (the least recently read go
        # past `max_cached`): only to tell a made-up id from a trigger (`known`).
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._generation = 0  # bumped by every forget: a read that raced one is not kept
        # The read under way of each id that missed, and the generation it began in.
        self._reading: dict[str, tuple[int, asyncio.Task[Doc | None]]] = {}
        self._trusted_until = 0.0  # the change stream vouches for every entry until then
        self._watcher: asyncio.Task[None] | None = None
        if not follow_changes:  # GATEWAY_CHANGE_STREAMS=false: re-read from the start, said so
            metrics.change_stream_up.labels("triggers").set(0)

    @property
    def vouched_at(self) -> float:
        """The clock when the change stream last said it had seen every change (0: never,
        or not since it last failed)."""
        return self._trusted_until - self._trust if self._trusted_until else 0.0

    @property
    def following(self) -> bool:
        """Whether the change stream currently vouches for the cache."""
        return self._clock() < self._trusted_until

    async def gate(self, trigger_id: str) -> Doc | None:
        """The trigger's gate (`store/triggers.py`), from memory while that is current."""
        if self._follow and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch())
        now = self._clock()
        entry = self._entries.get(trigger_id) or self._unknown.get(trigger_id)
        if entry is not None and (now < self._trusted_until or now - entry.read_at < self._poll):
            return entry.gate
        # Calls that miss together share one read (a burst at a partner's trigger after its
        # entry aged out was a read each), unless something was forgotten since it began: a
        # read that raced a change is no answer for a call that came after the change.
        generation = self._generation
        reading = self._reading.get(trigger_id)
        if reading is None or reading[0] != generation:
            task = asyncio.ensure_future(self._read(trigger_id, generation, now))
            reading = (generation, task)
            self._reading[trigger_id] = reading
            task.add_done_callback(lambda done: self._read_done(trigger_id, done))
        # Shielded: a caller that goes away (its client hung up) leaves the read to the others.
        return await asyncio.shield(reading[1])

    async def _read(self, trigger_id: str, generation: int, now: float) -> Doc | None:
        gate = await self._store.triggers.gate(trigger_id)
        self._metrics.trigger_gate_reads.inc()
        self._saw(trigger_id, gate is not None)
        if generation == self._generation:
            entries = self._unknown if gate is None else self._entries
            entries.pop(trigger_id, None)
            if len(entries) >= self._max:
                entries.pop(next(iter(entries)))  # the least recently read
            entries[trigger_id] = _Entry(gate, now)
        return gate

    def _read_done(self, trigger_id: str, task: asyncio.Task[Doc | None]) -> None:
        reading = self._reading.get(trigger_id)
        if reading is not None and reading[1] is task:
            del self._reading[trigger_id]
        if not task.cancelled():
            task.exception()  # a failed read every caller left is not logged as unretrieved

    def known(self, trigger_id: str) -> bool:
        """Whether this process last read this id as a trigger's (however long ago: the
        answer may be stale, a deleted trigger's). Admits nothing: it tells a caller's
        trigger from a made-up id (`receiver.py` holds back an address over its limit of
        refused calls, except for triggers it knows)."""
        return trigger_id in self._seen

    def _saw(self, trigger_id: str, exists: bool) -> None:
        if not exists:
            self._seen.pop(trigger_id, None)
            return
        self._seen[trigger_id] = None
        self._seen.move_to_end(trigger_id)
        if len(self._seen) > self._max:
            self._seen.popitem(last=False)

    def forget(self, trigger_id: str) -> None:
        """This trigger changed (or was created): the next call reads it again."""
        self._generation += 1
        self._entries.pop(trigger_id, None)
        self._unknown.pop(trigger_id, None)

    def forget_all(self) -> None:
        self._generation += 1
        self._entries.clear()
        self._unknown.clear()

    async def close(self) -> None:
        await cancel_and_wait(self._watcher, *(task for _, task in self._reading.values()))

    async def _watch(self) -> None:
        """Follow the change stream for as long as the process runs; reopen it after a
        failure (with a growing delay); stop for good if the deployment has none."""
        delay = _RETRY_SECONDS[0]
        while True:
            try:
                await self._follow_stream()
                delay = _RETRY_SECONDS[0]
            except ChangeStreamsUnavailable as exc:
                log.warning(
                    "no change streams (%s): trigger gates are re-read every %ss", exc, self._poll
                )
                return
            except Exception as exc:  # the database failed: read through until it is back
                log.warning("trigger change stream failed (%s); reopening in %.1fs", exc, delay)
            finally:
                self._trusted_until = 0.0
                self._metrics.change_stream_up.labels("triggers").set(0)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_SECONDS[1])

    async def _follow_stream(self) -> None:
        opened = False
        async for ids in self._store.triggers.changes(await_ms=self._await_ms):
            if not opened:
                opened = True
                self.forget_all()  # what was read before the stream opened may have changed
                self._metrics.change_stream_up.labels("triggers").set(1)
            for changed in ids:
                if changed == EVERYTHING:
                    self.forget_all()
                else:
                    self.forget(str(changed))
            if not ids:  # caught up: every change until about now has been seen
                self._trusted_until = self._clock() + self._trust
