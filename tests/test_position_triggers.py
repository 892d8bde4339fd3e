"""Position triggers (`"target": "positions"`, SPEC §6 "append"): canonical fixes appended to
the vehicle's track through HTTP, duplicates stored once, bad fixes refused one by one with a
clear 422, kept and replayable, and the track read back in cursor pages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from gateway.services import Services
from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import (
    PAYLOADS,
    VEHICLE,
    Client,
    bearer,
    create_position_trigger,
    create_trigger,
    hook,
    upload_mapping,
    upload_shipped,
    vehicle_track,
)

TRACK = Path(__file__).resolve().parent / "data" / "tracks" / "route1.geojson"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BRT = timezone(timedelta(hours=-3))


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def fix(seconds: float = 0, plate: str = "ABC1D23", **extra: Any) -> dict[str, Any]:
    return {"plate": plate, "time": at(seconds), "lat": -23.55, "lon": -46.63, **extra}


position_trigger = create_position_trigger


async def vehicle(client: Client, **data: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/entities/vehicle", json={**VEHICLE, **data}, headers=auth()
    )
    assert response.status == 201, await response.text()
    return dict(await response.json())


track = vehicle_track


async def test_a_canonical_fix_is_appended_and_a_resent_one_is_stored_once(
    client: Client,
) -> None:
    car = await vehicle(client)
    trigger = await position_trigger(client)
    assert trigger["target"] == "positions" and trigger["entity_type"] == "vehicle"
    sent = fix(0, speed_kmh=42.5, heading=90, accuracy_m=5, ignition=True)
    status, body = await hook(client, trigger, sent)
    assert status == 201, body
    assert body["vehicle"] == {"id": car["id"], "plate": "ABC1D23"}
    assert body["time"] == at(0) and body["duplicate"] is False
    again_status, again = await hook(client, trigger, sent)
    assert again_status == 200 and again["duplicate"] is True
    page = await track(client)
    [stored] = page["items"]
    assert stored["time"] == at(0) and (stored["lat"], stored["lon"]) == (-23.55, -46.63)
    assert stored["speed_kmh"] == 42.5 and stored["ignition"] is True
    assert stored["source"] == trigger["id"] and stored["rejected"] is None


async def test_a_fix_with_sub_millisecond_digits_answers_its_time_as_the_track_reads_it(
    client: Client,
) -> None:
    """A device time is kept to the millisecond: the answer says the time stored, written as
    the track writes it (not `.123000Z`), and the same time resent is a duplicate."""
    await vehicle(client)
    trigger = await position_trigger(client)
    status, body = await hook(client, trigger, fix(0) | {"time": "2026-12-01T12:00:00.1234567Z"})
    assert status == 201 and body["time"] == "2026-12-01T12:00:00.123Z", body
    status, again = await hook(client, trigger, fix(0) | {"time": "2026-12-01T09:00:00.123-03:00"})
    assert status == 200 and again["duplicate"] is True and again["time"] == body["time"]
    [stored] = (await track(client))["items"]
    assert stored["time"] == body["time"]


async def test_a_plate_or_tracker_id_too_long_or_blank_is_named_by_its_keyword(
    client: Client,
) -> None:
    """A too-long plate was refused as "of the wrong type" (`type`)."""
    await vehicle(client)
    trigger = await position_trigger(client)
    batch = [fix(0, plate="A" * 101), fix(5, plate="   "), fix(10, plate=7)]
    status, body = await hook(client, trigger, batch)
    assert status == 207, body  # a batch: each item's own answer
    keywords = [[e["keyword"] for e in r["problem"]["errors"]] for r in body["results"]]
    assert keywords == [["maxLength"], ["pattern"], ["type"]], body


async def test_a_batch_answers_each_fix_and_refuses_bad_ones_alone(client: Client) -> None:
    await vehicle(client)
    trigger = await position_trigger(client)
    batch = [
        fix(0),
        fix(5, heading=361),  # (a latitude of 91 is stored: the fold flags it)
        fix(10, time="yesterday"),
        fix(15, lon="west"),
        fix(20, speed_kmh=-3),
        fix(25, plate="ZZZ9Z99"),
        {"time": at(30), "lat": 1, "lon": 1},
        fix(35, altitude=3),
        fix(0),
        fix(40, time="9999-12-31T23:00:00-05:00"),  # past year 9999 in UTC
        fix(45, attributes={"can": {"$where": 1}}),  # a name the database cannot store
    ]
    status, body = await hook(client, trigger, batch)
    assert status == 207, body
    statuses = [r["status"] for r in body["results"]]
    assert statuses == [201, 422, 422, 422, 422, 422, 422, 422, 200, 422, 422]
    keywords = [
        [e["keyword"] for e in r["problem"]["errors"]]
        for r in body["results"]
        if r["status"] == 422
    ]
    assert keywords == [
        ["maximum"],
        ["format"],
        ["type"],
        ["minimum"],
        ["unknown_vehicle"],
        ["required"],
        ["additionalProperties"],
        ["format"],
        ["propertyNames"],
    ]
    pointers = [r["problem"]["errors"][0]["pointer"] for r in body["results"] if r["status"] == 422]
    assert pointers == [
        "/heading", "/time", "/lon", "/speed_kmh", "/plate", "", "/altitude", "/time",
        "/attributes/can/$where",
    ]  # fmt: skip
    assert body["summary"] == {"items": 11, "stored": 1, "duplicates": 1, "failed": 9}
    assert len((await track(client))["items"]) == 1
    kept = await client.get(f"/api/v1/rejected?trigger_id={trigger['id']}", headers=auth())
    assert len((await kept.json())["items"]) == 9
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_fixes_total{outcome="appended",reason=""} 1.0' in metrics
    assert 'gateway_fixes_total{outcome="duplicate",reason=""} 1.0' in metrics
    assert 'gateway_fixes_total{outcome="refused",reason="unknown_vehicle"} 1.0' in metrics
    assert 'gateway_fixes_total{outcome="refused",reason="invalid"} 8.0' in metrics


async def test_an_integer_beyond_64_bits_in_attributes_is_stored_as_its_exact_text(
    client: Client,
) -> None:
    """Found by fuzzing (tests/test_fuzz_inputs.py): JSON reads 2**63 as an integer the
    database cannot hold. It failed the whole insert round (every fix in it, other
    requests' too) as 503 "database write failed" and marked the database down. The body
    now reads it as its decimal text (docs/triggers.md#content-types), every digit kept."""
    await vehicle(client)
    trigger = await position_trigger(client)
    batch = [fix(0), fix(5, attributes={"sats": [1, 2**63]}), fix(10, attributes={"n": -(2**63)})]
    status, body = await hook(client, trigger, batch)
    assert status == 200, body
    assert [r["status"] for r in body["results"]] == [201, 201, 201]
    stored = (await track(client))["items"]
    assert [p.get("attributes") for p in stored] == [
        None,
        {"sats": [1, "9223372036854775808"]},
        {"n": -(2**63)},
    ]
    assert (await hook(client, trigger, fix(15)))[0] == 201  # the database is up


async def test_nan_is_refused_as_malformed_json_not_stored(client: Client) -> None:
    await vehicle(client)
    trigger = await position_trigger(client)
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=json.dumps(fix(0, lat=float("nan"))),
        headers={**bearer(trigger), "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert response.content_type == "application/problem+json"
    assert (await track(client))["items"] == []


async def test_a_fix_finds_its_vehicle_by_tracker_id(client: Client) -> None:
    car = await vehicle(client, attributes={"tracker_id": "dev-42"})
    trigger = await position_trigger(client)
    sent = {"tracker_id": "dev-42", "time": at(0), "lat": 1.5, "lon": 2.5}
    status, body = await hook(client, trigger, sent)
    assert status == 201, body
    assert body["vehicle"]["id"] == car["id"]


async def test_a_tracker_id_sent_as_a_whole_number_written_with_a_fraction_finds_its_vehicle(
    client: Client,
) -> None:
    """`tracker_id` is text or a number, compared by value: `353861053849681.0` (an id held as
    a float: pandas, Jackson, Python's json) is the number 353861053849681, and its device;
    it was refused as "text". A number with a fraction left is no id: refused, saying so."""
    car = await vehicle(client, attributes={"tracker_id": 353861053849681})
    trigger = await position_trigger(client)
    sent = {"tracker_id": 353861053849681.0, "time": at(0), "lat": 1.5, "lon": 2.5}
    status, body = await hook(client, trigger, sent)
    assert status == 201, body
    assert body["vehicle"]["id"] == car["id"]
    [stored] = (await track(client))["items"]
    assert stored["device"] == "353861053849681"
    status, body = await hook(client, trigger, {**sent, "tracker_id": 353861053849681.5})
    assert status == 422, body
    [error] = body["errors"]
    assert (error["pointer"], error["keyword"]) == ("/tracker_id", "type"), body
    assert "whole number" in error["message"], body


async def test_a_tracker_id_written_with_a_fraction_past_2_53_is_refused_not_rounded(
    client: Client,
) -> None:
    """A float holds every whole number up to 2^53 only: `12345678901234567.0` is read as
    12345678901234568, another device's id. Such an id cannot be read exactly, so it is
    refused `type` (it was rounded and the fix stored on the vehicle carrying ...568); the
    same id without the fraction part, an exact integer, is still that number."""
    near = await vehicle(client, attributes={"tracker_id": 12345678901234568})
    trigger = await position_trigger(client)

    async def sent(tracker_id: str) -> tuple[int, Any]:
        # the JSON text as the partner writes it (Python's json would write 1.2345678901234568e+16)
        body = f'{{"tracker_id": {tracker_id}, "time": "{at(0)}", "lat": 1.5, "lon": 2.5}}'
        headers = {**bearer(trigger), "Content-Type": "application/json"}
        response = await client.post(f"/hooks/{trigger['id']}", data=body, headers=headers)
        return response.status, await response.json()

    for written in ("12345678901234567.0", "-12345678901234567.0", "9007199254740992.0"):
        status, body = await sent(written)
        assert status == 422, (written, body)
        [error] = body["errors"]
        assert (error["pointer"], error["keyword"]) == ("/tracker_id", "type"), body
        assert "2^53" in error["message"], body
    assert (await track(client))["items"] == []
    status, body = await sent("12345678901234568")
    assert status == 201 and body["vehicle"]["id"] == near["id"], body
    edge = await vehicle(client, plate="XYZ9A87", attributes={"tracker_id": 2**53 - 1})
    status, body = await sent("9007199254740991.0")  # below 2^53: exact, that number
    assert status == 201 and body["vehicle"]["id"] == edge["id"], body


async def test_a_fix_finds_its_vehicle_by_a_tracker_id_past_twenty_partner_ids(
    client: Client,
) -> None:
    """A tracker installed on a vehicle that already had twenty partner ids: its id is not
    indexed, and was never found (every fix `unknown_vehicle`); it is matched on the data."""
    ids = {f"erp{i:02d}_id": f"e{i}" for i in range(1, 21)}
    car = await vehicle(client, attributes={**ids, "tracker_id": "dev-78"})
    trigger = await position_trigger(client)
    sent = {"tracker_id": "dev-78", "time": at(0), "lat": 1.5, "lon": 2.5}
    status, body = await hook(client, trigger, sent)
    assert status == 201, body
    assert body["vehicle"]["id"] == car["id"]
    response = await client.get(
        f"/hooks/{trigger['id']}?tracker_id=dev-78", headers=bearer(trigger)
    )
    assert response.status == 200, await response.text()


async def test_a_traccar_unit_is_found_by_its_tracker_id_before_its_device_name(
    client: Client,
) -> None:
    """The shipped `traccar-position` finds the vehicle as `traccar-event` does (docs/
    partners.md "Which vehicle an event is"): the one that carries the device's uniqueId,
    whatever the device is named. A unit named by the fleet's own scheme (`VAN0012`, a valid
    old-format plate no vehicle has) is not refused as an unknown plate, and a unit moved to
    another truck without renaming it (still named after the old truck's plate, its id
    given to the new one) writes its fixes on the new truck, where its events go; a device
    whose id no vehicle carries is found by its name."""
    await upload_shipped(client, "traccar-position")
    await upload_shipped(client, "traccar-event")
    trigger = await position_trigger(client, mapping="traccar-position")
    events = await create_trigger(client, name="traccar-events", mapping="traccar-event")
    van = await vehicle(client, plate="RIO2B34", attributes={"tracker_id": "358240051111110"})
    await vehicle(client, plate="ABC1D23")  # the truck the unit came from
    new = await vehicle(client, plate="XYZ9A87", attributes={"tracker_id": "358240052222220"})
    await vehicle(client, plate="QWE4R56")  # registered by plate alone
    now = datetime.now(UTC).replace(microsecond=0)
    forward = json.loads((PAYLOADS / "traccar_position_forward.json").read_text())
    event = json.loads((PAYLOADS / "traccar_event_forward_geofence_exit.json").read_text())
    for n, (name, unique_id, expected) in enumerate(
        [
            ("VAN0012", "358240051111110", van),
            ("ABC-1D23", "358240052222220", new),
            ("QWE4R56", "358240053333330", None),
        ]
    ):
        when = (now - timedelta(seconds=30 - n)).isoformat()
        forward["device"].update(name=name, uniqueId=unique_id)
        forward["position"].update(fixTime=when, deviceTime=when)
        status, answer = await hook(client, trigger, forward)
        assert status == 201, answer
        plate = "QWE4R56" if expected is None else expected["plate"]
        assert answer["vehicle"]["plate"] == plate, (name, answer)
        event["device"].update(name=name, uniqueId=unique_id)
        event["event"]["id"] = 1000 + n
        event["position"].update(fixTime=when, deviceTime=when)
        status, written = await hook(client, events, event)
        assert status == 200 and written["key"] == plate, (name, written)
    assert (await track(client))["items"] == []  # the old truck has none of them


async def test_an_unknown_vehicle_is_refused_kept_and_replays_once_it_exists(
    client: Client,
) -> None:
    trigger = await position_trigger(client)
    status, problem = await hook(client, trigger, fix(0))
    assert status == 422
    assert problem["errors"][0]["keyword"] == "unknown_vehicle"
    listed = await client.get(f"/api/v1/rejected?trigger_id={trigger['id']}", headers=auth())
    [kept] = (await listed.json())["items"]
    assert kept["reason"] == "entity"
    await vehicle(client)
    replayed = await client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=auth())
    assert replayed.status == 200, await replayed.text()
    assert (await replayed.json())["result"]["status"] == 201
    assert [f["time"] for f in (await track(client))["items"]] == [at(0)]


async def test_the_track_reads_in_cursor_pages_within_a_window_with_rejected_fixes_flagged(
    client: Client, services: Services
) -> None:
    car = await vehicle(client)
    trigger = await position_trigger(client)
    # Sent out of order: the track is in device-time order.
    status, body = await hook(client, trigger, [fix(s) for s in (30, 0, 20, 10, 40)])
    assert status == 200, body
    zero = body["results"][3]["id"]  # the fix at 10 s
    stored = await services.store.positions.track("acme", car["id"], None, None, None, 10)
    await services.store.positions.mark_rejected(
        "acme", {d["_id"]: "zero_position" for d in stored if str(d["_id"]) == zero}
    )
    first = await track(client, car["id"], "?limit=2")
    assert [f["time"] for f in first["items"]] == [at(0), at(10)]
    assert [f["rejected"] for f in first["items"]] == [None, "zero_position"]
    second = await track(client, "ABC1D23", f"?limit=2&cursor={first['next_cursor']}")
    assert [f["time"] for f in second["items"]] == [at(20), at(30)]
    window = await track(client, "ABC1D23", f"?from={at(10)}&to={at(40)}".replace("+", "%2B"))
    assert [f["time"] for f in window["items"]] == [at(10), at(20), at(30)]
    assert window["next_cursor"] is None


async def test_a_track_window_whose_plus_came_unencoded_keeps_its_offset(
    client: Client,
) -> None:
    """`?from=2026-12-01T17:45:10+05:45` sent unencoded arrives with a space for the `+`:
    a space before an offset at the end of a time is that `+` (12:00:10 UTC here)."""
    await vehicle(client)
    trigger = await position_trigger(client)
    await hook(client, trigger, [fix(s) for s in (0, 10, 20)])
    window = await track(client, "ABC1D23", "?from=2026-12-01T17:45:10+05:45")
    assert [f["time"] for f in window["items"]] == [at(10), at(20)]
    spaced = await track(client, "ABC1D23", "?to=2026-12-01T17:45:10%2005:45")
    assert [f["time"] for f in spaced["items"]] == [at(0)]  # `to` is exclusive


async def test_bad_track_queries_are_clear_errors(client: Client) -> None:
    await vehicle(client)
    bad = (
        "?from=yesterday",
        "?from=2026-12-01T00:00:00",  # no offset
        "?from=2026-12-01T00:00:00 0545",  # a space, then no offset RFC 3339 writes
        "?from=2026-12-01 05:45",  # a date and a time without its seconds, not an offset
        "?to=0001-01-01T00:00:00%2B05:00",  # before year 1 in UTC
        "?cursor=abc",
        "?cursor=1234567890123456",  # more digits than a cursor has (past the year 9999 is
        # an empty page: test_fleet_tracks.py)
        "?limit=0",
        "?plate=x",
    )
    for query in bad:
        response = await client.get(
            f"/api/v1/entities/vehicle/ABC1D23/positions{query}", headers=auth()
        )
        assert response.status == 400, query
    missing = await client.get("/api/v1/entities/vehicle/ZZZ9Z99/positions", headers=auth())
    assert missing.status == 404


async def test_a_position_trigger_get_shows_the_recent_track(client: Client) -> None:
    await vehicle(client, attributes={"tracker_id": "dev-42"})
    trigger = await position_trigger(client)
    await hook(client, trigger, [fix(0), fix(10)])
    for path in ("/ABC1D23", "?plate=ABC1D23", "?tracker_id=dev-42"):
        response = await client.get(f"/hooks/{trigger['id']}{path}", headers=bearer(trigger))
        assert response.status == 200, await response.text()
        recent = await response.json()
        assert [f["time"] for f in recent["items"]] == [at(10), at(0)]  # newest first
    nameless = await client.get(f"/hooks/{trigger['id']}", headers=bearer(trigger))
    assert nameless.status == 400
    # Two vehicles named: which one was meant would be a guess.
    for query in (
        "?plate=ABC1D23&plate=XYZ9Z99",
        "?plate=ABC1D23&tracker_id=dev-42",
        "/ABC1D23?plate=XYZ9Z99",
        "/ABC1D23?tracker_id=dev-42",
    ):
        twice = await client.get(f"/hooks/{trigger['id']}{query}", headers=bearer(trigger))
        assert twice.status == 400, query
        assert "one vehicle" in (await twice.json())["detail"]


async def test_a_position_trigger_get_refuses_a_parameter_it_does_not_take(
    client: Client,
) -> None:
    """`?limit=1`, `?from=`, `?cursor=` or a typo were ignored: the 50 newest fixes answered
    as if the filter applied. They are a 400, as an entity trigger's unknown filter is; the
    token parameter of a `token_in_query` trigger is no such parameter."""
    await vehicle(client)
    trigger = await position_trigger(client, auth={"token_in_query": "key"})
    await hook(client, trigger, [fix(0), fix(10)])
    url = f"/hooks/{trigger['id']}"
    for query in ("&limit=1", f"&from={at(5)}", "&cursor=junk", "&platee=ABC1D23", "&to="):
        response = await client.get(f"{url}?plate=ABC1D23{query}", headers=bearer(trigger))
        assert response.status == 400, (query, await response.text())
        assert "takes plate or tracker_id" in (await response.json())["detail"]
    by_path = await client.get(f"{url}/ABC1D23?limit=1", headers=bearer(trigger))
    assert by_path.status == 400
    in_query = await client.get(f"{url}?plate=ABC1D23&key={trigger['token']}")
    assert in_query.status == 200 and len((await in_query.json())["items"]) == 2


async def test_a_position_trigger_is_for_vehicles_and_keeps_its_target(client: Client) -> None:
    body = {"name": "x", "target": "positions", "entity_type": "driver"}
    response = await client.post("/api/v1/triggers", json=body, headers=auth())
    assert response.status == 422
    assert any(e["pointer"] == "/entity_type" for e in (await response.json())["errors"])
    nameless = await client.post("/api/v1/triggers", json={"name": "x"}, headers=auth())
    assert nameless.status == 422
    trigger = await position_trigger(client)
    patched = await client.patch(
        f"/api/v1/triggers/{trigger['id']}", json={"target": "entities"}, headers=auth()
    )
    assert patched.status == 422


async def test_the_shared_track_is_appended_in_batches(client: Client) -> None:
    coordinates = json.loads(TRACK.read_text())["geometry"]["coordinates"][:600]
    await vehicle(client)
    trigger = await position_trigger(client, max_batch_items=200)
    fixes = [
        {"plate": "ABC1D23", "time": at(5 * i), "lat": lat, "lon": lon}
        for i, (lon, lat) in enumerate(coordinates)
    ]
    for start in range(0, len(fixes), 200):
        status, body = await hook(client, trigger, fixes[start : start + 200])
        assert status == 200, body
        assert body["summary"]["stored"] == 200
    pages, cursor = 0, ""
    seen: list[str] = []
    while True:
        page = await track(client, query=f"?limit=200{cursor}")
        seen += [f["time"] for f in page["items"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == [f["time"] for f in fixes]


async def test_a_trigger_takes_only_mappings_of_its_target(client: Client) -> None:
    await upload_shipped(client, "osmand")  # a position mapping
    await upload_mapping(client, ENTITY_MAPPING)
    wrong = [
        {"name": "a", "entity_type": "vehicle", "mapping": "osmand"},
        {"name": "b", "target": "positions", "mapping": "erp-vehicle"},
    ]
    for spec in wrong:
        response = await client.post("/api/v1/triggers", json=spec, headers=auth())
        assert response.status == 422, spec
        errors = (await response.json())["errors"]
        assert [e["pointer"] for e in errors] == ["/mapping"]
    trigger = await position_trigger(client, mapping="osmand", format="form")
    assert trigger["mapping"] == "osmand"


ENTITY_MAPPING = """
name: erp-vehicle
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, required: true}
"""


async def test_a_mappings_items_pick_the_items_of_an_array_body_as_in_the_dry_run(
    client: Client,
) -> None:
    """flespi's stream mixes fixes with telemetry-only messages: its mapping's `items` keeps
    the fixes, live as in `POST /api/v1/mappings/test`."""
    await vehicle(client, attributes={"tracker_id": "353861053849681"})
    await upload_shipped(client, "flespi")
    trigger = await position_trigger(client, mapping="flespi")
    message = {"ident": "353861053849681", "timestamp": T0.timestamp(),
               "position.latitude": -23.55, "position.longitude": -46.63}  # fmt: skip
    telemetry = {"ident": "353861053849681", "timestamp": T0.timestamp() + 5,
                 "battery.voltage": 4.1}  # fmt: skip
    stream = [message, telemetry, {**message, "timestamp": T0.timestamp() + 10}]
    dry = await client.post(
        "/api/v1/mappings/test", json={"name": "flespi", "payload": stream}, headers=auth()
    )
    assert dry.status == 200, await dry.text()
    status, answer = await hook(client, trigger, stream)
    assert status == 200, answer  # a batch, every item stored
    assert len(answer["results"]) == len((await dry.json())["results"]) == 2
    assert [f["time"] for f in (await track(client))["items"]] == [at(0), at(10)]


async def test_a_polled_traccar_positions_page_appends_a_fix_per_device_and_again_none(
    client: Client,
) -> None:
    """Traccar's GET /api/positions page through the shipped mapping: each Position on the
    vehicle whose tracker id is Traccar's device id (a number or text), the device odometer
    in metres folded as km; the same page read again stores nothing twice."""
    await upload_shipped(client, "traccar-api-positions")
    trigger = await position_trigger(client, mapping="traccar-api-positions")
    await vehicle(client, attributes={"tracker_id": 7})
    await vehicle(client, plate="RIO2B34", attributes={"tracker_id": "12"})
    page = json.loads((PAYLOADS / "traccar_api_positions.json").read_text())
    now = datetime.now(UTC).replace(microsecond=0)
    page[0]["fixTime"] = (now - timedelta(minutes=2)).isoformat()
    page[1]["fixTime"] = (
        (now - timedelta(minutes=1)).astimezone(BRT).strftime("%Y-%m-%dT%H:%M:%S.000%z")
    )  # Traccar 4's `-0300`
    # (the sample's second Position has no GPS lock: the fold would refuse it, `no_fix`)
    page[1]["valid"] = True
    status, answer = await hook(client, trigger, page)
    assert status == 200 and answer["summary"]["stored"] == 2, answer
    assert [r["vehicle"]["plate"] for r in answer["results"]] == ["ABC1D23", "RIO2B34"]
    status, again = await hook(client, trigger, page)
    assert status == 200 and again["summary"]["duplicates"] == 2, again
    await client.app[services_key].fold.run_until_idle()
    response = await client.get("/api/v1/entities/vehicle/RIO2B34", headers=auth())
    rio = await response.json()
    assert rio["odometer_km"] == 152340.4 and rio["last_position"]["lat"] == -22.90685
