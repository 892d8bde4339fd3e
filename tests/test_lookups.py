"""Lookups by a mapping's key fields (a tracker id, a partner's vehicle id) compare text and
numbers by value: "123" finds 123 and 123 finds "123", through the index or on the data.
Partner ids (attributes named `*_id`) are looked up through the index."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import Client, create_trigger, hook, upload_mapping


def _by(field: str) -> str:
    return (
        f"name: by-{field.replace('.', '-')}\ndirection: inbound\nentity_type: vehicle\n"
        f"key: [{field}]\nfields:\n  {field}: device\n  odometer_km: km\n"
    )


async def _vehicle(client: Client, attributes: dict[str, Any], plate: str = "ABC1D23") -> None:
    response = await client.post(
        "/api/v1/entities/vehicle",
        headers=auth(),
        json={"plate": plate, "attributes": attributes},
    )
    assert response.status == 201, await response.text()


async def _odometer(client: Client, plate: str = "ABC1D23") -> Any:
    vehicle = await (await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())).json()
    return vehicle.get("odometer_km")


@pytest.mark.parametrize(
    ("field", "stored", "sent"),
    [
        ("attributes.tracker_id", 353861053849681, "353861053849681"),  # through the index
        ("attributes.tracker_id", "4711", 4711),
        ("attributes.tracker_id", 4711.0, "4711"),
        ("attributes.tracker_id", 12.5, "12.5"),
        ("attributes.erp_id", "987", 987),  # every partner id: through the index
        ("attributes.motive_id", 987, "987"),
        ("attributes.fleetio_vehicle_id", 987, 987.0),
        ("attributes.fleetio_vehicle_id", -2.25, "-2.25"),
        ("attributes.fleet_number", "987", 987),  # not an id by its name: matched on the data
        ("attributes.fleet_number", 987, "987"),
    ],
)
async def test_text_and_numbers_find_each_other_by_value(
    client: Client, field: str, stored: Any, sent: Any
) -> None:
    _, attribute = field.split(".")
    await _vehicle(client, {attribute: stored})
    await upload_mapping(client, _by(field))
    trigger = await create_trigger(client, mapping=f"by-{field.replace('.', '-')}")
    status, answer = await hook(client, trigger, {"device": sent, "km": 10})
    assert status == 200, answer
    assert answer["key"] == "ABC1D23" and "odometer_km" in answer["changed"]
    assert await _odometer(client) == 10


@pytest.mark.parametrize(
    ("field", "stored", "sent"),
    [
        ("attributes.tracker_id", 123, "0123"),
        ("attributes.tracker_id", 123, "123.0"),
        ("attributes.tracker_id", "123", 1230),
        ("attributes.fleetio_vehicle_id", 123, "0123"),
        ("attributes.fleetio_vehicle_id", 1.5, "1.50"),
        ("attributes.fleetio_vehicle_id", "true", True),
        ("attributes.fleet_number", 123, "0123"),
    ],
)
async def test_other_texts_do_not_match(client: Client, field: str, stored: Any, sent: Any) -> None:
    _, attribute = field.split(".")
    await _vehicle(client, {attribute: stored})
    await upload_mapping(client, _by(field))
    trigger = await create_trigger(client, mapping=f"by-{field.replace('.', '-')}")
    status, problem = await hook(client, trigger, {"device": sent, "km": 10})
    assert status == 422
    assert problem["errors"][0]["keyword"] in ("not_found", "type")
    assert await _odometer(client) is None


async def test_a_tracker_id_sent_as_a_whole_float_is_found_through_the_string_transform(
    client: Client,
) -> None:
    """The docs' plate-or-tracker pattern (`[string]` on the id): 4711.0 (pandas, a Java
    `Double`) is the text "4711", not "4711.0" which no vehicle has."""
    await _vehicle(client, {"tracker_id": "4711"})
    mapping = (
        "name: plate-or-tracker\ndirection: inbound\nentity_type: vehicle\n"
        "key: {first_of: [plate, attributes.tracker_id]}\nfields:\n"
        "  plate: {from: placa, transforms: [plate]}\n"
        "  attributes.tracker_id: {from: deviceId, transforms: [string]}\n  odometer_km: km\n"
    )
    await upload_mapping(client, mapping)
    trigger = await create_trigger(client, mapping="plate-or-tracker")
    status, answer = await hook(
        client, trigger, {"deviceId": 4711.0, "placa": "Caminhao 12", "km": 10}
    )
    assert status == 200, answer
    assert answer["key"] == "ABC1D23"
    assert await _odometer(client) == 10


@pytest.mark.parametrize(
    ("sent", "kind"),
    [({"$gt": ""}, "an object"), (["4711"], "an array"), (True, "a boolean")],
)
async def test_a_lookup_value_that_is_not_text_or_a_number_is_a_clear_422(
    client: Client, sent: Any, kind: str
) -> None:
    await _vehicle(client, {"tracker_id": "4711"})
    await upload_mapping(client, _by("attributes.tracker_id"))
    trigger = await create_trigger(client, mapping="by-attributes-tracker_id")
    status, problem = await hook(client, trigger, {"device": sent, "km": 10})
    assert status == 422
    (error,) = problem["errors"]
    assert error["message"] == (
        f"attributes.tracker_id: a lookup value is text or a number, not {kind}"
    )
    assert error["target"] == "attributes.tracker_id"
    assert await _odometer(client) is None


async def test_partner_ids_are_found_through_the_index_and_backfilled_for_older_entities(
    client: Client,
) -> None:
    """An entity written before partner ids were indexed (its `fk` keys as they were then) is
    not found by the index until the start-up backfill gives it its keys."""
    await _vehicle(client, {"erp_id": 123, "fleet_number": "7"})
    await upload_mapping(client, _by("attributes.erp_id"))
    trigger = await create_trigger(client, mapping="by-attributes-erp_id")
    store = client.app[services_key].store
    entities = store.db["entities"]
    [stored] = await entities.find({"nk": "ABC1D23"}).to_list(None)
    assert "attributes.erp_id=123" in stored["fk"]
    assert not any(k.startswith("attributes.fleet_number") for k in stored["fk"])
    # As an older gateway wrote it: no partner-id keys.
    await entities.update_one({"_id": stored["_id"]}, {"$set": {"fk": ["plate=ABC1D23"]}})
    status, problem = await hook(client, trigger, {"device": "123", "km": 10})
    assert status == 422 and problem["errors"][0]["keyword"] == "not_found"  # the index's view

    await store.db["migrations"].delete_many({})  # a database from before the backfill
    await store.ensure_indexes()  # what every process runs at start

    status, answer = await hook(client, trigger, {"device": "123", "km": 10})
    assert status == 200, answer
    assert await _odometer(client) == 10
    await store.ensure_indexes()  # once per database: the marker stops a second pass
    assert await store.entities.backfill_derived() == 0


async def test_a_partner_id_past_the_twentieth_is_found_on_the_data(client: Client) -> None:
    """Twenty partner ids are indexed; an entity with more is marked, and a lookup by a
    partner id reads the marked entities too, matching it on their data: a tracker id added
    after an ERP's twenty ids is found (it was `not_found`), once (never as two entities),
    and an id no vehicle has is still `not_found`."""
    ids: dict[str, Any] = {f"erp{i:02d}_id": f"e{i}" for i in range(1, 21)}
    await _vehicle(client, {**ids, "tracker_id": 4711})
    await _vehicle(client, {**ids, "tracker_id": "4712"}, plate="ABC1D24")
    await upload_mapping(client, _by("attributes.tracker_id"))
    trigger = await create_trigger(client, mapping="by-attributes-tracker_id")
    status, answer = await hook(client, trigger, {"device": "4711", "km": 10})
    assert status == 200, answer
    assert await _odometer(client) == 10
    status, problem = await hook(client, trigger, {"device": "4713", "km": 10})
    assert status == 422 and problem["errors"][0]["keyword"] == "not_found"
    await upload_mapping(client, _by("attributes.erp05_id"))  # indexed, and on both
    trigger = await create_trigger(client, name="erp", mapping="by-attributes-erp05_id")
    status, problem = await hook(client, trigger, {"device": "e5", "km": 20})
    assert status == 422 and problem["errors"][0]["keyword"] == "ambiguous", problem


async def test_a_lookup_key_that_finds_no_one_or_several_points_at_its_source_in_the_payload(
    client: Client,
) -> None:
    """docs/mappings.md "Errors": `pointer` is where the source sits in the payload. A key
    finding no vehicle (or two), and a `create: false` mapping's unknown plate, were problems
    at `""` without a source: a batch of 500 records could not tell which member named the
    vehicle the fleet does not have."""
    mapping = _by("attributes.samsara_id").replace(": device", ": vehicle.id")
    await upload_mapping(client, mapping)
    trigger = await create_trigger(client, mapping="by-attributes-samsara_id")
    where = ("/vehicle/id", "attributes.samsara_id", "vehicle.id")
    status, problem = await hook(client, trigger, {"vehicle": {"id": "281474977075405"}, "km": 1})
    assert status == 422, problem
    [error] = problem["errors"]
    assert (error["pointer"], error["target"], error["source"]) == where, error
    assert error["keyword"] == "not_found"
    status, answer = await hook(client, trigger, [{"vehicle": {"id": "x1"}, "km": 1}])
    [error] = answer["results"][0]["problem"]["errors"]
    assert (error["pointer"], error["target"], error["source"]) == where, error
    await _vehicle(client, {"samsara_id": "s2"})
    await _vehicle(client, {"samsara_id": "s2"}, plate="ABC1D24")
    status, problem = await hook(client, trigger, {"vehicle": {"id": "s2"}, "km": 1})
    [error] = problem["errors"]
    assert (error["pointer"], error["keyword"]) == ("/vehicle/id", "ambiguous"), error

    must_exist = (
        "name: must-exist\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "create: false\nfields:\n  plate: {from: veiculo.placa, transforms: [plate]}\n"
    )
    await upload_mapping(client, must_exist)
    trigger = await create_trigger(client, name="must-exist", mapping="must-exist")
    status, problem = await hook(client, trigger, {"veiculo": {"placa": "ZZZ9Z99"}})
    assert status == 422, problem
    [error] = problem["errors"]
    assert (error["pointer"], error["target"], error["source"]) == (
        "/veiculo/placa",
        "plate",
        "veiculo.placa",
    ), error
    assert error["keyword"] == "not_found" and "does not create one" in error["message"]


async def test_a_vehicles_position_time_is_backfilled_at_start_for_the_folds_guard(
    client: Client,
) -> None:
    """A vehicle written before its `position_at` was kept (the device time of its
    `last_position`, which guards the fold's writes) gets it at start, from its data."""
    position = {"lat": -23.5, "lon": -46.6, "time": "2026-12-04T09:00:00-03:00"}
    response = await client.post(
        "/api/v1/entities/vehicle",
        headers=auth(),
        json={"plate": "ABC1D23", "last_position": position},
    )
    assert response.status == 201, await response.text()
    store = client.app[services_key].store
    entities = store.db["entities"]
    [stored] = await entities.find({"nk": "ABC1D23"}).to_list(None)
    noon = datetime(2026, 12, 4, 12, tzinfo=UTC)
    assert stored["position_at"] == noon
    await entities.update_one({"_id": stored["_id"]}, {"$unset": {"position_at": ""}})
    await store.db["migrations"].delete_many({})
    await store.ensure_indexes()
    [stored] = await entities.find({"nk": "ABC1D23"}).to_list(None)
    assert stored["position_at"] == noon


MUST_EXIST = """
name: erp-status
direction: inbound
entity_type: vehicle
key: [plate]
create: false
fields:
  plate: {from: placa, transforms: [plate]}
  status: estado
"""


async def _dry_run(client: Client, mapping: str, payload: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/mappings/test", json={"mapping": mapping, "payload": payload}, headers=auth()
    )
    assert response.status == 200, await response.text()
    [result] = (await response.json())["results"]
    return dict(result)


async def test_a_mapping_that_does_not_create_refuses_an_unknown_entity_and_replays_it_later(
    client: Client,
) -> None:
    """`create: false`: even the natural key only finds; an item naming no vehicle of ours is
    a 422 `not_found` with nothing written, kept, and written by a replay once the vehicle
    exists. The dry run says so beforehand."""
    await upload_mapping(client, MUST_EXIST)
    trigger = await create_trigger(client, mapping="erp-status")
    item = {"placa": "abc-1d23", "estado": "inactive"}
    dry = await _dry_run(client, MUST_EXIST, item)
    assert dry["entity"]["write"] == "not_found" and dry["events"] == [], dry
    assert "errors" not in dry["entity"], dry
    status, problem = await hook(client, trigger, item)
    assert status == 422 and problem["errors"][0]["keyword"] == "not_found", problem
    listed = await client.get("/api/v1/entities/vehicle", headers=auth())
    assert (await listed.json())["items"] == []
    [kept] = (await (await client.get("/api/v1/rejected", headers=auth())).json())["items"]
    await _vehicle(client, {})
    assert (await _dry_run(client, MUST_EXIST, item))["entity"]["write"] == "update"
    replayed = await client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=auth())
    assert replayed.status == 200, await replayed.text()
    vehicle = await (await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).json()
    assert vehicle["status"] == "inactive"


async def test_a_dry_run_says_a_lookup_finds_no_entity_or_several_as_the_trigger_would(
    client: Client,
) -> None:
    """A lookup key (a tracker id) never creates: the dry run answered `create` (and a missing
    plate) where the trigger refuses `not_found`, and hid `ambiguous`."""
    mapping = _by("attributes.tracker_id")
    await upload_mapping(client, mapping)
    trigger = await create_trigger(client, mapping="by-attributes-tracker_id")
    item = {"device": "T-1", "km": 10}
    dry = await _dry_run(client, mapping, item)
    assert dry["entity"]["write"] == "not_found" and "errors" not in dry["entity"], dry
    assert (await hook(client, trigger, item))[0] == 422
    await _vehicle(client, {"tracker_id": "T-1"})
    assert (await _dry_run(client, mapping, item))["entity"]["write"] == "update"
    await _vehicle(client, {"tracker_id": "T-1"}, plate="BRA2E19")
    dry = await _dry_run(client, mapping, item)
    assert dry["entity"]["write"] == "ambiguous" and dry["events"] == [], dry
    status, problem = await hook(client, trigger, item)
    assert status == 422 and problem["errors"][0]["keyword"] == "ambiguous", problem


@pytest.mark.parametrize(
    ("fix_time", "kept"),
    [
        ("2026-12-04t09:00:00-03:00", datetime(2026, 12, 4, 12, tzinfo=UTC)),  # RFC 3339's t
        ("2026-12-04T12:00:00z", datetime(2026, 12, 4, 12, tzinfo=UTC)),
        ("2099-01-01T00:00:00Z", None),  # a device clock gone wrong: guards nothing
        ("9999-12-31T23:59:59-01:00", None),  # no UTC time the database holds
        ("0001-01-01T00:00:00+01:00", None),
    ],
)
async def test_a_vehicles_position_time_is_kept_only_where_it_can_guard_the_fold(
    client: Client, fix_time: str, kept: datetime | None
) -> None:
    """`position_at` guards the fold's writes of the last position: one far ahead would stop
    them for good, one outside the database's range failed the write."""
    position = {"lat": -23.5, "lon": -46.6, "time": fix_time}
    response = await client.post(
        "/api/v1/entities/vehicle",
        headers=auth(),
        json={"plate": "ABC1D23", "last_position": position},
    )
    assert response.status == 201, await response.text()
    stored = await client.app[services_key].store.db["entities"].find_one({"nk": "ABC1D23"})
    assert stored is not None and stored["position_at"] == kept
