"""Batch items are written in order (docs/triggers.md "Batches": "items are written in
order"): a later item's lookup must see what the earlier items of the same batch wrote, as
it does when the same items are sent one call after another."""

from __future__ import annotations

from gateway.triggers.ingest import _Pending
from tests.support import auth
from tests.triggers_support import Client, create_trigger, upload_mapping

PLATE_OR_TRACKER = """
name: plate-or-tracker
direction: inbound
entity_type: vehicle
key: {first_of: [plate, attributes.tracker_id]}
fields:
  plate: {from: placa, transforms: [plate]}
  attributes.tracker_id: {from: deviceId, transforms: [string]}
  odometer_km: km
"""


async def _trigger(client: Client) -> dict:
    await upload_mapping(client, PLATE_OR_TRACKER)
    return await create_trigger(client, mapping="plate-or-tracker")


async def _post(client: Client, trigger: dict, body: object) -> tuple[int, dict]:
    response = await client.post(
        f"/hooks/{trigger['id']}",
        json=body,
        headers={"Authorization": f"Bearer {trigger['token']}"},
    )
    return response.status, await response.json()


async def _vehicle(client: Client, plate: str) -> dict:
    response = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def test_a_later_item_finds_the_vehicle_an_earlier_item_of_the_batch_created(
    client: Client,
) -> None:
    trigger = await _trigger(client)
    status, answer = await _post(
        client,
        trigger,
        [{"placa": "BAT1A11", "deviceId": "t9", "km": 10}, {"deviceId": "t9", "km": 20}],
    )
    assert status == 200, answer  # sent one call after another, both are written
    assert (await _vehicle(client, "BAT1A11"))["odometer_km"] == 20


async def test_a_later_item_is_not_written_to_the_vehicle_that_held_its_tracker_before(
    client: Client,
) -> None:
    for body in ({"plate": "SWA1A11", "attributes": {"tracker_id": "t20"}}, {"plate": "SWB1B11"}):
        made = await client.post("/api/v1/entities/vehicle", json=body, headers=auth())
        assert made.status == 201, await made.text()
    trigger = await _trigger(client)
    # the tracker moves from A to B, then reports B's odometer
    status, answer = await _post(
        client,
        trigger,
        [
            {"placa": "SWA1A11", "deviceId": "t21"},
            {"placa": "SWB1B11", "deviceId": "t20"},
            {"deviceId": "t20", "km": 99},
        ],
    )
    assert status == 200, answer
    a, b = await _vehicle(client, "SWA1A11"), await _vehicle(client, "SWB1B11")
    assert a["attributes"]["tracker_id"] == "t21", (answer, a)  # observed: t20 written back
    assert "odometer_km" not in a, (answer, a)  # observed: 99, B's reading on A
    assert b.get("odometer_km") == 99, (answer, b)


MUST_EXIST = """
name: must-exist
direction: inbound
entity_type: vehicle
key: {first_of: [plate, attributes.tracker_id]}
create: false
fields:
  plate: {from: placa, transforms: [plate]}
  attributes.tracker_id: {from: deviceId, transforms: [string]}
  odometer_km: km
"""


async def test_a_must_exist_batch_item_is_found_by_the_tracker_an_earlier_item_moved(
    client: Client,
) -> None:
    for body in ({"plate": "MEA1A11", "attributes": {"tracker_id": "t30"}}, {"plate": "MEB1B11"}):
        made = await client.post("/api/v1/entities/vehicle", json=body, headers=auth())
        assert made.status == 201, await made.text()
    await upload_mapping(client, MUST_EXIST)
    trigger = await create_trigger(client, mapping="must-exist", name="must-exist")
    status, answer = await _post(
        client,
        trigger,
        [
            {"placa": "MEA1A11", "deviceId": "t31"},
            {"placa": "MEB1B11", "deviceId": "t30"},
            {"placa": "ZZZ9Z99", "deviceId": "t30", "km": 7},
        ],
    )
    assert status == 200, answer  # the unknown plate gives way to the tracker, now on B
    a, b = await _vehicle(client, "MEA1A11"), await _vehicle(client, "MEB1B11")
    assert (a["attributes"]["tracker_id"], b["attributes"]["tracker_id"]) == ("t31", "t30")
    assert "odometer_km" not in a and b["odometer_km"] == 7, (a, b)


def test_a_lookup_waits_only_for_earlier_writes_of_what_it_reads() -> None:
    pending = _Pending()
    tracker = frozenset({("vehicle", "attributes.tracker_id")})
    pending.add(frozenset({("vehicle", "odometer_km"), ("vehicle", "attributes.ignition")}))
    pending.add(frozenset({("driver", "attributes.tracker_id")}))
    assert not pending.changes(tracker)  # readings of other fields: looked up at once
    pending.add(frozenset({("vehicle", "attributes.tracker_id")}))
    assert pending.changes(tracker)
    whole = _Pending()
    whole.add(frozenset({("vehicle", "attributes")}))  # a value that is no object
    assert whole.changes(tracker)
    below = _Pending()
    below.add(frozenset({("vehicle", "current_driver.cpf")}))
    assert below.changes(frozenset({("vehicle", "current_driver")}))


BY_DRIVER = """
name: by-driver
direction: inbound
entity_type: vehicle
key: {first_of: [plate, current_driver.cpf]}
fields:
  plate: {from: placa, transforms: [plate]}
  current_driver.cpf: cpf
  current_driver.name: nome
  odometer_km: km
"""


async def test_a_lookup_waits_for_an_earlier_item_replacing_the_whole_value_it_reads(
    client: Client,
) -> None:
    cpf = "52998224725"
    made = await client.post(
        "/api/v1/entities/vehicle",
        json={"plate": "WHO1A11", "current_driver": {"cpf": cpf, "name": "Bruno Lima"}},
        headers=auth(),
    )
    assert made.status == 201, await made.text()
    await upload_mapping(client, BY_DRIVER)
    trigger = await create_trigger(client, mapping="by-driver")
    # item 0 replaces the whole driver (x-whole: another person, Bruno's CPF goes; a name
    # without a CPF or id is no driver written since 2026-12-07): one by one, item 1's CPF
    # (Bruno's) finds nothing
    ana = {"placa": "WHO1A11", "nome": "Ana Souza", "cpf": "111.444.777-35"}
    status, answer = await _post(client, trigger, [ana, {"cpf": cpf, "km": 5}])
    vehicle = await _vehicle(client, "WHO1A11")
    assert status == 207 and answer["results"][1]["status"] == 422, (answer, vehicle)
    assert "odometer_km" not in vehicle, (answer, vehicle)
    assert vehicle["current_driver"] == {"cpf": "11144477735", "name": "Ana Souza"}, vehicle


KEPT_ORDER = """
name: kept-order
direction: inbound
entity_type: vehicle
key: {first_of: [plate, attributes.tracker_id]}
fields:
  plate: {from: placa, transforms: [plate]}
  attributes.tracker_id: {from: deviceId, transforms: [string]}
  attributes.note: note
  model: {from: m, required: true}
"""


async def test_a_batchs_refused_items_replay_in_the_batchs_order(client: Client) -> None:
    await upload_mapping(client, KEPT_ORDER)
    trigger = await create_trigger(client, mapping="kept-order")
    items = [
        {"deviceId": "t77", "note": "first", "m": "X"},  # refused by its lookup: not_found
        {"deviceId": "t77", "note": "second"},  # refused by the mapping: no `m`
    ]
    status, answer = await _post(client, trigger, items)
    assert status == 207, answer
    assert [r["status"] for r in answer["results"]] == [422, 422], answer
    made = await client.post(
        "/api/v1/entities/vehicle",
        json={"plate": "KOR1A11", "attributes": {"tracker_id": "t77"}},
        headers=auth(),
    )
    assert made.status == 201, await made.text()
    await upload_mapping(client, KEPT_ORDER.replace("{from: m, required: true}", "m"))
    replay = await client.post(
        "/api/v1/rejected/replay", json={"trigger_id": trigger["id"]}, headers=auth()
    )
    assert replay.status == 200 and (await replay.json())["replayed"] == 2, await replay.text()
    # "replay all" goes oldest first: the batch's item 1 is the later one, as sent one by one
    assert (await _vehicle(client, "KOR1A11"))["attributes"]["note"] == "second"
