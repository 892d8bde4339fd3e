"""The demo tenant: seeding is idempotent and the demo triggers accept the partners' samples."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.demo import seed_entities, seed_geotab, seed_mappings, seed_triggers
from gateway.services import Services
from gateway.web.demo_partner import DATABASE, PASSWORD, USER, add_demo_partner
from gateway.web.state import services_key
from tests.support import auth

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = Path(__file__).parent / "data" / "partner_payloads"
README = ROOT / "README.md"


def _path(hook: Any) -> str:
    return "/hooks/" + str(hook.url).rsplit("/hooks/", 1)[1]


async def _seed(services: Services) -> dict[str, Any]:
    await seed_entities(services.entities, "demo")
    await seed_mappings(services.mappings, "demo", ROOT / "mappings")
    return {t.name: t for t in await seed_triggers(services.triggers, "demo")}


async def test_demo_seeding_twice_keeps_one_copy_and_issues_fresh_tokens(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app())
    first = await _seed(client.app[services_key])
    second = await _seed(client.app[services_key])
    assert (
        first.keys()
        == second.keys()
        == {"traccar-positions", "osmand-phone", "erp-vehicles", "erp-drivers", "fines-provider"}
    )
    assert first["erp-vehicles"].url == second["erp-vehicles"].url
    stale = await client.get(
        first["erp-vehicles"].url.split("8080")[-1] + "/ABC1D23",
        headers={"Authorization": f"Bearer {first['erp-vehicles'].token}"},
    )
    assert stale.status == 401
    vehicles = await (await client.get("/api/v1/entities/vehicle", headers=auth("demo"))).json()
    assert len(vehicles["items"]) == 3


async def test_demo_triggers_accept_the_partner_samples(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app())
    hooks = await _seed(client.app[services_key])

    def path(name: str) -> str:
        return _path(hooks[name])

    def bearer(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {hooks[name].token}"}

    traccar = json.loads((SAMPLES / "traccar_position_forward.json").read_text())
    response = await client.post(
        path("traccar-positions"), json=traccar, headers=bearer("traccar-positions")
    )
    assert response.status == 200, await response.text()
    assert "vehicle.position" in (await response.json())["events"]

    query = (SAMPLES / "osmand_query.txt").read_text().strip()
    token = hooks["osmand-phone"].token
    response = await client.get(f"{path('osmand-phone')}?token={token}&{query}")
    assert response.status == 200, await response.text()

    fine = json.loads((SAMPLES / "fine_feed.json").read_text())
    response = await client.post(
        path("fines-provider"), json=fine, headers=bearer("fines-provider")
    )
    assert response.status == 201, await response.text()

    vehicle = await (
        await client.get(path("erp-vehicles") + "/ABC1D23", headers=bearer("erp-vehicles"))
    ).json()
    assert vehicle["last_position"]["speed_kmh"] == 24.3  # 13.1 knots


async def test_the_readme_driver_example_creates_a_new_driver(client: Any) -> None:
    """README's "the ERP ... writes a driver" curl, sent to the demo's erp-drivers trigger."""
    hooks = await _seed(client.app[services_key])
    match = re.search(r"-d '(\{.*?\})' \"\$ERP_DRIVERS_URL\"", README.read_text())
    assert match is not None
    driver = json.loads(match.group(1))
    trigger = hooks["erp-drivers"]
    response = await client.post(
        _path(trigger), json=driver, headers={"Authorization": f"Bearer {trigger.token}"}
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["created"] is True


async def test_the_demo_schedule_polls_the_stand_in_geotab_server(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    app = make_app()
    add_demo_partner(app)
    client = await aiohttp_client(app)
    services = client.app[services_key]
    await _seed(services)
    credentials = {"database": DATABASE, "username": USER, "password": PASSWORD}
    geotab_url = str(client.make_url("/demo/geotab"))
    schedule = await seed_geotab(
        services.actions, services.schedules, "demo", geotab_url, credentials
    )
    again = await seed_geotab(services.actions, services.schedules, "demo", geotab_url, credentials)
    assert again["id"] == schedule["id"]
    assert await services.schedule_runner.run_until_idle() == {"ok": 1}
    runs = await (
        await client.get(f"/api/v1/schedules/{schedule['id']}/runs", headers=auth("demo"))
    ).json()
    (run,) = runs["items"]
    assert (run["pages"], run["items_read"], run["written"]) == (4, 12, 12)  # 5 + 5 + 2, then none
    truck = await (
        await client.get("/api/v1/entities/vehicle/BRA2E19", headers=auth("demo"))
    ).json()
    assert truck["last_position"]["fix_time"] and truck["attributes"]["geotab_log_id"] == "bB"
