"""A notification our own guard holds back before anything leaves (the push partner's circuit
open, its token endpoint asking us to wait, its rate limit) is deferred to the time the hold
names, as an action's delivery is: no attempt spent, no failure counted, the reason on the
delivery; and sent once after the wait. A channel's test send answers it as a problem
("not sent: <reason>, retry in N s"), not as a retry. A refusal that no wait mends (the SSRF
guard's) still fails the message.

Time is moved, never waited for: one offset moves the delivery worker's clock (wall time) and
the partner catalog's and guards' clocks (monotonic: a token endpoint's wait, a breaker)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.services import Services
from gateway.web.state import services_key
from tests.fcm_double import Fcm, fcm
from tests.flow_support import drain, get, push_on_new_vehicle
from tests.partner_double import FakeClock, post
from tests.support import auth
from tests.ui_support import csrf, log_in, make_user

__all__ = ["fcm"]  # the fixture

Client = TestClient[Any, Any]
ANA = {"name": "Ana Souza", "cpf": "52998224725"}


async def _push_flow(client: Client, fcm: Fcm) -> str:
    """Channel `push` (FCM through its service account), a driver with one phone, and a flow
    that pushes to her when a vehicle is created; the FCM partner's id."""
    await push_on_new_vehicle(client, fcm, '`{"cpf": "52998224725"}`')
    await post(client, "/api/v1/entities/driver", {**ANA, "push_tokens": ["phone"]})
    (partner,) = (await get(client, "/api/v1/partners"))["items"]
    return str(partner["id"])


def _moving(services: Services) -> FakeClock:
    """One clock for the worker, the partners' credentials and their guards, that moves only
    when the test moves it: a breaker's "probe in 30 s" read a second later on a loaded host
    said 29."""
    clock = FakeClock()
    services.delivery_worker.clock = clock
    start = time.monotonic()

    def monotonic() -> float:
        return start + clock.offset.total_seconds()

    services.catalog.clock = monotonic
    services.guards.clock = monotonic
    return clock


async def _vehicle(client: Client, plate: str) -> None:
    await post(client, "/api/v1/entities/vehicle", {"plate": plate})


async def _deliveries(client: Client) -> list[dict[str, Any]]:
    items = (await get(client, "/api/v1/deliveries"))["items"]
    return [await get(client, f"/api/v1/deliveries/{d['id']}") for d in items]


async def _delivery(client: Client, plate: str) -> dict[str, Any]:
    deliveries = await _deliveries(client)
    (found,) = [d for d in deliveries if d["notification"]["parts"]["body"] == plate]
    return found


async def _counted(client: Client, partner_id: str, result: str) -> float:
    text = await (await client.get("/metrics")).text()
    line = (
        f'gateway_partner_requests_total{{mode="notify",partner="{partner_id}",result="{result}"}} '
    )
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def _due_in(delivery: dict[str, Any], clock: FakeClock) -> float:
    return (datetime.fromisoformat(delivery["next_attempt_at"]) - clock.now).total_seconds()


async def test_a_push_held_by_a_token_endpoint_that_asked_to_wait_spends_no_attempt_and_goes_after(
    client: Client, fcm: Fcm
) -> None:
    """FCM's token endpoint answers 503 with Retry-After: 120. The push that asked gets the
    answer (an attempt, retried no sooner than it asks, as for an action); a push in those two
    minutes is held without asking again: pending, no attempt, the reason on it. Both go once
    the wait is over."""
    partner_id = await _push_flow(client, fcm)
    services = client.app[services_key]
    clock = _moving(services)
    fcm.answer_token_next(503, {"Retry-After": "120"})

    await _vehicle(client, "ABC1D23")
    await drain(services)
    asked = await _delivery(client, "ABC1D23")
    assert (asked["status"], asked["attempt_count"]) == ("pending", 1)
    assert "token endpoint answered 503" in asked["last_error"] and _due_in(asked, clock) > 115

    clock.advance(30)
    await _vehicle(client, "BRA2E19")
    await drain(services)
    held = await _delivery(client, "BRA2E19")
    assert (held["status"], held["attempt_count"], held["attempts"]) == ("pending", 0, [])
    assert held["last_error"].startswith("not sent: token endpoint answered 503")
    assert "asked to wait" in held["last_error"] and held["last_error"].endswith("retry in 90 s")
    assert 85 < _due_in(held, clock) <= 90
    assert fcm.token_requests == 1 and fcm.messages == []
    assert await _counted(client, partner_id, "auth_waiting") == 1

    clock.advance(91)
    await drain(services)
    assert sorted(m["notification"]["body"] for m in fcm.messages) == ["ABC1D23", "BRA2E19"]
    sent = await _delivery(client, "BRA2E19")
    assert (sent["status"], sent["attempt_count"]) == ("succeeded", 1)
    assert (await _delivery(client, "ABC1D23"))["attempt_count"] == 2
    assert fcm.token_requests == 2
    assert await _counted(client, partner_id, "success") == 2
    assert await _counted(client, partner_id, "auth_failed") == 1


async def test_a_push_to_a_partner_whose_circuit_is_open_waits_for_the_probe_and_is_sent_once(
    client: Client, fcm: Fcm
) -> None:
    """Five outages in a row open FCM's circuit: the next alert is held until the breaker lets
    a probe through (30 s), then sent, on its first attempt; a test send meanwhile says the
    same, as a 503 with Retry-After."""
    partner_id = await _push_flow(client, fcm)
    services = client.app[services_key]
    clock = _moving(services)
    for _ in range(5):
        fcm.answer_next(503)
        outage = await post(client, "/api/v1/channels/push/test", {"to": "phone"}, status=200)
        assert outage["result"] == "retry"

    await _vehicle(client, "ABC1D23")
    assert await drain(services) == {"succeeded": 1, "deferred": 1}  # the run, the message
    held = await _delivery(client, "ABC1D23")
    assert (held["status"], held["attempt_count"]) == ("pending", 0)
    assert held["last_error"] == (
        "not sent: circuit open after repeated failures; probe in 30 s, retry in 30 s"
    )
    assert await _counted(client, partner_id, "circuit_open") == 1

    test = await client.post("/api/v1/channels/push/test", json={"to": "phone"}, headers=auth())
    problem = await test.json()
    assert (test.status, test.headers["Retry-After"]) == (503, "30")
    assert test.content_type == "application/problem+json"
    assert problem["detail"].startswith("not sent: circuit open after repeated failures")
    assert problem["detail"].endswith("retry in 30 s") and problem["channel"] == "push"
    assert fcm.messages == []

    clock.advance(31)
    await drain(services)
    assert [m["notification"]["body"] for m in fcm.messages] == ["ABC1D23"]
    sent = await _delivery(client, "ABC1D23")
    assert (sent["status"], sent["attempt_count"]) == ("succeeded", 1)
    assert await _counted(client, partner_id, "retry") == 5


async def test_a_push_over_the_partners_rate_limit_is_held_not_failed(
    client: Client, fcm: Fcm
) -> None:
    """One message a minute, no wait allowed: the second alert is held for the bucket's
    minute, then sent; the test send over the limit is a 429."""
    partner_id = await _push_flow(client, fcm)
    limited = await client.patch(
        f"/api/v1/partners/{partner_id}",
        headers=auth(),
        json={"rate_limit": {"per_second": 1 / 60, "burst": 1}},
    )
    assert limited.status == 200, await limited.text()
    services = client.app[services_key]
    clock = _moving(services)

    await _vehicle(client, "ABC1D23")
    await _vehicle(client, "BRA2E19")
    await drain(services)
    statuses = sorted((d["status"], d["attempt_count"]) for d in await _deliveries(client))
    assert statuses == [("pending", 0), ("succeeded", 1)]
    assert len(fcm.messages) == 1 and await _counted(client, partner_id, "rate_limited") == 1

    test = await client.post("/api/v1/channels/push/test", json={"to": "phone"}, headers=auth())
    assert test.status == 429 and "over the rate limit" in (await test.json())["detail"]

    clock.advance(61)
    await drain(services)
    assert sorted(m["notification"]["body"] for m in fcm.messages) == ["ABC1D23", "BRA2E19"]


async def test_a_push_the_ssrf_guard_refuses_fails_for_good(
    aiohttp_client: Any, make_app: Callable[..., web.Application], fcm: Fcm
) -> None:
    """`blocked` is no wait: the message fails on its first attempt with the reason."""
    client = await aiohttp_client(make_app(outbound_allow=()))
    await _push_flow(client, fcm)
    await _vehicle(client, "ABC1D23")
    await drain(client.app[services_key])
    failed = await _delivery(client, "ABC1D23")
    assert (failed["status"], failed["attempt_count"]) == ("failed", 1)
    assert "loopback" in failed["last_error"] and fcm.token_requests == 0


async def test_the_admin_pages_test_send_says_not_sent_and_when(
    client: Client, services: Services, fcm: Fcm
) -> None:
    """Not a retry nor a failure of the channel's, but an alert above the form: unavailable,
    not sent, and when to try again."""
    await _push_flow(client, fcm)
    app_services = client.app[services_key]
    _moving(app_services)
    for _ in range(5):
        fcm.answer_next(503)
        await post(client, "/api/v1/channels/push/test", {"to": "phone"}, status=200)
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/channels/push")
    answer = await client.post("/admin/channels/push/test", data={"csrf": token, "to": "phone"})
    page = await answer.text()
    assert answer.status == 422, page  # the page's form refused, as any refusal shows
    alert = page[page.index('role="alert"') : page.index('id="f-to"')]
    assert "Indisponível" in alert and "not sent: circuit open after repeated failures" in alert
    # The circuit's 30 s cooldown, counted from its opening (a second may pass meanwhile).
    when = re.search(r"retry in (\d+) s", alert)
    assert when is not None and 25 <= int(when.group(1)) <= 30, alert
    assert 'data-testid="test-outcome"' not in page and fcm.messages == []


async def test_a_hold_computed_to_end_in_the_past_is_written_due_now_not_before() -> None:
    """Quiet hours read in the wrong pass of a repeated hour held a message until half an
    hour ago: written as it was, the delivery was due at once, judged and held again in the
    past, a loop of claims and writes. `defer` writes no time before its own clock's."""
    from types import SimpleNamespace

    from gateway.delivery.recording import DeliveryRecorder
    from gateway.metrics import Metrics

    now = datetime(2027, 11, 7, 6, 15, tzinfo=UTC)
    written: dict[str, Any] = {}

    async def finish(delivery_id: str, token: str, fields: dict[str, Any], **_: Any) -> bool:
        written.update(fields)
        return True

    store = SimpleNamespace(deliveries=SimpleNamespace(finish=finish))
    recorder = DeliveryRecorder(
        store,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        Metrics("test", "asyncio"),
        clock=lambda: now,
        rng=lambda: 0.5,
    )
    held = "held: quiet hours"
    await recorder.defer({"_id": "d-1"}, "t", now - timedelta(minutes=30), held, quiet_hours=True)
    assert written["next_attempt_at"] == now
    await recorder.defer({"_id": "d-1"}, "t", now + timedelta(minutes=30), held, quiet_hours=True)
    assert written["next_attempt_at"] == now + timedelta(minutes=30)
