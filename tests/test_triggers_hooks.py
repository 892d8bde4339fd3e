"""Partners write and read through /hooks/{id}: mappings, schemas, forms, reads, events."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.web.state import services_key
from tests.flow_support import drain
from tests.support import auth
from tests.triggers_support import (
    PAYLOADS,
    VEHICLE,
    Client,
    bearer,
    create_position_trigger,
    create_trigger,
    entities,
    hook,
    upload_mapping,
    upload_shipped,
    vehicle_track,
)

BRASILIA = ZoneInfo("America/Sao_Paulo")
POSITION_SCHEMA = json.loads((PAYLOADS.parent / "position_schema.json").read_text())
POSITION = json.loads((PAYLOADS.parent / "position_payload.json").read_text())
POSITION_MAPPING = """
name: position
direction: inbound
entity_type: vehicle
key: [plate]
emit: [vehicle.position]
fields:
  plate: {from: device.plate, required: true, transforms: [trim, upper]}
  attributes.tracker_id: device.id
  last_position.lat: {from: position.latitude, required: true}
  last_position.lon: {from: position.longitude, required: true}
  last_position.speed_kmh: position.speed
  last_position.time:
    from: position.fixTime
    required: true
    transforms: [{datetime: {parse: iso8601}}]
  odometer_km: {from: position.attributes.odometer, transforms: [{convert: {from: m, to: km}}]}
"""
RESPONSE_MAPPING = """
name: vehicle-answer
direction: outbound
entity_type: vehicle
body:
  placa: {from: entity.plate, required: true}
  marca: entity.make
  odometro: entity.odometer_km
"""


async def test_first_post_creates_201_and_the_next_updates_200_naming_changed_fields(
    client: Client,
) -> None:
    trigger = await create_trigger(client)
    status, created = await hook(client, trigger, VEHICLE)
    assert status == 201
    assert created["created"] is True and created["key"] == "ABC1D23" and created["id"]
    assert created["events"] == ["entity.created"]
    status, updated = await hook(client, trigger, {**VEHICLE, "make": "VW", "year": 2023})
    assert status == 200
    assert updated == {
        "id": created["id"],
        "key": "ABC1D23",
        "created": False,
        "changed": ["make", "year"],
        "events": ["entity.updated"],
    }
    [stored] = await entities(client)
    assert stored["make"] == "VW" and stored["id"] == created["id"]


async def test_a_partner_moving_a_value_between_number_and_boolean_changes_it(
    client: Client,
) -> None:
    """`true` then `1` (a partner's 0/1 flag become a boolean, or back) was "nothing
    changed" (Python's `True == 1`): not written, no event."""
    trigger = await create_trigger(client)
    assert (await hook(client, trigger, {**VEHICLE, "attributes": {"door_open": True}}))[0] == 201
    status, answer = await hook(client, trigger, {**VEHICLE, "attributes": {"door_open": 1}})
    assert (status, answer["changed"], answer["events"]) == (
        200,
        ["attributes.door_open"],
        ["entity.updated"],
    )
    [stored] = await entities(client)
    assert stored["attributes"]["door_open"] == 1 and stored["attributes"]["door_open"] is not True


async def test_a_partner_payload_over_an_entity_is_a_merge_patch(client: Client) -> None:
    """A null inside an object the entity does not have means absent (RFC 7396), as it does
    inside one it has: it was stored as null, or refused by the schema, depending on what
    the entity held before."""
    trigger = await create_trigger(client)
    status, _ = await hook(client, trigger, VEHICLE)
    assert status == 201
    [stored] = await entities(client)
    await client.patch(
        f"/api/v1/entities/vehicle/{stored['id']}",
        json={"current_driver": None, "attributes": {"x": 5}},
        headers=auth(),
    )
    # (a driver named by CPF: a name alone names no driver, no write of the field)
    driver = {"cpf": "52998224725", "name": None}
    patch = {"current_driver": driver, "attributes": {"x": {"y": None}}}
    status, answer = await hook(client, trigger, {**VEHICLE, **patch, "model": None})
    assert status == 200, answer
    [stored] = await entities(client)
    assert stored["current_driver"] == {"cpf": "52998224725"}
    assert stored["attributes"] == {"x": {}}
    assert "model" not in stored


TYRE = {
    "name": "tyre",
    "schema": {
        "type": "object",
        "required": ["serial", "removed_at"],
        "properties": {"serial": {"type": "string"}, "removed_at": {"type": ["string", "null"]}},
    },
}


async def test_a_partner_payload_for_a_new_entity_keeps_the_null_of_a_member_its_kind_requires(
    client: Client,
) -> None:
    """A kind requiring a nullable member (`"removed_at": null`): the admin API created the
    entity, a trigger's payload for a new one was refused (`422`, its nulls dropped as a
    merge patch's). Merged into nothing, a payload's null for a required member is its
    value."""
    response = await client.post("/api/v1/kinds", json=TYRE, headers=auth())
    assert response.status == 201, await response.text()
    doc = {"kind": "tyre", "key": "T-1", "serial": "T-1", "removed_at": None}
    admin = await client.post("/api/v1/entities/other", json=doc, headers=auth())
    assert admin.status == 201, await admin.text()
    trigger = await create_trigger(client, entity_type="other", kind="tyre")
    status, answer = await hook(client, trigger, {**doc, "key": "T-2", "serial": "T-2"})
    assert status == 201, answer
    listed = await client.get("/api/v1/entities/other?kind=tyre", headers=auth())
    items = (await listed.json())["items"]
    assert sorted((item["serial"], item["removed_at"]) for item in items) == [
        ("T-1", None),
        ("T-2", None),
    ], items


NUL = {
    "name": "nul",
    "schema": {
        "type": "object",
        "required": ["baixa"],
        "properties": {
            "baixa": {"type": ["string", "null"]},
            "endereco": {
                "type": "object",
                "required": ["cep", "complemento"],
                "properties": {
                    "cep": {"type": "string"},
                    "complemento": {"type": ["string", "null"]},
                },
            },
        },
    },
}


async def test_a_null_a_kind_requires_one_level_down_is_kept_as_the_admin_api_keeps_it(
    client: Client,
) -> None:
    """`"endereco": {"complemento": null}`, required and nullable: the admin API stored it,
    every trigger refused the same body ("/endereco/complemento: required field is
    missing"), for a new entity and sent again for the stored one. A null the schema
    requires is a value at any depth; one it does not allow is refused at the member."""
    response = await client.post("/api/v1/kinds", json=NUL, headers=auth())
    assert response.status == 201, await response.text()
    address = {"cep": "01310-100", "complemento": None}
    doc = {"kind": "nul", "key": "N1", "baixa": None, "endereco": address}
    admin = await client.post("/api/v1/entities/other", json=doc, headers=auth())
    assert admin.status == 201, await admin.text()
    trigger = await create_trigger(client, entity_type="other", kind="nul")
    for key, created in (("N2", 201), ("N2", 200), ("N1", 200)):
        status, answer = await hook(client, trigger, {**doc, "key": key})
        assert status == created and answer["changed"] == [], (key, answer)
    stored = await client.get("/api/v1/entities/other/nul:N2", headers=auth())
    assert (await stored.json())["endereco"] == address
    # a stored value nulled by a PATCH: null is its value, as at the top
    url = "/api/v1/entities/other/nul:N2"
    filled = {"endereco": {"complemento": "apto 1"}}
    assert (await client.patch(url, json=filled, headers=auth())).status == 200
    patched = await client.patch(url, json={"endereco": {"complemento": None}}, headers=auth())
    assert (await patched.json())["changed"] == ["endereco.complemento"]
    stored = await client.get(url, headers=auth())
    assert (await stored.json())["endereco"] == address
    # a null the schema does not allow is refused at the member, not called missing
    status, answer = await hook(client, trigger, {**doc, "key": "N3", "endereco": {"cep": None}})
    assert status == 422, answer
    assert sorted((e["pointer"], e["keyword"]) for e in answer["errors"]) == [
        ("/endereco/cep", "type"),
        ("/endereco/complemento", "required"),
    ], answer


async def test_mapped_position_updates_the_vehicle_and_emits_the_mapping_events(
    client: Client,
) -> None:
    await upload_mapping(client, POSITION_MAPPING)
    trigger = await create_trigger(client, mapping="position", input_schema=POSITION_SCHEMA)
    status, answer = await hook(client, trigger, POSITION)
    assert status == 201 and answer["events"] == ["entity.created", "vehicle.position"]
    [vehicle] = await entities(client)
    assert vehicle["last_position"]["lat"] == -23.55052
    assert vehicle["odometer_km"] == 1234.567
    await client.app[services_key].relay.run_until_idle()
    events = await (await client.get("/api/v1/events?type=vehicle.position", headers=auth())).json()
    [event] = events["items"]
    assert event["origin"] == {"kind": "trigger", "id": trigger["id"]}


async def test_events_name_a_vehicle_by_the_plate_its_writer_was_answered(
    client: Client,
) -> None:
    """The stored natural key is the plate's Mercosul form (KEY1C34 for KEY1234): events name
    the vehicle by the plate its document holds, the key the trigger answered, not that twin."""
    trigger = await create_trigger(client)
    status, answer = await hook(client, trigger, {"plate": "KEY1234"})
    assert status == 201 and answer["key"] == "KEY1234"
    assert (await client.delete("/api/v1/entities/vehicle/KEY1234", headers=auth())).status == 204
    await client.app[services_key].relay.run_until_idle()
    listed = await client.get("/api/v1/events", params={"entity_id": answer["id"]}, headers=auth())
    events = (await listed.json())["items"]
    assert [(e["type"], e["entity"]["key"]) for e in events] == [
        ("entity.deleted", "KEY1234"),
        ("entity.created", "KEY1234"),
    ]


PLATE_SOURCE = """
name: {name}
direction: inbound
entity_type: vehicle
key: [plate]
{create}fields:
  plate: {{from: placa, transforms: [plate]}}
  attributes.{name}_note: nota
"""


async def _plate_source(client: Client, name: str, create: bool = True) -> dict[str, Any]:
    text = PLATE_SOURCE.format(name=name, create="" if create else "create: false\n")
    await upload_mapping(client, text)
    return await create_trigger(client, name=name, mapping=name)


async def _register(client: Client, plate: str) -> None:
    body = {"plate": plate, "attributes": {"fleet_number": "7"}}
    response = await client.post("/api/v1/entities/vehicle", json=body, headers=auth())
    assert response.status == 201, await response.text()


async def _vehicle(client: Client, plate: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def test_a_source_with_the_old_plate_leaves_a_converted_vehicles_mercosul_plate(
    client: Client,
) -> None:
    """A vehicle converted to FLP1C34, an ERP still sending FLP-1234 and a tracker sending
    FLP1C34: the plate flipped at every write, each flip an `entity.updated` whose key changed.
    A conversion is one way: the old twin finds the vehicle and leaves its plate."""
    await _register(client, "FLP1C34")
    erp, tracker = await _plate_source(client, "erp"), await _plate_source(client, "tracker")
    answers = []
    for _ in range(3):
        for trigger, plate in ((erp, "FLP-1234"), (tracker, "FLP1C34")):
            status, answer = await hook(client, trigger, {"placa": plate, "nota": "n"})
            assert status == 200, answer
            answers.append((answer["key"], answer["changed"], answer["events"]))
    assert answers[:2] == [
        ("FLP1C34", ["attributes.erp_note"], ["entity.updated"]),
        ("FLP1C34", ["attributes.tracker_note"], ["entity.updated"]),
    ]
    assert answers[2:] == [("FLP1C34", [], [])] * 4  # nothing changed: no event
    assert (await _vehicle(client, "FLP1234"))["plate"] == "FLP1C34"
    dry = await client.post(
        "/api/v1/mappings/test",
        json={"name": "erp", "payload": {"placa": "FLP-1234", "nota": "n"}},
        headers=auth(),
    )
    (result,) = (await dry.json())["results"]
    assert result["entity"]["write"] == "unchanged" and result["entity"]["changes"] == []
    await client.app[services_key].relay.run_until_idle()
    listed = await client.get("/api/v1/events?type=entity.updated", headers=auth())
    assert {e["entity"]["key"] for e in (await listed.json())["items"]} == {"FLP1C34"}


async def test_an_old_plate_sent_as_its_mercosul_twin_is_converted_once(client: Client) -> None:
    await _register(client, "CNV1234")
    source = await _plate_source(client, "registry")
    status, answer = await hook(client, source, {"placa": "CNV1C34", "nota": "n"})
    assert status == 200 and answer["key"] == "CNV1C34"
    assert answer["changed"] == ["attributes.registry_note", "plate"]
    status, answer = await hook(client, source, {"placa": "CNV1234", "nota": "n"})
    assert (status, answer["key"], answer["changed"]) == (200, "CNV1C34", [])
    assert (await _vehicle(client, "CNV1234"))["plate"] == "CNV1C34"


async def test_a_mapping_that_does_not_create_never_writes_the_plate_it_found_by(
    client: Client,
) -> None:
    """`create: false` makes the plate a lookup: the entity found keeps its natural key, in
    either direction (old → Mercosul too: that mapping finds vehicles, it does not re-plate
    them)."""
    for plate in ("NCA1C34", "NCB1234"):
        await _register(client, plate)
    source = await _plate_source(client, "fines", create=False)
    for sent, stored in (("NCA-1234", "NCA1C34"), ("NCB1C34", "NCB1234"), ("ncb-1234", "NCB1234")):
        status, answer = await hook(client, source, {"placa": sent, "nota": sent})
        assert status == 200, answer
        assert (answer["key"], answer["changed"]) == (stored, ["attributes.fines_note"]), sent
        assert (await _vehicle(client, stored))["plate"] == stored
    dry = await client.post(
        "/api/v1/mappings/test",
        json={"name": "fines", "payload": {"placa": "NCB1C34", "nota": "x"}},
        headers=auth(),
    )
    (result,) = (await dry.json())["results"]
    assert [c["field"] for c in result["entity"]["changes"]] == ["attributes.fines_note"]


async def test_schema_failure_is_422_listing_every_failing_field_and_writes_nothing(
    client: Client,
) -> None:
    trigger = await create_trigger(client, input_schema=POSITION_SCHEMA)
    bad = {
        "device": {"plate": "bad plate"},
        "position": {"latitude": 123, "longitude": -46.6, "speed": -1},
    }
    status, problem = await hook(client, trigger, bad)
    assert status == 422 and problem["reason"] == "schema"
    pointers = {e["pointer"] for e in problem["errors"]}
    assert pointers == {
        "/device/plate",
        "/position/latitude",
        "/position/speed",
        "/position/fixTime",
    }
    assert await entities(client) == []


async def test_mapping_failure_is_422_naming_target_and_source(client: Client) -> None:
    await upload_mapping(client, POSITION_MAPPING)
    trigger = await create_trigger(client, mapping="position")
    status, problem = await hook(
        client, trigger, {"device": {"plate": "ABC1D23"}, "position": {"longitude": 1}}
    )
    assert status == 422 and problem["reason"] == "mapping"
    by_target = {e["target"]: e for e in problem["errors"]}
    assert by_target["last_position.lat"]["source"] == "position.latitude"
    assert "last_position.time" in by_target
    assert await entities(client) == []


async def test_a_mapped_value_overflowing_to_infinity_is_a_422_and_nothing_is_written(
    client: Client,
) -> None:
    """`sum` of two large readings is Infinity: JSON has none, the database would keep `inf`."""
    await upload_mapping(
        client,
        "name: totals\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "fields:\n  plate: plate\n  attributes.total_km: sum(readings)\n",
    )
    trigger = await create_trigger(client, mapping="totals")
    status, problem = await hook(client, trigger, {"plate": "ABC1D23", "readings": [1e308, 1e308]})
    assert status == 422 and problem["reason"] == "mapping"
    [error] = problem["errors"]
    assert error["keyword"] == "cast" and error["target"] == "attributes.total_km"
    assert error["message"] == "inf is not a finite number"
    assert await entities(client) == []


async def test_a_mapped_function_that_overflows_is_a_422_naming_its_field_not_a_500(
    client: Client,
) -> None:
    """floor() of a reading past the largest float, a slice step of 0, `to_string()` of an
    Infinity: JMESPath raises Python's own errors there, which went out as a 500."""
    await upload_mapping(
        client,
        "name: odd\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "fields:\n  plate: plate\n  attributes.km: floor(to_number(km))\n"
        "  attributes.last: 'readings[::0]'\n  attributes.text: to_string([to_number(km)])\n",
    )
    trigger = await create_trigger(client, mapping="odd")
    status, problem = await hook(
        client, trigger, {"plate": "ABC1D23", "km": "1e999", "readings": [1]}
    )
    assert status == 422 and problem["reason"] == "mapping", problem
    found = {e["target"]: e["keyword"] for e in problem["errors"]}
    assert found == {
        "attributes.km": "expression",
        "attributes.last": "expression",
        "attributes.text": "cast",
    }
    assert await entities(client) == []


async def test_osmand_query_string_with_token_in_query_finds_the_vehicle_by_tracker_id(
    client: Client,
) -> None:
    await upload_shipped(client, "osmand")
    await client.post(
        "/api/v1/entities/vehicle",
        headers=auth(),
        json={**VEHICLE, "attributes": {"tracker_id": "353861053849681"}},
    )
    trigger = await create_position_trigger(
        client, mapping="osmand", format="form", auth={"token_in_query": "token"}
    )
    query = (PAYLOADS / "osmand_query.txt").read_text().strip()
    response = await client.post(f"/hooks/{trigger['id']}?{query}&token={trigger['token']}")
    assert response.status == 201, await response.text()
    answer = await response.json()
    assert answer["vehicle"]["plate"] == "ABC1D23" and answer["time"] == "2026-11-26T09:25:12Z"
    get = await client.get(f"/hooks/{trigger['id']}?{query}&token={trigger['token']}")
    assert get.status == 200  # OsmAnd devices may use GET: a form trigger writes from it
    assert (await get.json())["duplicate"] is True  # the same fix again: stored once
    later = query.replace("timestamp=1795685112", "timestamp=1795685999")
    head = await client.head(f"/hooks/{trigger['id']}?{later}&token={trigger['token']}")
    assert head.status == 403  # a HEAD never writes, and a form trigger reads nothing
    track = (await vehicle_track(client))["items"]
    assert [f["time"] for f in track] == ["2026-11-26T09:25:12Z"]  # a HEAD never writes


async def test_a_form_body_field_named_like_the_token_parameter_reaches_the_mapping(
    client: Client,
) -> None:
    """The token parameter is the query's credential; a body field of that name is content.
    Under `token_in_query: id`, OsmAnd's body `id=dev1` was dropped with the query's token:
    every fix a 422 (`tracker_id` missing)."""
    await upload_shipped(client, "osmand")
    created = await client.post(
        "/api/v1/entities/vehicle",
        headers=auth(),
        json={**VEHICLE, "attributes": {"tracker_id": "dev1"}},
    )
    assert created.status == 201, await created.text()
    trigger = await create_position_trigger(
        client, mapping="osmand", format="form", auth={"token_in_query": "id"}
    )
    response = await client.post(
        f"/hooks/{trigger['id']}?id={trigger['token']}",
        data=b"id=dev1&timestamp=1795685112&lat=-23.5&lon=-46.6",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["vehicle"]["plate"] == "ABC1D23"


async def test_a_form_triggers_token_reads_no_vehicle_its_track_nor_any_entity(
    client: Client,
) -> None:
    """docs/triggers.md: a form trigger offers no reads. Its GET is in `methods` for OsmAnd
    devices to write, and its token sits in every device's URL: one tracker's URL must not
    follow the fleet (another vehicle's track) nor read its entities. It did (200)."""
    await upload_shipped(client, "osmand")
    for plate, tracker in (("ABC1D23", "111"), ("OTH1A11", "222")):
        created = await client.post(
            "/api/v1/entities/vehicle",
            headers=auth(),
            json={**VEHICLE, "plate": plate, "attributes": {"tracker_id": tracker}},
        )
        assert created.status == 201, await created.text()
    gps = await create_position_trigger(
        client, mapping="osmand", format="form", auth={"token_in_query": "token"}
    )
    entity_form = await create_trigger(client, format="form", auth={"token_in_query": "token"})
    token = f"token={gps['token']}"
    fix = f"/hooks/{gps['id']}?id=222&lat=-23.55&lon=-46.63&timestamp=1795685112&{token}"
    assert (await client.get(fix)).status == 201  # another vehicle's phone writes
    for trigger in (gps, entity_form):
        url, token = f"/hooks/{trigger['id']}", f"token={trigger['token']}"
        for method, path in (
            ("GET", f"{url}/OTH1A11?{token}"),
            ("GET", f"{url}/ABC1D23?{token}"),
            ("HEAD", f"{url}/OTH1A11?{token}"),
            ("HEAD", f"{url}?plate=OTH1A11&{token}"),
            ("HEAD", f"{url}?tracker_id=222&{token}"),
        ):
            response = await client.request(method, path)
            assert response.status == 403, (method, path)
            assert response.content_type == "application/problem+json"
            if method == "GET":
                text = await response.text()
                assert "form trigger takes writes only" in text, text
                assert "-23.55" not in text and "Strada" not in text
        root = await client.options(f"{url}?{token}")
        assert root.status == 204 and root.headers["Allow"] == "GET, POST, OPTIONS"
        entity_url = await client.options(f"{url}/OTH1A11?{token}")
        assert entity_url.status == 204 and entity_url.headers["Allow"] == "OPTIONS"
    track = (await vehicle_track(client, "OTH1A11"))["items"]
    assert [(f["lat"], f["lon"]) for f in track] == [(-23.55, -46.63)]  # the write stands


async def test_a_whole_float_where_the_schema_says_integer_is_stored_as_the_integer(
    client: Client,
) -> None:
    """Delphi and JS serialisers write `2000.0`: JSON Schema counts it an integer, so it was
    stored and answered as 2000.0 for ever (typed consumers refuse it for an int), and the
    partner's later `2000` was "no change". Where the schema says `integer`, a whole float is
    the int it is; a `number` or a free attribute keeps what was sent."""
    trigger = await create_trigger(client)
    status, answer = await hook(
        client, trigger, {"plate": "INT1A11", "year": 2000.0, "attributes": {"ratio": 2.0}}
    )
    assert status == 201, answer
    for read in (
        await client.get(f"/hooks/{trigger['id']}/INT1A11", headers=bearer(trigger)),
        await client.get("/api/v1/entities/vehicle/INT1A11", headers=auth()),
    ):
        text = await read.text()
        assert '"year":2000,' in text or '"year":2000}' in text, text
        assert '"ratio":2.0' in text, text
    for year, status in ((b"2.001e3", 200), (b"2001.5", 422)):
        body = b'{"plate": "INT1A11", "year": ' + year + b"}"
        response = await client.post(
            f"/hooks/{trigger['id']}",
            data=body,
            headers={**bearer(trigger), "Content-Type": "application/json"},
        )
        assert response.status == status, await response.text()
    stored = await client.app[services_key].store.entities.get("acme", "vehicle", nk="INT1A11")
    assert stored is not None and stored["data"]["year"] == 2001
    assert type(stored["data"]["year"]) is int


async def test_form_body_is_accepted_and_unknown_tracker_is_422(client: Client) -> None:
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(client, mapping="osmand", format="form")
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data="id=999&lat=1&lon=2&timestamp=1795685112",
        headers={**bearer(trigger), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 422
    problem = await response.json()
    assert problem["reason"] == "entity" and "no vehicle with tracker_id" in problem["detail"]
    assert problem["errors"][0]["keyword"] == "unknown_vehicle"


async def test_a_form_fix_with_nan_coordinates_is_a_clear_422(client: Client) -> None:
    await upload_shipped(client, "osmand")
    await client.post(
        "/api/v1/entities/vehicle",
        headers=auth(),
        json={**VEHICLE, "attributes": {"tracker_id": "7"}},
    )
    trigger = await create_position_trigger(client, mapping="osmand", format="form")
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data="id=7&lat=NaN&lon=2&timestamp=1795685112",
        headers={**bearer(trigger), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 422, await response.text()
    assert [e["pointer"] for e in (await response.json())["errors"]] == ["/lat"]
    assert (await vehicle_track(client))["items"] == []


async def test_get_by_key_is_shaped_by_the_response_mapping(client: Client) -> None:
    await upload_mapping(client, RESPONSE_MAPPING)
    trigger = await create_trigger(client, response_mapping="vehicle-answer")
    await hook(client, trigger, {**VEHICLE, "odometer_km": 12.5})
    response = await client.get(f"/hooks/{trigger['id']}/ABC1D23", headers=bearer(trigger))
    assert response.status == 200
    assert await response.json() == {"placa": "ABC1D23", "marca": "Fiat", "odometro": 12.5}


async def test_a_response_mapping_formats_and_templates_the_entitys_metadata_times(
    client: Client,
) -> None:
    """docs/triggers.md `expose`: the metadata `created_at`, `updated_at` are fields the
    response mapping reads, as the ISO 8601 text a read shows. The stored datetimes reached
    the transforms, and every GET was a 422 "cannot read ... as a date-time"."""
    answer = """
name: vehicle-changed
direction: outbound
entity_type: vehicle
body:
  placa: entity.plate
  alterado:
    from: entity.updated_at
    transforms: [{datetime: {output_tz: America/Sao_Paulo, format: "%d/%m/%Y %H:%M"}}]
  cadastro: {template: "cadastrado em {c}", vars: {c: {from: entity.created_at}}}
  texto: {from: entity.created_at, transforms: [string]}
"""
    await upload_mapping(client, answer)
    expose = ["plate", "created_at", "updated_at"]
    trigger = await create_trigger(client, response_mapping="vehicle-changed", expose=expose)
    await hook(client, trigger, VEHICLE)
    stored = await (await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).json()
    changed = datetime.fromisoformat(stored["updated_at"]).astimezone(BRASILIA)

    for path in ("/ABC1D23", "?plate=ABC1D23"):
        response = await client.get(f"/hooks/{trigger['id']}{path}", headers=bearer(trigger))
        body = await response.json()
        assert response.status == 200, body
        assert (body["items"][0] if "items" in body else body) == {
            "placa": "ABC1D23",
            "alterado": changed.strftime("%d/%m/%Y %H:%M"),
            "cadastro": f"cadastrado em {stored['created_at']}",
            "texto": stored["created_at"],
        }


async def test_fields_the_trigger_does_not_expose_are_not_returned(client: Client) -> None:
    trigger = await create_trigger(client, expose=["plate", "attributes.color"])
    await hook(client, trigger, {**VEHICLE, "attributes": {"color": "red", "secret": "x"}})
    response = await client.get(f"/hooks/{trigger['id']}?plate=ABC1D23", headers=bearer(trigger))
    page = await response.json()
    [item] = page["items"]
    assert set(item) == {"id", "plate", "attributes"}
    assert item["attributes"] == {"color": "red"} and page["next_cursor"] is None


DRIVER_BY_ERP_ID = """
name: driver-by-erp-id
direction: inbound
entity_type: driver
key: [attributes.erp_id]
fields:
  attributes.erp_id: erp
  name: nome
"""


async def test_a_write_answer_names_the_natural_key_only_when_expose_shows_it(
    client: Client,
) -> None:
    """A partner holding only its own ids (`expose: ["name"]`) read every driver's CPF in its
    writes' answers, writing nothing (security4 F3); a tracker's fix was answered with the
    plate of any tracker id."""
    driver = {"cpf": "111.444.777-35", "name": "Bia Lima", "attributes": {"erp_id": "E-1"}}
    assert (await client.post("/api/v1/entities/driver", json=driver, headers=auth())).status == 201
    await upload_mapping(client, DRIVER_BY_ERP_ID)
    trigger = await create_trigger(
        client, entity_type="driver", mapping="driver-by-erp-id", expose=["name"]
    )
    status, answer = await hook(client, trigger, {"erp": "E-1"})
    assert status == 200 and answer["changed"] == [], answer
    assert "11144477735" not in json.dumps(answer) and answer["key"] is None
    shown = await create_trigger(client, name="shown", expose=["plate"])
    assert (await hook(client, shown, {"plate": "ABC1D23"}))[1]["key"] == "ABC1D23"
    trackers = await create_position_trigger(client, expose=["last_position"])
    await client.patch(
        "/api/v1/entities/vehicle/ABC1D23",
        json={"attributes": {"tracker_id": "T-9"}},
        headers={**auth(), "Content-Type": "application/merge-patch+json"},
    )
    fix = {"tracker_id": "T-9", "lat": -23.5, "lon": -46.6, "time": "2026-12-06T12:00:00Z"}
    status, answer = await hook(client, trackers, fix)
    assert status == 201 and answer["vehicle"] == {"id": answer["vehicle"]["id"]}, answer


async def test_a_write_answer_does_not_tell_whether_a_hidden_field_held_what_was_sent(
    client: Client,
) -> None:
    """`events` was empty exactly when every hidden field sent equalled the stored value: a
    one-guess oracle of a field `expose` hides (security4 F2). The answer says nothing a
    partner cannot read."""
    stored = {**VEHICLE, "group": "diretoria", "attributes": {"note": "HIDDEN"}}
    assert (
        await client.post("/api/v1/entities/vehicle", json=stored, headers=auth())
    ).status == 201
    trigger = await create_trigger(client, methods=["GET", "POST"], expose=["plate", "status"])
    answers = []
    for guess in ({"group": "diretoria"}, {"group": "financeiro"}, {"attributes": {"note": "x"}}):
        status, answer = await hook(client, trigger, {"plate": "ABC1D23", **guess})
        assert status == 200, answer
        answers.append(answer)
    assert answers[0] == answers[1] == answers[2], answers
    assert set(answers[0]) == {"id", "key", "created", "changed"} and answers[0]["changed"] == []


ODOMETER_ONLY_FORWARD = """
name: odo
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, required: true}
  odometer_km: {from: km, only_forward: true}
"""


async def test_a_write_answer_does_not_tell_whether_a_hidden_odometer_is_above_a_guess(
    client: Client,
) -> None:
    """An only-forward field `expose` hides, sent below the stored value: the answer carried
    `"skipped": []` (the skipped field filtered out, the member left), which a write without
    it had not: a bisection of the hidden odometer that writes nothing (rev26 F2)."""
    stored = {**VEHICLE, "odometer_km": 150_000}
    assert (
        await client.post("/api/v1/entities/vehicle", json=stored, headers=auth())
    ).status == 201
    await upload_mapping(client, ODOMETER_ONLY_FORWARD)
    trigger = await create_trigger(client, mapping="odo", expose=["plate", "status"])
    below = await hook(client, trigger, {"placa": "ABC1D23", "km": 100_000})
    without = await hook(client, trigger, {"placa": "ABC1D23"})
    assert below == without and below[0] == 200, (below, without)


async def test_a_partner_writing_back_part_of_a_whole_value_keeps_what_expose_hides(
    client: Client,
) -> None:
    """A supplier's `contact` is one value, replaced whole by a write; a partner shown only
    `contact.name` and `contact.email` read them, changed the e-mail and wrote the document
    back: the phone it may not see was deleted, and `changed` told it that a hidden
    `contact.phone` existed. The hidden members stay, and `changed` names what it sees."""
    expose = ["name", "cnpj", "contact.name", "contact.email"]
    trigger = await create_trigger(
        client, entity_type="supplier", methods=["GET", "POST"], expose=expose
    )
    contact = {"name": "Rui", "email": "rui@oficina.com.br", "phone": "(11) 3456-7890"}
    supplier = {"name": "Oficina", "cnpj": "11222333000181", "contact": contact}
    created = await client.post("/api/v1/entities/supplier", json=supplier, headers=auth())
    assert created.status == 201, await created.text()
    read = await client.get(f"/hooks/{trigger['id']}/11222333000181", headers=bearer(trigger))
    doc = await read.json()
    assert doc["contact"] == {"name": "Rui", "email": "rui@oficina.com.br"}
    doc["contact"]["email"] = "rui.novo@oficina.com.br"
    body = {k: v for k, v in doc.items() if k in ("name", "cnpj", "contact")}
    status, answer = await hook(client, trigger, body)
    assert status == 200 and answer["changed"] == ["contact.email"], answer
    stored = await client.get("/api/v1/entities/supplier/11222333000181", headers=auth())
    assert (await stored.json())["contact"] == {
        "name": "Rui",
        "email": "rui.novo@oficina.com.br",
        "phone": "+551134567890",
    }
    # a partner shown the whole value replaces it whole, as an admin does
    whole = await create_trigger(
        client, name="whole", entity_type="supplier", methods=["POST"], expose=["cnpj", "contact"]
    )
    status, answer = await hook(
        client, whole, {"cnpj": "11222333000181", "contact": {"name": "Ana"}}
    )
    assert status == 200 and answer["changed"] == [
        "contact.email",
        "contact.name",
        "contact.phone",
    ], answer


async def test_a_partner_shown_the_drivers_name_and_cpf_keeps_the_vehicles_driver_id(
    client: Client,
) -> None:
    """An ERP sync shown `current_driver.name` and `.cpf` (not `.id`) that writes the vehicle
    back with its `model` changed removed the driver's id, for good."""
    expose = ["plate", "model", "current_driver.name", "current_driver.cpf"]
    trigger = await create_trigger(client, name="erp", methods=["GET", "POST"], expose=expose)
    driver = {"id": "6b157e52ea4a1e1c5c5fe2aa", "cpf": "52998224725", "name": "Ana"}
    vehicle = {"plate": "EXP1234", "current_driver": driver}
    created = await client.post("/api/v1/entities/vehicle", json=vehicle, headers=auth())
    assert created.status == 201, await created.text()
    doc = await (
        await client.get(f"/hooks/{trigger['id']}/EXP1234", headers=bearer(trigger))
    ).json()
    assert doc["current_driver"] == {"cpf": "52998224725", "name": "Ana"}
    del doc["id"]
    status, answer = await hook(client, trigger, {**doc, "model": "Strada"})
    assert status == 200 and answer["changed"] == ["model"], answer
    stored = await client.get("/api/v1/entities/vehicle/EXP1234", headers=auth())
    assert (await stored.json())["current_driver"] == driver


async def test_a_partner_shown_the_drivers_cpf_writing_another_cpf_keeps_no_other_drivers_id(
    client: Client,
) -> None:
    """A partner shown `current_driver.cpf` alone (not `.id`, `.name`) that sent another
    driver's CPF stored the driver before's id and name beside it, one person's id and name
    with another's CPF, kept for good when the CPF was no driver of the tenant. A changed
    CPF (or id, or name) is another person: the hidden members go; the same CPF, however
    written, keeps them."""
    expose = ["plate", "current_driver.cpf"]
    trigger = await create_trigger(client, name="erp", methods=["GET", "POST"], expose=expose)
    bruno = {"id": "6b157e52ea4a1e1c5c5fe2aa", "cpf": "11144477735", "name": "Bruno Lima"}
    vehicle = {"plate": "EXP1234", "current_driver": bruno}
    created = await client.post("/api/v1/entities/vehicle", json=vehicle, headers=auth())
    assert created.status == 201, await created.text()
    url = "/api/v1/entities/vehicle/EXP1234"
    # the same driver's CPF written with its dots: the same person, id and name kept
    sent = {"plate": "EXP1234", "current_driver": {"cpf": "111.444.777-35"}}
    status, answer = await hook(client, trigger, sent)
    assert status == 200 and answer["changed"] == [], answer
    assert (await (await client.get(url, headers=auth())).json())["current_driver"] == bruno
    # another person's CPF (no driver of the tenant): nothing of Bruno's stays beside it
    sent = {"plate": "EXP1234", "current_driver": {"cpf": "390.533.447-05"}}
    status, answer = await hook(client, trigger, sent)
    assert status == 200 and answer["changed"] == ["current_driver.cpf"], answer
    await drain(client.app[services_key])
    stored = await (await client.get(url, headers=auth())).json()
    assert stored["current_driver"] == {"cpf": "39053344705"}


async def test_a_response_mapping_reading_a_secret_is_refused_as_no_read_can_run(
    client: Client,
) -> None:
    """A read passes no secret (none goes to a partner): such a response mapping was saved,
    and every GET was a 422 "secret 'api_key' was not provided"."""
    plain = "name: resp\ndirection: outbound\nentity_type: vehicle\nbody:\n  placa: entity.plate\n"
    secret = plain + "  k: {secret: api_key}\n"
    headers = {**auth(), "Content-Type": "application/yaml"}
    assert (await client.post("/api/v1/mappings", data=secret, headers=headers)).status == 201
    spec = {"name": "r", "entity_type": "vehicle", "methods": ["GET"], "response_mapping": "resp"}
    response = await client.post("/api/v1/triggers", json=spec, headers=auth())
    problem = await response.json()
    assert response.status == 422, problem
    [error] = problem["errors"]
    assert error["pointer"] == "/response_mapping"
    assert "'resp' reads secrets (api_key), which a trigger's reads never have" in error["message"]
    assert (await client.post("/api/v1/mappings", data=plain, headers=headers)).status == 201
    trigger = await create_trigger(client, **spec)
    # nor may a version reading one become active under it
    response = await client.post("/api/v1/mappings", data=secret, headers=headers)
    refused = await response.json()
    assert response.status == 409, refused
    assert refused["used_by"][0]["id"] == trigger["id"]


async def test_an_expose_naming_no_field_of_the_entity_is_refused(client: Client) -> None:
    """`"expose": ["plaet"]` was saved, and every read then answered the id alone."""
    spec = {"name": "ex", "entity_type": "vehicle", "methods": ["GET"]}
    typo = {**spec, "expose": ["plaet", "last_position.lat"]}
    response = await client.post("/api/v1/triggers", json=typo, headers=auth())
    problem = await response.json()
    assert response.status == 422, problem
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [
        ("/expose/0", "unknown_field")
    ]
    assert "'plaet' is not a field of the vehicle schema" in problem["detail"]
    # its metadata, a free-form member's, a renamed member's old name are fields
    fields = ["plate", "id", "updated_at", "attributes.erp_id", "last_position.latitude"]
    trigger = await create_trigger(client, expose=fields)
    url = f"/api/v1/triggers/{trigger['id']}"
    response = await client.patch(url, json={"expose": ["plaet"]}, headers=auth())
    assert response.status == 422, await response.text()
    # one stored before the rule stays through a change of anything else, restated or not
    store = client.app[services_key].store
    await store.db["triggers"].update_one({"_id": trigger["id"]}, {"$set": {"expose": ["plaet"]}})
    for change in ({"name": "renamed"}, {"name": "again", "expose": ["plaet"]}):
        response = await client.patch(url, json=change, headers=auth())
        assert response.status == 200, await response.text()
    kind = {
        "name": "strict",
        "schema": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"serial": {"type": "string"}},
        },
    }
    assert (await client.post("/api/v1/kinds", json=kind, headers=auth())).status == 201
    other = {"name": "k", "entity_type": "other", "kind": "strict", "expose": ["serail"]}
    response = await client.post("/api/v1/triggers", json=other, headers=auth())
    assert response.status == 422, await response.text()
    assert (await response.json())["errors"][0]["message"] == (
        "/expose/0: 'serail' is not a field of the other (strict) schema"
    )


async def test_a_group_filter_needs_the_groups_it_reads_exposed_too(client: Client) -> None:
    """`?group=` answers a vehicle in the group by its `group` or its `groups`: with `group`
    alone exposed, which vehicles answered told the partner their hidden `groups`."""
    for vehicle in (
        {"plate": "GRP1234", "group": "north"},
        {"plate": "GRP1235", "group": "south", "groups": ["diretoria"]},
    ):
        created = await client.post("/api/v1/entities/vehicle", json=vehicle, headers=auth())
        assert created.status == 201, await created.text()
    trigger = await create_trigger(client, expose=["plate", "group"])
    url = f"/hooks/{trigger['id']}"
    refused = await client.get(f"{url}?group=diretoria", headers=bearer(trigger))
    assert refused.status == 400, await refused.text()
    assert (await refused.json())["detail"] == (
        "cannot filter by group: this trigger does not expose groups (?group= reads groups too)"
    )
    both = await create_trigger(client, name="both", expose=["plate", "group", "groups"])
    found = await client.get(f"/hooks/{both['id']}?group=diretoria", headers=bearer(both))
    assert [i["plate"] for i in (await found.json())["items"]] == ["GRP1235"]


async def test_lists_are_cursor_paginated_and_unknown_filters_are_400(client: Client) -> None:
    trigger = await create_trigger(client)
    for plate in ("ABC1D23", "BRA2E19", "XYZ9K88"):
        await hook(client, trigger, {"plate": plate, "status": "active"})
    url = f"/hooks/{trigger['id']}"
    first = await (await client.get(f"{url}?status=active&limit=2", headers=bearer(trigger))).json()
    second = await (
        await client.get(
            f"{url}?status=active&limit=2&cursor={first['next_cursor']}", headers=bearer(trigger)
        )
    ).json()
    plates = [i["plate"] for i in first["items"] + second["items"]]
    assert sorted(plates) == ["ABC1D23", "BRA2E19", "XYZ9K88"]
    bad = await client.get(f"{url}?colour=red", headers=bearer(trigger))
    assert bad.status == 400
    missing = await client.get(f"{url}/AAA0A00", headers=bearer(trigger))
    assert missing.status == 404


async def test_a_filter_given_twice_is_a_400_not_its_last_value(client: Client) -> None:
    """`?plate=A&plate=B` filtered by B alone: which one the caller meant is a guess (an OR,
    the first?), as for a header given twice."""
    trigger = await create_trigger(client)
    for plate in ("ABC1D23", "BRA2E19"):
        await hook(client, trigger, {"plate": plate, "status": "active"})
    url = f"/hooks/{trigger['id']}?plate=ABC1D23&plate=BRA2E19"
    response = await client.get(url, headers=bearer(trigger))
    assert response.status == 400, await response.text()
    assert (await response.json())["detail"] == "the filter plate is given more than once"
    admin = await client.get("/api/v1/entities/vehicle?status=active&status=x", headers=auth())
    assert admin.status == 400, await admin.text()


async def test_fine_trigger_writes_and_reads_its_kind_only(client: Client) -> None:
    await upload_shipped(client, "fine-feed")
    trigger = await create_trigger(client, entity_type="other", kind="fine", mapping="fine-feed")
    fine = json.loads((PAYLOADS / "fine_feed.json").read_text())
    status, answer = await hook(client, trigger, fine)
    assert status == 201, answer
    assert answer["key"] == "261810:A123456789" and "fine.received" in answer["events"]
    response = await client.get(
        f"/hooks/{trigger['id']}/261810:A123456789", headers=bearer(trigger)
    )
    assert (await response.json())["amount_brl"] == 130.16
    plain = await create_trigger(client, name="raw-fines", entity_type="other", kind="fine")
    status, problem = await hook(client, plain, {"kind": "checklist", "key": "x"})
    assert status == 422 and problem["errors"][0]["pointer"] == "/kind"


async def test_a_fine_trigger_lists_the_fines_of_either_spelling_of_a_plate(
    client: Client,
) -> None:
    trigger = await create_trigger(client, entity_type="other", kind="fine", methods=["GET"])
    fine = {"kind": "fine", "ait_number": "SP900", "amount_brl": 10, "status": "open"}
    for key, plate in (("SP900", "FIN1234"), ("SP901", "FIN1C34"), ("SP902", "FIN1D34")):
        doc = {**fine, "key": key, "plate": plate}
        created = await client.post("/api/v1/entities/other", json=doc, headers=auth())
        assert created.status == 201, await created.text()
    for plate in ("FIN1234", "fin-1c34"):
        response = await client.get(
            f"/hooks/{trigger['id']}?plate={plate}", headers=bearer(trigger)
        )
        items = (await response.json())["items"]
        assert sorted(f["key"] for f in items) == ["SP900", "SP901"], plate


async def test_a_kind_trigger_reads_back_a_key_holding_a_colon_or_another_entitys_id(
    client: Client,
) -> None:
    kind = {"name": "pneu", "schema": {"type": "object"}}
    assert (await client.post("/api/v1/kinds", json=kind, headers=auth())).status == 201
    fine = {"kind": "fine", "key": "SP1", "ait_number": "SP1", "plate": "ABC1234", "amount_brl": 1}
    created = await client.post(
        "/api/v1/entities/other", json={**fine, "status": "open"}, headers=auth()
    )
    assert created.status == 201, await created.text()
    fine_id = (await created.json())["id"]
    trigger = await create_trigger(
        client, entity_type="other", kind="pneu", methods=["GET", "POST"]
    )
    for key in ("ORD:123", "fine:SP1", fine_id):
        status, answer = await hook(client, trigger, {"key": key, "n": key})
        assert status == 201 and answer["key"] == key, answer
        response = await client.get(f"/hooks/{trigger['id']}/{key}", headers=bearer(trigger))
        assert response.status == 200, (key, await response.text())
        assert (await response.json())["n"] == key
    # By id and by `kind:key` as before; an entity of another kind is not the trigger's.
    by_full_key = await client.get(f"/hooks/{trigger['id']}/pneu:ORD:123", headers=bearer(trigger))
    assert (await by_full_key.json())["n"] == "ORD:123"
    by_id = await client.get(f"/hooks/{trigger['id']}/{answer['id']}", headers=bearer(trigger))
    assert (await by_id.json())["n"] == fine_id
    other_kind = await client.get(f"/hooks/{trigger['id']}/fine:SP9", headers=bearer(trigger))
    assert other_kind.status == 404


async def test_lookup_key_from_the_payload_cannot_become_a_query_operator(client: Client) -> None:
    await upload_mapping(
        client,
        "name: by-tracker\ndirection: inbound\nentity_type: vehicle\n"
        "key: [attributes.tracker_id]\nfields:\n  attributes.tracker_id: device\n"
        "  odometer_km: km\n",
    )
    trigger = await create_trigger(client, mapping="by-tracker")
    await client.post(
        "/api/v1/entities/vehicle",
        headers=auth(),
        json={"plate": "ABC1D23", "attributes": {"tracker_id": "4711"}},
    )
    status, answer = await hook(client, trigger, {"device": {"$regex": "^4"}, "km": 10})
    assert status == 422
    assert "lookup value" in str(answer)
    vehicle = await (await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).json()
    assert "odometer_km" not in vehicle


async def test_event_data_of_a_mapping_is_the_events_detail_beside_the_entity_data(
    client: Client,
) -> None:
    made = await client.post("/api/v1/entities/vehicle", json={"plate": "ABC1D23"}, headers=auth())
    assert made.status == 201  # samsara-geofence writes vehicles the fleet has
    await upload_shipped(client, "samsara-geofence")
    trigger = await create_trigger(client, mapping="samsara-geofence")
    sample = json.loads((PAYLOADS / "samsara_v2_geofence_exit.json").read_text())
    status, answer = await hook(client, trigger, sample)
    assert status == 200 and "vehicle.geofence.exited" in answer["events"]
    await client.app[services_key].relay.run_until_idle()
    events = await client.get("/api/v1/events?type=vehicle.geofence.exited", headers=auth())
    [event] = (await events.json())["items"]
    assert event["detail"]["geofence"]["name"] == sample["data"]["address"]["name"]
    assert event["data"]["plate"] == answer["key"]  # the entity as written
    assert "geofence" not in event["data"]  # event_data never lands in the entity


async def test_a_brazilian_fine_provider_local_times_dates_and_decimal_commas_are_read_as_meant(
    client: Client,
) -> None:
    """A fine's time without an offset is Brasília time (it was read as UTC: 3 hours early);
    a deadline or payment day is its day in Brasília (23:00-03:00 was the next day); dates
    written dd/mm/yyyy and amounts with a decimal comma are read (they were 422s)."""
    await upload_shipped(client, "fine-feed")
    await upload_shipped(client, "fine-payment")
    fines = await create_trigger(client, entity_type="other", kind="fine", mapping="fine-feed")
    payments = await create_trigger(
        client, name="payments", entity_type="other", kind="fine", mapping="fine-payment"
    )
    fine = json.loads((PAYLOADS / "fine_feed.json").read_text())
    sent = [
        {
            **fine,
            "dataHora": "2026-11-18T13:45:00",
            "dataLimiteIndicacao": "2026-12-18T23:00:00-03:00",
        },
        {
            **fine,
            "ait": "B2",
            "dataHora": "18/11/2026 13:45",
            "dataLimiteIndicacao": "18/12/2026",
            "valor": "1.130,16",
        },
    ]
    for body in sent:
        status, answer = await hook(client, fines, body)
        assert status == 201, answer
    for key, amount in (("261810:A123456789", 130.16), ("261810:B2", 1130.16)):
        response = await client.get(f"/hooks/{fines['id']}/{key}", headers=bearer(fines))
        stored = await response.json()
        assert (stored["occurred_at"], stored["indication_deadline"], stored["amount_brl"]) == (
            "2026-11-18T16:45:00Z",
            "2026-12-18",
            amount,
        )
    payment = json.loads((PAYLOADS / "fine_payment.json").read_text())
    late = {**payment, "dataPagamento": "2026-11-25T22:30:00-03:00", "valorPago": "104,13"}
    status, answer = await hook(client, payments, late)
    assert status == 200, answer
    await client.app[services_key].relay.run_until_idle()
    response = await client.get("/api/v1/events?type=fine.paid", headers=auth())
    [event] = (await response.json())["items"]
    detail = event["detail"]
    assert (detail["paid_on"], detail["amount_paid_brl"]) == ("2026-11-25", 104.13)
