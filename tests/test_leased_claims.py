"""`leased_loop.Claims`, the one way the delivery worker, the flow runner and the schedule runner
claim: once `stop()` is called, no claim lands (the schedule runner claimed once more before
the three shared it)."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.errors import StoreUnavailable
from gateway.leased_loop import Admit, Claims, FairShares, HandBacks, LeasedLoop, Unit, tenant_only


class _Runner:
    """A loop driven by `Claims` over `shards` shards whose claims find nothing and are
    recorded (shard by shard)."""

    def __init__(self, shards: int) -> None:
        self.loop: LeasedLoop[None] = LeasedLoop(poll_seconds=0.01, shutdown_seconds=1)
        self.hand_backs = HandBacks("unit")
        self.claimed: list[int] = []
        self.claims = Claims(
            "me",
            self.loop,
            self.hand_backs,
            claim=self._claim,
            release_claims=self._release_claims,
            shards=shards,
            fair=FairShares(10, tenant_only),
            runner="test runner",
            units="units",
        )
        self.on_claim: Any = None

    async def _claim(
        self, token: str, limit: int, shard: int, admit: Admit
    ) -> list[dict[str, Any]]:
        self.claimed.append(shard)
        if self.on_claim is not None:
            await self.on_claim()
        return []

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
