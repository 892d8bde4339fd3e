"""A problem's label says what is wrong: "Obrigatório" (required) only when nothing was given;
malformed JSON, a file that is not UTF-8 text and a version that is not a number are labelled
by their format or type."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from aiohttp import FormData

from gateway.services import Services
from tests.partner_double import upload_mapping
from tests.support import auth
from tests.ui_support import (
    ALERT_TEMPLATE,
    POLLED_MAPPING,
    Client,
    csrf,
    form_fields,
    log_in,
    make_user,
    replaced,
)


def _problems(html: str, name: str) -> list[str]:
    """The problems shown at a field: each label and message, tags left out."""
    block = re.search(
        rf'<div class="field-error" id="[^"]+" data-field="{name}">(.*?)</div>', html, re.S
    )
    assert block is not None, f"no problem at {name}"
    return _texts(block.group(1))


def _upload_problems(html: str) -> list[str]:
    """The problems the upload form lists above its fields."""
    block = re.search(r'data-testid="upload-problems">(.*?)</ul>', html, re.S)
    assert block is not None, "no problems listed"
    return _texts(block.group(1))


def _texts(html: str) -> list[str]:
    found = re.findall(r'<span class="problem">(.*?)</span></span>', html, re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", p).split()) for p in found]


async def test_values_given_but_unreadable_are_not_labelled_required(
    client: Client, services: Services
) -> None:
    await upload_mapping(client, POLLED_MAPPING)
    await make_user(services)
    await log_in(client)
    action = "/admin/mappings/frota-api/test"
    fields = form_fields(await (await client.get("/admin/mappings/frota-api")).text(), action)
    typed = replaced(fields, payload='{"veiculos": []}', version="dois")
    refused = await client.post(action, data=typed)
    html = await refused.text()
    assert refused.status == 422, html
    [version] = _problems(html, "version")
    assert version.startswith("Tipo inválido: a version is a whole number (1, 2, ...)"), version
    typed = replaced(fields, payload='{"veiculos": []}', params="{bad")
    html = await (await client.post(action, data=typed)).text()
    [params] = _problems(html, "params")
    assert params.startswith("Formato inválido: malformed JSON"), params
    typed = replaced(fields, payload='{"veiculos": [], "veiculos": [1]}')
    html = await (await client.post(action, data=typed)).text()
    [payload] = _problems(html, "payload")
    assert "malformed JSON: the member &#34;veiculos&#34; is given twice" in payload, payload

    upload = FormData()
    upload.add_field("csrf", await csrf(client, "/admin/mappings"))
    upload.add_field("file", "name: frota\n# São Paulo\n".encode("latin-1"), filename="m.yaml")
    refused = await client.post("/admin/mappings", data=upload)
    html = await refused.text()
    assert refused.status == 422, html
    [shown] = _upload_problems(html)  # the API upload's words (file_text)
    assert shown.startswith("Formato inválido: file is not UTF-8: invalid continuation"), shown
    # Notepad's "Unicode" (UTF-16 with its byte order mark) is read, as an API upload is.
    upload = FormData()
    upload.add_field("csrf", await csrf(client, "/admin/mappings"))
    text = "name: frota\ndescription: São Paulo\ndirection: inbound\nentity_type: vehicle\n"
    text += "key: [plate]\nfields:\n  plate: placa\n"
    upload.add_field("file", text.encode("utf-16"), filename="m.yaml")
    taken = await client.post("/admin/mappings", data=upload, allow_redirects=False)
    assert taken.status in (302, 303), await taken.text()
    assert taken.headers["Location"].startswith("/admin/mappings/frota")
    # Nothing chosen nor pasted: that one is required.
    token = await csrf(client, "/admin/mappings")
    html = await (await client.post("/admin/mappings", data={"csrf": token, "source": ""})).text()
    assert _upload_problems(html) == ["Obrigatório: choose a mapping file or paste its text"]

    token = await csrf(client, "/admin/kinds")
    html = await (
        await client.post("/admin/kinds", data={"csrf": token, "name": "pneu", "schema": "[1]"})
    ).text()
    [schema] = _problems(html, "schema")
    assert schema.startswith("Tipo inválido: paste the JSON Schema"), schema


async def test_a_version_of_thousands_of_digits_is_refused_not_a_crash(
    client: Client, services: Services
) -> None:
    """Python reads no integer of over 4,300 digits: the version pages decide without, and
    answer the 422 that any other version that is no version gets."""
    await upload_mapping(client, POLLED_MAPPING)
    await make_user(services)
    await log_in(client)
    nines, zeros = "9" * 5000, "0" * 5000
    for path, words in (
        (f"/admin/mappings/frota-api/versions/{nines}", "no version is that high"),
        (f"/admin/mappings/frota-api/diff?from=1&to={nines}", "no version is that high"),
        (f"/admin/mappings/frota-api/versions/{zeros}", "versions start at 1"),
        (f"/admin/mappings/frota-api/diff?from={zeros}&to=1", "versions start at 1"),
        ("/admin/mappings/frota-api/versions/dois", "a version is a whole number (1, 2, ...)"),
    ):
        response = await client.get(path)
        html = await response.text()
        assert response.status == 422, (path[:60], response.status)
        assert "Dados inválidos" in html and words in html, path[:60]


async def test_an_upload_with_more_problems_than_listed_says_how_many_more(
    client: Client, services: Services
) -> None:
    """150 fields naming an unknown transform: 300 problems, the first 100 listed (as the API
    does), and the page says there are 200 more: not the complete list."""
    lines = ["name: muitos", "direction: inbound", "entity_type: vehicle", "key: [plate]"]
    lines += ["fields:", "  plate: {from: placa}"]
    lines += [f"  f{i}: {{from: x, transforms: [nosuch{i}]}}" for i in range(150)]
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/mappings")
    source = "\n".join(lines) + "\n"
    refused = await client.post("/admin/mappings", data={"csrf": token, "source": source})
    page = await refused.text()
    assert refused.status == 422
    assert len(_upload_problems(page)) == 100
    omitted = re.search(r'data-testid="problems-omitted">(.*?)</p>', page, re.S)
    assert omitted is not None and "mais 200 " in omitted.group(1), page


async def _keyword_at(client: Client, path: str, body: Any, pointer: str) -> str:
    """The keyword of the API's problem at `pointer` for `body` (JSON, or a YAML text)."""
    if isinstance(body, str):
        headers = {**auth(), "Content-Type": "application/yaml"}
        answer = await client.post(path, data=body.encode(), headers=headers)
    else:
        answer = await client.post(path, json=body, headers=auth())
    problem = await answer.json()
    assert answer.status == 422, problem
    [keyword] = [e["keyword"] for e in problem["errors"] if e["pointer"] == pointer]
    return str(keyword)


async def test_a_too_long_description_is_refused_as_too_long_not_as_the_wrong_type(
    client: Client, services: Services
) -> None:
    """A mapping's, a mapping param's and a template's description, and a schedule's name,
    are texts: one too long is `maxLength` ("Longo demais"), one not a text still `type`."""
    mapping = "name: ll\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
    mapping += "fields:\n  plate: {from: p}\n"
    long_text = "x" * 3000
    for value, keyword in ((long_text, "maxLength"), ("[1, 2]", "type")):
        described = f"{mapping}description: {value}\n"
        assert await _keyword_at(client, "/api/v1/mappings", described, "/description") == keyword
        param = f"{mapping}params:\n  unidade: {{description: {value}}}\n"
        at = "/params/unidade/description"
        assert await _keyword_at(client, "/api/v1/mappings", param, at) == keyword
    template = {**ALERT_TEMPLATE, "description": "x" * 2001}
    assert await _keyword_at(client, "/api/v1/templates", template, "/description") == "maxLength"
    schedule = {"name": "x" * 201, "action_id": "none", "every": "1h"}
    assert await _keyword_at(client, "/api/v1/schedules", schedule, "/name") == "maxLength"
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/mappings")
    source = f"{mapping}description: {long_text}\n"
    refused = await client.post("/admin/mappings", data={"csrf": token, "source": source})
    assert refused.status == 422
    [shown] = _upload_problems(await refused.text())
    assert shown.startswith("Longo demais (linha 7): description is text of at most"), shown


async def test_a_schedule_text_left_empty_is_labelled_required_not_the_wrong_type(
    client: Client, services: Services
) -> None:
    """The form drops a field left empty, and a schedule's absent name was refused as
    `type` ("Tipo inválido"), as was one left out of the API's body."""
    schedule = {"action_id": "none", "every": "1h"}
    assert await _keyword_at(client, "/api/v1/schedules", schedule, "/name") == "required"
    for name, keyword in ((None, "required"), ("", "minLength"), (" ", "pattern"), (1, "type")):
        body = {**schedule, "name": name}
        assert await _keyword_at(client, "/api/v1/schedules", body, "/name") == keyword, name
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/schedules/new")
    form = {
        "csrf": token,
        "name": "",
        "action_id": "none",
        "every": "5m",
        "target.type": "entities",
    }
    refused = await client.post("/admin/schedules", data=form)
    html = await refused.text()
    assert refused.status == 422, html
    [shown] = _problems(html, "name")
    assert shown.startswith("Obrigatório"), shown


# A new partner's credentials each type asks for (scope, OAuth's, is optional).
CREDENTIALS = {
    "bearer": ("token",),
    "header": ("name", "value"),
    "basic": ("username", "password"),
    "oauth2_client_credentials": ("token_url", "client_id", "client_secret"),
    "query": ("name", "value"),
    "geotab": ("url", "database", "username", "password"),
}


async def test_a_new_partners_credentials_left_empty_are_labelled_required(
    client: Client, services: Services
) -> None:
    """Each one was "Tipo inválido" (`type`), though nothing was typed."""
    await make_user(services)
    await log_in(client)
    for kind, names in CREDENTIALS.items():
        token = await csrf(client, "/admin/partners")
        form = {"csrf": token, "name": "ERP", "base_url": "https://erp.example.com"}
        refused = await client.post("/admin/partners", data={**form, "auth.type": kind})
        html = await refused.text()
        assert refused.status == 422, html
        for name in names:
            [shown] = _problems(html, f"auth.{name}")
            assert shown.startswith("Obrigatório:"), (kind, shown)


async def test_a_partners_credential_given_empty_or_not_as_text_says_so_in_the_api(
    client: Client,
) -> None:
    partner = {"name": "ERP", "base_url": "https://erp.example.com"}
    for kind in ("basic", "geotab"):
        for value, keyword in ((None, "required"), ("", "minLength"), (1, "type")):
            body = {**partner, "auth": {"type": kind, "username": value}}
            at = await _keyword_at(client, "/api/v1/partners", body, "/auth/username")
            assert at == keyword, (kind, value)


def _email_channel(**smtp: Any) -> dict[str, Any]:
    server = {"host": "127.0.0.1", "port": 2525, "security": "none", **smtp}
    return {"name": "email", "type": "email", "smtp": server, "from": "a@acme.com.br"}


async def test_a_channels_credentials_given_empty_are_labelled_required(
    client: Client, services: Services
) -> None:
    """A channel's SMTP password (or username, an SMS channel's action) given empty in its
    document was "Tipo inválido" (`type`), though nothing was typed: as a partner's
    credential left empty, "Obrigatório"."""
    await make_user(services)
    await log_in(client)
    documents = {
        "/smtp/password": _email_channel(username="frota", password=""),
        "/smtp/username": _email_channel(username="", password="s3nha"),
        "/action_id": {"name": "sms", "type": "sms", "action_id": "", "from": "Frota"},
    }
    for pointer, doc in documents.items():
        token = await csrf(client, "/admin/channels")
        refused = await client.post(
            "/admin/channels", data={"csrf": token, "document": json.dumps(doc)}
        )
        html = await refused.text()
        assert refused.status == 422, html
        shown = [p for p in _problems(html, "document") if f"{pointer}:" in p]
        assert shown and all(p.startswith("Obrigatório:") for p in shown), (pointer, shown)


async def test_a_channel_form_sent_again_without_its_password_labels_it_required(
    client: Client, services: Services
) -> None:
    """A refused form blanks the password it was sent with (never shown back): saved again
    without typing it, the password is "Obrigatório", not "Tipo inválido"."""
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/channels")
    doc = _email_channel(username="frota", password="s3nha", port="x")
    refused = await client.post(
        "/admin/channels", data={"csrf": token, "document": json.dumps(doc)}
    )
    page = await refused.text()
    assert refused.status == 422 and "s3nha" not in page
    fixed = json.loads(html.unescape(_textarea(page, "document")))
    fixed["smtp"]["port"] = 2525
    again = await client.post(
        "/admin/channels",
        data=replaced(form_fields(page, "/admin/channels"), document=json.dumps(fixed)),
    )
    page = await again.text()
    assert again.status == 422, page
    [shown] = [p for p in _problems(page, "document") if "/smtp/password:" in p]
    assert shown.startswith("Obrigatório:"), shown


def _textarea(page: str, name: str) -> str:
    found = re.search(rf'<textarea[^>]* name="{name}"[^>]*>\n?(.*?)</textarea>', page, re.S)
    assert found is not None, f"no textarea {name}"
    return found.group(1)


async def test_a_channels_smtp_password_given_empty_or_not_as_text_says_so_in_the_api(
    client: Client,
) -> None:
    """The partner credentials' rule: given empty `minLength`, not text `type`."""
    for value, keyword in (("", "minLength"), (1, "type")):
        body = _email_channel(username="frota", password=value)
        assert await _keyword_at(client, "/api/v1/channels", body, "/smtp/password") == keyword
