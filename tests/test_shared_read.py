"""`SharedRead`: the askers at once share one read, and none is answered by a read begun
before it asked (a schedule's lease check before each write of a page's landing)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.shared_read import SharedRead


class Source:
    """A value read with a round trip the test holds open while `gate` is clear."""

    def __init__(self) -> None:
        self.value = "held"
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.began = asyncio.Event()
        self.error: Exception | None = None

    async def read(self) -> str:
        self.reads += 1
        seen = self.value  # what the database holds as the read begins
        self.began.set()
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return seen


async def test_askers_at_once_share_one_read() -> None:
    source = Source()
    shared = SharedRead(source.read)
    assert await asyncio.gather(*(shared() for _ in range(16))) == ["held"] * 16
    assert source.reads == 1
    assert await shared() == "held" and source.reads == 2  # later: a read of its own


async def test_who_asks_during_a_read_gets_the_next_read_which_sees_a_change_before_it() -> None:
    """A DELETE answered after a read began and before a write asked: the write's answer is
    a read begun after it asked, that sees the DELETE."""
    source = Source()
    source.gate.clear()
    shared = SharedRead(source.read)
    first = asyncio.create_task(shared())
    await source.began.wait()
    source.value = "lost"  # changed after the read in flight began
    later = [asyncio.create_task(shared()) for _ in range(5)]
    await asyncio.sleep(0)
    source.gate.set()
    assert await first == "held"
    assert await asyncio.gather(*later) == ["lost"] * 5
    assert source.reads == 2


async def test_an_error_reaches_every_asker_and_a_cancelled_asker_leaves_the_read_to_others() -> (
    None
):
    source = Source()
    source.gate.clear()
    shared = SharedRead(source.read)
    gone, staying = asyncio.create_task(shared()), asyncio.create_task(shared())
    await source.began.wait()
    gone.cancel()
    await asyncio.sleep(0)
    source.gate.set()
    assert await staying == "held" and gone.cancelled()

    source.error = RuntimeError("the database went away")
    results = await asyncio.gather(shared(), shared(), return_exceptions=True)
    assert [str(r) for r in results] == ["the database went away"] * 2
    source.error = None
    assert await shared() == "held"  # the next read is its own


@pytest.mark.parametrize("askers", [1, 3])
async def test_a_read_cancelled_with_the_loop_cancels_its_askers(askers: int) -> None:
    source = Source()
    source.gate.clear()
    shared = SharedRead(source.read)
    asking = [asyncio.create_task(shared()) for _ in range(askers)]
    await source.began.wait()
    reading = shared._reading
    assert reading is not None
    reading.cancel()
    results = await asyncio.gather(*asking, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    source.gate.set()
    assert await shared() == "held"
