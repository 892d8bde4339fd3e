"""Editing what exists, over HTTP: a trigger (name, methods, mapping, rate limit, limits,
params...) keeping its credentials, an action (every member), and a vehicle's driver
assigned from its page; problems next to their fields with what was typed, a viewer changes
nothing, another tenant's ids are a 404, markup stays text."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.services import Services
from gateway.web.state import services_key
from tests.flow_support import drain, send_to
from tests.partner_double import create_action, create_partner, post, upload_mapping
from tests.support import auth
from tests.ui_support import Client, csrf, form_fields, log_in, make_user, queries, replaced

ANA = {"name": "Ana <b>Souza</b>", "cpf": "52998224725"}
MAPPING = """\
name: fleet-feed
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, transforms: [upper]}
"""


async def _trigger(client: Client, tenant: str = "acme") -> dict[str, Any]:
    body = {"name": "gps", "entity_type": "vehicle", "methods": ["POST"]}
    trigger: dict[str, Any] = await post(client, "/api/v1/triggers", body, tenant=tenant)
    return trigger


async def _get(client: Client, path: str, tenant: str = "acme") -> dict[str, Any]:
    response = await client.get(path, headers=auth(tenant))
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def test_a_trigger_is_edited_and_its_token_still_works(
    client: Client, services: Services
) -> None:
    await upload_mapping(client, MAPPING)
    trigger = await _trigger(client)
    await make_user(services)
    await log_in(client)
    base = f"/admin/triggers/{trigger['id']}"
    form = await (await client.get(f"{base}/edit")).text()
    assert 'value="gps"' in form and 'value="POST" checked' in form
    assert '<option value="json" selected>JSON</option>' in form.split('name="answers"')[1]
    token = await csrf(client, f"{base}/edit")
    data = [
        ("csrf", token),
        ("name", "GPS da frota"),
        ("methods", "POST"),
        ("methods", "GET"),
        ("mapping", "fleet-feed"),
        ("format", "json"),
        ("answers", "as_called"),
        ("auth.token_in_query", "token"),
        ("rate_limit.per_second", "2,5"),
        ("rate_limit.burst", "10"),
        ("max_body_bytes", "4096"),
        ("max_batch_items", ""),
        ("expose", "plate, odometer_km"),
        ("params", ""),
        ("input_schema", ""),
    ]
    saved = await client.post(f"{base}/edit", data=data)
    assert saved.status == 200 and "credenciais continuam valendo" in await saved.text()
    stored = await _get(client, f"/api/v1/triggers/{trigger['id']}")
    assert (stored["name"], stored["methods"], stored["mapping"]) == (
        "GPS da frota",
        ["GET", "POST"],
        "fleet-feed",
    )
    assert stored["rate_limit"] == {"per_second": 2.5, "burst": 10}
    assert (stored["max_body_bytes"], stored["expose"]) == (4096, ["plate", "odometer_km"])
    assert stored["auth"]["token_in_query"] == "token"
    assert stored["answers"] == "as_called"
    # The token still opens the trigger, now also in the query, through the new mapping.
    hook = f"/hooks/{trigger['id']}?token={trigger['token']}"
    written = await client.post(hook, json={"placa": "abc1d23"})
    assert written.status == 201, await written.text()
    assert (await services.entities.get("acme", "vehicle", "ABC1D23"))["data"]["plate"]
    bad = [("csrf", token), ("name", "x"), ("rate_limit.per_second", "rápido")]
    bad += [("max_body_bytes", "10"), ("params", "{nope")]
    refused = await client.post(f"{base}/edit", data=bad)
    page = await refused.text()
    assert refused.status == 422 and 'data-field="params"' in page
    bad[-1] = ("params", "")
    refused = await client.post(f"{base}/edit", data=bad)
    page = await refused.text()
    assert refused.status == 422
    for field in ("methods", "rate_limit.per_second", "max_body_bytes"):
        assert f'data-field="{field}"' in page, field
    assert 'value="rápido"' in page
    assert (await _get(client, f"/api/v1/triggers/{trigger['id']}"))["name"] == "GPS da frota"


@pytest.mark.parametrize(
    ("field", "typed", "label"),
    [
        ("rate_limit.per_second", "0", "Pequeno demais"),
        ("rate_limit.per_second", "200.000", "Grande demais"),  # 200 thousand on this page
        ("rate_limit.per_second", "dez", "Tipo inválido"),
        ("rate_limit.burst", "0", "Pequeno demais"),
    ],
)
async def test_a_partners_rate_limit_is_refused_at_its_field_by_what_is_wrong(
    client: Client, services: Services, field: str, typed: str, label: str
) -> None:
    """The rate pair's problem was one `/rate_limit` problem ("Tipo inválido: rate_limit is
    {per_second: ...}") above the form, whatever was wrong: it is at the field typed in."""
    partner = await create_partner(client, "https://erp.example.com")
    await make_user(services)
    await log_in(client)
    page = f"/admin/partners/{partner['id']}"
    action = f"{page}/edit"
    form = form_fields(await (await client.get(page)).text(), action)
    typed_in = {"rate_limit.per_second": "5", field: typed}
    refused = await client.post(action, data=replaced(form, **typed_in))
    text = await refused.text()
    assert refused.status == 422, text
    errors = dict(re.findall(r'class="field-error"[^>]*data-field="([^"]+)">(.*?)</div>', text))
    assert list(errors) == [field] and label in errors[field], errors
    assert 'class="alert"' not in text and f'value="{typed}"' in text
    assert (await _get(client, f"/api/v1/partners/{partner['id']}")).get("rate_limit") is None


async def test_an_action_is_edited_member_by_member(client: Client, services: Services) -> None:
    partner = await create_partner(client, "https://erp.example.com")
    action = await create_action(client, partner["id"])
    await make_user(services)
    await log_in(client)
    base = f"/admin/actions/{action['id']}"
    token = await csrf(client, f"{base}/edit")
    fields = {
        "name": "fetch-vehicle",
        "partner_id": partner["id"],
        "method": "GET",
        "path": "/veiculos/{plate}",
        "mode": "proxy",
        "success": "2xx, 404",
        "retry_schedule": "5, 30",
        "read_only": "on",
    }
    saved = await client.post(f"{base}/edit", data={"csrf": token, **fields})
    page = await saved.text()
    assert saved.status == 200 and "Ação salva" in page and "2xx, 404" in page
    stored = await _get(client, f"/api/v1/actions/{action['id']}")
    assert (stored["method"], stored["path"], stored["mode"]) == (
        "GET",
        "/veiculos/{plate}",
        "proxy",
    )
    assert (stored["success"], stored["retry_schedule"]) == (["2xx", 404], [5.0, 30.0])
    assert (stored["read_only"], stored["ordered"]) == (True, False)
    form = await (await client.get(f"{base}/edit")).text()
    assert 'value="5, 30"' in form and 'name="read_only" value="on" checked' in form
    bad = {**fields, "path": "no-slash", "retry_schedule": "logo", "write_back": "on"}
    refused = await client.post(f"{base}/edit", data={"csrf": token, **bad})
    page = await refused.text()
    assert refused.status == 422
    for field in ("path", "retry_schedule", "write_back"):
        assert f'data-field="{field}"' in page, field
    assert 'value="no-slash"' in page and 'value="logo"' in page
    assert (await _get(client, f"/api/v1/actions/{action['id']}"))["path"] == "/veiculos/{plate}"


async def test_a_vehicles_driver_is_assigned_from_its_page(
    client: Client, services: Services
) -> None:
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    await make_user(services)
    await log_in(client)
    page_path = f"/admin/entities/vehicle/{vehicle['id']}"
    page = await (await client.get(page_path)).text()
    assert '<option value="52998224725">Ana &lt;b&gt;Souza&lt;/b&gt;</option>' in page
    token = await csrf(client, page_path)
    assign = f"{page_path}/drivers"
    missing = await client.post(assign, data={"csrf": token, "start": "2026-12-02T14:30"})
    page = await missing.text()
    assert missing.status == 422 and 'data-field="driver"' in page
    assert 'value="2026-12-02T14:30"' in page
    unknown = await client.post(assign, data={"csrf": token, "driver": "11144477735"})
    page = await unknown.text()
    assert unknown.status == 422 and "no driver &#39;11144477735&#39;" in page
    bad_time = await client.post(
        assign, data={"csrf": token, "driver": ANA["cpf"], "start": "ontem"}
    )
    assert bad_time.status == 422 and 'data-field="start"' in await bad_time.text()
    assigned = await client.post(
        assign,
        data={"csrf": token, "driver": ANA["cpf"], "start": "2026-01-05T08:00", "ref": "chk-1"},
    )
    page = await assigned.text()
    assert assigned.status == 200 and "Troca de condutor registrada" in page
    current = page[page.index('data-testid="current-driver"') :]
    assert current.index("Ana &lt;b&gt;Souza&lt;/b&gt;") < current.index("</div>")
    history = await _get(client, "/api/v1/entities/vehicle/ABC1D23/drivers")
    (entry,) = history["items"]
    assert (entry["source"], entry["ref"], entry["author"]) == ("admin", "chk-1", "ana@acme.com.br")
    assert entry["start"] == "2026-01-05T11:00:00+00:00"  # 08:00 in Brasília time
    again = await client.post(assign, data={"csrf": token, "driver": ANA["cpf"]})
    assert "nada mudou" in await again.text()
    nobody = await client.post(assign, data={"csrf": token, "nobody": "on"})
    assert "Troca de condutor registrada" in await nobody.text()
    history = await _get(client, "/api/v1/entities/vehicle/ABC1D23/drivers")
    assert history["driver"]["driver"] is None and len(history["items"]) == 2


async def test_a_vehicles_driver_history_pages_back_to_its_first_driver(
    client: Client, services: Services
) -> None:
    cpfs = ["10145678903", "10245678930", "10345678966", "10445678992", "10545678919"]
    cpfs += ["10645678945", "10745678971", "10845678906", "10945678924", "11045678902"]
    cpfs += ["11145678920", "11245678957"]
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    start = datetime.now(UTC) - timedelta(days=20)
    for n, cpf in enumerate(cpfs):
        await post(client, "/api/v1/entities/driver", {"name": f"Condutor {n:02d}", "cpf": cpf})
        change = {"driver": cpf, "start": (start + timedelta(days=n)).isoformat()}
        await post(client, f"/api/v1/entities/vehicle/{vehicle['id']}/drivers", change)
    await make_user(services)
    await log_in(client)

    def names(page: str) -> list[str]:
        table = page[page.index('data-testid="driver-history"') :]
        return re.findall(r"Condutor (\d\d)", table[: table.index("</table>")])

    page = await (await client.get(f"/admin/entities/vehicle/{vehicle['id']}")).text()
    assert names(page) == [f"{n:02d}" for n in range(11, 1, -1)]
    older = html.unescape(re.findall(r'<a href="(\?drivers=[^"]+)">', page)[0])
    page = await (await client.get(f"/admin/entities/vehicle/{vehicle['id']}{older}")).text()
    assert names(page) == ["01", "00"]
    assert 'href="?drivers=' not in page and 'href="?#drivers"' in page  # back to the newest


async def test_a_vehicle_handed_to_a_driver_not_yet_here_shows_them_pending(
    client: Client, services: Services
) -> None:
    """An ERP names by CPF a driver HR has not synced yet: the history records that CPF
    pending (no id), and the vehicle's page shows it (no link), labelled, in either language,
    in the current driver and in the history; the driver's record turns it into a link."""
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", {"name": "Bruno Lima", "cpf": "11144477735"})
    await post(client, "/api/v1/entities/vehicle/ABC1D23/drivers", {"driver": "11144477735"})
    erp = await post(client, "/api/v1/triggers", {"name": "erp", "entity_type": "vehicle"})
    carla = {"cpf": "39053344705", "name": "Carla <i>Dias</i>"}
    await send_to(client, erp, {"plate": "ABC1D23", "current_driver": carla})
    await drain(services)
    assert (await _get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["driver"][
        "driver"
    ] == carla
    await make_user(services)
    await log_in(client)
    page_path = f"/admin/entities/vehicle/{vehicle['id']}"
    for lang, label in (("pt-BR", "pendente"), ("en", "pending")):
        response = await client.get(page_path, headers={"Accept-Language": lang})
        page = await response.text()
        assert response.status == 200, page[:2000]
        current = page[page.index('data-testid="current-driver"') :]
        current = current[: current.index("</div>")]
        assert "Carla &lt;i&gt;Dias&lt;/i&gt;" in current and "CPF 39053344705" in current
        assert label in current and "/admin/entities/driver/" not in current
        history = page[page.index('data-testid="driver-history"') :]
        rows = history[: history.index("</tbody>")].split("<tr>")[2:]
        assert "Carla" in rows[0] and label in rows[0]
        assert "Bruno Lima" in rows[1] and 'data-testid="pending-driver"' not in rows[1]
    created = await post(client, "/api/v1/entities/driver", carla)
    await drain(services)
    page = await (await client.get(page_path)).text()
    current = page[page.index('data-testid="current-driver"') :]
    current = current[: current.index("</div>")]
    assert f'href="/admin/entities/driver/{created["id"]}"' in current
    assert 'data-testid="pending-driver"' not in page


async def test_a_viewer_edits_and_assigns_nothing(client: Client, services: Services) -> None:
    trigger = await _trigger(client)
    partner = await create_partner(client, "https://erp.example.com")
    action = await create_action(client, partner["id"])
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    await make_user(services, email="vera@acme.com.br", role="viewer")
    await log_in(client, email="vera@acme.com.br")
    page = await (await client.get(f"/admin/entities/vehicle/{vehicle['id']}")).text()
    assert 'data-testid="assign-driver"' not in page
    trigger_page = await (await client.get(f"/admin/triggers/{trigger['id']}")).text()
    assert "/edit" not in trigger_page
    token = await csrf(client, "/admin/")
    for path, data in (
        (f"/admin/triggers/{trigger['id']}/edit", {"name": "x", "methods": "GET"}),
        (f"/admin/actions/{action['id']}/edit", {"name": "x", "method": "GET"}),
        (f"/admin/entities/vehicle/{vehicle['id']}/drivers", {"driver": ANA["cpf"]}),
    ):
        response = await client.post(path, data={"csrf": token, **data})
        assert response.status == 403, path
    assert (await _get(client, f"/api/v1/triggers/{trigger['id']}"))["name"] == "gps"
    assert (await _get(client, f"/api/v1/actions/{action['id']}"))["name"] == "push"
    assert (await _get(client, "/api/v1/entities/vehicle/ABC1D23/drivers"))["items"] == []


async def test_another_tenants_trigger_action_and_vehicle_are_not_found(
    client: Client, services: Services
) -> None:
    trigger = await _trigger(client, "globex")
    body = {"name": "ERP", "base_url": "https://erp.example.com", "auth": {"type": "none"}}
    partner = await post(client, "/api/v1/partners", body, tenant="globex")
    action_body = {"name": "push", "partner_id": partner["id"], "method": "POST", "path": "/x"}
    action = await post(client, "/api/v1/actions", {**action_body, "mode": "deliver"}, "globex")
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"}, "globex")
    await post(client, "/api/v1/entities/driver", ANA)  # acme's driver, globex's vehicle
    await make_user(services)
    await log_in(client)
    for path in (f"/admin/triggers/{trigger['id']}/edit", f"/admin/actions/{action['id']}/edit"):
        assert (await client.get(path)).status == 404, path
    token = await csrf(client)
    for path, data in (
        (f"/admin/triggers/{trigger['id']}/edit", {"name": "x", "methods": "GET"}),
        (f"/admin/actions/{action['id']}/edit", {"name": "x", "method": "GET"}),
        (f"/admin/entities/vehicle/{vehicle['id']}/drivers", {"driver": ANA["cpf"]}),
        ("/admin/entities/vehicle/ABC1D23/drivers", {"driver": ANA["cpf"]}),
    ):
        response = await client.post(path, data={"csrf": token, **data})
        assert response.status == 404, path
    assert (await _get(client, f"/api/v1/triggers/{trigger['id']}", "globex"))["name"] == "gps"
    assert (await _get(client, f"/api/v1/actions/{action['id']}", "globex"))["name"] == "push"
    drivers = await _get(client, "/api/v1/entities/vehicle/ABC1D23/drivers", "globex")
    assert drivers["items"] == []


async def test_a_partner_with_named_secrets_moved_to_another_origin_says_to_use_the_api(
    client: Client, services: Services
) -> None:
    """Named secrets go only to the origin they were given for, and this page does not take
    them: the problem, at the URL typed, says so; nothing is saved."""
    await make_user(services)
    await log_in(client)
    erp = await create_partner(
        client, "https://erp.example.com", auth={"type": "none"}, secrets={"api_key": "k-1234"}
    )
    page = await (await client.get(f"/admin/partners/{erp['id']}")).text()
    path = f"/admin/partners/{erp['id']}/credentials"
    typed = replaced(form_fields(page, path), base_url="https://evil.example", auth__type="none")
    refused = await client.post(path, data=typed, allow_redirects=False)
    shown = await refused.text()
    assert refused.status == 422, shown
    assert "named secrets again" in shown and "through the API" in shown
    assert (await _get(client, f"/api/v1/partners/{erp['id']}"))["base_url"] == (
        "https://erp.example.com"
    )


def _inbound(name: str) -> str:
    return MAPPING.replace("name: fleet-feed", f"name: {name}")


ANSWER = """\
name: z-answer
direction: outbound
entity_type: vehicle
body:
  placa: {from: entity.plate}
"""


def _offered(page: str, name: str) -> list[str]:
    """The values of a page's select `name`, in order."""
    select = page.split(f'name="{name}"', 1)[1].split("</select>", 1)[0]
    return [html.unescape(v) for v in re.findall(r'<option value="([^"]*)"', select)]


async def test_forms_offer_every_choice_past_a_page_and_keep_the_stored_one(
    client: Client, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More mappings, partners and actions than a list page holds (200): every form that
    chooses one offers each (a stored one selected), so saving an edit to change something
    else keeps the trigger's mapping, the action's partner and request mapping; the
    deliveries filter keeps the partner and action it filters by, named."""
    for i in range(201):
        await upload_mapping(client, _inbound(f"m{i:03d}"))
    await upload_mapping(client, ANSWER)  # the 202nd mapping, by name
    partners = [
        await create_partner(client, "https://erp.example.com", name=f"p{i:03d}")
        for i in range(201)
    ]
    last = partners[-1]
    actions = [
        await create_action(client, last["id"], name=f"a{i:03d}", method="GET", path="/odo")
        for i in range(200)
    ]
    action = await create_action(
        client, last["id"], name="z-last", method="GET", path="/odo", request_mapping="z-answer"
    )
    trigger = await post(
        client,
        "/api/v1/triggers",
        {"name": "gps", "entity_type": "vehicle", "methods": ["POST"], "mapping": "m200"},
    )
    await make_user(services)
    await log_in(client)

    assert "m200" in _offered(await (await client.get("/admin/triggers/new")).text(), "mapping")
    edit = f"/admin/triggers/{trigger['id']}/edit"
    page = await (await client.get(edit)).text()
    assert '<option value="m200" selected>' in page
    typed = replaced(form_fields(page, edit), rate_limit__per_second="5")
    assert (await client.post(edit, data=typed, allow_redirects=False)).status == 303
    stored = await _get(client, f"/api/v1/triggers/{trigger['id']}")
    assert stored["mapping"] == "m200" and stored["rate_limit"]["per_second"] == 5

    edit = f"/admin/actions/{action['id']}/edit"
    page = await (await client.get(edit)).text()
    assert _offered(page, "partner_id")[-1] == last["id"] and "z-answer" in page
    typed = replaced(form_fields(page, edit), path="/odometer")
    assert (await client.post(edit, data=typed, allow_redirects=False)).status == 303
    stored = await _get(client, f"/api/v1/actions/{action['id']}")
    assert (stored["partner_id"], stored["request_mapping"], stored["path"]) == (
        last["id"],
        "z-answer",
        "/odometer",
    )

    assert action["id"] in _offered(
        await (await client.get("/admin/schedules/new")).text(), "action_id"
    )
    assert action["id"] in _offered(
        await (await client.get("/admin/subscriptions")).text(), "action_id"
    )
    query = f"/admin/deliveries?action_id={action['id']}&partner_id={last['id']}"
    store = client.app[services_key].store
    reads = queries(monkeypatch, store.partners._c, store.actions._c)
    page = await (await client.get(query)).text()
    # the 201 partners and 201 actions in one query each, not a page of 200 at a time
    assert reads == {"partners": 1, "actions": 1}
    refilter = dict(form_fields(page, "/admin/deliveries"))
    assert (refilter["action_id"], refilter["partner_id"]) == (action["id"], last["id"])
    assert f'<option value="{action["id"]}" selected>z-last</option>' in page
    assert len(actions) + 1 == len(_offered(page, "action_id")) - 1  # every one, and "—"


async def test_saving_edit_forms_unchanged_rewrites_nothing(
    client: Client, services: Services
) -> None:
    """Stored text with spaces around it or a line break in it (a partner's or the API's) is
    sent back by an untouched form as it was shown, and saved as it is: no trimmed name, no
    changed partner path, no new entity version nor `entity.updated`, no trigger of two
    methods rewritten. Text the admin types is trimmed."""
    driver = await post(
        client, "/api/v1/entities/driver", {"cpf": ANA["cpf"], "name": " João  Silva "}
    )
    trigger = await post(
        client,
        "/api/v1/triggers",
        # its methods stored sorted, the boxes posting them in the form's order
        {"name": " gps ", "entity_type": "vehicle", "methods": ["POST", "GET"]},
    )
    erp = await create_partner(client, "https://erp.example.com", name=" erp ")
    action = await create_action(client, erp["id"], name=" push ", path="/api/v1/odometer ")
    fence = await post(
        client,
        "/api/v1/geofences",
        {
            "name": " pátio ",
            "description": "portão 1\nportão 2",
            "kind": "authorized",
            "circle": {"lat": -23.5, "lon": -46.6, "radius_m": 300},
        },
    )
    plan = await post(
        client,
        "/api/v1/maintenance-plans",
        {"name": " óleo ", "description": " troca ", "every_km": 10000},
    )
    await make_user(services)
    await log_in(client)
    forms = {
        f"/admin/entities/driver/{driver['id']}/edit": f"/api/v1/entities/driver/{driver['id']}",
        f"/admin/triggers/{trigger['id']}/edit": f"/api/v1/triggers/{trigger['id']}",
        f"/admin/partners/{erp['id']}": f"/api/v1/partners/{erp['id']}",
        f"/admin/actions/{action['id']}/edit": f"/api/v1/actions/{action['id']}",
        f"/admin/geofences/{fence['id']}": f"/api/v1/geofences/{fence['id']}",
        f"/admin/maintenance-plans/{plan['id']}": f"/api/v1/maintenance-plans/{plan['id']}",
    }
    for page_path, api_path in forms.items():
        before = await _get(client, api_path)
        page = await (await client.get(page_path)).text()
        target = page_path if page_path.endswith("/edit") else f"{page_path}/edit"
        saved = await client.post(target, data=form_fields(page, target), allow_redirects=False)
        assert saved.status == 303, (page_path, await saved.text())
        after = await _get(client, api_path)
        assert after == before, page_path
    # A multi-line text is shown in a textarea (an input would drop its line break).
    page = await (await client.get(f"/admin/geofences/{fence['id']}")).text()
    assert re.search(
        r'<textarea id="f-description" name="description"[^>]*>\nportão 1\nportão 2</', page
    )
    events = await _get(client, f"/api/v1/events?type=entity.updated&entity_id={driver['id']}")
    assert events["items"] == []
    # What the admin types is trimmed.
    edit = f"/admin/triggers/{trigger['id']}/edit"
    typed = replaced(form_fields(await (await client.get(edit)).text(), edit), name="  GPS 2 ")
    assert (await client.post(edit, data=typed, allow_redirects=False)).status == 303
    assert (await _get(client, f"/api/v1/triggers/{trigger['id']}"))["name"] == "GPS 2"
