"""Numbers over HTTP in the page's language: a Portuguese page prints `18.250,0` and
`10.000`, an English one `18,250.0` and `10,000`, and the forms read a figure copied from their
own page as the same number (ten thousand, not ten); what an edit form shows is read back
unchanged, every digit kept."""

from __future__ import annotations

import math
import re
from typing import Any

from gateway.services import Services
from tests.partner_double import post
from tests.support import auth
from tests.triggers_support import hook
from tests.ui_support import Client, csrf, form_fields, log_in, make_user


async def _api(client: Client, path: str) -> Any:
    response = await client.get(path, headers=auth())
    assert response.status == 200, await response.text()
    return await response.json()


async def _new(client: Client, path: str, fields: dict[str, str]) -> Any:
    token = await csrf(client, path)
    target = path.removesuffix("/new")
    return await client.post(target, data={"csrf": token, **fields}, allow_redirects=False)


async def test_pages_print_numbers_in_their_language_and_forms_read_them_back(
    client: Client, services: Services
) -> None:
    vehicle = await post(
        client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "odometer_km": 18250}
    )
    await make_user(services)
    await log_in(client)
    page = await (await client.get(f"/admin/entities/vehicle/{vehicle['id']}")).text()
    assert "<strong>18.250,0</strong>" in page and "18,250" not in page
    # A figure copied from the page into a Portuguese form: ten thousand, not ten.
    saved = await _new(
        client, "/admin/maintenance-plans/new", {"name": "Óleo", "every_km": "10.000"}
    )
    assert saved.status == 303, await saved.text()
    [plan] = (await _api(client, "/api/v1/maintenance-plans"))["items"]
    assert plan["every_km"] == 10_000
    listing = await (await client.get("/admin/maintenance-plans")).text()
    assert "a cada 10.000 km" in listing
    await client.get("/admin/lang/en")
    page = await (await client.get(f"/admin/entities/vehicle/{vehicle['id']}")).text()
    assert "<strong>18,250.0</strong>" in page
    assert (
        "every 10,000 km"
        in await (await client.get(f"/admin/maintenance-plans/{plan['id']}")).text()
    )
    saved = await _new(
        client, "/admin/maintenance-plans/new", {"name": "Pneus", "every_km": "20,000.5"}
    )
    assert saved.status == 303, await saved.text()
    plans = (await _api(client, "/api/v1/maintenance-plans"))["items"]
    assert {p["name"]: p["every_km"] for p in plans} == {"Óleo": 10_000, "Pneus": 20_000.5}


async def test_an_edit_form_shows_numbers_it_reads_back_as_the_same_numbers(
    client: Client, services: Services
) -> None:
    circle = {"lat": -23.55212, "lon": -46.633, "radius_m": 400.5}
    fence = await post(
        client,
        "/api/v1/geofences",
        {"name": "Garagem", "kind": "authorized", "circle": circle, "margin_m": 12.125},
    )
    await make_user(services)
    await log_in(client)
    for lang, shown in (("pt-BR", ("-23,55212", "-46,633")), ("en", ("-23.55212", "-46.633"))):
        await client.get(f"/admin/lang/{lang}")
        action = f"/admin/geofences/{fence['id']}/edit"
        fields = form_fields(
            await (await client.get(f"/admin/geofences/{fence['id']}")).text(), action
        )
        assert (dict(fields)["circle.lat"], dict(fields)["circle.lon"]) == shown
        typed = [(n, f"Garagem {lang}" if n == "name" else v) for n, v in fields]
        saved = await client.post(action, data=typed, allow_redirects=False)
        assert saved.status == 303, await saved.text()
        stored = await _api(client, f"/api/v1/geofences/{fence['id']}")
        assert stored["name"] == f"Garagem {lang}"
        assert stored["circle"] == circle and stored["margin_m"] == 12.125  # every digit


async def test_an_actions_retry_schedule_is_shown_to_edit_with_every_digit(
    client: Client, services: Services
) -> None:
    """A comma-separated list's numbers take a decimal point in either language."""
    partner = await post(
        client,
        "/api/v1/partners",
        {"name": "ERP", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}},
    )
    body = {"name": "push", "partner_id": partner["id"], "method": "POST", "path": "/hooks"}
    action = await post(
        client, "/api/v1/actions", {**body, "mode": "deliver", "retry_schedule": [0.5, 604799.5]}
    )
    await make_user(services)
    await log_in(client)
    for lang in ("pt-BR", "en"):
        await client.get(f"/admin/lang/{lang}")
        path = f"/admin/actions/{action['id']}/edit"
        fields = form_fields(await (await client.get(path)).text(), path)
        assert dict(fields)["retry_schedule"] == "0.5, 604799.5"
        saved = await client.post(path, data=fields, allow_redirects=False)
        assert saved.status == 303, await saved.text()
        stored = await _api(client, f"/api/v1/actions/{action['id']}")
        assert stored["retry_schedule"] == [0.5, 604799.5]


async def test_a_retry_schedule_copied_from_the_actions_page_is_stored_as_shown(
    client: Client, services: Services
) -> None:
    """The page prints the schedule as its comma-separated field reads it (no grouping: on a
    Portuguese page `1.800` would be read back as 1.8): pasted into the edit form, the same
    numbers are stored."""
    partner = await post(
        client,
        "/api/v1/partners",
        {"name": "ERP", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}},
    )
    body = {"name": "push", "partner_id": partner["id"], "method": "POST", "path": "/hooks"}
    schedule = [1800, 3600, 0.5, 604799.5]
    action = await post(
        client, "/api/v1/actions", {**body, "mode": "deliver", "retry_schedule": schedule}
    )
    await make_user(services)
    await log_in(client)
    labels = {
        "pt-BR": "Esperas antes de cada nova tentativa (s)",
        "en": "Waits before each retry (s)",
    }
    for lang, label in labels.items():
        await client.get(f"/admin/lang/{lang}")
        page = await (await client.get(f"/admin/actions/{action['id']}")).text()
        shown = re.search(rf"<dt>{re.escape(label)}</dt><dd[^>]*>([^<]*)</dd>", page)
        assert shown is not None, page
        path = f"/admin/actions/{action['id']}/edit"
        fields = form_fields(await (await client.get(path)).text(), path)
        typed = [(n, shown.group(1) if n == "retry_schedule" else v) for n, v in fields]
        saved = await client.post(path, data=typed, allow_redirects=False)
        assert saved.status == 303, await saved.text()
        stored = await _api(client, f"/api/v1/actions/{action['id']}")
        assert stored["retry_schedule"] == schedule, shown.group(1)


async def test_a_form_reads_numbers_in_the_language_it_was_shown_in(
    client: Client, services: Services
) -> None:
    """The language switched between loading a form and saving it: the numbers are read, and
    the stale-edit revision compared, in the language the form was shown in (its hidden
    `lang`), not a false 409 nor `15.000` stored as 15."""
    plan = await post(client, "/api/v1/maintenance-plans", {"name": "Óleo", "every_km": 10_000})
    circle = {"lat": -23.55212, "lon": -46.633, "radius_m": 400.5}
    fence = await post(
        client, "/api/v1/geofences", {"name": "Garagem", "kind": "authorized", "circle": circle}
    )
    await make_user(services)
    await log_in(client)
    await client.get("/admin/lang/pt-BR")
    plan_path = f"/admin/maintenance-plans/{plan['id']}"
    plan_fields = form_fields(await (await client.get(plan_path)).text(), f"{plan_path}/edit")
    fence_path = f"/admin/geofences/{fence['id']}"
    fence_fields = form_fields(await (await client.get(fence_path)).text(), f"{fence_path}/edit")
    assert dict(fence_fields)["circle.lat"] == "-23,55212"
    await client.get("/admin/lang/en")
    typed = [(n, "15.000" if n == "every_km" else v) for n, v in plan_fields]
    saved = await client.post(f"{plan_path}/edit", data=typed, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    assert (await _api(client, f"/api/v1/maintenance-plans/{plan['id']}"))["every_km"] == 15_000
    typed = [(n, "Garagem 2" if n == "name" else v) for n, v in fence_fields]
    saved = await client.post(f"{fence_path}/edit", data=typed, allow_redirects=False)
    assert saved.status == 303, await saved.text()  # not a 409: nothing changed meanwhile
    stored = await _api(client, f"/api/v1/geofences/{fence['id']}")
    assert stored["name"] == "Garagem 2" and stored["circle"] == circle
    # A form that names no language of ours is read in the page's (English now).
    fields = form_fields(await (await client.get(plan_path)).text(), f"{plan_path}/edit")
    assert ("lang", "en") in fields
    typed = [(n, "xx" if n == "lang" else "20,000" if n == "every_km" else v) for n, v in fields]
    saved = await client.post(f"{plan_path}/edit", data=typed, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    assert (await _api(client, f"/api/v1/maintenance-plans/{plan['id']}"))["every_km"] == 20_000


async def test_a_triggers_partners_and_schedules_figures_are_printed_in_the_page_language(
    client: Client, services: Services
) -> None:
    """A trigger's rate limit and limits, a partner's timeout: a Portuguese page prints
    `2,125/s` (its own edit form's `2,125`), never `2.125` (two thousand one hundred and
    twenty-five there), and groups `262.144 B`."""
    trigger = await post(
        client,
        "/api/v1/triggers",
        {
            "name": "rl",
            "entity_type": "vehicle",
            "methods": ["POST"],
            "rate_limit": {"per_second": 2.125, "burst": 1500},
            "max_body_bytes": 262144,
        },
    )
    partner = await post(
        client,
        "/api/v1/partners",
        {
            "name": "erp",
            "base_url": "http://127.0.0.1:9",
            "auth": {"type": "none"},
            "timeout_seconds": 2.5,
        },
    )
    await make_user(services)
    await log_in(client)
    page = await (await client.get(f"/admin/triggers/{trigger['id']}")).text()
    assert "2,125/s" in page and "rajada 1.500" in page and "262.144 B" in page
    assert "2.125/s" not in page
    edit = await (await client.get(f"/admin/triggers/{trigger['id']}/edit")).text()
    assert (
        dict(form_fields(edit, f"/admin/triggers/{trigger['id']}/edit"))["rate_limit.per_second"]
        == "2,125"
    )
    partner_page = await (await client.get(f"/admin/partners/{partner['id']}")).text()
    assert "<dd>2,5</dd>" in partner_page
    await client.get("/admin/lang/en")
    page = await (await client.get(f"/admin/triggers/{trigger['id']}")).text()
    assert "2.125/s" in page and "262,144 B" in page


async def test_a_figure_as_a_page_prints_it_can_be_typed_in_every_number_field(
    client: Client, services: Services
) -> None:
    """A trigger's page prints `131.072 B`: its edit form takes it as typed or pasted so (a
    text field read in the page's language; an `<input type=number>` would hold `131.072`
    as 131.072, and `1.048.576` as `1.048576`), and no form has a number input a grouped
    figure cannot be typed in."""
    trigger = await post(
        client, "/api/v1/triggers", {"name": "t", "entity_type": "vehicle", "methods": ["POST"]}
    )
    await make_user(services)
    await log_in(client)
    edit = f"/admin/triggers/{trigger['id']}/edit"
    page = await (await client.get(edit)).text()
    for name in ("rate_limit.burst", "max_body_bytes", "max_batch_items"):
        assert re.search(rf'name="{re.escape(name)}" type="text"', page), name
    figures = {"max_body_bytes": "131.072", "rate_limit.per_second": "2,5"}
    typed = [
        (n, {**figures, "rate_limit.burst": "1.000"}.get(n, v)) for n, v in form_fields(page, edit)
    ]
    saved = await client.post(edit, data=typed, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    stored = await (await client.get(f"/api/v1/triggers/{trigger['id']}", headers=auth())).json()
    assert (stored["max_body_bytes"], stored["rate_limit"]["burst"]) == (131072, 1000)
    for path in ("/admin/schedules/new", "/admin/notification-settings", "/admin/partners"):
        assert 'type="number"' not in await (await client.get(path)).text(), path


async def test_a_vehicles_last_position_is_printed_in_the_pages_language(
    client: Client, services: Services
) -> None:
    """The vehicle page's last position, as its table of fixes prints the same coordinate;
    the fences list's count of a polygon's vertices."""
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    trigger = await post(
        client, "/api/v1/triggers", {"name": "gps", "target": "positions", "methods": ["POST"]}
    )
    fix = {"plate": "ABC1D23", "time": "2026-12-01T12:00:00Z", "lat": -23.55212, "lon": -46.63361}
    status, body = await hook(client, trigger, [fix])
    assert status in (200, 201, 207), body
    await services.fold.run_until_idle()
    turns = [2 * math.pi * k / 1200 for k in range(1200)]
    ring = [[-46.63 + 0.01 * math.cos(a), -23.55 + 0.01 * math.sin(a)] for a in turns]
    polygon = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    await post(
        client, "/api/v1/geofences", {"name": "Pátio", "kind": "authorized", "polygon": polygon}
    )
    await make_user(services)
    await log_in(client)
    for lang, vertices in (
        ("pt-BR", "polígono de 1.200 vértices"),
        ("en", "polygon of 1,200 vertices"),
    ):
        await client.get(f"/admin/lang/{lang}")
        assert vertices in await (await client.get("/admin/geofences")).text()
    for lang, shown in (("pt-BR", "-23,55212, -46,63361"), ("en", "-23.55212, -46.63361")):
        await client.get(f"/admin/lang/{lang}")
        page = await (await client.get(f"/admin/entities/vehicle/{vehicle['id']}")).text()
        line = re.search(r'data-testid="last-position">([^<]*)<', page)
        assert line is not None and f": {shown} · " in line.group(1), page
