"""A schedule reads its action's answers as its answer rules say, as the partner's circuit
breaker does: a GraphQL throttle in a 200 that a `retry` rule names, or an ERP's error a
`fail` rule names, is no page (kind `answer_rule`, the rule named), lands nothing of it and
moves no cursor; an answer no rule matches is a page as before. A `retry` answer after pages
of the run ends it `more`, as a throttle does; and a throttle (a 429) is one whatever a rule
says."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp.test_utils import TestClient

from tests.partner_double import (
    FakeClock,
    Partner,
    create_action,
    create_partner,
    partner,
    post,
    upload_mapping,
)
from tests.schedule_support import ERP_MAPPING, get, runner, runs
from tests.support import auth
from tests.test_schedules_bad_input import _metric

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]

# Shopify Admin GraphQL's throttle: HTTP 200, no Retry-After.
THROTTLED = {
    "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
    "extensions": {"cost": {"throttleStatus": {"currentlyAvailable": 3, "restoreRate": 100.0}}},
}
RULES = [
    {"status": ["2xx"], "body": "errors[?extensions.code == 'THROTTLED']", "then": "retry"},
    {"status": ["2xx"], "body": "erro", "then": "fail"},
]


async def _schedule(
    client: Client, partner: Partner, rules: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    await upload_mapping(client, ERP_MAPPING)
    erp = await create_partner(client, partner.url, name="ERP", auth={"type": "none"})
    action = await create_action(
        client,
        erp["id"],
        name="feed",
        method="GET",
        path="/feed",
        mode="proxy",
        answer_rules=RULES if rules is None else rules,
    )
    body = {
        "name": "erp-feed",
        "action_id": action["id"],
        "every": "1h",
        "cursor": {"from": "next", "param": "query.after", "more": "more"},
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
    }
    result: dict[str, Any] = await post(client, "/api/v1/schedules", body)
    return result


def _page(cursor: str, *plates: str, more: bool = False) -> dict[str, Any]:
    items = [{"placa": p, "codigo": n} for n, p in enumerate(plates)]
    return {"items": items, "next": cursor, "more": more}


async def _plates(client: Client) -> list[str]:
    response = await client.get("/api/v1/entities/vehicle?limit=50", headers=auth())
    return sorted(v["plate"] for v in (await response.json())["items"])


def _clock(client: Client) -> FakeClock:
    clock = FakeClock()
    runner(client).clock = clock
    runner(client).rng = lambda: 0.5  # no jitter: backoffs are exact
    return clock


async def _waited(client: Client, schedule_id: str, since: datetime) -> float:
    state = (await get(client, f"/api/v1/schedules/{schedule_id}"))["state"]
    return (datetime.fromisoformat(state["next_run_at"]) - since).total_seconds()


async def test_a_throttle_a_retry_rule_names_in_a_200_fails_a_first_call_and_moves_no_cursor(
    client: Client, partner: Partner
) -> None:
    schedule = await _schedule(client, partner)
    # The throttle carries a cursor-like member too: it is no page, nothing of it is read.
    partner.respond_with(body={**THROTTLED, "next": "c9", "items": [{"placa": "ABC1D23"}]})

    assert await runner(client).run_until_idle() == {"failed": 1}

    [run] = await runs(client, schedule["id"])
    assert (run["outcome"], run["pages"], run["written"]) == ("failed", 0, 0)
    assert run["error"]["kind"] == "answer_rule"
    assert run["error"]["status"] == 200
    assert "(retry: answer_rules/0)" in run["error"]["message"], run["error"]
    assert "Throttled" in run["error"]["message"]
    assert run["cursor_after"] is None
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert (state["cursor"], state["failures"]) == (None, 1)
    assert state["last_error"]["kind"] == "answer_rule"
    assert await _metric(client, "gateway_schedule_errors_total", kind="answer_rule") == 1
    # The call is counted as the rule judged it, as the breaker counts it.
    assert await _metric(client, "gateway_partner_requests_total", mode="schedule", result="retry")
    assert await _plates(client) == []


async def test_a_retry_rules_answer_after_pages_ends_the_run_more_without_a_failure(
    client: Client, partner: Partner
) -> None:
    """A `retry` rule names a "try again later" (a GraphQL throttle in a 200, with no
    Retry-After): after pages of the run the partner paces a backlog, as with a 429. The run
    ends `more` with what it read, no failure, the next one due after the first back-off
    step; the answer is no page (its cursor-like member is not read)."""
    clock = _clock(client)
    schedule = await _schedule(client, partner)
    partner.respond_with(body=_page("c1", "ABC1D23", more=True), times=1)
    partner.respond_with(body={**THROTTLED, "next": "c9", "items": []}, times=1)

    started = clock.now
    assert await runner(client).run_until_idle() == {"more": 1}

    [run] = await runs(client, schedule["id"])
    assert (run["outcome"], run["pages"], run["written"], run["error"]) == ("more", 1, 1, None)
    assert "answered 200 answer_rules/0 after 1 page(s)" in run["note"], run["note"]
    assert run["cursor_after"] == "c1"  # the first page's, not the throttle's "c9"
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert (state["cursor"], state["failures"], state["last_error"]) == ("c1", 0, None)
    assert 5 <= await _waited(client, schedule["id"], started) <= 6
    assert await _metric(client, "gateway_schedule_errors_total", kind="answer_rule") == 0
    assert await _metric(client, "gateway_partner_requests_total", mode="schedule", result="retry")

    # Once the partner answers pages again, the run reads on from the cursor it kept.
    partner.respond_with(body=_page("c2", "BRA2E19"), times=1)
    clock.advance(6)
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert partner.requests[-1].query.get("after") == "c1"
    assert await _plates(client) == ["ABC1D23", "BRA2E19"]


async def test_a_429_is_a_throttle_whatever_a_fail_rule_says(
    client: Client, partner: Partner
) -> None:
    """An action whose rules make its deliveries' 4xx final (the usual rule, with no body): a
    429 is still the partner's throttle. After pages it ends the run `more`, no failure, due
    after its Retry-After; on a run's first call it fails as `rate_limited`, its Retry-After
    honoured. The rule made the first a failed run (`answer_rule`) with no Retry-After."""
    clock = _clock(client)
    schedule = await _schedule(client, partner, [{"status": ["4xx"], "then": "fail"}])
    partner.respond_with(body=_page("c1", "ABC1D23", more=True), times=1)
    partner.respond_with(429, {"message": "slow down"}, headers={"Retry-After": "30"}, times=1)

    started = clock.now
    assert await runner(client).run_until_idle() == {"more": 1}
    [run] = await runs(client, schedule["id"])
    assert (run["outcome"], run["error"]) == ("more", None)
    assert "answered 429 after 1 page(s)" in run["note"], run["note"]
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert (state["cursor"], state["failures"], state["last_error"]) == ("c1", 0, None)
    assert 30 <= await _waited(client, schedule["id"], started) <= 31

    partner.respond_with(429, {"message": "slow down"}, headers={"Retry-After": "40"}, times=1)
    clock.advance(31)
    started = clock.now
    assert await runner(client).run_until_idle() == {"failed": 1}
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert (state["last_error"]["kind"], state["failures"]) == ("rate_limited", 1)
    assert "slow down" in state["last_error"]["message"]
    assert 40 <= await _waited(client, schedule["id"], started) <= 41
    # The breaker's count is the rule's, as the sender judged the answer.
    assert await _metric(client, "gateway_partner_requests_total", mode="schedule", result="fail")


async def test_an_error_a_fail_rule_names_in_a_200_is_no_page(
    client: Client, partner: Partner
) -> None:
    schedule = await _schedule(client, partner)
    partner.respond_with(body={"erro": "token de integracao expirado", "items": []}, times=1)

    assert await runner(client).run_until_idle() == {"failed": 1}

    [run] = await runs(client, schedule["id"])
    assert run["error"]["kind"] == "answer_rule"
    assert "(final: answer_rules/1): token de integracao expirado" in run["error"]["message"]
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert (state["cursor"], state["failures"]) == (None, 1)
    assert await _metric(client, "gateway_partner_requests_total", mode="schedule", result="fail")


async def test_a_rule_without_a_body_quotes_the_partners_answer_in_the_runs_error(
    client: Client, partner: Partner
) -> None:
    """A rule with no `body` expression (the usual "4xx are final") finds nothing to quote: the
    run's error quotes the answer's start, as a delivery's `last_error` does. It named the
    rule alone, the partner's reason lost."""
    schedule = await _schedule(client, partner, [{"status": ["4xx"], "then": "fail"}])
    partner.respond_with(400, {"message": "token de integracao expirado"}, times=1)

    assert await runner(client).run_until_idle() == {"failed": 1}

    [run] = await runs(client, schedule["id"])
    assert run["error"]["kind"] == "answer_rule"
    assert run["error"]["message"] == (
        "the partner answered 400, decided by an answer rule (final: answer_rules/0): "
        '{"message":"token de integracao expirado"}'
    ), run["error"]
