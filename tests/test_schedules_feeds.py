"""Polled feeds end to end against local doubles: a Geotab GetFeed of LogRecords read with its
version cursor (sessions obtained and renewed), a Samsara-style stats feed read with its
`after` cursor, and a feed without a cursor deduplicated by item id."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.feed_doubles import GeotabDouble, SamsaraDouble, geotab, samsara
from tests.partner_double import (
    create_action,
    create_partner,
    partner,
    post,
    running_partner,
    upload_mapping,
)
from tests.schedule_support import (
    ERP_MAPPING,
    MAPPINGS,
    geotab_schedule,
    get,
    run_now,
    runner,
    runs,
    samsara_schedule,
)

__all__ = ["geotab", "partner", "samsara"]  # fixtures
Client = TestClient[Any, Any]
_SUMMARY = (
    "outcome",
    "pages",
    "items_read",
    "written",
    "rejected",
    "cursor_before",
    "cursor_after",
    "error",
)


async def test_geotab_feed_is_drained_page_by_page_and_resumes_from_its_version(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(5)
    schedule = await geotab_schedule(client, geotab, limit=2)
    assert await runner(client).run_until_idle() == {"ok": 1}
    # Pages of 2, 2 and 1, then an empty page: caught up.
    assert [c["fromVersion"] for c in geotab.calls] == [None, f"{2:016x}", f"{4:016x}", f"{5:016x}"]
    (run,) = await runs(client, schedule["id"])
    assert {k: run[k] for k in _SUMMARY} == {
        "outcome": "ok",
        "pages": 4,
        "items_read": 5,
        "written": 5,
        "rejected": 0,
        "cursor_before": None,
        "cursor_after": f"{5:016x}",
        "error": None,
    }
    vehicle = await get(client, "/api/v1/entities/vehicle/BRA2E19")
    assert vehicle["attributes"]["geotab_log_id"] == "b0005"  # the newest of device b7
    assert vehicle["last_position"]["speed_kmh"] == 5
    events = await get(client, "/api/v1/events?type=vehicle.position&limit=50")
    assert len(events["items"]) == 5
    assert geotab.authentications == 1
    assert all(c["params"]["credentials"]["sessionId"] == "session-1" for c in geotab.calls)

    geotab.add_records(1)
    await run_now(client, schedule["id"])
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert geotab.calls[4]["fromVersion"] == f"{5:016x}"  # from where the last run stopped
    latest = (await runs(client, schedule["id"]))[0]
    assert (latest["items_read"], latest["cursor_before"], latest["cursor_after"]) == (
        1,
        f"{5:016x}",
        f"{6:016x}",
    )
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["cursor"] == f"{6:016x}" and state["failures"] == 0 and not state["running"]


async def test_an_expired_geotab_session_is_renewed_once_and_the_call_repeated(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(2)
    schedule = await geotab_schedule(client, geotab, limit=10)
    await runner(client).run_until_idle()
    geotab.expire_sessions()
    geotab.add_records(2)
    await run_now(client, schedule["id"])
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert geotab.authentications == 2
    assert (await runs(client, schedule["id"]))[0]["written"] == 2


async def test_geotab_credentials_that_fail_are_a_recorded_error(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(1)
    schedule = await geotab_schedule(client, geotab)
    geotab.PASSWORD = "changed-since"  # the partner's password is no longer the one we have
    assert await runner(client).run_until_idle() == {"failed": 1}
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert "Geotab Authenticate failed: InvalidUserException" in state["last_error"]["message"]
    assert geotab.PASSWORD not in str(state) and geotab.calls == []


async def test_a_database_on_another_geotab_server_is_named_not_followed(
    client: Client, geotab: GeotabDouble
) -> None:
    geotab.add_records(1)
    geotab.path = "my3.geotab.com"
    schedule = await geotab_schedule(client, geotab)
    assert await runner(client).run_until_idle() == {"failed": 1}
    error = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]["last_error"]
    assert "served by my3.geotab.com: set the partner's base_url" in error["message"]
    assert geotab.calls == []  # no GetFeed went anywhere with that session


async def test_samsara_feed_follows_has_next_page_and_keeps_the_end_cursor(
    client: Client, samsara: SamsaraDouble
) -> None:
    for n, vid in enumerate(("2811", "2812", "2813")):
        samsara.add_vehicle_stats(vid, f"Truck {n}", minute=n)
    schedule = await samsara_schedule(client, samsara)
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert [c["after"] for c in samsara.calls] == [None, "c2"]
    assert all(c["types"] == "gps,obdOdometerMeters" for c in samsara.calls)
    vehicle = await get(client, "/api/v1/entities/vehicle/XYZ9876")
    assert vehicle["odometer_km"] == 2.0
    assert vehicle["last_position"]["speed_kmh"] == 16.1  # 10 mph

    await run_now(client, schedule["id"])
    await runner(client).run_until_idle()
    assert samsara.calls[-1]["after"] == "c3"
    (latest, first) = await runs(client, schedule["id"])
    assert (first["pages"], first["written"], latest["pages"], latest["items_read"]) == (2, 3, 1, 0)


async def test_a_feed_without_cursor_writes_only_items_it_has_not_seen(
    client: Client, partner: Any
) -> None:
    """Zapier-style: the partner answers its newest items each time; ids already seen are
    skipped, and the remembered ids are bounded by `keep`."""
    await upload_mapping(client, (MAPPINGS / "fine-feed.yaml").read_text())
    fines = [_fine(n) for n in range(3)]
    partner.respond_with(200, fines)
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(
        client, partner_doc["id"], name="fines", method="GET", path="/fines", mode="proxy"
    )
    schedule = await post(
        client,
        "/api/v1/schedules",
        {
            "name": "fines",
            "action_id": action["id"],
            "every": "*/10 * * * *",
            "target": {"entity_type": "other", "kind": "fine", "mapping": "fine-feed"},
            "dedupe": {"by": "ait", "keep": 3},
        },
    )
    assert await runner(client).run_until_idle() == {"ok": 1}
    partner.respond_with(200, [_fine(3), *fines[:2]])
    await run_now(client, schedule["id"])
    await runner(client).run_until_idle()
    latest, first = await runs(client, schedule["id"])
    assert (first["written"], first["skipped"]) == (3, 0)
    assert (latest["written"], latest["skipped"]) == (1, 2)
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["remembered_ids"] == 3
    received = await get(client, "/api/v1/events?type=fine.received&limit=50")
    assert len(received["items"]) == 4


async def test_a_newest_first_feed_read_with_keep_as_its_length_writes_no_listed_item_again(
    client: Client, partner: Any
) -> None:
    """A portal answers its newest 3 fines, newest first, and the schedule keeps 3 ids: an id
    the partner lists again is remembered as the newest, so a quiet run writes nothing. The
    ids were trimmed in the order they were first written: the newest fine of the first page
    was forgotten while still listed, written again (its `fine.received` sent again)."""
    await upload_mapping(client, (MAPPINGS / "fine-feed.yaml").read_text())
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(
        client, partner_doc["id"], name="fines", method="GET", path="/fines", mode="proxy"
    )
    newest = [_fine(n) for n in (2, 1, 0)]
    partner.respond_with(200, newest)
    schedule = await post(
        client,
        "/api/v1/schedules",
        {
            "name": "fines",
            "action_id": action["id"],
            "every": "*/10 * * * *",
            "target": {"entity_type": "other", "kind": "fine", "mapping": "fine-feed"},
            "dedupe": {"by": "ait", "keep": 3},
        },
    )
    assert await runner(client).run_until_idle() == {"ok": 1}
    for new in (3, None, None, 4, None):
        if new is not None:
            newest = [_fine(new), *newest[:2]]
            partner.respond_with(200, newest)
        await run_now(client, schedule["id"])
        assert await runner(client).run_until_idle() == {"ok": 1}
    done = [(r["written"], r["skipped"]) for r in reversed(await runs(client, schedule["id"]))]
    assert done == [(3, 0), (1, 2), (0, 3), (0, 3), (1, 2), (0, 3)]
    received = await get(client, "/api/v1/events?type=fine.received&limit=50")
    assert len(received["items"]) == 5


def _fine(n: int) -> dict[str, Any]:
    sample = json.loads(
        (MAPPINGS.parent / "tests/data/partner_payloads/fine_feed.json").read_text()
    )
    return {**sample, "ait": f"A12345678{n}"}


async def test_schedule_runs_in_the_background_of_a_process_with_workers(
    aiohttp_client: Any, make_app: Any, geotab: GeotabDouble
) -> None:
    client = await aiohttp_client(make_app(run_workers=True))
    geotab.add_records(3)
    schedule = await geotab_schedule(client, geotab, limit=10)
    background = client.app[services_key].schedule_runner
    assert background.running
    await asyncio.wait_for(background.wait_runs(1), 20)
    (found,) = await runs(client, schedule["id"])
    assert (found["outcome"], found["written"]) == ("ok", 3)


async def _feed_schedules(client: Client, url: str, tenant: str, count: int) -> None:
    """`count` hourly schedules of `tenant` reading its partner's feed at `url` (first due now)."""
    await upload_mapping(client, ERP_MAPPING, tenant)
    body = {"name": "ERP", "base_url": url, "auth": {"type": "none"}, "timeout_seconds": 20}
    partner_doc = await post(client, "/api/v1/partners", body, tenant=tenant)
    action = {"name": "feed", "partner_id": partner_doc["id"], "method": "GET", "path": "/feed"}
    action_doc = await post(client, "/api/v1/actions", {**action, "mode": "proxy"}, tenant)
    for n in range(count):
        schedule = {
            "name": f"feed-{n}",
            "action_id": action_doc["id"],
            "every": "1h",
            "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
        }
        await post(client, "/api/v1/schedules", schedule, tenant=tenant)


async def test_another_tenants_schedule_runs_at_once_while_a_tenants_slow_feeds_are_read(
    aiohttp_client: Any, make_app: Any
) -> None:
    """Tenant acme's four schedules read a feed answering in 8 s when tenant globex's
    schedule comes due: acme's runs hold at most half the runner's four slots, so globex's
    runs at once, not once one of acme's runs has ended."""
    client = await aiohttp_client(make_app(schedule_concurrency=4))
    schedules = client.app[services_key].schedule_runner
    async with running_partner() as slow, running_partner() as fast:
        slow.respond_with(200, {"items": []}, delay=8)
        fast.respond_with(200, {"items": []})
        await _feed_schedules(client, slow.url, "acme", 4)
        running = asyncio.create_task(schedules.run())
        try:
            await slow.wait_for(2)  # acme's runs are under way
            await asyncio.sleep(1)
            await _feed_schedules(client, fast.url, "globex", 1)
            schedules.notify()
            started = time.monotonic()
            await fast.wait_for(1, timeout=20)
            assert time.monotonic() - started < 5  # not behind acme's reads (8 s each)
        finally:
            await schedules.stop()
            await running


async def test_another_tenants_schedule_runs_at_once_behind_a_tenants_80_due_schedules(
    aiohttp_client: Any, make_app: Any
) -> None:
    """Tenant acme has 80 schedules due on a feed answering in 8 s (more than
    `PASSED_OVER_MOST`, all due before globex's one): acme's runs take three of the four
    slots, and the claim leaves acme's other schedules out rather than reading them first and
    stopping after 64 passed over, so globex's runs at once in the slot left free. Until
    2026-12-06 it waited for acme's runs to bring its backlog under 64 (rounds of 8 s)."""
    client = await aiohttp_client(make_app(schedule_concurrency=4))
    schedules = client.app[services_key].schedule_runner
    async with running_partner() as slow, running_partner() as fast:
        slow.respond_with(200, {"items": []}, delay=8)
        fast.respond_with(200, {"items": []})
        await _feed_schedules(client, slow.url, "acme", 80)
        await _feed_schedules(client, fast.url, "globex", 1)
        started = time.monotonic()
        running = asyncio.create_task(schedules.run())
        try:
            await fast.wait_for(1, timeout=20)
            assert time.monotonic() - started < 2.5
            # acme's share of the slots, alone (its three calls may still be on their way on a
            # loaded machine; a fourth could only come once a slot frees, after 8 s)
            await slow.wait_for(3, timeout=5)
            assert len(slow.requests) == 3
        finally:
            slow.release.set()
            await schedules.stop()
            await running
