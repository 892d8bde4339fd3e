"""An item's `index` is its place in the list the partner sent, wherever the gateway names
it: a trigger's batch answer does so past the items a mapping's `items: {from, when}` leaves
out; a schedule's page (its run's `item_errors`, its kept items) and a mapping's dry run
numbered the items kept instead (review of the batch indexes)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.partner_double import create_action, create_partner, post
from tests.schedule_support import get, runner, runs
from tests.support import auth
from tests.test_partner_format_edges import _flespi, _vehicle
from tests.triggers_support import create_position_trigger, hook, upload_shipped

Client = TestClient[Any, Any]
TRACKER = "353861053849681"


def _stream() -> list[dict[str, Any]]:
    """Message 1 has no position (not an item), message 3 is a fix without its longitude."""
    return [
        _flespi(0),
        _flespi(1, **{"position.latitude": None}),
        _flespi(2),
        _flespi(3, **{"position.longitude": None}),
    ]


async def test_a_schedule_pages_refusals_name_the_partners_index_past_left_out_items(
    client: Client,
) -> None:
    """The page repeats message 0 (dropped by the schedule's dedupe) and message 1 has no
    position (left out by the mapping): the refused fix is the partner's item 4, in the run's
    `item_errors` and in the kept record, as a trigger answering that list names it."""
    await _vehicle(client, attributes={"tracker_id": TRACKER})
    await upload_shipped(client, "flespi")
    stream = _stream()
    page = [stream[0], stream[0], *stream[1:]]

    async def messages(request: web.Request) -> web.Response:
        return web.json_response(page)

    app = web.Application()
    app.router.add_get("/messages", messages)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        partner = await create_partner(
            client, str(server.make_url("")).rstrip("/"), auth={"type": "none"}
        )
        action = await create_action(
            client, partner["id"], method="GET", path="/messages", mode="proxy", read_only=True
        )
        body = {
            "name": "flespi-messages",
            "action_id": action["id"],
            "every": "1m",
            "dedupe": {"by": "timestamp"},
            "target": {"type": "positions", "mapping": "flespi"},
        }
        schedule = await post(client, "/api/v1/schedules", body)
        assert await runner(client).run_until_idle() == {"ok": 1}
    finally:
        await server.close()
    (run,) = await runs(client, schedule["id"])
    assert (run["written"], run["rejected"], run["skipped"]) == (2, 1, 1), run
    assert [e["index"] for e in run["item_errors"]] == [4], run["item_errors"]
    (kept,) = (await get(client, f"/api/v1/rejected?trigger_id={schedule['id']}"))["items"]
    assert kept["index"] == 4

    trigger = await create_position_trigger(client, mapping="flespi")
    status, answer = await hook(client, trigger, page)
    assert status == 207, answer
    assert [r["index"] for r in answer["results"] if r["status"] == 422] == [4]


async def test_a_dry_runs_results_name_the_partners_index_past_left_out_items(
    client: Client,
) -> None:
    await upload_shipped(client, "flespi")
    response = await client.post(
        "/api/v1/mappings/test",
        json={"name": "flespi", "payload": _stream()},
        headers=auth(),
    )
    answer = await response.json()
    assert response.status == 200, answer
    assert [r["index"] for r in answer["results"]] == [0, 2, 3]
    refused = [bool(r.get("errors") or r.get("fix", {}).get("errors")) for r in answer["results"]]
    assert refused == [False, False, True], answer["results"]
