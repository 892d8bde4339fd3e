"""One tenant's admin cannot grow /metrics without bound through any label: the ids of
partners and schedules (GATEWAY_METRICS_MAX_PARTNERS, GATEWAY_METRICS_MAX_SCHEDULES), like
triggers', keep series of their own for the first ones a process sees, the rest counted under
"other"; the field names of `gateway_stale_fields_skipped_total` and the secret records of
`gateway_damaged_secrets_total` are bounded the same way (metrics.py `BoundedLabel`)."""

from __future__ import annotations

import re
from typing import Any

from gateway.metrics import MAX_FIELDS, OTHER, Metrics
from gateway.web.state import services_key
from tests.feed_doubles import ScriptedFeed, scripted
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    partner,
    post,
    upload_mapping,
)
from tests.schedule_support import runner, scripted_schedule
from tests.support import auth
from tests.triggers_support import Client, bearer, create_trigger

__all__ = ["partner", "scripted"]  # the fixtures

FEED = """
name: erp-vehicles
direction: inbound
entity_type: vehicle
key: [plate]
items: items
fields:
  plate: {from: placa, transforms: [plate]}
"""


def _labels(text: str, metric: str, label: str) -> set[str]:
    return set(re.findall(rf'{metric}\{{[^}}]*{label}="([^"]+)"', text))


def _samples(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def _total(text: str, metric: str, label: str, value: str) -> float:
    pattern = rf'{metric}\{{[^}}]*{label}="{value}"[^}}]*\}} (\S+)'
    return sum(map(float, re.findall(pattern, text)))


async def _scrape(client: Client) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    return await response.text()


async def _proxy_partner(client: Client, url: str, n: int) -> dict[str, Any]:
    doc = await create_partner(client, url, name=f"p{n}")
    action: dict[str, Any] = await create_action(
        client, doc["id"], name=f"a{n}", mode="proxy", method="GET", path="/feed"
    )
    return action


async def _invoke(client: Client, action: dict[str, Any]) -> None:
    answer = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", headers=auth(), json={"payload": {}}
    )
    assert answer.status == 200, await answer.text()


async def test_partners_past_the_metrics_bound_are_counted_under_other(
    aiohttp_client: Any, make_app: Any, partner: Partner
) -> None:
    partner.respond_with(200, {"items": []})
    client = await aiohttp_client(make_app(metrics_max_partners=2))
    actions = [await _proxy_partner(client, partner.url, n) for n in range(5)]
    for action in actions:
        await _invoke(client, action)
    text = await _scrape(client)
    first = {action["partner_id"] for action in actions[:2]}
    requests = "gateway_partner_requests_total"
    assert _labels(text, requests, "partner") == first | {OTHER}
    assert _labels(text, "gateway_partner_request_duration_seconds_count", "partner") == (
        first | {OTHER}
    )
    assert _total(text, requests, "partner", OTHER) == 3.0  # the calls of the three past it
    assert OTHER not in _labels(text, "gateway_partner_circuit_state", "partner")
    # a deleted partner's series go, and its place is another's
    for path in (f"actions/{actions[0]['id']}", f"partners/{actions[0]['partner_id']}"):
        deleted = await client.delete(f"/api/v1/{path}", headers=auth())
        assert deleted.status == 204, await deleted.text()
    await _invoke(client, actions[4])
    assert actions[4]["partner_id"] in _labels(await _scrape(client), requests, "partner")


async def test_the_scrape_grows_no_more_past_the_partner_bound(
    aiohttp_client: Any, make_app: Any, partner: Partner
) -> None:
    """Past the bound, partners add no series (each added ~20 before: calls by mode and
    result, the latency histogram's buckets)."""
    partner.respond_with(200, {"items": []})
    client = await aiohttp_client(make_app(metrics_max_partners=2))
    metrics = client.app[services_key].metrics
    sizes = []
    for round_ in range(3):
        for i in range(3):
            await _invoke(client, await _proxy_partner(client, partner.url, round_ * 3 + i))
        sizes.append(_samples(metrics.render().decode()))
    assert sizes[1] == sizes[2], sizes


async def test_schedules_past_the_metrics_bound_are_counted_under_other(
    aiohttp_client: Any, make_app: Any, partner: Partner
) -> None:
    partner.respond_with(200, {"items": []})
    client = await aiohttp_client(make_app(metrics_max_schedules=2))
    await upload_mapping(client, FEED)
    partner_doc = await create_partner(client, partner.url, auth={"type": "none"})
    action = await create_action(
        client, partner_doc["id"], name="feed", method="GET", path="/feed", mode="proxy"
    )
    metrics = client.app[services_key].metrics
    sizes, schedules = [], []
    for round_ in range(3):
        for i in range(3):
            body = {
                "name": f"s{round_}{i}",
                "action_id": action["id"],
                "every": "1h",
                "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
            }
            schedules.append(await post(client, "/api/v1/schedules", body))
        assert await runner(client).run_until_idle() == {"ok": 3}
        sizes.append(_samples(metrics.render().decode()))
    text = await _scrape(client)
    runs = "gateway_schedule_runs_total"
    kept = _labels(text, runs, "schedule")
    assert len(kept - {OTHER}) == 2 and OTHER in kept, kept
    assert kept - {OTHER} <= {s["id"] for s in schedules}
    assert _total(text, runs, "schedule", OTHER) == 7.0  # 9 runs, 2 of them by id
    assert _labels(text, "gateway_schedule_page_items_count", "schedule") == kept
    assert sizes[1] == sizes[2], sizes  # flat past the bound


def test_field_names_past_the_bound_are_counted_under_other() -> None:
    """Field names come from the tenant's kinds and mappings: a process keeps MAX_FIELDS."""
    metrics = Metrics("test", "asyncio")
    for n in range(MAX_FIELDS + 50):
        field = metrics.label("field", f"attributes.f{n}")
        metrics.stale_fields_skipped.labels(metrics.trigger_label("trg_1"), field).inc()
    text = metrics.render().decode()
    fields = _labels(text, "gateway_stale_fields_skipped_total", "field")
    assert len(fields) == MAX_FIELDS + 1 and OTHER in fields
    assert _total(text, "gateway_stale_fields_skipped_total", "field", OTHER) == 50.0


async def test_a_schedule_takes_no_trigger_place_and_its_series_go_with_it(
    aiohttp_client: Any, make_app: Any, scripted: ScriptedFeed
) -> None:
    """A schedule's target is a trigger whose id is the schedule's: its refused items
    (`gateway_trigger_rejected_payloads_total{trigger=<schedule id>}`) take a schedule's place,
    not one of GATEWAY_METRICS_MAX_TRIGGERS, and deleting the schedule removes them."""
    client = await aiohttp_client(make_app(metrics_max_triggers=1))
    # one good record, one the mapping refuses (no plate): kept as a rejected payload
    scripted.answer = lambda after, n: {
        "items": [{"placa": "ABC1D23", "codigo": "1"}, {"codigo": "2"}],
        "more": False,
    }
    schedule = await scripted_schedule(client, scripted)
    await runner(client).run_until_idle()
    rejected = "gateway_trigger_rejected_payloads_total"
    assert schedule["id"] in _labels(await _scrape(client), rejected, "trigger")

    trigger = await create_trigger(client, name="gps")
    answer = await client.post(
        f"/hooks/{trigger['id']}", json={"plate": "BRA2E19"}, headers=bearer(trigger)
    )
    assert answer.status in (200, 201), await answer.text()
    text = await _scrape(client)
    assert _labels(text, "gateway_trigger_requests_total", "trigger") == {trigger["id"]}

    deleted = await client.delete(f"/api/v1/schedules/{schedule['id']}", headers=auth())
    assert deleted.status == 204, await deleted.text()
    text = await _scrape(client)
    assert schedule["id"] not in text
    assert _labels(text, "gateway_trigger_requests_total", "trigger") == {trigger["id"]}
