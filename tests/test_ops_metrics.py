"""Metrics telling what is true when scraped: a partner's circuit past its cooldown, schedules'
pages apart from triggers' batches, and the trigger gates' change stream when it is off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.outbound.breaker import (
    BreakerState,
    CircuitBreaker,
    GuardSettings,
    PartnerGuards,
    Permit,
)
from gateway.web.state import services_key
from tests.feed_doubles import GeotabDouble, geotab
from tests.partner_double import Partner, create_action, create_partner, partner
from tests.schedule_support import geotab_schedule, runner
from tests.support import auth
from tests.triggers_support import VEHICLE, bearer, create_trigger

__all__ = ["geotab", "partner"]  # fixtures
Client = TestClient[Any, Any]


def _circuit(text: str, partner_id: str) -> dict[str, float]:
    prefix = f'gateway_partner_circuit_state{{partner="{partner_id}",state="'
    return {
        line[len(prefix) :].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


async def test_an_open_circuit_past_its_cooldown_is_scraped_half_open_without_any_call(
    client: Client, partner: Partner
) -> None:
    """The gauge was set on transitions only, and an open breaker turns half_open only when
    read: with no call to the partner, it said `open` for good."""
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"], mode="proxy")
    partner.respond_with(500, {"error": "down"})
    for _ in range(5):
        invoked = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
        )
        assert invoked.status == 502, await invoked.text()
    scraped = await (await client.get("/metrics")).text()
    assert _circuit(scraped, partner_doc["id"]) == {"closed": 0, "open": 1, "half_open": 0}

    client.app[services_key].guards.clock = lambda: time.monotonic() + 31  # the cooldown, 30 s
    scraped = await (await client.get("/metrics")).text()
    assert _circuit(scraped, partner_doc["id"]) == {"closed": 0, "open": 0, "half_open": 1}
    assert len(partner.requests) == 5  # no call made it so


async def test_a_partner_edited_while_its_circuit_is_open_is_reported_closed(
    client: Client, partner: Partner
) -> None:
    """New guard settings (a longer timeout for a partner that timed out) build a new,
    closed breaker: the gauge kept saying `open` for good, calls succeeding meanwhile."""
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"], mode="proxy")
    invoke = f"/api/v1/actions/{action['id']}/invoke"
    partner.respond_with(500, {"error": "down"})
    for _ in range(5):
        invoked = await client.post(invoke, json={"payload": {}}, headers=auth())
        assert invoked.status == 502, await invoked.text()
    edit = {"max_concurrency": 3}
    edited = await client.patch(f"/api/v1/partners/{partner_doc['id']}", json=edit, headers=auth())
    assert edited.status == 200, await edited.text()
    partner.respond_with(200, {"ok": True})
    invoked = await client.post(invoke, json={"payload": {}}, headers=auth())

    assert invoked.status == 200, await invoked.text()
    scraped = await (await client.get("/metrics")).text()
    assert _circuit(scraped, partner_doc["id"]) == {"closed": 1, "open": 0, "half_open": 0}


async def test_a_deleted_partner_leaves_no_circuit_series_and_no_guard(
    client: Client, partner: Partner
) -> None:
    """Its breaker open when it was deleted, the gauge said `open` (then `half_open`, read
    at the end of the cooldown) for the life of the process, and the guard stayed."""
    guards = client.app[services_key].guards
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"], mode="proxy")
    partner.respond_with(503, {})
    for _ in range(5):
        invoked = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
        )
        assert invoked.status == 502, await invoked.text()
    scraped = await (await client.get("/metrics")).text()
    assert _circuit(scraped, partner_doc["id"]) == {"closed": 0, "open": 1, "half_open": 0}

    deleted = await client.delete(f"/api/v1/actions/{action['id']}", headers=auth())
    assert deleted.status == 204
    deleted = await client.delete(f"/api/v1/partners/{partner_doc['id']}", headers=auth())
    assert deleted.status == 204

    scraped = await (await client.get("/metrics")).text()
    assert _circuit(scraped, partner_doc["id"]) == {}
    guards.clock = lambda: time.monotonic() + 31  # past the cooldown: nothing turns half_open
    scraped = await (await client.get("/metrics")).text()
    assert _circuit(scraped, partner_doc["id"]) == {}
    assert partner_doc["id"] not in guards.states()
    assert partner_doc["id"] not in guards._due  # no read of its breaker left pending


def _let_through(breaker: CircuitBreaker) -> Permit:
    permit = breaker.allow()
    assert permit is not None
    return permit


async def test_an_open_breaker_is_reported_half_open_at_the_end_of_its_cooldown_unread() -> None:
    """Each process of `serve --workers N` writes its own gauges, and a scrape reads one
    process: the others' breakers must report their turn to half_open by themselves."""
    reported: list[tuple[str, BreakerState]] = []
    guards = PartnerGuards(on_breaker_change=lambda pid, state: reported.append((pid, state)))
    breaker = guards.get("p1", GuardSettings(breaker_threshold=2, breaker_cooldown=0.2)).breaker
    for _ in range(2):
        breaker.record_failure(_let_through(breaker))
    assert reported == [("p1", BreakerState.OPEN)]
    deadline = time.monotonic() + 5
    while len(reported) < 2:
        assert time.monotonic() < deadline, reported
        await asyncio.sleep(0.02)
    assert reported == [("p1", BreakerState.OPEN), ("p1", BreakerState.HALF_OPEN)]


def test_a_send_still_under_way_on_a_replaced_guard_reports_nothing() -> None:
    """The partner edited (a new guard, closed) while a send on the old one is under way: its
    failure tripped the old breaker, which reported `open` over the new one's `closed`."""
    reported: list[tuple[str, BreakerState]] = []
    guards = PartnerGuards(on_breaker_change=lambda pid, state: reported.append((pid, state)))
    old = guards.get("p", GuardSettings(max_concurrency=10))
    for _ in range(4):
        old.breaker.record_failure(_let_through(old.breaker))
    fifth = _let_through(old.breaker)
    guards.get("p", GuardSettings(max_concurrency=20))  # an admin edits the partner
    old.breaker.record_failure(fifth)  # the fifth failure, of a send made before the edit

    assert reported == [("p", BreakerState.CLOSED)]
    assert guards.states() == {"p": BreakerState.CLOSED}


async def test_a_schedules_pages_are_counted_by_schedule_not_as_a_triggers_batches(
    client: Client, geotab: GeotabDouble
) -> None:
    trigger = await create_trigger(client)
    batch = [{**VEHICLE, "plate": "QWE1R23"}]
    sent = await client.post(f"/hooks/{trigger['id']}", json=batch, headers=bearer(trigger))
    assert sent.status == 200, await sent.text()
    geotab.add_records(3)
    schedule = await geotab_schedule(client, geotab, limit=2)
    assert await runner(client).run_until_idle() == {"ok": 1}

    text = await (await client.get("/metrics")).text()
    batches = {
        line.split('trigger="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("gateway_trigger_batch_items_count{")
    }
    assert batches == {trigger["id"]}
    pages = f'gateway_schedule_page_items_count{{schedule="{schedule["id"]}"}}'
    assert f"{pages} 3.0" in text  # pages of 2, 1 and 0: a page with nothing is a page read
    assert f'gateway_schedule_page_items_sum{{schedule="{schedule["id"]}"}} 3.0' in text


async def test_the_change_stream_gauge_is_0_from_the_start_when_change_streams_are_off(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app(change_streams=False))
    text = await (await client.get("/metrics")).text()
    assert 'gateway_change_stream_up{collection="triggers"} 0.0' in text
