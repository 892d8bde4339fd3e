"""The fleet settings page over HTTP: the current settings (defaults until set) in a form;
saved as `PUT /api/v1/fleet/settings` is (an emptied field takes its default); a value out
of its range is refused at its field with what was typed kept; a stale save is a 409."""

from __future__ import annotations

from gateway.services import Services
from tests.support import auth
from tests.ui_support import Client, form_fields, log_in, make_user, replaced

ACTION = "/admin/fleet-settings"


async def test_the_fleet_settings_are_saved_from_the_form_and_refused_at_their_field(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    fields = form_fields(await (await client.get(ACTION)).text(), ACTION)
    shown = dict(fields)
    assert shown["quality.max_speed_kmh"] == "300" and shown["retention_days"] == "90"
    assert shown["odometer.precedence"] == "reading, device"
    typed = replaced(fields, quality__max_speed_kmh="5000", retention_days="dez")
    refused = await client.post(ACTION, data=typed)
    html = await refused.text()
    assert refused.status == 422, html
    assert 'data-field="quality.max_speed_kmh"' in html and 'data-field="retention_days"' in html
    kept = form_fields(html, ACTION)
    assert dict(kept)["quality.max_speed_kmh"] == "5000" and dict(kept)["retention_days"] == "dez"
    assert (await services.fleet_settings.get("acme")).to_doc()["quality"]["max_speed_kmh"] == 300
    typed = replaced(
        kept,
        quality__max_speed_kmh="180,5",
        retention_days="30",
        odometer__precedence="device",
        quality__max_accuracy_m="",
    )
    saved = await client.post(ACTION, data=typed, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    api = await (await client.get("/api/v1/fleet/settings", headers=auth())).json()
    assert api["quality"]["max_speed_kmh"] == 180.5 and api["retention_days"] == 30
    assert api["odometer"]["precedence"] == ["device"]
    assert api["quality"]["max_accuracy_m"] == 200  # emptied: the default


async def test_a_stale_fleet_settings_save_is_refused(client: Client, services: Services) -> None:
    await make_user(services)
    await log_in(client)
    fields = form_fields(await (await client.get(ACTION)).text(), ACTION)
    theirs = await client.put("/api/v1/fleet/settings", json={"retention_days": 7}, headers=auth())
    assert theirs.status == 200
    refused = await client.post(ACTION, data=replaced(fields, quality__max_speed_kmh="150"))
    html = await refused.text()
    assert refused.status == 409 and 'data-testid="stale-edit"' in html
    assert dict(form_fields(html, ACTION))["quality.max_speed_kmh"] == "150"  # kept
    assert (await services.fleet_settings.get("acme")).retention_days == 7
