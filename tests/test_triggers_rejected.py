"""Rejected payloads are kept per trigger (bounded) and replay after the admin fixes things."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine

from gateway import clock
from gateway.server_clock import ServerClock
from gateway.store import rejected as rejected_store
from gateway.triggers import rejected
from gateway.web.state import services_key
from tests.support import HeldFirstRead, auth, set_offset
from tests.triggers_support import Client, create_trigger, entities, hook, upload_mapping

BROKEN = """
name: erp-vehicle
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa_veiculo, required: true}
  make: marca
"""
FIXED = BROKEN.replace("placa_veiculo", "placa")


async def _rejected(client: Client, query: str = "", tenant: str = "acme") -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/rejected{query}", headers=auth(tenant))
    assert response.status == 200, await response.text()
    return list((await response.json())["items"])


async def test_a_mapping_failure_is_kept_and_replays_after_the_mapping_is_fixed(
    client: Client,
) -> None:
    await upload_mapping(client, BROKEN)
    trigger = await create_trigger(client, mapping="erp-vehicle")
    status, problem = await hook(client, trigger, {"placa": "ABC1D23", "marca": "Fiat"})
    assert status == 422
    [kept] = await _rejected(client, f"?trigger_id={trigger['id']}")
    assert kept["reason"] == "mapping" and kept["status"] == "pending"
    assert kept["errors"] == problem["errors"]
    detail = await (await client.get(f"/api/v1/rejected/{kept['id']}", headers=auth())).json()
    assert detail["payload"] == {"placa": "ABC1D23", "marca": "Fiat"}
    failed = await client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=auth())
    assert failed.status == 422  # still broken: the record stays pending
    await upload_mapping(client, FIXED)
    replayed = await client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=auth())
    assert replayed.status == 200, await replayed.text()
    result = (await replayed.json())["result"]
    assert result["status"] == 201 and result["key"] == "ABC1D23"
    [vehicle] = await entities(client)
    assert vehicle["make"] == "Fiat"
    [after] = await _rejected(client)
    assert after["status"] == "replayed" and after["attempts"] == 2
    again = await client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=auth())
    assert again.status == 409
    assert len(await _rejected(client, "?status=pending")) == 0


async def test_replay_all_replays_a_triggers_pending_payloads_oldest_first(
    client: Client,
) -> None:
    await upload_mapping(client, BROKEN)
    trigger = await create_trigger(client, mapping="erp-vehicle")
    other = await create_trigger(client, name="other", mapping="erp-vehicle")
    for make in ("Fiat", "VW", "Ford"):
        await hook(client, trigger, {"placa": "ABC1D23", "marca": make})
    await hook(client, other, {"placa": "BRA2E19"})
    await upload_mapping(client, FIXED)
    response = await client.post(
        "/api/v1/rejected/replay", json={"trigger_id": trigger["id"]}, headers=auth()
    )
    summary = await response.json()
    assert (summary["replayed"], summary["failed"]) == (3, 0)
    [vehicle] = await entities(client)
    assert vehicle["make"] == "Ford" and vehicle["version"] == 3
    assert len(await _rejected(client, f"?trigger_id={other['id']}&status=pending")) == 1


async def test_failing_batch_items_are_kept_one_by_one_with_their_index(client: Client) -> None:
    trigger = await create_trigger(client)
    await hook(client, trigger, [{"plate": "ABC1D23"}, {"plate": "AB"}, {"make": "VW"}])
    kept = await _rejected(client)
    assert sorted(k["index"] for k in kept) == [1, 2]
    assert {k["scope"] for k in kept} == {"item"} and {k["reason"] for k in kept} == {"entity"}


async def test_each_trigger_keeps_only_its_newest_rejections(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rejected_store, "MAX_PER_TRIGGER", 3)
    trigger = await create_trigger(client)
    for n in range(5):
        await hook(client, trigger, {"make": f"m{n}"})
    kept = await _rejected(client)
    payloads = [
        (await (await client.get(f"/api/v1/rejected/{k['id']}", headers=auth())).json())["payload"][
            "make"
        ]
        for k in kept
    ]
    assert payloads == ["m4", "m3", "m2"]


async def test_a_payload_too_large_to_keep_whole_is_shown_truncated_and_not_replayed(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rejected, "MAX_KEPT_BYTES", 20)
    trigger = await create_trigger(client)
    await hook(client, trigger, {"make": "a rather long make name"})
    [kept] = await _rejected(client)
    detail = await (await client.get(f"/api/v1/rejected/{kept['id']}", headers=auth())).json()
    assert detail["replayable"] is False and detail["payload"] is None
    assert len(detail["payload_excerpt"]) == 20
    response = await client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=auth())
    assert response.status == 409


async def test_rejected_payloads_belong_to_their_tenant_and_viewers_cannot_replay(
    client: Client,
) -> None:
    trigger = await create_trigger(client)
    await hook(client, trigger, {"make": "VW"})
    [kept] = await _rejected(client)
    assert await _rejected(client, tenant="globex") == []
    missing = await client.get(f"/api/v1/rejected/{kept['id']}", headers=auth("globex"))
    assert missing.status == 404
    viewer = await client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=auth(role="viewer"))
    assert viewer.status == 403


async def test_two_concurrent_replays_of_one_payload_write_once(client: Client) -> None:
    import asyncio

    trigger = await create_trigger(client, input_schema={"type": "object", "required": ["colour"]})
    status, _ = await hook(client, trigger, {"plate": "ABC1D23"})
    assert status == 422
    [record] = (await (await client.get("/api/v1/rejected", headers=auth())).json())["items"]
    fixed = await client.patch(
        f"/api/v1/triggers/{trigger['id']}", headers=auth(), json={"input_schema": None}
    )
    assert fixed.status == 200
    url = f"/api/v1/rejected/{record['id']}/replay"
    first, second = await asyncio.gather(
        client.post(url, headers=auth()), client.post(url, headers=auth())
    )
    assert sorted([first.status, second.status]) == [200, 409]
    [vehicle] = await entities(client)
    assert vehicle["version"] == 1


async def test_a_kept_rejection_echoes_a_huge_value_cut_short(client: Client) -> None:
    await upload_mapping(client, BROKEN)
    trigger = await create_trigger(client, mapping="erp-vehicle")
    status, problem = await hook(client, trigger, {"placa_veiculo": "k" * 20_000, "marca": "Fiat"})
    assert status == 422
    [kept] = await _rejected(client, f"?trigger_id={trigger['id']}")
    assert kept["errors"] == problem["errors"]
    assert kept["detail"] == problem["detail"] and len(kept["detail"]) <= 1_025


async def test_replay_all_in_rounds_reports_each_record_and_leaves_a_busy_one_alone(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replaying all claims and marks a round of records at once: a record another replay
    holds is reported as such and left to it, one still refused stays pending with its
    attempt counted, the others are replayed, in every round."""
    from datetime import UTC, datetime

    from gateway.triggers import replay
    from gateway.web.state import services_key

    monkeypatch.setattr(replay, "REPLAY_ROUND", 2)
    trigger = await create_trigger(client, input_schema={"type": "object", "required": ["colour"]})
    bodies = [{"plate": "ABC1D23"}, {"plate": "BRA2E19"}, {"plate": "AB"}, {"plate": "XYZ9K87"}]
    for body in bodies:
        assert (await hook(client, trigger, body))[0] == 422
    kept = sorted(await _rejected(client), key=lambda k: k["id"])
    store = client.app[services_key].store
    assert await store.rejected.claim_replay("acme", kept[1]["id"], at=datetime.now(UTC))
    fixed = await client.patch(
        f"/api/v1/triggers/{trigger['id']}", headers=auth(), json={"input_schema": None}
    )
    assert fixed.status == 200
    response = await client.post("/api/v1/rejected/replay", json={}, headers=auth())
    summary = await response.json()
    assert (summary["replayed"], summary["failed"]) == (2, 1), summary
    statuses = [r["status"] for r in summary["results"]]
    assert [r["id"] for r in summary["results"]] == [kept[i]["id"] for i in (0, 2, 3)]
    assert statuses == ["replayed", "failed", "replayed"]
    assert summary["results"][1]["problem"]["status"] == 422  # "AB" is no plate
    after = {k["id"]: k for k in await _rejected(client)}
    assert [after[k["id"]]["status"] for k in kept] == [
        "replayed",
        "replaying",
        "pending",
        "replayed",
    ]
    assert [after[k["id"]]["attempts"] for k in kept] == [1, 0, 1, 1]
    assert sorted(v["plate"] for v in await entities(client)) == ["ABC1D23", "XYZ9K87"]


async def test_a_record_the_database_refuses_is_logged_and_the_partner_still_gets_its_422(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The rejected store's insert failing for one record (here a validator on `rejected`; in
    life a record over the database's limits) loses the record, logged; it does not turn the
    partner's 422 into a 500."""
    from gateway.web.state import services_key

    db = client.app[services_key].store.db
    await db.command("collMod", "rejected", validator={"reason": {"$ne": "schema"}})
    trigger = await create_trigger(client, input_schema={"type": "object", "required": ["colour"]})
    with caplog.at_level("WARNING", logger=rejected.__name__):
        status, problem = await hook(client, trigger, {"plate": "ABC1D23"})
    assert status == 422, problem
    assert "colour" in str(problem["errors"])  # the schema problem, not the store's
    assert any("rejected payloads not kept" in r.getMessage() for r in caplog.records)
    assert await _rejected(client) == []


async def test_a_payload_refused_again_while_pending_supersedes_its_copy(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partner retrying a 422 every minute (or a feed polled without a cursor) must not
    push every other record past the bound: the repeat takes the pending record's place as
    the newest, counting the refusals and keeping the latest problems."""
    monkeypatch.setattr(rejected_store, "MAX_PER_TRIGGER", 3)
    await upload_mapping(client, BROKEN)
    trigger = await create_trigger(client, mapping="erp-vehicle")
    await hook(client, trigger, {"placa": "AAA1A11"})
    for _ in range(5):
        status, _problem = await hook(client, trigger, {"placa": "ABC1D23", "marca": "Fiat"})
        assert status == 422  # each one answered as before
    await hook(client, trigger, [{"placa": "BRA2E19"}, {"placa": "BRA2E19"}])  # twice in one
    kept = await _rejected(client)
    assert [k["times_received"] for k in kept] == [2, 5, 1], kept
    fiat = kept[1]
    assert fiat["received_at"] > fiat["first_received_at"]
    # Replayed, it holds no place for repeats: the same payload refused after that (the fix
    # undone) is a record of its own.
    await upload_mapping(client, FIXED)
    replayed = await client.post(f"/api/v1/rejected/{fiat['id']}/replay", headers=auth())
    assert replayed.status == 200, await replayed.text()
    await upload_mapping(client, BROKEN)
    await hook(client, trigger, {"placa": "ABC1D23", "marca": "Fiat"})
    again = await _rejected(client)  # the oldest (AAA1A11) past the bound of 3 now
    assert [(k["status"], k["times_received"]) for k in again] == [
        ("pending", 1),
        ("pending", 2),
        ("replayed", 5),
    ]


async def test_replay_all_after_repeats_writes_what_was_sent_last(client: Client) -> None:
    """Fiat, VW, then Fiat again: the partner's last word is Fiat, and replaying every pending
    one (oldest first) must end there, as replaying three records would."""
    await upload_mapping(client, BROKEN)
    trigger = await create_trigger(client, mapping="erp-vehicle")
    for make in ("Fiat", "VW", "Fiat"):
        await hook(client, trigger, {"placa": "ABC1D23", "marca": make})
    kept = await _rejected(client)
    assert [k["times_received"] for k in kept] == [2, 1]
    await upload_mapping(client, FIXED)
    response = await client.post("/api/v1/rejected/replay", json={}, headers=auth())
    assert (await response.json())["replayed"] == 2
    [vehicle] = await entities(client)
    assert vehicle["make"] == "Fiat"


async def test_a_payload_whose_mapping_reads_when_it_came_is_kept_each_time(
    client: Client,
) -> None:
    """The same body at another time is another write when the mapping reads the receive
    time (a fix without its own time): each refusal stays a record."""
    await upload_mapping(client, BROKEN + "  attributes.seen_at: {received: time}\n")
    trigger = await create_trigger(client, mapping="erp-vehicle")
    for _ in range(3):
        await hook(client, trigger, {"placa": "ABC1D23"})
    kept = await _rejected(client)
    assert [k["times_received"] for k in kept] == [1, 1, 1]


async def test_concurrent_repeats_of_one_payload_leave_one_record_once_the_next_comes(
    client: Client,
) -> None:
    import asyncio

    trigger = await create_trigger(client)
    answers = await asyncio.gather(*(hook(client, trigger, {"make": "VW"}) for _ in range(8)))
    assert {status for status, _ in answers} == {422}
    kept = await _rejected(client)  # each repeat supersedes what it finds
    assert 1 <= len(kept) <= 2, kept  # (two at the same moment may both stay)
    # Each counts at most the refusals there were: two that stayed may each count a copy
    # both found (so their sum is no bound), but no record counts one that never came.
    assert all(1 <= k["times_received"] <= 8 for k in kept), kept
    await hook(client, trigger, {"make": "VW"})  # the next one finds them all
    [last] = await _rejected(client)
    assert 2 <= last["times_received"] <= 9


async def test_a_repeat_keeps_the_latest_problems(client: Client) -> None:
    trigger = await create_trigger(client, input_schema={"type": "object", "required": ["colour"]})
    await hook(client, trigger, {"make": "VW"})
    [first] = await _rejected(client)
    assert first["reason"] == "schema"
    patched = await client.patch(
        f"/api/v1/triggers/{trigger['id']}", headers=auth(), json={"input_schema": None}
    )
    assert patched.status == 200
    await hook(client, trigger, {"make": "VW"})  # no plate: now the entity's problem
    [kept] = await _rejected(client)
    assert (kept["times_received"], kept["reason"]) == (2, "entity")
    assert kept["first_received_at"] == first["received_at"]


async def test_a_copy_whose_replay_fails_keeps_its_count_in_the_copy_made_meanwhile(
    client: Client,
) -> None:
    """Refused three times, then refused again while a replay holds the record: the new copy
    counts on from the one being replayed, so when that replay fails and the next refusal
    supersedes both, none of the refusals is lost from the count."""
    from datetime import UTC, datetime

    from gateway.web.state import services_key

    trigger = await create_trigger(client)
    for _ in range(3):
        await hook(client, trigger, {"make": "VW"})
    [held] = await _rejected(client)
    store = client.app[services_key].store.rejected
    assert await store.claim_replay("acme", held["id"], at=datetime.now(UTC))
    await hook(client, trigger, {"make": "VW"})  # during the replay
    await store.release_replay("acme", held["id"])  # the replay failed
    await hook(client, trigger, {"make": "VW"})
    [kept] = await _rejected(client)
    assert kept["times_received"] == 5
    assert kept["first_received_at"] == held["first_received_at"]


async def test_a_replay_under_way_is_not_taken_over_by_a_process_whose_host_clock_is_ahead(
    client: Client,
) -> None:
    """A replay holds its record for `REPLAY_CLAIM_SECONDS` (then it is taken for dead). A
    process on a host 6 minutes ahead of the database server's clock took a claim made a
    moment before by a process on the right clock for a dead one, and replayed the record a
    second time. The database runs on the right clock here; this process's wall clock is set
    ahead for the second replay."""
    services = client.app[services_key]
    await upload_mapping(client, BROKEN)
    trigger = await create_trigger(client, mapping="erp-vehicle")
    await hook(client, trigger, {"placa": "ABC1D23", "marca": "Fiat"})
    [kept] = await _rejected(client)
    await upload_mapping(client, FIXED)
    assert await services.store.rejected.claim_replay("acme", kept["id"], at=clock.utcnow())
    server_clock = ServerClock(services.store, services.metrics)
    try:
        with time_machine.travel(datetime.now(UTC) + timedelta(minutes=6)):
            await server_clock.measure()
            second = await client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=auth())
    finally:
        set_offset(timedelta())
    assert second.status == 409, await second.text()
    assert await entities(client) == []


async def test_a_body_of_thousands_of_wrong_items_lists_the_first_hundred_and_is_kept(
    client: Client,
) -> None:
    """Every wrong array item is a problem: 30,000 of them were a 3 MB answer (250,000 a
    25 MB one, and a record too large for the database to keep). The answer and the kept
    record list the first 100 and count the rest."""
    trigger = await create_trigger(client)
    status, problem = await hook(client, trigger, {"plate": "ABC1D23", "groups": [0] * 30_000})
    assert status == 422
    found = len(problem["errors"]) + problem["errors_omitted"]
    assert len(problem["errors"]) == 100 and found >= 30_000  # an item each, and the list's
    assert {
        "pointer": "/groups/7",
        "message": '/groups/7: 0 is not of type "string"',
        "keyword": "type",
    } in problem["errors"]
    assert problem["detail"].endswith(f"(and {found - 1} more)")
    [kept] = await _rejected(client, f"?trigger_id={trigger['id']}")
    assert kept["errors"] == problem["errors"]
    assert kept["errors_omitted"] == problem["errors_omitted"]
    one = await (await client.get(f"/api/v1/rejected/{kept['id']}", headers=auth())).json()
    assert one["payload"]["groups"] == [0] * 30_000  # the payload itself, whole, replayable


async def test_a_write_of_several_entities_counts_the_problems_it_leaves_out(
    client: Client,
) -> None:
    """A mapping with `also` writes its entities together: past 100 problems of one of them,
    the answer and the kept record count the others, as the entity written alone does."""
    await upload_mapping(
        client,
        """
name: with-driver
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: plate
  groups: groups
also:
  - entity_type: driver
    key: [cpf]
    fields: {name: driver.name, cpf: driver.cpf}
""",
    )
    trigger = await create_trigger(client, mapping="with-driver")
    body = {
        "plate": "ABC1D23",
        "groups": list(range(150)),  # 150 numbers where text goes
        "driver": {"name": "Ana Souza", "cpf": "52998224725"},
    }
    status, problem = await hook(client, trigger, body)
    assert status == 422
    assert len(problem["errors"]) == 100 and problem["errors_omitted"] == 51
    [kept] = await _rejected(client, f"?trigger_id={trigger['id']}")
    assert kept["errors_omitted"] == 51


async def test_a_batchs_answer_lists_a_hundred_problems_over_all_its_items(client: Client) -> None:
    trigger = await create_trigger(client)
    items = [{"plate": "ABC1D23", "groups": list(range(n, n + 49))} for n in range(4)]
    status, answer = await hook(client, trigger, items)
    assert status == 207
    problems = [r["problem"] for r in answer["results"]]
    assert [len(p["errors"]) for p in problems] == [49, 49, 2, 1]
    assert [p.get("errors_omitted", 0) for p in problems] == [0, 0, 47, 48]
    kept = await _rejected(client, f"?trigger_id={trigger['id']}")
    assert [len(k["errors"]) for k in kept] == [49] * 4  # each record its own


@pytest.mark.parametrize("fast", [0, 120])
async def test_the_newest_rejection_is_kept_at_the_bound_after_a_step_back_of_the_time(
    client: Client,
    gateway_time: Callable[[datetime], None],
    monkeypatch: pytest.MonkeyPatch,
    fast: int,
) -> None:
    """Ids carry the gateway's time and the trim keeps the highest: after the clock that ran
    `fast` s fast was set right, a payload refused at the bound got an id below those kept
    and was trimmed at once (the older ones kept, the one to fix the mapping for lost)."""
    monkeypatch.setattr(rejected_store, "MAX_PER_TRIGGER", 5)
    real = datetime.now(UTC).replace(microsecond=0)
    gateway_time(real + timedelta(seconds=fast))
    trigger = await create_trigger(client)
    for n in range(5):
        await hook(client, trigger, {"make": f"m{n}"})
    gateway_time(real + timedelta(seconds=30))  # set right (fast: a step back)
    await hook(client, trigger, {"make": "newest"})
    kept = await _rejected(client)
    newest = await (await client.get(f"/api/v1/rejected/{kept[0]['id']}", headers=auth())).json()
    assert len(kept) == 5
    assert newest["payload"]["make"] == "newest"


async def test_a_process_started_after_a_step_back_keeps_its_rejections_above_the_others(
    client: Client, gateway_time: Callable[[datetime], None]
) -> None:
    """The floor of a trigger this process never kept a record of is read from the store:
    the newest id ahead of its time (another process's on the fast clock)."""
    real = datetime.now(UTC).replace(microsecond=0)
    gateway_time(real + timedelta(minutes=2))
    trigger = await create_trigger(client)
    await hook(client, trigger, {"make": "fast"})
    gateway_time(real)
    started = rejected_store.RejectedStore(client.app[services_key].store.db["rejected"])
    record = {"trigger_id": trigger["id"], "detail": "later", "status": "pending"}
    await started.add_many("acme", trigger["id"], [record])
    newest = max([doc["_id"] async for doc in client.app[services_key].store.db["rejected"].find()])
    assert (await started.get("acme", str(newest)) or {}).get("detail") == "later"


async def test_a_concurrent_first_rejection_of_a_trigger_never_lowers_its_floor(
    client: Client, gateway_time: Callable[[datetime], None]
) -> None:
    """Two refusals of one trigger, both its first in the process, after a step back: the
    one whose read of the newest id lands last noted that id over the floor the other had
    raised since, and its record got an id below the other's newer one: trimmed first
    (read50 L3)."""
    real = datetime.now(UTC).replace(microsecond=0)
    gateway_time(real + timedelta(minutes=2))  # another process, two minutes fast
    trigger = await create_trigger(client)
    await hook(client, trigger, {"make": "fast"})
    gateway_time(real)
    collection = client.app[services_key].store.db["rejected"]
    held = HeldFirstRead(collection)
    started = rejected_store.RejectedStore(held)

    def record(detail: str) -> dict[str, Any]:
        return {"trigger_id": trigger["id"], "detail": detail, "status": "pending"}

    slow = asyncio.create_task(started.add_many("acme", trigger["id"], [record("late")]))
    await held.read.wait()  # its read is made: the fast record's id, answered late
    await started.add_many("acme", trigger["id"], [record("first")])
    await started.add_many("acme", trigger["id"], [record("second")])
    held.release.set()
    await slow
    order = [doc["detail"] async for doc in collection.find().sort("_id", 1)]
    assert order[-3:] == ["first", "second", "late"], order
