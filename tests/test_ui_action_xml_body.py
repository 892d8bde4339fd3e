"""An action's XML (SOAP) body in the admin UI, over HTTP: added, changed and removed from the
edit page, set when an action is created, shown on the detail page as text (its markup
escaped), and the API's problems (/xml_body/...) shown at their fields with what was typed."""

from __future__ import annotations

from typing import Any

from markupsafe import escape

from gateway.services import Services
from tests.partner_double import create_action, create_partner
from tests.support import auth
from tests.ui_support import Client, csrf, log_in, make_user

ENVELOPE = (
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
    ' xmlns:erp="urn:erp:multas">\n'
    "  <soapenv:Body>\n"
    "    <erp:informarPagamento><ait>{{ body.ait }}</ait></erp:informarPagamento>\n"
    "  </soapenv:Body>\n"
    "</soapenv:Envelope>"
)
XML_BODY = {
    "template": ENVELOPE,
    "soap": "1.1",
    "soap_action": "urn:erp:multas/informar",
    "sample": {"body": {"ait": "A123456789"}},
}


def _section(
    template: str = ENVELOPE,
    soap: str = "1.1",
    soap_action: str = "urn:erp:multas/informar",
    sample: str = '{"body": {"ait": "A123456789"}}',
) -> dict[str, str]:
    return {
        "xml_body.template": template,
        "xml_body.soap": soap,
        "xml_body.soap_action": soap_action,
        "xml_body.sample": sample,
    }


async def _action(client: Client, action_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/actions/{action_id}", headers=auth())
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def _edit_fields(client: Client, partner_id: str) -> dict[str, str]:
    return {
        "name": "push",
        "partner_id": partner_id,
        "method": "POST",
        "path": "/hooks",
        "mode": "deliver",
        "csrf": await csrf(client, "/admin/actions"),
    }


async def test_a_soap_body_added_on_the_edit_page_is_stored_and_shown_as_text(
    client: Client, services: Services
) -> None:
    partner = await create_partner(client, "https://erp.example.com")
    action = await create_action(client, partner["id"])
    await make_user(services)
    await log_in(client)
    base = f"/admin/actions/{action['id']}"
    edit = await (await client.get(f"{base}/edit")).text()
    assert 'name="xml_body.template"' in edit and 'name="xml_body.soap"' in edit
    # A browser sends a textarea's lines ending in CRLF: the template is stored with LF.
    section = _section(template=ENVELOPE.replace("\n", "\r\n"))
    fields = {**await _edit_fields(client, partner["id"]), **section}
    saved = await client.post(f"{base}/edit", data=fields)
    page = await saved.text()
    assert saved.status == 200 and "Ação salva" in page
    assert (await _action(client, action["id"]))["xml_body"] == XML_BODY
    # The detail page shows the template as text: its markup escaped, never markup.
    assert 'data-testid="xml-body"' in page and "SOAP 1.1" in page
    assert escape(ENVELOPE) in page
    assert "<soapenv:Envelope" not in page and "<erp:informarPagamento>" not in page
    assert "urn:erp:multas/informar" in page and "A123456789" in page
    # The edit page shows it back, as the form that would write it.
    edit = await (await client.get(f"{base}/edit")).text()
    assert escape(ENVELOPE) in edit and "<soapenv:Envelope" not in edit
    assert '<option value="1.1" selected>' in edit
    assert 'value="urn:erp:multas/informar"' in edit
    assert escape('"ait": "A123456789"') in edit


async def test_xml_body_problems_are_shown_at_their_fields_and_nothing_is_saved(
    client: Client, services: Services
) -> None:
    partner = await create_partner(client, "https://erp.example.com")
    action = await create_action(client, partner["id"])
    await make_user(services)
    await log_in(client)
    base = f"/admin/actions/{action['id']}"
    fields = await _edit_fields(client, partner["id"])
    broken = ENVELOPE.replace("{{ body.ait }}", "{{ body.ait }")
    cases: list[tuple[dict[str, str], str, str]] = [
        (_section(template=broken), "xml_body.template", "linha 3"),
        (_section(soap="1.2"), "xml_body.template", "SOAP 1.2"),
        (_section(template="<a><b></a>"), "xml_body.template", "well-formed"),
        (_section(soap_action='urn:"quoted"'), "xml_body.soap_action", "quotes"),
        (_section(sample="{body: 1"), "xml_body.sample", "malformed JSON"),
        (_section(sample="[1, 2]"), "xml_body.sample", "sample is an object"),
    ]
    for section, field, words in cases:
        refused = await client.post(f"{base}/edit", data={**fields, **section})
        page = await refused.text()
        assert refused.status == 422, field
        error = page[page.index(f'data-field="{field}"') :]
        assert words in error[: error.index("</div>")], (field, words)
        # What was typed is kept, escaped, in its field.
        assert escape(section["xml_body.template"]) in page
        assert f'<option value="{section["xml_body.soap"]}" selected>' in page
    # A GET sends no body: the problem is the section's own.
    get = await client.post(f"{base}/edit", data={**fields, "method": "GET", **_section()})
    assert get.status == 422 and 'data-field="xml_body"' in await get.text()
    assert (await _action(client, action["id"]))["xml_body"] is None


async def test_emptying_the_template_removes_the_xml_body_and_other_edits_keep_it(
    client: Client, services: Services
) -> None:
    partner = await create_partner(client, "https://erp.example.com")
    action = await create_action(client, partner["id"], xml_body=XML_BODY)
    await make_user(services)
    await log_in(client)
    base = f"/admin/actions/{action['id']}"
    fields = await _edit_fields(client, partner["id"])
    renamed = await client.post(f"{base}/edit", data={**fields, "name": "pay", **_section()})
    assert renamed.status == 200, await renamed.text()
    stored = await _action(client, action["id"])
    assert (stored["name"], stored["xml_body"]) == ("pay", XML_BODY)
    plain = _section(template="<pagamento>{{ body.ait }}</pagamento>", soap="", soap_action="")
    changed = await client.post(f"{base}/edit", data={**fields, **plain})
    assert changed.status == 200 and "XML simples" in await changed.text()
    assert (await _action(client, action["id"]))["xml_body"] == {
        "template": "<pagamento>{{ body.ait }}</pagamento>",
        "soap": None,
        "soap_action": None,
        "sample": {"body": {"ait": "A123456789"}},
    }
    # The template emptied: no XML body any more, whatever the other fields of the section say.
    removed = await client.post(f"{base}/edit", data={**fields, **_section(template="")})
    page = await removed.text()
    assert removed.status == 200 and 'data-testid="xml-body"' not in page
    assert (await _action(client, action["id"]))["xml_body"] is None


async def test_an_action_is_created_with_a_soap_body_and_its_problems_kept_in_the_form(
    client: Client, services: Services
) -> None:
    partner = await create_partner(client, "https://erp.example.com")
    await make_user(services)
    await log_in(client)
    fields = await _edit_fields(client, partner["id"])
    bare = await client.post("/admin/actions", data={**fields, "name": "json"})
    assert bare.status == 201, await bare.text()
    refused = await client.post("/admin/actions", data={**fields, **_section(soap="1.2")})
    page = await refused.text()
    assert refused.status == 422 and 'data-field="xml_body.template"' in page
    assert escape(ENVELOPE) in page and 'value="push"' in page
    created = await client.post("/admin/actions", data={**fields, **_section()})
    assert created.status == 201, await created.text()
    docs = await services.actions.list_actions("acme", {}, after=None, limit=5)
    by_name = {d["name"]: d for d in docs}
    assert set(by_name) == {"json", "push"}
    assert by_name["json"]["xml_body"] is None
    assert by_name["push"]["xml_body"] == XML_BODY
