"""A unique name is one name in either Unicode form: `São Paulo` sent composed (NFC) and sent
decomposed (NFD, as macOS and iOS send it) look the same in the admin UI, and were two names.
Names are stored in NFC, so the decomposed twin of a name is a `409` like any duplicate, and
a geofence or plan is found by its name in either form. Names stored before, in another form,
are put in NFC by a one-time step at start; twins stored before are both kept, and logged."""

from __future__ import annotations

import json
import logging
import unicodedata
from typing import Any
from urllib.parse import quote

import pytest

from gateway.config import Settings
from gateway.services import open_services
from gateway.store.name_folding import COMPOSE_STEP
from gateway.web.state import services_key
from tests.partner_double import Client, create_action, create_partner, post, upload_mapping
from tests.schedule_support import ERP_MAPPING
from tests.support import auth

COMPOSED = "São Paulo"
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)
CIRCLE = {"lat": -23.5, "lon": -46.6, "radius_m": 300}


def test_the_two_forms_differ_as_sent() -> None:
    assert COMPOSED != DECOMPOSED and unicodedata.normalize("NFC", DECOMPOSED) == COMPOSED


async def _schedule_body(client: Client, name: str) -> dict[str, Any]:
    await upload_mapping(client, ERP_MAPPING)
    partner = await create_partner(client, "http://127.0.0.1:9/")
    action = await create_action(client, partner["id"], mode="proxy", read_only=True)
    return {
        "name": name,
        "action_id": action["id"],
        "every": "1h",
        "target": {"entity_type": "vehicle", "mapping": "erp-vehicles"},
    }


BODIES: dict[str, dict[str, Any]] = {
    "/api/v1/triggers": {"entity_type": "vehicle"},
    "/api/v1/geofences": {"kind": "authorized", "circle": CIRCLE},
    "/api/v1/maintenance-plans": {"every_km": 5_000},
}


@pytest.mark.parametrize("path", [*BODIES, "/api/v1/schedules"])
@pytest.mark.parametrize("first", [COMPOSED, DECOMPOSED], ids=["nfc-first", "nfd-first"])
async def test_the_other_unicode_form_of_a_name_is_a_duplicate(
    client: Client, path: str, first: str
) -> None:
    other = DECOMPOSED if first == COMPOSED else COMPOSED
    if path == "/api/v1/schedules":
        body = await _schedule_body(client, first)
    else:
        body = {"name": first, **BODIES[path]}
    made = await post(client, path, body)
    assert made["name"] == COMPOSED  # stored, and answered, in NFC

    twin = await client.post(path, json={**body, "name": other}, headers=auth())
    assert twin.status == 409, await twin.text()
    listed = await (await client.get(path, headers=auth())).json()
    assert [item["name"] for item in listed["items"]] == [COMPOSED]
    renamed = await client.patch(f"{path}/{made['id']}", json={"name": other}, headers=auth())
    assert renamed.status == 200, await renamed.text()
    assert (await renamed.json())["name"] == COMPOSED


@pytest.mark.parametrize("path", ["/api/v1/geofences", "/api/v1/maintenance-plans"])
async def test_a_rule_is_found_by_its_name_in_either_unicode_form(
    client: Client, path: str
) -> None:
    made = await post(client, path, {"name": DECOMPOSED, **BODIES[path]})
    for name in (COMPOSED, DECOMPOSED):
        found = await client.get(f"{path}/{quote(name)}", headers=auth())
        assert found.status == 200, await found.text()
        assert (await found.json())["id"] == made["id"]


async def test_names_stored_before_are_composed_at_a_start_and_twins_kept(
    client: Client, settings: Settings, mongodb_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A start after the upgrade puts the names stored decomposed in NFC, once; a decomposed
    name whose NFC another of its tenant has is kept as it was, logged, and reached as
    stored: the start goes on."""
    db = client.app[services_key].store.db
    fence = {"name": COMPOSED, **BODIES["/api/v1/geofences"]}
    twin = await post(client, "/api/v1/geofences", fence)
    stored = {"kind": "authorized", "circle": CIRCLE, "rev": 1}
    await db["geofences"].insert_many(
        [
            {"tenant": "acme", "name": DECOMPOSED, **stored},  # the twin, stored before
            {"tenant": "acme", "name": "Pátio Sul".replace("á", "a\u0301"), **stored},
            {"tenant": "beta", "name": DECOMPOSED, **stored},  # another tenant's: no twin
        ]
    )
    await db["triggers"].insert_one({"_id": "trg_x", "tenant": "acme", "name": DECOMPOSED})
    await db["migrations"].delete_one({"_id": COMPOSE_STEP})  # stored before the upgrade

    with caplog.at_level(logging.WARNING, logger="gateway.store.name_folding"):
        async with open_services(settings, mongodb_uri=mongodb_uri):
            pass
    assert await db["migrations"].find_one({"_id": COMPOSE_STEP})

    names = [(doc["tenant"], doc["name"]) async for doc in db["geofences"].find({}, {"_id": 0})]
    assert sorted(names) == sorted(
        [("acme", COMPOSED), ("acme", DECOMPOSED), ("acme", "Pátio Sul"), ("beta", COMPOSED)]
    )
    assert (await db["triggers"].find_one({"_id": "trg_x"}) or {})["name"] == COMPOSED
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "geofences" in warning and "acme" in warning
    by_composed = await client.get(f"/api/v1/geofences/{quote(COMPOSED)}", headers=auth())
    assert (await by_composed.json())["id"] == twin["id"]
    by_decomposed = await client.get(f"/api/v1/geofences/{quote(DECOMPOSED)}", headers=auth())
    assert (await by_decomposed.json())["name"] == DECOMPOSED  # the twin, as stored


TEMPLATE = {
    "channel_type": "email",
    "default_locale": "pt-BR",
    "locales": {"pt-BR": {"subject": "Aviso", "text": "Olá"}},
}
CHANNEL = {
    "type": "email",
    "smtp": {"host": "127.0.0.1", "port": 9, "security": "none"},
    "from": "alertas@acme.com.br",
}
MAPPING = """name: {name}
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {{from: p}}
"""


@pytest.mark.parametrize("path", ["/api/v1/templates", "/api/v1/channels", "/api/v1/mappings"])
async def test_a_letters_only_name_with_a_line_break_after_it_is_refused(
    client: Client, path: str
) -> None:
    """`due` followed by a line break passed the check of a name of letters, digits, `_ . -`
    (`$` matches before a final line break): a second name that looks the same as `due`."""
    for name, status in (("due", 201), ("due\n", 422)):
        if path == "/api/v1/mappings":
            text = MAPPING.format(name=json.dumps(name))
            headers = {**auth(), "Content-Type": "application/yaml"}
            response = await client.post(path, data=text.encode(), headers=headers)
        else:
            body = {"name": name, **(TEMPLATE if "templates" in path else CHANNEL)}
            response = await client.post(path, json=body, headers=auth())
        assert response.status == status, (name, await response.text())


async def _kept_twins(client: Client, settings: Settings, mongodb_uri: str) -> tuple[Any, Any]:
    """A geofence `São Paulo` made composed, and its decomposed twin stored before the
    one-time step, which keeps both: the first's id, the twin's."""
    db = client.app[services_key].store.db
    body = {"name": COMPOSED, "kind": "authorized", "circle": CIRCLE}
    made = await post(client, "/api/v1/geofences", body)
    stored = {"kind": "authorized", "circle": CIRCLE, "rev": 1}
    inserted = await db["geofences"].insert_one({"tenant": "acme", "name": DECOMPOSED, **stored})
    await db["migrations"].delete_one({"_id": COMPOSE_STEP})
    async with open_services(settings, mongodb_uri=mongodb_uri):
        pass
    return made["id"], inserted.inserted_id


async def test_a_kept_twin_is_edited_without_renaming_it(
    client: Client, settings: Settings, mongodb_uri: str
) -> None:
    """A PATCH of a kept decomposed twin that leaves its name alone (its circle only) keeps
    the name as stored, not composed into its twin's: 200, not a 409 (found by the reviewer
    rev41a, R3)."""
    _, twin_id = await _kept_twins(client, settings, mongodb_uri)
    circle = {**CIRCLE, "radius_m": 500}
    where = f"/api/v1/geofences/{twin_id}"
    response = await client.patch(where, json={"circle": circle}, headers=auth())

    assert response.status == 200, (response.status, await response.text())
    doc = await response.json()
    assert (doc["name"], doc["circle"]["radius_m"]) == (DECOMPOSED, 500)


@pytest.mark.parametrize("path", ["/api/v1/triggers", "/api/v1/schedules"])
async def test_a_kept_trigger_or_schedule_twin_is_edited_without_renaming_it(
    client: Client, settings: Settings, mongodb_uri: str, path: str
) -> None:
    """A trigger or schedule twin kept decomposed: a PATCH of something else keeps its name
    as stored (rev41a, R3)."""
    db = client.app[services_key].store.db
    collection = path.rsplit("/", 1)[1]
    if path.endswith("schedules"):
        body, change = await _schedule_body(client, COMPOSED), {"every": "2h"}
    else:
        body, change = {"name": COMPOSED, **BODIES[path]}, {"max_body_bytes": 4096}
    made = await post(client, path, body)
    original = await db[collection].find_one({"name": COMPOSED})
    assert original is not None
    twin_id = "trg_twin" if collection == "triggers" else None
    copy = {k: v for k, v in original.items() if k != "_id"}
    inserted = await db[collection].insert_one(
        {**({"_id": twin_id} if twin_id else {}), **copy, "name": DECOMPOSED}
    )
    await db["migrations"].delete_one({"_id": COMPOSE_STEP})
    async with open_services(settings, mongodb_uri=mongodb_uri):
        pass

    where = f"{path}/{inserted.inserted_id}"
    response = await client.patch(where, json=change, headers=auth())

    assert made["name"] == COMPOSED
    assert response.status == 200, (response.status, await response.text())
    assert (await response.json())["name"] == DECOMPOSED


QA = "\u0958"  # DEVANAGARI QA: a composition exclusion, two characters in NFC


@pytest.mark.parametrize(
    ("path", "limit"),
    [("/api/v1/geofences", 100), ("/api/v1/schedules", 200), ("/api/v1/triggers", 100)],
)
async def test_a_name_is_limited_as_composed(client: Client, path: str, limit: int) -> None:
    """A name's length is checked in NFC, as it is stored (rev41a, R5): U+0958 x 60% of the
    limit (120% composed) is refused at its creation, not stored over the limit and then
    refused at every later PATCH; a name of `limit` composed characters sent decomposed
    (twice as long) is taken."""
    over = QA * (limit * 6 // 10)
    if path.endswith("schedules"):
        body = await _schedule_body(client, over)
    else:
        body = {"name": over, **(BODIES[path])}
    refused = await client.post(path, json=body, headers=auth())
    assert refused.status == 422, (refused.status, await refused.text())
    assert "/name" in await refused.text()
    long = "é" * limit
    made = await post(client, path, {**body, "name": unicodedata.normalize("NFD", long)})
    assert made["name"] == long


async def test_renaming_one_of_kept_twins_does_not_let_a_new_twin_in(
    client: Client, settings: Settings, mongodb_uri: str
) -> None:
    """Once the composed member of kept geofence twins is renamed, `São Paulo` (either form)
    is still the kept decomposed twin's name: a 409, as a new name or as a rename (found by
    the reviewer rev41a, R4)."""
    made_id, _ = await _kept_twins(client, settings, mongodb_uri)
    renamed = await client.patch(
        f"/api/v1/geofences/{made_id}", json={"name": "Outra"}, headers=auth()
    )
    assert renamed.status == 200, await renamed.text()
    for name in (COMPOSED, DECOMPOSED):
        body = {"name": name, "kind": "authorized", "circle": CIRCLE}
        again = await client.post("/api/v1/geofences", json=body, headers=auth())
        assert again.status == 409, (name, again.status, await again.text())
    back = await client.patch(
        f"/api/v1/geofences/{made_id}", json={"name": COMPOSED}, headers=auth()
    )
    assert back.status == 409, await back.text()


@pytest.mark.parametrize("path", ["/api/v1/triggers", "/api/v1/schedules"])
async def test_renaming_one_of_kept_trigger_or_schedule_twins_does_not_let_a_new_twin_in(
    client: Client, settings: Settings, mongodb_uri: str, path: str
) -> None:
    """The same for triggers and schedules (rev41a, R4)."""
    db = client.app[services_key].store.db
    collection = path.rsplit("/", 1)[1]
    if path.endswith("schedules"):
        body = await _schedule_body(client, COMPOSED)
    else:
        body = {"name": COMPOSED, **BODIES[path]}
    made = await post(client, path, body)
    original = await db[collection].find_one({"name": COMPOSED})
    assert original is not None
    copy = {k: v for k, v in original.items() if k != "_id"}
    twin = {**({"_id": "trg_twin"} if collection == "triggers" else {}), **copy}
    await db[collection].insert_one({**twin, "name": DECOMPOSED})
    await db["migrations"].delete_one({"_id": COMPOSE_STEP})
    async with open_services(settings, mongodb_uri=mongodb_uri):
        pass

    renamed = await client.patch(f"{path}/{made['id']}", json={"name": "Outra"}, headers=auth())
    assert renamed.status == 200, await renamed.text()
    again = await client.post(path, json=body, headers=auth())
    assert again.status == 409, (again.status, await again.text())
    back = await client.patch(f"{path}/{made['id']}", json={"name": COMPOSED}, headers=auth())
    assert back.status == 409, await back.text()
