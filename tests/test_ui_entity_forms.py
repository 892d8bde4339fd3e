"""Entity forms over HTTP: an admin creates, edits and deletes vehicles, drivers and `other`
documents of a kind from fields that follow the type's (or kind's) schema; the use case's
problems are shown at their fields with what was typed kept and nothing written; a stale
edit is a 409; another tenant's entity is a 404 and stays as it was."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.entities import Origin
from gateway.errors import NotFound
from gateway.services import Services
from gateway.web.state import services_key
from tests.partner_double import post
from tests.support import auth, inbox_items
from tests.test_ui_stale_edits import _stale_save
from tests.ui_support import Client, csrf, form_fields, log_in, make_user, replaced

API = Origin("api", "tester")
KIND = {
    "name": "pneu",
    "schema": {
        "type": "object",
        "required": ["psi"],
        "properties": {
            "psi": {"type": "number", "minimum": 0},
            "novo": {"type": "boolean"},
            "eixos": {"enum": [2, 3, 4]},
            "medidas": {"type": "array", "items": {"type": "integer"}},
        },
    },
}


def _errors(html: str, name: str) -> bool:
    return f'data-field="{name}"' in html


async def test_a_driver_is_created_from_its_schemas_fields_and_problems_show_at_them(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    page = await (await client.get("/admin/entities/driver/new")).text()
    fields = dict(form_fields(page, "/admin/entities/driver"))
    names = {"/cpf", "/name", "/cnh/number", "/cnh/category", "/email", "/push_tokens"}
    assert names <= fields.keys()
    typed = {"csrf": fields["csrf"], "/name": "Ana Souza", "/cpf": "111.111.111-12"}
    typed |= {"/cnh/category": "B", "/push_tokens": "[1, 2"}
    refused = await client.post("/admin/entities/driver", data=typed)
    html = await refused.text()
    assert refused.status == 422, html
    assert _errors(html, "/push_tokens") and "malformed JSON" in html
    kept = dict(form_fields(html, "/admin/entities/driver"))
    assert kept["/name"] == "Ana Souza" and kept["/cnh/category"] == "B"
    typed["/push_tokens"] = '["tok"]'
    refused = await client.post("/admin/entities/driver", data=typed)
    html = await refused.text()
    assert refused.status == 422 and _errors(html, "/cpf"), html  # the CPF's check digits
    assert _errors(html, "/cnh/number")  # cnh needs its number once it is given
    assert await services.entities.find("acme", "driver", {}, after=None, limit=5) == []
    typed |= {"/cpf": "529.982.247-25", "/cnh/number": "12345678900"}
    saved = await client.post("/admin/entities/driver", data=typed, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    doc = await services.entities.get("acme", "driver", "52998224725")
    assert saved.headers["Location"] == f"/admin/entities/driver/{doc['_id']}"
    assert doc["data"]["cnh"] == {"number": "12345678900", "category": "B"}
    assert doc["data"]["push_tokens"] == ["tok"]


async def test_a_vehicle_edit_changes_what_was_typed_and_removes_what_was_emptied(
    client: Client, services: Services
) -> None:
    data = {"plate": "ABC1D23", "model": "Actros", "group": "Sul", "year": 2020}
    data |= {"last_position": {"lat": -23.5, "lon": -46.6, "time": "2026-12-01T10:00:00Z"}}
    created = await services.entities.create("acme", "vehicle", data, API)
    ref = str(created.entity["_id"])
    await make_user(services)
    await log_in(client)
    action = f"/admin/entities/vehicle/{ref}/edit"
    fields = form_fields(await (await client.get(action)).text(), action)
    names = [n for n, _ in fields]
    assert "/plate" not in names and "/last_position" not in names
    assert "/current_driver" not in names
    assert dict(fields)["/year"] == "2020" and dict(fields)["/model"] == "Actros"
    typed = {"/year": "dois mil", "/model": "Axor"}
    refused = await client.post(action, data=replaced(fields, **typed))
    html = await refused.text()
    assert refused.status == 422 and _errors(html, "/year"), html
    fields = form_fields(html, action)
    assert dict(fields)["/year"] == "dois mil" and dict(fields)["/model"] == "Axor"  # kept
    assert (await services.entities.get("acme", "vehicle", ref))["data"]["model"] == "Actros"
    typed = replaced(fields, **{"/year": "2021", "/group": "", "/odometer_km": "1234,5"})
    saved = await client.post(action, data=typed, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    stored = (await services.entities.get("acme", "vehicle", ref))["data"]
    assert stored["model"] == "Axor" and stored["year"] == 2021 and stored["odometer_km"] == 1234.5
    assert "group" not in stored
    assert stored["last_position"] == data["last_position"]  # not the form's: kept


async def test_an_integer_wider_than_64_bits_typed_in_json_keeps_every_digit(
    client: Client, services: Services
) -> None:
    """A JSON field is read as the API reads a body (docs/api.md): an integer past 64 bits
    is its exact text, never a float that lost digits (1e+20)."""
    created = await services.entities.create("acme", "vehicle", {"plate": "ABC1D23"}, API)
    ref = str(created.entity["_id"])
    await make_user(services)
    await log_in(client)
    action = f"/admin/entities/vehicle/{ref}/edit"
    fields = form_fields(await (await client.get(action)).text(), action)
    typed = replaced(fields, **{"/attributes": '{"erp_id": 99999999999999999999, "n": 7}'})
    saved = await client.post(action, data=typed, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    stored = (await services.entities.get("acme", "vehicle", ref))["data"]
    assert stored["attributes"] == {"erp_id": "99999999999999999999", "n": 7}


async def test_a_stale_entity_edit_is_refused_and_keeps_what_was_typed(
    client: Client, services: Services
) -> None:
    created = await services.entities.create("acme", "vehicle", {"plate": "ABC1D23"}, API)
    ref = str(created.entity["_id"])
    await make_user(services)
    await log_in(client)
    html, stored = await _stale_save(
        client,
        f"/admin/entities/vehicle/{ref}/edit",
        f"/admin/entities/vehicle/{ref}/edit",
        ("PATCH", f"/api/v1/entities/vehicle/{ref}", {"model": "Theirs"}),
        {"/model": "Mine"},
    )
    assert "Theirs" in html
    assert stored["model"] == "Mine"


async def test_an_other_document_of_a_custom_kind_is_created_edited_and_deleted(
    client: Client, services: Services
) -> None:
    await services.kinds.create("acme", KIND, "api")
    await make_user(services)
    await log_in(client)
    chooser = await (await client.get("/admin/entities/other/new")).text()
    assert '<option value="pneu">' in chooser and '<option value="fine">' in chooser
    page = await (await client.get("/admin/entities/other/new?kind=pneu")).text()
    fields = dict(form_fields(page, "/admin/entities/other"))
    assert fields["kind"] == "pneu" and {"/key", "/psi", "/novo", "/medidas"} <= fields.keys()
    body = fields | {
        "/key": "P-1",
        "/psi": "32",
        "/novo": "true",
        "/medidas": "[205, 55]",
        "/eixos": "3",
    }
    saved = await client.post("/admin/entities/other", data=body, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    doc = await services.entities.get("acme", "other", "pneu:P-1")
    assert doc["data"] == {
        "kind": "pneu",
        "key": "P-1",
        "psi": 32,
        "novo": True,
        "medidas": [205, 55],
        "eixos": 3,  # a number, as the enumeration holds it
    }
    page = await (await client.get("/admin/entities/other/new?kind=pneu")).text()
    body = dict(form_fields(page, "/admin/entities/other")) | {"/key": "P-1", "/psi": "1"}
    twice = await client.post("/admin/entities/other", data=body)
    assert twice.status == 409 and "already exists" in await twice.text()
    action = f"/admin/entities/other/{doc['_id']}/edit"
    loaded = form_fields(await (await client.get(action)).text(), action)
    assert "kind" not in dict(loaded) and "/key" not in dict(loaded)
    assert dict(loaded)["/novo"] == "true" and dict(loaded)["/eixos"] == "3"
    edited = await client.post(
        action, data=replaced(loaded, **{"/novo": "false", "/psi": ""}), allow_redirects=False
    )
    html = await edited.text()
    assert edited.status == 422 and _errors(html, "/psi")  # psi is required
    again = replaced(form_fields(html, action), **{"/psi": "32"})
    edited = await client.post(action, data=again, allow_redirects=False)
    assert edited.status == 303
    assert (await services.entities.get("acme", "other", "pneu:P-1"))["data"]["novo"] is False
    token = await csrf(client)
    gone = await client.post(
        f"/admin/entities/other/{doc['_id']}/delete", data={"csrf": token}, allow_redirects=False
    )
    assert gone.status == 303 and gone.headers["Location"] == "/admin/entities/other"
    # Deleted, and said so at once (the relay has not run: the deletion is in the outbox).
    assert (await client.get(f"/admin/entities/other/{doc['_id']}")).status == 410
    with pytest.raises(NotFound):
        await services.entities.get("acme", "other", "pneu:P-1")


async def test_a_strangers_entity_is_not_found_and_stays_as_it_was(
    client: Client, services: Services
) -> None:
    created = await services.entities.create("globex", "vehicle", {"plate": "ABC1D23"}, API)
    ref = str(created.entity["_id"])
    await make_user(services)
    await log_in(client)
    token = await csrf(client)
    assert (await client.get(f"/admin/entities/vehicle/{ref}/edit")).status == 404
    edit = {"csrf": token, "model": "Mine"}
    assert (await client.post(f"/admin/entities/vehicle/{ref}/edit", data=edit)).status == 404
    delete = {"csrf": token}
    assert (await client.post(f"/admin/entities/vehicle/{ref}/delete", data=delete)).status == 404
    assert (await services.entities.get("globex", "vehicle", ref))["data"] == {"plate": "ABC1D23"}


async def test_an_unknown_type_or_kind_is_not_found(client: Client, services: Services) -> None:
    await make_user(services)
    await log_in(client)
    assert (await client.get("/admin/entities/boat/new")).status == 404
    assert (await client.get("/admin/entities/other/new?kind=nope")).status == 404
    response = await client.get("/api/v1/entities/other", headers=auth())
    assert (await response.json())["items"] == []


async def test_a_service_recorded_on_a_vehicles_page_is_queued_for_its_fold(
    client: Client, services: Services
) -> None:
    created = await services.entities.create("acme", "vehicle", {"plate": "ABC1D23"}, API)
    vid = str(created.entity["_id"])
    plan = await post(client, "/api/v1/maintenance-plans", {"name": "oleo", "every_km": 10_000})
    await make_user(services)
    await log_in(client)
    action = f"/admin/entities/vehicle/{vid}/services"
    fields = form_fields(await (await client.get(f"/admin/entities/vehicle/{vid}")).text(), action)
    assert "plan" in dict(fields)
    refused = await client.post(action, data=replaced(fields, km="-5", at="2999-01-01T10:00"))
    html = await refused.text()
    assert refused.status == 422 and _errors(html, "km") and _errors(html, "at"), html
    kept = form_fields(html, action)
    assert (dict(kept)["km"], dict(kept)["at"]) == ("-5", "2999-01-01T10:00")
    assert await inbox_items(services.store, "acme", vid, "service") == []
    typed = replaced(kept, km="10120,5", at="2026-11-30T09:00", plan=plan["id"])
    saved = await client.post(action, data=typed, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    [queued] = await inbox_items(services.store, "acme", vid, "service")
    assert (queued["km"], queued["plan"]) == (10_120.5, plan["id"])
    assert queued["at"].isoformat() == "2026-11-30T12:00:00+00:00"  # Brasília time
    assert queued["source"] == "admin:ana@acme.com.br"


async def test_a_service_typed_in_year_26_or_9999_is_refused_at_its_field_with_why(
    client: Client, services: Services
) -> None:
    created = await services.entities.create("acme", "vehicle", {"plate": "ABC1D23"}, API)
    vid = str(created.entity["_id"])
    await post(client, "/api/v1/maintenance-plans", {"name": "oleo", "every_days": 180})
    await make_user(services)
    await log_in(client)
    action = f"/admin/entities/vehicle/{vid}/services"
    fields = form_fields(await (await client.get(f"/admin/entities/vehicle/{vid}")).text(), action)
    # a two-digit year in the browser's date-time field is year 26; year 9999 in Brasília
    # time is past the calendar in UTC, and in the future
    for at, words in (("0026-12-01T10:00", "before 2000"), ("9999-12-31T23:59", "in the future")):
        refused = await client.post(action, data=replaced(fields, at=at))
        html = await refused.text()
        assert refused.status == 422, html
        shown = re.search(r'data-field="at">(.*?)</div>', html, re.S)
        assert shown is not None and words in shown.group(1), html
        fields = form_fields(html, action)
    assert await inbox_items(services.store, "acme", vid, "service") == []


async def test_an_odometer_moved_by_telemetry_during_an_edit_is_neither_stale_nor_set_back(
    client: Client, services: Services
) -> None:
    data = {"plate": "ABC1D23", "model": "Actros", "odometer_km": 1000}
    created = await services.entities.create("acme", "vehicle", data, API)
    ref = str(created.entity["_id"])
    await make_user(services)
    await log_in(client)
    action = f"/admin/entities/vehicle/{ref}/edit"
    fields = form_fields(await (await client.get(action)).text(), action)
    assert dict(fields)["/odometer_km"] == "1000"
    await services.entities.patch("acme", "vehicle", ref, {"odometer_km": 1012.5}, API)
    saved = await client.post(
        action, data=replaced(fields, **{"/model": "Axor"}), allow_redirects=False
    )
    assert saved.status == 303, await saved.text()
    stored = (await services.entities.get("acme", "vehicle", ref))["data"]
    assert (stored["model"], stored["odometer_km"]) == ("Axor", 1012.5)
    # An odometer the admin types is a reading: it is sent.
    fields = form_fields(await (await client.get(action)).text(), action)
    saved = await client.post(
        action, data=replaced(fields, **{"/odometer_km": "2000"}), allow_redirects=False
    )
    assert saved.status == 303
    assert (await services.entities.get("acme", "vehicle", ref))["data"]["odometer_km"] == 2000


def _labels(html: str) -> dict[str, str]:
    """Each labelled control's id and its label's text (tags left out, spaces joined)."""
    found = re.findall(r'<label for="([^"]+)">(.*?)</label>', html, re.S)
    return {key: " ".join(re.sub(r"<[^>]+>", " ", text).split()) for key, text in found}


async def test_shipped_fields_are_labelled_in_the_pages_language_uploaded_ones_by_their_title(
    client: Client, services: Services
) -> None:
    """Not the property's name (`odometer_km`): the shipped types' and kinds' fields by the
    UI's own words in the visitor's language (the schemas' English titles read oddly on a
    Portuguese page); a tenant's uploaded kind by its schema's `title`, else its name made
    readable, in every language. The name the API and the mappings use stays beside it."""
    await make_user(services)
    await log_in(client)
    vehicle = await (await client.get("/admin/entities/vehicle/new")).text()
    labels = _labels(vehicle)
    assert labels["f-odometer_km"] == "Hodômetro (km)"
    assert labels["f-plate"] == "Placa (obrigatório)"
    assert labels["f-make"] == "Marca"
    assert labels["f-vin"] == "Chassi (VIN)"
    assert labels["f-last_service--at"] == "Última revisão › Quando"
    assert "<code>odometer_km</code>" in vehicle
    search = _labels(await (await client.get("/admin/entities/vehicle")).text())
    assert search["q-renavam"] == "RENAVAM" and search["q-group"] == "Grupo"
    documents = _labels(await (await client.get("/admin/entities/other?kind=fine")).text())
    assert documents["q-plate"] == "Placa" and documents["q-status"] == "Situação"
    driver = _labels(await (await client.get("/admin/entities/driver/new")).text())
    assert (
        driver["f-name"] == "Nome (obrigatório)" and driver["f-cnh--expires_on"] == "CNH › Validade"
    )
    fine = _labels(await (await client.get("/admin/entities/other/new?kind=fine")).text())
    assert fine["f-key"] == "Chave (obrigatório)"
    assert fine["f-amount_brl"] == "Valor (R$) (obrigatório)"
    assert fine["f-indication_deadline"] == "Prazo para indicar o condutor"
    titled = {**KIND, "name": "pneu_titulado"}
    titled["schema"] = {
        **KIND["schema"],
        "properties": {
            **KIND["schema"]["properties"],
            "psi": {"type": "number", "title": "Pressão"},
        },
    }
    await post(client, "/api/v1/kinds", titled)
    other = _labels(await (await client.get("/admin/entities/other/new?kind=pneu_titulado")).text())
    assert other["f-psi"] == "Pressão (obrigatório)" and other["f-medidas"] == "Medidas"
    await client.get("/admin/lang/en")
    english = _labels(await (await client.get("/admin/entities/vehicle/new")).text())
    assert english["f-odometer_km"] == "Odometer (km)" and english["f-make"] == "Make"
    assert english["f-plate"] == "Plate (required)"
    again = _labels(await (await client.get("/admin/entities/other/new?kind=pneu_titulado")).text())
    assert again["f-psi"] == "Pressão (required)" and again["f-key"] == "Key (required)"


async def test_an_emptied_property_of_a_nested_object_is_removed_and_the_others_kept(
    client: Client, services: Services
) -> None:
    data = {
        "name": "Ana",
        "cpf": "52998224725",
        "cnh": {"number": "02650306461", "category": "B", "expires_on": "2030-01-31"},
    }
    ref = str((await services.entities.create("acme", "driver", data, API)).entity["_id"])
    await make_user(services)
    await log_in(client)
    action = f"/admin/entities/driver/{ref}/edit"
    fields = form_fields(await (await client.get(action)).text(), action)
    emptied = ("/cnh/expires_on", "/cnh/category")  # the date emptied, "—" chosen
    posted = [(n, "" if n in emptied else v) for n, v in fields]
    saved = await client.post(action, data=posted, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    stored = (await services.entities.get("acme", "driver", ref))["data"]
    assert stored["cnh"] == {"number": "02650306461"}
    assert stored["name"] == "Ana"


async def test_editing_one_member_of_a_whole_contact_keeps_the_others_and_an_emptied_one_goes(
    client: Client, services: Services
) -> None:
    # `contact` is one value (x-whole): the write replaces it with what is sent, so the form
    # sends the contact as the admin sees it after the edit, never the changed member alone.
    contact = {"name": "Ana", "phone": "(11) 98765-4321", "email": "ana@example.com"}
    data = {"name": "Guincho", "cnpj": "11222333000181", "contact": contact}
    ref = str((await services.entities.create("acme", "supplier", data, API)).entity["_id"])
    await make_user(services)
    await log_in(client)
    action = f"/admin/entities/supplier/{ref}/edit"

    async def save(typed: dict[str, str]) -> dict[str, object]:
        fields = form_fields(await (await client.get(action)).text(), action)
        assert {*typed} <= {n for n, _ in fields}, fields
        posted = [(n, typed.get(n, v)) for n, v in fields]
        saved = await client.post(action, data=posted, allow_redirects=False)
        assert saved.status == 303, await saved.text()
        stored: dict[str, object] = (await services.entities.get("acme", "supplier", ref))["data"]
        return stored

    stored = await save({"/contact/email": "ana.souza@example.com"})
    assert stored["contact"] == {
        "name": "Ana",
        "phone": "+5511987654321",
        "email": "ana.souza@example.com",
    }
    stored = await save({"/contact/phone": ""})
    assert stored["contact"] == {"name": "Ana", "email": "ana.souza@example.com"}
    assert stored["name"] == "Guincho"


async def test_a_contact_member_changed_while_the_admin_saves_another_is_not_put_back(
    client: Client, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The save builds the whole `contact` from the members it read: an ERP's change of the
    phone landing between that read and the write was silently put back (rev25 F6). Now the
    write is made over the revision read only; the save reads the supplier again and is a
    stale edit, the current phone shown, nothing of the form's written."""
    contact = {"name": "Ana", "phone": "(11) 98765-4321", "email": "ana@example.com"}
    data = {"name": "Guincho", "cnpj": "11222333000181", "contact": contact}
    ref = str((await services.entities.create("acme", "supplier", data, API)).entity["_id"])
    await make_user(services)
    await log_in(client)
    action = f"/admin/entities/supplier/{ref}/edit"
    fields = form_fields(await (await client.get(action)).text(), action)
    app = client.app[services_key].entities  # the app's (`services` is another process)
    real_patch = app.patch
    erp = Origin("trigger", "erp")

    async def erp_first(tenant: str, etype: str, ref_: str, *args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(app, "patch", real_patch)
        erps = {"contact": {**contact, "phone": "(21) 99999-0000"}}
        await real_patch(tenant, etype, ref_, erps, erp)  # lands after the save's read
        return await real_patch(tenant, etype, ref_, *args, **kwargs)

    monkeypatch.setattr(app, "patch", erp_first)
    posted = replaced(fields, **{"/contact/email": "ana.souza@example.com"})
    refused = await client.post(action, data=posted, allow_redirects=False)
    html = await refused.text()
    assert app.patch == real_patch  # the ERP's write did land in between
    stored = (await services.entities.get("acme", "supplier", ref))["data"]["contact"]
    assert stored == {**contact, "phone": "+5521999990000"}
    assert refused.status == 409 and 'data-testid="stale-edit"' in html, html
    assert "+5521999990000" in html and "ana.souza@example.com" in html  # current and typed


async def test_an_odometer_moved_while_the_admin_saves_is_kept_and_the_edit_saved(
    client: Client, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live value (the odometer) written between the save's read and its write moves the
    entity's revision, not the form's: the save reads it again and writes its change."""
    data = {"plate": "ABC1D23", "model": "Actros", "odometer_km": 1000}
    ref = str((await services.entities.create("acme", "vehicle", data, API)).entity["_id"])
    await make_user(services)
    await log_in(client)
    action = f"/admin/entities/vehicle/{ref}/edit"
    fields = form_fields(await (await client.get(action)).text(), action)
    app = client.app[services_key].entities  # the app's (`services` is another process)
    real_patch = app.patch
    writes: list[Any] = []

    async def telemetry_first(tenant: str, etype: str, ref_: str, *args: Any, **kwargs: Any) -> Any:
        if not writes:
            await real_patch(tenant, etype, ref_, {"odometer_km": 1012.5}, API)
        writes.append(kwargs.get("at_rev"))
        return await real_patch(tenant, etype, ref_, *args, **kwargs)

    monkeypatch.setattr(app, "patch", telemetry_first)
    saved = await client.post(
        action, data=replaced(fields, **{"/model": "Axor"}), allow_redirects=False
    )
    assert saved.status == 303, await saved.text()
    assert len(writes) == 2  # refused over the revision it read, then made again
    stored = (await services.entities.get("acme", "vehicle", ref))["data"]
    assert (stored["model"], stored["odometer_km"]) == ("Axor", 1012.5)


async def test_a_member_deleted_from_a_json_textarea_is_removed_from_the_stored_object(
    client: Client, services: Services
) -> None:
    data = {
        "plate": "ABC1D23",
        "attributes": {"tracker_id": "b3A", "old_erp_id": "77", "erp": {"a": 1, "b": 2}},
    }
    ref = str((await services.entities.create("acme", "vehicle", data, API)).entity["_id"])
    await make_user(services)
    await log_in(client)
    action = f"/admin/entities/vehicle/{ref}/edit"
    fields = form_fields(await (await client.get(action)).text(), action)
    typed = '{"tracker_id": "b3A", "erp": {"a": 1}}'  # a member and a nested one deleted
    posted = [(n, typed if n == "/attributes" else v) for n, v in fields]
    saved = await client.post(action, data=posted, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    stored = (await services.entities.get("acme", "vehicle", ref))["data"]
    assert stored["attributes"] == {"tracker_id": "b3A", "erp": {"a": 1}}
    assert stored["plate"] == "ABC1D23"


async def test_an_emptied_required_property_is_refused_at_its_field_and_nothing_changes(
    client: Client, services: Services
) -> None:
    data = {"name": "Ana", "cpf": "52998224725"}
    created = await services.entities.create("acme", "driver", data, API)
    ref = str(created.entity["_id"])
    await make_user(services)
    await log_in(client)
    action = f"/admin/entities/driver/{ref}/edit"
    fields = form_fields(await (await client.get(action)).text(), action)
    posted = [(n, "" if n == "/name" else v) for n, v in fields]
    refused = await client.post(action, data=posted, allow_redirects=False)
    assert refused.status == 422
    page = await refused.text()
    assert 'aria-invalid="true"' in page and 'name="/name"' in page
    stored = await services.entities.get("acme", "driver", ref)
    assert stored["data"]["name"] == "Ana" and stored["rev"] == created.entity["rev"]
