"""An action's answer rules: a partner whose protocol puts the verdict in the body or a header
(a GraphQL throttle in a 200, a SOAP 1.1 Client fault in a 500, a 403 with Retry-After) is
retried or failed as the rule says, by the delivery worker and the proxy; without a matching
rule SPEC §5's defaults hold."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.actions import answer_rules
from gateway.actions.answer_rules import compile_rules
from gateway.actions.catalog import Action
from gateway.delivery.worker import DeliveryWorker
from gateway.outbound.sender import OutboundRequest
from gateway.web.state import services_key
from tests.flow_support import add_template, drain, sms_channel
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
)
from tests.support import auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]

# Shopify Admin GraphQL's throttle: HTTP 200, no Retry-After.
THROTTLED = {
    "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
    "extensions": {"cost": {"throttleStatus": {"currentlyAvailable": 3, "restoreRate": 100.0}}},
}
GRAPHQL_RULES = [
    {"status": ["2xx"], "body": "errors[?extensions.code == 'THROTTLED']", "then": "retry"}
]


def _fault(code: str, text: str) -> bytes:
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        '<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><S:Fault>'
        f"<faultcode>S:{code}</faultcode><faultstring>{text}</faultstring>"
        "</S:Fault></S:Body></S:Envelope>"
    ).encode()


SOAP_RULES = [
    {
        "status": [500],
        "body": "ends_with(Envelope.Body.Fault.faultcode, 'Client') "
        "&& Envelope.Body.Fault.faultstring",
        "then": "fail",
    }
]
XML = {"Content-Type": "text/xml; charset=utf-8"}
GITHUB_RULES = [
    {"status": [403], "header": {"name": "Retry-After"}, "then": "retry"},
    {"status": [403], "header": {"name": "X-RateLimit-Remaining", "value": "0"}, "then": "retry"},
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def worker(client: Client, clock: FakeClock) -> DeliveryWorker:
    worker = client.app[services_key].delivery_worker
    worker.clock = clock
    worker.rng = lambda: 0.5
    return worker


async def _deliver(client: Client, worker: DeliveryWorker) -> Counter[str]:
    await client.app[services_key].relay.run_until_idle()
    return await worker.run_until_idle()


async def _setup(client: Client, partner: Partner, **action: Any) -> dict[str, Any]:
    made = await create_partner(client, partner.url)
    doc = await create_action(client, made["id"], **action)
    await create_subscription(client, doc["id"], event_types=("entity.created",))
    return made


async def _only_delivery(client: Client) -> dict[str, Any]:
    response = await client.get("/api/v1/deliveries", headers=auth())
    [item] = (await response.json())["items"]  # the only one, when read
    return dict(item)


def _nested(levels: int) -> dict[str, Any]:
    """{"a": {"a": ... {"x": 1}}}, `levels` deep."""
    value: dict[str, Any] = {"x": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# Each pass wraps what it found in 20 more arrays: 60 levels over a 200-level answer.
_WRAP = "[" * 20 + "@" + "]" * 20
DEEPER = f"{_WRAP}|{_WRAP}|{_WRAP}"


async def test_a_rule_finding_a_value_too_deep_to_quote_still_decides_and_names_itself(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    """What a rule's body expression found is quoted as JSON in the delivery's error: past
    the 254 levels orjson writes, that raised TypeError out of the recording of the answer
    (read50 L4)."""
    await _setup(client, partner, answer_rules=[{"status": [500], "body": DEEPER, "then": "fail"}])
    partner.respond_with(500, _nested(200))  # as deep as an answer is read (ANSWER_DEPTH)
    await create_vehicle(client)

    assert await _deliver(client, worker) == Counter(failed=1)
    failed = await _only_delivery(client)
    assert failed["last_error"] == (
        "partner answered 500 (final: answer_rules/0): a value nested too deep to quote"
    )


async def test_an_answer_is_read_by_the_actions_rules_once(
    client: Client,
    partner: Partner,
    worker: DeliveryWorker,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The breaker's verdict, the delivery's, the rule named and what it found in the
    error: each ran the body expression again, four or five times per answer (read50 L4)."""
    runs = []

    class CountedRun(answer_rules.Run):
        def __init__(self) -> None:
            runs.append(self)
            super().__init__()

    monkeypatch.setattr(answer_rules, "Run", CountedRun)
    await _setup(client, partner, error="errors", answer_rules=GRAPHQL_RULES, retry_schedule=[60])
    partner.respond_with(200, THROTTLED)
    await create_vehicle(client)

    assert await _deliver(client, worker) == Counter(retry=1)
    assert (await _only_delivery(client))["last_error"].startswith(
        'partner answered 200 (retry: answer_rules/0): [{"message":"Throttled"'
    )
    assert len(runs) == 1


async def test_a_stored_rule_whose_body_no_longer_compiles_never_matches_logged_once(
    client: Client,
    partner: Partner,
    worker: DeliveryWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A body saved under other limits (or edited in the database) that does not compile now
    was dropped, and the rule matched on its status alone: every 500 of the partner became
    final (read50 L5). The rule never matches; the defaults decide, as with no rule."""
    await _setup(client, partner, answer_rules=[{"status": [500], "body": "erro", "then": "fail"}])
    actions = client.app[services_key].store.db["actions"]
    changed = await actions.update_one(
        {"name": "push"}, {"$set": {"answer_rules.0.body": "erro ||"}, "$inc": {"rev": 1}}
    )
    assert changed.modified_count == 1
    partner.respond_with(500, {"erro": "banco fora do ar"})
    await create_vehicle(client)

    # SPEC §5's default schedule: retried at once, then after 5 s
    assert await _deliver(client, worker) == Counter(retry=2)
    pending = await _only_delivery(client)
    assert (pending["status"], pending["last_error"]) == ("pending", "partner answered 500")
    catalog = client.app[services_key].catalog
    catalog.clock = lambda: 10.0**12  # its cache expired: the action loaded again
    await catalog.action("acme", pending["action_id"])
    logged = [r.getMessage() for r in caplog.records if "answer_rules/0" in r.getMessage()]
    assert len(logged) == 1, logged
    assert "never matches" in logged[0]


async def test_a_graphql_throttle_in_a_200_is_retried_when_a_rule_says_so(
    client: Client, partner: Partner, worker: DeliveryWorker, clock: FakeClock
) -> None:
    await _setup(client, partner, error="errors", answer_rules=GRAPHQL_RULES, retry_schedule=[60])
    partner.respond_with(200, {"data": {"metafieldsSet": {"userErrors": []}}})
    partner.respond_with(200, THROTTLED, times=1)
    await create_vehicle(client)

    assert await _deliver(client, worker) == Counter(retry=1)
    pending = await _only_delivery(client)
    assert pending["status"] == "pending"
    assert pending["last_error"].startswith(
        'partner answered 200 (retry: answer_rules/0): [{"message":"Throttled"'
    )
    clock.advance(60)
    assert await worker.run_until_idle() == Counter(succeeded=1)


THROTTLE_HEADER_RULES = [{"status": ["2xx"], "header": {"name": "X-Throttle"}, "then": "retry"}]


@pytest.mark.parametrize(
    ("rules", "odd"),
    [
        (GRAPHQL_RULES, b"Set Cookie: s=1\r\n"),
        (THROTTLE_HEADER_RULES, b"Set Cookie: s=1\r\n"),
        (GRAPHQL_RULES, b"Content-Length: 3\r\n"),
    ],
    ids=["body-rule-space-in-a-name", "header-rule-space-in-a-name", "body-rule-two-lengths"],
)
async def test_a_200_whose_head_was_refused_is_no_success_for_a_rule_that_reads_it(
    client: Client, worker: DeliveryWorker, rules: list[dict[str, Any]], odd: bytes
) -> None:
    """The head refused after its status line (a space in a field name, lengths that
    differ) keeps its 200, unread: a rule reading the body or a header cannot tell a
    throttle, so the 200 is no success (failed, as for an `error` expression that cannot
    read it). It was recorded `succeeded`, the throttled send never redone."""
    body = orjson.dumps(THROTTLED)
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Throttle: 1\r\n"
        + odd
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    async with raw_partner(reply) as url:
        made = await create_partner(client, url.removesuffix("/hook"))
        doc = await create_action(client, made["id"], answer_rules=rules)
        await create_subscription(client, doc["id"], event_types=("entity.created",))
        await create_vehicle(client)
        assert await _deliver(client, worker) == Counter(failed=1)
    failed = await _only_delivery(client)
    assert failed["last_error"].startswith("partner answered 200 with an unusable body: "), failed


async def test_a_200_whose_body_was_refused_stays_a_success_for_a_header_rule_it_did_not_match(
    client: Client, worker: DeliveryWorker
) -> None:
    """The head was read (no `X-Throttle`): the header rule does not match, whatever the
    body; the status decides, as for any refused body."""
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nnot chunked"
    )
    async with raw_partner(reply) as url:
        made = await create_partner(client, url.removesuffix("/hook"))
        doc = await create_action(client, made["id"], answer_rules=THROTTLE_HEADER_RULES)
        await create_subscription(client, doc["id"], event_types=("entity.created",))
        await create_vehicle(client)
        assert await _deliver(client, worker) == Counter(succeeded=1)


async def test_a_soap_client_fault_in_a_500_is_final_and_leaves_the_partner_healthy(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    made = await _setup(client, partner, answer_rules=SOAP_RULES)
    partner.respond_with(500, raw=_fault("Client", "Placa ABC1D23 desconhecida"), headers=XML)
    await create_vehicle(client)

    assert await _deliver(client, worker) == Counter(failed=1)
    failed = await _only_delivery(client)
    assert failed["attempt_count"] == 1
    assert failed["last_error"] == (
        "partner answered 500 (final: answer_rules/0): Placa ABC1D23 desconhecida"
    )
    stored = await (await client.get(f"/api/v1/partners/{made['id']}", headers=auth())).json()
    assert stored["failing_since"] is None  # a refusal, not an outage

    # Nor a failure for its circuit breaker (5 in a row open it): six more bad records are
    # each sent and refused, none held by an open circuit.
    for n in range(6):
        await create_vehicle(client, plate=f"ABC1D3{n}")
    assert await _deliver(client, worker) == Counter(failed=6)
    assert len(partner.requests) == 7


async def test_a_soap_server_fault_no_rule_matches_keeps_the_default_retry(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    await _setup(client, partner, answer_rules=SOAP_RULES)
    partner.respond_with(500, raw=_fault("Server", "banco fora do ar"), headers=XML)
    await create_vehicle(client)

    # SPEC §5's default schedule: retried at once, then after 5 s
    assert await _deliver(client, worker) == Counter(retry=2)
    pending = await _only_delivery(client)
    assert (pending["status"], pending["last_error"]) == ("pending", "partner answered 500")


@pytest.mark.parametrize(
    ("headers", "wait"),
    [({"Retry-After": "90"}, 90), ({"X-RateLimit-Remaining": "0"}, 5)],
)
async def test_a_403_a_rule_names_by_its_header_is_retried_after_its_wait(
    client: Client,
    partner: Partner,
    worker: DeliveryWorker,
    clock: FakeClock,
    headers: dict[str, str],
    wait: int,
) -> None:
    await _setup(client, partner, answer_rules=GITHUB_RULES, retry_schedule=[5])
    limited = {"message": "You have exceeded a secondary rate limit."}
    partner.respond_with(403, limited, headers=headers, times=1)
    await create_vehicle(client)

    assert await _deliver(client, worker) == Counter(retry=1)
    pending = await _only_delivery(client)
    due = datetime.fromisoformat(pending["next_attempt_at"]) - clock()
    assert timedelta(seconds=wait - 2) <= due <= timedelta(seconds=wait + 1), due
    clock.advance(wait + 1)
    assert await worker.run_until_idle() == Counter(succeeded=1)


async def test_a_403_no_rule_matches_still_fails_at_once(
    client: Client, partner: Partner, worker: DeliveryWorker
) -> None:
    await _setup(client, partner, answer_rules=GITHUB_RULES)
    partner.respond_with(403, {"message": "Resource not accessible by integration"})
    await create_vehicle(client)

    assert await _deliver(client, worker) == Counter(failed=1)


async def test_the_proxy_answers_502_naming_the_rule_for_a_throttle_in_a_200(
    client: Client, partner: Partner
) -> None:
    made = await create_partner(client, partner.url)
    proxy = await create_action(
        client, made["id"], name="ask", mode="proxy", answer_rules=GRAPHQL_RULES
    )
    partner.respond_with(200, THROTTLED)
    invoked = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke", headers=auth(), json={"payload": {}}
    )
    assert invoked.status == 502
    problem = await invoked.json()
    assert problem["detail"].startswith(
        f"partner {made['name']} answered 200 (retry: answer_rules/0): "
    )
    assert problem["partner_status"] == 200


async def test_rules_are_checked_when_saved_each_problem_naming_its_member(
    client: Client, partner: Partner
) -> None:
    made = await create_partner(client, partner.url)
    rules = [
        {"status": [500], "body": "Envelope.Body.Fault[", "then": "fail"},
        {"status": ["6xx"], "then": "later"},
        {"status": [401], "header": {"name": "WWW-Authenticate"}, "then": "retry", "x": 1},
        {"status": ["1xx"], "then": {}},  # no key of a dict: it was a 500 (schemathesis)
    ]
    body = {"name": "a", "partner_id": made["id"], "method": "POST", "mode": "deliver"}
    response = await client.post(
        "/api/v1/actions", headers=auth(), json={**body, "answer_rules": rules}
    )
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    pointers = {e["pointer"] for e in (await response.json())["errors"]}
    assert pointers == {
        "/answer_rules/0/body",
        "/answer_rules/1/status",
        "/answer_rules/1/then",
        "/answer_rules/2/header/name",
        "/answer_rules/2/x",
        "/answer_rules/3/then",
    }

    saved = await create_action(client, made["id"], answer_rules=GITHUB_RULES)
    assert saved["answer_rules"] == GITHUB_RULES
    patched = await client.patch(
        f"/api/v1/actions/{saved['id']}", headers=auth(), json={"answer_rules": "retry"}
    )
    assert patched.status == 422
    [problem] = (await patched.json())["errors"]
    assert problem["pointer"] == "/answer_rules"


async def test_the_openapi_document_shows_answer_rules(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    schemas = doc["paths"]["/api/v1/actions"]["post"]["requestBody"]["content"]
    rules = schemas["application/json"]["schema"]["properties"]["answer_rules"]
    assert rules["items"]["properties"]["then"]["enum"] == ["retry", "fail"]
    assert rules["items"]["required"] == ["status", "then"]


async def _sms_flow(client: Client, partner: Partner, rules: list[dict[str, Any]]) -> None:
    """An SMS channel whose action has `rules`, and a flow texting a driver on each vehicle."""
    action = await sms_channel(client, partner.url)
    patched = await client.patch(
        f"/api/v1/actions/{action['id']}", json={"answer_rules": rules}, headers=auth()
    )
    assert patched.status == 200, await patched.text()
    await add_template(client, "maintenance-due-sms")
    notify = {
        "channel": "sms",
        "template": "maintenance-due-sms",
        "recipients": [{"address": "+5511987654321"}],
    }
    flow = {
        "name": "s",
        "on": {"events": ["entity.created"]},
        "steps": [{"id": "sms", "notify": notify}],
    }
    await post(client, "/api/v1/flows", flow)


async def _sms_deliveries(client: Client) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/deliveries?limit=50", headers=auth())
    return [d for d in (await response.json())["items"] if d.get("kind") == "notification"]


async def test_an_sms_channels_action_retries_a_send_a_header_rule_says_was_throttled(
    client: Client, partner: Partner
) -> None:
    """A provider that signals its throttle in a header of a 200: the SMS path kept no header
    a rule reads, so the throttled message was recorded as sent and never sent again."""
    await _sms_flow(
        client,
        partner,
        [{"status": ["2xx"], "header": {"name": "X-Throttle", "value": "yes"}, "then": "retry"}],
    )
    services = client.app[services_key]
    services.delivery_worker.clock = FakeClock()
    partner.respond_with(200, {"id": "zenvia-2"})
    partner.respond_with(200, {"id": "zenvia-1"}, headers={"X-Throttle": "yes"}, times=1)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(services)

    assert len(partner.requests) == 2
    [sms] = await _sms_deliveries(client)
    assert (sms["status"], sms["attempt_count"]) == ("succeeded", 2)


async def test_an_sms_channels_action_fail_rule_is_final_named_and_leaves_the_breaker_closed(
    client: Client, partner: Partner
) -> None:
    """A `fail` rule's answer shows the provider is up (docs/actions.md "What it changes"):
    seven refused messages are each sent and refused, none held by an open circuit (5 in a
    row opened it: the breaker counted the 500s by their status), each naming the rule."""
    await _sms_flow(client, partner, [{"status": [500], "body": "erro", "then": "fail"}])
    services = client.app[services_key]
    services.delivery_worker.clock = FakeClock()
    partner.respond_with(500, {"erro": "numero invalido"})
    for n in range(7):
        await post(client, "/api/v1/entities/vehicle", {"plate": f"ABC1D3{n}"})
    await drain(services)

    errors = [d["last_error"] for d in await _sms_deliveries(client)]
    assert len(partner.requests) == 7, errors
    assert errors == ["provider answered 500 (final: answer_rules/0): numero invalido"] * 7


def test_reading_answers_adds_the_rules_headers_to_those_the_request_already_keeps() -> None:
    rules = compile_rules([{"status": [403], "header": {"name": "X-Throttle"}, "then": "retry"}])
    action = Action(
        id="a1",
        tenant="t",
        name="list",
        partner_id="p1",
        method="GET",
        path="/list",
        mode="proxy",
        request_mapping=None,
        response_mapping=None,
        success=(),
        retry_schedule=(),
        ordered=False,
        write_back=False,
        answer_rules=rules,
    )
    # A caller that asked for a header first (a schedule's `cursor.follow` header) keeps it.
    request = OutboundRequest("GET", "http://erp.example/list", answer_headers=("X-Next-Page",))

    read = action.reading_answers(request)

    assert read.answer_headers == ("X-Next-Page", "X-Throttle")
    assert read.judge is not None
