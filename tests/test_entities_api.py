"""/api/v1/entities and /api/v1/events through HTTP against the real database."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.schemas.ids import e164
from gateway.web.state import services_key
from tests.partner_double import post
from tests.support import admin_token, auth

Client = TestClient[Any, Any]

VEHICLE = {
    "plate": "abc-1234",
    "renavam": "86769597308",
    "make": "Fiat",
    "model": "Strada",
    "year": 2022,
    "status": "active",
    "odometer_km": 1200.5,
    "group": "north",
}
DRIVER = {
    "name": "Maria Souza",
    "cpf": "529.982.247-25",
    "phone": "+5511999990000",
    "cnh": {"number": "09770304734", "category": "B", "expires_on": "2030-01-31"},
}


async def _create(
    client: Client, etype: str, doc: dict[str, Any], tenant: str = "acme"
) -> dict[str, Any]:
    response = await client.post(f"/api/v1/entities/{etype}", json=doc, headers=auth(tenant))
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def test_created_vehicle_is_normalised_and_has_a_stable_id(client: Client) -> None:
    created = await _create(client, "vehicle", VEHICLE)
    assert created["plate"] == "ABC1234" and created["id"] and created["version"] == 1
    by_id = await client.get(f"/api/v1/entities/vehicle/{created['id']}", headers=auth())
    assert (await by_id.json())["id"] == created["id"]


async def test_vehicle_is_found_by_its_mercosul_twin_plate(client: Client) -> None:
    created = await _create(client, "vehicle", VEHICLE)
    response = await client.get("/api/v1/entities/vehicle/ABC1C34", headers=auth())
    assert response.status == 200
    assert (await response.json())["id"] == created["id"]


async def test_a_patch_converts_a_plate_to_mercosul_and_never_back(client: Client) -> None:
    created = await _create(client, "vehicle", VEHICLE)
    url = f"/api/v1/entities/vehicle/{created['id']}"
    response = await client.patch(url, json={"plate": "ABC1C34"}, headers=auth())
    assert (await response.json())["changed"] == ["plate"]
    response = await client.patch(url, json={"plate": "abc-1234", "make": "VW"}, headers=auth())
    body = await response.json()
    assert response.status == 200 and body["changed"] == ["make"]
    assert body["plate"] == "ABC1C34"


async def test_duplicate_natural_key_is_409_even_across_plate_formats(client: Client) -> None:
    await _create(client, "vehicle", VEHICLE)
    response = await client.post(
        "/api/v1/entities/vehicle", json={"plate": "ABC1C34"}, headers=auth()
    )
    assert response.status == 409
    assert (await response.json())["status"] == 409


async def test_invalid_identifier_names_the_field_and_the_reason(client: Client) -> None:
    response = await client.post(
        "/api/v1/entities/driver", json={**DRIVER, "cpf": "529.982.247-26"}, headers=auth()
    )
    assert response.status == 422
    body = await response.json()
    assert response.content_type == "application/problem+json"
    [error] = body["errors"]
    assert error["pointer"] == "/cpf" and "check digit" in error["message"]


async def test_every_failing_field_is_listed(client: Client) -> None:
    bad = {"plate": "AB12345", "year": "new", "status": "flying", "colour": "red"}
    response = await client.post("/api/v1/entities/vehicle", json=bad, headers=auth())
    assert response.status == 422
    pointers = {e["pointer"] for e in (await response.json())["errors"]}
    assert {"/plate", "/year", "/status"} <= pointers


async def test_past_a_hundred_problems_the_answer_lists_a_hundred_and_counts_the_rest(
    client: Client,
) -> None:
    """30,000 wrong array items, or 3,000 unknown members (to an entity's schema, or a
    route's own), were answered with every one listed: megabytes out of a 60 KB body."""
    bodies = {
        "/api/v1/entities/vehicle": {"plate": "ABC1D23", "groups": [0] * 30_000},
        "/api/v1/entities/driver": {**DRIVER, **{f"x{i}": 0 for i in range(3_000)}},
        "/api/v1/geofences": {f"x{i}": 0 for i in range(3_000)},
    }
    for path, body in bodies.items():
        response = await client.post(path, json=body, headers=auth())
        assert response.status == 422, path
        text = await response.read()
        problem = await response.json()
        assert len(problem["errors"]) == 100, path
        assert problem["errors_omitted"] >= 2_900, path
        assert len(text) < 20_000, (path, len(text))


_NOT_ANY = "is not valid under any of the schemas listed in the '%s' keyword"


async def test_values_failing_an_any_of_past_fifty_are_one_problem_each_counted_once(
    client: Client,
) -> None:
    """Past 100 error entries, the answer was built from the evaluation's entries, which list
    each failed branch of an anyOf/oneOf: 60 wrong items were 100 problems listed twice each
    (`type`, "not of type string", then "integer") and 20 more omitted."""
    slot = {"type": "object", "properties": {"n": {"type": "string"}}}
    schema = {
        "type": "object",
        "$defs": {"text": {"type": "string"}, "number": {"type": "integer"}},
        "properties": {
            # branches that are $refs: entries at the subschemas they name, one named from
            # another place too
            "label": {"$ref": "#/$defs/text"},
            "codes": {
                "type": "array",
                "items": {"anyOf": [{"$ref": "#/$defs/text"}, {"$ref": "#/$defs/number"}]},
            },
            "slots": {"type": "array", "items": {"oneOf": [slot, {"type": "array"}]}},
            "shifts": {
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
        },
    }
    kind = {"name": "crew", "schema": schema}
    assert (await client.post("/api/v1/kinds", json=kind, headers=auth())).status == 201
    for count in (60, 150):  # fewer problems than an answer lists, and more
        body = {
            "kind": "crew",
            "key": f"c{count}",
            "codes": [None] * 3,
            "slots": [{"n": 1}],
            "shifts": [None] * count,
        }
        answer = await client.post("/api/v1/entities/other", json=body, headers=auth())
        problem = await answer.json()
        assert answer.status == 422, problem
        listed = [(e["pointer"], e["keyword"], e["message"]) for e in problem["errors"]]
        expected = [
            *[(f"/codes/{i}", "anyOf", f"/codes/{i}: null {_NOT_ANY % 'anyOf'}") for i in range(3)],
            ("/slots/0", "oneOf", f'/slots/0: {{"n":1}} {_NOT_ANY % "oneOf"}'),
            *[
                (f"/shifts/{i}", "anyOf", f"/shifts/{i}: null {_NOT_ANY % 'anyOf'}")
                for i in range(count)
            ],
        ]
        assert listed == expected[:100], listed[:3]
        assert problem.get("errors_omitted", 0) == len(expected) - len(listed)


async def test_patch_reports_changes_and_emits_entity_updated_with_old_and_new(
    client: Client,
) -> None:
    created = await _create(client, "vehicle", VEHICLE)
    response = await client.patch(
        f"/api/v1/entities/vehicle/{created['id']}",
        json={"odometer_km": 1300, "status": "maintenance"},
        headers=auth(),
    )
    assert response.status == 200
    body = await response.json()
    assert body["changed"] == ["odometer_km", "status"] and body["version"] == 2
    await client.app[services_key].relay.run_until_idle()
    events = await (await client.get("/api/v1/events?type=entity.updated", headers=auth())).json()
    [event] = events["items"]
    assert event["entity"]["id"] == created["id"]
    assert {"field": "odometer_km", "old": 1200.5, "new": 1300} in event["changes"]


# A JSON Reference / JSON-LD style link: PyMongo reads any object with `$ref` and `$id` members
# back as a bson DBRef unless told otherwise (gateway/store/client.py `_PlainReference`).
LINK = {"$ref": "vehicles", "$id": "abc", "$db": "erp", "note": {"$ref": "x", "$id": 1}}


async def test_an_object_with_ref_and_id_members_reads_back_as_written(client: Client) -> None:
    created = await _create(client, "vehicle", {"plate": "DBR1234", "attributes": {"r": LINK}})
    got = await (await client.get("/api/v1/entities/vehicle/DBR1234", headers=auth())).json()
    assert got["attributes"]["r"] == LINK
    response = await client.patch(
        f"/api/v1/entities/vehicle/{created['id']}",
        json={"attributes": {"r": LINK}, "year": 2020},
        headers=auth(),
    )
    assert (await response.json())["changed"] == ["year"]  # the same link is no change
    await client.app[services_key].relay.run_until_idle()
    events = await (await client.get("/api/v1/events", headers=auth())).json()
    updated, created_event = events["items"]  # newest first
    assert created_event["data"]["attributes"]["r"] == LINK
    assert updated["changes"] == [{"field": "year", "old": None, "new": 2020}]
    assert updated["data"]["attributes"]["r"] == LINK


async def test_create_and_delete_emit_events_and_free_the_key(client: Client) -> None:
    created = await _create(client, "driver", DRIVER)
    response = await client.delete(f"/api/v1/entities/driver/{created['id']}", headers=auth())
    assert response.status == 204
    gone = await client.get(f"/api/v1/entities/driver/{created['id']}", headers=auth())
    assert gone.status == 404
    await _create(client, "driver", DRIVER)  # the CPF is free again
    await client.app[services_key].relay.run_until_idle()
    events = await (await client.get("/api/v1/events", headers=auth())).json()
    assert [e["type"] for e in events["items"]] == [
        "entity.created",
        "entity.deleted",
        "entity.created",
    ]


async def test_list_filters_on_indexed_fields_and_paginates(client: Client) -> None:
    for n in range(5):
        await _create(client, "vehicle", {"plate": f"ABC1D2{n}", "group": "g1" if n % 2 else "g2"})
    first = await (
        await client.get("/api/v1/entities/vehicle?group=g2&limit=2", headers=auth())
    ).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = await (
        await client.get(
            f"/api/v1/entities/vehicle?group=g2&limit=2&cursor={first['next_cursor']}",
            headers=auth(),
        )
    ).json()
    assert [v["plate"] for v in first["items"] + rest["items"]] == ["ABC1D20", "ABC1D22", "ABC1D24"]
    assert rest["next_cursor"] is None
    bad = await client.get("/api/v1/entities/vehicle?colour=red", headers=auth())
    assert bad.status == 400 and "cannot filter vehicle by colour" in (await bad.json())["detail"]


async def test_filters_are_normalised_like_the_stored_identifiers(client: Client) -> None:
    """The admin list and a trigger's GET share one filter rule (EntityService.filters)."""
    await _create(client, "vehicle", {"plate": "ABC1D23", "renavam": "86769597308"})
    fine = {"kind": "fine", "key": "SP1", "ait_number": "SP1", "plate": "ABC1D23"}
    await _create(client, "other", {**fine, "amount_brl": 130.16, "status": "open"})
    for query in ("vehicle?plate=abc-1d23", "vehicle?renavam=8676959730-8", "other?key=SP1"):
        answer = await client.get(f"/api/v1/entities/{query}", headers=auth())
        assert answer.status == 200 and len((await answer.json())["items"]) == 1, query


async def test_plate_filter_finds_the_vehicle_by_either_spelling(client: Client) -> None:
    """A filter by plate finds the vehicle under its old or Mercosul spelling, as a get does."""
    created = await _create(client, "vehicle", {"plate": "ABC1234", "group": "north"})
    await _create(client, "vehicle", {"plate": "XYZ9K87", "group": "north"})
    for plate in ("ABC1234", "abc-1c34", "ABC1C34"):
        for query in (f"plate={plate}", f"plate={plate}&group=north"):
            answer = await client.get(f"/api/v1/entities/vehicle?{query}", headers=auth())
            items = (await answer.json())["items"]
            assert [v["id"] for v in items] == [created["id"]], query
    for query in ("plate=ABC1C34&group=south", "plate=not-a-plate"):
        answer = await client.get(f"/api/v1/entities/vehicle?{query}", headers=auth())
        assert answer.status == 200 and (await answer.json())["items"] == [], query


async def test_plate_filter_finds_fines_issued_to_either_spelling_of_the_plate(
    client: Client,
) -> None:
    """A vehicle re-plated FIN1234 -> FIN1C34 is one vehicle: its fines under both plates."""
    fine = {"kind": "fine", "ait_number": "SP900", "amount_brl": 10, "status": "open"}
    old = await _create(client, "other", {**fine, "key": "SP900", "plate": "fin-1234"})
    new = await _create(client, "other", {**fine, "key": "SP901", "plate": "FIN1C34"})
    await _create(client, "other", {**fine, "key": "SP902", "plate": "FIN1D34"})
    for plate in ("FIN1234", "fin-1c34", "FIN1C34"):
        for query in (f"plate={plate}", f"kind=fine&plate={plate}", f"plate={plate}&status=open"):
            answer = await client.get(f"/api/v1/entities/other?{query}", headers=auth())
            items = (await answer.json())["items"]
            assert [f["id"] for f in items] == [old["id"], new["id"]], query
    for query in ("plate=FIN1C34&status=paid", "plate=not-a-plate"):
        answer = await client.get(f"/api/v1/entities/other?{query}", headers=auth())
        assert answer.status == 200 and (await answer.json())["items"] == [], query


async def test_plate_filter_finds_a_kinds_free_text_plate_by_the_value_it_stored(
    client: Client,
) -> None:
    """A kind whose `plate` is free text (no `format: plate`) keeps it as sent: `?plate=`
    finds it by that very text, as well as by its normalised spellings; a vehicle's filter
    takes any spelling."""
    schema = {"type": "object", "properties": {"plate": {"type": "string"}}}
    kind = await client.post(
        "/api/v1/kinds", json={"name": "pedagio", "schema": schema}, headers=auth()
    )
    assert kind.status == 201
    for key, plate in (("P1", "abc-1234"), ("P2", "MOTO 77"), ("P3", "ABC1C34")):
        created = await _create(client, "other", {"kind": "pedagio", "key": key, "plate": plate})
        assert created["plate"] == plate  # stored as sent
    found = {}
    for plate in ("abc-1234", "MOTO 77", "moto-77", "ABC1234"):
        query = {"kind": "pedagio", "plate": plate}
        answer = await client.get("/api/v1/entities/other", params=query, headers=auth())
        found[plate] = sorted(i["key"] for i in (await answer.json())["items"])
    assert found == {"abc-1234": ["P1", "P3"], "MOTO 77": ["P2"], "moto-77": [], "ABC1234": ["P3"]}
    await _create(client, "vehicle", VEHICLE)
    query = {"plate": "abc.1c34"}
    answer = await client.get("/api/v1/entities/vehicle", params=query, headers=auth())
    assert [v["plate"] for v in (await answer.json())["items"]] == ["ABC1234"]


async def test_other_tenant_sees_404_never_the_data(client: Client) -> None:
    created = await _create(client, "vehicle", VEHICLE, tenant="acme")
    response = await client.get(f"/api/v1/entities/vehicle/{created['id']}", headers=auth("globex"))
    assert response.status == 404
    assert "Fiat" not in await response.text()
    listed = await (await client.get("/api/v1/entities/vehicle", headers=auth("globex"))).json()
    assert listed["items"] == []


async def test_fine_is_an_other_entity_reachable_by_kind_and_key(client: Client) -> None:
    fine = {
        "kind": "fine",
        "key": "AIT123",
        "ait_number": "AIT123",
        "plate": "ABC1D23",
        "amount_brl": 195.23,
        "status": "open",
    }
    created = await _create(client, "other", fine)
    response = await client.get("/api/v1/entities/other/fine:AIT123", headers=auth())
    assert response.status == 200
    assert (await response.json())["id"] == created["id"]


async def test_a_fine_with_its_authority_is_keyed_by_authority_and_ait_or_refused(
    client: Client,
) -> None:
    """Keyed in under its AIT alone, a fine of authority 261810 would be a second fine beside
    the one the provider's notice stores (`261810:A123`): refused, naming the key, writing
    nothing; so is a change of its authority that its key no longer says."""
    fine = {"kind": "fine", "ait_number": "a123", "authority": "261810", "plate": "ABC1D23"}
    fine |= {"amount_brl": 130.16, "status": "open"}
    response = await client.post(
        "/api/v1/entities/other", json={**fine, "key": "A123"}, headers=auth()
    )
    problem = await response.json()
    assert response.status == 422
    assert response.headers["Content-Type"].startswith("application/problem+json")
    [error] = problem["errors"]
    assert (error["pointer"], error["keyword"]) == ("/key", "key")
    assert "'261810:A123', not 'A123'" in error["message"]
    listed = await client.get("/api/v1/entities/other?kind=fine", headers=auth())
    assert (await listed.json())["items"] == []
    await _create(client, "other", {**fine, "key": "261810:A123"})
    response = await client.patch(
        "/api/v1/entities/other/fine:261810:A123", json={"authority": "125100"}, headers=auth()
    )
    assert response.status == 422, await response.text()


async def test_admin_token_problems_are_401_and_viewer_writes_are_403(client: Client) -> None:
    url = "/api/v1/entities/vehicle"
    assert (await client.get(url)).status == 401
    forged = admin_token(secret="another-secret-key-that-nobody-here-uses-000")
    assert (await client.get(url, headers={"Authorization": f"Bearer {forged}"})).status == 401
    expired = admin_token(now=time.time() - 7200)
    response = await client.get(url, headers={"Authorization": f"Bearer {expired}"})
    assert response.status == 401 and "WWW-Authenticate" in response.headers
    assert (await client.get(url, headers=auth(role="viewer"))).status == 200
    response = await client.post(url, json=VEHICLE, headers=auth(role="viewer"))
    assert response.status == 403


async def test_bad_bodies_get_clear_errors_and_write_nothing(client: Client) -> None:
    url = "/api/v1/entities/vehicle"
    malformed = await client.post(
        url, data=b'{"plate": ', headers={**auth(), "Content-Type": "application/json"}
    )
    assert malformed.status == 400 and "malformed JSON" in (await malformed.json())["detail"]
    twice = await client.post(
        url,
        data=b'{"plate": "XYZ9J87", "plate": "ABC1234"}',
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert twice.status == 400, await twice.text()
    assert 'the member "plate" is given twice' in (await twice.json())["detail"]
    wrong_type = await client.post(
        url,
        data=b"plate=ABC1234",
        headers={**auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert wrong_type.status == 415
    unknown = await client.post("/api/v1/entities/spaceship", json={}, headers=auth())
    assert unknown.status == 404
    listed = await (await client.get(url, headers=auth())).json()
    assert listed["items"] == []


async def test_list_combines_filters_and_follows_changes(client: Client) -> None:
    await _create(client, "vehicle", {"plate": "ABC1D20", "group": "g1", "status": "active"})
    await _create(client, "vehicle", {"plate": "ABC1D21", "group": "g1", "status": "inactive"})
    await _create(client, "vehicle", {"plate": "ABC1D22", "group": "g2", "status": "active"})
    url = "/api/v1/entities/vehicle?group=g1&status=active"
    listed = await (await client.get(url, headers=auth())).json()
    assert [v["plate"] for v in listed["items"]] == ["ABC1D20"]
    await client.patch(
        "/api/v1/entities/vehicle/ABC1D21", json={"status": "active"}, headers=auth()
    )
    listed = await (await client.get(url, headers=auth())).json()
    assert [v["plate"] for v in listed["items"]] == ["ABC1D20", "ABC1D21"]


async def _post_raw(client: Client, body: bytes, content_type: str = "application/json") -> Any:
    return await client.post(
        "/api/v1/entities/vehicle", data=body, headers={**auth(), "Content-Type": content_type}
    )


async def test_an_integer_wider_than_64_bits_keeps_every_digit_as_a_trigger_keeps_it(
    client: Client,
) -> None:
    """docs/triggers.md "Integers wider than 64 bits": orjson made one past 2**64 a float that
    lost digits (1e+20), and one past 2**63 - 1 an integer BSON refused, a 422 with no
    pointer. Now the admin API keeps their text, and integers in the 64-bit range stay
    numbers."""
    body = (
        b'{"plate": "AAB3338", "attributes": {"big": 99999999999999999999,'
        b' "u64": 18446744073709551615, "low": -9223372036854775809,'
        b' "max": 9223372036854775807, "ids": [123456789012345678901234567890]}}'
    )
    created = await _post_raw(client, body)
    assert created.status == 201, await created.text()
    wide = {
        "big": "99999999999999999999",
        "u64": "18446744073709551615",
        "low": "-9223372036854775809",
        "max": 2**63 - 1,
        "ids": ["123456789012345678901234567890"],
    }
    assert (await created.json())["attributes"] == wide
    patched = await client.patch(
        "/api/v1/entities/vehicle/AAB3338",
        data=b'{"attributes": {"more": 100000000000000000000}}',
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert patched.status == 200, await patched.text()
    got = await (await client.get("/api/v1/entities/vehicle/AAB3338", headers=auth())).json()
    assert got["attributes"] == {**wide, "more": "100000000000000000000"}


async def test_a_wide_integer_where_text_is_wanted_is_a_422_as_a_narrow_number_is(
    client: Client,
) -> None:
    """An integer past 64 bits was read as its text before any type was checked, so where
    the admin API wants text it passed where a narrow number was refused: a replay's
    `trigger_id`, an assignment's `driver`, a driver's name (stored as "1234..."), a
    partner's name, and a kind's `const` or `enum` (registered as text, which then matched
    the text). It is a number to every type check; a free-form field keeps its digits."""
    wide = b"123456789012345678901234567890"

    async def sent(path: str, body: bytes) -> tuple[int, Any]:
        response = await client.post(
            path, data=body, headers={**auth(), "Content-Type": "application/json"}
        )
        return response.status, await response.json()

    def pointers(answer: Any) -> list[str]:
        return [e["pointer"] for e in answer["errors"]]

    await post(client, "/api/v1/entities/vehicle", {"plate": "AAB3341"})
    for number in (b"5", wide):
        status, answer = await sent("/api/v1/rejected/replay", b'{"trigger_id": %s}' % number)
        assert (status, pointers(answer)) == (422, ["/trigger_id"]), (number, answer)
        drivers = "/api/v1/entities/vehicle/AAB3341/drivers"
        status, answer = await sent(drivers, b'{"driver": %s}' % number)
        assert (status, pointers(answer)) == (422, ["/driver"]), (number, answer)
        status, answer = await sent(
            "/api/v1/entities/driver", b'{"name": %s, "cpf": "52998224725"}' % number
        )
        assert (status, pointers(answer)) == (422, ["/name"]), (number, answer)
        status, answer = await sent(
            "/api/v1/partners", b'{"name": %s, "base_url": "https://erp.example.com"}' % number
        )
        assert status == 422 and "/name" in pointers(answer), (number, answer)
    status, answer = await sent("/api/v1/entities/driver", b'{"name": %s, "cpf": "5"}' % wide)
    assert f"/name: {wide.decode()} is not of type" in answer["detail"], answer  # a number
    for keyword, value, at in (
        ("const", wide, "/const"),
        ("enum", b"[1, %s]" % wide, "/enum/1"),
        ("default", wide, "/default"),
    ):
        schema = b'{"type": "object", "properties": {"a": {"%s": %s}}}' % (keyword.encode(), value)
        status, answer = await sent(
            "/api/v1/kinds", b'{"name": "k_%s", "schema": %s}' % (keyword.encode(), schema)
        )
        where = f"/schema/properties/a{at}"
        assert (status, pointers(answer)) == (422, [where]), (keyword, answer)
        assert "integer beyond 64 bits" in answer["errors"][0]["message"], answer
    # A number field with no bound: the database holds no number that wide.
    await post(
        client,
        "/api/v1/kinds",
        {"name": "tyre", "schema": {"type": "object", "properties": {"km": {"type": "integer"}}}},
    )
    status, answer = await sent(
        "/api/v1/entities/other", b'{"kind": "tyre", "key": "t1", "km": %s}' % wide
    )
    assert (status, pointers(answer)) == (422, ["/km"]), answer
    assert "integer beyond 64 bits" in answer["errors"][0]["message"], answer
    status, answer = await sent(
        "/api/v1/entities/vehicle", b'{"plate": "AAB3340", "attributes": {"erp": %s}}' % wide
    )
    assert status == 201 and answer["attributes"] == {"erp": wide.decode()}, answer


async def test_a_wide_integer_where_a_number_is_wanted_is_a_422_naming_it(
    client: Client,
) -> None:
    """A field, a setting or a schema's bound that must be a number refuses the text at its
    pointer (and so does every route: its body is read the same way)."""
    wide = b"18446744073709551615"
    year = await _post_raw(client, b'{"plate": "AAB3339", "year": %s}' % wide)
    assert year.status == 422
    assert [e["pointer"] for e in (await year.json())["errors"]] == ["/year"]
    trigger = await client.post(
        "/api/v1/triggers",
        data=b'{"name": "t", "entity_type": "vehicle", "max_batch_items": %s}' % wide,
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert trigger.status == 422
    assert [e["pointer"] for e in (await trigger.json())["errors"]] == ["/max_batch_items"]
    listed = await (await client.get("/api/v1/entities/vehicle", headers=auth())).json()
    assert listed["items"] == []


async def test_an_admin_body_is_read_in_the_encodings_a_trigger_reads(client: Client) -> None:
    """docs/triggers.md "Encodings": a UTF-8 byte order mark is ignored and a body that names
    its charset is read in it; the admin API answered 400 to both (the Latin-1 one speaking
    of surrogates nobody sent)."""
    bom = await _post_raw(client, '\ufeff{"plate": "BOM1234"}'.encode())
    assert bom.status == 201, await bom.text()
    latin_1 = await _post_raw(
        client,
        b'{"plate": "LAT1234", "make": "Citro\xebn"}',
        "application/json; charset=ISO-8859-1",
    )
    assert latin_1.status == 201, await latin_1.text()
    assert (await latin_1.json())["make"] == "Citroën"
    unnamed = await _post_raw(client, b'{"plate": "LAT1235", "make": "Citro\xebn"}')
    assert unnamed.status == 400
    assert "charset=ISO-8859-1" in (await unnamed.json())["detail"]


async def test_a_change_between_a_number_and_a_boolean_is_a_change(client: Client) -> None:
    """JSON's true is no 1 (Python's == says it is): the write was dropped as "nothing
    changed". 1 and 1.0 are still the same number, inside lists too."""
    await _create(
        client,
        "vehicle",
        {"plate": "BOO1234", "attributes": {"flag": 1, "off": 0, "bits": [1, 0], "n": 2}},
    )
    response = await client.patch(
        "/api/v1/entities/vehicle/BOO1234",
        json={"attributes": {"flag": True, "off": False, "bits": [True, False], "n": 2.0}},
        headers=auth(),
    )
    body = await response.json()
    assert response.status == 200, body
    changed = ["attributes.bits", "attributes.flag", "attributes.off"]
    assert (body["changed"], body["version"]) == (changed, 2)
    got = await (await client.get("/api/v1/entities/vehicle/BOO1234", headers=auth())).json()
    assert got["attributes"] == {"flag": True, "off": False, "bits": [True, False], "n": 2}
    assert got["attributes"]["flag"] is True and got["attributes"]["bits"][0] is True
    again = await client.patch(
        "/api/v1/entities/vehicle/BOO1234", json={"attributes": {"n": 2.0}}, headers=auth()
    )
    assert ((await again.json())["changed"], (await again.json())["version"]) == ([], 2)


async def test_patch_merges_an_object_into_a_member_that_is_no_object(client: Client) -> None:
    """RFC 7396: a patch's object over a member that is absent or no object is merged into
    an empty one, so its nulls mean absent there too. They were stored as nulls, or refused
    by the schema, depending on what the entity had before."""
    await _create(client, "vehicle", {"plate": "MRG1234", "attributes": {"x": 5}})
    patch = {"attributes": {"x": {"y": None, "z": 1}, "c": {"d": None}, "a": None}}
    response = await client.patch("/api/v1/entities/vehicle/MRG1234", json=patch, headers=auth())
    assert response.status == 200, await response.text()
    assert (await response.json())["attributes"] == {"x": {"z": 1}, "c": {}}
    # (a driver named by CPF: a name alone names no driver, no write of the field)
    driver = {"current_driver": {"cpf": "52998224725", "name": None}}
    response = await client.patch("/api/v1/entities/vehicle/MRG1234", json=driver, headers=auth())
    assert response.status == 200, await response.text()
    assert (await response.json())["current_driver"] == {"cpf": "52998224725"}


async def test_write_answers_carry_the_timestamps_a_read_gives(client: Client) -> None:
    """The database keeps a time to the millisecond: the answers of POST and PATCH had the
    microseconds of the clock, which no read ever gives back."""
    for n in range(5):  # a write landing on a whole millisecond would pass by luck
        created = await _create(client, "vehicle", {"plate": f"TSA1{n}34"})
        url = f"/api/v1/entities/vehicle/{created['id']}"
        got = await (await client.get(url, headers=auth())).json()
        assert (created["created_at"], created["updated_at"]) == (
            got["created_at"],
            got["updated_at"],
        )
        patched = await (await client.patch(url, json={"make": "Fiat"}, headers=auth())).json()
        got = await (await client.get(url, headers=auth())).json()
        assert patched["updated_at"] == got["updated_at"]


async def test_a_suppliers_toll_free_or_shared_cost_number_is_a_phone(client: Client) -> None:
    """Insurers', tow services' and dealers' 0800, 0300 and 4004 numbers are in Brazil's
    numbering plan, dialled without an area code; they were refused ("no Brazilian number",
    "its area code (DDD) is missing"), and every write of a supplier stored with one."""
    cnpjs = iter(["11222333000181", "11444777000161", "19131243000197", "34028316000103"])
    stored = {}
    for phone in ("0800 727 0800", "0300 789 1234", "4004-0001", "3003 3030"):
        supplier = {"name": "Guincho", "cnpj": next(cnpjs), "contact": {"phone": phone}}
        stored[phone] = (await post(client, "/api/v1/entities/supplier", supplier))["contact"]
    assert {k: v["phone"] for k, v in stored.items()} == {
        "0800 727 0800": "+558007270800",
        "0300 789 1234": "+553007891234",
        "4004-0001": "+5540040001",
        "3003 3030": "+5530033030",
    }
    # a local landline written without its area code is still refused
    body = {"name": "Y", "cnpj": "06990590000123", "contact": {"phone": "3011-1234"}}
    answer = await client.post("/api/v1/entities/supplier", json=body, headers=auth())
    assert answer.status == 422 and "area code" in await answer.text()


async def test_phone_fields_are_read_as_the_sms_path_reads_them_and_stored_in_e164(
    client: Client,
) -> None:
    """A driver's, an operator's and a supplier contact's `phone` follow one rule, the SMS
    path's (`ids.e164`): a number as people write it is stored in E.164; text that is no
    number, and a mobile written before its ninth digit (a number that no longer exists), are
    refused naming the field and why."""
    cpfs = iter(["52998224725", "11144477735", "01234567890", "39053344705", "71428793860"])
    stored = {}
    for phone in ("11.98765.4321", "(11) 3456-7890", "+44 7911 123456"):
        driver = {"name": "X", "cpf": next(cpfs), "phone": phone}
        stored[phone] = (await post(client, "/api/v1/entities/driver", driver))["phone"]
    assert stored == {
        "11.98765.4321": "+5511987654321",
        "(11) 3456-7890": "+551134567890",
        "+44 7911 123456": "+447911123456",
    }
    refused = {}
    for phone in ("((((((((", "--------", "+55 11 8765-4321", "(11) 98765-4321 r. 5"):
        body = {"name": "X", "cpf": next(cpfs, "71428793860"), "phone": phone}
        answer = await client.post("/api/v1/entities/driver", json=body, headers=auth())
        problem = await answer.json()
        assert answer.status == 422, problem
        [error] = problem["errors"]
        assert error["pointer"] == "/phone" and error["keyword"] == "format", problem
        refused[phone] = error["message"].partition(": ")[2]
    assert refused == {
        "((((((((": '"((((((((" is not a valid phone number: only digits, spaces,'
        " - . ( ) and a leading + make one",
        "--------": '"--------" is not a valid phone number: only digits, spaces,'
        " - . ( ) and a leading + make one",
        "+55 11 8765-4321": '"+55 11 8765-4321" is not a valid phone number: an 8-digit mobile'
        " number; mobiles have 9 digits, a 9 before these 8",
        "(11) 98765-4321 r. 5": '"(11) 98765-4321 r. 5" is not a valid phone number: only'
        " digits, spaces, - . ( ) and a leading + make one",
    }
    supplier = {
        "name": "Oficina",
        "cnpj": "11.222.333/0001-81",
        "contact": {"phone": "011 3333-4444"},
    }
    created = await post(client, "/api/v1/entities/supplier", supplier)
    assert created["contact"]["phone"] == "+551133334444"
    operator = {"name": "Op", "email": "op@example.com", "cpf": "52998224725", "phone": "x"}
    answer = await client.post("/api/v1/entities/operator", json=operator, headers=auth())
    assert answer.status == 422
    assert [e["pointer"] for e in (await answer.json())["errors"]] == ["/phone"]


async def test_a_phone_stored_before_a_stricter_rule_blocks_no_write_that_leaves_it(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A phone the gateway itself stored in E.164 before a rule refused it (an 8-digit
    mobile, `+551187654321`) made every later write of the driver a `422` at `/phone`,
    a rename or an HR feed's hourly field included, until an admin changed the phone. A
    write is checked for what it changes: a value it leaves as stored, which the stored
    entity failed already, stays as it is (logged), and the write goes through."""
    cpf = "52998224725"
    await post(client, "/api/v1/entities/driver", {"name": "Ana", "cpf": cpf})
    entities = client.app[services_key].store.db["entities"]
    old = "+551187654321"
    await entities.update_one({"type": "driver"}, {"$set": {"data.phone": old}})
    path = f"/api/v1/entities/driver/{cpf}"
    with caplog.at_level("WARNING", logger="gateway.entities"):
        renamed = await client.patch(path, json={"name": "Ana Souza"}, headers=auth())
    assert renamed.status == 200, await renamed.text()
    assert (await renamed.json())["phone"] == old  # left as stored, not dropped
    (said,) = [r.getMessage() for r in caplog.records if "/phone" in r.getMessage()]
    assert f"driver {cpf!r}" in said and "/phone (format)" in said and old not in said, said
    # A value the write sends is the write's: refused, quoted, as ever.
    sent = await client.patch(path, json={"phone": "+55 11 8765-0000"}, headers=auth())
    assert sent.status == 422
    (problem,) = (await sent.json())["errors"]
    assert problem["pointer"] == "/phone" and "8765-0000" in problem["message"], problem
    fixed = await client.patch(path, json={"phone": "(11) 98765-4321"}, headers=auth())
    assert (await fixed.json())["phone"] == "+5511987654321"


async def test_a_group_filter_lists_the_group_whichever_unicode_form_named_it(
    client: Client,
) -> None:
    """`?group=` lists the vehicles a geofence's or a plan's `group` applies to: "São Paulo"
    sent decomposed (as macOS and iOS write it) is the group typed composed, through the
    index or beside another filter. Before, each form listed only its own vehicles."""
    composed, decomposed = "S\u00e3o Paulo", "Sa\u0303o Paulo"
    await _create(client, "vehicle", {"plate": "NFD1234", "group": decomposed})
    await _create(client, "vehicle", {"plate": "NFC1234", "groups": [composed]})
    await _create(client, "vehicle", {"plate": "OTH1234", "group": "Sao Paulo"})
    for group in (composed, decomposed):
        for query in ({"group": group}, {"status": "active", "group": group}):
            url = "/api/v1/entities/vehicle"
            if "status" in query:
                for plate in ("NFD1234", "NFC1234", "OTH1234"):
                    body = {"status": "active"}
                    await client.patch(f"{url}/{plate}", json=body, headers=auth())
            answer = await client.get(url, params=query, headers=auth())
            plates = sorted(v["plate"] for v in (await answer.json())["items"])
            assert plates == ["NFC1234", "NFD1234"], (group, query, plates)


async def test_a_phone_dialled_abroad_from_brazil_drops_its_carrier_code(client: Client) -> None:
    """In Brazil an international call is `00`, the carrier code (CSP), the country code:
    the carrier code was read as the start of the country code, `0015 55 11 98765 4321`
    stored as +155511987654321 (an SMS to a stranger abroad)."""
    cpfs = iter(["94580730224", "15736819384", "03642621252", "99722003372"])
    stored = {}
    for phone in ("0015 55 11 98765 4321", "0021 44 7911 123456", "0041 1 415 555 2671"):
        driver = {"name": "Foreign", "cpf": next(cpfs), "phone": phone}
        stored[phone] = (await post(client, "/api/v1/entities/driver", driver))["phone"]
    driver = {"name": "Foreign", "cpf": next(cpfs), "phone": "0055 11 98765 4321"}
    stored["0055 11 98765 4321"] = (await post(client, "/api/v1/entities/driver", driver))["phone"]
    assert stored == {
        "0015 55 11 98765 4321": "+5511987654321",
        "0021 44 7911 123456": "+447911123456",
        "0041 1 415 555 2671": "+14155552671",
        "0055 11 98765 4321": "+5511987654321",
    }


async def test_a_phone_starting_00_is_stored_only_when_one_reading_is_a_valid_number(
    client: Client,
) -> None:
    """`00` is read two ways: the country code right after it (the European way) and a
    carrier code before it (dialled abroad from Brazil). A number is stored under one
    reading only when the other is no valid number: `0061 2 9876 5432` (Sydney) was stored
    as +298765432 (Faroe Islands), `0044 7911 123456` as +7911123456 (Russia), `00 55 0800
    727 0800` as +08007270800. A Brazilian number written `00 55` is refused for the reason
    it is refused without the `00`; a number both readings make is refused naming both; one
    neither makes, asking for the `+` form."""
    plus_form = (
        "a number starting 00 is 00 and a valid number with its country code (0044 7911"
        " 123456), or 00, a carrier code and one (0021 44 7911 123456); write it with + and"
        " its country code (+44 7911 123456)"
    )
    wanted = {
        "0055 11 8765 4321": "an 8-digit mobile number; mobiles have 9 digits, a 9 before these 8",
        "0055 23 98765 4321": "23 is no Brazilian area code (DDD)",
        "0055 11 98765 43210": "no Brazilian number (+55, an area code, then 8 digits beginning"
        " 2 to 5 or 9 beginning with 9; or a 0800, 0300, 0500, 0900, 3003 or 4004 number)",
        "0028 1234 5678": plus_form,  # no +28 …, and no +1 2345678 after carrier 28
        "0044 7911 1234567": plus_form,  # no UK number has 11 digits; 44 is no carrier
        "0061 2 9876 5432": "it could be +61 298765432 (00 and the country code) or +298 765432"
        " (00, carrier code 61 and the country code); write it with + and its country code",
    }
    refused = {}
    for phone in wanted:
        body = {"name": "Abroad", "cpf": "22453832301", "phone": phone}
        answer = await client.post("/api/v1/entities/driver", json=body, headers=auth())
        problem = await answer.json()
        assert answer.status == 422, problem
        [error] = problem["errors"]
        assert error["pointer"] == "/phone", problem
        refused[phone] = error["message"].partition(f'"{phone}" is not a valid phone number: ')[2]
    assert refused == wanted
    cpfs = iter(
        ["94580730224", "15736819384", "03642621252", "99722003372", "52998224725", "12345678909"]
    )
    stored = {}
    read = ("00 55 0800 727 0800", "0041 1 415 555 2671", "0021 54 9 11 2345 6789")
    for phone in (*read, "0041 44 7911 123456", "0044 7911 123456", "0041 44 668 18 00"):
        body = {"name": "Abroad", "cpf": next(cpfs), "phone": phone}
        stored[phone] = (await post(client, "/api/v1/entities/driver", body))["phone"]
    assert stored == {
        "00 55 0800 727 0800": "+558007270800",
        "0041 1 415 555 2671": "+14155552671",  # no Swiss number has 11 digits
        "0021 54 9 11 2345 6789": "+5491123456789",
        "0041 44 7911 123456": "+447911123456",  # no Swiss number has 12 digits
        "0044 7911 123456": "+447911123456",  # no +7 911123456: a Russian number has 10
        "0041 44 668 18 00": "+41446681800",  # Zurich: +44 6681800 is no UK number
    }
    # the "+" form gets the same checks: a country code nobody has, a number of the wrong length
    for phone in ("+0 800 727 0800", "+28 1234 5678", "+7 911 123456", "+1 125 555 1234"):
        body = {"name": "Abroad", "cpf": "22453832301", "phone": phone}
        answer = await client.post("/api/v1/entities/driver", json=body, headers=auth())
        assert answer.status == 422, (phone, await answer.text())


async def test_a_phone_with_an_area_code_brazil_does_not_have_is_refused(
    client: Client,
) -> None:
    """Anatel assigned 67 area codes; 23, 26, 29, 57, 78 … are nobody's (a typo: 23 for 21),
    and such a number was stored as valid."""
    refused = {}
    for phone in ("(23) 98765-4321", "(29) 3456-7890", "(57) 98765-4321", "+55 26 98765 4321"):
        body = {"name": "DDD", "cpf": "22453832301", "phone": phone}
        answer = await client.post("/api/v1/entities/driver", json=body, headers=auth())
        problem = await answer.json()
        assert answer.status == 422, problem
        [error] = problem["errors"]
        assert error["pointer"] == "/phone", problem
        refused[phone] = error["message"].rpartition(": ")[2]
    assert refused == {
        "(23) 98765-4321": "23 is no Brazilian area code (DDD)",
        "(29) 3456-7890": "29 is no Brazilian area code (DDD)",
        "(57) 98765-4321": "57 is no Brazilian area code (DDD)",
        "+55 26 98765 4321": "26 is no Brazilian area code (DDD)",
    }
    body = {"name": "DDD", "cpf": "22453832301", "phone": "(21) 98765-4321"}
    assert (await post(client, "/api/v1/entities/driver", body))["phone"] == "+5521987654321"


async def test_a_key_written_with_its_slash_names_the_entity_in_a_path(client: Client) -> None:
    """A CNPJ, a plate or an `other`'s key is written with slashes (`11.222.333/0001-81`,
    `ABC/1234`): the rest of the path is the key, as `%2F` is; a vehicle's own parts
    (`…/drivers`) keep their routes."""
    supplier = {"name": "Acme", "cnpj": "11.222.333/0001-81"}
    created = await post(client, "/api/v1/entities/supplier", supplier)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC/1234"})
    await post(client, "/api/v1/kinds", {"name": "nota", "schema": {"type": "object"}})
    await post(client, "/api/v1/entities/other", {"kind": "nota", "key": "NF/2026/1"})
    path = "/api/v1/entities/supplier/11.222.333/0001-81"
    assert (await (await client.get(path, headers=auth())).json())["id"] == created["id"]
    patched = await client.patch(path, json={"trade_name": "ACME"}, headers=auth())
    assert patched.status == 200, await patched.text()
    for read in ("/api/v1/entities/vehicle/ABC/1234", "/api/v1/entities/other/nota:NF/2026/1"):
        assert (await client.get(read, headers=auth())).status == 200, read
    drivers = await client.get("/api/v1/entities/vehicle/ABC/1234/drivers", headers=auth())
    assert drivers.status == 200 and (await drivers.json())["items"] == []
    assert (await client.delete("/api/v1/entities/vehicle/ABC/1234/drivers")).status == 405
    spec = {"name": "erp", "entity_type": "supplier", "methods": ["GET"]}
    trigger = await post(client, "/api/v1/triggers", spec)
    bearer = {"Authorization": f"Bearer {trigger['token']}"}
    read = await client.get(f"/hooks/{trigger['id']}/11.222.333/0001-81", headers=bearer)
    assert read.status == 200 and (await read.json())["cnpj"] == "11222333000181"
    assert (await client.delete(path, headers=auth())).status == 204
    gone = await client.get(path, headers=auth())
    assert gone.status == 404 and gone.content_type == "application/problem+json"


async def test_a_path_key_with_a_line_break_or_another_types_part_names_the_entity(
    client: Client,
) -> None:
    """The rest-of-path pattern was `.+`, which takes no line break: `ABC1234%0A` (a CSV's
    line end, dropped as the identifier is read) and a kind key holding one were a bare 404
    "Not Found", no route; and every type's key was kept from ending in a vehicle's part."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1234"})
    await post(client, "/api/v1/kinds", {"name": "nota", "schema": {"type": "object"}})
    await post(client, "/api/v1/entities/other", {"kind": "nota", "key": "a\nb"})
    await post(client, "/api/v1/entities/other", {"kind": "nota", "key": "x/drivers"})
    for path in (
        "/api/v1/entities/vehicle/ABC1234%0A",
        "/api/v1/entities/vehicle/ABC-1234%0D%0A",
        "/api/v1/entities/other/nota:a%0Ab",
        "/api/v1/entities/other/nota:x/drivers",
    ):
        response = await client.get(path, headers=auth())
        assert response.status == 200, (path, await response.text())
    patched = await client.patch(
        "/api/v1/entities/other/nota:x/drivers", json={"n": 1}, headers=auth()
    )
    assert patched.status == 200, await patched.text()
    spec = {"name": "erp", "entity_type": "vehicle", "methods": ["GET"]}
    trigger = await post(client, "/api/v1/triggers", spec)
    bearer = {"Authorization": f"Bearer {trigger['token']}"}
    read = await client.get(f"/hooks/{trigger['id']}/ABC1234%0A", headers=bearer)
    assert read.status == 200, await read.text()
    # a vehicle's own parts keep their routes
    drivers = await client.delete("/api/v1/entities/vehicle/ABC1234/drivers", headers=auth())
    assert drivers.status == 405


@pytest.mark.parametrize(
    ("written", "number"),
    [
        ("0021 1 212 555 1234", "+12125551234"),  # New York through Embratel (+211 has 9)
        ("0021 351 912 345 678", "+351912345678"),  # Portugal (+213 has 8 or 9)
        ("0021 33 6 12 34 56 78", "+33612345678"),
        ("0021 39 312 345 6789", "+393123456789"),
        ("0021 86 139 1234 5678", "+8613912345678"),  # China (+218 has 9)
        ("0021 81 90 1234 5678", "+819012345678"),
        ("0021 61 4 1234 5678", "+61412345678"),  # Australia (+216 has 8)
        ("0021 244 923 123 456", "+244923123456"),
        ("0021 258 84 123 4567", "+258841234567"),
        ("0023 1 212 555 1234", "+12125551234"),  # Intelig (+231 has 7 to 9)
        ("0025 54 9 11 2345 6789", "+5491123456789"),  # GVT (+255 has 9)
        ("0041 1 415 555 2671", "+14155552671"),  # TIM (+41 has 9)
        ("0015 55 11 98765 4321", "+5511987654321"),  # Brazil through Telefônica
        ("0015 41 44 668 18 00", "+41446681800"),  # Zurich (+1 541446681800: 12 digits)
        ("0041 43 664 123 4567", "+436641234567"),  # Austrian mobile (no +41 43…: 12 digits)
        ("0021 81 3 1234 5678", "+81312345678"),  # Tokyo (+218 has 9)
        ("0014 57 601 234 5678", "+576012345678"),  # Bogotá through Oi
        ("0015 61 3 9876 5432", "+61398765432"),  # Melbourne
        ("0021 27 21 460 1234", "+27214601234"),  # Cape Town (+212 has 9)
        ("0021 212 5 2212 3456", "+212522123456"),  # Casablanca
    ],
)
def test_a_number_dialled_abroad_through_a_carrier_is_read(written: str, number: str) -> None:
    """`00`, a carrier code, the country code: read so when `00` and the country code is no
    number of its country's plan (rev24 F1: every number dialled through Embratel was
    refused as maybe a +211 one, a country whose numbers have 9 digits)."""
    assert e164(written) == number


@pytest.mark.parametrize(
    ("written", "number"),
    [
        ("0049 151 12345678", "+4915112345678"),  # German mobile (no +1 511: an N11 code)
        ("0049 40 1234567", "+49401234567"),  # Hamburg (+40 1234567: Romania has 6 or 9)
        ("0049 30 1234567", "+49301234567"),  # Berlin (+30 1234567: Greece has 10 to 12)
        ("0086 139 1234 5678", "+8613912345678"),  # China Mobile (86 is no carrier code)
        ("0086 21 1234 5678", "+862112345678"),  # Shanghai
        ("0027 82 123 4567", "+27821234567"),  # SA mobile (+82 1234567: Korea has no 7)
        ("0090 532 123 45 67", "+905321234567"),  # Turkish mobile
        ("00972 50 234 5678", "+972502345678"),  # Israeli mobile
        ("00852 2123 4567", "+85221234567"),  # Hong Kong
        ("0091 98765 43210", "+919876543210"),  # Indian mobile (+98 76543210: Iran has no 8)
        ("0065 6123 4567", "+6561234567"),  # Singapore (+61 234567: no 13 before the 4)
        ("0044 20 7946 0958", "+442079460958"),  # London (44 is no carrier code)
        ("0044 7911 123456", "+447911123456"),
        ("001 212 555 1234", "+12125551234"),  # New York (+1 25551234 after carrier 12: 8)
        ("0055 11 98765 4321", "+5511987654321"),
    ],
)
def test_a_number_written_the_european_way_is_its_own_countrys(written: str, number: str) -> None:
    """`00` and the country code is that country's number when the digits after a carrier
    code are no valid number (rev25 F1: `0049 40 1234567`, Hamburg, was stored as
    +401234567, a Romanian number, and `0086 21 1234 5678`, Shanghai, as South Sudan's)."""
    assert e164(written) == number


@pytest.mark.parametrize(
    ("written", "number"),
    [
        ("0041 44 668 18 00", "+41446681800"),  # Zurich (+44 6681800: no UK number)
        ("0081 3 1234 5678", "+81312345678"),  # Tokyo (+31 2345678: no Dutch number)
        ("0057 601 234 5678", "+576012345678"),  # Bogotá (+60 12345678: no Malaysian number)
        ("0043 664 123 4567", "+436641234567"),  # Austrian mobile (+66 41234567: no Thai one)
        ("0061 3 9876 5432", "+61398765432"),  # Melbourne (+39 8765432: no Italian number)
        ("00254 712 345678", "+254712345678"),  # Kenyan mobile (+47 12345678: no Norwegian)
        ("0054 9 11 2345 6789", "+5491123456789"),  # Buenos Aires mobile (+91 123456789)
        ("0091 81234 56789", "+918123456789"),  # Indian mobile (+81 23456789: no Japanese)
        ("00966 51 234 5678", "+966512345678"),  # Saudi mobile (+65 12345678: no Singaporean)
        ("00212 650 123456", "+212650123456"),  # Moroccan mobile (+265 0123456: no Malawian)
        ("00234 802 123 4567", "+2348021234567"),  # Nigerian mobile (+48 021234567)
        ("001 246 412 3456", "+12464123456"),  # Barbados (+46 4123456 through carrier 12)
        ("00358 41 234 5678", "+358412345678"),  # Finnish mobile (+84 12345678: no Vietnamese)
    ],
)
def test_a_number_whose_carrier_reading_is_none_of_its_countrys_is_stored(
    written: str, number: str
) -> None:
    """rev26 F1: a reading counts when it is a number of its country's plan, its area codes
    and prefixes (libphonenumber's), not only a length the plan has for some number. These
    were refused as ambiguous: `0041 44 668 18 00` (Zurich) could be +44 6681800 through
    carrier 41, 7 digits as a few UK freephone numbers have, though no UK number is that."""
    assert e164(written) == number


@pytest.mark.parametrize(
    ("written", "european", "dialled"),
    [
        ("0061 2 9876 5432", "+61 298765432", "+298 765432"),  # Sydney or the Faroe Islands
        ("00244 923 123 456", "+244 923123456", "+49 23123456"),  # Angola or Germany
        ("0043 1 212 555 1234", "+43 12125551234", "+1 2125551234"),  # Vienna or New York
        ("0049 151 2345 6789", "+49 15123456789", "+1 5123456789"),  # German mobile or Austin
        ("0057 321 123 4567", "+57 3211234567", "+32 11234567"),  # Colombian mobile or Hasselt
        ("0084 24 3123 4567", "+84 2431234567", "+243 1234567"),  # Hanoi or Kinshasa
    ],
)
def test_a_number_both_readings_of_00_make_is_refused_naming_both(
    written: str, european: str, dialled: str
) -> None:
    """Both `00` and the country code and `00`, a carrier code and the country code are
    valid numbers: which one was meant cannot be told, and either would send the other's
    notices to a stranger abroad (rev25 F1: `0061 2 9876 5432` was stored as +298765432)."""
    with pytest.raises(ValueError) as refused:
        e164(written)
    carrier = written.replace(" ", "")[2:4]
    assert str(refused.value).endswith(
        f"it could be {european} (00 and the country code) or {dialled} (00, carrier code"
        f" {carrier} and the country code); write it with + and its country code"
    )


# Why a number of a possible length is none of its country's (libphonenumber's plan).
PLAN = "are no number of that country's plan (an area code or prefix it does not have"


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("+52 55 1234 56789", "a number of +52 has 10 digits after the country code"),
        ("+52 33 1234 56780", "a number of +52 has 10 digits after the country code"),
        ("+61 2 9876 543", f"the 8 digits after +61 {PLAN}"),
        ("+61 4 1234 56789", f"the 10 digits after +61 {PLAN}"),
        ("+61 14 1234 5678", f"the 10 digits after +61 {PLAN}"),
        ("+1 511 234 5678", f"the 10 digits after +1 {PLAN}"),  # N11: no area code
        ("+1 212 155 1234", f"the 10 digits after +1 {PLAN}"),  # no exchange begins with 1
        ("+44 20 7946 09", "a number of +44 has 7, 9 or 10 digits after the country code"),
        ("+44 20 7946 095", f"the 9 digits after +44 {PLAN}"),  # London's have 10
        ("+49 30 1234 5678 9012 34", "a number of +49 has 4 to 15 digits after the country code"),
        ("+298 76543", "a number of +298 has 6 digits after the country code"),
        ("+01 212 555 1234", "no country code begins it"),  # +0 is nobody's, nor +01
    ],
)
def test_a_number_with_digits_its_countrys_plan_does_not_have_is_refused(
    written: str, reason: str
) -> None:
    """rev25 F4: `+52 55 1234 56789` (a Mexico City number with a digit too many) and `+61 2
    9876 543` (Sydney with one too few) were stored: +52 took any 11 digits, +61 any 6 to
    13. A number of a length its plan has is refused when none of the plan's numbers begins
    so (rev26 F1: libphonenumber's plans, the area codes and prefixes of each country)."""
    with pytest.raises(ValueError) as refused:
        e164(written)
    assert f": {reason}" in str(refused.value)


@pytest.mark.parametrize(
    ("written", "number"),
    [
        ("+52 1 55 1234 5678", "+525512345678"),  # a Mexican mobile as WhatsApp writes it
        ("5215512345678", "+525512345678"),
        ("+52 55 1234 5678", "+525512345678"),
        ("+61 2 9876 5432", "+61298765432"),
        ("+61 4 1234 5678", "+61412345678"),
        ("+61 1800 123 456", "+611800123456"),  # toll-free
        ("+61 1300 123 456", "+611300123456"),  # shared cost
        ("+61 13 12 34", "+61131234"),
    ],
)
def test_a_mexican_or_australian_number_of_its_plan_is_read(written: str, number: str) -> None:
    """Mexico's mobiles written with the "1" Mexico dropped in 2019 (WhatsApp still writes
    it) are stored as the same subscriber is written today; Australia's 13, 1300 and 1800
    numbers are numbers (rev24 F2)."""
    assert e164(written) == number


async def test_a_drivers_australian_phone_written_the_european_way_is_refused_naming_both(
    client: Client,
) -> None:
    """rev25 F1, end to end: `0061 2 9876 5432` was stored as +298765432, a Faroese number,
    and every SMS or WhatsApp notice about the driver's fines would have gone to it."""
    body = {"name": "Ana Souza", "cpf": "52998224725", "phone": "0061 2 9876 5432"}
    answer = await client.post("/api/v1/entities/driver", json=body, headers=auth())
    problem = await answer.json()
    assert answer.status == 422, problem
    [error] = problem["errors"]
    assert error["pointer"] == "/phone"
    assert "it could be +61 298765432 (00 and the country code) or +298 765432" in str(error)
    listed = await client.get("/api/v1/entities/driver", headers=auth())
    assert (await listed.json())["items"] == []
    body["phone"] = "+61 2 9876 5432"
    assert (await post(client, "/api/v1/entities/driver", body))["phone"] == "+61298765432"
