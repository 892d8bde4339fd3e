"""The demo tenant: seeding is idempotent and the demo triggers accept the partners' samples."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.auth.tokens import issue_admin_token
from gateway.cli import _env_name
from gateway.demo import (
    seed_entities,
    seed_fleet_rules,
    seed_geotab,
    seed_mappings,
    seed_triggers,
)
from gateway.demo_integrations import seed_automations
from gateway.services import Services
from gateway.web.demo_partner import DATABASE, PASSWORD, USER, add_demo_partner
from gateway.web.demo_partners import DemoPartners, start_smtp
from gateway.web.state import services_key
from tests.flow_support import drain
from tests.partner_double import FakeClock, Partner, partner
from tests.support import auth

__all__ = ["partner"]  # the fixture

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = Path(__file__).parent / "data" / "partner_payloads"
README = ROOT / "README.md"
FLEET = ROOT / "docs" / "fleet.md"


def _path(hook: Any) -> str:
    return "/hooks/" + str(hook.url).rsplit("/hooks/", 1)[1]


async def _seed(
    services: Services, partners_url: str = "http://127.0.0.1:9", smtp_port: int = 9
) -> dict[str, Any]:
    await seed_entities(services.entities, "demo")
    await seed_mappings(services.mappings, "demo", ROOT / "mappings")
    await seed_automations(
        services.actions,
        services.notify,
        "demo",
        ROOT / "flows",
        partners_url=partners_url,
        smtp_port=smtp_port,
    )
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
        == {
            "traccar-positions",
            "traccar-events",
            "osmand-phone",
            "erp-vehicles",
            "erp-drivers",
            "fines-provider",
            "fine-payments",
            "checklists",
        }
    )
    assert first["erp-vehicles"].url == second["erp-vehicles"].url
    stale = await client.get(
        first["erp-vehicles"].url.split("8080")[-1] + "/ABC1D23",
        headers={"Authorization": f"Bearer {first['erp-vehicles'].token}"},
    )
    assert stale.status == 401
    vehicles = await (await client.get("/api/v1/entities/vehicle", headers=auth("demo"))).json()
    assert len(vehicles["items"]) == 3
    for resource, count in (("partners", 4), ("actions", 4), ("channels", 3), ("templates", 5)):
        listed = await (await client.get(f"/api/v1/{resource}", headers=auth("demo"))).json()
        assert len(listed["items"]) == count, resource
    flows = await (await client.get("/api/v1/flows", headers=auth("demo"))).json()
    assert sorted((f["name"], f["active_version"]) for f in flows["items"]) == [
        ("checklist-mileage-erp", 1),
        ("fine-email-driver", 1),
        ("fine-paid-erp", 1),
        ("geofence-exit-push", 1),
        ("maintenance-due-alert", 1),
    ]


async def test_the_demo_run_again_moves_its_partners_to_the_ports_asked_for(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """Seeded for other ports first, then again for where `gateway demo-partners` listens
    (`gateway demo --partners-port --smtp-port` on the same data): the partners, with their
    credentials (FCM's token URL names the port), and the e-mail channel follow, so the
    fine's e-mail and the geofence exit's push reach the stand-ins."""
    partners = DemoPartners(out=lambda line: None)
    server = TestServer(partners.app(), host="127.0.0.1")
    await server.start_server()
    smtp = await start_smtp(partners, "127.0.0.1", 0)
    assert smtp is not None
    try:
        client = await aiohttp_client(make_app())
        services = client.app[services_key]
        await _seed(services)  # 127.0.0.1:9, where nothing listens
        port = smtp.sockets[0].getsockname()[1]
        hooks = await _seed(services, str(server.make_url("")), port)
        for name, file in (
            ("fines-provider", "fine_feed.json"),
            ("traccar-events", "traccar_event_forward_geofence_exit.json"),
        ):
            response = await client.post(
                _path(hooks[name]),
                data=(SAMPLES / file).read_bytes(),
                headers={
                    "Authorization": f"Bearer {hooks[name].token}",
                    "Content-Type": "application/json",
                },
            )
            assert response.status in (200, 201), await response.text()
            await drain(services)
    finally:
        smtp.close()
        await server.close()
    got = {(r["partner"], r["path"].split("?")[0]) for r in partners.received}
    assert ("hr", "/hr/veiculos/ABC1D23/condutor-atual") in got
    assert ("smtp", "") in got
    assert ("fcm", "/fcm/v1/projects/rabbot-demo/messages:send") in got


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
    assert response.status == 201, await response.text()
    assert (await response.json())["vehicle"]["plate"] == "ABC1D23"

    query = (SAMPLES / "osmand_query.txt").read_text().strip()
    token = hooks["osmand-phone"].token
    response = await client.get(f"{path('osmand-phone')}?token={token}&{query}")
    assert response.status == 201, await response.text()  # its tracker id: ABC1D23 again

    fine = json.loads((SAMPLES / "fine_feed.json").read_text())
    response = await client.post(
        path("fines-provider"), json=fine, headers=bearer("fines-provider")
    )
    assert response.status == 201, await response.text()

    vehicle = await (
        await client.get(path("erp-vehicles") + "/ABC1D23", headers=bearer("erp-vehicles"))
    ).json()
    assert vehicle["plate"] == "ABC1D23"
    track = await (
        await client.get("/api/v1/entities/vehicle/ABC1D23/positions", headers=auth("demo"))
    ).json()
    assert [f["speed_kmh"] for f in track["items"]] == [24.3, 24.3]  # 13.1 knots, twice


def _readme_paragraphs(*wanted: str) -> str:
    """The "Try it" shell block's `P=` line and its paragraphs that name one of `wanted`, as
    a script."""
    block = README.read_text().split("from the repository:\n\n```sh\n", 1)[1]
    paragraphs = block.split("```", 1)[0].split("\n\n")
    chosen = [p for p in paragraphs[1:] if any(w in p for w in wanted)]
    assert paragraphs[0].startswith("P=") and len(chosen) == len(wanted), chosen
    return "\n\n".join([paragraphs[0], *chosen])


async def _run_readme(script: str, **env: str) -> list[Any]:
    """Run README shell lines with bash (curl), as a reader pastes them; the JSON answers they
    print, one after the other."""
    shell = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, cwd=ROOT, env={"PATH": os.environ["PATH"], **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await shell.communicate()
    assert shell.returncode == 0, err
    text, at, answers = out.decode(), 0, []
    decoder = json.JSONDecoder()
    while at < len(text.rstrip()):
        answer, at = decoder.raw_decode(text, at)
        answers.append(answer)
    return answers


async def test_the_readme_position_examples_give_fixes_that_count(client: Any) -> None:
    """README "Try it": the Traccar forward and the phone's OsmAnd query, run as written
    (bash, curl) against the demo's triggers. The samples carry fixed November dates, past the
    fold's 7-day horizon since: both fixes were refused `too_old`. Dated now, they count."""
    hooks = await _seed(client.app[services_key])
    env: dict[str, str] = {}
    for name in ("traccar-positions", "osmand-phone"):
        env[f"{_env_name(name)}_URL"] = str(client.make_url(_path(hooks[name])))
        env[f"{_env_name(name)}_TOKEN"] = hooks[name].token
    script = _readme_paragraphs("$TRACCAR_POSITIONS_URL", "$OSMAND_PHONE_URL")
    answers = await _run_readme(script, **env)
    assert [a["vehicle"]["plate"] for a in answers] == ["ABC1D23", "ABC1D23"], answers
    await client.app[services_key].fold.run_until_idle()
    track = await (
        await client.get("/api/v1/entities/vehicle/ABC1D23/positions", headers=auth("demo"))
    ).json()
    # (the two within one second are one fix: the second answer says `duplicate`)
    assert {f["rejected"] for f in track["items"]} == {None}, track
    vehicle = await (
        await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth("demo"))
    ).json()
    moved = datetime.fromisoformat(vehicle["last_position"]["time"])
    assert datetime.now(UTC) - moved < timedelta(minutes=5), vehicle


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
    aiohttp_client: Any, make_app: Callable[..., web.Application], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stand-in adds a record every 10 s after its start: a loaded machine's run read 13.
    monkeypatch.setattr("gateway.web.demo_partner.SECONDS_PER_RECORD", 3600.0)
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
    assert truck["last_position"]["time"] and truck["attributes"]["geotab_log_id"] == "bB"

    # README "Try it", Polling, run as written (its base URL made this server's): the runs
    # its comment promises, which the list of schedules does not hold.
    token = issue_admin_token(
        services.keyring, tenant="demo", role="admin", subject="t", ttl=timedelta(hours=1)
    )
    base = str(client.make_url("")).rstrip("/")
    script = _readme_paragraphs("# Polling").replace("http://127.0.0.1:8080", base)
    listed, runs, vehicle = await _run_readme(script, ADMIN_TOKEN=token)
    assert [s["id"] for s in listed["items"]] == [schedule["id"]]
    assert [(r["items_read"], r["written"]) for r in runs["items"]] == [(12, 12)]
    assert runs["items"][0]["cursor_after"] and vehicle["plate"] == "BRA2E19"


async def test_the_readme_seed_scenarios_reach_the_demo_partners(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """README's "The seed scenarios": the same payloads to the same demo triggers, with
    `gateway demo-partners` standing by; each partner gets what the README says, and its
    shell shows the line the README shows."""
    printed: list[str] = []
    partners = DemoPartners(out=printed.append)
    server = TestServer(partners.app(), host="127.0.0.1")
    await server.start_server()
    smtp = await start_smtp(partners, "127.0.0.1", 0)
    assert smtp is not None
    try:
        client = await aiohttp_client(make_app())
        services = client.app[services_key]
        port = smtp.sockets[0].getsockname()[1]
        hooks = await _seed(services, str(server.make_url("")).rstrip("/"), port)
        readme = README.read_text()
        sent = re.findall(r'\$(\w+)_TOKEN" \\\n.*--data @\$P/(\w+\.json) "\$(\w+)_URL"', readme)
        assert [(file, name) for _, file, name in sent] == [
            ("fine_feed.json", "FINES_PROVIDER"),
            ("fine_payment.json", "FINE_PAYMENTS"),
            ("checklist_completed.json", "CHECKLISTS"),
            ("traccar_event_forward_geofence_exit.json", "TRACCAR_EVENTS"),
        ]
        for _, file, name in sent:
            trigger = hooks[name.lower().replace("_", "-")]
            response = await client.post(
                _path(trigger),
                data=(SAMPLES / file).read_bytes(),
                headers={
                    "Authorization": f"Bearer {trigger.token}",
                    "Content-Type": "application/json",
                },
            )
            assert response.status in (200, 201), await response.text()
            await drain(services)  # each call in its turn, as a person pasting them
    finally:
        smtp.close()
        await server.close()

    got = {
        (r["partner"], r["method"], r["path"].split("?")[0]): r["body"] for r in partners.received
    }
    shown = re.search(r"\n(hr +GET .*)\n", readme)
    assert shown is not None and shown.group(1) in printed, printed
    mail = got[("smtp", "DATA", "")]
    assert mail["to"] == ["maria.souza@example.com"]
    assert mail["subject"] == "Multa A123456789 - ABC1D23"
    assert mail["text"].startswith("Olá Maria Souza,")
    assert ("hr", "GET", "/hr/veiculos/ABC1D23/condutor-atual") in got
    assert got[("erp", "PUT", "/multas/A123456789/pagamento")] == json.loads(
        (SAMPLES / "erp_fine_paid.json").read_text()
    )
    assert got[("erp", "POST", "/veiculos/quilometragem")] == json.loads(
        (SAMPLES / "erp_mileage_update.json").read_text()
    )
    push = got[("fcm", "POST", "/fcm/v1/projects/rabbot-demo/messages:send")]
    assert push["token"] == "demo-phone-of-maria"
    # The sample's exit of 20/11 is not the run's day: it says its day.
    assert push["notification"]["body"] == "ABC1D23 saiu de Garagem SP em 20/11 às 10:45"
    runs_path = re.search(r"http://127.0.0.1:8080(/api/v1/flows/fine-email-driver/runs)", readme)
    assert runs_path is not None
    runs = await (await client.get(runs_path.group(1), headers=auth("demo"))).json()
    assert [r["status"] for r in runs["items"]] == ["succeeded"]


async def test_the_fleet_page_scenario_1_recipe_pushes_the_exit_to_marias_phone_on_a_fresh_demo(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """docs/fleet.md "Geofences": the shell lines that show scenario 1 at once, run as written
    (bash, sed, curl) against a fresh demo's `traccar-positions` trigger with `gateway
    demo-partners` standing by: the exit is emitted and Maria Souza's phone gets its push.
    The recipe said to post two positions outside, and on a fresh demo nothing came: the
    first fix a fence sees sets the vehicle's state silently."""
    partners = DemoPartners(out=lambda _: None)
    server = TestServer(partners.app(), host="127.0.0.1")
    await server.start_server()
    try:
        client = await aiohttp_client(make_app())
        services = client.app[services_key]
        hooks = await _seed(services, str(server.make_url("")).rstrip("/"))
        await seed_fleet_rules(services.geofences, services.maintenance_plans, "demo")
        trigger = hooks["traccar-positions"]
        [recipe] = re.findall(r"```sh\n(traccar_at\(\) \{.*?)```", FLEET.read_text(), re.S)
        env = {"TRACCAR_POSITIONS_URL": str(client.make_url(_path(trigger)))}
        answers = await _run_readme(recipe, **env, TRACCAR_POSITIONS_TOKEN=trigger.token)
        assert [a["vehicle"]["plate"] for a in answers] == ["ABC1D23"] * 3, answers
        await services.fold.run_until_idle()
        await drain(services)
    finally:
        await server.close()
    [exited] = await services.events.find("demo", event_type="vehicle.geofence.exited")
    assert exited["detail"]["geofence"]["name"] == "Região da Paulista"
    assert exited["detail"]["position"] == {"lat": -23.5613, "lon": -46.64}
    [push] = [r["body"] for r in partners.received if r["partner"] == "fcm"]
    assert push["token"] == "demo-phone-of-maria"
    assert push["notification"]["body"].startswith("ABC1D23 saiu de Região da Paulista"), push


async def test_the_demo_erp_hears_a_fines_payments_in_order_after_an_outage(
    aiohttp_client: Any, make_app: Callable[..., web.Application], partner: Partner
) -> None:
    """The fine is marked paid while the ERP blinks (503 to the PUT and its immediate retry);
    its driver is recorded next, and that PUT is delivered at once. The demo's erp-fine-paid
    was not `ordered`: the first PUT's retry landed last, and the ERP's record of the payment
    ended without the driver."""
    client = await aiohttp_client(make_app())
    services = client.app[services_key]
    clock = FakeClock()
    services.delivery_worker.clock = clock
    services.delivery_worker.rng = lambda: 0.5
    await _seed(services, partner.url)
    await drain(services)
    partner.respond_with(200, {"ok": True})
    partner.respond_with(503, {"erro": "indisponivel"}, times=2)
    fine = "/api/v1/entities/other/fine:DETRAN-SP:SP123456789"
    for change in ({"status": "paid"}, {"driver_cpf": "52998224725"}):
        response = await client.patch(fine, json=change, headers=auth("demo"))
        assert response.status == 200, await response.text()
        await drain(services)
    clock.advance(3600)
    await drain(services)

    puts = [r.json() for r in partner.requests if r.method == "PUT"]
    assert [p.get("condutorCpf") for p in puts] == [None, None, None, "52998224725"]
