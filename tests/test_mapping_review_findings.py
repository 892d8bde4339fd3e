"""A reviewer's findings on the mapping-files change (2026-12-05, mapb2), through HTTP against
the real database: a stored version today's rules refuse is not activated (by version nor by a
roll back), messages quote values as JSON, a template var given by `coalesce` points at the
source that gave it, what an identifier may carry around it, and reserved names a kind requires
anywhere that applies to the document."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.mapping.limits import MAX_STEPS
from gateway.web.state import services_key
from tests.test_mapping_entity_findings import OPEN_KIND, _heavy, _json, _upload
from tests.triggers_support import Client, create_trigger, hook
from tests.ui_support import csrf, log_in, make_user

# -- a stored version today's rules refuse is not activated ------------------------------------

VALID = "name: thing\ndirection: inbound\nentity_type: other\nkind: thing\nkey: [key]\n"
VALID += "fields:\n  key: k\n  serial: s\n"
RESERVED_TARGET = VALID + "  tenant: t\n"  # accepted before `tenant` was reserved


async def _store_old_version(client: Client, name: str, source: str, *, active: bool) -> int:
    """A version stored before today's rules (as the database holds it), active if asked."""
    store = client.app[services_key].store.mappings
    version = await store.allocate_version("acme", name)
    doc = {
        "name": name,
        "version": version,
        "source": source,
        "format": "yaml",
        "document": {},
        "direction": "inbound",
        "entity_type": "other" if "entity_type: other" in source else "vehicle",
        "checksum": f"before-{version}",
        "author": "before",
        "created_at": datetime.now(UTC),
    }
    await store.insert_version("acme", doc)
    if active:
        shown = {"direction": doc["direction"], "entity_type": doc["entity_type"]}
        assert await store.set_active("acme", name, version, shown)
    return version


async def _active_version(client: Client, name: str) -> Any:
    return (await _json(client, "GET", f"/api/v1/mappings/{name}"))["version"]


async def test_activating_a_stored_version_with_a_reserved_target_is_refused_and_changes_nothing(
    client: Client,
) -> None:
    await _json(client, "POST", "/api/v1/kinds", 201, json={"name": "thing", "schema": OPEN_KIND})
    await _upload(client, VALID)
    trigger = await create_trigger(client, entity_type="other", kind="thing", mapping="thing")
    old = await _store_old_version(client, "thing", RESERVED_TARGET, active=False)
    body = {"version": old}
    problem = await _json(client, "POST", "/api/v1/mappings/thing/activate", 422, json=body)
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [
        ("/fields/tenant", "reserved")
    ]
    assert problem["detail"].startswith(
        f"version {old} of mapping 'thing' cannot be activated under today's rules: "
        "/fields/tenant: the target 'tenant' is reserved"
    )
    assert await _active_version(client, "thing") == 1
    status, answer = await hook(client, trigger, {"k": "K1", "s": "S1", "t": "x"})
    assert status == 201, answer


async def test_activating_a_stored_version_over_the_work_limit_is_refused(client: Client) -> None:
    await _upload(client, _heavy("heavy", 10))
    old = await _store_old_version(client, "heavy", _heavy("heavy", 495), active=False)
    body = {"version": old}
    problem = await _json(client, "POST", "/api/v1/mappings/heavy/activate", 422, json=body)
    (error,) = problem["errors"]
    assert error["keyword"] == "limit" and f"limit of {MAX_STEPS:,}" in error["message"]
    assert await _active_version(client, "heavy") == 1


async def test_rolling_back_to_a_stored_version_the_rules_refuse_is_refused_and_changes_nothing(
    client: Client,
) -> None:
    await _json(client, "POST", "/api/v1/kinds", 201, json={"name": "thing", "schema": OPEN_KIND})
    await _upload(client, VALID)
    old = await _store_old_version(client, "thing", RESERVED_TARGET, active=True)
    newer = await _upload(client, VALID.replace("serial: s", "serial: s2"))
    assert newer["version"] == old + 1 and newer["active"]
    trigger = await create_trigger(client, entity_type="other", kind="thing", mapping="thing")
    problem = await _json(client, "POST", "/api/v1/mappings/thing/rollback", 422)
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [
        ("/fields/tenant", "reserved")
    ]
    assert await _active_version(client, "thing") == newer["version"]
    status, answer = await hook(client, trigger, {"k": "K1", "s2": "S1"})
    assert status == 201, answer
    # A version today's rules accept is still activated (by version, then by a roll back).
    await _json(client, "POST", "/api/v1/mappings/thing/activate", json={"version": 1})
    await _json(client, "POST", "/api/v1/mappings/thing/activate", json={"version": 3})
    await _json(client, "POST", "/api/v1/mappings/thing/rollback", 422)
    assert await _active_version(client, "thing") == 3


async def test_the_admin_ui_refuses_to_activate_or_roll_back_to_such_a_version_naming_why(
    client: Client,
) -> None:
    await make_user(client.app[services_key])
    await log_in(client)
    await _json(client, "POST", "/api/v1/kinds", 201, json={"name": "thing", "schema": OPEN_KIND})
    await _upload(client, VALID)
    old = await _store_old_version(client, "thing", RESERVED_TARGET, active=False)
    token = await csrf(client, "/admin/mappings/thing")
    data = {"csrf": token, "version": str(old)}
    response = await client.post("/admin/mappings/thing/activate", data=data)
    page = html.unescape(await response.text())
    assert response.status == 422, page
    assert "cannot be activated under today's rules: /fields/tenant" in page
    await _upload(client, VALID.replace("serial: s", "serial: s2"))
    response = await client.post("/admin/mappings/thing/rollback", data={"csrf": token})
    assert response.status == 422
    assert f"version {old} of mapping 'thing'" in html.unescape(await response.text())
    assert await _active_version(client, "thing") == old + 1


# -- messages quote values as JSON ---------------------------------------------------------------

CASTS = {
    "name": "casts",
    "direction": "inbound",
    "entity_type": "vehicle",
    "key": ["plate"],
    "fields": {
        "plate": "placa",
        "year": {"from": "a", "transforms": ["integer"]},
        "attributes.n": {"from": "b", "transforms": ["number"]},
        "attributes.s": {"from": "c", "transforms": ["string"]},
        "attributes.d": {"from": "d", "transforms": [{"datetime": {"parse": "iso8601"}}]},
        "attributes.m": {"from": "e", "transforms": ["duration"]},
        "attributes.l": {"from": "f", "transforms": [{"coordinate": "latitude"}]},
        "attributes.p": {"from": "g", "transforms": [{"parse_number": {"decimal_point": True}}]},
        "attributes.w": {"from": "h", "transforms": ["number"]},
    },
}


async def test_messages_quote_the_values_they_refuse_as_compact_json(client: Client) -> None:
    payload = {
        "placa": "ABC1234",
        "a": {"k": "v", "z": None},
        "b": True,
        "c": ["a"],
        "d": {"x": False},
        "e": "it's\tP1M",
        "f": "23 60 S",
        "g": "1.130",
        "h": {"long": "x" * 100},
    }
    body = {"mapping": CASTS, "payload": payload}
    problem = await _json(client, "POST", "/api/v1/mappings/test", 422, json=body)
    shown = {e["pointer"]: e["message"] for e in problem["errors"]}
    assert shown == {
        "/payload/a": 'cannot cast object {"k":"v","z":null} to integer',
        "/payload/b": "cannot cast boolean true to number",
        "/payload/c": 'cannot cast array ["a"] to string',
        "/payload/d": 'cannot read {"x":false} as a date-time: expected an ISO 8601 string',
        "/payload/e": 'cannot read "it\'s\\tP1M" as a duration (seconds, a TimeSpan such as '
        "1.02:03:04.5 or ISO 8601 such as PT12M3.5S)",
        "/payload/f": 'cannot read "23 60 S" as a latitude (decimal degrees, degrees minutes '
        "seconds such as 23°33'01.2\"S, or NMEA such as 2333.0200,S)",
        "/payload/g": 'cannot read "1.130" as a number: its point may be a thousands separator '
        "or a decimal point (write the decimals with ',')",
        "/payload/h": 'cannot cast object {"long":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx… to number',
    }
    assert len(shown["/payload/h"].split("object ", 1)[1].split(" to ", 1)[0]) == 40


# -- a template var given by coalesce points at the alternative that gave it ---------------------

TEMPLATES = {
    "name": "templates",
    "direction": "inbound",
    "entity_type": "vehicle",
    "key": ["plate"],
    "fields": {
        "plate": "placa",
        "attributes.a": {"template": "x {v}", "vars": {"v": {"coalesce": ["dados.a", "dados.b"]}}},
        "attributes.b": {"template": "x {w}", "vars": {"w": {"from": "dados.c", "when": "placa"}}},
        "attributes.c": {"template": "x {u}", "vars": {"u": {"coalesce": ["nada", "dados.c"]}}},
        "year": {"coalesce": ["nada", "dados.a"], "transforms": ["integer"]},
    },
}


async def test_a_template_var_given_by_coalesce_points_at_the_alternative_that_gave_it(
    client: Client,
) -> None:
    payload = {"placa": "ABC1234", "dados": {"a": {"z": 1}, "c": [1]}}
    body = {"mapping": TEMPLATES, "payload": payload}
    problem = await _json(client, "POST", "/api/v1/mappings/test", 422, json=body)
    shown = [(e["pointer"], e["message"], e["source"], e["target"]) for e in problem["errors"]]
    assert shown == [
        ("/payload/dados/a", "var 'v' is an object, not text", "dados.a", "attributes.a"),
        ("/payload/dados/c", "var 'w' is an array, not text", "dados.c", "attributes.b"),
        ("/payload/dados/c", "var 'u' is an array, not text", "dados.c", "attributes.c"),
        ("/payload/dados/a", 'cannot cast object {"z":1} to integer', "dados.a", "year"),
    ]
    # The first alternative, when it is the one that gives the value.
    payload = {"placa": "ABC1234", "dados": {"a": None, "b": ["x"], "c": "ok"}, "nada": [2]}
    body = {"mapping": TEMPLATES, "payload": payload}
    problem = await _json(client, "POST", "/api/v1/mappings/test", 422, json=body)
    shown = [(e["pointer"], e["source"]) for e in problem["errors"]]
    assert shown == [
        ("/payload/dados/b", "dados.b"),
        ("/payload/nada", "nada"),
        ("/payload/nada", "nada"),
    ]


# -- only spaces (and dots, dashes, slashes) are dropped from an identifier, in any spelling ----


@pytest.mark.parametrize(
    "plate",
    ["ABC1234\t", "\tABC1234", "ABC1234\n", "ABC1234\r\n", "\x0bABC1234", " abc-1234\u00a0"],
)
async def test_an_identifier_with_blanks_at_either_end_is_accepted_and_stored_without_them(
    client: Client, plate: str
) -> None:
    # A partner's CSV or a scanned form ends a value with a line break: not bad data.
    created = await _json(client, "POST", "/api/v1/entities/vehicle", 201, json={"plate": plate})
    assert created["plate"] == "ABC1234"
    assert (await _json(client, "GET", "/api/v1/entities/vehicle/ABC1234"))["plate"] == "ABC1234"
    body = {"name": "Ana", "cpf": "\t529.982.247-25\r\n"}  # every identifier alike
    created = await _json(client, "POST", "/api/v1/entities/driver", 201, json=body)
    assert created["cpf"] == "52998224725"


@pytest.mark.parametrize("plate", ["ABC\t1234", "ABC\r\n1234", "AB\u200bC1234", "ABC1\x1c234"])
async def test_an_identifier_with_a_blank_other_than_a_space_inside_is_refused(
    client: Client, plate: str
) -> None:
    problem = await _json(client, "POST", "/api/v1/entities/vehicle", 422, json={"plate": plate})
    assert [e["pointer"] for e in problem["errors"]] == ["/plate"]
    quoted = json.dumps(plate, ensure_ascii=False)  # as JSON: a control character escaped
    assert problem["errors"][0]["message"].startswith(f"/plate: {quoted} is not a valid plate")
    body = {"name": "Ana", "cpf": "529.982.247\t25"}
    problem = await _json(client, "POST", "/api/v1/entities/driver", 422, json=body)
    assert [e["pointer"] for e in problem["errors"]] == ["/cpf"]


async def test_a_trigger_stores_identifiers_copied_from_a_csv_line_without_their_line_break(
    client: Client,
) -> None:
    await _upload(
        client,
        "name: csv\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "fields:\n  plate: placa\n  renavam: renavam\n",
    )
    trigger = await create_trigger(client, mapping="csv")
    sent = {"placa": "abc-1d23\r\n", "renavam": "\t86769597308\r\n"}
    status, answer = await hook(client, trigger, sent)
    assert status == 201, answer
    stored = await _json(client, "GET", "/api/v1/entities/vehicle/ABC1D23")
    assert (stored["plate"], stored["renavam"]) == ("ABC1D23", "86769597308")
    status, problem = await hook(client, trigger, {"placa": "ABC1\t234", "renavam": "86769597308"})
    assert status == 422, problem


async def test_the_plate_transform_drops_the_blanks_around_a_partners_plate(
    client: Client,
) -> None:
    draft = {
        "name": "plates",
        "direction": "inbound",
        "entity_type": "vehicle",
        "key": ["plate"],
        "fields": {"plate": {"from": "placa", "transforms": ["plate"]}},
    }
    body = {"mapping": draft, "payload": {"placa": "\tabc-1d23\r\n"}}
    result = await _json(client, "POST", "/api/v1/mappings/test", json=body)
    assert result["results"][0]["document"] == {"plate": "ABC1D23"}


# -- a kind cannot require or declare a reserved name anywhere that applies to the document -----


@pytest.mark.parametrize(
    ("extra", "pointer"),
    [
        ({"allOf": [{"required": ["id"]}]}, "/schema/allOf/0/required/0"),
        (
            {"anyOf": [{"required": ["serial"]}, {"required": ["tenant"]}]},
            "/schema/anyOf/1/required/0",
        ),
        (
            {"oneOf": [{"properties": {"version": {"type": "integer"}}}]},
            "/schema/oneOf/0/properties/version",
        ),
        (
            {"if": {"required": ["serial"]}, "then": {"required": ["created_at"]}},
            "/schema/then/required/0",
        ),
        (
            {"if": {"required": ["serial"]}, "else": {"required": ["_id"]}},
            "/schema/else/required/0",
        ),
        (
            {"dependentRequired": {"serial": ["model", "entity_type"]}},
            "/schema/dependentRequired/serial/1",
        ),
        (
            {"dependentSchemas": {"serial": {"required": ["updated_at"]}}},
            "/schema/dependentSchemas/serial/required/0",
        ),
        (
            {"$defs": {"base": {"required": ["id"]}}, "allOf": [{"$ref": "#/$defs/base"}]},
            "/schema/$defs/base/required/0",
        ),
        (
            {"allOf": [{"allOf": [{"if": {}, "then": {"required": ["id"]}}]}]},
            "/schema/allOf/0/allOf/0/then/required/0",
        ),
    ],
)
async def test_a_kind_requiring_a_reserved_name_in_a_subschema_of_the_document_is_refused(
    client: Client, extra: dict[str, Any], pointer: str
) -> None:
    schema = {**OPEN_KIND, **extra}
    problem = await _json(
        client, "POST", "/api/v1/kinds", 422, json={"name": "thing", "schema": schema}
    )
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [(pointer, "reserved")]
    await _json(client, "GET", "/api/v1/kinds/thing", 404)


async def test_a_kind_may_still_forbid_a_reserved_name_or_nest_one_inside_a_field(
    client: Client,
) -> None:
    schema = {
        **OPEN_KIND,
        "not": {"required": ["id"]},
        "properties": {"serial": {"type": "object", "properties": {"id": {}}, "required": ["id"]}},
        "allOf": [{"required": ["serial"]}],
    }
    await _json(client, "POST", "/api/v1/kinds", 201, json={"name": "thing", "schema": schema})
    body = {"kind": "thing", "key": "K1", "serial": {"id": "S1"}}
    await _json(client, "POST", "/api/v1/entities/other", 201, json=body)
