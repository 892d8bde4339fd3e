"""A schedule reads its action's answers as its answer rules say, as the partner's circuit
breaker does: a GraphQL throttle in a 200 that a `retry` rule names, or an ERP's error a
`fail` rule names, fails the run (kind `answer_rule`, the rule named), lands nothing of it
and moves no cursor; an answer no rule matches is a page as before."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    partner,
    post,
    upload_mapping,
)
from tests.schedule_support import ERP_MAPPING, get, run_now, runner, runs
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


async def _schedule(client: Client, partner: Partner) -> dict[str, Any]:
    await upload_mapping(client, ERP_MAPPING)
    erp = await create_partner(client, partner.url, name="ERP", auth={"type": "none"})
    action = await create_action(
        client,
        erp["id"],
        name="feed",
        method="GET",
        path="/feed",
        mode="proxy",
        answer_rules=RULES,
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


async def test_a_throttle_a_retry_rule_names_in_a_200_fails_the_run_and_moves_no_cursor(
    client: Client, partner: Partner
) -> None:
    schedule = await _schedule(client, partner)
    partner.respond_with(body=_page("c1", "ABC1D23", more=True), times=1)
    # The throttle carries a cursor-like member too: it is no page, nothing of it is read.
    partner.respond_with(body={**THROTTLED, "next": "c9", "items": []}, times=1)

    assert await runner(client).run_until_idle() == {"failed": 1}

    [run] = await runs(client, schedule["id"])
    assert (run["outcome"], run["pages"], run["written"]) == ("failed", 1, 1)
    assert run["error"]["kind"] == "answer_rule"
    assert run["error"]["status"] == 200
    assert "(retry: answer_rules/0)" in run["error"]["message"], run["error"]
    assert "Throttled" in run["error"]["message"]
    assert run["cursor_after"] == "c1"  # the first page's, not the throttle's "c9"
    state = (await get(client, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert (state["cursor"], state["failures"]) == ("c1", 1)
    assert state["last_error"]["kind"] == "answer_rule"
    assert await _metric(client, "gateway_schedule_errors_total", kind="answer_rule") == 1
    # The call is counted as the rule judged it, as the breaker counts it.
    assert await _metric(client, "gateway_partner_requests_total", mode="schedule", result="retry")
    assert await _plates(client) == ["ABC1D23"]

    # Once the partner answers pages again, the run reads on from the cursor it kept.
    partner.respond_with(body=_page("c2", "BRA2E19"), times=1)
    await run_now(client, schedule["id"])
    assert await runner(client).run_until_idle() == {"ok": 1}
    assert partner.requests[-1].query.get("after") == "c1"
    assert await _plates(client) == ["ABC1D23", "BRA2E19"]


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
