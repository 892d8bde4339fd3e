"""Two admins editing the same thing: every edit form carries the revision it was loaded
from; a save from a form loaded before another admin's save is refused (409) with nothing
changed, what was typed kept, every field the admin left as loaded at its current value, and
the current values of the fields that differ shown; saving that page again writes what was
typed over the current version knowingly. A post without a revision (a client of its own) is
not checked."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest

from gateway.clock import utcnow
from gateway.services import Services
from tests.flow_support import email_channel
from tests.partner_double import create_action, create_partner, post, upload_mapping
from tests.support import auth
from tests.ui_support import (
    ALERT_TEMPLATE,
    POLLED_MAPPING,
    Client,
    form_fields,
    log_in,
    make_user,
    replaced,
)


async def _api(client: Client, path: str) -> Any:
    response = await client.get(path, headers=auth())
    assert response.status == 200, await response.text()
    return await response.json()


async def _theirs(client: Client, method: str, path: str, body: dict[str, Any]) -> Any:
    """Another admin's save, meanwhile (through the API: the same use case)."""
    response = await client.request(method, path, json=body, headers=auth())
    assert response.status == 200, await response.text()
    return await _api(client, path)


async def _stale_save(
    client: Client,
    page: str,
    action: str,
    change: tuple[str, str, dict[str, Any]],
    typed: dict[str, str],
) -> tuple[str, Any]:
    """Loads the form at `page`, lets another admin save `change` (method, API path, body),
    posts the loaded form with `typed` over it: refused, nothing changed, input kept. Then
    saves the refused page as it stands. The refused page and the stored document after."""
    method, api_path, body = change
    loaded = form_fields(await (await client.get(page)).text(), action)
    assert [v for n, v in loaded if n == "revision"] != [""]
    theirs = await _theirs(client, method, api_path, body)
    refused = await client.post(action, data=replaced(loaded, **typed))
    html = await refused.text()
    assert refused.status == 409, html
    assert 'data-testid="stale-edit"' in html
    assert await _api(client, api_path) == theirs  # nothing was changed
    kept = dict(form_fields(html, action))
    for name, value in typed.items():
        assert kept[name.replace("__", ".")] == value, name  # what was typed is still there
    saved = await client.post(action, data=form_fields(html, action), allow_redirects=False)
    assert saved.status == 303, await saved.text()
    return html, await _api(client, api_path)


async def test_a_stale_trigger_edit_is_refused_and_keeps_what_was_typed(
    client: Client, services: Services
) -> None:
    body = {"name": "gps", "entity_type": "vehicle", "methods": ["POST"]}
    trigger = await post(client, "/api/v1/triggers", body)
    await make_user(services)
    await log_in(client)
    base = f"/admin/triggers/{trigger['id']}"
    html, stored = await _stale_save(
        client,
        f"{base}/edit",
        f"{base}/edit",
        ("PATCH", f"/api/v1/triggers/{trigger['id']}", {"rate_limit": {"per_second": 7}}),
        {"name": "GPS da frota — São Paulo"},
    )
    # The current version of what differs is shown: their rate limit, the name as stored.
    assert "<code>rate_limit.per_second</code></dt><dd><pre>7</pre>" in html
    assert "<code>name</code></dt><dd><pre>gps</pre>" in html
    assert "Outra pessoa salvou este item" in html
    # Saved again knowingly: the typed form wins, their rate limit with it (it was shown).
    assert stored["name"] == "GPS da frota — São Paulo"


async def test_a_fresh_edit_and_a_post_without_revision_are_saved(
    client: Client, services: Services
) -> None:
    body = {"name": "gps", "entity_type": "vehicle", "methods": ["POST"]}
    trigger = await post(client, "/api/v1/triggers", body)
    await make_user(services)
    await log_in(client)
    base = f"/admin/triggers/{trigger['id']}"
    loaded = form_fields(await (await client.get(f"{base}/edit")).text(), f"{base}/edit")
    saved = await client.post(
        f"{base}/edit", data=replaced(loaded, name="primeiro"), allow_redirects=False
    )
    assert saved.status == 303, await saved.text()
    # The same (now stale) form typed over again is refused; without its revision it is not
    # checked. (Its one-time id is left out: the same form sent twice is refused as such.)
    loaded = [(n, v) for n, v in loaded if n != "once"]
    again = await client.post(f"{base}/edit", data=replaced(loaded, name="segundo"))
    assert again.status == 409 and 'data-testid="stale-edit"' in await again.text()
    unchecked = [(n, v) for n, v in replaced(loaded, name="terceiro") if n != "revision"]
    saved = await client.post(f"{base}/edit", data=unchecked, allow_redirects=False)
    assert saved.status == 303
    assert (await _api(client, f"/api/v1/triggers/{trigger['id']}"))["name"] == "terceiro"


async def test_a_stale_action_edit_is_refused(client: Client, services: Services) -> None:
    partner = await create_partner(client, "https://erp.example.com")
    action = await create_action(client, partner["id"])
    await make_user(services)
    await log_in(client)
    base = f"/admin/actions/{action['id']}"
    html, stored = await _stale_save(
        client,
        f"{base}/edit",
        f"{base}/edit",
        ("PATCH", f"/api/v1/actions/{action['id']}", {"path": "/deles"}),
        {"retry_schedule": "1, 2"},
    )
    assert "<code>path</code></dt><dd><pre>/deles</pre>" in html
    assert stored["retry_schedule"] == [1.0, 2.0]


async def test_a_stale_schedule_edit_is_refused(client: Client, services: Services) -> None:
    await upload_mapping(client, POLLED_MAPPING)
    partner = await create_partner(client, "https://erp.example.com")
    action = await create_action(
        client, partner["id"], name="frota", method="GET", path="/veiculos", mode="proxy"
    )
    body = {
        "name": "frota-api",
        "action_id": action["id"],
        "every": "5m",
        "target": {"entity_type": "vehicle", "mapping": "frota-api"},
    }
    schedule = await post(client, "/api/v1/schedules", body)
    await make_user(services)
    await log_in(client)
    base = f"/admin/schedules/{schedule['id']}"
    html, stored = await _stale_save(
        client,
        f"{base}/edit",
        f"{base}/edit",
        ("PATCH", f"/api/v1/schedules/{schedule['id']}", {"every": "15m"}),
        {"name": "frota-noturna"},
    )
    assert "<code>every</code></dt><dd><pre>15m</pre>" in html
    assert stored["name"] == "frota-noturna"


async def test_stale_geofence_and_plan_edits_are_refused(
    client: Client, services: Services
) -> None:
    fence = await post(
        client,
        "/api/v1/geofences",
        {
            "name": "pátio",
            "kind": "authorized",
            "circle": {"lat": -23.5, "lon": -46.6, "radius_m": 300},
        },
    )
    plan = await post(client, "/api/v1/maintenance-plans", {"name": "Revisão", "every_km": 10000})
    await make_user(services)
    await log_in(client)
    base = f"/admin/geofences/{fence['id']}"
    html, stored = await _stale_save(
        client,
        base,
        f"{base}/edit",
        ("PATCH", f"/api/v1/geofences/{fence['id']}", {"margin_m": 50}),
        {"name": "Pátio central"},
    )
    assert "<code>margin_m</code></dt><dd><pre>50</pre>" in html
    assert stored["name"] == "Pátio central"
    base = f"/admin/maintenance-plans/{plan['id']}"
    html, stored = await _stale_save(
        client,
        base,
        f"{base}/edit",
        ("PATCH", f"/api/v1/maintenance-plans/{plan['id']}", {"every_km": 15000}),
        {"name": "Revisão geral"},
    )
    assert "<code>every_km</code></dt><dd><pre>15000</pre>" in html
    assert stored["name"] == "Revisão geral"


async def test_stale_channel_and_notice_settings_edits_are_refused(
    client: Client, services: Services
) -> None:
    body = {
        "name": "email",
        "type": "email",
        "smtp": {"host": "127.0.0.1", "port": 19125, "security": "none"},
        "from": "Frota Acme <alertas@acme.com.br>",
    }
    channel = await post(client, "/api/v1/channels", body)
    await make_user(services)
    await log_in(client)
    base = f"/admin/channels/{channel['id']}"
    page = await (await client.get(base)).text()
    document = dict(form_fields(page, f"{base}/edit"))["document"]
    mine = json.dumps({**json.loads(document), "name": "email-frota"}, indent=2)
    html, stored = await _stale_save(
        client,
        base,
        f"{base}/edit",
        ("PATCH", f"/api/v1/channels/{channel['id']}", {"reply_to": "frota@acme.com.br"}),
        {"document": mine},
    )
    assert "frota@acme.com.br" in html.split('data-testid="stale-edit"')[1].split("</dl>")[0]
    assert stored["name"] == "email-frota"
    html, stored = await _stale_save(
        client,
        "/admin/notification-settings",
        "/admin/notification-settings",
        ("PUT", "/api/v1/notification-settings", {"cooldown_seconds": 600}),
        {"cooldown_seconds": "120"},
    )
    assert "<code>cooldown_seconds</code></dt><dd><pre>600</pre>" in html
    assert stored["cooldown_seconds"] == 120


async def test_a_stale_subscription_edit_is_refused(client: Client, services: Services) -> None:
    erp = await create_partner(client, "http://127.0.0.1:19302")
    action = await create_action(client, erp["id"])
    body = {"action_id": action["id"], "event_types": ["entity.updated"]}
    subscription = await post(client, "/api/v1/subscriptions", body)
    await make_user(services)
    await log_in(client)
    base = f"/admin/subscriptions/{subscription['id']}"
    html, stored = await _stale_save(
        client,
        base,
        f"{base}/edit",
        ("PATCH", f"/api/v1/subscriptions/{subscription['id']}", {"sample_seconds": 30}),
        {"event_types": "entity.updated, entity.created"},
    )
    assert "<code>sample_seconds</code></dt><dd><pre>30</pre>" in html
    assert sorted(stored["event_types"]) == ["entity.created", "entity.updated"]
    # The refused page shows the sampling, which the admin did not change, as it is now:
    # saved as it stands, it keeps theirs.
    assert stored["sample_seconds"] == 30


async def test_saving_a_409_entity_page_again_keeps_a_feeds_change_the_admin_did_not_touch(
    client: Client, services: Services
) -> None:
    """The admin changes the model; a partner's feed writes the vehicle's attributes
    meanwhile. The 409 page keeps the model as typed and shows the attributes as they are now
    (the admin never touched them), so saving it again does not put the feed's value back."""
    attributes = {"tracker_id": "b7", "log": "b43"}
    vehicle = await post(
        client,
        "/api/v1/entities/vehicle",
        {"plate": "ABC1D23", "model": "Axor", "attributes": attributes},
    )
    await make_user(services)
    await log_in(client)
    path = f"/api/v1/entities/vehicle/{vehicle['id']}"
    edit = f"/admin/entities/vehicle/{vehicle['id']}/edit"
    loaded = form_fields(await (await client.get(edit)).text(), edit)
    feed = await client.patch(
        path,
        json={"attributes": {"log": "b49"}},
        headers={**auth(), "Content-Type": "application/merge-patch+json"},
    )
    assert feed.status == 200, await feed.text()
    typed = [(n, "Actros" if n == "/model" else v) for n, v in loaded]
    refused = await client.post(edit, data=typed)
    html = await refused.text()
    assert refused.status == 409, html
    kept = dict(form_fields(html, edit))
    assert kept["/model"] == "Actros"  # typed: kept
    assert json.loads(kept["/attributes"]) == {"tracker_id": "b7", "log": "b49"}  # now
    saved = await client.post(edit, data=form_fields(html, edit), allow_redirects=False)
    assert saved.status == 303, await saved.text()
    stored = await _api(client, path)
    assert stored["model"] == "Actros"
    assert stored["attributes"] == {"tracker_id": "b7", "log": "b49"}


@pytest.mark.parametrize("meanwhile", ["disabled", "active"])
async def test_saving_a_409_partner_page_again_keeps_the_status_the_gateway_set(
    client: Client, services: Services, meanwhile: str
) -> None:
    """The admin types a timeout while the gateway disables the partner (failing too long),
    or enables it again (its probe answered): the 409 page shows the status as it is now
    (the admin never touched it), so saving it again neither re-enables a failing partner
    nor disables (as an admin's disable: never probed again) one that recovered."""
    erp = await create_partner(client, "https://erp.example.com", timeout_seconds=2)
    store, now = services.store.partners, utcnow()
    if meanwhile == "active":  # the page is loaded while the gateway has it disabled
        assert await store.disable(
            "acme", erp["id"], now, now + timedelta(hours=1), failing_since=None
        )
    await make_user(services)
    await log_in(client)
    page, path = f"/admin/partners/{erp['id']}", f"/api/v1/partners/{erp['id']}"
    loaded = form_fields(await (await client.get(page)).text(), f"{page}/edit")
    if meanwhile == "disabled":
        assert await store.disable(
            "acme", erp["id"], now, now + timedelta(hours=1), failing_since=None
        )
    else:
        assert await store.enable("acme", erp["id"]) is not None
    refused = await client.post(f"{page}/edit", data=replaced(loaded, timeout_seconds="5"))
    html = await refused.text()
    assert refused.status == 409, html
    kept = dict(form_fields(html, f"{page}/edit"))
    assert kept["timeout_seconds"] == "5" and kept["status"] == meanwhile
    saved = await client.post(
        f"{page}/edit", data=form_fields(html, f"{page}/edit"), allow_redirects=False
    )
    assert saved.status == 303, await saved.text()
    stored = await _api(client, path)
    assert stored["timeout_seconds"] == 5 and stored["status"] == meanwhile


async def test_a_stale_template_replace_is_refused(client: Client, services: Services) -> None:
    template = await post(client, "/api/v1/templates", ALERT_TEMPLATE)
    await make_user(services)
    await log_in(client)
    base = f"/admin/templates/{template['id']}"
    loaded = dict(form_fields(await (await client.get(base)).text(), f"{base}/edit"))
    mine = json.dumps({**json.loads(loaded["document"]), "description": "minha"}, indent=2)
    theirs = {**ALERT_TEMPLATE, "description": "deles"}
    html, stored = await _stale_save(
        client,
        base,
        f"{base}/edit",
        ("PUT", f"/api/v1/templates/{template['id']}", theirs),
        {"document": mine},
    )
    assert "deles" in html.split('data-testid="stale-edit"')[1].split("</dl>")[0]
    assert stored["description"] == "minha" and stored["version"] == 3


MAPPING_TEXT = """\
name: erp-km
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, transforms: [upper]}
  odometer_km: {from: km%s, transforms: [number]}
"""


def _form_with(page: str, action: str, **values: str) -> list[tuple[str, str]]:
    """The form posting to `action` (the first one: the newest version's button) with
    `values` over it."""
    return [(n, values.get(n, v)) for n, v in form_fields(page, action)]


async def test_two_roll_backs_from_pages_showing_the_same_version_roll_back_once(
    client: Client, services: Services
) -> None:
    for n in ("", "2", "3"):
        await upload_mapping(client, MAPPING_TEXT % n)
    await make_user(services)
    await log_in(client)
    page, action = "/admin/mappings/erp-km", "/admin/mappings/erp-km/rollback"
    tab_a = await (await client.get(page)).text()  # two admins' tabs, both showing v3 active
    tab_b = await (await client.get(page)).text()
    assert dict(form_fields(tab_a, action))["active"] == "3"
    first = await client.post(action, data=form_fields(tab_a, action), allow_redirects=False)
    assert first.status == 303, await first.text()
    second = await client.post(action, data=form_fields(tab_b, action))
    html = await second.text()
    assert second.status == 409, html
    assert "version 2 is active, not version 3; nothing was changed" in html
    assert (await _api(client, "/api/v1/mappings/erp-km"))["version"] == 2
    # activating from the stale page is refused too; from a page showing v2, applied
    activate = "/admin/mappings/erp-km/activate"
    stale = await client.post(activate, data=_form_with(tab_b, activate, version="1"))
    assert stale.status == 409
    fresh = await (await client.get(page)).text()
    chosen = _form_with(fresh, activate, version="1")
    applied = await client.post(activate, data=chosen, allow_redirects=False)
    assert applied.status == 303
    # a post without the shown version (a script of its own, nor its one-time id) is not
    # checked
    chosen = _form_with(tab_b, activate, version="3")
    unchecked = [(n, v) for n, v in chosen if n not in ("active", "once")]
    script = await client.post(activate, data=unchecked, allow_redirects=False)
    assert script.status == 303
    assert (await _api(client, "/api/v1/mappings/erp-km"))["version"] == 3


async def test_a_stale_flow_roll_back_is_refused(client: Client, services: Services) -> None:
    await email_channel(client)
    await post(client, "/api/v1/templates", ALERT_TEMPLATE)
    flow = {
        "name": "avisa",
        "on": {"events": ["entity.created"]},
        "steps": [
            {
                "id": "n",
                "notify": {
                    "channel": "email",
                    "template": "alerta",
                    "recipients": [{"address": "frota@acme.com.br"}],
                },
            }
        ],
    }
    for subject in ("um", "dois"):
        flow["steps"][0]["notify"]["recipients"][0]["address"] = f"{subject}@acme.com.br"
        await post(client, "/api/v1/flows", flow)
    await make_user(services)
    await log_in(client)
    page, action = "/admin/flows/avisa", "/admin/flows/avisa/rollback"
    tab_a = await (await client.get(page)).text()
    tab_b = await (await client.get(page)).text()
    first = await client.post(action, data=form_fields(tab_a, action), allow_redirects=False)
    assert first.status == 303, await first.text()
    second = await client.post(action, data=form_fields(tab_b, action))
    assert second.status == 409
    assert "version 1 is active, not version 2" in await second.text()
    assert (await _api(client, "/api/v1/flows/avisa"))["version"] == 1


async def test_a_rotation_from_a_page_loaded_before_another_rotation_is_refused(
    client: Client, services: Services
) -> None:
    trigger = await post(client, "/api/v1/triggers", {"name": "erp", "entity_type": "vehicle"})
    await make_user(services)
    await log_in(client)
    page, action = f"/admin/triggers/{trigger['id']}", f"/admin/triggers/{trigger['id']}/rotate"
    tab_a = await (await client.get(page)).text()  # two admins' tabs, grace 0 in both
    tab_b = await (await client.get(page)).text()
    first = await client.post(action, data=form_fields(tab_a, action))
    shown = await first.text()
    assert first.status == 200, shown
    token = re.search(r'id="trigger-token"[^>]*>\s*([^<\s]+)', shown)
    assert token is not None
    second = await client.post(action, data=form_fields(tab_b, action))
    html = await second.text()
    assert second.status == 409, html
    assert "credentials changed since this page was loaded" in html
    # the token the first admin was shown still works: no credential was issued or ended
    hook = await client.post(
        f"/hooks/{trigger['id']}",
        json={"plate": "ABC1D23"},
        headers={"Authorization": f"Bearer {token.group(1)}"},
    )
    assert hook.status == 201, await hook.text()
    assert len((await _api(client, f"/api/v1/triggers/{trigger['id']}"))["credentials"]) == 1
    # the refused page shows the credentials as they are now: rotating from it is knowing
    again = await client.post(action, data=form_fields(html, action))
    assert again.status == 200 and 'id="trigger-token"' in await again.text()


async def test_a_secret_rotation_from_a_page_loaded_before_another_is_refused(
    client: Client, services: Services
) -> None:
    erp = await create_partner(client, "http://127.0.0.1:19302")
    action = await create_action(client, erp["id"])
    body = {"action_id": action["id"], "event_types": ["entity.updated"]}
    subscription = await post(client, "/api/v1/subscriptions", body)
    await make_user(services)
    await log_in(client)
    page = f"/admin/subscriptions/{subscription['id']}"
    rotate = f"{page}/rotate-secret"
    tab_a = await (await client.get(page)).text()
    tab_b = await (await client.get(page)).text()
    first = await client.post(rotate, data=form_fields(tab_a, rotate))
    assert first.status == 200 and 'id="subscription-secret"' in await first.text()
    rotated = await _api(client, f"/api/v1/subscriptions/{subscription['id']}")
    second = await client.post(rotate, data=form_fields(tab_b, rotate))
    html = await second.text()
    assert second.status == 409, html
    assert "secret was rotated since this page was loaded" in html
    assert await _api(client, f"/api/v1/subscriptions/{subscription['id']}") == rotated
    fresh = await (await client.get(page)).text()
    again = await client.post(rotate, data=form_fields(fresh, rotate))
    assert again.status == 200


async def test_an_entity_edit_saved_after_its_deletion_says_so_and_shows_what_was_typed(
    client: Client, services: Services
) -> None:
    """Another admin deleted the supplier while this one edited it: the save is its deleted
    page (410: when, by whom), saying nothing was saved and showing the name typed, not a
    bare 404 that reads like a wrong link with the typing gone."""
    await make_user(services)
    await log_in(client)
    supplier = await post(
        client, "/api/v1/entities/supplier", {"name": "Apagar Depois", "cnpj": "11222333000181"}
    )
    action = f"/admin/entities/supplier/{supplier['id']}/edit"
    loaded = form_fields(await (await client.get(action)).text(), action)
    deleted = await client.delete(f"/api/v1/entities/supplier/{supplier['id']}", headers=auth())
    assert deleted.status == 204
    saved = await client.post(action, data=replaced(loaded, **{"/name": "Nome novo digitado"}))
    page = await saved.text()
    assert saved.status == 410, page
    assert 'data-testid="entity-deleted"' in page and "Nada foi salvo" in page
    typed = page.split('data-testid="typed"')[1]
    assert "Nome novo digitado" in typed
    assert ">author<" not in typed and ">revision<" not in typed and ">once<" not in typed


async def test_any_edit_saved_after_its_object_was_deleted_shows_what_was_typed(
    client: Client, services: Services
) -> None:
    """A trigger deleted meanwhile: its edit's save is the 404 page, saying nothing was saved
    and listing what was typed to copy (every edit form: the error page shows the form)."""
    await make_user(services)
    await log_in(client)
    trigger = await post(client, "/api/v1/triggers", {"name": "erp", "entity_type": "vehicle"})
    action = f"/admin/triggers/{trigger['id']}/edit"
    loaded = form_fields(await (await client.get(action)).text(), action)
    deleted = await client.delete(f"/api/v1/triggers/{trigger['id']}", headers=auth())
    assert deleted.status == 204
    saved = await client.post(action, data=replaced(loaded, name="erp-renomeado"))
    page = await saved.text()
    assert saved.status == 404, page
    assert "Nada foi salvo" in page and "erp-renomeado" in page.split('data-testid="typed"')[1]
