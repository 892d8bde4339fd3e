"""Use case: the delivery worker. Named stages over the persisted status:

    claim    due pending deliveries → in_flight under a lease (store/deliveries.py), those it
             can start now: a tenant's share of the slots, a partner's room at its gate
             (`leased_loop.FairShares`)
    prepare  action, partner (and a webhook's subscription), request mapping → the request
             (preparation.py)
    send     through the partner's guard (breaker, rate limit, concurrency) and the SSRF guard
    record   the attempt, then succeeded | pending at the next retry time | failed | dead
             (recording.py)

A delivery's `kind` (models.DeliveryKind) says which: webhooks and flow calls are action calls
and take the stages above; a kind with a sender of its own (notifications: `kinds.py`) is
handed to it after the claim, and what it answers is recorded the same way.

Several processes can run workers on one database: a delivery is claimed by one worker at a
time, and every write after the claim is fenced by the claim's token. A worker that dies
leaves leases that expire; their deliveries are due again at once (at-least-once).

Partners: a partner failing for longer than its `disable_after_hours` is disabled
(partner_health.py): its deliveries wait. Every `probe_seconds` after its last probe ended,
one worker probes it (side by side with other partners' probes, outside housekeeping) with its
oldest pending delivery (one whose probe just failed waits two probes; a HEAD of its base URL
when none is left); the first answer re-enables it, its backlog flows and what went `dead`
during its outage is replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from asyncio import FIRST_COMPLETED
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from gateway.actions.catalog import Catalog
from gateway.actions.ordering import hands_over_state, newer_than
from gateway.actions.partner_calls import PartnerCalls
from gateway.auth.secretbox import SecretBoxError
from gateway.background import cancel_and_wait
from gateway.clock import StepWatch, utcnow
from gateway.delivery.kinds import Dropped, Held, KindSender
from gateway.delivery.partner_health import PartnerHealth
from gateway.delivery.preparation import Unsendable, delivery_request, resolve_target
from gateway.delivery.recording import DeliveryRecorder, recording_failed
from gateway.errors import InvalidPayload, NotFound, SecretDamaged, StoreUnavailable
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
from gateway.mapping_files.source import MappingSource
from gateway.metrics import Metrics
from gateway.models import DeliveryKind, DeliveryStatus
from gateway.outbound.sender import OutboundRequest
from gateway.outbound.verdict import Verdict
from gateway.store import Doc, Store
from gateway.store.client import Admission
from gateway.store.deliveries import SHARDS

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
_EXCERPT = 1024
KEY_REFUSED = "key_refused"  # handed back: a secret it needs does not open with this key
SECRET_DAMAGED = "secret_damaged"  # failed: a secret it needs is damaged (`StoredSecrets`)
_QUEUE_STATS_EVERY = 15  # housekeeping rounds between two queue measurements (O(backlog))
# Deliveries a disabled partner's probe fails for its damaged secret in one housekeeping round
# (each a claim, a judgement and a write): the rest of its backlog at the next rounds, so that
# lease take-back, other partners' probes and the queue gauges never wait for a whole backlog.
DAMAGED_PER_ROUND = 50
PROBES_AT_ONCE = 8  # disabled partners a worker probes side by side (housekeeping)
# Deliveries a probe takes that ask the partner nothing (unsendable: failed; held by our own
# guard) before it settles for a HEAD of the partner's base_url.
UNSENT_PER_PROBE = 5
_SECOND = timedelta(seconds=1)


@dataclass(slots=True)
class _Probe:
    """A delivery sent as its disabled partner's probe: `asked`, whether its request went out
    (an answer, or none: the recorder judges the partner by it)."""

    asked: bool = False


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    lease_seconds: float = 90.0
    concurrency: int = 32
    poll_seconds: float = 1.0
    probe_seconds: float = 300.0
    shutdown_seconds: float = 10.0
    # The wait of the change stream that wakes the worker for deliveries other processes
    # create (`leased_loop.follow_arrivals`); None: none followed, the poll finds them.
    arrivals_await_ms: int | None = None


class DeliveryWorker:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        calls: PartnerCalls,
        mappings: MappingSource,
        metrics: Metrics,
        *,
        secrets: StoredSecrets,
        settings: WorkerSettings = WorkerSettings(),
        senders: Mapping[str, KindSender] | None = None,
        owner: str | None = None,
        clock: Clock = utcnow,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._calls = calls
        self._guards = calls.guards
        self._mappings = mappings
        self._metrics = metrics
        self._settings = settings
        self._senders = dict(senders or {})  # kind → its own sender (notifications)
        self.owner = owner or lease_owner()
        # Public so tests can move time and fix the jitter: scheduling reads them only.
        self.clock = clock
        self.rng = rng
        self._lease = timedelta(seconds=settings.lease_seconds)
        self._times = StepWatch()  # the time going back, seen at housekeeping (`_rebase`)
        self._probes = itertools.count(1)
        self._probing: dict[Any, asyncio.Task[None]] = {}  # partner id → its probe under way
        self._pacing: dict[str, asyncio.TimerHandle] = {}  # partner id → its loop's wake-up
        # partner id → this worker's calls to it under way (`_partner_room`)
        self._sending: Counter[str] = Counter()
        self._probe_shares = FairShares(PROBES_AT_ONCE, tenant_only)
        self._refill_at = max(1, settings.concurrency // 4)
        self._loop: LeasedLoop[Counter[str]] = LeasedLoop(
            poll_seconds=settings.poll_seconds, shutdown_seconds=settings.shutdown_seconds
        )
        self._hand_backs = HandBacks("delivery")
        self._key_refused = False  # a secret did not open with GATEWAY_SECRET_KEY (logged)
        self._secrets = secrets  # what a secret that does not open is (`keys.StoredSecrets`)
        self._claims = Claims(
            self.owner,
            self._loop,
            self._hand_backs,
            claim=self._claim_shard,
            release_claims=self._release_claims,
            shards=SHARDS,
            claim_any=self._claim_any,
            fair=FairShares(settings.concurrency, _whose, self._partner_room, self._closed),
            runner="delivery worker",
            units="deliveries",
        )
        self._held = self._claims.held  # delivery id → claim token, until recorded
        # Asked right before a delivery's request goes out, after every wait of the send
        self._leases = LeaseCheck(self._lease, self._now, store.deliveries.renew_lease)
        self.progress = self._claims.progress  # of claiming, for readiness
        self._health = PartnerHealth(
            store,
            catalog,
            calls,
            metrics,
            probe_seconds=settings.probe_seconds,
            on_enabled=self.notify,
        )
        self._recorder = DeliveryRecorder(
            store, catalog, self._health, metrics, clock=self._now, rng=self._random
        )

    @property
    def running(self) -> bool:
        """Whether `run()` is looping (for readiness)."""
        return self._loop.running

    def notify(self) -> None:
        """New deliveries exist (the fan-out calls this): claim now, not at the next poll."""
        self._loop.notify()

    def _now(self) -> datetime:
        return self.clock()  # read at each call: tests replace `clock` on the instance

    def _random(self) -> float:
        return self.rng()

    # -- driving -----------------------------------------------------------------------------

    async def run_until_idle(self) -> Counter[str]:
        """Claim and send until nothing is due now (per the worker's clock); counts by result.
        Expired leases are taken back and due probes run first."""
        counts: Counter[str] = Counter()
        await self.housekeeping(measure=False)
        while batch := await self._claims.claim(self._settings.concurrency):
            for result in await asyncio.gather(*(self._run_group(g) for g in _groups(batch))):
                counts.update(result)
        return counts

    async def run(self) -> None:
        """Until `stop()`: claim as many deliveries as there are free slots, send them in
        the background, wait for a notification, a change naming new ones (any process's:
        `leased_loop.follow_arrivals`), a free slot or the poll interval (`leased_loop.py`);
        beside it, housekeeping and the renewal of the leases held."""
        keepers = [
            self._housekeeping_loop,
            lambda: renew_leases(self._settings.lease_seconds, self._renew, "delivery"),
        ]
        following = self._metrics.change_stream_up.labels("deliveries")
        if (await_ms := self._settings.arrivals_await_ms) is None:
            following.set(0)  # GATEWAY_CHANGE_STREAMS=false: it polls
        else:
            keepers.append(
                lambda: follow_arrivals(
                    partial(self._store.deliveries.arrivals, await_ms=await_ms),
                    self._claims.arrived,
                    "delivery worker",
                    following.set,
                )
            )
        await self._loop.run(self._look, keepers=keepers)

    async def _look(self) -> list[Coroutine[Any, Any, Counter[str]]] | None:
        free = self._settings.concurrency - len(self._held)
        # Refill in batches, not one slot at a time: a claim reads a whole shard.
        if not (free >= self._refill_at or (free > 0 and not self._held)):
            return None
        return [self._run_group(group) for group in _groups(await self._claims.claim_safely(free))]

    async def stop(self) -> None:
        """Stop claiming, let in-flight sends finish (bounded), release what did not."""
        await self._loop.stop()  # no claim may land after the leases are released
        for wake in self._pacing.values():
            wake.cancel()
        self._pacing.clear()
        await self._claims.release_held(self._give_back)

    async def _give_back(self, delivery_id: str, token: str) -> None:
        """A delivery held at shutdown, pending again and due: a claimed one was due already;
        a probe's, taken before its time, may belong to a partner recovered meanwhile, whose
        recovery passed over it in flight (a disabled partner's stays unclaimed until its
        next probe whatever its time)."""
        now = self.clock()
        pending = {"status": DeliveryStatus.PENDING.value, "updated_at": now}
        await self._store.deliveries.finish(delivery_id, token, pending, due_by=now)

    async def _run_group(self, group: list[Doc]) -> Counter[str]:
        """Deliveries of one order key go one after the other; others run side by side."""
        counts: Counter[str] = Counter()
        for doc in group:
            counts[await self._deliver(doc)] += 1
        return counts

    async def _claim_shard(self, token: str, limit: int, shard: int, admit: Admission) -> list[Doc]:
        """Due deliveries of `shard` (`leased_loop.Claims` reads the shards in turn) this
        worker can start now (`admit`: its tenant's share, its partner's room)."""
        now = self.clock()
        return await self._store.deliveries.claim(
            token, now, now + self._lease, limit, shard, admit
        )

    async def _claim_any(self, token: str, limit: int, admit: Admission) -> list[Doc]:
        """`_claim_shard`'s deliveries, due in any shard (an idle worker's look)."""
        now = self.clock()
        return await self._store.deliveries.claim(token, now, now + self._lease, limit, None, admit)

    def _partner_room(self, partner_id: str) -> int | None:
        """A disabled partner has none (its probe takes its deliveries); another, the size of
        its concurrency gate in this process, fewer while its circuit or its rate limit lets
        fewer through (`PartnerGuards.room`): this worker's own calls to it under way and the
        tokens its rate limit gives a call arriving now, not those other use cases' calls
        hold or wait for."""
        if partner_id in self._health.disabled:
            return 0
        return self._guards.room(partner_id, self._sending[partner_id])

    def _closed(self) -> list[str]:
        """The partners with no room at all (`_partner_room`): a claim does not read their
        deliveries (`leased_loop.FairShares`)."""
        return [*self._health.disabled, *self._guards.closed()]

    def _pace(self, partner_id: str) -> None:
        """After a call of a rate-limited partner that left its rate limit no token to give
        within `max_wait` (its room 0: no claim takes its deliveries), the loop is woken when
        it has one again, not at its next poll, seconds later while its looks come back
        empty: the partner gets its rate."""
        if partner_id in self._pacing or (wait := self._guards.opens_in(partner_id)) is None:
            return
        loop = asyncio.get_running_loop()
        self._pacing[partner_id] = loop.call_later(wait, self._paced, partner_id)

    def _paced(self, partner_id: str) -> None:
        self._pacing.pop(partner_id, None)
        self.notify()

    async def _release_claims(self, held: list[str]) -> None:
        await self._store.deliveries.release_claims(self.owner, held, self.clock())

    # -- housekeeping: leases, disabled partners, probes, queue metrics -----------------------

    async def _housekeeping_loop(self) -> None:
        """Each poll interval: lease take-back and the disabled partners (`_keep`), probes of
        the disabled partners due started in the background (`_start_probes`), and every
        `_QUEUE_STATS_EVERY` rounds the queue gauges: a probe waiting on its partner's answer
        holds back neither the next rounds nor another partner's probe; and at the first
        round that passes after one the database failed (the gauges are NaN while it is
        down: `Metrics.database_known`).
        Probes still under way when the worker stops are cancelled (their deliveries given
        back)."""
        unmeasured = False
        try:
            for rounds in itertools.count():
                try:
                    await self._keep()
                    await self._start_probes()
                    if unmeasured or rounds % _QUEUE_STATS_EVERY == 0:
                        await self._measure()
                        unmeasured = False
                except StoreUnavailable as exc:
                    unmeasured = True
                    log.warning("delivery housekeeping paused: %s", exc.detail)
                except Exception:
                    log.exception("delivery housekeeping failed; retrying")
                await asyncio.sleep(self._settings.poll_seconds)
        finally:
            await cancel_and_wait(*self._probing.values())

    async def _renew(self) -> None:
        held, until = dict(self._held), self.clock() + self._lease
        if await self._store.deliveries.renew_leases(held, until) == len(held):
            self._leases.renewed(held, until)

    async def housekeeping(self, *, measure: bool = True) -> None:
        """Take back expired leases, learn which partners are disabled, probe the disabled
        partners due and wait for the probes (those of the background's rounds too), and
        (when `measure`) update the queue gauges."""
        await self._keep()
        await self._start_probes()
        while self._probing:
            await asyncio.wait(set(self._probing.values()), return_when=FIRST_COMPLETED)
            await self._start_probes()
        if measure:
            await self._measure()

    async def _rebase(self) -> None:
        """When this worker sees the time go back since its last housekeeping (a second or
        more, or `steps_back` moved): retries set on the time as it was are waited again from
        the step (`DeliveryStore.rebase`), not for as long as it was ahead, and the leases
        this worker holds run out a lease from now. Not at its first housekeeping: a start
        sees no step (one made while no worker ran is not rebased), and another process's
        leases (taken with its own lease length) are never touched. From now when the
        step's own time is not known (the worker's clock is not the gateway's: a test's)."""
        now = self.clock()
        if (waits_from := self._times.went_back(now)) is None:
            return
        if moved := await self._store.deliveries.rebase(now, waits_from):
            log.warning(
                "the gateway's time went back: %d deliveries' retries set on the time as it "
                "was wait from %s instead",
                moved,
                waits_from.isoformat(),
            )
        await self._renew()
        self._times.rebased()  # only once done: one that failed is tried at the next round

    async def _keep(self) -> None:
        # The rebase's failure holds back neither the lease take-back nor the partners' health.
        try:
            await self._rebase()
        except StoreUnavailable as exc:
            log.warning("rebasing deliveries after the time went back failed: %s", exc.detail)
        if expired := await self._store.deliveries.expire_leases(self.clock()):
            log.info("took back %d deliveries whose lease expired", expired)
            self.notify()
        await self._health.refresh()

    async def _measure(self) -> None:
        now = self.clock()
        # Waiting for their partner, not for a worker (a rate limit's backlog waits for one)
        closed = sorted({*self._health.disabled, *self._guards.refusing()})
        pending, in_flight, oldest = await self._store.deliveries.queue_stats(now, closed)
        self._metrics.delivery_queue.labels("pending").set(pending)
        self._metrics.delivery_queue.labels("in_flight").set(in_flight)
        age = (now - oldest).total_seconds() if oldest else 0.0
        self._metrics.delivery_oldest_due.set(max(age, 0.0))

    async def _start_probes(self) -> None:
        """Claim the disabled partners due for a probe while probe slots are free, each
        probed in a task of its own: `PROBES_AT_ONCE` at once, a tenant's share of them at
        most (`leased_loop.FairShares`, as for the claims of deliveries: a quarter always
        left for another tenant's), so that one tenant's partners whose probes hang (each up
        to its own timeout) hold back no other tenant's recovery. A partner whose probe is
        still under way (longer than `probe_seconds`: its claim set it due again) is not
        probed again beside it: one probe of a partner at a time, each one tracked until it
        ends, and cancelled when the worker stops."""
        while len(self._probing) < PROBES_AT_ONCE:
            now = self.clock()
            shares = self._probe_shares.admission(self._probing)

            def admit(doc: Doc, shares: Admission = shares) -> bool:
                return doc["_id"] not in self._probing and shares(doc)

            next_probe = now + timedelta(seconds=self._settings.probe_seconds)
            doc = await self._store.partners.claim_probe(now, next_probe, admit)
            if doc is None:
                return
            self._probe_shares.took(doc["_id"], doc)
            task = asyncio.create_task(self._probe_then_reschedule(doc, next_probe))
            self._probing[doc["_id"]] = task
            task.add_done_callback(partial(self._probe_ended, doc["_id"]))

    def _probe_ended(self, partner_id: Any, task: asyncio.Task[None]) -> None:
        if self._probing.get(partner_id) is task:  # its own entry only
            del self._probing[partner_id]

    async def _probe_then_reschedule(self, doc: Doc, claimed: datetime) -> None:
        """Probe the partner; its next probe is due `probe_seconds` after this one ended (not
        after a round began), or sooner when `_probe` says so. `claimed`: the probe time its
        claim wrote, its token (not `probe_at` as read after the claim: an admin's disable
        in between, "never probed", must not be undone by this probe's reschedule)."""
        try:
            sooner = await self._probe(doc)
            later = self.clock() + timedelta(seconds=self._settings.probe_seconds)
            await self._store.partners.probe_again_at(doc["_id"], claimed, sooner or later)
        except StoreUnavailable as exc:  # due again at the time its claim set
            log.warning("probing partner %s paused: %s", doc["_id"], exc.detail)
        except Exception:
            log.exception("probing partner %s failed; it is probed again later", doc["_id"])

    async def _probe(self, doc: Doc) -> datetime | None:
        """Probe a disabled partner with its oldest pending delivery, or a HEAD request;
        when its next probe is due sooner than `probe_seconds` after this one, when.

        A delivery that asks the partner nothing (unsendable: its subscription disabled or
        deleted, its mapping failing, failed as such; held by our own guard) tells nothing of
        it either: the next one is taken, `UNSENT_PER_PROBE` of them at most, then the HEAD.
        Until 2026-12-06 the probe ended there, the partner disabled one more probe interval
        for each such delivery at the head of its queue.

        A delivery that fails for the partner's damaged secret (`_deliver`) tells nothing of
        the partner: the next one is taken, so that its whole backlog fails, named, rather
        than one delivery a probe (and no HEAD follows); `DAMAGED_PER_ROUND` of them in one
        round, then the partner's probe is due again at the next round (the time returned),
        which goes on with the rest. Without any delivery, the HEAD needs the secret too: judged
        (`StoredSecrets`: damage logged and counted), nothing is sent."""
        damaged = unsent = 0
        while (delivery := await self._claim_for_probe(doc)) is not None:
            probe = _Probe()
            result = await self._deliver(delivery, probe=probe)
            if probe.asked:
                return None
            if result != SECRET_DAMAGED:
                unsent += 1
                if unsent == UNSENT_PER_PROBE:
                    break
                continue
            damaged += 1
            if damaged == DAMAGED_PER_ROUND:  # more, maybe: at the next round
                return self.clock() + timedelta(seconds=self._settings.poll_seconds)
        if damaged:  # the HEAD would need the same secret
            return None
        try:
            partner = self._catalog.compile_partner(doc)
        except SecretBoxError as exc:
            await self._secrets.judge(exc)
            return None
        outcome = await self._calls.send(
            partner, OutboundRequest("HEAD", partner.base_url, timeout=partner.timeout)
        )
        # As for a probe with a delivery (recording.py): an answer re-enables, but a retryable
        # one (408, 425, 429, 5xx) says the partner is still not taking requests.
        if outcome.status is not None and outcome.verdict is not Verdict.RETRY:
            await self._health.enable(partner, self.clock())
        return None

    async def _claim_for_probe(self, doc: Doc) -> Doc | None:
        """The disabled partner's oldest pending delivery, held for its probe."""
        token = f"{self.owner}:probe:{next(self._probes)}"
        now = self.clock()
        try:
            delivery = await self._store.deliveries.claim_for_partner(
                str(doc["_id"]),
                token,
                now,
                now + self._lease,
                failing_since=doc.get("failing_since"),
            )
        except StoreUnavailable:  # it may have been applied: what it took, pending again
            release = partial(self._store.deliveries.release_lease, token, now)
            await self._hand_backs.give_back(token, release, loud=False)
            raise
        if delivery is not None:
            self._held[delivery["_id"]] = token
        return delivery

    # -- one delivery ------------------------------------------------------------------------

    async def _deliver(self, doc: Doc, *, probe: _Probe | None = None) -> str:
        token = self._held[doc["_id"]]
        self._leases.claimed(doc["_id"], doc.get("lease_until"))
        try:
            result = await self._prepare_unless_damaged(doc, token, probe)
        except LeaseLost:  # nothing went out; the lease's holder sends it
            log.warning(
                "delivery %s not sent: its lease was lost before it went out (this process "
                "was paused past it); another worker has it",
                doc["_id"],
            )
            result = "lease_lost"
        except StoreUnavailable as exc:
            # Nothing more can be written: handed back, due again after a pause (the
            # database decides when), not once the lease expires. A send that happened is
            # repeated with the same webhook-id / Message-ID (at least once).
            log.warning("delivery %s not recorded: %s", doc["_id"], exc.detail)
            result = "unrecorded"
            await self._hand_back(doc, token)
        except SecretBoxError as exc:
            # A secret it needs (its subscription's signing secret, its partner's credentials)
            # does not open with this process's GATEWAY_SECRET_KEY, which no longer opens the
            # key check either: a configuration error of this process, not the delivery's;
            # handed back for a process with the right key, or this one once its key is
            # fixed, never parked (at least once).
            if not self._key_refused:
                log.error(
                    "configuration error: delivery %s handed back unsent, and every other one "
                    "whose secret does not open here (logged once): %s",
                    doc["_id"],
                    exc.detail,
                )
            self._key_refused = True
            self._metrics.deliveries.labels(KEY_REFUSED).inc()
            result = KEY_REFUSED
            await self._hand_back(doc, token)
        except Exception as exc:
            log.exception("delivery %s cannot be processed; parked", doc["_id"])
            result = await self._park(doc, token, f"{type(exc).__name__}: {exc}")
        else:
            self._hand_backs.forget(str(doc["_id"]))
        self._held.pop(doc["_id"], None)
        self._leases.forget(doc["_id"])
        return result

    async def _prepare_unless_damaged(self, doc: Doc, token: str, probe: _Probe | None) -> str:
        """`_prepare_and_send`, unless a secret the delivery needs (its partner's, its
        subscription's, its channel's: an action call's or a notification's) does not open:
        judged by `StoredSecrets`. Damaged, no wait mends it: the delivery fails at once,
        naming whose secret it is, and the rest of the queue goes on. This process's key
        refused, the SecretBoxError goes on to `_deliver`, which hands the delivery back."""
        try:
            return await self._prepare_and_send(doc, token, probe)
        except SecretBoxError as exc:
            fault = await self._secrets.judge(exc)
            if not isinstance(fault, SecretDamaged):
                raise
        result = await self._recorder.fail(doc, token, f"{fault.detail}, then replay the delivery")
        return SECRET_DAMAGED if result == DeliveryStatus.FAILED.value else result

    async def _hand_back(self, doc: Doc, token: str) -> None:
        """The delivery pending again, due after a pause that grows each time it comes back
        (`HandBacks.pause`), kept for a retry while the database refuses the write."""
        now = self.clock()
        pause = self._hand_backs.pause(
            str(doc["_id"]), self._settings.poll_seconds, self._settings.lease_seconds
        )
        due = now + timedelta(seconds=pause)
        pending = {"status": DeliveryStatus.PENDING.value, "updated_at": now}
        write = partial(
            self._store.deliveries.finish, doc["_id"], token, {**pending, "next_attempt_at": due}
        )
        await self._hand_backs.give_back(str(doc["_id"]), write)

    async def _park(self, doc: Doc, token: str, why: str) -> str:
        """What the worker cannot process (a malformed document, a bug) is set aside, not
        retried forever nor in anyone's way: `parked` with its reason, replayable once fixed.
        The write reads nothing of the document but its id, so a malformed one parks too."""
        reason = f"cannot be processed: {why}"[:500]
        try:
            if not await self._store.deliveries.park(doc["_id"], token, reason, self.clock()):
                return "lease_lost"
        except Exception as exc:  # then the lease expires, and the next claim tries again
            log.error("delivery %s cannot be parked either: %s", doc["_id"], exc)
            return "unrecorded"
        self._metrics.deliveries.labels(DeliveryStatus.PARKED.value).inc()
        order_key, seq = doc.get("order_key"), doc.get("seq")
        if isinstance(order_key, str) and isinstance(seq, str):
            with contextlib.suppress(Exception):  # the next one also wakes at its own time
                await self._store.deliveries.wake_waiting(order_key, doc["_id"], seq, self.clock())
        return DeliveryStatus.PARKED.value

    async def _prepare_and_send(self, doc: Doc, token: str, probe: _Probe | None) -> str:
        before_sending = self._leases.before_sending(doc["_id"], token)
        own = self._senders.get(doc.get("kind", DeliveryKind.WEBHOOK))
        if own is not None:
            result = await own.send(doc, self.clock(), before_sending)
            if isinstance(result, Held) and result.partner_id is not None:
                self._health.disabled.add(result.partner_id)  # its action calls are passed over
            return await self._recorder.settle(doc, token, result)
        try:
            target = await resolve_target(doc, self._catalog)
        except Unsendable as exc:
            return await self._recorder.fail(doc, token, exc.reason)
        partner = target.partner
        if partner.disabled and probe is None:
            self._health.disabled.add(partner.id)
            return await self._recorder.defer(
                doc, token, self.clock() + _SECOND * 5, f"partner {partner.name} is disabled"
            )
        # A probe too: it is the first open delivery of its order key (claim_for_partner),
        # unless one was created or replayed since.
        if doc.get("order_key") and (judged := await self._in_line(doc, token)) is not None:
            return judged
        try:
            request = await delivery_request(
                doc, target, self._mappings, lease=self._lease, clock=self._now
            )
        except (NotFound, InvalidPayload) as exc:
            problems = getattr(exc, "problems", [])
            return await self._recorder.fail(
                doc,
                token,
                f"cannot build the request: {exc.detail}",
                errors=[p.as_dict() for p in problems],
            )
        self._sending[partner.id] += 1
        try:
            outcome = await self._calls.send(
                partner, replace(request, before_sending=before_sending), action=target.action
            )
        finally:
            self._sending[partner.id] -= 1
            if not self._sending[partner.id]:
                del self._sending[partner.id]
        self._pace(partner.id)
        if probe is not None:
            probe.asked = outcome.sent
        probing = probe is not None
        record = partial(self._recorder.record, doc, token, target.action, partner, request=request)
        try:
            return await record(outcome, probing)
        except StoreUnavailable:
            raise
        except Exception as exc:
            # The partner answered: its answer decides, even one this release cannot record
            # as it came (a bug of ours). Recorded bare, with the reason; never parked.
            log.exception("delivery %s: the partner's answer cannot be recorded", doc["_id"])
            bare = recording_failed(outcome, exc)
            return await record(bare, probing, again=True)

    async def _in_line(self, doc: Doc, token: str) -> str | None:
        """Ordered action: None when the delivery goes now. It waits (parked, `waiting_for`)
        behind an earlier delivery of the same entity that is not final yet, which wakes it
        when it ends, and, handing over the entity's state, behind a later one in flight,
        which wakes it when its flight ends. One of the entity's state older than a delivery
        the partner already took is not sent (`suppressed`, which wakes the next): a call
        made late (its run resumed after its runner died, or run beside a newer one) would
        replace the newer state. An occurrence is never outdated (`hands_over_state`), nor
        is an admin's replay; a recovery's is (`recovered_at`): the answer that ended its
        partner's outage may be a newer delivery of its entity's (SPEC §5: an ERP never sees
        mileage go backwards)."""
        deliveries = self._store.deliveries
        blocker = await self._blocker(doc, token)
        if blocker is not None and blocker["status"] == DeliveryStatus.SUCCEEDED.value:
            reason = f"outdated: delivery {blocker['_id']}, of a newer version, was sent before it"
            return await self._recorder.settle(doc, token, Dropped(reason))
        if blocker is None:
            return None
        now = self.clock()
        busy = blocker.get("lease_until") if blocker["status"] == "in_flight" else None
        when = max(now, busy or blocker.get("next_attempt_at") or now) + _SECOND
        parked = await deliveries.finish(
            doc["_id"],
            token,
            {
                "status": DeliveryStatus.PENDING.value,
                "next_attempt_at": when,
                "waiting_for": blocker["_id"],
                "updated_at": now,
            },
        )
        # The earlier one may have ended while we parked, and found nobody to wake.
        if parked and await self._blocker(doc, token) is None:
            await deliveries.unpark(doc["_id"], self.clock())
        return "waiting"

    async def _blocker(self, doc: Doc, token: str) -> Doc | None:
        deliveries = self._store.deliveries
        order_key, seq = doc["order_key"], doc["seq"]
        earlier = await deliveries.earlier_open(order_key, seq)
        newer = newer_than(seq)
        # An admin's replay, or an occurrence: what went after it replaces nothing.
        by_hand = "replayed_at" in doc and "recovered_at" not in doc
        if earlier is not None or newer is None or by_hand:
            return earlier
        if not hands_over_state(doc):
            return None
        return await deliveries.later_in_line(order_key, seq, newer, token)


def _whose(doc: Doc) -> tuple[str | None, str | None]:
    """A delivery's tenant, and the partner it is sent to: none for a notification, which
    asks its channel which partner it goes through now (`notify/dispatch.py`)."""
    tenant, partner = doc.get("tenant"), doc.get("partner_id")
    if doc.get("kind") == DeliveryKind.NOTIFICATION.value or not isinstance(partner, str):
        partner = None
    return (tenant if isinstance(tenant, str) else None, partner)


def _groups(batch: list[Doc]) -> list[list[Doc]]:
    """One group per order key (in delivery order), one group per unordered delivery. Read
    defensively: a malformed document (a `seq` or `order_key` of another type) goes alone to
    the stage that parks it, and never fails the whole batch."""
    groups: dict[Any, list[Doc]] = {}
    for doc in sorted(batch, key=lambda d: str(d.get("seq") or d["_id"])):
        key = doc.get("order_key")
        groups.setdefault(key if isinstance(key, str) and key else ("one", doc["_id"]), []).append(
            doc
        )
    return list(groups.values())
