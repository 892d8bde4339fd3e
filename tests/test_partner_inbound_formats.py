"""Partners whose JSON does not arrive as `application/json`: AWS SNS posts `text/plain`, IoT
modules and curl without `-H` send no Content-Type (or curl's form type), log shippers and
trackers post JSON Lines batches, ERPs send integer ids wider than 64 bits. Every case goes
through a trigger over HTTP."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from tests.support import auth
from tests.test_position_triggers import fix, vehicle
from tests.triggers_support import (
    PAYLOADS,
    Client,
    bearer,
    create_position_trigger,
    create_trigger,
    upload_mapping,
    upload_shipped,
    vehicle_track,
)

FORM = "application/x-www-form-urlencoded"

ERP_VEHICLE = """
name: erp-vehicle
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, transforms: [plate]}
  attributes.erp_id: {from: id, transforms: [string]}
"""


async def _post(
    client: Client, trigger: dict[str, Any], data: bytes, content_type: str | None
) -> tuple[int, Any]:
    headers = bearer(trigger)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=data,
        headers=headers,
        skip_auto_headers=() if content_type is not None else ("Content-Type",),
    )
    return response.status, await response.json()


async def _vehicle(client: Client, plate: str = "ABC1D23") -> dict[str, Any]:
    response = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth("acme"))
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def test_json_sent_as_text_as_a_form_type_or_with_no_content_type_is_read_as_json(
    client: Client,
) -> None:
    trigger = await create_trigger(client)
    sent = ["text/plain; charset=UTF-8", "application/x-www-form-urlencoded", None]
    for year, content_type in enumerate(sent, start=2020):
        body = json.dumps({"plate": "ABC1D23", "make": "Fiat", "year": year}).encode()
        status, answer = await _post(client, trigger, b"\xef\xbb\xbf \n" + body, content_type)
        assert status in (200, 201), (content_type, answer)
        assert (await _vehicle(client))["year"] == year


async def test_a_body_that_is_not_json_under_another_type_is_still_a_415(client: Client) -> None:
    trigger = await create_trigger(client)
    for body, content_type in ((b"plate=ABC1D23", "text/plain"), (b"<placa/>", None)):
        status, problem = await _post(client, trigger, body, content_type)
        assert (status, problem["detail"]) == (
            415,
            f"expected application/json, got {content_type or 'no content type'}",
        )


async def test_malformed_json_under_a_text_type_is_a_400_that_says_where(client: Client) -> None:
    trigger = await create_trigger(client)
    status, problem = await _post(client, trigger, b'{"plate": "ABC1D23",', "text/plain")
    assert status == 400 and problem["detail"].startswith("malformed JSON"), problem


@pytest.mark.parametrize(
    ("body", "name"),
    [
        (b'{"plate": "ABC1D23", "plate": "XYZ9J87"}', "plate"),
        (b'{"plate" : "ABC1D23", "plate": "XYZ9J87"}', "plate"),  # a blank before a colon
        (b'{"plate": "ABC1D23", "attributes": {"km": 152340, "km": 15234}}', "km"),
        (b'{"plate": "ABC1D23", "attributes": {"a\\":": 1, "b": 2, "b": 3}}', "b"),
        (b'{"plate": "ABC1D23", "attributes": {"\\u00e9": 1, "\xc3\xa9": 2}}', "\u00e9"),
    ],
)
async def test_a_json_body_naming_a_member_twice_is_a_400_naming_it_and_writes_nothing(
    client: Client, body: bytes, name: str
) -> None:
    """Which of the two a partner meant would be a guess (RFC 8259 §4, RFC 7493 §2.3): a JSON
    reader keeps the last, a check in front of the gateway may have read the first."""
    trigger = await create_trigger(client)
    status, problem = await _post(client, trigger, body, "application/json")
    assert (status, problem["detail"]) == (
        400,
        f"malformed JSON: the member {json.dumps(name, ensure_ascii=False)} is given twice "
        "in one object (which one counts would be a guess)",
    ), problem
    listed = await client.get("/api/v1/entities/vehicle", headers=auth())
    assert (await listed.json())["items"] == []


async def test_members_that_only_look_repeated_in_the_raw_text_are_read(client: Client) -> None:
    """The same name in two objects, and a quote and colon inside a string: no member twice."""
    trigger = await create_trigger(client)
    body = b'{"plate": "ABC1D23", "attributes": {"note": "a\\": b", "x": {"note": 1}}}'
    status, answer = await _post(client, trigger, body, "application/json")
    assert status == 201, answer
    stored = await _vehicle(client)
    assert stored["attributes"] == {"note": 'a": b', "x": {"note": 1}}


async def test_a_json_lines_line_naming_a_member_twice_is_a_400(client: Client) -> None:
    await vehicle(client)
    trigger = await create_position_trigger(client)
    body = json.dumps(fix(0)).encode() + b'\n{"plate": "ABC1D23", "lat": 1, "lat": 2}'
    status, problem = await _post(client, trigger, body, "application/x-ndjson")
    assert status == 400 and 'the member "lat" is given twice' in problem["detail"], problem
    assert (await vehicle_track(client))["items"] == []


async def test_a_json_lines_batch_is_stored_as_the_batch_an_array_would_be(
    client: Client,
) -> None:
    await vehicle(client)
    trigger = await create_position_trigger(client)
    lines = b"\n".join(json.dumps(fix(s)).encode() for s in (0, 10, 20))
    for content_type in ("application/x-ndjson", "application/json"):
        status, answer = await _post(client, trigger, lines + b"\r\n\n", content_type)
        assert status == 200, (content_type, answer)
        assert answer["summary"]["items"] == 3
    page = await vehicle_track(client)
    assert [p["time"] for p in page["items"]] == [fix(s)["time"] for s in (0, 10, 20)]


async def test_a_json_lines_body_with_a_bad_line_is_a_400_naming_the_line(client: Client) -> None:
    await vehicle(client)
    trigger = await create_position_trigger(client)
    body = json.dumps(fix(0)).encode() + b'\n{"plate": \n' + json.dumps(fix(10)).encode()
    status, problem = await _post(client, trigger, body, "application/x-ndjson")
    assert status == 400 and problem["detail"].startswith("malformed JSON on line 2"), problem
    status, problem = await _post(client, trigger, b"[1, 2]\n", "application/x-ndjson")
    assert (status, problem["detail"]) == (
        400,
        "line 1 of the JSON Lines body is not a JSON object",
    )
    assert (await vehicle_track(client))["items"] == []


async def test_an_integer_wider_than_64_bits_keeps_every_digit_as_text(client: Client) -> None:
    await upload_mapping(client, ERP_VEHICLE)
    trigger = await create_trigger(client, mapping="erp-vehicle")
    body = b'{"placa": "ABC-1D23", "id": 123456789012345678901234567}'
    status, answer = await _post(client, trigger, body, "application/json")
    assert status == 201, answer
    assert (await _vehicle(client))["attributes"]["erp_id"] == "123456789012345678901234567"
    unmapped = await create_trigger(client, name="raw")
    wide = (
        b'{"plate": "XYZ9K87", '
        b'"attributes": {"u64": 18446744073709551615, "i64": -9223372036854775808}}'
    )
    status, answer = await _post(client, unmapped, wide, "application/json")
    assert status == 201, answer
    assert (await _vehicle(client, "XYZ9K87"))["attributes"] == {
        "u64": "18446744073709551615",
        "i64": -9223372036854775808,
    }


ERP_MODEL = """
name: erp-model
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, transforms: [plate]}
  model: {from: id}
"""


async def test_a_wide_integer_in_a_trigger_s_body_is_a_number_to_its_type_checks(
    client: Client,
) -> None:
    """A trigger reads its body as the admin API does: an integer past 64 bits was its text
    to the input schema and the entity's schema, so a field that wants text took it where
    a narrow number was refused. It is a number to them (the `string` transform gives its
    digits, and a free-form field keeps them: the test above). A problem of the entity's
    schema points at the payload member the field was mapped from."""
    await upload_mapping(client, ERP_VEHICLE)
    await upload_mapping(client, ERP_MODEL)
    schema = {"type": "object", "properties": {"id": {"type": "string"}}}
    checked = await create_trigger(
        client, name="checked", mapping="erp-vehicle", input_schema=schema
    )
    direct = await create_trigger(client, name="direct", mapping="erp-model")
    for number in (b"5", b"123456789012345678901234567"):
        body = b'{"placa": "ABC-1D23", "id": %s}' % number
        status, answer = await _post(client, checked, body, "application/json")
        assert (status, [e["pointer"] for e in answer["errors"]]) == (422, ["/id"]), answer
        status, answer = await _post(client, direct, body, "application/json")
        # the entity's schema refuses `model`: the problem points at its payload source
        assert (status, [e["pointer"] for e in answer["errors"]]) == (422, ["/id"]), answer
        assert answer["errors"][0]["message"].startswith("model (from id)"), answer
    status, answer = await _post(
        client, direct, b'{"placa": "ABC-1D23", "id": "123456789012345678901234567"}', None
    )
    assert status == 201, answer  # the same digits as text are text


async def test_from_json_keeps_every_digit_of_an_integer_wider_than_64_bits(
    client: Client,
) -> None:
    await upload_mapping(
        client,
        """
name: erp-form
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: from_json(payload).placa, transforms: [plate]}
  attributes.erp_id: {from: from_json(payload).id, transforms: [string]}
""",
    )
    trigger = await create_trigger(client, mapping="erp-form", format="form")
    form = b"payload=" + b'{"placa":"ABC-1D23","id":98765432109876543210}'.replace(b" ", b"")
    status, answer = await _post(client, trigger, form, "application/x-www-form-urlencoded")
    assert status == 201, answer
    assert (await _vehicle(client))["attributes"]["erp_id"] == "98765432109876543210"


async def test_an_osmand_value_left_blank_is_no_value_not_a_refused_fix(client: Client) -> None:
    """GPSLogger-style URL templates send `speed=` or `bearing=` when the phone does not know
    them: the fix is stored without them. A blank position is still a missing one."""
    await vehicle(client, attributes={"tracker_id": "353861053849681"})
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(
        client, mapping="osmand", format="form", auth={"token_in_query": "token"}
    )
    url = f"/hooks/{trigger['id']}?token={trigger['token']}&id=353861053849681"
    blanks = "&speed=&bearing=&altitude=%20&accuracy=&batt=&ignition="
    response = await client.get(f"{url}&lat=-23.5&lon=-46.6&timestamp=1795685112{blanks}")
    assert response.status == 201, await response.text()
    [stored] = (await vehicle_track(client))["items"]
    assert not {"speed_kmh", "heading", "accuracy_m", "ignition", "attributes"} & set(stored)
    response = await client.get(f"{url}&lat=&lon=-46.6&timestamp=1795685113")
    assert response.status == 422
    [problem] = (await response.json())["errors"]
    assert (problem["target"], problem["message"]) == ("lat", "required value is missing")


async def test_traccar_client_9_json_to_an_osmand_url_is_a_fix_like_its_query_string(
    client: Client,
) -> None:
    """Traccar Client 9 and later post JSON to the OsmAnd URL the phone was set up with: the
    form trigger reads it as JSON, and the shipped osmand mapping takes both forms."""
    await vehicle(client, attributes={"tracker_id": "353861053849681"})
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(
        client, mapping="osmand", format="form", auth={"token_in_query": "token"}
    )
    url = f"/hooks/{trigger['id']}?token={trigger['token']}"
    old_app = await client.get(f"{url}&id=353861053849681&lat=-23.5&lon=-46.6&timestamp=1795685112")
    assert old_app.status == 201, await old_app.text()
    body = (PAYLOADS / "traccar_client_json.json").read_bytes()
    new_app = await client.post(url, data=body, headers={"Content-Type": "application/json"})
    assert new_app.status == 201, await new_app.text()
    fixes = (await vehicle_track(client))["items"]
    assert [f["time"] for f in fixes] == ["2026-11-20T13:45:22.862Z", "2026-11-26T09:25:12Z"]
    json_fix = fixes[0]
    assert (json_fix["lat"], json_fix["lon"], json_fix["speed_kmh"]) == (-23.56118, -46.65578, 24.3)
    assert json_fix["attributes"]["battery_percent"] == 87


async def test_the_osmand_apps_speed_in_metres_per_second_is_read_by_the_triggers_param(
    client: Client,
) -> None:
    """Traccar Client sends knots (Traccar's reading of the protocol, the default); the OsmAnd
    app and GPSLogger send m/s: 27.78 m/s read as knots was 51.4 km/h instead of 100."""
    await vehicle(client, attributes={"tracker_id": "353861053849681"})
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(
        client,
        mapping="osmand",
        format="form",
        params={"speed_unit": "m/s"},
        auth={"token_in_query": "token"},
    )
    query = "id=353861053849681&lat=-23.5&lon=-46.6&timestamp=1795685112&speed=27.78"
    response = await client.get(f"/hooks/{trigger['id']}?token={trigger['token']}&{query}")
    assert response.status == 201, await response.text()
    [stored] = (await vehicle_track(client))["items"]
    assert stored["speed_kmh"] == 100.0


async def test_an_osmand_request_without_a_timestamp_is_a_fix_at_its_receipt_time(
    client: Client,
) -> None:
    """Traccar stamps an OsmAnd request without `timestamp` with the time it came (GPSLogger
    and many URL templates leave it out): a fix at the time received, marked so, where it
    was a 422. A replay of such a request kept for an unknown tracker keeps its first
    receipt's time, not the replay's."""
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(
        client, mapping="osmand", format="form", auth={"token_in_query": "token"}
    )
    url = f"/hooks/{trigger['id']}?token={trigger['token']}&id=353861053849681"
    before = datetime.now(UTC).replace(microsecond=0)
    unknown = await client.get(f"{url}&lat=-23.5&lon=-46.6")
    assert unknown.status == 422, await unknown.text()  # no vehicle has this tracker yet
    after = datetime.now(UTC)
    await vehicle(client, attributes={"tracker_id": "353861053849681"})
    response = await client.post(
        url, data=b"lat=-23.6&lon=-46.7&speed=10", headers={"Content-Type": FORM}
    )
    assert response.status == 201, await response.text()
    listed = await client.get(f"/api/v1/rejected?trigger_id={trigger['id']}", headers=auth())
    [kept] = (await listed.json())["items"]
    replayed = await client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=auth())
    assert replayed.status == 200, await replayed.text()
    first, second = sorted((await vehicle_track(client))["items"], key=lambda f: f["lat"])
    assert (second["lat"], first["lat"]) == (-23.5, -23.6)
    assert before <= datetime.fromisoformat(second["time"]) <= after
    assert datetime.fromisoformat(first["time"]) >= after
    assert first["attributes"]["time_received"] is second["attributes"]["time_received"] is True


def _multipart(fields: list[tuple[str, bytes, str]], boundary: str = "gw-b0undary") -> bytes:
    """A multipart/form-data body; each field (name, value, extra Content-Disposition)."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n'.encode()
        + (b"Content-Type: application/octet-stream\r\n" if "filename" in extra else b"")
        + b"\r\n"
        + value
        + b"\r\n"
        for name, value, extra in fields
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


async def test_an_osmand_multipart_form_is_read_like_its_urlencoded_form(client: Client) -> None:
    """HTML forms and some trackers post multipart/form-data: its text fields are the form's
    (it was a 415). An unused file input (no file name, nothing in it) is left out; a file is
    a 415 that names its field; the body limit is the trigger's, as for any body."""
    await vehicle(client, attributes={"tracker_id": "353861053849681"})
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(
        client,
        mapping="osmand",
        format="form",
        max_body_bytes=4096,
    )
    multipart = "multipart/form-data; boundary=gw-b0undary"
    fields = [
        ("id", b"353861053849681", ""),
        ("lat", b"-23.5", ""),
        ("lon", b"-46.6", ""),
        ("timestamp", b"1795685112", ""),
        ("photo", b"", '; filename=""'),
    ]
    status, answer = await _post(client, trigger, _multipart(fields), multipart)
    assert status == 201, answer
    [stored] = (await vehicle_track(client))["items"]
    assert (stored["lat"], stored["lon"], stored["time"]) == (-23.5, -46.6, "2026-11-26T09:25:12Z")
    with_file = [*fields[:4], ("photo", b"\xff\xd8\xff", '; filename="plate.jpg"')]
    status, problem = await _post(client, trigger, _multipart(with_file), multipart)
    assert (status, problem["detail"]) == (
        415,
        "form field 'photo' is a file (plate.jpg): a form trigger reads text fields only",
    )
    huge = [*fields[:4], ("note", b"x" * 5000, "")]
    status, problem = await _post(client, trigger, _multipart(huge), multipart)
    assert status == 413, problem
    status, problem = await _post(client, trigger, _multipart(fields)[:-20], multipart)
    assert status == 400 and problem["detail"].startswith("malformed multipart"), problem
    assert len((await vehicle_track(client))["items"]) == 1


async def test_osmand_json_takes_one_location_a_body_or_an_array_of_bodies_as_traccar_reads_it(
    client: Client,
) -> None:
    """Traccar's OsmAnd decoder reads `location` as one object; Traccar Client sends its
    offline buffer one fix a request. `{"location": [...]}` (a background-geolocation
    plugin's batchSync) is refused, every position field named and no fix at the receipt
    time; a JSON array of single-fix bodies is a batch, each fix stored."""
    await vehicle(client, attributes={"tracker_id": "353861053849681"})
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(client, mapping="osmand", format="form")
    one = json.loads((PAYLOADS / "traccar_client_json.json").read_bytes())
    later = {**one["location"], "timestamp": "2026-11-20T13:46:22.862Z"}
    listed = {**one, "location": [one["location"], later]}
    status, problem = await _post(client, trigger, json.dumps(listed).encode(), "application/json")
    assert status == 422, problem
    assert sorted(p["target"] for p in problem["errors"]) == ["lat", "lon", "time"]
    assert (await vehicle_track(client))["items"] == []
    bodies = [one, {**one, "location": later}]
    status, answer = await _post(client, trigger, json.dumps(bodies).encode(), "application/json")
    assert status == 200, answer
    assert answer["summary"] == {"items": 2, "stored": 2, "duplicates": 0, "failed": 0}
    times = [f["time"] for f in (await vehicle_track(client))["items"]]
    assert times == ["2026-11-20T13:45:22.862Z", "2026-11-20T13:46:22.862Z"]


async def test_a_mapped_fix_the_fix_refuses_names_the_payloads_path_and_the_good_items_land(
    client: Client,
) -> None:
    """A Traccar forward whose latitude is text (the mapping casts nothing there): the 422
    pointed at the fix's `/lat`, a path the partner never sent; it now points at
    `/position/latitude` and names target and source, as other mapping problems do. In a
    batch the other fixes are stored and the bad one is kept for replay."""
    await vehicle(client)
    await upload_shipped(client, "traccar-position")
    trigger = await create_position_trigger(client, mapping="traccar-position")
    forward = json.loads((PAYLOADS / "traccar_position_forward.json").read_bytes())
    bad = json.loads(json.dumps(forward))
    bad["position"]["latitude"] = "-23.56118"
    bad["position"]["fixTime"] = "2026-11-20T13:46:22.000+00:00"
    status, problem = await _post(client, trigger, json.dumps(bad).encode(), "application/json")
    assert (status, problem["reason"]) == (422, "mapping"), problem
    assert problem["errors"] == [
        {
            "pointer": "/position/latitude",
            "message": "lat (from position.latitude): a number",
            "keyword": "type",
            "target": "lat",
            "source": "position.latitude",
        }
    ]
    batch = json.dumps([forward, bad]).encode()
    status, answer = await _post(client, trigger, batch, "application/json")
    assert status == 207, answer
    assert [r["status"] for r in answer["results"]] == [201, 422]
    assert answer["results"][1]["problem"]["errors"][0]["pointer"] == "/position/latitude"
    assert [f["time"] for f in (await vehicle_track(client))["items"]] == ["2026-11-20T13:45:22Z"]
    listed = await client.get(f"/api/v1/rejected?trigger_id={trigger['id']}", headers=auth())
    assert [r["scope"] for r in (await listed.json())["items"]] == ["item", "body"]


async def test_an_osmand_body_without_a_form_type_is_read_as_the_form_it_is(
    client: Client,
) -> None:
    """Traccar reads an OsmAnd body as a query whatever its Content-Type; GPSLogger-style
    templates and curl post it as text/plain or with no type, and a line end after it. Those
    were 415s; other text under those types still is."""
    await vehicle(client, attributes={"tracker_id": "353861053849681"})
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(client, mapping="osmand", format="form")
    query = "id=353861053849681&lat=-23.5&lon=-46.6&timestamp=179568511"
    for second, content_type in enumerate(("text/plain; charset=utf-8", None)):
        body = f"{query}{second}\r\n".encode()
        status, answer = await _post(client, trigger, body, content_type)
        assert status == 201, (content_type, answer)
    fixes = (await vehicle_track(client))["items"]
    assert [(f["time"], f["lon"]) for f in fixes] == [
        ("2026-11-26T09:25:10Z", -46.6),
        ("2026-11-26T09:25:11Z", -46.6),
    ]
    status, problem = await _post(client, trigger, b"lat -23.5 lon -46.6", "text/plain")
    assert (status, problem["detail"]) == (
        415,
        "expected application/x-www-form-urlencoded, multipart/form-data or a query string, "
        "got text/plain",
    )


async def test_an_osmand_time_whose_plus_offset_came_unescaped_keeps_its_offset(
    client: Client,
) -> None:
    """`timestamp=2026-11-26T10:25:12+01:00` written into a URL unescaped (a tracker's URL
    template) arrives as `...12 01:00`, since `+` is a space in a query string: it was a
    422; it is the +01:00 it was sent as."""
    await vehicle(client, attributes={"tracker_id": "353861053849681"})
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(
        client, mapping="osmand", format="form", auth={"token_in_query": "token"}
    )
    url = f"/hooks/{trigger['id']}?token={trigger['token']}&id=353861053849681&lat=-23.5&lon=-46.6"
    for sent in ("2026-11-26T10:25:12+01:00", "2026-11-26T10:25:13.500+0100"):
        response = await client.get(URL(f"{url}&timestamp={sent}", encoded=True))
        assert response.status == 201, await response.text()
    times = [f["time"] for f in (await vehicle_track(client))["items"]]
    assert times == ["2026-11-26T09:25:12Z", "2026-11-26T09:25:13.500Z"]


async def test_a_form_body_after_a_byte_order_mark_keeps_its_first_field(client: Client) -> None:
    """A form saved by a Windows tool and posted with curl --data-binary @file starts with a
    UTF-8 byte order mark: its first field was read as `\\ufeffid`, and the fix refused."""
    await vehicle(client, attributes={"tracker_id": "353861053849681"})
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(client, mapping="osmand", format="form")
    body = b"\xef\xbb\xbfid=353861053849681&lat=-23.5&lon=-46.6&timestamp=1795685112\r\n"
    for content_type, expected in ((FORM, 201), ("text/plain", 200)):  # then a duplicate
        status, answer = await _post(client, trigger, body, content_type)
        assert status == expected, (content_type, answer)
    [stored] = (await vehicle_track(client))["items"]
    assert stored["time"] == "2026-11-26T09:25:12Z"


async def test_a_multipart_body_of_thousands_of_tiny_parts_is_refused_before_it_is_read(
    client: Client,
) -> None:
    """The parts are counted before any is read: a body of 5,000 tiny parts (256 KiB) held
    the event loop for over a second in the e-mail parser, every other request waiting."""
    trigger = await create_position_trigger(client, mapping=None, format="form")
    part = b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
    body = part * (250 * 1024 // len(part)) + b"--b--\r\n"
    started = time.process_time()  # the CPU spent (the loop held): load does not stretch it
    status, problem = await _post(client, trigger, body, "multipart/form-data; boundary=b")
    assert time.process_time() - started < 0.5
    assert (status, problem["detail"]) == (400, "more than 200 form fields")


async def test_a_multipart_part_with_a_broken_charset_is_a_400_not_a_500(client: Client) -> None:
    """A part's headers are the partner's bytes: an RFC 2231 name or a charset with a NUL in
    it raised inside the standard library (a 500)."""
    trigger = await create_position_trigger(client, mapping=None, format="form")
    multipart = "multipart/form-data; boundary=b"
    disposition = b"Content-Disposition: form-data; "
    bodies = [
        b"--b\r\n" + disposition + b"name*=UTF\x008''%C3\r\n\r\n1\r\n--b--\r\n",
        b"--b\r\n" + disposition + b'name="a"\r\nContent-Type: text/plain; charset="x\x00"'
        b"\r\n\r\nS\xe3o\r\n--b--\r\n",
    ]
    for body in bodies:
        status, problem = await _post(client, trigger, body, multipart)
        assert status == 400, problem
    assert problem["detail"].startswith("form field 'a'"), problem


async def test_a_mapped_integer_beyond_64_bits_is_the_same_422_at_the_dry_run_and_the_trigger(
    client: Client,
) -> None:
    """The database holds integers of 64 bits. A 20-digit battery level cast by `number`, a
    23-digit fine's points cast by `integer`: the dry run answered 500 (the answer could not
    be written), the trigger a 422 from the store. Each is refused as the field's value, a
    422 naming the field and its source, the same at the dry run and at the trigger."""
    await vehicle(client, attributes={"tracker_id": "353861053849681"})
    await upload_shipped(client, "osmand")
    await upload_shipped(client, "fine-feed")
    huge = "99999999999999999999"
    query = f"id=353861053849681&lat=-23.5&lon=-46.6&timestamp=1795685112&batt={huge}"
    fine = json.loads((PAYLOADS / "fine_feed.json").read_bytes())
    fine["pontos"] = "99999999999999999999999"
    cases = [
        ("osmand", query, "attributes.battery_percent", "batt", {"format": "form"}),
        ("fine-feed", fine, "points", "pontos", {"entity_type": "other", "kind": "fine"}),
    ]
    for name, payload, target, source, spec in cases:
        response = await client.post(
            "/api/v1/mappings/test", json={"name": name, "payload": payload}, headers=auth()
        )
        assert response.status == 422, (name, await response.text())
        [problem] = (await response.json())["errors"]
        assert problem["pointer"] == f"/payload/{source}"
        assert (problem["keyword"], problem["target"]) == ("cast", target)
        assert "beyond 64 bits" in problem["message"], problem
        dry_message = problem["message"]
        if name == "osmand":
            trigger = await create_position_trigger(client, mapping=name, **spec)
            status, problem = await _post(client, trigger, query.encode(), FORM)
        else:
            trigger = await create_trigger(client, name=name, mapping=name, **spec)
            status, problem = await _post(
                client, trigger, json.dumps(payload).encode(), "application/json"
            )
        assert status == 422, problem
        [error] = problem["errors"]
        assert (error["pointer"], error["target"]) == (f"/{source}", target)
        assert error["message"] == dry_message
    assert (await vehicle_track(client))["items"] == []
    # An integer of 64 bits still passes.
    fine["pontos"] = "9223372036854775807"
    response = await client.post(
        "/api/v1/mappings/test", json={"name": "fine-feed", "payload": fine}, headers=auth()
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["results"][0]["document"]["points"] == 2**63 - 1


async def test_an_osmand_driver_unique_id_is_kept_as_the_partners_id_not_made_a_cpf(
    client: Client,
) -> None:
    """Traccar's OsmAnd decoder passes `driverUniqueId` on as the driver's iButton or RFID id:
    the mapping padded its digits to a made-up CPF (`01A2B3C4D5E6` → `00000123456`, `ABCDEF`
    → `00000000000`). It is kept as sent, named as traccar-event names Traccar's driver id;
    a blank one is no id."""
    await vehicle(client, attributes={"tracker_id": "353861053849681"})
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(client, mapping="osmand", format="form")
    query = "id=353861053849681&lat=-23.5&lon=-46.6&timestamp=17956851"
    sent = ["01A2B3C4D5E6", "ABCDEF", "123456789012345", ""]
    for second, driver in enumerate(sent, start=10):
        body = f"{query}{second}&driverUniqueId={driver}".encode()
        status, answer = await _post(client, trigger, body, FORM)
        assert status == 201, (driver, answer)
    fixes = (await vehicle_track(client))["items"]
    assert [f.get("attributes") for f in fixes] == [
        {"traccar_driver_unique_id": "01A2B3C4D5E6"},
        {"traccar_driver_unique_id": "ABCDEF"},
        {"traccar_driver_unique_id": "123456789012345"},
        None,
    ]


async def test_a_battery_level_a_phone_does_not_know_is_left_out_by_both_traccar_client_mappings(
    client: Client,
) -> None:
    """Traccar Client reports `battery.level: -1` when the phone cannot read it: traccar-client
    stored `battery_percent: -100` where osmand (the same JSON to an OsmAnd URL) left it out.
    Both leave it out now; a known level is still a percentage."""
    await vehicle(client, attributes={"tracker_id": "353861053849681"})
    await upload_shipped(client, "traccar-client")
    await upload_shipped(client, "osmand")
    json_trigger = await create_position_trigger(client, mapping="traccar-client")
    form_trigger = await create_position_trigger(
        client, name="osmand", mapping="osmand", format="form"
    )
    body = json.loads((PAYLOADS / "traccar_client_json.json").read_bytes())
    sent = [(json_trigger, -1), (form_trigger, -1), (json_trigger, 0.5)]
    for minute, (trigger, level) in enumerate(sent):
        location = {
            **body["location"],
            "timestamp": f"2026-11-20T13:4{minute}:00Z",
            "battery": {"level": level, "is_charging": False},
        }
        data = json.dumps({**body, "location": location}).encode()
        status, answer = await _post(client, trigger, data, "application/json")
        assert status == 201, (level, answer)
    fixes = (await vehicle_track(client))["items"]
    assert [f["attributes"].get("battery_percent") for f in fixes] == [None, None, 50]


async def test_a_uint64_id_cast_to_integer_then_string_is_its_text_and_a_huge_one_a_clear_422(
    client: Client,
) -> None:
    """The 64-bit check is on a field's final value, not on a cast in between: an ERP's
    uint64 id through `[integer, string]` is its every digit (it was a 422), as through
    `to_string(to_number(...))`. Text Python will not read as an integer (over 4,300
    characters) is a 422 of ours naming the field, not Python's own message."""
    await upload_mapping(
        client,
        ERP_VEHICLE.replace("[string]", "[integer, string]")
        + '  attributes.erp_ref: "to_string(to_number(ref))"\n',
    )
    trigger = await create_trigger(client, mapping="erp-vehicle")
    uint64 = "18446744073709551615"
    body = json.dumps({"placa": "ABC-1D23", "id": uint64, "ref": uint64}).encode()
    status, answer = await _post(client, trigger, body, "application/json")
    assert status == 201, answer
    attributes = (await _vehicle(client))["attributes"]
    assert (attributes["erp_id"], attributes["erp_ref"]) == (uint64, uint64)
    huge = "0" * 4300 + "7"
    body = json.dumps({"placa": "ABC-1D23", "id": huge, "ref": "1"}).encode()
    status, problem = await _post(client, trigger, body, "application/json")
    assert status == 422, problem
    [error] = problem["errors"]
    assert (error["pointer"], error["target"], error["keyword"]) == (
        "/id",
        "attributes.erp_id",
        "cast",
    )
    assert error["message"].endswith("to integer: over 4,300 characters"), error


async def test_an_item_an_expression_made_an_integer_beyond_64_bits_is_refused_and_kept(
    client: Client,
) -> None:
    """A mapping's `items` expression can make an integer beyond 64 bits (`to_number` of a
    20-digit text): such an item is refused, and keeping it for replay answered 500 (its
    record could not be written as JSON); it is a 422 for that item, kept."""
    await upload_mapping(
        client,
        "name: numbers\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        'items: "map(&to_number(@), nums)"\nfields: {plate: plate}\n',
    )
    trigger = await create_trigger(client, mapping="numbers")
    body = json.dumps({"nums": ["99999999999999999999", "5"]}).encode()
    status, answer = await _post(client, trigger, body, "application/json")
    assert status in (207, 422), answer
    kept = await client.get(f"/api/v1/rejected?trigger_id={trigger['id']}", headers=auth())
    records = (await kept.json())["items"]
    assert len(records) == 2 and all(r["status"] == "pending" for r in records), records
    for record in records:
        detail = await client.get(f"/api/v1/rejected/{record['id']}", headers=auth())
        assert detail.status == 200, await detail.text()


async def test_a_record_set_keyed_by_plate_maps_an_item_per_member_with_to_entries(
    client: Client,
) -> None:
    """PHP's `json_encode` of an array indexed by plate (and Firebase's shape): the plate is
    only a member's name. `to_entries()` pairs each name with its value, in the order sent;
    before, the closest mapping wrote one vehicle's odometer on another."""
    await upload_mapping(
        client,
        "name: keyed\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "items: to_entries(veiculos)\nfields:\n"
        "  plate: {from: key, transforms: [plate]}\n  odometer_km: value.km\n",
    )
    trigger = await create_trigger(client, mapping="keyed")
    body = {"veiculos": {"ABC1D23": {"km": 152340}, "XYZ-9J87": {"km": 98000}}}
    status, answer = await _post(client, trigger, json.dumps(body).encode(), "application/json")
    assert status == 200, answer
    assert [r["key"] for r in answer["results"]] == ["ABC1D23", "XYZ9J87"]
    assert (await _vehicle(client, "ABC1D23"))["odometer_km"] == 152340
    assert (await _vehicle(client, "XYZ9J87"))["odometer_km"] == 98000
    status, problem = await _post(client, trigger, b'{"veiculos": [{"km": 1}]}', "application/json")
    assert status == 422, problem  # a list is no record set: the expression's problem
    assert problem["errors"][0]["keyword"] == "expression", problem


SNS_CONFIRMATION = {
    "Type": "SubscriptionConfirmation",
    "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
    "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd",
    "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
    "Message": "You have chosen to subscribe to the topic MyTopic.",
    "SubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&Token=2336",
    "Timestamp": "2012-04-26T20:45:04.751Z",
}

SNS_MAPPING = """
name: sns-vehicle
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: from_json(Message).placa, transforms: [plate]}
"""


async def test_an_sns_confirmation_is_kept_under_rejected_only_with_the_token_in_the_query(
    client: Client,
) -> None:
    """docs/partners.md "AWS SNS": SNS posts `text/plain` JSON and sends no header of ours,
    only the subscription's URL. A trigger taking its token in the query (as the page says to
    make it) keeps the confirmation, which its mapping does not fit, under /rejected with its
    SubscribeURL and Token; one wanting `Authorization: Bearer` answers 401 and keeps nothing
    (the page said it was kept, whatever the trigger's auth)."""
    await upload_mapping(client, SNS_MAPPING)
    page = (Path(__file__).resolve().parents[1] / "docs" / "partners.md").read_text()
    paragraph = page.split("**AWS SNS**", 1)[1].split("\n\n", 1)[0]
    spec = re.search(r'`"auth": (\{"token_in_query": "(\w+)"\})`', paragraph)
    assert spec is not None, paragraph
    body = json.dumps(SNS_CONFIRMATION).encode()
    headers = {"Content-Type": "text/plain; charset=UTF-8"}
    plain = await create_trigger(client, name="sns-bearer", mapping="sns-vehicle")
    response = await client.post(f"/hooks/{plain['id']}", data=body, headers=headers)
    assert response.status == 401, await response.text()
    trigger = await create_trigger(
        client, name="sns", mapping="sns-vehicle", auth=json.loads(spec.group(1))
    )
    subscribed = f"/hooks/{trigger['id']}?{spec.group(2)}={trigger['token']}"
    response = await client.post(subscribed, data=body, headers=headers)
    assert response.status == 422, await response.text()
    for made, count in ((plain, 0), (trigger, 1)):
        kept = await client.get(f"/api/v1/rejected?trigger_id={made['id']}", headers=auth())
        assert len((await kept.json())["items"]) == count, made["name"]
    record = (await kept.json())["items"][0]
    detail = await (await client.get(f"/api/v1/rejected/{record['id']}", headers=auth())).json()
    assert detail["payload"]["SubscribeURL"] == SNS_CONFIRMATION["SubscribeURL"], detail
    assert detail["payload"]["Token"] == SNS_CONFIRMATION["Token"]
