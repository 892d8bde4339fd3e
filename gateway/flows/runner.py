"""Use case: the flow runner. Named stages over the persisted run (`store/flow_runs.py`):

    claim    due pending runs → running under a lease (a batch token fences every write)
    step     the first step without an outcome runs (`steps.py`)
    record   its outcome is stored before the next step starts; the last one (or one that
             ends the run) sets the final status: succeeded | stopped | failed
    wait     a step that must retry (a fetch's partner down) → pending at the retry time
    hold     its flow is paused (asked before every step) → held at its next step, until the
             flow is resumed (`FlowService.resume`); deleted (asked before every step too) →
             the run fails there
    fault    a step that raised what no step should (a bug) → pending after a lease, at most
             `fault_attempts` times for the same step; then the run fails at that step
             (`last_error` names it and the exception), replayable once fixed

A runner that dies leaves leases that expire: the run is pending again and resumes at its
first step without an outcome, in any process. Steps with effects outside the run are
recorded one by one; a step without any (`when`, a skipped guard) is recorded with the next
write, since running it again gives the same answer. Several processes run runners on one
database, like delivery workers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from gateway.auth.secretbox import SecretBoxError
from gateway.clock import utcnow
from gateway.delivery.retry import next_attempt_at
from gateway.errors import NotFound, SecretDamaged, StoreUnavailable
from gateway.flows.context import run_context
from gateway.flows.deliveries import RunRef
from gateway.flows.model import Step
from gateway.flows.service import FlowService
from gateway.flows.steps import StepOutcome, StepRunner, Wait, failed
from gateway.keys import StoredSecrets
from gateway.leased_loop import (
    Claims,
    FairShares,
    HandBacks,
    LeaseCheck,
    LeasedLoop,
    LeaseLost,
    follow_arrivals,
    lease_owner,
    renew_leases,
    tenant_only,
)
from gateway.metrics import Metrics
from gateway.models import RunStatus
from gateway.store import Doc, Store
from gateway.store.client import Admission, stored_size
from gateway.store.flow_runs import SHARDS

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

MAX_ANSWER_BYTES = 8 * 1024 * 1024
"""What a run keeps of its steps' answers (`answers`, counted as the database stores them,
BSON: an array of numbers takes several times its JSON there): half of the 16 MiB a database
document holds, the rest for the event and the steps' records. A step whose answer would take
the run past it fails (its answer is not kept)."""


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    lease_seconds: float = 90.0
    concurrency: int = 32
    poll_seconds: float = 1.0
    shutdown_seconds: float = 10.0
    # Tries of one step that raised unexpectedly (a lease apart) before its run fails.
    fault_attempts: int = 3
    # The wait of the change stream that wakes the runner for runs other processes start
    # (`leased_loop.follow_arrivals`); None: none followed, the poll finds them.
    arrivals_await_ms: int | None = None


@dataclass(slots=True)
class _Progress:
    """Where a claimed run stands: `base` is the step the stored run is at (the fence),
    `entries` the outcomes not stored yet, `step` the one running (its index and itself),
    `kept` the bytes of answers the run holds."""

    base: int
    entries: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, Any] = field(default_factory=dict)
    step: tuple[int, Step] | None = None
    kept: int = 0


class FlowRunner:
    def __init__(
        self,
        store: Store,
        flows: FlowService,
        steps: StepRunner,
        metrics: Metrics,
        secrets: StoredSecrets,
        *,
        settings: RunnerSettings = RunnerSettings(),
        owner: str | None = None,
        clock: Clock = utcnow,
        rng: Callable[[], float] = random.random,
        on_deliveries: Callable[[], None] | None = None,
        on_time: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._runs = store.notify.runs
        self._flows = flows
        self._steps = steps
        self._metrics = metrics
        self._secrets = secrets  # what a secret that does not open is (`keys.StoredSecrets`)
        self._settings = settings
        self.owner = owner or lease_owner()
        self.clock = clock  # public so tests can move time; read at each call
        self.rng = rng
        self._on_deliveries = on_deliveries
        self._on_time = on_time
        self._lease = timedelta(seconds=settings.lease_seconds)
        self._loop: LeasedLoop[str] = LeasedLoop(
            poll_seconds=settings.poll_seconds, shutdown_seconds=settings.shutdown_seconds
        )
        self._hand_backs = HandBacks("flow run")
        self._key_refused = False  # a secret did not open with GATEWAY_SECRET_KEY (logged)
        self._claims = Claims(
            self.owner,
            self._loop,
            self._hand_backs,
            claim=self._claim_shard,
            release_claims=self._release_claims,
            shards=SHARDS,
            claim_any=self._claim_any,
            fair=FairShares(settings.concurrency, tenant_only),
            runner="flow runner",
            units="flow runs",
        )
        self._held = self._claims.held  # run id → claim token
        # Asked right before a step's request goes out (a fetch), after every wait of the send
        self._leases = LeaseCheck(self._lease, lambda: self.clock(), self._runs.renew_lease)

    @property
    def running(self) -> bool:
        return self._loop.running

    def notify(self) -> None:
        """New runs exist (the starter calls this): claim now, not at the next poll."""
        self._loop.notify()

    # -- driving -----------------------------------------------------------------------------

    async def run_until_idle(self) -> Counter[str]:
        """Claim and run until nothing is due now (per the runner's clock); counts by result.
        Expired leases are taken back first."""
        counts: Counter[str] = Counter()
        await self.housekeeping()
        while batch := await self._claims.claim(self._settings.concurrency):
            counts.update(await asyncio.gather(*(self._drive(doc) for doc in batch)))
        return counts

    async def run(self) -> None:
        """Until `stop()`: claim as many runs as there are free slots, run them in the
        background, wait for a notification, a change naming new ones (any process's:
        `leased_loop.follow_arrivals`), a free slot or the poll interval (`leased_loop.py`);
        beside it, housekeeping and the renewal of the leases held."""
        keepers = [
            self._housekeeping_loop,
            lambda: renew_leases(self._settings.lease_seconds, self._renew, "flow run"),
        ]
        following = self._metrics.change_stream_up.labels("flow_runs")
        if (await_ms := self._settings.arrivals_await_ms) is None:
            following.set(0)  # GATEWAY_CHANGE_STREAMS=false: it polls
        else:
            keepers.append(
                lambda: follow_arrivals(
                    partial(self._runs.arrivals, await_ms=await_ms),
                    self._claims.arrived,
                    "flow runner",
                    following.set,
                )
            )
        await self._loop.run(self._look, keepers=keepers)

    async def _look(self) -> list[Coroutine[Any, Any, str]] | None:
        free = self._settings.concurrency - len(self._held)
        if free <= 0:
            return None
        return [self._drive(doc) for doc in await self._claims.claim_safely(free)]

    async def stop(self) -> None:
        """Stop claiming, let runs under way finish (bounded), hand back what did not."""
        await self._loop.stop()
        await self._claims.release_held(self._give_back)

    async def _give_back(self, run_id: str, token: str) -> None:
        await self._runs.release(run_id, token, self.clock())

    async def _claim_shard(self, token: str, limit: int, shard: int, admit: Admission) -> list[Doc]:
        """Due runs of `shard` this runner can start now (`admit`: its tenant's share)."""
        now = self.clock()
        return await self._runs.claim(token, now, now + self._lease, limit, shard, admit)

    async def _claim_any(self, token: str, limit: int, admit: Admission) -> list[Doc]:
        """`_claim_shard`'s runs, due in any shard (an idle runner's look)."""
        now = self.clock()
        return await self._runs.claim(token, now, now + self._lease, limit, None, admit)

    async def _release_claims(self, held: list[str]) -> None:
        await self._runs.release_claims(self.owner, held, self.clock())

    async def _housekeeping_loop(self) -> None:
        while True:
            try:
                await self.housekeeping()
            except StoreUnavailable as exc:
                log.warning("flow runner housekeeping paused: %s", exc.detail)
            except Exception:
                log.exception("flow runner housekeeping failed; retrying")
            await asyncio.sleep(self._settings.poll_seconds)

    async def _renew(self) -> None:
        """A long step (a slow partner) must not lose its run to another runner."""
        held, until = dict(self._held), self.clock() + self._lease
        if await self._runs.renew_leases(held, until) == len(held):
            self._leases.renewed(held, until)

    async def housekeeping(self) -> None:
        """Take back the runs of runners that died; then `on_time`, the work the clock makes
        due beside the runs (scheduled driver changes that started: `current_driver`, whose
        `entity.updated` may start runs)."""
        if expired := await self._runs.expire_leases(self.clock()):
            log.info("took back %d flow runs whose lease expired", expired)
            self.notify()
        if self._on_time is not None:
            await self._on_time()

    # -- one run -----------------------------------------------------------------------------

    async def _drive(self, doc: Doc) -> str:
        token = self._held[doc["_id"]]
        progress = _Progress(doc["next_step"])
        self._leases.claimed(doc["_id"], doc.get("lease_until"))
        try:
            result = await self._steps_of(doc, token, progress)
        except LeaseLost:  # nothing went out; the lease's holder runs the step
            log.warning(
                "flow run %s: step not sent: its lease was lost before the request went out "
                "(this process was paused past it); another runner has it",
                doc["_id"],
            )
            result = "lease_lost"
        except StoreUnavailable as exc:
            # Resumed from its last record as soon as the database takes the hand-back, not
            # once its lease expires.
            log.warning("flow run %s not recorded: %s", doc["_id"], exc.detail)
            result = "unrecorded"
            await self._hand_back(doc, token)
        except SecretBoxError as exc:
            result = await self._secret_fault(doc, token, progress, exc)
        except Exception as exc:
            log.exception("flow run %s failed unexpectedly", doc["_id"])
            result = await self._fault(doc, token, progress, exc)
        else:
            self._hand_backs.forget(doc["_id"])
        self._held.pop(doc["_id"], None)
        self._leases.forget(doc["_id"])
        self._metrics.flow_runs.labels(result).inc()
        return result

    async def _hand_back(self, doc: Doc, token: str) -> None:
        """Pending again from its last record, due after a pause that grows each time it
        comes back (`HandBacks.pause`)."""
        now = self.clock()
        pause = self._hand_backs.pause(
            doc["_id"], self._settings.poll_seconds, self._settings.lease_seconds
        )
        due = now + timedelta(seconds=pause)
        await self._hand_backs.give_back(
            doc["_id"], partial(self._runs.release, doc["_id"], token, now, due)
        )

    async def _secret_fault(
        self, doc: Doc, token: str, progress: _Progress, exc: SecretBoxError
    ) -> str:
        """A step needed a stored secret that does not open (a channel's SMTP password, a
        partner's credentials), judged by `StoredSecrets`: damaged, the run fails at that
        step naming it (no retry mends it); this process's key refused (or the key check
        unreadable), the run is handed back for a process with the right key, never failed;
        the refusal is logged once per process, as a delivery's (`DeliveryWorker._deliver`):
        a configuration error of the process, not of each run."""
        try:
            fault = await self._secrets.judge(exc)
        except StoreUnavailable as unread:
            log.warning("flow run %s not judged: %s", doc["_id"], unread.detail)
            fault = None
        if isinstance(fault, SecretDamaged):
            index, step = progress.step or (progress.base, None)
            return await self._fail_at(doc, token, progress, index, step, fault.detail)
        if fault is not None and not self._key_refused:
            log.error(
                "configuration error: flow run %s handed back, and every other one whose "
                "step needs a secret that does not open here (logged once): %s",
                doc["_id"],
                fault.detail,
            )
        self._key_refused = self._key_refused or fault is not None
        await self._hand_back(doc, token)
        return "key_refused" if fault is not None else "unrecorded"

    async def _steps_of(self, doc: Doc, token: str, progress: _Progress) -> str:
        tenant = doc["tenant"]
        try:
            flow = await self._flows.runnable(tenant, doc["flow"], doc["version"])
        except NotFound as exc:
            return await self._gone(doc, token, progress, exc)
        context = run_context(
            doc["event"], flow=flow.name, version=doc["version"], now=doc["created_at"]
        )
        context["steps"] = dict(doc.get("answers") or {})
        context["vehicle"] = await self._steps.vehicle_of(tenant, doc["event"])
        progress.kept = stored_size(context["steps"])
        run = RunRef(
            doc["_id"],
            tenant,
            flow.name,
            doc.get("depth", 0),
            doc["created_at"],
            doc["event"],
            self._leases.before_sending(doc["_id"], token),
        )
        first = progress.base
        for index in range(first, len(flow.steps)):
            step = flow.steps[index]
            progress.step = (index, step)
            if index > first:  # deleted since the run was claimed: no further step
                try:
                    await self._flows.runnable(tenant, doc["flow"], doc["version"])
                except NotFound as exc:
                    return await self._gone(doc, token, progress, exc)
            if await self._flows.is_paused(tenant, flow.name):
                return await self._hold(doc, token, progress)
            outcome = self._kept(
                progress, step, await self._steps.run(run, step, context, self.clock())
            )
            if outcome.wait is not None:
                return await self._wait(doc, token, progress, step, outcome.wait)
            progress.entries.append(
                {"id": step.id, "kind": step.kind, **outcome.entry, "at": self.clock()}
            )
            context["steps"][step.id] = outcome.answer
            if outcome.answer is not None:
                progress.answers[step.id] = outcome.answer
            if outcome.end is not None:
                return await self._end(
                    doc, token, progress, outcome.end, outcome.entry.get("detail")
                )
            if outcome.created and self._on_deliveries is not None:
                self._on_deliveries()
            if not outcome.pure and index + 1 < len(flow.steps):
                if not await self._record(doc, token, progress, None, {"next_step": index + 1}):
                    return "lease_lost"
        return await self._end(doc, token, progress, RunStatus.SUCCEEDED, None)

    @staticmethod
    def _kept(progress: _Progress, step: Step, outcome: StepOutcome) -> StepOutcome:
        """The outcome, unless its answer takes the run's past MAX_ANSWER_BYTES: then the
        step fails (the run's document would outgrow what the database holds)."""
        if outcome.answer is None:
            return outcome
        size = stored_size(outcome.answer)
        if progress.kept + size <= MAX_ANSWER_BYTES:
            progress.kept += size
            return outcome
        detail = (
            f"the answer of step {step.id!r} ({size:,} bytes) would take the run's answers past "
            f"{MAX_ANSWER_BYTES:,} bytes ({progress.kept:,} kept): a run keeps no more"
        )
        return StepOutcome({**outcome.entry, **failed(detail).entry}, end=RunStatus.FAILED)

    async def _fault(self, doc: Doc, token: str, progress: _Progress, exc: Exception) -> str:
        """A step raised what no step should: pending again after a lease, from its last
        record; the `fault_attempts`-th time for the same step, the run fails there (a bug
        must neither spin nor keep a run for ever)."""
        index, step = progress.step or (progress.base, None)
        step_id = None if step is None else step.id
        faults = doc.get("faults") or {}
        made = (faults.get("attempts", 0) if faults.get("step") == step_id else 0) + 1
        reason = f"{type(exc).__name__}: {exc}"[:500]
        try:
            if made >= self._settings.fault_attempts:
                detail = f"failed unexpectedly {made} times: {reason}"
                return await self._fail_at(doc, token, progress, index, step, detail)
            later = {
                "next_attempt_at": self.clock() + self._lease,
                "faults": {"step": step_id, "attempts": made, "last_error": reason},
            }
            await self._record(doc, token, _Progress(progress.base), RunStatus.PENDING, later)
        except Exception:
            # Not even that was stored: the lease expires, the run is tried again then.
            log.exception("flow run %s: its fault was not recorded either", doc["_id"])
        return "faulted"

    async def _fail_at(
        self,
        doc: Doc,
        token: str,
        progress: _Progress,
        index: int,
        step: Step | None,
        detail: str,
    ) -> str:
        """The run failed at step `index`: the outcomes before it are kept, not the step's own
        (its record may be what the database refused)."""
        done = progress.entries[: index - progress.base]
        entry = {"id": None, "kind": None} if step is None else {"id": step.id, "kind": step.kind}
        kept = _Progress(
            progress.base, [*done, {**entry, **failed(detail).entry, "at": self.clock()}]
        )
        kept.answers = {
            e["id"]: progress.answers[e["id"]] for e in done if e["id"] in progress.answers
        }
        error = detail if step is None else f"step {step.id!r} {detail}"
        fields = {"next_step": index + 1, "finished_at": self.clock(), "last_error": error}
        if not await self._record(doc, token, kept, RunStatus.FAILED, fields):
            return "lease_lost"
        return RunStatus.FAILED.value

    async def _gone(self, doc: Doc, token: str, progress: _Progress, exc: NotFound) -> str:
        """The flow version the run is pinned to was deleted: the run fails, no step runs."""
        entry = {"id": None, "kind": None, **failed(exc.detail).entry, "at": self.clock()}
        progress.entries.append(entry)
        return await self._end(doc, token, progress, RunStatus.FAILED, exc.detail)

    async def _end(
        self, doc: Doc, token: str, progress: _Progress, status: RunStatus, error: Any
    ) -> str:
        now = self.clock()
        fields = {"next_step": progress.base + len(progress.entries), "finished_at": now}
        if error is not None:
            fields["last_error"] = error
        if not await self._record(doc, token, progress, status, fields):
            return "lease_lost"
        return status.value

    async def _hold(self, doc: Doc, token: str, progress: _Progress) -> str:
        """Its flow is paused: held at this step (what ran is recorded) until the resume."""
        fields = {"next_step": progress.base + len(progress.entries), "held_at": self.clock()}
        if not await self._record(doc, token, progress, RunStatus.HELD, fields):
            return "lease_lost"
        if await self._flows.let_go_if_resumed(
            doc["tenant"], doc["flow"], doc["_id"], doc["created_at"]
        ):
            self.notify()  # resumed meanwhile: pending (or skipped) again
        return "held"

    async def _wait(self, doc: Doc, token: str, progress: _Progress, step: Step, wait: Wait) -> str:
        """Pending again at the step's next retry time; failed once its schedule is done. A
        held step (nothing went out) is pending again when the hold ends, no attempt spent."""
        waits = doc.get("waits") or {}
        made = waits.get("attempts", 0) if waits.get("step") == step.id else 0
        now = self.clock()
        if wait.held:
            when: datetime | None = now + timedelta(seconds=wait.retry_after or 1.0)
        else:
            made += 1
            when = next_attempt_at(
                made, wait.schedule, now, retry_after=wait.retry_after, rng=self.rng
            )
        if when is None:
            detail = f"{wait.detail}; gave up after {made} attempts"
            gave_up = {"id": step.id, "kind": step.kind, **failed(detail).entry, "at": now}
            progress.entries.append(gave_up)
            return await self._end(doc, token, progress, RunStatus.FAILED, detail)
        fields = {
            "next_step": progress.base + len(progress.entries),
            "next_attempt_at": when,
            "waits": {"step": step.id, "attempts": made, "last_error": wait.detail},
        }
        if not await self._record(doc, token, progress, RunStatus.PENDING, fields):
            return "lease_lost"
        return "waiting"

    async def _record(
        self,
        doc: Doc,
        token: str,
        progress: _Progress,
        status: RunStatus | None,
        fields: dict[str, Any],
    ) -> bool:
        """Store what `progress` holds (fenced by the token and the stored step); `status`
        set means the run leaves our hands (final, or pending for a wait)."""
        update = {**fields, "updated_at": self.clock()}
        if status is not None:
            update["status"] = status.value
        stored = await self._runs.record(
            doc["_id"],
            token,
            progress.base,
            entries=progress.entries,
            answers=progress.answers,
            fields=update,
            release=status is not None,
        )
        if stored:
            progress.base = update.get("next_step", progress.base)
            progress.entries, progress.answers = [], {}
        else:
            log.warning(
                "flow run %s: lease lost before recording; another runner owns it", doc["_id"]
            )
        return stored
