"""Use case: the schedule runner of a process. Claim due schedules under a lease, run each
(`poll.py`), record the run, set the next run time, give the lease back.

Every `gateway serve` and `gateway worker` process runs one; they share the schedules through
leases in MongoDB (`store/schedules.py`), so a schedule runs in one process at a time. A run
renews its lease while it lasts; a process that dies leaves a lease that expires, and another
process takes the schedule over from the last committed cursor.

After a failure the schedule waits (5 s, 30 s, 2 min, 10 min, 30 min, then hourly, ±20%; a
partner's Retry-After is honoured up to an hour) and its `last_error` says why; pages read
before the failure keep their progress. A throttle after pages of the run (a 429, a JSON-RPC
over-limit error) is no failure: the run ends `more`, due again when the partner's Retry-After
says (`Tally.throttled`). A run that
stopped at `max_pages` while the partner had more is due again at once (after the other due
schedules) when its pages held records (the partner's, whether the mapping kept them and
dedupe had seen them or not); one that read only empty pages waits for its regular time, so
a partner answering empty pages under new cursors with "more" forever is not called without
a pause. Neither is any other partner that always has more: at most `MAX_RUNS_IN_ROW` runs
follow one another at once (`runs_in_row` on the schedule), then the schedule waits for its
regular time and the run says so (`note`, `gateway_schedule_paced_total`). That bounds what
a cycle longer than a run, pages that change on every lap or records the mapping leaves out
can cost the partner: `MAX_RUNS_IN_ROW` × `max_pages` calls per regular period. Nothing else
is kept across runs: a cursor that comes back within a run with the page it gave before is a
`loop` (`poll.py`).

The next run time is computed on the schedule as the run read it, and given back only while
it is unchanged (`rev`, `next_run_at`): what an admin asked during the run ("run now", pause
and resume, a new `every`) is read again and takes effect, never overwritten by the run.
A next run that is a wait from the release (anything but a cron expression's wall time) is
given back with the time it was set at (`planned_at`): after the runner saw the gateway's
time go back, its next claim waits it again from the step (`ScheduleStore.rebase`), so a
schedule waits no longer than it was told to, not as long as the clock had been ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from gateway.auth.secretbox import SecretBoxError
from gateway.background import cancel_and_wait, to_the_end
from gateway.clock import StepWatch, utcnow
from gateway.errors import EntityContended, EventsBacklogged, KeyRefused, StoreUnavailable
from gateway.leased_loop import (
    Claims,
    FairShares,
    HandBacks,
    LeasedLoop,
    LeaseLost,
    lease_owner,
    tenant_only,
)
from gateway.schedules.calls import PollFailure
from gateway.schedules.poll import Poll, PollContext, Tally
from gateway.schedules.timing import (
    MAX_RETRY_AFTER_SECONDS,
    Every,
    backoff_seconds,
    every_from_doc,
)
from gateway.shutdown import HAND_BACK_SECONDS
from gateway.store import Doc
from gateway.store.client import Admission
from gateway.store.schedules import due_at

log = logging.getLogger(__name__)
# Conditional releases of one run, each after a request changed the schedule under it; then
# the last reading is given back as it is.
_RELEASE_TRIES = 5
MAX_RUNS_IN_ROW = 20
"""`more` runs in a row at once (each up to `max_pages` pages); then the regular time."""


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    lease_seconds: float = 60.0
    poll_seconds: float = 1.0
    concurrency: int = 4
    shutdown_seconds: float = 10.0


class ScheduleRunner:
    def __init__(
        self,
        context: PollContext,
        *,
        settings: RunnerSettings = RunnerSettings(),
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._c = context
        self._settings = settings
        self.owner = owner or lease_owner()
        # Public so tests can move time and fix the jitter.
        self.clock = clock
        self.rng = rng
        self._lease = timedelta(seconds=settings.lease_seconds)
        # A fixed poll (no idle backoff): schedules come due by the clock, not by a wake-up.
        self._loop: LeasedLoop[str] = LeasedLoop(
            poll_seconds=settings.poll_seconds,
            shutdown_seconds=settings.shutdown_seconds,
            idle_factor=1,
        )
        self._hand_backs = HandBacks("schedule")
        self._claims = Claims(
            self.owner,
            self._loop,
            self._hand_backs,
            claim=self._claim_due,
            release_claims=self._release_claims,
            fair=FairShares(settings.concurrency, tenant_only),
            runner="schedule runner",
            units="schedules",
        )
        self._finished = 0
        self._progress = asyncio.Condition()
        self._times = StepWatch()  # the time going back, seen at each claim (`_rebase`)

    @property
    def running(self) -> bool:
        return self._loop.running

    def notify(self) -> None:
        """A schedule became due (created, resumed, "run now"): look now, not at the next poll."""
        self._loop.notify()

    def _now(self) -> datetime:
        return self.clock()

    async def wait_runs(self, count: int) -> None:
        """Until this runner has finished `count` runs (for whoever waits on the background)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self._finished >= count)

    # -- driving -----------------------------------------------------------------------------

    async def run_until_idle(self) -> Counter[str]:
        """Run every due schedule until none is due (per the runner's clock); counts by outcome."""
        counts: Counter[str] = Counter()
        while claimed := await self._claims.claim(self._settings.concurrency):
            counts.update(await asyncio.gather(*(self._run_one(doc) for doc in claimed)))
        return counts

    async def run(self) -> None:
        """Until `stop()`: claim what free slots allow, run in the background, then wait for a
        notification, a free slot or the poll interval (`leased_loop.py`). Each run renews its
        own lease while it lasts."""
        await self._loop.run(self._look)

    async def _look(self) -> list[Coroutine[Any, Any, str]] | None:
        free = self._settings.concurrency - len(self._loop.tasks)
        if free <= 0:
            return None
        return [self._run_one(doc) for doc in await self._claims.claim_safely(free)]

    async def stop(self) -> None:
        """Stop claiming and let running schedules finish (bounded); one cut short gives its
        lease back, due at once, so another process takes it over without waiting."""
        await self._loop.stop()
        await self._hand_backs.retry()  # a last try; then those leases expire

    async def _claim_due(self, token: str, limit: int, _shard: int, admit: Admission) -> list[Doc]:
        """Schedules are not sharded: one claim reads every due schedule; it takes those of
        tenants below their share of the run slots (`admit`): a run keeps its slot for all
        its pages, and one tenant's slow feeds must not hold every other tenant's polling."""
        now = self.clock()
        store = self._c.store.schedules
        # The rebase's failure holds back no claim: it is tried again at the next one.
        try:
            await self._rebase(now)
        except StoreUnavailable as exc:
            log.warning("rebasing schedules after the time went back failed: %s", exc.detail)
        return await store.claim_due(token, now, now + self._lease, limit, admit)

    async def _rebase(self, now: datetime) -> None:
        """When this runner sees the time go back since its last claim (a second or more, or
        `steps_back` moved): waits set on the time as it was are waited again from the step
        (`ScheduleStore.rebase`), not for as long as it was ahead, and the leases this runner
        holds run out a lease from now. Not at its first claim: a start sees no step (one
        made while no runner ran is not rebased), and another process's leases (taken with
        its own lease length) are never touched. From now when the step's own time is not
        known (the runner's clock is not the gateway's: a test's)."""
        if (waits_from := self._times.went_back(now)) is None:
            return
        store = self._c.store.schedules
        await store.rebase(now, waits_from)
        for schedule_id, token in list(self._claims.held.items()):
            await store.renew(schedule_id, token, now + self._lease)
        self._times.rebased()  # only once done: one that failed is tried at the next claim

    async def _release_claims(self, held: list[Any]) -> None:
        """`held`: the ids of the schedules being run, and those of the hand-backs still kept
        by their text."""
        await self._c.store.schedules.release_claims(self.owner, held)

    # -- one run -----------------------------------------------------------------------------

    async def _run_one(self, doc: Doc) -> str:
        try:
            return await self._run_claimed(doc)
        finally:
            self._claims.held.pop(doc["_id"], None)

    async def _run_claimed(self, doc: Doc) -> str:
        owner = doc["lease_owner"]
        started_at, started = self.clock(), time.perf_counter()
        poll = Poll(self._c, doc, owner, clock=self._now, lease=self._lease)
        renewal = asyncio.create_task(self._renew(doc, owner))
        failure: PollFailure | None = None
        outcome = "ok"
        try:
            await poll.run()
        except PollFailure as exc:
            failure = exc
        except LeaseLost:
            outcome = "lost_lease"
        except StoreUnavailable as exc:
            failure = PollFailure("store", exc.detail, transient=not exc.refused)
        except (EventsBacklogged, EntityContended) as exc:  # the relay, another process: a wait
            kind = "backlogged" if isinstance(exc, EventsBacklogged) else "contended"
            failure = PollFailure(kind, exc.detail, retry_after=exc.retry_after, transient=True)
        except SecretBoxError as exc:
            failure = await self._secret_failure(exc)
        except asyncio.CancelledError:  # cut short at stop: its lease back, due at once
            what = f"handing back schedule {doc['_id']}"
            await to_the_end(HAND_BACK_SECONDS, what, partial(self._give_back, doc, owner))
            raise
        except Exception as exc:
            log.exception("schedule %s failed unexpectedly", doc["_id"])
            failure = PollFailure("internal", f"{type(exc).__name__}: {exc}")
        finally:
            await cancel_and_wait(renewal)
        # What the run says of its pages (read as data: `calls.request_for`), masked.
        poll.tally.problems = poll.redactor.redact_said(poll.tally.problems)
        if failure is not None:
            failure = failure.masked(poll.redactor)
            outcome = "held" if failure.held else "failed"
        elif outcome == "ok" and poll.tally.more:
            outcome = "more"
        duration = time.perf_counter() - started
        await self._finish(
            doc, owner, outcome, failure, poll.tally, started_at, duration, poll.uncommitted
        )
        async with self._progress:
            self._finished += 1
            self._progress.notify_all()
        return outcome

    async def _secret_failure(self, exc: SecretBoxError) -> PollFailure:
        """A stored secret the run needs (its partner's credentials) does not open, judged by
        `StoredSecrets`: this process's key refused, the run is held as a wait (another
        process with the key may run it); the secret damaged, the run fails naming it."""
        try:
            fault = await self._c.secrets.judge(exc)
        except StoreUnavailable as unread:
            return PollFailure("store", unread.detail, transient=True)
        if isinstance(fault, KeyRefused):
            return PollFailure(
                "key_refused", fault.detail, retry_after=fault.retry_after, held=True
            )
        return PollFailure("secret_damaged", fault.detail)

    async def _finish(
        self,
        doc: Doc,
        owner: str,
        outcome: str,
        failure: PollFailure | None,
        tally: Tally,
        started_at: datetime,
        duration: float,
        commit: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """Commit the landed page whose commit the database failed (`commit`), release the
        schedule with its next run time, record the run. Writes the database fails are handed
        back (`leased_loop.HandBacks`): done before the next claim, rather than the schedule
        waiting for its lease to expire, its last page landed again and its run record lost."""
        now = self.clock()
        error = failure.as_doc(now) if failure is not None else None
        store = self._c.store.schedules
        release = None
        if outcome != "lost_lease":
            release = partial(self._release, doc, owner, outcome, failure, tally, started_at, now)
        run: Doc = {
            "tenant": doc["tenant"],
            "schedule_id": str(doc["_id"]),
            "owner": owner,
            "started_at": started_at,
            "finished_at": now,
            "duration_ms": round(duration * 1000, 1),
            "outcome": outcome,
            "pages": tally.pages,
            "items_read": tally.read,
            "written": tally.written,
            "rejected": tally.rejected,
            "skipped": tally.skipped,
            "cursor_before": tally.cursor_before,
            "cursor_after": tally.cursor_after,
            "cursor_refused": tally.cursor_refused,
            "item_errors": tally.problems,
            "error": error,
        }
        notes = []
        if tally.throttled is not None:
            notes.append(
                f"the partner answered {tally.throttled_by} after {tally.pages} page(s): the "
                f"next run reads on after {_throttle_seconds(tally):g} s, as it asked"
            )
        if failure is not None and failure.kind == "partner_disabled" and tally.pages:
            notes.append(
                f"the partner was disabled during the run: not called again after "
                f"{tally.pages} page(s)"
            )
        if _paced(doc, outcome, failure, tally):
            notes.append(
                f"the partner still had more after {MAX_RUNS_IN_ROW} runs in a row without a "
                f"pause: the schedule waits for its regular time"
            )
            self._c.metrics.schedule_paced.labels(
                self._c.metrics.label("schedule", str(doc["_id"]))
            ).inc()
        notes += tally.warnings
        if notes:
            run["note"] = "; ".join(notes)
        self._count(str(doc["_id"]), outcome, failure, tally, duration)

        async def writes() -> None:
            nonlocal commit, release
            if commit is not None:
                await commit()  # fenced: matches nothing once another runner holds the lease
                commit = None
            if release is not None:
                await release()
                release = None  # done: a retry only records the run
            await store.add_run(run)  # idempotent, by its _id

        await self._hand_backs.give_back(str(doc["_id"]), writes)

    async def _release(
        self,
        doc: Doc,
        owner: str,
        outcome: str,
        failure: PollFailure | None,
        tally: Tally,
        started_at: datetime,
        now: datetime,
    ) -> None:
        """Give the schedule back with its next run time, computed on the schedule as the run
        read it (`doc`) and written only while its `rev` and `next_run_at` are those. A
        request made during the run changed them: the state is computed again on the
        schedule as it is now (a new `every`, a failure streak a resume forgot), and a
        `next_run_at` the request moved ("run now", resume) wins when it is earlier."""
        store = self._c.store.schedules
        current: Doc | None = doc
        state: dict[str, Any] = {}
        for _ in range(_RELEASE_TRIES):
            assert current is not None
            state = self._timing(current, outcome, failure, tally, started_at, now)
            asked = current.get("next_run_at")
            if asked is not None and asked != doc.get("next_run_at"):
                if asked < state["next_run_at"]:
                    state["next_run_at"] = asked
                    state["planned_at"] = current.get("planned_at")
            expect = {"rev": current.get("rev"), "next_run_at": asked}
            if await store.release(doc["_id"], owner, state, expect=expect):
                return
            current = await store.held(doc["_id"], owner)
            if current is None:  # the lease is lost, or a try whose answer was lost applied
                return
        await store.release(doc["_id"], owner, state)

    def _timing(
        self,
        doc: Doc,
        outcome: str,
        failure: PollFailure | None,
        tally: Tally,
        started_at: datetime,
        now: datetime,
    ) -> dict[str, Any]:
        every = every_from_doc(doc["every"])
        if failure is not None and failure.held:  # no attempt: the streak stays, no back-off
            # Again when the hold ends, or at the next regular run if that comes first (a
            # disabled partner's hold lasts until its probe, up to an hour: re-enabled by an
            # admin, it is read again on the schedule's own cadence). A run held after pages
            # with records (a partner's rate limit slower than its `more`) counts toward
            # the bound of runs in a row, as one that ended `more` does.
            held_until = now + timedelta(seconds=failure.retry_after or 1)
            regular = every.next_after(started_at)
            in_row = _held_in_row(doc, tally)
            if in_row >= MAX_RUNS_IN_ROW:
                held_until, in_row = regular, 0
            due = max(min(held_until, regular), now)
            return {
                "last_error": failure.as_doc(now),
                "last_run_at": started_at,
                **_due(every, due, regular, now),
                "runs_in_row": in_row,
            }
        if failure is not None:  # `runs_in_row` stays: a failure is no end of the partner's more
            failures = int(doc.get("failures") or 0) + 1
            # The database's state is not the partner's doing: its back-off does not grow (a
            # command refused for what it carries may be a poison: that one grows).
            streak = 1 if failure.transient else failures
            wait = backoff_seconds(streak, failure.retry_after, self.rng)
            return {
                "failures": failures,
                "last_error": failure.as_doc(now),
                "last_run_at": started_at,
                **due_at(now, timedelta(seconds=wait)),
            }
        in_row = _runs_in_row(doc, outcome, tally)
        regular = every.next_after(started_at)
        if 0 < in_row < MAX_RUNS_IN_ROW:  # records, and the partner has more: at once
            due = now
        else:  # done, empty pages, or the bound: the regular time
            due, in_row = regular, 0
        if tally.throttled is not None:  # not before the partner said (throttled after pages)
            due = max(due, now + timedelta(seconds=_throttle_seconds(tally)))
        return {
            "failures": 0,
            "last_run_at": started_at,
            "last_ok_at": now,
            **_due(every, due, regular, now),
            "runs_in_row": in_row,
        }

    async def _give_back(self, doc: Doc, owner: str) -> None:
        with contextlib.suppress(Exception):
            await self._c.store.schedules.release(doc["_id"], owner, due_at(self.clock()))

    async def _renew(self, doc: Doc, owner: str) -> None:
        """A slow partner must not cost the lease: renewed every third of its length."""
        while True:
            await asyncio.sleep(self._settings.lease_seconds / 3)
            try:
                await self._c.store.schedules.renew(doc["_id"], owner, self.clock() + self._lease)
            except Exception as exc:  # the next round tries again; commits are fenced anyway
                log.warning("renewing the lease of schedule %s failed: %s", doc["_id"], exc)

    def _count(
        self,
        schedule: str,
        outcome: str,
        failure: PollFailure | None,
        tally: Tally,
        duration: float,
    ) -> None:
        metrics = self._c.metrics
        schedule = metrics.label("schedule", schedule)  # "other" past the process's bound
        metrics.schedule_runs.labels(schedule, outcome).inc()
        metrics.schedule_run_duration.labels(schedule).observe(duration)
        for result, count in (
            ("read", tally.read),
            ("written", tally.written),
            ("rejected", tally.rejected),
            ("skipped", tally.skipped),
        ):
            if count:
                metrics.schedule_items.labels(schedule, result).inc(count)
        if failure is not None and not failure.held:
            metrics.schedule_errors.labels(schedule, failure.kind).inc()


def _due(every: Every, due: datetime, regular: datetime, now: datetime) -> Doc:
    """`next_run_at` and `planned_at`: a cron expression's wall time is its own time (no
    `planned_at`); anything else (an interval's next run, at once, a hold, a partner's
    Retry-After) is a wait from `now`, which `ScheduleStore.rebase` keeps to after the
    gateway's time went back."""
    if every.cron is not None and due == regular:
        return {"next_run_at": due, "planned_at": None}
    return due_at(now, due - now)


def _throttle_seconds(tally: Tally) -> float:
    """The wait a partner that throttled the run asked for, up to the hour a Retry-After is
    honoured for (`timing.backoff_seconds`)."""
    return min(tally.throttled or 0.0, MAX_RETRY_AFTER_SECONDS)


def _paced(doc: Doc, outcome: str, failure: PollFailure | None, tally: Tally) -> bool:
    """Whether this run is the last of the bound of runs in a row: a `more` run, or one held
    after pages with records (`_timing`)."""
    if failure is None:
        return _runs_in_row(doc, outcome, tally) >= MAX_RUNS_IN_ROW
    return failure.held and bool(tally.listed) and _held_in_row(doc, tally) >= MAX_RUNS_IN_ROW


def _held_in_row(doc: Doc, tally: Tally) -> int:
    """The runs in a row counting a held run: one more when its pages held records."""
    return int(doc.get("runs_in_row") or 0) + (1 if tally.listed else 0)


def _runs_in_row(doc: Doc, outcome: str, tally: Tally) -> int:
    """The `more` runs in a row that went on at once, counting this one if it would (its
    pages held records); 0 when it would not."""
    if outcome != "more" or tally.listed == 0:
        return 0
    return int(doc.get("runs_in_row") or 0) + 1
