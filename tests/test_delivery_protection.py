"""Partner protection and recovery: disable after a failing period, automatic re-probe and
backlog, circuit breaker, SSRF refusal, and a graceful worker shutdown."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from bson import ObjectId

from gateway.background import cancel_and_wait
from gateway.clock import utcnow
from gateway.delivery.worker import DeliveryWorker
from gateway.errors import StoreUnavailable
from gateway.store.client import PASSED_OVER_MOST, Admission
from gateway.store.deliveries import shard_of
from gateway.web.state import services_key
from tests.partner_double import (
    FakeClock,
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
    post,
    raw_partner,
    running_partner,
)
from tests.support import after_the_write_of, auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]


def _driven(client: Client, clock: FakeClock | None = None) -> DeliveryWorker:
    worker = client.app[services_key].delivery_worker
    worker.clock = clock or FakeClock()
    worker.rng = lambda: 0.5
    return worker


async def _setup(
    client: Client,
    partner: Partner,
    *,
    partner_fields: dict[str, Any],
    action: dict[str, Any] | None = None,
) -> dict[str, Any]:
    partner_doc = await create_partner(client, partner.url, **partner_fields)
    action_doc = await create_action(client, partner_doc["id"], **(action or {}))
    await create_subscription(client, action_doc["id"], ("entity.created",))
    return partner_doc


async def _vehicles(client: Client, *plates: str) -> None:
    for plate in plates:
        await create_vehicle(client, plate)
    await client.app[services_key].relay.run_until_idle()


async def _disabled_with_two_an_hour_away(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock, **fields: Any
) -> dict[str, Any]:
    """A partner failing for 5 s (> its `disable_after_hours` 0.001: disabled), its two
    deliveries (ABC1D23's, XYZ9A88's) due again an hour away."""
    partner_doc = await _setup(
        client,
        partner,
        partner_fields={"disable_after_hours": 0.001, **fields},
        action={"retry_schedule": [3600, 3600]},
    )
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")
    await worker.run_until_idle()
    clock.advance(5.1)
    await _vehicles(client, "XYZ9A88")
    await worker.run_until_idle()
    return partner_doc


async def _partner_status(client: Client, partner_id: str) -> str:
    doc = await (await client.get(f"/api/v1/partners/{partner_id}", headers=auth())).json()
    return str(doc["status"])


async def _attempt_counts(client: Client) -> list[int]:
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    return sorted(d["attempt_count"] for d in page["items"])


async def test_failing_partner_is_disabled_then_reprobed_and_its_backlog_flows(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_doc = await _setup(
        client,
        partner,
        partner_fields={"disable_after_hours": 0.001},
        action={"retry_schedule": [5, 5, 5, 5, 5]},
    )
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")

    first = await worker.run_until_idle()  # failing since now
    clock.advance(5.1)
    second = await worker.run_until_idle()  # failing for 5 s > 3.6 s: disabled
    await _vehicles(client, "BRA2E19", "XYZ9A88")
    clock.advance(5.1)
    while_disabled = await worker.run_until_idle()
    status_while_disabled = await _partner_status(client, partner_doc["id"])
    sent_while_disabled = len(partner.requests)
    clock.advance(61)
    failed_probe = await worker.run_until_idle()  # still 503: stays disabled, costs nothing
    attempts_after_failed_probe = await _attempt_counts(client)
    partner.respond_with(200, {})
    clock.advance(61)
    recovered = await worker.run_until_idle()

    assert first == Counter(retry=1) and second == Counter(retry=1)
    assert while_disabled == Counter() and status_while_disabled == "disabled"
    assert sent_while_disabled == 2
    # The failed probe's request is an attempt its delivery made, not a place in its schedule
    assert failed_probe == Counter() and attempts_after_failed_probe == [0, 1, 2]
    assert recovered == Counter(succeeded=2)  # the probe itself is counted apart
    assert await _partner_status(client, partner_doc["id"]) == "active"
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    assert {d["status"] for d in page["items"]} == {"succeeded"}
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_partner_status_changes_total{change="disabled"} 1.0' in metrics
    assert 'gateway_partner_status_changes_total{change="enabled"} 1.0' in metrics


async def test_a_failed_probe_s_attempt_is_numbered_and_counted_like_the_others(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """The failed probe's attempt and the next one were both `n` 1, and `attempt_count` was
    1 for the 2 requests made."""
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    await _setup(
        client,
        partner,
        partner_fields={"disable_after_hours": 0.001},
        action={"retry_schedule": [5, 5, 5, 5, 5]},
    )
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")
    await worker.run_until_idle()
    clock.advance(5.1)
    await worker.run_until_idle()  # disabled
    await _vehicles(client, "BRA2E19")
    clock.advance(61)
    await worker.run_until_idle()  # the probe sends BRA2E19's: still 503
    partner.respond_with(200, {})
    clock.advance(61)
    await worker.run_until_idle()

    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    histories = []
    for item in page["items"]:
        delivery = await (
            await client.get(f"/api/v1/deliveries/{item['id']}", headers=auth())
        ).json()
        attempts = [(a["n"], a["status"], a.get("probe", False)) for a in delivery["attempts"]]
        histories.append((delivery["status"], delivery["attempt_count"], attempts))
    assert sorted(histories) == [
        ("succeeded", 2, [(1, 503, True), (2, 200, False)]),  # BRA2E19's: the failed probe
        ("succeeded", 3, [(1, 503, False), (2, 503, False), (3, 200, True)]),
    ]


async def test_a_partner_down_for_days_with_the_defaults_gets_its_whole_backlog_when_it_recovers(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """The default schedule is spent after ~27.6 h, the partner is disabled after 72 h: the
    deliveries it failed throughout go `dead` on their schedule (SPEC §5), and are replayed
    when it recovers, so every event of the outage reaches it once."""
    client = await aiohttp_client(make_app())
    clock = FakeClock()
    worker = _driven(client, clock)
    services = client.app[services_key]
    services.guards.clock = lambda: time.monotonic() + clock.offset.total_seconds()
    partner_doc = await create_partner(client, partner.url)  # the defaults
    action = await create_action(client, partner_doc["id"])
    await create_subscription(client, action["id"], ("entity.created",))
    partner.respond_with(503, {})
    counts: Counter[str] = Counter()
    plates = [f"ABC1D{n:02d}" for n in range(14)]
    for hour in range(81):
        if hour % 6 == 0 and hour // 6 < len(plates):
            await _vehicles(client, plates[hour // 6])
        counts += await worker.run_until_idle()
        clock.advance(3600)
    status_at_80_hours = await _partner_status(client, partner_doc["id"])
    waiting = await (await client.get("/api/v1/deliveries?limit=50", headers=auth())).json()
    partner.respond_with(200, {})
    sent_before = len(partner.requests)
    clock.advance(300)  # the next probe
    recovered = await worker.run_until_idle()

    assert partner_doc["disable_after_hours"] == 72 and action["retry_schedule"] is None
    assert status_at_80_hours == "disabled"
    dead = [d for d in waiting["items"] if d["status"] == "dead"]
    assert len(dead) == counts["dead"] > 0 and {d["attempt_count"] for d in dead} == {9}
    assert {d["status"] for d in waiting["items"]} == {"pending", "dead"}
    assert recovered == Counter(succeeded=13)  # and the probe's
    page = await (await client.get("/api/v1/deliveries?limit=50", headers=auth())).json()
    assert Counter(d["status"] for d in page["items"]) == Counter(succeeded=14)
    accepted = partner.requests[sent_before:]  # each event once, the probe first
    assert sorted(r.json()["data"]["plate"] for r in accepted) == plates
    first_ids = {r.json()["data"]["plate"]: r.webhook_id for r in partner.requests[:sent_before]}
    assert all(first_ids[r.json()["data"]["plate"]] == r.webhook_id for r in accepted)


async def _outage(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock
) -> str:
    """A delivery spends its schedule (0, 5, 5 s) on 503s and goes dead; another, 400 s in,
    fails past `disable_after_hours` (360 s) and disables the partner."""
    guards = client.app[services_key].guards
    guards.clock = lambda: time.monotonic() + clock.offset.total_seconds()
    partner_doc = await _setup(
        client,
        partner,
        partner_fields={"disable_after_hours": 0.1},
        action={"retry_schedule": [5, 5]},
    )
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")
    counts = await worker.run_until_idle()
    for _ in range(2):
        clock.advance(5.1)
        counts += await worker.run_until_idle()
    assert counts == Counter(retry=2, dead=1)  # the schedule spent, the partner down throughout
    assert await _partner_status(client, partner_doc["id"]) == "active"
    clock.advance(390)
    await _vehicles(client, "XYZ9A88")
    assert await worker.run_until_idle() == Counter(retry=1)
    assert await _partner_status(client, partner_doc["id"]) == "disabled"
    return str(partner_doc["id"])


async def test_deliveries_dead_during_an_outage_are_replayed_when_the_probe_finds_the_partner_back(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_id = await _outage(client, partner, worker, clock)
    dead = await (await client.get("/api/v1/deliveries?status=dead", headers=auth())).json()
    sent_before = len(partner.requests)
    partner.respond_with(200, {})
    clock.advance(61)
    recovered = await worker.run_until_idle()  # the probe (XYZ9A88), then the dead ones
    clock.advance(61)
    later = await worker.run_until_idle()

    assert [d["attempt_count"] for d in dead["items"]] == [3]
    assert await _partner_status(client, partner_id) == "active"
    assert recovered == Counter(succeeded=1) and later == Counter()
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    assert {d["status"] for d in page["items"]} == {"succeeded"}
    accepted = partner.requests[sent_before:]
    assert sorted(r.json()["data"]["plate"] for r in accepted) == ["ABC1D23", "XYZ9A88"]
    first_ids = {r.json()["data"]["plate"]: r.webhook_id for r in partner.requests[:sent_before]}
    assert all(first_ids[r.json()["data"]["plate"]] == r.webhook_id for r in accepted)


async def test_an_admin_reenabling_a_partner_still_down_gives_the_replayed_deliveries_a_schedule(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_id = await _outage(client, partner, worker, clock)
    sent_before = len(partner.requests)
    where = f"/api/v1/partners/{partner_id}"
    assert (await client.patch(where, headers=auth(), json={"status": "active"})).status == 200
    counts = await worker.run_until_idle()
    for _ in range(10):  # 5 min: the breaker's holds between the attempts end
        clock.advance(31)
        counts += await worker.run_until_idle()

    assert await _partner_status(client, partner_id) == "active"  # failing for 5 min < 6
    tried = Counter(r.json()["data"]["plate"] for r in partner.requests[sent_before:])
    assert tried == Counter(ABC1D23=3, XYZ9A88=2)  # XYZ9A88 had 1 of its 3
    assert (counts["retry"], counts["dead"]) == (3, 2)  # and the breaker's holds between
    dead = await (await client.get("/api/v1/deliveries?status=dead", headers=auth())).json()
    # Every attempt counts, the replayed one's first 3 too (its schedule started afresh).
    assert sorted(d["attempt_count"] for d in dead["items"]) == [3, 6]


async def test_a_partner_back_before_it_is_disabled_gets_the_deliveries_its_outage_killed(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """An ERP down for 48 h (a long weekend) with the defaults: its first deliveries spend
    their schedule (~27.6 h) and go `dead`, it is never disabled (72 h). It comes back: the
    first new delivery it answers ends its outage, and the dead ones are replayed, once, with
    their webhook-id. Until 2026-12-07 only a recovery from being disabled replayed: they
    stayed dead until someone replayed them by hand."""
    client = await aiohttp_client(make_app())
    clock = FakeClock()
    worker = _driven(client, clock)
    services = client.app[services_key]
    services.guards.clock = lambda: time.monotonic() + clock.offset.total_seconds()
    partner_doc = await create_partner(client, partner.url)  # the defaults
    action = await create_action(client, partner_doc["id"])
    await create_subscription(client, action["id"], ("entity.created",))
    partner.respond_with(503, {})
    plates = [f"ABC1D{n:02d}" for n in range(8)]
    counts: Counter[str] = Counter()
    hour = 0
    # Two days, longer while fewer than two died: the open breaker lets one delivery through
    # an hour (its probe) and holds the others, and which one it is decides how many schedules
    # are spent by then. At most 66 h: it is disabled at 72.
    while hour < 48 or (counts["dead"] < 2 and hour < 66):
        if hour % 6 == 0 and hour // 6 < len(plates):
            await _vehicles(client, plates[hour // 6])
        counts += await worker.run_until_idle()
        clock.advance(3600)
        hour += 1
    status_before_the_answer = await _partner_status(client, partner_doc["id"])
    dead = await (await client.get("/api/v1/deliveries?status=dead", headers=auth())).json()
    details = [
        await (await client.get(f"/api/v1/deliveries/{d['id']}", headers=auth())).json()
        for d in dead["items"]
    ]
    dead_plates = sorted(d["event"]["data"]["plate"] for d in details)
    partner.respond_with(200, {})
    sent_before = len(partner.requests)
    await _vehicles(client, "XYZ9A88")  # the ERP's first answer since Friday
    await worker.run_until_idle()

    assert status_before_the_answer == "active"
    # The oldest ones (the hourly steps spend a schedule in ~31 h, more with the breaker's holds).
    assert counts["dead"] == len(dead_plates) >= 2 and dead_plates == plates[: len(dead_plates)]
    accepted = Counter(r.json()["data"]["plate"] for r in partner.requests[sent_before:])
    assert accepted["XYZ9A88"] == 1 and all(accepted[p] == 1 for p in dead_plates)
    first_ids = {r.json()["data"]["plate"]: r.webhook_id for r in partner.requests[:sent_before]}
    for request in partner.requests[sent_before:]:
        plate = request.json()["data"]["plate"]
        assert plate == "XYZ9A88" or first_ids[plate] == request.webhook_id
    page = await (await client.get("/api/v1/deliveries?limit=50", headers=auth())).json()
    # None is dead any longer. Those still on their schedule keep their retry times; a
    # delivery the open breaker held at the last hour (due at its next probe) goes out now, so
    # whether any is still pending depends on the order the hour's claims met the breaker.
    assert {d["status"] for d in page["items"]} <= {"succeeded", "pending"}
    replayed = {d["id"] for d in page["items"] if d.get("replayed_at")}
    assert replayed == {d["id"] for d in dead["items"]}
    stored = await services.store.partners.get("acme", partner_doc["id"])
    assert stored is not None and "failing_since" not in stored


async def test_two_processes_answered_at_once_replay_the_outages_dead_deliveries_once(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """A delivery dies of 503s (0 5 5 s); the partner comes back and two gateway processes'
    proxy calls are answered at once: each reads the outage and replays it before either
    clears `failing_since` (held at a barrier), and the dead delivery is replayed once."""
    client = await aiohttp_client(make_app())
    other = await aiohttp_client(make_app())  # a second gateway process, same database
    clock = FakeClock()
    worker = _driven(client, clock)
    client.app[services_key].guards.clock = lambda: time.monotonic() + clock.offset.total_seconds()
    partner_doc = await _setup(
        client, partner, partner_fields={}, action={"retry_schedule": [5, 5]}
    )
    api = await create_action(
        client, partner_doc["id"], name="hr", mode="proxy", method="GET", path="/api/condutor"
    )
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")
    counts = await worker.run_until_idle()
    for _ in range(2):
        clock.advance(5.1)
        counts += await worker.run_until_idle()
    assert counts == Counter(retry=2, dead=1)
    barrier = asyncio.Barrier(2)
    replays: list[int] = []
    for app in (client.app, other.app):
        store = app[services_key].store
        note_success, replay_outage = store.partners.note_success, store.deliveries.replay_outage

        async def replay(*args: Any, _real: Any = replay_outage, **kw: Any) -> int:
            replays.append(await _real(*args, **kw))
            return replays[-1]

        async def at_once(*args: Any, _real: Any = note_success, **kw: Any) -> None:
            await barrier.wait()  # both read the outage, and replayed it, before either clears
            await _real(*args, **kw)

        store.deliveries.replay_outage = replay  # type: ignore[method-assign]
        store.partners.note_success = at_once  # type: ignore[method-assign]
    partner.respond_with(200, {"condutor": "Ana"}, delay=30)  # until `release`
    before = len(partner.requests)
    invoke = f"/api/v1/actions/{api['id']}/invoke"
    calls = [
        asyncio.create_task(c.post(invoke, headers=auth(), json={"payload": {}}))
        for c in (client, other)
    ]
    await partner.wait_for(before + 2)
    partner.release.set()
    answered = [(await call).status for call in calls]
    partner.respond_with(200, {})
    sent = await worker.run_until_idle()

    assert answered == [200, 200]
    assert sorted(replays) == [0, 1] and sent == Counter(succeeded=1)
    posts = [r for r in partner.requests[before:] if r.method == "POST"]
    assert [r.json()["data"]["plate"] for r in posts] == ["ABC1D23"]
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    assert [(d["status"], d["attempt_count"]) for d in page["items"]] == [("succeeded", 4)]


async def test_an_outage_end_cut_short_before_failing_since_is_cleared_is_replayed_by_the_next(
    client: Client, partner: Partner
) -> None:
    """The database fails the write that clears `failing_since`, after the outage's dead
    delivery was replayed: the partner is still failing as stored, and the next answer ends
    the outage again, replaying nothing twice (the delivery is sent once)."""
    clock = FakeClock()
    worker = _driven(client, clock)
    client.app[services_key].guards.clock = lambda: time.monotonic() + clock.offset.total_seconds()
    partner_doc = await _setup(client, partner, partner_fields={}, action={"retry_schedule": []})
    api = await create_action(
        client, partner_doc["id"], name="hr", mode="proxy", method="GET", path="/api/condutor"
    )
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")
    assert await worker.run_until_idle() == Counter(dead=1)
    store = client.app[services_key].store
    note_success, replay_outage = store.partners.note_success, store.deliveries.replay_outage
    failures = [StoreUnavailable("the database does not answer")]
    replays: list[int] = []

    async def failing_once(*args: Any, **kw: Any) -> None:
        if failures:
            raise failures.pop()
        await note_success(*args, **kw)

    async def counted(*args: Any, **kw: Any) -> int:
        replays.append(await replay_outage(*args, **kw))
        return replays[-1]

    store.partners.note_success = failing_once  # type: ignore[method-assign]
    store.deliveries.replay_outage = counted  # type: ignore[method-assign]
    partner.respond_with(200, {})
    invoke = f"/api/v1/actions/{api['id']}/invoke"
    assert (await client.post(invoke, headers=auth(), json={"payload": {}})).status == 200
    cut_short = await store.partners.get("acme", partner_doc["id"])
    assert (await client.post(invoke, headers=auth(), json={"payload": {}})).status == 200
    ended = await store.partners.get("acme", partner_doc["id"])
    sent = await worker.run_until_idle()

    assert cut_short is not None and cut_short.get("failing_since") is not None
    assert ended is not None and "failing_since" not in ended
    assert replays == [1, 0] and sent == Counter(succeeded=1)
    posts = [r.json()["data"]["plate"] for r in partner.requests if r.method == "POST"]
    assert posts == ["ABC1D23", "ABC1D23"]


async def test_a_delivery_its_partner_fails_alone_is_replayed_once_by_the_outage_it_ends_with(
    client: Client, partner: Partner
) -> None:
    """The partner answers 500 to one payload (it crashes its handler) and answers its API:
    that delivery's last failure begins an outage, which the next answer ends: replayed once
    (it might have been the outage's), not each time its schedule is spent."""
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_doc = await _setup(client, partner, partner_fields={}, action={"retry_schedule": [5]})
    api = await create_action(
        client, partner_doc["id"], name="hr", mode="proxy", method="GET", path="/api/condutor"
    )
    partner.reject_bodies_with(b"XYZ9Z99", 500)
    await _vehicles(client, "XYZ9Z99")
    invoke = f"/api/v1/actions/{api['id']}/invoke"
    results = []
    for _ in range(6):
        results.append(await worker.run_until_idle())
        assert (await client.post(invoke, headers=auth(), json={"payload": {}})).status == 200
        clock.advance(5.1)

    assert results[:4] == [Counter(retry=1), Counter(dead=1), Counter(retry=1), Counter(dead=1)]
    assert results[4:] == [Counter(), Counter()]
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    assert [(d["status"], d["attempt_count"]) for d in page["items"]] == [("dead", 4)]


async def _one_dead_with_a_proxy(
    client: Client, partner: Partner, clock: FakeClock
) -> tuple[DeliveryWorker, str, str]:
    """A partner with an action of one attempt (`retry_schedule: []`) and a proxy action;
    the worker, the partner's id and the proxy's invoke path."""
    worker = _driven(client, clock)
    client.app[services_key].guards.clock = lambda: time.monotonic() + clock.offset.total_seconds()
    partner_doc = await _setup(client, partner, partner_fields={}, action={"retry_schedule": []})
    api = await create_action(
        client, partner_doc["id"], name="hr", mode="proxy", method="GET", path="/api/condutor"
    )
    return worker, partner_doc["id"], f"/api/v1/actions/{api['id']}/invoke"


async def test_a_delivery_dying_as_an_answer_ends_the_outage_is_replayed_by_its_recording(
    client: Client, partner: Partner
) -> None:
    """A delivery's last failure is counted (`dead_at`), then, before it is written `dead`,
    another call's answer ends the outage: its replay finds nothing dead yet and it clears
    `failing_since`. The delivery written dead after is replayed at once (the outage it
    died in is over), not left dead for good (found by the reviewer rev40, F2)."""
    clock = FakeClock()
    worker, partner_id, invoke = await _one_dead_with_a_proxy(client, partner, clock)
    store = client.app[services_key].store
    real_finish, real_replay = store.deliveries.finish, store.deliveries.replay_outage
    answered: list[int] = []
    replays: list[int] = []

    async def finish(doc_id: Any, token: Any, fields: Any, *args: Any, **kw: Any) -> Any:
        if fields.get("status") == "dead" and not answered:
            # Another process's call is answered now, its outage's end done: the partner is back.
            partner.respond_with(200, {})
            call = await client.post(invoke, headers=auth(), json={"payload": {}})
            answered.append(call.status)
        return await real_finish(doc_id, token, fields, *args, **kw)

    async def replay(*args: Any, **kw: Any) -> int:
        replays.append(await real_replay(*args, **kw))
        return replays[-1]

    store.deliveries.finish = finish  # type: ignore[method-assign]
    store.deliveries.replay_outage = replay  # type: ignore[method-assign]
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")
    first = await worker.run_until_idle()  # it dies, is replayed and sent in the same pass
    stored = await store.partners.get("acme", partner_id)

    assert answered == [200] and replays == [0, 1]
    assert first == Counter(dead=1, succeeded=1)
    assert stored is not None and "failing_since" not in stored
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    assert [(d["status"], d["attempt_count"]) for d in page["items"]] == [("succeeded", 2)]
    posts = [r.json()["data"]["plate"] for r in partner.requests if r.method == "POST"]
    assert posts == ["ABC1D23", "ABC1D23"]


async def test_a_delivery_dying_as_an_answer_ends_the_outage_just_after_its_note_is_replayed(
    client: Client, partner: Partner
) -> None:
    """A delivery's last failure is noted (`note_failure`) and, right after that write,
    another process's answer ends the outage. The outage start `failed` returns is the one
    the note saw, not a read after the answer (none): `died` replays the delivery written
    dead after (found by the reviewer rev41a, R1)."""
    clock = FakeClock()
    worker, partner_id, invoke = await _one_dead_with_a_proxy(client, partner, clock)
    partners = client.app[services_key].store.partners
    answered: list[int] = []

    async def other_process_answers() -> None:
        worker._calls.failing(partner_id)  # it saw the partner fail too
        partner.respond_with(200, {})
        call = await client.post(invoke, headers=auth(), json={"payload": {}})
        answered.append(call.status)

    # Just after a dying delivery's note is written.
    after_the_write_of(
        partners, "note_failure", other_process_answers, lambda *a, dying=False, **kw: dying
    )
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")
    first = await worker.run_until_idle()
    stored = await partners.get("acme", partner_id)

    assert answered == [200]
    assert stored is not None and "failing_since" not in stored  # the partner is back
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    assert [d["status"] for d in page["items"]] == ["succeeded"]
    assert first == Counter(dead=1, succeeded=1)


async def test_an_admins_disable_as_a_probe_is_claimed_keeps_the_partner_never_probed(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """An admin's PATCH status=disabled (`probe_at` the end of time: never probed) lands
    right after a worker's probe claim is written. The probe fails; its reschedule is
    guarded on the probe time its claim wrote, not the one read after: the admin's hold
    stays (found by the reviewer rev41a, R6)."""
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_doc = await _disabled_with_two_an_hour_away(client, partner, worker, clock)
    partners = client.app[services_key].store.partners
    assert await _partner_status(client, partner_doc["id"]) == "disabled"
    patched: list[int] = []

    async def admin_disables() -> None:
        where = f"/api/v1/partners/{partner_doc['id']}"
        response = await client.patch(where, headers=auth(), json={"status": "disabled"})
        patched.append(response.status)

    after_the_write_of(partners, "claim_probe", admin_disables)  # just after the claim
    clock.advance(61)
    await worker.housekeeping()  # the probe: still 503
    for task in _probe_tasks():
        await task
    stored = await partners.get("acme", partner_doc["id"])

    assert patched == [200]
    assert stored is not None and stored["status"] == "disabled"
    assert stored["probe_at"].year == 9999, stored["probe_at"]  # the admin's hold


async def test_a_delivery_written_dead_while_an_answer_ends_the_outage_is_left_for_the_next(
    client: Client, partner: Partner
) -> None:
    """The other order: an answer's end of the outage reads the dead deliveries (none yet),
    then the delivery is written `dead` and counted (`note_death`) before the answer clears
    `failing_since`: the clear is refused (a death since it read the partner), the outage
    stays, and the next answer replays the delivery (found by the reviewer rev40, F2)."""
    clock = FakeClock()
    worker, partner_id, invoke = await _one_dead_with_a_proxy(client, partner, clock)
    store = client.app[services_key].store
    real_finish, real_replay = store.deliveries.finish, store.deliveries.replay_outage
    real_death = store.partners.note_death
    read, noted = asyncio.Event(), asyncio.Event()
    calls: list[Any] = []
    replays: list[int] = []

    async def finish(doc_id: Any, token: Any, fields: Any, *args: Any, **kw: Any) -> Any:
        if fields.get("status") == "dead" and not calls:
            partner.respond_with(200, {})
            calls.append(
                asyncio.create_task(client.post(invoke, headers=auth(), json={"payload": {}}))
            )
            await read.wait()  # the answer read the outage's dead deliveries: none yet
        return await real_finish(doc_id, token, fields, *args, **kw)

    async def replay(*args: Any, **kw: Any) -> int:
        replays.append(await real_replay(*args, **kw))
        if len(replays) == 1:
            read.set()
            await noted.wait()  # the delivery is dead and counted before the answer clears
        return replays[-1]

    async def note_death(*args: Any, **kw: Any) -> bool:
        still_on = await real_death(*args, **kw)
        noted.set()
        return still_on

    store.deliveries.finish = finish  # type: ignore[method-assign]
    store.deliveries.replay_outage = replay  # type: ignore[method-assign]
    store.partners.note_death = note_death  # type: ignore[method-assign]
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")
    first = await worker.run_until_idle()
    answered = (await calls[0]).status
    kept = await store.partners.get("acme", partner_id)
    assert (await client.post(invoke, headers=auth(), json={"payload": {}})).status == 200
    ended = await store.partners.get("acme", partner_id)
    sent = await worker.run_until_idle()

    assert first == Counter(dead=1) and answered == 200
    assert kept is not None and kept.get("failing_since") is not None
    assert ended is not None and "failing_since" not in ended
    assert replays == [0, 1] and sent == Counter(succeeded=1)
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    assert [(d["status"], d["attempt_count"]) for d in page["items"]] == [("succeeded", 2)]


async def test_a_delivery_replayed_by_one_outage_is_replayed_again_by_a_later_one(
    client: Client, partner: Partner
) -> None:
    """A partner that answers once and goes down again (flapping): ABC1D23 dies in outage 1,
    is replayed at its end, and dies again in outage 2 with XYZ9A88. Outage 2's end replays
    both: it died of the outage, with another, not of a payload the partner fails alone. Until
    2026-12-07 any earlier recovery's replay left it dead (found by the reviewer rev40, F4)."""
    clock = FakeClock()
    worker, _, invoke = await _one_dead_with_a_proxy(client, partner, clock)
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")
    assert await worker.run_until_idle() == Counter(dead=1)  # outage 1 kills it
    partner.respond_with(200, {})  # outage 1 over: ABC1D23 replayed ...
    assert (await client.post(invoke, headers=auth(), json={"payload": {}})).status == 200
    partner.respond_with(503, {})  # ... and down again before it goes out (outage 2)
    clock.advance(60)
    await _vehicles(client, "XYZ9A88")
    second = await worker.run_until_idle()
    assert (await client.post(invoke, headers=auth(), json={"payload": {}})).status != 200
    clock.advance(3600)
    partner.respond_with(200, {})  # back for good
    assert (await client.post(invoke, headers=auth(), json={"payload": {}})).status == 200
    sent = await worker.run_until_idle()

    assert second == Counter(dead=2) and sent == Counter(succeeded=2)
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    statuses = {d["entity"]["key"]: d["status"] for d in page["items"]}
    assert statuses == {"ABC1D23": "succeeded", "XYZ9A88": "succeeded"}


async def test_a_newer_mileage_that_ends_the_outage_outdates_the_older_one_it_killed(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """An ordered vehicle's odometer 100 died in the outage; its 200 is the answer that ends
    it. The replayed 100 is not sent after 200 (mileage never goes back, SPEC §5): it is
    outdated by the newer version the ERP took (`suppressed`), as its line does for a
    delivery sent late; an admin's replay of it would still be sent."""
    client = await aiohttp_client(make_app())
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_id = await _ordered_outage(client, partner, worker, clock, disabled=False)
    before = len(partner.requests)
    partner.respond_with(200, {})
    for _ in range(3):
        clock.advance(5.1)
        await worker.run_until_idle()

    assert _kms(partner.requests[before:]) == [200]
    assert await _partner_status(client, partner_id) == "active"
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    statuses = sorted((d["status"], d.get("replayed_at") is not None) for d in page["items"])
    assert statuses == [("succeeded", False), ("suppressed", True)]


async def test_an_answer_to_another_call_ending_the_outage_sends_an_ordered_entitys_dead_first(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """The outage ends at a proxy call's answer: the dead 100 is replayed, and the 200 due
    after it waits behind it in its line."""
    client = await aiohttp_client(make_app())
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_id = await _ordered_outage(client, partner, worker, clock, disabled=False)
    api = await create_action(
        client, partner_id, name="hr", mode="proxy", method="GET", path="/api/condutor"
    )
    before = len(partner.requests)
    partner.respond_with(200, {})
    invoke = f"/api/v1/actions/{api['id']}/invoke"
    assert (await client.post(invoke, headers=auth(), json={"payload": {}})).status == 200
    for _ in range(3):
        clock.advance(5.1)
        await worker.run_until_idle()

    assert _kms(partner.requests[before:]) == [100, 200]
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    assert {d["status"] for d in page["items"]} == {"succeeded"}


async def test_a_delivery_its_partner_always_rejects_does_not_keep_the_partner_disabled(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """The partner answers 500 to one payload (it crashes its handler), and is quiet
    otherwise: a failed probe moves that delivery's turn two probes on, the probe between is a
    HEAD, which the partner answers: enabled, what comes next reaches it."""
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_doc = await _setup(
        client,
        partner,
        partner_fields={"disable_after_hours": 0.001},
        action={"retry_schedule": [5, 5, 5, 5, 5]},
    )
    partner.reject_bodies_with(b"XYZ9Z99", 500)
    await _vehicles(client, "XYZ9Z99")
    await worker.run_until_idle()
    clock.advance(5.1)
    await worker.run_until_idle()  # failing for 5 s > 3.6 s: disabled
    disabled = await _partner_status(client, partner_doc["id"])
    clock.advance(61)
    await worker.run_until_idle()  # the probe sends it: 500
    after_failed_probe = await _partner_status(client, partner_doc["id"])
    clock.advance(61)
    await worker.run_until_idle()  # its turn is a probe away: a HEAD, answered 200
    enabled = await _partner_status(client, partner_doc["id"])
    await _vehicles(client, "ABC1D23")
    healthy = await worker.run_until_idle()

    assert disabled == "disabled" and after_failed_probe == "disabled"
    assert [r.method for r in partner.requests[:4]] == ["POST", "POST", "POST", "HEAD"]
    assert enabled == "active"
    assert healthy == Counter(succeeded=1)
    assert [r.json()["data"]["plate"] for r in partner.requests if r.method == "POST"][-1] == (
        "ABC1D23"
    )


async def test_a_partner_whose_api_answers_is_not_disabled_because_its_webhooks_fail(
    client: Client, partner: Partner
) -> None:
    """The partner's webhook route answers 503 to every delivery (broken since a deploy); its
    API answers a proxy call between each two of them. A partner failing is one with no answer
    to any call since its first retryable failure: each proxy call's answer ends its failing,
    so it is never failing for its `disable_after_hours` (3.6 s) and its API keeps answering.
    Until 2026-12-06 only deliveries counted: disabled 5 s in, then every proxy call `503`."""
    services = client.app[services_key]
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_doc = await _setup(
        client,
        partner,
        partner_fields={"disable_after_hours": 0.001},
        action={"retry_schedule": [5, 5, 5, 5, 5]},
    )
    api = await create_action(
        client, partner_doc["id"], name="hr", mode="proxy", method="GET", path="/api/condutor"
    )
    partner.reject_bodies_with(b"ABC1D23", 503)  # the webhook route; the API answers 200
    await _vehicles(client, "ABC1D23")
    invoke = f"/api/v1/actions/{api['id']}/invoke"
    results, statuses = [], []
    for _ in range(4):
        results.append(await worker.run_until_idle())
        answered = await client.post(invoke, headers=auth(), json={"payload": {}})
        statuses.append(answered.status)
        statuses.append(await _partner_status(client, partner_doc["id"]))
        clock.advance(5.1)
    stored = await services.store.partners.get("acme", partner_doc["id"])

    assert results == [Counter(retry=1)] * 4
    assert statuses == [200, "active"] * 4
    assert stored is not None and "failing_since" not in stored


async def test_an_answer_to_a_call_let_through_before_its_partner_was_disabled_keeps_the_outage(
    client: Client, partner: Partner
) -> None:
    """A proxy call let through just before the partner was disabled answers after it: the
    partner stays disabled, its `failing_since` kept (its recovery replays the deliveries
    that went dead since then); only its probe's answer enables it."""
    services = client.app[services_key]
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_doc = await _setup(
        client,
        partner,
        # the proxy call waits for `release` past the default 10 s on a loaded machine
        partner_fields={"disable_after_hours": 0.001, "timeout_seconds": 60},
        action={"retry_schedule": [5, 5, 5, 5, 5]},
    )
    api = await create_action(
        client, partner_doc["id"], name="hr", mode="proxy", method="GET", path="/api/condutor"
    )
    partner.reject_bodies_with(b"ABC1D23", 503)
    await _vehicles(client, "ABC1D23")
    await worker.run_until_idle()  # failing since now
    invoke = f"/api/v1/actions/{api['id']}/invoke"
    partner.respond_with(200, {"condutor": "Ana"}, delay=30)  # until `release`
    slow = asyncio.create_task(client.post(invoke, headers=auth(), json={"payload": {}}))
    await partner.wait_for(2)  # the proxy call is out
    clock.advance(5.1)
    await worker.run_until_idle()  # failing for 5 s > 3.6 s: disabled
    partner.release.set()  # the proxy call is answered
    answered = await slow
    stored = await services.store.partners.get("acme", partner_doc["id"])

    assert answered.status == 200
    assert stored is not None and stored["status"] == "disabled"
    assert stored.get("failing_since") is not None


async def test_an_answer_landing_before_the_disable_keeps_the_partner_enabled(
    client: Client, partner: Partner
) -> None:
    """The worker read the partner failing for longer than its `disable_after_hours`
    (`note_failure`), and another process's call is answered before the worker disables it:
    its failing ended (`note_success`), and it is not disabled. It was disabled all the same,
    without its `failing_since`: refused to every proxy call, flow and schedule until its
    next probe, and its recovery then replayed none of the outage's dead deliveries."""
    services = client.app[services_key]
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_doc = await _setup(
        client,
        partner,
        partner_fields={"disable_after_hours": 0.001},
        action={"retry_schedule": [5, 5, 5, 5, 5]},
    )
    partners = services.store.partners
    disable = partners.disable

    async def disable_after_an_answer(tenant: str, partner_id: str, *args: Any, **kw: Any) -> bool:
        await partners.note_success(tenant, partner_id)  # another process's call answered
        return await disable(tenant, partner_id, *args, **kw)

    partners.disable = disable_after_an_answer  # type: ignore[method-assign]
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")
    await worker.run_until_idle()  # failing since now
    clock.advance(5.1)
    await worker.run_until_idle()  # failing for 5 s > 3.6 s, as read
    stored = await partners.get("acme", partner_doc["id"])

    assert stored is not None
    assert (stored["status"], "failing_since" in stored) == ("active", False), stored
    assert partner_doc["id"] not in worker._health.disabled


async def test_a_disabled_partner_whose_head_answer_carries_a_body_is_enabled_by_its_probe(
    client: Client,
) -> None:
    """The partner writes the GET's body on its HEAD answers, in the same packet: the probe's
    200 was lost (`invalid_response`) and the partner stayed disabled for good."""
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
    heads: list[bytes] = []
    async with raw_partner(reply + b'{"ok":true}', heads) as url:
        made = await create_partner(client, url.removesuffix("/hook"))
        now = clock()
        assert await services.store.partners.disable(
            "acme", made["id"], now, now, failing_since=None
        )
        clock.advance(1)
        await services.delivery_worker.housekeeping()
    doc = await services.store.partners.get("acme", made["id"])
    assert [head.split(b" ", 1)[0] for head in heads] == [b"HEAD"]
    assert doc["status"] == "active"


async def _two_mileages_until_disabled(
    client: Client,
    partner: Partner,
    worker: DeliveryWorker,
    clock: FakeClock,
    *,
    plate: str = "ABC1D23",
) -> tuple[dict[str, Any], str]:
    """An ordered action (0 5 5 5 5 5 s) on a partner disabled after 3.6 s of failure; the
    vehicle's odometer 100, then 200, sent to it, which fails (as the caller set it up) for
    5 s: the partner, and its status then."""
    partner_doc = await create_partner(client, partner.url, disable_after_hours=0.001)
    action = await create_action(
        client, partner_doc["id"], ordered=True, retry_schedule=[5, 5, 5, 5, 5]
    )
    await create_subscription(client, action["id"])
    vehicle = await create_vehicle(client, plate)
    for km in (100, 200):
        response = await client.patch(
            f"/api/v1/entities/vehicle/{vehicle['id']}", headers=auth(), json={"odometer_km": km}
        )
        assert response.status == 200
    await client.app[services_key].relay.run_until_idle()
    await worker.run_until_idle()
    clock.advance(5.1)
    await worker.run_until_idle()  # failing for 5 s > 3.6 s: disabled
    return partner_doc, await _partner_status(client, partner_doc["id"])


async def test_probe_of_a_disabled_partner_sends_the_first_of_an_ordered_entity_first(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    # The later delivery waits at the earlier one's old retry time + 1 s, while the earlier
    # one's retry moved later: by time alone, the probe would send the later one first.
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    partner.respond_with(503, {})
    partner_doc, disabled = await _two_mileages_until_disabled(client, partner, worker, clock)
    partner.respond_with(200, {})
    clock.advance(61)
    await worker.run_until_idle()  # the probe, then the backlog
    clock.advance(20)
    await worker.run_until_idle()

    assert disabled == "disabled"
    sent = [r.json()["data"]["odometer_km"] for r in partner.requests]
    assert sent == [100, 100, 100, 200]
    assert await _partner_status(client, partner_doc["id"]) == "active"


@pytest.mark.parametrize("status", [408, 425, 429, 503])
async def test_head_probe_answered_a_retryable_status_leaves_the_partner_disabled(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner, status: int
) -> None:
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_doc = await create_partner(client, partner.url, disable_after_hours=0.001)
    action = await create_action(client, partner_doc["id"], retry_schedule=[5, 5])
    subscription = await create_subscription(client, action["id"], ("entity.created",))
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")
    await worker.run_until_idle()
    clock.advance(5.1)
    await worker.run_until_idle()  # disabled
    # Its one delivery out of the way (it fails at the next probe, unsendable, and that probe
    # goes on to a HEAD, still answered 503): the probes after it are a HEAD of the
    # partner's base URL.
    stop = {"status": "disabled"}
    where = f"/api/v1/subscriptions/{subscription['id']}"
    assert (await client.patch(where, headers=auth(), json=stop)).status == 200
    clock.advance(61)
    await worker.run_until_idle()
    partner.respond_with(status, {}, headers={"Retry-After": "600"})
    clock.advance(61)
    await worker.run_until_idle()
    after_retryable = await _partner_status(client, partner_doc["id"])
    partner.respond_with(404, {})
    clock.advance(61)
    await worker.run_until_idle()

    assert [r.method for r in partner.requests] == ["POST", "POST", "HEAD", "HEAD", "HEAD"]
    assert after_retryable == "disabled"
    assert await _partner_status(client, partner_doc["id"]) == "active"  # any other answer


async def test_admin_can_reenable_a_disabled_partner(client: Client, partner: Partner) -> None:
    partner_doc = await _setup(client, partner, partner_fields={})

    disabled = await client.patch(
        f"/api/v1/partners/{partner_doc['id']}", headers=auth(), json={"status": "disabled"}
    )
    await _vehicles(client, "ABC1D23")
    held = await _driven(client).run_until_idle()
    enabled = await client.patch(
        f"/api/v1/partners/{partner_doc['id']}", headers=auth(), json={"status": "active"}
    )
    flowed = await _driven(client).run_until_idle()

    assert (await disabled.json())["status"] == "disabled"
    assert held == Counter()
    assert (await enabled.json())["status"] == "active"
    assert flowed == Counter(succeeded=1)


async def test_a_partner_reenabled_by_hand_has_its_backlog_due_at_once(
    client: Client, partner: Partner
) -> None:
    partner_doc = await _setup(
        client, partner, partner_fields={}, action={"retry_schedule": [3600]}
    )
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")
    worker = _driven(client)
    failed_once = await worker.run_until_idle()  # its retry is an hour away
    where = f"/api/v1/partners/{partner_doc['id']}"
    assert (await client.patch(where, headers=auth(), json={"status": "disabled"})).status == 200
    partner.respond_with(200, {})
    assert (await client.patch(where, headers=auth(), json={"status": "active"})).status == 200
    flowed = await worker.run_until_idle()

    assert failed_once == Counter(retry=1)
    assert flowed == Counter(succeeded=1)


async def test_a_partner_reenabled_by_hand_is_active_only_once_its_backlog_is_due(
    client: Client, partner: Partner
) -> None:
    """The backlog is made due before the write that makes the partner active, not after:
    a worker that sees it active at once finds its backlog due, and a recovery cut short
    between the two (a crash, a 503) leaves it disabled for the retried PATCH to finish
    (tests/test_recovery_crash.py)."""
    partner_doc = await _setup(
        client, partner, partner_fields={}, action={"retry_schedule": [3600]}
    )
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")
    worker = _driven(client)
    failed_once = await worker.run_until_idle()  # its retry is an hour away
    where = f"/api/v1/partners/{partner_doc['id']}"
    assert (await client.patch(where, headers=auth(), json={"status": "disabled"})).status == 200
    partner.respond_with(200, {})
    partners = client.app[services_key].store.partners
    real = partners.update
    seen_active: list[Counter[str]] = []

    async def then_a_worker(*args: Any, **kwargs: Any) -> Any:
        doc = await real(*args, **kwargs)
        seen_active.append(await worker.run_until_idle())  # it learns the partner is active
        return doc

    partners.update = then_a_worker  # type: ignore[method-assign]
    try:
        response = await client.patch(where, headers=auth(), json={"status": "active"})
    finally:
        partners.update = real  # type: ignore[method-assign]

    assert failed_once == Counter(retry=1) and response.status == 200
    assert seen_active == [Counter(succeeded=1)]


async def test_a_partner_its_probe_reenables_is_active_only_once_its_backlog_is_due(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_doc = await _disabled_with_two_an_hour_away(client, partner, worker, clock)
    disabled = await _partner_status(client, partner_doc["id"])
    partner.respond_with(200, {})
    store = client.app[services_key].store
    real = store.partners.enable
    not_due: list[int] = []

    async def then_look(*args: Any, **kwargs: Any) -> Any:
        doc = await real(*args, **kwargs)
        later = {"status": "pending", "next_attempt_at": {"$gt": clock.now}}
        not_due.append(await store.deliveries._c.count_documents(later))
        return doc

    store.partners.enable = then_look  # type: ignore[method-assign]
    try:
        clock.advance(61)
        await worker.run_until_idle()  # the probe: answered, the partner recovers
    finally:
        store.partners.enable = real  # type: ignore[method-assign]

    assert disabled == "disabled"
    assert not_due == [0]  # the delivery the probe did not send was due when it turned active
    assert await _partner_status(client, partner_doc["id"]) == "active"
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    assert [d["status"] for d in page["items"]] == ["succeeded", "succeeded"]


async def test_a_probes_delivery_whose_lease_expires_after_the_recovery_is_due_at_once(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """A probe took its partner's first delivery (due an hour from now: a probe takes one
    due or not) and its process died; meanwhile the partner recovered, which made the
    pending backlog due but not that one, in flight. Its lease expires: due at once, not
    back to its retry time an hour away."""
    client = await aiohttp_client(make_app(partner_probe_seconds=3600))
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_doc = await _disabled_with_two_an_hour_away(client, partner, worker, clock)
    disabled = await _partner_status(client, partner_doc["id"])
    deliveries = client.app[services_key].store.deliveries
    now = clock.now
    probed = await deliveries.claim_for_partner(  # the probe of a process about to die
        partner_doc["id"], "dead-process:probe:1", now, now + timedelta(seconds=60)
    )
    partner.respond_with(200, {})
    where = f"/api/v1/partners/{partner_doc['id']}"
    assert (await client.patch(where, headers=auth(), json={"status": "active"})).status == 200
    clock.advance(61)  # the dead process's lease expires
    delivered = await worker.run_until_idle()

    assert disabled == "disabled" and probed is not None
    assert delivered == Counter(succeeded=2)


async def test_an_open_circuits_deliveries_wait_unclaimed_without_spending_attempts(
    client: Client, partner: Partner
) -> None:
    """The fifth failure opens the circuit: the sixth delivery is not claimed (nor held and
    written again) while it lets nothing through; it waits, due, its attempts unspent."""
    partner_doc = await _setup(
        client,
        partner,
        partner_fields={"max_concurrency": 1},
        action={"retry_schedule": [60]},  # each delivery fails once, no immediate retry
    )
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23", "BRA2E19", "XYZ9A88", "DEF4G56", "GHI7J89", "JKL0M12")

    counts = await _driven(client).run_until_idle()

    assert counts == Counter(retry=5)
    assert len(partner.requests) == 5
    assert await _attempt_counts(client) == [0, 1, 1, 1, 1, 1]
    stored = client.app[services_key].store.db["deliveries"]
    waiting = await stored.find_one({"attempt_count": 0})
    assert waiting is not None and waiting["status"] == "pending"
    assert waiting["next_attempt_at"] <= client.app[services_key].delivery_worker.clock()
    metrics = await (await client.get("/metrics")).text()
    assert (
        f'gateway_partner_circuit_state{{partner="{partner_doc["id"]}",state="open"}} 1.0'
        in metrics
    )


async def test_a_half_open_circuits_other_deliveries_wait_unclaimed_while_its_probe_is_out(
    client: Client, partner: Partner
) -> None:
    """40 deliveries to a partner answering 503: five failures open its circuit; after the
    cooldown one delivery goes as the half_open probe, which the partner answers in 4 s. The
    others are not claimed while it is out (the circuit lets nothing else through). Until
    2026-12-06 each was claimed and held back again about every second: 78 claims and
    writes, counted `deferred`, for one request sent."""
    services = client.app[services_key]
    clock = FakeClock()
    worker = _driven(client, clock)
    services.guards.clock = lambda: time.monotonic() + clock.offset.total_seconds()
    partner_doc = await create_partner(client, partner.url, timeout_seconds=10)
    action = await create_action(client, partner_doc["id"], retry_schedule=[0, 5, 300])
    await create_subscription(client, action["id"])
    vehicle = await create_vehicle(client)
    partner.respond_with(503, {})
    for km in range(1, 41):
        where = f"/api/v1/entities/vehicle/{vehicle['id']}"
        assert (await client.patch(where, headers=auth(), json={"odometer_km": km})).status == 200
    await services.relay.run_until_idle()
    await worker.run_until_idle()  # five failures open the circuit
    sent_before = len(partner.requests)
    partner.respond_with(503, {}, delay=4.0)
    clock.advance(31)  # the cooldown is past
    deferred = services.metrics.deliveries.labels("deferred")
    held_before = deferred._value.get()
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(3.5)
    await worker.stop()
    await running

    assert len(partner.requests) - sent_before == 1  # the probe
    assert deferred._value.get() - held_before == 0


async def test_a_rate_limited_partners_backlog_is_claimed_one_token_at_a_time(
    client: Client, partner: Partner
) -> None:
    """A partner limited to 0.2 requests a second (one every 5 s; a call waits 2 s for its
    token at most, its timeout) with 9 deliveries due: a claim takes one of them when a token
    comes within 2 s, none before; none is claimed and handed back (`deferred`), and each
    token sends one. Until 2026-12-06 the worker claimed the whole backlog at each token and
    wrote all but one back: 174 claims and writes for 3 requests sent in 20 s."""
    services = client.app[services_key]
    worker = _driven(client)
    seconds = [1000.0]
    services.guards.clock = lambda: seconds[0]  # the rate limit's clock
    await _setup(
        client,
        partner,
        partner_fields={"rate_limit": {"per_second": 0.2, "burst": 1}, "timeout_seconds": 2},
    )
    await _vehicles(client, "ABC1D00")
    first = await worker.run_until_idle()  # the burst's token
    await _vehicles(client, *(f"ABC1D{n:02d}" for n in range(1, 10)))
    deferred = services.metrics.deliveries.labels("deferred")
    held_before = deferred._value.get()
    rounds = [await worker.run_until_idle()]  # the next token is 5 s away
    for _ in range(3):
        seconds[0] += 5
        rounds.append(await worker.run_until_idle())

    assert first == Counter(succeeded=1)
    assert rounds == [Counter(), *[Counter(succeeded=1)] * 3]
    assert deferred._value.get() - held_before == 0
    assert len(partner.requests) == 4


async def test_a_proxy_call_waiting_for_a_rate_limited_partners_token_leaves_the_backlog_unclaimed(
    client: Client, partner: Partner
) -> None:
    """A partner limited to 0.2 requests a second (a call waits 2 s for its token at most);
    a proxy call arrives 2 s before the next token and reserves it. That token is the only
    one within 2 s and it is the proxy's: the worker's claim takes none of the 3 deliveries
    due. Until 2026-12-06 the room counted every caller waiting for a token (and every call
    in flight at the gate), the proxy's included, as the worker's: it claimed the deliveries
    one after another, the rate limit held each back and each was written back (`deferred`)."""
    services = client.app[services_key]
    worker = _driven(client)
    seconds = [1000.0]
    services.guards.clock = lambda: seconds[0]  # the rate limit's clock
    partner_doc = await _setup(
        client,
        partner,
        partner_fields={"rate_limit": {"per_second": 0.2, "burst": 1}, "timeout_seconds": 2},
    )
    lookup = await create_action(
        client, partner_doc["id"], name="hr", mode="proxy", method="GET", path="/api/condutor"
    )
    await _vehicles(client, "ABC1D00")
    first = await worker.run_until_idle()  # the burst's token
    await _vehicles(client, "ABC1D01", "ABC1D02", "ABC1D03")
    deferred = services.metrics.deliveries.labels("deferred")
    held_before = deferred._value.get()
    seconds[0] += 3  # the next token is 2 s away: a call arriving now waits for it
    invoke = f"/api/v1/actions/{lookup['id']}/invoke"
    proxied = asyncio.create_task(client.post(invoke, headers=auth(), json={"payload": {}}))
    limiter = services.guards._guards[partner_doc["id"]].limiter
    async with asyncio.timeout(10):
        while not limiter._waiting:
            await asyncio.sleep(0.01)
    room = services.guards.room(partner_doc["id"])
    rounds = await worker.run_until_idle()
    answered = await proxied

    assert first == Counter(succeeded=1)
    assert answered.status == 200
    assert (room, rounds, deferred._value.get() - held_before) == (0, Counter(), 0)
    assert len(partner.requests) == 2  # the first delivery, the proxy call


async def test_a_disabled_partners_deliveries_are_no_work_waiting_for_a_worker(
    client: Client, partner: Partner
) -> None:
    """An hour after a delivery to a partner an admin disabled was made, with the worker
    idle: the queue gauges leave it out (it waits for its partner, not for a worker), so
    `GatewayDeliveriesWaiting` (oldest due age over 300 s) does not fire. Until 2026-12-06
    they counted it: 1 pending, 3,600 s old."""
    services = client.app[services_key]
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"])
    await create_subscription(client, action["id"])
    vehicle = await create_vehicle(client)
    where = f"/api/v1/partners/{partner_doc['id']}"
    assert (await client.patch(where, headers=auth(), json={"status": "disabled"})).status == 200
    where = f"/api/v1/entities/vehicle/{vehicle['id']}"
    assert (await client.patch(where, headers=auth(), json={"odometer_km": 7})).status == 200
    await services.relay.run_until_idle()
    clock.advance(3600)
    assert await worker.run_until_idle() == Counter()
    await worker.housekeeping()  # measures the queue gauges

    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_delivery_queue_depth{status="pending"} 0.0' in metrics
    assert "gateway_delivery_oldest_due_age_seconds 0.0" in metrics
    deliveries = services.store.db["deliveries"]
    assert await deliveries.count_documents({"status": "pending"}) == 1
    assert partner.requests == []


async def test_a_probe_reaches_the_partner_past_deliveries_that_cannot_be_sent(
    client: Client, partner: Partner
) -> None:
    """A disabled partner's three oldest deliveries belong to a subscription the admin then
    disabled, its newest to another one. Its probe fails the three as unsendable (nothing
    asked of the partner) and goes on to the fourth, which the partner answers: it is active
    again in one probe. Until 2026-12-06 the probe ended on the first, nothing sent, and the
    partner stayed disabled one more probe interval (5 min) per such delivery."""
    services = client.app[services_key]
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"])
    stopped = await create_subscription(client, action["id"])
    vehicle = await create_vehicle(client)
    now = clock()
    assert await services.store.partners.disable(
        "acme", partner_doc["id"], now, now, failing_since=None
    )
    where = f"/api/v1/entities/vehicle/{vehicle['id']}"
    for km in (1, 2, 3):
        assert (await client.patch(where, headers=auth(), json={"odometer_km": km})).status == 200
    await services.relay.run_until_idle()
    subscription = f"/api/v1/subscriptions/{stopped['id']}"
    answer = await client.patch(subscription, headers=auth(), json={"status": "disabled"})
    assert answer.status == 200
    await create_subscription(client, action["id"])
    assert (await client.patch(where, headers=auth(), json={"odometer_km": 4})).status == 200
    await services.relay.run_until_idle()
    assert await worker.run_until_idle() == Counter()  # the disabled partner's: left out
    clock.advance(1)

    await worker.housekeeping()  # one probe round

    assert [r.method for r in partner.requests] == ["POST"]
    found = await services.store.partners.get("acme", partner_doc["id"])
    assert found is not None and found["status"] == "active"
    listed = await client.get("/api/v1/deliveries?status=failed", headers=auth())
    failed = (await listed.json())["items"]
    assert [d["subscription_id"] for d in failed] == [stopped["id"]] * 3


async def test_partner_refused_by_the_ssrf_guard_fails_with_a_clear_error(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    client = await aiohttp_client(make_app(outbound_allow=()))
    await _setup(client, partner, partner_fields={})
    await _vehicles(client, "ABC1D23")

    counts = await _driven(client).run_until_idle()

    assert counts == Counter(failed=1)
    assert partner.requests == []
    [delivery] = (await (await client.get("/api/v1/deliveries", headers=auth())).json())["items"]
    assert "loopback" in delivery["last_error"]
    assert "GATEWAY_OUTBOUND_ALLOW" in delivery["last_error"]


@pytest.mark.parametrize(("delay", "grace", "status"), [(0.2, 5, "succeeded"), (30, 0, "pending")])
async def test_shutdown_finishes_in_flight_sends_within_its_bound_and_releases_the_rest(
    aiohttp_client: Any,
    make_app: Callable[..., web.Application],
    partner: Partner,
    delay: float,
    grace: int,
    status: str,
) -> None:
    client = await aiohttp_client(make_app(delivery_shutdown_seconds=grace))
    await _setup(client, partner, partner_fields={"timeout_seconds": 60})
    partner.respond_with(200, {}, delay=delay)
    worker = client.app[services_key].delivery_worker
    running = asyncio.create_task(worker.run())
    await _vehicles(client, "ABC1D23")
    worker.notify()
    await partner.wait_for(1)

    await worker.stop()
    await running

    [delivery] = (await (await client.get("/api/v1/deliveries", headers=auth())).json())["items"]
    assert delivery["status"] == status
    assert not worker.running
    if status == "pending":  # released: due again at once, no attempt spent
        assert delivery["attempt_count"] == 0
        partner.respond_with(200, {})
        assert await _driven(client).run_until_idle() == Counter(succeeded=1)


def _scans(plan: Any) -> bool:
    """Whether a query plan (an explain's, any depth) reads the whole collection."""
    if isinstance(plan, dict):
        return plan.get("stage") == "COLLSCAN" or any(_scans(v) for v in plan.values())
    if isinstance(plan, list):
        return any(_scans(v) for v in plan)
    return False


async def test_the_reads_for_disabled_partners_go_through_an_index_not_the_whole_collection(
    client: Client,
) -> None:
    """The claim leaving a disabled partner out, that partner's probe and its recovery read
    through an index (SecantusDB scans the collection for a query with one predicate no index
    has): every read they issue (the database's profiler lists them) is planned without a
    COLLSCAN, the claim's too (an aggregation whose first stage the `due` index serves)."""
    deliveries = client.app[services_key].store.deliveries
    collection = deliveries._c  # the database's own tools: the profiler and explain
    now = utcnow()
    docs = []
    for n in range(400):
        delivery_id = f"{n:024x}:s"
        docs.append(
            {
                "_id": delivery_id,
                "tenant": "acme",
                "partner_id": "other" if n % 4 else "down",
                "status": "succeeded" if n % 2 else "pending",
                "shard": shard_of(delivery_id),
                "next_attempt_at": now - timedelta(seconds=n),
                "attempt_count": 1,
                "attempts": [],
            }
        )
    docs.append({**docs[0], "_id": "dead:s", "status": "dead", "final_at": now})
    await deliveries.insert_many(docs)
    await collection.database.command("profile", 2)
    lease = now + timedelta(seconds=60)
    shard = shard_of(docs[2]["_id"])
    claimed = await deliveries.claim(
        "t1", now, lease, 8, shard, Admission(lambda _d: True, {"partner": ["down"]})
    )
    probe = await deliveries.claim_for_partner("down", "t2", now, lease)
    replayed = await deliveries.replay_outage("down", now - timedelta(hours=1), now)
    await deliveries.recovered("down", now)
    await collection.database.command("profile", 0)
    reads = [
        entry["command"]
        async for entry in collection.database["system.profile"].find({"ns": collection.full_name})
        if {"find", "aggregate"} & set(entry.get("command", {}))
    ]
    plans = []
    for read in reads:
        if "aggregate" in read:
            explain = {"aggregate": read["aggregate"], "pipeline": read["pipeline"], "cursor": {}}
        else:
            explain = {"find": read["find"], "filter": read.get("filter", {})}
            if "sort" in read:
                explain["sort"] = read["sort"]
        plans.append(await collection.database.command("explain", explain))

    assert claimed and all(d["partner_id"] != "down" for d in claimed)
    assert probe is not None and probe["partner_id"] == "down"
    assert replayed == 1
    assert len(reads) >= 4  # the claim's, the probe's, the backlog's, the dead ones'
    assert any("aggregate" in read for read in reads)
    assert [read for read, plan in zip(reads, plans, strict=True) if _scans(plan)] == []


async def test_a_probe_passes_over_an_ordered_entity_whose_first_delivery_just_failed_a_probe(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """Every delivery of the entity waits for its first, which the partner always fails: the
    probe after the one that sent it is not that delivery again (nor a later one of the
    entity, out of order) but a HEAD, which the partner answers."""
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    partner.reject_bodies_with(b"XYZ9Z99", 500)
    partner_doc, disabled = await _two_mileages_until_disabled(
        client, partner, worker, clock, plate="XYZ9Z99"
    )
    clock.advance(61)
    await worker.run_until_idle()  # the probe: the entity's first delivery, 500
    clock.advance(61)
    await worker.run_until_idle()  # a HEAD, answered 200

    assert disabled == "disabled"
    assert [r.method for r in partner.requests[:4]] == ["POST", "POST", "POST", "HEAD"]
    assert len({r.webhook_id for r in partner.requests[:3]}) == 1  # the first, every time
    assert await _partner_status(client, partner_doc["id"]) == "active"


async def _ordered_outage(
    client: Client,
    partner: Partner,
    worker: DeliveryWorker,
    clock: FakeClock,
    *,
    disabled: bool = True,
) -> str:
    """An ordered vehicle's odometer 100 goes dead (its schedule, 0 5 5 s, spent on 503s);
    its 200, 400 s in, fails past `disable_after_hours` (360 s): the partner is disabled, 200
    pending behind a dead 100 (`disabled` False: the default 72 h, the partner stays active
    and failing, 200 due again in 5 s)."""
    client.app[services_key].guards.clock = lambda: time.monotonic() + clock.offset.total_seconds()
    hours = {"disable_after_hours": 0.1} if disabled else {}
    partner_doc = await create_partner(client, partner.url, **hours)
    action = await create_action(client, partner_doc["id"], ordered=True, retry_schedule=[5, 5])
    await create_subscription(client, action["id"])
    partner.respond_with(503, {})
    vehicle = await create_vehicle(client, "ABC1D23")
    where = f"/api/v1/entities/vehicle/{vehicle['id']}"
    assert (await client.patch(where, headers=auth(), json={"odometer_km": 100})).status == 200
    await client.app[services_key].relay.run_until_idle()
    await worker.run_until_idle()
    for _ in range(12):
        clock.advance(5.1)
        await worker.run_until_idle()
    clock.advance(390)
    assert (await client.patch(where, headers=auth(), json={"odometer_km": 200})).status == 200
    await client.app[services_key].relay.run_until_idle()
    await worker.run_until_idle()
    status = await _partner_status(client, partner_doc["id"])
    assert status == ("disabled" if disabled else "active")
    return str(partner_doc["id"])


def _kms(requests: list[Any]) -> list[Any]:
    return [r.json()["data"].get("odometer_km") for r in requests if r.method == "POST"]


async def test_a_recovery_probe_sends_an_ordered_entitys_delivery_dead_in_the_outage_first(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """The outage's dead delivery (100) is replayed before the probe picks: it is its entity's
    head, so the probe sends it, not the newer pending one (200): mileage never goes back."""
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_id = await _ordered_outage(client, partner, worker, clock)
    before = len(partner.requests)
    partner.respond_with(200, {})
    clock.advance(61)
    await worker.run_until_idle()
    for _ in range(5):
        clock.advance(5.1)
        await worker.run_until_idle()

    assert _kms(partner.requests[before:]) == [100, 200]
    assert await _partner_status(client, partner_id) == "active"
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    assert {d["status"] for d in page["items"]} == {"succeeded"}


async def test_an_admin_reenable_replays_the_outage_before_the_partner_is_active(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """A worker that learns the partner is active as soon as it is (here: its housekeeping
    and sends run just after the write that makes it active) finds the dead 100 replayed
    already: the due 200 waits behind it."""
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_id = await _ordered_outage(client, partner, worker, clock)
    clock.advance(30)  # 200's retry time passes while disabled: due, passed over by claims
    await worker.run_until_idle()
    before = len(partner.requests)
    partner.respond_with(200, {})
    partners = client.app[services_key].store.partners
    real = partners.update

    async def then_a_worker(*args: Any, **kwargs: Any) -> Any:
        doc = await real(*args, **kwargs)
        await worker.housekeeping()  # the worker learns the partner is active
        await worker.run_until_idle()
        return doc

    partners.update = then_a_worker  # type: ignore[method-assign]
    try:
        where = f"/api/v1/partners/{partner_id}"
        response = await client.patch(where, headers=auth(), json={"status": "active"})
    finally:
        partners.update = real  # type: ignore[method-assign]
    await worker.run_until_idle()

    assert response.status == 200
    assert _kms(partner.requests[before:]) == [100, 200]


async def test_an_admin_reenable_racing_the_probes_replays_the_outage_once(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """The admin reads the partner while disabled; meanwhile its probe replays the outage,
    re-enables it, and a delivery it always fails dies again. The admin's re-enable, read
    before, neither replays that delivery again nor applies over the probe's (409)."""
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    client.app[services_key].guards.clock = lambda: time.monotonic() + clock.offset.total_seconds()
    partner_doc = await _setup(
        client,
        partner,
        partner_fields={"disable_after_hours": 0.001},
        action={"retry_schedule": []},
    )
    partner.respond_with(503, {})
    await _vehicles(client, "XYZ9Z99")
    await worker.run_until_idle()
    clock.advance(5.1)
    await _vehicles(client, "ABC1D23")
    await worker.run_until_idle()
    assert await _partner_status(client, partner_doc["id"]) == "disabled"
    partner.respond_with(200, {})
    partner.reject_bodies_with(b"XYZ9Z99", 500)  # a payload the partner always fails
    partners = client.app[services_key].store.partners
    real_get = partners.get

    async def read_then_race(*args: Any, **kwargs: Any) -> Any:
        partners.get = real_get  # type: ignore[method-assign]  # the admin's read alone
        doc = await real_get(*args, **kwargs)
        clock.advance(61)
        for _ in range(3):  # the probes, until one is answered; the backlog
            await worker.run_until_idle()
            clock.advance(121)
        return doc

    partners.get = read_then_race  # type: ignore[method-assign]
    try:
        where = f"/api/v1/partners/{partner_doc['id']}"
        response = await client.patch(where, headers=auth(), json={"status": "active"})
    finally:
        partners.get = real_get  # type: ignore[method-assign]
    await worker.run_until_idle()

    assert response.status == 409
    assert await _partner_status(client, partner_doc["id"]) == "active"
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    details = [
        await (await client.get(f"/api/v1/deliveries/{d['id']}", headers=auth())).json()
        for d in page["items"]
    ]
    xyz = next(d for d in details if d["event"]["data"]["plate"] == "XYZ9Z99")
    sent = [a for a in xyz["attempts"] if not a.get("probe")]
    assert xyz["status"] == "dead" and len(sent) == 2  # the first, and the one replay's


async def test_an_action_moved_to_another_partner_has_its_deliveries_replayed_by_that_ones_recovery(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """A delivery made while the action called OLD, sent to NEW once it is moved there, dies
    in NEW's outage: it notes NEW now, so NEW's recovery replays it."""
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    client.app[services_key].guards.clock = lambda: time.monotonic() + clock.offset.total_seconds()
    old = await create_partner(client, partner.url, name="OLD")
    new = await create_partner(client, partner.url, name="NEW", disable_after_hours=0.1)
    action = await create_action(client, old["id"], retry_schedule=[5, 5])
    await create_subscription(client, action["id"], ("entity.created",))
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23")  # its delivery notes OLD
    where = f"/api/v1/actions/{action['id']}"
    response = await client.patch(where, headers=auth(), json={"partner_id": new["id"]})
    assert response.status == 200
    await worker.run_until_idle()
    for _ in range(2):
        clock.advance(5.1)
        await worker.run_until_idle()
    clock.advance(390)
    await _vehicles(client, "XYZ9A88")
    await worker.run_until_idle()
    statuses = (await _partner_status(client, new["id"]), await _partner_status(client, old["id"]))
    partner.respond_with(200, {})
    clock.advance(61)
    await worker.run_until_idle()
    clock.advance(61)
    await worker.run_until_idle()

    assert statuses == ("disabled", "active")
    assert await _partner_status(client, new["id"]) == "active"
    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    assert [(d["status"], d["partner_id"]) for d in page["items"]] == [
        ("succeeded", new["id"]),
        ("succeeded", new["id"]),
    ]


async def test_a_probe_passing_over_ordered_entities_looks_at_a_few_then_settles_for_a_head(
    client: Client,
) -> None:
    """Every entity of a long outage has an earlier delivery dead in it: the probe passes each
    over (the recovery replays them first), and each look costs the database a read or two,
    a collection scan on SecantusDB. It looked at all of them (2,000 entities: 6 s inside the
    housekeeping loop); it looks at a few, then settles for a HEAD."""
    deliveries = client.app[services_key].store.deliveries
    collection = deliveries._c
    now = utcnow()
    outage = now - timedelta(hours=80)
    docs = []
    for n in range(30):
        key = f"act:vehicle:{n}"
        for seq, status in ((1, "dead"), (2, "pending")):
            delivery_id = f"{n:020x}{seq:04x}:s"
            docs.append(
                {
                    "_id": delivery_id,
                    "tenant": "acme",
                    "partner_id": "down",
                    "status": status,
                    "shard": shard_of(delivery_id),
                    "order_key": key,
                    "seq": seq,
                    "next_attempt_at": now - timedelta(seconds=n),
                    "attempt_count": 8,
                    "attempts": [],
                    **({"final_at": now - timedelta(hours=1)} if status == "dead" else {}),
                }
            )
    await deliveries.insert_many(docs)
    await collection.database.command("profile", 2)
    probe = await deliveries.claim_for_partner(
        "down", "t", now, now + timedelta(seconds=60), failing_since=outage
    )
    await collection.database.command("profile", 0)
    reads = [
        entry
        async for entry in collection.database["system.profile"].find({"ns": collection.full_name})
        if "find" in entry.get("command", {})
    ]
    assert probe is None  # a HEAD
    assert len(reads) <= 1 + 2 * 5, len(reads)


async def test_a_delivery_replayed_by_hand_during_the_outage_is_replayed_at_recovery(
    client: Client,
) -> None:
    """An admin replayed a dead delivery while its partner was failing (before it was
    disabled); it died again. The recovery's once-per-outage rule took that hand replay for
    a recovery's and left it dead; only a recovery's own replay counts."""
    deliveries = client.app[services_key].store.deliveries
    now = utcnow()
    outage = now - timedelta(hours=80)
    base = {
        "tenant": "acme",
        "partner_id": "down",
        "status": "dead",
        "attempt_count": 8,
        "attempts": [],
        "next_attempt_at": now,
        "final_at": now - timedelta(hours=1),
    }
    await deliveries.insert_many(
        [
            {**base, "_id": "hand:s", "shard": shard_of("hand:s"), "replayed_at": outage},
            {**base, "_id": "plain:s", "shard": shard_of("plain:s")},
        ]
    )
    assert await deliveries.replay_outage("down", outage - timedelta(hours=1), now) == 2
    # The same outage's recovery run again (an admin's racing the probe's): nothing twice.
    await deliveries._c.update_many({}, {"$set": {"status": "dead", "final_at": now}})
    assert await deliveries.replay_outage("down", outage - timedelta(hours=1), now) == 0


async def test_a_probes_delivery_handed_back_at_shutdown_after_the_recovery_is_due_at_once(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """A probe's send (of a delivery due an hour from now) is under way when an admin
    re-enables the partner: the recovery makes the backlog due but passes over that one, in
    flight. Then the process is stopped (SIGTERM): the worker hands it back pending, and due,
    not at its retry time an hour away with the partner active and answering."""
    client = await aiohttp_client(make_app(partner_probe_seconds=60))
    clock = FakeClock()
    worker = _driven(client, clock)
    partner_doc = await _disabled_with_two_an_hour_away(
        client, partner, worker, clock, timeout_seconds=30
    )
    assert await _partner_status(client, partner_doc["id"]) == "disabled"
    before = len(partner.requests)
    partner.respond_with(200, {}, delay=20)  # the probe's send stays under way
    clock.advance(61)
    running = asyncio.create_task(worker.run())
    await partner.wait_for(before + 1, timeout=20)
    probed = partner.requests[before].webhook_id
    partner.respond_with(200, {})
    where = f"/api/v1/partners/{partner_doc['id']}"
    assert (await client.patch(where, headers=auth(), json={"status": "active"})).status == 200
    await worker.stop()  # the probe's send is cut short
    await running

    page = await (await client.get("/api/v1/deliveries", headers=auth())).json()
    (handed_back,) = [d for d in page["items"] if d["id"] == probed]
    assert handed_back["status"] == "pending"
    due = datetime.fromisoformat(handed_back["next_attempt_at"].replace("Z", "+00:00"))
    assert due <= clock.now + timedelta(seconds=1), due


async def _tenant_subscribed(
    client: Client, url: str, tenant: str, name: str = "ERP", **fields: Any
) -> dict[str, Any]:
    """A partner of `tenant` (no auth), an action on it (retried after an hour) and a
    subscription to new vehicles."""
    body = {"name": name, "base_url": url, "auth": {"type": "none"}, **fields}
    partner_doc: dict[str, Any] = await post(client, "/api/v1/partners", body, tenant=tenant)
    action = {
        "name": f"push-{name}",
        "partner_id": partner_doc["id"],
        "method": "POST",
        "path": "/hooks",
        "mode": "deliver",
        "retry_schedule": [3600, 3600],
    }
    action_doc = await post(client, "/api/v1/actions", action, tenant=tenant)
    subscription = {"action_id": action_doc["id"], "event_types": ["entity.created"]}
    await post(client, "/api/v1/subscriptions", subscription, tenant=tenant)
    return partner_doc


async def test_another_tenants_delivery_goes_out_at_once_while_a_slow_partners_backlog_is_sent(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """Tenant acme's backlog of 60 deliveries to a partner answering in 5 s (2 at a time, its
    `max_concurrency`) is being sent when tenant globex's delivery comes: the worker's slots
    do not fill with acme's deliveries waiting at their partner's gate (oldest first, across
    tenants), so globex's goes out at once, not once acme's older ones are through."""
    client = await aiohttp_client(make_app(delivery_concurrency=8, delivery_shutdown_seconds=0))
    worker = _driven(client)
    async with running_partner() as slow, running_partner() as fast:
        slow.respond_with(200, {}, delay=5)
        await _tenant_subscribed(client, slow.url, "acme", timeout_seconds=10, max_concurrency=2)
        await _tenant_subscribed(client, fast.url, "globex")
        for n in range(60):
            await post(client, "/api/v1/entities/vehicle", {"plate": f"ABC{n % 10}D{n:02d}"})
        await client.app[services_key].relay.run_until_idle()
        running = asyncio.create_task(worker.run())
        try:
            await slow.wait_for(2)  # acme's backlog is under way
            await asyncio.sleep(1)
            await post(client, "/api/v1/entities/vehicle", {"plate": "XYZ9A88"}, "globex")
            await client.app[services_key].relay.run_until_idle()
            worker.notify()
            started = time.monotonic()
            await fast.wait_for(1, timeout=20)
            assert time.monotonic() - started < 4  # not behind acme's sends (5 s each)
            assert len(slow.requests) <= 4  # acme's backlog still under way
        finally:
            await worker.stop()
            await running


async def _backlog(client: Client, count: int) -> None:
    """`count` more due deliveries like acme's one pending delivery (the same partner),
    spread over the shards, all due before anything created after them."""
    deliveries = client.app[services_key].store.deliveries
    [listed] = await deliveries.list("acme", {}, before=None, limit=2)
    delivery = await deliveries.get("acme", listed["_id"])
    assert delivery is not None
    event = delivery["_id"].partition(":")[0]
    copies = []
    for n in range(count):
        delivery_id = f"{event}:{n:024x}"
        copies.append({**delivery, "_id": delivery_id, "shard": shard_of(delivery_id)})
    for start in range(0, count, 500):
        await deliveries.insert_many(copies[start : start + 500])


async def _first_sent_after_a_backlog(
    client: Client, worker: DeliveryWorker, acme: Partner, fast: Partner
) -> tuple[float, int]:
    """The worker runs on acme's backlog; then globex's delivery comes: the seconds until it
    reaches globex's partner, and how many requests acme's partner had received then."""
    await _tenant_subscribed(client, fast.url, "globex")
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(1.5)  # the worker's claims meet acme's backlog
        await post(client, "/api/v1/entities/vehicle", {"plate": "XYZ9A88"}, "globex")
        started = time.monotonic()
        await client.app[services_key].relay.run_until_idle()
        await fast.wait_for(1, timeout=20)
        return time.monotonic() - started, len(acme.requests)
    finally:
        acme.release.set()
        await worker.stop()
        await running


async def test_another_tenants_delivery_goes_out_at_once_behind_a_disabled_partners_backlog(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """Tenant acme's partner is disabled with 3,000 deliveries due (more than
    `PASSED_OVER_MOST` in every shard, all older than globex's): the claims leave them out,
    rather than reading them oldest first and stopping after 64 passed over in each shard,
    so globex's delivery goes out at once; none of acme's is sent. Until 2026-12-06 no other
    delivery of any tenant went out for as long as the partner stayed disabled."""
    client = await aiohttp_client(make_app(delivery_shutdown_seconds=0))
    worker = _driven(client)
    async with running_partner() as down, running_partner() as fast:
        partner_doc = await _tenant_subscribed(client, down.url, "acme")
        where = f"/api/v1/partners/{partner_doc['id']}"
        answer = await client.patch(where, headers=auth("acme"), json={"status": "disabled"})
        assert answer.status == 200
        await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
        await client.app[services_key].relay.run_until_idle()
        await _backlog(client, 3000)

        waited, sent = await _first_sent_after_a_backlog(client, worker, down, fast)

        # Claims through the 32 shards: about 0.5 s on an idle machine, 6 s on a 2-core one
        # at load 9; before, never while the partner stayed disabled.
        assert waited < 15
        assert sent == 0


async def test_another_tenants_delivery_goes_out_at_once_behind_a_partners_backlog_at_its_room(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """Tenant acme's partner answers in 10 s, 10 at a time (its `max_concurrency`), with
    3,000 deliveries due (a replay, an outage's backlog): once the worker holds 10 of them,
    its claims leave the rest out, rather than reading them oldest first and stopping after
    64 passed over in each shard, so globex's delivery goes out at once. Until 2026-12-06 it
    waited for acme's backlog to drain below 64 per shard (minutes, at the partner's pace)."""
    client = await aiohttp_client(make_app(delivery_shutdown_seconds=0))
    worker = _driven(client)
    async with running_partner() as slow, running_partner() as fast:
        slow.respond_with(200, {}, delay=10)
        fields = {"timeout_seconds": 20, "max_concurrency": 10}
        await _tenant_subscribed(client, slow.url, "acme", **fields)
        await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
        await client.app[services_key].relay.run_until_idle()
        await _backlog(client, 3000)

        waited, sent = await _first_sent_after_a_backlog(client, worker, slow, fast)

        assert waited < 5  # claims through the 32 shards: about 0.5 s on an idle machine
        assert sent == 10  # acme's partner at its room all along


async def _disabled(
    client: Client, worker: DeliveryWorker, clock: FakeClock, tenant: str, plates: list[str]
) -> None:
    """`tenant`'s partners (answering 503) fail for 5 s: past their `disable_after_hours`
    (0.001), disabled, their first probe due `partner_probe_seconds` after that."""
    for plate in plates:
        await post(client, "/api/v1/entities/vehicle", {"plate": plate}, tenant=tenant)
        await client.app[services_key].relay.run_until_idle()
        await worker.run_until_idle()
        clock.advance(5.1)


async def test_a_tenants_partners_whose_probes_hang_hold_back_no_other_tenants_recovery(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """Tenant acme's three disabled partners stop answering (their probes wait out their
    6 s timeout); tenant globex's disabled partner, due for its probe after them, answers
    again. The probes run side by side, outside the worker's housekeeping rounds: globex's
    partner is probed and active again at once, not after acme's three probes one after
    another; each partner's next probe is counted from its own probe's end."""
    client = await aiohttp_client(make_app(partner_probe_seconds=60, delivery_shutdown_seconds=0))
    clock = FakeClock()
    worker = _driven(client, clock)
    async with running_partner() as hanging, running_partner() as back:
        hanging.respond_with(503, {})
        back.respond_with(503, {})
        fields = {"disable_after_hours": 0.001, "timeout_seconds": 6}
        acme = [
            await _tenant_subscribed(client, hanging.url, "acme", f"ERP{n}", **fields)
            for n in range(3)
        ]
        await _disabled(client, worker, clock, "acme", ["ABC1D23", "BRA2E19"])
        globex = await _tenant_subscribed(client, back.url, "globex", **fields)
        await _disabled(client, worker, clock, "globex", ["XYZ9A88", "DEF4G56"])
        for partner_doc, tenant in [*((p, "acme") for p in acme), (globex, "globex")]:
            where = f"/api/v1/partners/{partner_doc['id']}"
            status = (await (await client.get(where, headers=auth(tenant))).json())["status"]
            assert status == "disabled"
        hanging.respond_with(200, {}, delay=60)
        back.respond_with(200, {})
        clock.advance(61)  # every probe due, acme's first
        running = asyncio.create_task(worker.run())
        try:
            await hanging.wait_for(len(hanging.requests) + 1)  # acme's probes hang
            where = f"/api/v1/partners/{globex['id']}"
            started = time.monotonic()
            while (await (await client.get(where, headers=auth("globex"))).json())[
                "status"
            ] != "active":
                assert time.monotonic() - started < 4, "globex's partner is still disabled"
                await asyncio.sleep(0.1)
            partners = client.app[services_key].store.db["partners"]
            probed = clock.now
            await asyncio.sleep(7)  # acme's probes time out
            for partner_doc in acme:
                doc = await partners.find_one({"_id": ObjectId(partner_doc["id"])})
                assert doc["status"] == "disabled"
                next_probe = doc["probe_at"].replace(tzinfo=UTC)
                assert next_probe >= probed + timedelta(seconds=60 + 5), next_probe
        finally:
            await worker.stop()
            await running


async def test_a_lone_tenant_uses_three_quarters_of_the_slots_leaving_a_quarter_for_others(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """One tenant's backlog to a slow partner that would take all eight of the worker's
    slots (its `max_concurrency` 10): the tenant alone takes six (three quarters), the other
    two stay free for another tenant's work when it comes (`FairShares`)."""
    client = await aiohttp_client(make_app(delivery_concurrency=8, delivery_shutdown_seconds=0))
    worker = _driven(client)
    async with running_partner() as slow:
        slow.respond_with(200, {}, delay=5)
        await _tenant_subscribed(client, slow.url, "acme", timeout_seconds=10)
        for n in range(12):
            await post(client, "/api/v1/entities/vehicle", {"plate": f"ABC{n % 10}D{n:02d}"})
        await client.app[services_key].relay.run_until_idle()
        running = asyncio.create_task(worker.run())
        try:
            await slow.wait_for(6)
            await asyncio.sleep(1.5)
            assert len(slow.requests) == 6
        finally:
            await worker.stop()
            await running


async def test_a_delivery_takes_its_turn_at_a_partners_gate_the_proxy_keeps_queued(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """Four clients call a proxy action of the partner (`max_concurrency` 2, answering in
    0.5 s) in a loop, so its gate always has calls waiting; a delivery to it is pending. The
    claim counts the worker's own deliveries against the partner's limit, not the proxy's
    calls: the delivery joins the gate's queue and goes out in its turn (first come, first
    served), instead of being passed over at every look for as long as the proxy is busy."""
    client = await aiohttp_client(make_app(delivery_shutdown_seconds=0))
    worker = _driven(client)
    async with running_partner() as erp:
        erp.respond_with(200, {}, delay=0.5)
        partner_doc = await _tenant_subscribed(
            client, erp.url, "acme", timeout_seconds=10, max_concurrency=2
        )
        proxy = {
            "name": "lookup",
            "partner_id": partner_doc["id"],
            "method": "GET",
            "path": "/lookup",
            "mode": "proxy",
        }
        action = await post(client, "/api/v1/actions", proxy, tenant="acme")
        await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
        await client.app[services_key].relay.run_until_idle()
        stop = False
        statuses: list[int] = []

        async def invoking() -> None:
            while not stop:
                answer = await client.post(
                    f"/api/v1/actions/{action['id']}/invoke",
                    headers=auth("acme"),
                    json={"entity": {"type": "vehicle", "key": "ABC1D23"}},
                )
                statuses.append(answer.status)
                await answer.read()

        callers = [asyncio.create_task(invoking()) for _ in range(4)]
        await asyncio.sleep(1.5)  # the gate is queued
        running = asyncio.create_task(worker.run())
        started = time.monotonic()
        try:
            while not any(r.method == "POST" for r in erp.requests):
                assert time.monotonic() - started < 10, f"not sent; {len(statuses)} proxy calls"
                await asyncio.sleep(0.2)
            assert set(statuses) == {200}
        finally:
            stop = True
            await asyncio.gather(*callers, return_exceptions=True)
            await worker.stop()
            await running


def _probe_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if "_probe_then_reschedule" in repr(t.get_coro())]


async def test_a_partner_whose_probe_outlasts_the_probe_interval_is_probed_once_at_a_time(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """A disabled partner's probe hangs (its timeout 30 s) past `partner_probe_seconds` (5),
    so its claim has it due again while it runs: the worker's next round does not probe it a
    second time beside the first."""
    client = await aiohttp_client(make_app(partner_probe_seconds=5, delivery_shutdown_seconds=0))
    clock = FakeClock()
    worker = _driven(client, clock)
    async with running_partner() as hanging:
        hanging.respond_with(503, {})
        fields = {"disable_after_hours": 0.001, "timeout_seconds": 30}
        await _tenant_subscribed(client, hanging.url, "acme", "ERP", **fields)
        await _disabled(client, worker, clock, "acme", ["ABC1D23", "BRA2E19"])
        hanging.respond_with(200, {}, delay=20)
        before = len(hanging.requests)
        clock.advance(6)
        await worker._start_probes()  # a housekeeping round's step
        await hanging.wait_for(before + 1)
        clock.advance(6)  # due again: the probe still hangs
        await worker._start_probes()  # the next round
        await asyncio.sleep(1)
        tasks = _probe_tasks()
        try:
            assert len(hanging.requests) - before == 1, "the partner probed twice at once"
            assert len(tasks) == 1
        finally:
            await cancel_and_wait(*tasks)


async def test_stop_cancels_the_probe_under_way_after_a_probe_that_outlasted_its_interval(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """A probe answers (503) after 6 s, past `partner_probe_seconds` (5); a round during it
    leaves the partner to it; the partner's next probe hangs. Every probe is tracked until it
    ends: the worker's stop cancels the one under way and gives its delivery back (none left
    in flight, no probe left running after stop)."""
    client = await aiohttp_client(make_app(partner_probe_seconds=5, delivery_shutdown_seconds=0))
    clock = FakeClock()
    worker = _driven(client, clock)
    async with running_partner() as hanging:
        hanging.respond_with(503, {})
        fields = {"disable_after_hours": 0.001, "timeout_seconds": 30}
        await _tenant_subscribed(client, hanging.url, "acme", "ERP", **fields)
        await _disabled(client, worker, clock, "acme", ["ABC1D23", "BRA2E19", "CDE3F45"])
        hanging.respond_with(503, {}, delay=6, times=1)  # the first probe: still failing
        hanging.respond_with(200, {}, delay=20, times=1)  # the next: hangs
        before = len(hanging.requests)
        clock.advance(6)
        await worker._start_probes()
        await hanging.wait_for(before + 1)
        clock.advance(6)  # due again while the first probe runs
        await worker._start_probes()
        await asyncio.wait(_probe_tasks())  # the first probe ends
        clock.advance(6)
        await worker._start_probes()  # the next probe, hanging
        await hanging.wait_for(before + 2)
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(0.2)
        await worker.stop()
        await running
        tasks = _probe_tasks()
        await cancel_and_wait(*tasks)
        deliveries = client.app[services_key].store.db["deliveries"]
        in_flight = await deliveries.count_documents({"status": "in_flight"})
        assert (len(tasks), in_flight, len(hanging.requests) - before) == (0, 0, 2)


async def test_a_claim_reads_a_bounded_part_of_a_backlog_it_passes_over(client: Client) -> None:
    """One shard holds 300 due deliveries of tenant acme's, which the claim passes over (acme
    reaching its share during the read), then globex's: the read stops after
    `PASSED_OVER_MOST` passed over, not after the whole backlog, and is made again leaving
    acme out, which finds globex's; a claim whose admission leaves nobody out (a unit passed
    over for a reason it cannot name) stops there. What acme's claims later take starts at
    the oldest again."""
    deliveries = client.app[services_key].store.deliveries
    now = utcnow()
    shard = shard_of(f"{0:024x}:s")
    docs = [
        {
            "_id": f"{n:024x}:s",
            "tenant": "globex" if n == 300 else "acme",
            "partner_id": "erp",
            "status": "pending",
            "shard": shard,
            "next_attempt_at": now - timedelta(seconds=1000 - n),
            "attempt_count": 0,
            "attempts": [],
        }
        for n in range(301)
    ]
    await deliveries.insert_many(docs)
    lease = now + timedelta(seconds=60)
    read: list[str] = []

    def acme_at_its_share(doc: dict[str, Any]) -> bool:
        read.append(doc["_id"])
        return doc["tenant"] != "acme"

    assert await deliveries.claim("t1", now, lease, 8, shard, Admission(acme_at_its_share)) == []
    assert read == [d["_id"] for d in docs[:PASSED_OVER_MOST]]
    read.clear()

    def leaving_acme_out(doc: dict[str, Any]) -> bool:
        if acme_at_its_share(doc):
            return True
        admission.exclude("tenant", "acme")  # as `FairShares` does
        return False

    admission = Admission(leaving_acme_out)
    claimed = await deliveries.claim("t2", now, lease, 8, shard, admission)
    assert [d["_id"] for d in claimed] == [docs[300]["_id"]]
    assert read == [d["_id"] for d in docs[:PASSED_OVER_MOST]] + [docs[300]["_id"]]
    claimed = await deliveries.claim("t3", now, lease, 2, shard, Admission(lambda _d: True))
    assert [d["_id"] for d in claimed] == [d["_id"] for d in docs[:2]]


def _ids_in_shard(shard: int, prefix: str, count: int) -> list[str]:
    ids, n = [], 0
    while len(ids) < count:
        candidate = f"{prefix}{n:020x}:s"
        if shard_of(candidate) == shard:
            ids.append(candidate)
        n += 1
    return ids


async def test_a_delivery_is_claimed_behind_the_backlogs_of_any_number_of_disabled_partners(
    client: Client,
) -> None:
    """101 tenants' abandoned integrations, each disabled with 70 due in one shard, a day
    old: the healthy tenant's delivery behind them is claimed (a claim left out 100 closed
    partners at most, and the 101st's backlog stopped the read)."""
    services = client.app[services_key]
    worker = services.delivery_worker
    now, shard = utcnow(), 7
    disabled = [f"p{i:03d}" for i in range(101)]
    ids = iter(_ids_in_shard(shard, "d", len(disabled) * 70))
    docs = [
        {
            "_id": next(ids),
            "tenant": f"t{i:03d}",
            "partner_id": partner,
            "kind": "webhook",
            "status": "pending",
            "shard": shard,
            "next_attempt_at": now - timedelta(days=1, seconds=k),
            "attempt_count": 1,
            "attempts": [],
        }
        for i, partner in enumerate(disabled)
        for k in range(70)
    ]
    [healthy_id] = _ids_in_shard(shard, "h", 1)
    healthy = {**docs[0], "_id": healthy_id, "tenant": "acme", "partner_id": "ok"}
    healthy["next_attempt_at"] = now - timedelta(seconds=5)
    everything = [*docs, healthy]
    # In rounds of 250: a thousand deliveries and their indexes in one round outlived the
    # client's 5 s deadline on a loaded host.
    for start in range(0, len(everything), 250):
        await services.store.db["deliveries"].insert_many(everything[start : start + 250])
    worker._health.disabled = set(disabled)  # as `PartnerHealth.refresh` reads them
    admission = worker._claims._fair.admission({})
    claimed = await worker._claim_shard("probe:1", 8, shard, admission)
    assert [d["_id"] for d in claimed] == [healthy_id]


async def test_an_open_circuits_waiting_deliveries_do_not_age_the_queue_gauges(
    client: Client, partner: Partner
) -> None:
    """Its deliveries wait, due and unclaimed, for the circuit's next trial: not for a
    worker. `GatewayDeliveriesWaiting` must not fire through a partner's outage."""
    await _setup(
        client, partner, partner_fields={"max_concurrency": 1}, action={"retry_schedule": [3600]}
    )
    partner.respond_with(503, {})
    await _vehicles(client, "ABC1D23", "BRA2E19", "XYZ9A88", "DEF4G56", "GHI7J89", "JKL0M12")
    clock = FakeClock()
    worker = _driven(client, clock)
    assert await worker.run_until_idle() == Counter(retry=5)  # the circuit is open now
    clock.advance(600)  # ten minutes on, the worker idle
    assert await worker.run_until_idle() == Counter()
    await worker.housekeeping()
    metrics = await (await client.get("/metrics")).text()
    gauges = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(("gateway_delivery_oldest_due_age_seconds", "gateway_delivery_queue"))
    }
    assert gauges["gateway_delivery_oldest_due_age_seconds"] < 300, gauges
    assert gauges['gateway_delivery_queue_depth{status="pending"}'] == 0, gauges
