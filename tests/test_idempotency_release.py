"""An `Idempotency-Key` whose call failed is released (docs/reliability.md "Command faults"):
only that call's marker, never the marker of a call still running with the same key, in
one command per round however many calls failed while the database was down, and once more
when the app shuts down, whose background releases stop with it."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from gateway.errors import Conflict, StoreUnavailable
from gateway.triggers.idempotency import IdempotencyGuard
from gateway.triggers.model import HookAnswer
from tests.test_command_faults import (
    DB_TIMEOUT_MS,
    FAULTS,
    Injector,
    app,
    database_back,
    faults,
    ready,
    services_of,
)
from tests.triggers_support import VEHICLE, Client, bearer, create_trigger

__all__ = ["app", "faults"]  # the fixtures

CLOSE = next(f for f in FAULTS if f.name == "closeConnection")
SHUTDOWN = next(f for f in FAULTS if f.name == "ShutdownInProgress")
WRITE_CONCERN = next(f for f in FAULTS if f.name == "WriteConcernFailed")  # the insert happened


async def test_a_call_whose_claim_failed_never_releases_the_marker_of_one_still_running(
    app: Client, faults: Injector
) -> None:
    # Both calls in the same millisecond (a frozen clock): they differ by their claim alone.
    guard = IdempotencyGuard(services_of(app).store, clock=lambda: 1_800_000_000.0)
    trigger: Any = SimpleNamespace(tenant="t1", id="trg-same-ms")
    running, finish = asyncio.Event(), asyncio.Event()

    async def first_call() -> HookAnswer:
        running.set()
        await finish.wait()
        return HookAnswer(201, b'{"first": true}')

    async def another_call() -> HookAnswer:
        raise AssertionError("ran beside the first call, whose key it holds")

    first = asyncio.create_task(guard.run(trigger, "order-7", "h", first_call))
    await running.wait()
    # The second call's claim fails: whether its marker was written or not, the marker there
    # is the first call's, and it must not take it away.
    async with faults.failing(SHUTDOWN, commands=["insert"], mode={"times": 1}):
        with pytest.raises(StoreUnavailable):
            await guard.run(trigger, "order-7", "h", another_call)
    # Its release rounds run meanwhile (0.1, 0.3, 0.7 s after the failure): each finds no
    # marker of its own, and the first call's key stays held.
    loop = asyncio.get_running_loop()
    ends = loop.time() + 1.0
    while loop.time() < ends:
        try:
            await guard.run(trigger, "order-7", "h", another_call)
        except Conflict:
            await asyncio.sleep(0.05)
    finish.set()
    assert (await first).status == 201
    replay = await guard.run(trigger, "order-7", "h", another_call)
    assert (replay.status, replay.body) == (201, b'{"first": true}')
    await guard.close()  # the guard of the test's own, closed as the app closes its own


async def test_calls_failed_while_the_database_was_down_are_released_in_a_few_commands(
    app: Client, faults: Injector
) -> None:
    services = services_of(app)
    trigger = await create_trigger(app)
    calls = 40

    def send(n: int) -> Any:
        headers = {**bearer(trigger), "Idempotency-Key": f"order-{n}"}
        return app.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)

    # The connection drops under each claim: whether its marker was written is not known,
    # so each is released again, round after round, until half the lease has passed.
    async with faults.failing(CLOSE, commands=["insert"]):
        answers = await asyncio.gather(*[send(n) for n in range(calls)])
    assert {a.status for a in answers} == {503}
    await database_back(services)
    admin = faults.admin.admin

    async def deletes() -> int:
        return int((await admin.command("serverStatus"))["opcounters"]["delete"])

    before = await deletes()
    await asyncio.sleep(1.0)
    released = await deletes() - before
    # One command per round for all of them (nothing else here deletes): 0-1 in this second,
    # where one command per call and round was 9 or more.
    assert released <= 3, released
    retries = await asyncio.gather(*[send(n) for n in range(calls)])
    # No key is still held by the calls that failed while the database was down (a 409). A
    # retry the loaded machine answered 503 (40 at once under the app's 1 s deadline: its own
    # outcome unknown) is its client's to send again, once its own marker is released.
    assert 409 not in {r.status for r in retries}, [r.status for r in retries]
    answers = [
        await _answered(functools.partial(send, n)) if r.status == 503 else r
        for n, r in enumerate(retries)
    ]
    assert {r.status for r in answers} <= {200, 201}, [r.status for r in answers]


async def _answered(send: Callable[[], Any]) -> Any:
    """A client's retry of a call answered 503: again while that call's own marker holds
    its key (409) or the database's deadline passes again (503), for at most 20 s."""
    async with asyncio.timeout(20):
        while (response := await send()).status in (409, 503):
            await asyncio.sleep(0.1)
    return response


def _releasers() -> list[asyncio.Task[Any]]:
    """The guard's background releases still running in this loop."""
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and "_keep_releasing" in task.get_coro().__qualname__  # type: ignore[union-attr]
    ]


async def test_shutdown_stops_the_background_release_and_releases_once_without_errors(
    aiohttp_client: Any,
    make_app: Callable[..., web.Application],
    faults: Injector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app: Client = await ready(await aiohttp_client(make_app(db_timeout_ms=DB_TIMEOUT_MS)))
    trigger = await create_trigger(app)
    headers = {**bearer(trigger), "Idempotency-Key": "order-9"}
    # The claim's insert is stored, but its answer is an error: the call fails (503) and
    # leaves its marker, to release in the background.
    async with faults.failing(WRITE_CONCERN, commands=["insert"], mode={"times": 1}):
        response = await app.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)
    assert response.status == 503, await response.text()
    assert len(_releasers()) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        await app.close()  # the app's cleanup, before the first background round is due
    assert _releasers() == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    # The marker was released at shutdown: the retry, in the next process, is processed
    # (a marker left behind would answer 409 until its lease runs out, 30 s).
    again: Client = await ready(await aiohttp_client(make_app(db_timeout_ms=DB_TIMEOUT_MS)))
    retry = await again.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=headers)
    assert retry.status == 201, await retry.text()
