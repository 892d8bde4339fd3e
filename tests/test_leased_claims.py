"""`leased_loop.Claims`, the one way the delivery worker, the flow runner and the schedule runner
claim: once `stop()` is called, no claim lands (the schedule runner claimed once more before
the three shared it)."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.errors import StoreUnavailable
from gateway.leased_loop import Claims, FairShares, HandBacks, LeasedLoop, Unit, tenant_only
from gateway.store.client import Admission
from tests.processes import until


class _Runner:
    """A loop driven by `Claims` over `shards` shards whose claims find nothing (or what
    `due` holds for the shard, as far as `admit` takes it, its excluded tenants' left out)
    and are recorded (shard by shard)."""

    def __init__(
        self, shards: int, poll_seconds: float = 0.01, slots: int = 10, any_shard: bool = False
    ) -> None:
        self.loop: LeasedLoop[None] = LeasedLoop(poll_seconds=poll_seconds, shutdown_seconds=1)
        self.hand_backs = HandBacks("unit")
        self.claimed: list[int | None] = []  # None: a claim in every shard (`claim_any`)
        self.claims = Claims(
            "me",
            self.loop,
            self.hand_backs,
            claim=self._claim,
            release_claims=self._release_claims,
            shards=shards,
            claim_any=self._claim_any if any_shard else None,
            fair=FairShares(slots, tenant_only),
            runner="test runner",
            units="units",
        )
        self.on_claim: Any = None
        self.due: dict[int, list[dict[str, Any]]] = {}

    async def _claim(
        self, token: str, limit: int, shard: int, admit: Admission
    ) -> list[dict[str, Any]]:
        self.claimed.append(shard)
        if self.on_claim is not None:
            await self.on_claim()
        due = self.due.get(shard, [])
        read = [doc for doc in due if doc["tenant"] not in admit.excluded.get("tenant", ())]
        taken = [doc for doc in read if admit(doc)][:limit]
        self.due[shard] = [doc for doc in due if doc not in taken]
        return taken

    async def _claim_any(self, token: str, limit: int, admit: Admission) -> list[dict[str, Any]]:
        self.claimed.append(None)
        due = [doc for shard in sorted(self.due) for doc in self.due[shard]]
        read = [doc for doc in due if doc["tenant"] not in admit.excluded.get("tenant", ())]
        taken = [doc for doc in read if admit(doc)][:limit]
        self.due = {shard: [d for d in docs if d not in taken] for shard, docs in self.due.items()}
        return taken

    async def _release_claims(self, held: list[Any]) -> None:
        return None

    async def look(self) -> list[Unit[None]]:
        await self.claims.claim_safely(10)
        return []

    async def stop_now(self) -> asyncio.Task[None]:
        """Call `stop()` and let it run up to its wait for the loop."""
        stopping = asyncio.create_task(self.loop.stop())
        await asyncio.sleep(0)
        assert self.loop.stopping
        return stopping


async def test_a_claim_reads_no_further_shard_once_stop_is_called() -> None:
    runner = _Runner(shards=4)
    stopped: list[asyncio.Task[None]] = []

    async def stop_during_the_first_claim() -> None:
        stopped.append(await runner.stop_now())

    runner.on_claim = stop_during_the_first_claim
    await runner.loop.run(runner.look)
    await stopped[0]
    assert len(runner.claimed) == 1


async def test_no_claim_lands_when_stop_is_called_while_hand_backs_are_tried() -> None:
    runner = _Runner(shards=1)  # the schedule runner's claims: one claim, no shards
    stopped: list[asyncio.Task[None]] = []
    tries = 0

    async def hand_back() -> None:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise StoreUnavailable("down")  # kept, tried again before the next claim
        stopped.append(await runner.stop_now())

    await runner.hand_backs.give_back("unit-1", hand_back)
    await runner.loop.run(runner.look)
    await stopped[0]
    assert tries == 2
    assert runner.claimed == []


async def test_a_claim_that_passed_work_over_is_not_repeated_until_a_slot_of_it_frees() -> None:
    """Tenant acme holds its share (three of four slots, alone) and has more due in every
    shard: the loop's next claim would pass the same units over again, so it reads nothing
    until one of acme's units is done, work is announced or the poll interval passed."""
    runner = _Runner(shards=4, poll_seconds=0.5, slots=4)
    runner.due = {s: [{"_id": f"{s}-{n}", "tenant": "acme"} for n in range(5)] for s in range(4)}
    claims = runner.claims
    assert len(await claims.claim_safely(4)) == 3  # acme's share, the rest passed over
    reads = len(runner.claimed)
    assert await claims.claim_safely(4) == []
    assert len(runner.claimed) == reads  # not read again
    claims.held.pop(next(iter(claims.held)))  # one of acme's units is done
    assert len(await claims.claim_safely(4)) == 1
    reads = len(runner.claimed)
    assert await claims.claim_safely(4) == []
    assert len(runner.claimed) == reads
    runner.loop.notify()  # work announced: read again (every shard: acme's left out)
    assert await claims.claim_safely(4) == []
    assert len(runner.claimed) == reads + 4
    assert await claims.claim_safely(4) == []
    assert len(runner.claimed) == reads + 4
    await asyncio.sleep(0.6)  # the poll interval passed: read again
    assert await claims.claim_safely(4) == []
    assert len(runner.claimed) == reads + 8


def test_a_claim_leaves_out_the_tenants_at_their_share_and_the_partners_without_room() -> None:
    """Four slots: acme holds two units to partner erp (its room two), globex one to crm (no
    limit known); partner down is closed (disabled, or its circuit open). The claim's read
    leaves out acme (at its half share, another tenant holding some), erp (at its room) and
    down, not globex nor crm; one that fills up during the read is left out of the rest."""

    def whose(doc: dict[str, Any]) -> tuple[str | None, str | None]:
        return doc["tenant"], doc["partner"]

    rooms = {"erp": 2, "down": 0}
    fair = FairShares(4, whose, rooms.get, lambda: ["down"])
    fair.took("u1", {"tenant": "acme", "partner": "erp"})
    fair.took("u2", {"tenant": "acme", "partner": "erp"})
    fair.took("u3", {"tenant": "globex", "partner": "crm"})
    admission = fair.admission({"u1", "u2", "u3"})
    assert admission.excluded == {"tenant": ["acme"], "partner": ["erp", "down"]}
    assert admission({"tenant": "globex", "partner": "crm"})  # globex's second: its share
    assert not admission({"tenant": "globex", "partner": "crm"})
    assert admission.excluded["tenant"] == ["acme", "globex"]
    assert ("tenant", "globex") in fair.passing


async def test_a_look_a_change_woke_reads_the_shards_the_change_named_alone() -> None:
    """A unit another process created wakes the runner through its collection's change stream
    (`leased_loop.follow_arrivals`), which names its shard: the look reads that shard, not the
    32 (before, each wake-up swept every shard); the stream's (re)opening, which names none,
    and the poll read them all."""
    runner = _Runner(shards=32, poll_seconds=60)
    running = asyncio.create_task(runner.loop.run(runner.look))
    try:
        await until(lambda: len(runner.claimed) == 32, 10, "the first look, at every shard")
        runner.claimed.clear()
        runner.due[5] = [{"_id": "5-0", "tenant": "acme"}]
        runner.claims.arrived({5})
        await until(lambda: "5-0" in runner.claims.held, 10, "the claim of shard 5")
        await asyncio.sleep(0.05)
        assert runner.claimed == [5]
        runner.claims.arrived(None)
        await until(lambda: len(runner.claimed) == 33, 10, "a look at every shard")
        assert sorted(runner.claimed[1:]) == list(range(32))
    finally:
        await runner.loop.stop()
        await running


async def test_a_look_a_finished_unit_woke_reads_every_shard() -> None:
    """A unit finishing frees a slot and wakes the runner; what it made due names no shard (an
    ordered line's next delivery: `wake_waiting` sets its next_attempt_at to now, no change of
    status, no notify), so that look reads every shard, as the poll does. It read none when
    the look before it found nothing (narrow, nothing named): the next delivery of the line
    waited for the poll."""
    runner = _Runner(shards=32, poll_seconds=60)
    done: list[str] = []

    async def work(doc: dict[str, Any]) -> None:
        await asyncio.sleep(0.2)  # A's send
        if doc["_id"] == "A":
            runner.due[3].append({"_id": "B", "tenant": "acme"})  # wake_waiting: B due now
        runner.claims.held.pop(doc["_id"], None)
        done.append(doc["_id"])

    async def look() -> list[Unit[None]]:
        return [work(doc) for doc in await runner.claims.claim_safely(10)]

    runner.due[3] = [{"_id": "A", "tenant": "acme"}]
    running = asyncio.create_task(runner.loop.run(look))
    try:
        await until(lambda: "A" in done, 10, "A sent")
        await until(lambda: "B" in runner.claims.held or "B" in done, 2, "B claimed at once")
    finally:
        await runner.loop.stop()
        await running


async def test_a_runner_loop_cancelled_as_it_is_notified_ends_cancelled() -> None:
    """One cancellation stops the loop even as work is announced: on 3.11 its wait for a
    wake-up (`asyncio.wait_for`, a task of its own) returned the wake-up instead, and the loop
    looked again, though asked to stop."""

    async def look() -> list[Unit[None]]:
        return []

    landed = []
    for turns in range(4):  # the cancellation 0 to 3 turns of the event loop after `notify`
        loop: LeasedLoop[None] = LeasedLoop(poll_seconds=10, shutdown_seconds=1)
        running = asyncio.create_task(loop.run(look))
        for _ in range(3):
            await asyncio.sleep(0)  # it looked, found nothing, waits for a wake-up
        loop.notify()
        for _ in range(turns):
            await asyncio.sleep(0)
        if running.cancel():
            landed.append(turns)
            async with asyncio.timeout(5):
                await asyncio.wait({running})
            assert running.cancelled(), f"cancelled {turns} turns after `notify`, it went on"
        loop.stopping = True
        loop.notify()
        await asyncio.wait({running})
    assert landed


async def test_a_look_after_one_that_found_every_shard_empty_is_one_claim_in_all_of_them() -> None:
    """An idle delivery worker or flow runner read each of its 32 (8) shards at every look,
    each read finding nothing. Once a look has read every shard and taken nothing, the next
    one that would read every shard is one claim in all of them (`claim_any`), whatever it
    finds; a look that took something is followed by looks shard by shard again (a backlog's
    claims read one shard's units, not the whole backlog)."""
    runner = _Runner(shards=32, any_shard=True)
    assert await runner.claims.claim(10) == []
    assert sorted(runner.claimed) == list(range(32))  # the first look: every shard
    runner.claimed.clear()
    assert await runner.claims.claim(10) == []
    assert runner.claimed == [None]  # idle: one claim in all
    runner.due = {7: [{"_id": "7-0", "tenant": "acme"}], 20: [{"_id": "20-0", "tenant": "acme"}]}
    taken = await runner.claims.claim(10)
    assert sorted(doc["_id"] for doc in taken) == ["20-0", "7-0"]
    assert runner.claimed == [None, None] and set(runner.claims.held) == {"7-0", "20-0"}
    runner.claimed.clear()
    runner.due[3] = [{"_id": "3-0", "tenant": "acme"}]
    assert [doc["_id"] for doc in await runner.claims.claim(10)] == ["3-0"]
    assert None not in runner.claimed  # after a look that took something: shard by shard
    runner.claimed.clear()
    assert await runner.claims.claim(10) == []
    assert sorted(c for c in runner.claimed if c is not None) == list(range(32))
    runner.claimed.clear()
    runner.claims.arrived({9})  # a change names its shard: read alone when the look is narrow
    assert await runner.claims.claim(10) == []
    assert runner.claimed == [None]  # not narrow (no loop running): every shard, in one claim
