"""Every page of the admin UI renders for an admin, over HTTP; forms over the partner, action,
subscription, flow and template use cases keep what was typed and never echo a secret."""

from __future__ import annotations

import html
import re

import orjson

from gateway.services import Services
from gateway.ui.navigation import NAV
from tests.partner_double import (
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    post,
)
from tests.support import auth
from tests.ui_support import ALERT_TEMPLATE, Client, csrf, form_fields, log_in, make_user, replaced


async def test_every_page_of_the_menu_renders(client: Client, services: Services) -> None:
    await make_user(services)
    await log_in(client)
    for item in NAV:
        response = await client.get(f"/admin{item.path}")
        assert response.status == 200, f"{item.path}: {await response.text()}"
    for path in (
        "/admin/rejected",
        "/admin/triggers/new",
        "/admin/schedules/new",
        "/admin/entities/driver",
    ):
        assert (await client.get(path)).status == 200


async def test_a_partner_is_registered_and_its_credentials_never_shown(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/partners")
    missing = await client.post(
        "/admin/partners", data={"csrf": token, "name": "ERP", "auth.type": "bearer"}
    )
    assert missing.status == 422
    page = await missing.text()
    assert 'data-field="base_url"' in page and 'value="ERP"' in page
    created = await client.post(
        "/admin/partners",
        data={
            "csrf": token,
            "name": "ERP",
            "base_url": "https://erp.example.com",
            "auth.type": "bearer",
            "auth.token": "very-secret-token",
            "auth.username": "ignored",
            "timeout_seconds": "5",
        },
    )
    assert created.status == 200
    page = await created.text()
    assert "ERP" in page and "very-secret-token" not in page
    (partner,) = await services.actions.list_partners("acme", after=None, limit=5)
    assert partner["auth_type"] == "bearer" and partner["timeout_seconds"] == 5


async def test_a_subscription_secret_is_shown_once(client: Client, services: Services) -> None:
    await make_user(services)
    partner = await create_partner(client, "https://erp.example.com")
    action = await create_action(client, partner["id"])
    await log_in(client)
    token = await csrf(client, "/admin/subscriptions")
    response = await client.post(
        "/admin/subscriptions",
        data={"csrf": token, "action_id": action["id"], "event_types": "entity.updated, x.y"},
    )
    assert response.status == 201
    page = await response.text()
    assert "whsec_" in page
    (sub,) = await services.actions.list_subscriptions("acme", {}, after=None, limit=5)
    assert sub["event_types"] == ["entity.updated", "x.y"]
    detail = await (await client.get(f"/admin/subscriptions/{sub['_id']}")).text()
    assert "whsec_" not in detail
    await create_subscription(client, action["id"])


async def test_a_template_preview_renders_a_sample_and_a_viewer_may_run_it(
    client: Client, services: Services
) -> None:
    body = {
        "name": "alert",
        "channel_type": "sms",
        "locales": {
            "pt-BR": {"text": "Olá {{ driver.name }}"},
            "en": {"text": "Hi {{ driver.name }}"},
        },
    }
    response = await client.post("/api/v1/templates", json=body, headers=auth())
    template = await response.json()
    await make_user(services, email="vera@acme.com.br", role="viewer")
    await log_in(client, email="vera@acme.com.br")
    token = await csrf(client, f"/admin/templates/{template['id']}")
    preview = await client.post(
        f"/admin/templates/{template['id']}/preview",
        data={"csrf": token, "context": '{"driver": {"name": "<b>Ana</b>"}}', "locale": "en"},
    )
    assert preview.status == 200
    assert "Hi &lt;b&gt;Ana&lt;/b&gt;" in await preview.text()
    bad = await client.post(
        f"/admin/templates/{template['id']}/preview", data={"csrf": token, "context": "{nope"}
    )
    assert bad.status == 422 and 'data-field="context"' in await bad.text()


async def test_a_template_preview_renders_the_text_being_edited_without_storing_it(
    client: Client, services: Services
) -> None:
    """The admin previews what the edit form holds, not the stored version: the page comes
    back with the typed text kept, its rendering, and nothing saved; a draft the sandbox
    refuses is refused at the document, like a save of it."""
    body = {"name": "alert", "channel_type": "sms", "locales": {"pt-BR": {"text": "Olá {{ d }}"}}}
    template = await (await client.post("/api/v1/templates", json=body, headers=auth())).json()
    await make_user(services)
    await log_in(client)
    page_url = f"/admin/templates/{template['id']}"
    page = await (await client.get(page_url)).text()
    fields = dict(form_fields(page, f"{page_url}/edit"))
    draft = {**body, "locales": {"pt-BR": {"text": "Oi {{ d }}, rascunho"}}}
    fields.update(document=orjson.dumps(draft).decode(), context='{"d": "Ana"}')
    previewed = await client.post(f"{page_url}/preview", data=fields)
    shown = await previewed.text()
    assert previewed.status == 200, shown
    assert "Oi Ana, rascunho" in shown and "Olá Ana" not in shown
    assert "rascunho" in dict(form_fields(shown, f"{page_url}/edit"))["document"]  # kept
    stored = await (await client.get(f"/api/v1/templates/{template['id']}", headers=auth())).json()
    assert stored["locales"]["pt-BR"]["text"] == "Olá {{ d }}" and stored["version"] == 1
    unsafe = {**body, "locales": {"pt-BR": {"text": "{{ d.__class__.__mro__ }}"}}}
    fields.update(document=orjson.dumps(unsafe).decode())
    refused = await client.post(f"{page_url}/preview", data=fields)
    assert refused.status == 422 and 'data-field="document"' in await refused.text()


async def test_a_preview_context_that_is_not_an_object_is_refused_next_to_its_field(
    client: Client, services: Services
) -> None:
    """`-1`, `true` or `[1]` in the context box is valid JSON but no context: the render
    raised TypeError, a 500 page. It is refused next to the field, in the UI and the API."""
    body = {"name": "alert", "channel_type": "sms", "locales": {"pt-BR": {"text": "Olá"}}}
    template = await (await client.post("/api/v1/templates", json=body, headers=auth())).json()
    await make_user(services)
    await log_in(client)
    token = await csrf(client, f"/admin/templates/{template['id']}")
    for context in ("-1", "true", "[1]", '"x"'):
        page = await client.post(
            f"/admin/templates/{template['id']}/preview", data={"csrf": token, "context": context}
        )
        assert page.status == 422, (context, page.status)
        assert 'data-field="context"' in await page.text()
        api = await client.post(
            "/api/v1/templates/preview",
            json={"template": "alert", "context": orjson.loads(context)},
            headers=auth(),
        )
        assert api.status == 422, await api.text()


async def test_the_next_page_keeps_the_lists_filter_and_page_size(
    client: Client, services: Services
) -> None:
    vehicles = ("ABC1D20", "active"), ("ABC1D21", "inactive"), ("ABC1D22", "active")
    for plate, status in (*vehicles, ("ABC1D23", "active")):
        body = {"plate": plate, "status": status}
        response = await client.post("/api/v1/entities/vehicle", json=body, headers=auth())
        assert response.status == 201, await response.text()
    await make_user(services)
    await log_in(client)
    url, seen = "/admin/entities/vehicle?status=active&limit=1", []
    while url:
        page = await (await client.get(url)).text()
        rows = re.findall(r'href="/admin/entities/vehicle/[^"]+">(ABC1D2\d)<', page)
        assert len(rows) <= 1, rows  # one vehicle a page, as asked
        seen += rows
        pager = re.search(r'class="pager"><a href="([^"]+)"', page)
        url = "/admin/entities/vehicle" + html.unescape(pager.group(1)) if pager else ""
    assert seen == ["ABC1D20", "ABC1D22", "ABC1D23"]


async def test_a_list_page_given_a_cursor_no_page_wrote_says_so_in_a_400_page(
    client: Client, services: Services
) -> None:
    """A junk or tampered cursor in the URL is an error page, not an empty list that would
    pass for the end of the list."""
    flow = {"name": "aviso", "on": {"events": ["entity.created"]}}
    await post(client, "/api/v1/flows", {**flow, "steps": [{"id": "se", "when": "entity.plate"}]})
    await make_user(services)
    await log_in(client)
    lists = ("triggers", "deliveries", "events", "mappings", "flows", "flows/aviso/runs")
    for path in (*lists, "partners", "actions", "subscriptions", "entities/vehicle"):
        for cursor in ("%7B%7D", "%00%FF", ".."):
            response = await client.get(f"/admin/{path}?cursor={cursor}")
            page = await response.text()
            assert (response.status, response.content_type) == (400, "text/html"), (path, page)
            assert "Pedido inválido" in page and "cursor must be the next_cursor" in page, path


async def test_a_subscription_is_edited_on_its_page_problems_at_their_fields(
    client: Client, services: Services
) -> None:
    """Its event types, filter and position sampling, from the form its page shows filled
    in; a bad filter is refused at its field with what was typed kept, nothing changed; an
    emptied filter and sampling are removed."""
    await make_user(services)
    await log_in(client)
    erp = await create_partner(client, "http://127.0.0.1:19301")
    action = await create_action(client, erp["id"])
    made = await create_subscription(
        client, action["id"], ("entity.updated",), filter={"entity_type": "vehicle"}
    )
    base = f"/admin/subscriptions/{made['id']}"
    page = await (await client.get(base)).text()
    loaded = dict(form_fields(page, f"{base}/edit"))
    assert loaded["event_types"] == "entity.updated"
    assert orjson.loads(loaded["filter"]) == {"entity_type": "vehicle"}
    assert loaded["sample_seconds"] == "" and loaded["revision"]
    typed = {"event_types": "entity.updated, vehicle.position", "sample_seconds": "60"}
    bad = await client.post(f"{base}/edit", data={**loaded, **typed, "filter": '{"changed": 5}'})
    html_ = await bad.text()
    assert bad.status == 422, html_
    assert 'data-field="filter"' in html_ and "vehicle.position" in html_
    assert (await services.actions.get_subscription("acme", made["id"]))["event_types"] == [
        "entity.updated"
    ]
    kept = dict(form_fields(html_, f"{base}/edit"))  # the refused page's form, as typed
    assert kept["sample_seconds"] == "60" and kept["filter"] == '{"changed": 5}'
    fixed = {**kept, "filter": '{"changed": ["odometer_km"]}'}
    saved = await client.post(f"{base}/edit", data=fixed)
    assert saved.status == 200 and "Assinatura salva" in await saved.text()
    stored = await services.actions.get_subscription("acme", made["id"])
    assert stored["event_types"] == ["entity.updated", "vehicle.position"]
    assert stored["filter"] == {"changed": ["odometer_km"]} and stored["sample_seconds"] == 60
    again = dict(form_fields(await (await client.get(base)).text(), f"{base}/edit"))
    emptied = {**again, "filter": "", "sample_seconds": ""}
    assert (await client.post(f"{base}/edit", data=emptied)).status == 200
    stored = await services.actions.get_subscription("acme", made["id"])
    assert stored["filter"] == {} and stored.get("sample_seconds") is None


async def test_a_templates_content_is_replaced_on_its_page_and_its_name_stays(
    client: Client, services: Services
) -> None:
    """The replace form shows the template's document; a new subject is saved (a new
    version, rendered by the preview); a new name or a broken template is refused at the
    document with what was typed kept, nothing changed."""
    await make_user(services)
    await log_in(client)
    made = await client.post("/api/v1/templates", json=ALERT_TEMPLATE, headers=auth())
    assert made.status == 201
    template = await made.json()
    base = f"/admin/templates/{template['id']}"
    loaded = dict(form_fields(await (await client.get(base)).text(), f"{base}/edit"))
    document = orjson.loads(loaded["document"])
    assert document["locales"] == ALERT_TEMPLATE["locales"] and loaded["revision"]
    renamed = orjson.dumps({**document, "name": "outro"}).decode()
    refused = await client.post(f"{base}/edit", data={**loaded, "document": renamed})
    page = await refused.text()
    assert refused.status == 422, page
    assert 'data-field="document"' in page and "keeps its name" in page
    kept = dict(form_fields(page, f"{base}/edit"))
    assert orjson.loads(kept["document"])["name"] == "outro"
    broken = {**document, "locales": {"pt-BR": {"subject": "{{ entity.plate ", "text": "x"}}}
    refused = await client.post(
        f"{base}/edit", data={**kept, "document": orjson.dumps(broken).decode()}
    )
    page = await refused.text()
    assert refused.status == 422 and 'data-field="document"' in page, page
    stored = await services.notify.templates.get("acme", template["id"])
    assert stored["rev"] == 1 and stored["locales"] == ALERT_TEMPLATE["locales"]
    subject = "Veículo novo {{ entity.plate }}"
    locales = {"pt-BR": {**ALERT_TEMPLATE["locales"]["pt-BR"], "subject": subject}}
    fixed = dict(form_fields(page, f"{base}/edit"))
    fixed["document"] = orjson.dumps({**document, "locales": locales}).decode()
    saved = await client.post(f"{base}/edit", data=fixed)
    assert saved.status == 200 and "Modelo salvo" in await saved.text()
    stored = await services.notify.templates.get("acme", template["id"])
    assert stored["rev"] == 2 and stored["locales"]["pt-BR"]["subject"] == subject


async def test_an_upload_its_users_cannot_take_keeps_the_text_and_says_why(
    client: Client, services: Services
) -> None:
    """A new active version that would change what a trigger writes is a 409: the upload
    form comes back with the reason above it and the pasted text in its box."""
    from tests.partner_double import upload_mapping
    from tests.triggers_support import create_trigger

    vehicle = "name: live\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields:\n"
    await upload_mapping(client, vehicle + "  plate: {from: placa, transforms: [plate]}\n")
    await create_trigger(client, name="live", mapping="live")
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/mappings")
    driver = (
        "name: live\ndirection: inbound\nentity_type: driver\nkey: [cpf]\nfields:\n  cpf: cpf\n"
    )
    response = await client.post(
        "/admin/mappings", data={"csrf": token, "source": driver, "activate": "on"}
    )
    page = html.unescape(await response.text())
    assert response.status == 409
    assert "'live' is for driver entities" in page and "which would refuse this version" in page
    assert 'name="source"' in page  # the upload form, not an error page


async def test_an_upload_using_old_names_shows_each_with_its_new_name(
    client: Client, services: Services
) -> None:
    """The upload is taken, as through the API, and the mapping's page lists the warnings the
    API answers: write the new names."""
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/mappings")
    text = "name: old-read\ndirection: outbound\nbody:\n  y: entity.last_position.longitude\n"
    response = await client.post(
        "/admin/mappings", data={"csrf": token, "source": text, "activate": "on"}
    )
    page = html.unescape(await response.text())
    assert response.status == 200 and str(response.url).endswith("/admin/mappings/old-read")
    assert "Esta versão usa nomes obsoletos" in page
    assert (
        "/body/y: 'last_position.longitude' is a deprecated name, read 'last_position.lon'" in page
    )


STAGED = """\
name: staged
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, transforms: [upper]}
  odometer_km: {from: %s, transforms: [number]}
"""


async def test_a_staged_mapping_version_is_dry_run_from_its_page(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/mappings")
    for source in ("km", "hodometro"):  # "activate" unticked: both staged, none active
        typed = {"csrf": token, "source": STAGED % source}
        staged = await client.post("/admin/mappings", data=typed, allow_redirects=False)
        assert staged.status == 303, await staged.text()
    action = "/admin/mappings/staged/test"
    sample = '{"placa": "abc1d23", "km": 5, "hodometro": 7}'

    async def dry_run(**typed: str) -> str:
        page = await (await client.get("/admin/mappings/staged")).text()
        fields = dict(form_fields(page, action))
        answer = await client.post(action, data={**fields, "payload": sample, **typed})
        text = await answer.text()
        assert answer.status == 200, text
        return text

    # the page's version (the latest, none being active) is the one chosen at first
    latest = await dry_run()
    assert '<option value="2" selected>' in latest and _odometer(latest) == 7
    first = await dry_run(version="1")
    assert '<option value="1" selected>' in first and _odometer(first) == 5


def _odometer(page: str) -> int:
    """The odometer of the dry run's mapped document, as the page shows it."""
    result = page[page.index('data-testid="dry-run-result"') :]
    found = re.search(r"&#34;odometer_km&#34;: (\d+)|&quot;odometer_km&quot;: (\d+)", result)
    assert found is not None, result[:2000]
    return int(found.group(1) or found.group(2))


ON_CREATED = {"events": ["entity.created"]}


async def test_an_older_flow_version_is_dry_run_from_its_page(
    client: Client, services: Services
) -> None:
    await post(
        client,
        "/api/v1/channels",
        {
            "name": "email",
            "type": "email",
            "smtp": {"host": "127.0.0.1", "port": 2525, "security": "none"},
            "from": "Frota Acme <alertas@acme.com.br>",
        },
    )
    await post(client, "/api/v1/templates", ALERT_TEMPLATE)
    for address in ("um@acme.com.br", "dois@acme.com.br"):
        notify = {"channel": "email", "template": "alerta", "recipients": [{"address": address}]}
        steps = [{"id": "n", "notify": notify}]
        await post(client, "/api/v1/flows", {"name": "avisa", "on": ON_CREATED, "steps": steps})
    await make_user(services)
    await log_in(client)
    page = await (await client.get("/admin/flows/avisa")).text()
    action = "/admin/flows/avisa/test"
    event = '{"type": "entity.created", "entity": {"type": "vehicle", "key": "ABC1D23"}}'
    assert dict(form_fields(page, action))["version"] == "2"  # the active one, at first
    fields = {**dict(form_fields(page, action)), "event": event, "version": "1"}
    answer = await client.post(action, data=fields)
    text = await answer.text()
    assert answer.status == 200, text
    result = text[text.index('data-testid="flow-result"') :]
    result = result[: result.index("</section>")]  # the page's source below is v2's
    assert "um@acme.com.br" in result and "dois@acme.com.br" not in result
    assert '<option value="1" selected>' in text


async def test_deliveries_are_filtered_by_the_entity_key_the_list_shows(
    client: Client, services: Services
) -> None:
    await make_user(services)
    erp = await create_partner(client, "https://erp.example.com")
    action = await create_action(client, erp["id"])
    await create_subscription(client, action["id"], ("entity.created",))
    vehicle = await create_vehicle(client, "ABC1D23")
    await create_vehicle(client, "BRA2E19")
    await services.relay.run_until_idle()  # one delivery per vehicle
    await log_in(client)

    async def listed(entity: str) -> list[str]:
        page = await (await client.get("/admin/deliveries", params={"entity_id": entity})).text()
        return re.findall(r"<td>Veículo (\w+)</td>", page)

    assert sorted(await listed("")) == ["ABC1D23", "BRA2E19"]
    typed_as_listed = ("Veículo ABC1D23", "veículo abc1d23", "Vehicle ABC1D23", "vehicle ABC1D23")
    for typed in (*typed_as_listed, "ABC1D23", " abc-1d23 ", "ABC1D23".lower(), vehicle["id"]):
        assert await listed(typed) == ["ABC1D23"], typed
    assert await listed("XYZ9Z99") == [] and await listed("vehicle XYZ9Z99") == []
    page = await (await client.get(f"/admin/entities/vehicle/{vehicle['id']}")).text()
    link = re.search(r'<a href="(/admin/deliveries\?entity_id=[^"]+)"', page)
    assert link is not None
    assert await listed(link.group(1).rpartition("=")[2]) == ["ABC1D23"]


async def test_subscriptions_and_deliveries_name_their_action_and_partner(
    client: Client, services: Services
) -> None:
    await make_user(services)
    erp = await create_partner(client, "https://erp.example.com", name="ERP Frota")
    crm = await create_partner(client, "https://crm.example.com", name="CRM")
    push = await create_action(client, erp["id"], name="envia-veiculo", path="/veiculos")
    other = await create_action(client, crm["id"], name="avisa-crm", method="PUT", path="/x")
    await create_subscription(client, push["id"], ("entity.created",))
    await create_subscription(client, other["id"], ("entity.created",))
    await create_vehicle(client, "ABC1D23")
    await services.relay.run_until_idle()  # a delivery per subscription
    await log_in(client)
    named = {
        push["id"]: (
            f'<a href="/admin/actions/{push["id"]}">envia-veiculo</a> <code>POST /veiculos</code>',
            f'<a href="/admin/partners/{erp["id"]}">ERP Frota</a>',
        ),
        other["id"]: (
            f'<a href="/admin/actions/{other["id"]}">avisa-crm</a> <code>PUT /x</code>',
            f'<a href="/admin/partners/{crm["id"]}">CRM</a>',
        ),
    }
    page = await (await client.get("/admin/subscriptions")).text()
    rows = re.findall(r"<tr><td><a href=\"/admin/subscriptions/.*?</tr>", page)
    assert len(rows) == 2
    for action, partner in named.values():
        [row] = [r for r in rows if action in r]
        assert f'<td class="name">{action}</td><td class="name">{partner}</td>' in row
    listed = await (await client.get("/admin/deliveries")).text()
    ids = re.findall(r'href="/admin/deliveries/([^"?]+)"', listed)
    assert len(ids) == 2
    for delivery_id in ids:
        delivery = await (await client.get(f"/admin/deliveries/{delivery_id}")).text()
        action, partner = next(n for i, n in named.items() if f"/admin/actions/{i}" in delivery)
        assert f"<dt>Ação</dt><dd>{action}</dd>" in delivery
        assert f"<dt>Parceiro</dt><dd>{partner}</dd>" in delivery


GEOTAB = {
    "name": "Geotab",
    "base_url": "https://my.geotab.com",
    "auth": {
        "type": "geotab",
        "url": "https://my.geotab.com/apiv1",
        "database": "frota",
        "username": "api@acme.com.br",
        "password": "s3cret-pass",
    },
}


async def test_a_geotab_partner_is_named_in_both_languages_and_its_login_replaced(
    client: Client, services: Services
) -> None:
    await make_user(services)
    geotab = await post(client, "/api/v1/partners", GEOTAB)
    await log_in(client)
    path = f"/admin/partners/{geotab['id']}"
    for lang, label in (("en", "Geotab session"), ("pt-BR", "Sessão Geotab")):
        await client.get(f"/admin/lang/{lang}?next=/admin/partners")
        for shown in ("/admin/partners", path):
            page = await (await client.get(shown)).text()
            assert "auth_type.geotab" not in page and label in page, lang
    page = await (await client.get(path)).text()
    typed = replaced(
        form_fields(page, f"{path}/credentials"),
        auth__type="geotab",
        auth__url="https://my3.geotab.com/apiv1",
        auth__database="frota",
        auth__username="api@acme.com.br",
        auth__password="n3w-pass",
        auth__token="never sent",  # another type's field: left out
    )
    saved = await client.post(f"{path}/credentials", data=typed, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    auth = (await services.catalog.partner("acme", geotab["id"])).auth
    assert "my3.geotab.com" in repr(auth) and auth.credential_values()[0] == "n3w-pass"


def _autocomplete(page: str, only: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Each input of a page that a browser could fill: text ones whose names begin with one
    of `only` (and each password input), by name: its autocomplete hint."""
    hints: dict[str, str | None] = {}
    for tag in re.findall(r"<input[^>]*>", page):
        name = re.search(r'name="([^"]+)"', tag)
        kind = re.search(r'type="([^"]+)"', tag)
        if name is None or kind is None or kind.group(1) not in ("text", "password"):
            continue
        if kind.group(1) == "password" or any(name.group(1).startswith(p) for p in only):
            hint = re.search(r'autocomplete="([^"]+)"', tag)
            hints[name.group(1)] = hint.group(1) if hint else None
    return hints


async def test_no_browser_fills_the_admins_own_login_into_a_credential_field(
    client: Client, services: Services
) -> None:
    await make_user(services)
    erp = await create_partner(client, "https://erp.example.com")
    await log_in(client)
    for path in ("/admin/partners", f"/admin/partners/{erp['id']}"):
        hints = _autocomplete(await (await client.get(path)).text(), ("auth.",))
        secrets = {
            "auth.token",
            "auth.value",
            "auth.password",
            "auth.client_secret",
            "auth.secret",
        }
        assert {n: h for n, h in hints.items() if n in secrets} == dict.fromkeys(
            secrets, "new-password"
        ), path
        assert {n: h for n, h in hints.items() if n not in secrets} == dict.fromkeys(
            (
                "auth.name",
                "auth.username",
                "auth.token_url",
                "auth.client_id",
                "auth.scope",
                "auth.audience",
                "auth.header",
                "auth.prefix",
                "auth.timestamp_header",
                "auth.signed",
                "auth.url",
                "auth.database",
            ),
            "off",
        ), path
    for path in ("/admin/triggers/new", "/admin/users"):
        hints = _autocomplete(await (await client.get(path)).text())
        assert hints and set(hints.values()) == {"new-password"}, (path, hints)
    await client.post("/admin/logout", data={"csrf": await csrf(client, "/admin/")})
    login = _autocomplete(await (await client.get("/admin/login")).text())
    assert login == {"password": "current-password"}  # the admin's own, and only there
