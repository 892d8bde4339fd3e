"""`gateway_partner_requests_total{result}` speaks one vocabulary whatever the mode: the
verdict on an answer (success, retry, fail, gone), or the error of a call that got none
(timeout, connect, reset, blocked, rate_limited, ...). SMS and push sends count as mode
`notify`."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.flow_support import drain, get, hr_lookup, sample, sms_channel
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    partner,
    post,
    running_partner,
    upload_mapping,
)
from tests.schedule_support import runner
from tests.support import auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]

VEHICLES = """
name: erp-vehicles
direction: inbound
entity_type: vehicle
key: [plate]
items: items
fields:
  plate: {from: placa, transforms: [plate]}
"""


async def _count(client: Client, partner_id: str, mode: str, result: str) -> float:
    text = await (await client.get("/metrics")).text()
    line = (
        f'gateway_partner_requests_total{{mode="{mode}",partner="{partner_id}",result="{result}"}} '
    )
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


async def test_a_proxy_call_without_an_answer_counts_its_error_not_a_verdict(
    client: Client, partner: Partner
) -> None:
    """A timeout was counted `retry` in proxy and deliver modes, `timeout` in schedule mode."""
    partner_doc = await create_partner(client, partner.url, timeout_seconds=0.2)
    action = await create_action(client, partner_doc["id"], mode="proxy", method="GET")
    partner.respond_with(200, {}, delay=5, times=1)
    invoke = f"/api/v1/actions/{action['id']}/invoke"

    timed_out = await client.post(invoke, headers=auth(), json={"payload": {}})
    partner.respond_with(503, {})
    answered = await client.post(invoke, headers=auth(), json={"payload": {}})

    assert (timed_out.status, answered.status) == (504, 502)
    assert await _count(client, partner_doc["id"], "proxy", "timeout") == 1
    assert await _count(client, partner_doc["id"], "proxy", "retry") == 1


async def test_a_call_whose_token_fetch_fails_is_no_partner_request_in_the_latency_histogram(
    client: Client, partner: Partner
) -> None:
    """The token endpoint answers 503 after 0.3 s: the partner's API got no request, yet the
    call was observed as a partner request of 0 s (its outcome had no latency)."""
    async with running_partner() as idp:
        idp.respond_with(503, {"error": "temporarily_unavailable"}, delay=0.3)
        partner_doc = await create_partner(
            client,
            partner.url,
            auth={
                "type": "oauth2_client_credentials",
                "token_url": f"{idp.url}/token",
                "client_id": "rabbot",
                "client_secret": "cs-123456",
            },
        )
        action = await create_action(client, partner_doc["id"], mode="proxy")
        invoked = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", headers=auth(), json={"payload": {}}
        )
    text = await (await client.get("/metrics")).text()
    observed = [
        row
        for row in text.splitlines()
        if row.startswith("gateway_partner_request_duration_seconds_count")
        and partner_doc["id"] in row
    ]

    assert invoked.status == 502 and partner.requests == []
    assert await _count(client, partner_doc["id"], "proxy", "auth_failed") == 1
    assert [float(row.rsplit(" ", 1)[1]) for row in observed] in ([], [0.0]), observed


async def test_a_proxy_call_is_in_the_metrics_as_soon_as_its_answer_is_read(
    client: Client, partner: Partner
) -> None:
    """The edge and the proxy count a call after its answer is written: the next request
    (this /metrics) already sees it, a failed call's too."""
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"], mode="proxy", method="GET")
    invoke = f"/api/v1/actions/{action['id']}/invoke"
    route = 'method="POST",route="/api/v1/actions/{id}/invoke"'

    partner.respond_with(200, {"ok": True}, times=1)
    assert (await client.post(invoke, headers=auth(), json={"payload": {}})).status == 200
    text = await (await client.get("/metrics")).text()
    assert f'gateway_http_requests_total{{{route},status_class="2xx"}} 1.0' in text
    assert await _count(client, partner_doc["id"], "proxy", "success") == 1
    labels = f'mode="proxy",partner="{partner_doc["id"]}"'
    assert f"gateway_partner_request_duration_seconds_count{{{labels}}} 1.0" in text

    partner.respond_with(500, {})
    assert (await client.post(invoke, headers=auth(), json={"payload": {}})).status == 502
    text = await (await client.get("/metrics")).text()
    assert f'gateway_http_requests_total{{{route},status_class="5xx"}} 1.0' in text
    assert await _count(client, partner_doc["id"], "proxy", "retry") == 1


async def test_a_schedules_answers_count_verdicts_like_the_other_modes(
    client: Client, partner: Partner
) -> None:
    """A schedule counted status classes (`2xx`, `5xx`) where the other modes count verdicts."""
    await upload_mapping(client, VEHICLES)
    erp = await create_partner(client, partner.url, name="TOTVS", auth={"type": "none"})
    action = await create_action(
        client, erp["id"], name="veiculos", mode="proxy", method="GET", path="/api/veiculos"
    )
    await post(
        client,
        "/api/v1/schedules",
        {
            "name": "erp-veiculos",
            "action_id": action["id"],
            "every": "1h",
            "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
        },
    )
    partner.respond_with(200, {"items": [{"placa": "ABC1D23"}]})

    assert await runner(client).run_until_idle() == {"ok": 1}

    assert await _count(client, erp["id"], "schedule", "success") == 1
    assert await _count(client, erp["id"], "schedule", "2xx") == 0


async def test_a_flows_fetch_is_counted_as_a_partner_request(
    client: Client, partner: Partner
) -> None:
    """A flow's `fetch` step called the partner without being counted at all."""
    action = await hr_lookup(client, partner.url)
    steps = [{"id": "hr", "fetch": "hr-driver-lookup"}]
    flow = {"name": "f", "on": {"events": ["entity.created"]}, "steps": steps}
    await post(client, "/api/v1/flows", flow)
    partner.respond_with(200, sample("driver_lookup_response.json"))
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})

    await drain(client.app[services_key])

    assert partner.paths() == ["/veiculos/ABC1D23/condutor-atual"]
    assert await _count(client, action["partner_id"], "flow", "success") == 1


async def test_a_flows_call_delivery_is_counted_created_as_its_end_is(
    client: Client, partner: Partner
) -> None:
    """`gateway_deliveries_total{outcome="created"}` counted only an event's fan-out: a
    flow's `call` (and `notify`) deliveries ended `succeeded` without being created."""
    partner_doc = await create_partner(client, partner.url)
    await create_action(client, partner_doc["id"], name="tell")
    steps = [{"id": "erp", "call": "tell"}]
    flow = {"name": "tell-erp", "on": {"events": ["entity.created"]}, "steps": steps}
    await post(client, "/api/v1/flows", flow)
    before = await (await client.get("/metrics")).text()

    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(client.app[services_key])
    after = await (await client.get("/metrics")).text()

    assert len(partner.requests) == 1
    for outcome in ("created", "succeeded"):
        counted = _total(after, outcome) - _total(before, outcome)
        assert counted == 1, (outcome, counted)


def _total(text: str, outcome: str) -> float:
    line = f'gateway_deliveries_total{{outcome="{outcome}"}} '
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


async def test_an_sms_send_is_counted_as_a_notify_request_and_a_held_one_by_its_reason(
    client: Client, partner: Partner
) -> None:
    """SMS and push went to partners uncounted. Five outages open the provider's circuit:
    the sixth send is held (`circuit_open`, a 503 to the test send), not a sixth retry."""
    await sms_channel(client, partner.url)
    (zenvia,) = (await get(client, "/api/v1/partners"))["items"]
    partner.respond_with(200, {"id": "zv-1"}, times=1)
    sent = await post(client, "/api/v1/channels/sms/test", {"to": "+5511987654321"}, status=200)
    assert sent["result"] == "success"
    partner.respond_with(503, {})
    for _ in range(5):
        await post(client, "/api/v1/channels/sms/test", {"to": "+5511987654321"}, status=200)

    held = await client.post(
        "/api/v1/channels/sms/test", json={"to": "+5511987654321"}, headers=auth()
    )

    assert held.status == 503 and held.headers["Retry-After"] == "30"
    assert (await held.json())["detail"].startswith("not sent: circuit open")
    assert len(partner.requests) == 6
    assert await _count(client, zenvia["id"], "notify", "success") == 1
    assert await _count(client, zenvia["id"], "notify", "retry") == 5
    assert await _count(client, zenvia["id"], "notify", "circuit_open") == 1
    assert await _count(client, zenvia["id"], "deliver", "success") == 0
