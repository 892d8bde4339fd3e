"""The admin UI in a real browser (Debian's Chromium, headless, driven by Playwright): the
core flows an admin runs, with screenshots of the main pages saved under artifacts/ui/.

Each test gets a fresh app on a real port and its own browser context; the browser is one per
session (`browser` in conftest.py). A page that breaks the CSP (an inline script or style)
shows up as a console error, and every test fails on one.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.entities import Origin
from gateway.services import Services
from gateway.web.state import services_key
from tests.flow_support import drain, email_channel
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
    post,
    upload_mapping,
)
from tests.smtp_double import SmtpFactory, smtp_server
from tests.support import auth
from tests.ui_support import (
    ALERT_FLOW,
    ALERT_TEMPLATE,
    PASSWORD,
    POLLED_MAPPING,
    guarded_run,
    make_user,
)

__all__ = ["partner", "smtp_server"]  # the fixtures

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "ui"
BROKEN_MAPPING = """\
name: fleet-feed
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, transforms: [nonsense]}
  odometer_km: {from: km, transforms: [number]}
"""
FIXED_MAPPING = BROKEN_MAPPING.replace("transforms: [nonsense]", "transforms: [upper]")


@dataclass
class Ui:
    """The app under test on a real port, an API client on the same server, and a page."""

    server: TestServer
    api: TestClient[Any, Any]
    page: Any
    console_errors: list[str]

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    @property
    def services(self) -> Services:
        return self.api.app[services_key]

    async def goto(self, path: str) -> None:
        await self.page.goto(self.url(path))

    async def log_in(self, tenant: str = "acme", email: str = "ana@acme.com.br") -> None:
        await self.goto("/admin/")
        form = self.page.get_by_test_id("password-login")
        await form.locator("input[name=tenant]").fill(tenant)
        await form.locator("input[name=email]").fill(email)
        await form.locator("input[name=password]").fill(PASSWORD)
        await form.locator("button").click()
        await self.page.wait_for_url(self.url("/admin/"))

    async def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _unexpected(message: Any) -> bool:
    """A console error, except a page the test meant to get refused (a 4xx document: the
    form answered 422, the stranger's id 404)."""
    refused = re.search(r"status of 4\d\d", message.text)
    return message.type == "error" and not refused


@pytest.fixture
async def ui(
    browser: Any,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    make_app: Callable[..., web.Application],
) -> AsyncIterator[Ui]:
    server = await aiohttp_server(make_app())
    api = await aiohttp_client(server)
    context = await browser.new_context(locale="pt-BR", viewport={"width": 1280, "height": 900})
    await context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=str(server.make_url("")).rstrip("/")
    )
    page = await context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if _unexpected(m) else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    yield Ui(server, api, page, errors)
    await context.close()
    assert errors == [], "the browser reported errors (CSP violations, script errors)"


async def test_an_admin_logs_in_creates_a_trigger_and_copies_its_token(ui: Ui) -> None:
    await make_user(ui.services)
    await ui.log_in()
    await ui.shot("dashboard")
    await ui.page.get_by_role("link", name="Gatilhos", exact=True).click()
    await ui.page.get_by_role("link", name="Novo gatilho").click()
    await ui.page.fill("#f-name", "Rastreador da frota")
    await ui.page.select_option("#f-entity_type", "vehicle")
    await ui.page.get_by_role("button", name="Criar").click()
    issued = ui.page.get_by_test_id("issued")
    await issued.wait_for()
    await ui.shot("trigger-issued")
    token = (await ui.page.inner_text("#trigger-token")).strip()
    await issued.get_by_role("button", name="Copiar").nth(1).click()
    await ui.page.get_by_role("button", name="Copiado!").wait_for()
    assert await ui.page.evaluate("navigator.clipboard.readText()") == token
    curl = await ui.page.inner_text("#trigger-curl")
    assert f"Authorization: Bearer {token}" in curl
    # The token works: the partner writes through the trigger.
    url = await ui.page.inner_text("#trigger-url")
    trigger_path = url[url.index("/hooks/") :]
    written = await ui.api.post(
        trigger_path, json={"plate": "ABC1D23"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert written.status == 201
    await ui.goto("/admin/triggers")
    assert await ui.page.get_by_role("link", name="Rastreador da frota").count() == 1
    await ui.shot("triggers")
    await ui.page.get_by_role("link", name="Rastreador da frota").click()
    await ui.page.get_by_role("link", name="Alterar").click()
    await ui.page.fill("#f-rate_limit\\.per_second", "5")
    await ui.page.get_by_role("button", name="Salvar").click()
    await ui.page.locator(".flash").wait_for()
    assert "5/s" in await ui.page.inner_text("dl.facts")
    await ui.page.get_by_role("link", name="Alterar").click()
    assert await ui.page.input_value("#f-rate_limit\\.per_second") == "5"
    await ui.shot("trigger-edit")


async def test_missing_and_invalid_fields_are_shown_next_to_them_and_kept(ui: Ui) -> None:
    await make_user(ui.services)
    await ui.log_in()
    await ui.goto("/admin/triggers/new")
    await ui.page.fill("#f-kind", "Not A Kind!")
    await ui.page.select_option("#f-entity_type", "other")
    await ui.page.get_by_role("button", name="Criar").click()
    name_error = ui.page.locator(".field-error[data-field=name]")
    await name_error.wait_for()
    assert "Obrigatório" in await name_error.inner_text()
    assert await ui.page.locator(".field-error[data-field=kind]").count() == 1
    assert await ui.page.input_value("#f-kind") == "Not A Kind!"
    assert await ui.page.input_value("#f-entity_type") == "other"
    assert await ui.services.triggers.list("acme", after=None, limit=5) == []
    await ui.shot("trigger-form-errors")


async def test_a_broken_mapping_shows_its_problems_then_the_fix_uploads_and_dry_runs(
    ui: Ui,
) -> None:
    await make_user(ui.services)
    await create_vehicle(ui.api, "ABC1D23", odometer_km=1000)
    await ui.log_in()
    await ui.goto("/admin/mappings")
    upload = ui.page.get_by_test_id("upload")
    await upload.locator("input[type=file]").set_input_files(
        {
            "name": "fleet-feed.yaml",
            "mimeType": "application/yaml",
            "buffer": BROKEN_MAPPING.encode(),
        }
    )
    await upload.get_by_role("button", name="Enviar").click()
    problems = ui.page.get_by_test_id("upload-problems")
    await problems.wait_for()
    assert "linha 6" in await problems.inner_text()
    assert await ui.page.locator("pre.source span.line.bad[data-line='6']").count() == 1
    await ui.shot("mapping-problems")
    assert await ui.services.mappings.find("acme", after=None, limit=5) == []
    # The file's text is in the box: fix it there and upload again.
    await ui.page.fill("#f-source", FIXED_MAPPING)
    await ui.page.get_by_test_id("upload").get_by_role("button", name="Enviar").click()
    await ui.page.wait_for_url(ui.url("/admin/mappings/fleet-feed"))
    assert "Nova versão guardada" in await ui.page.inner_text(".flash")
    await ui.page.fill("#f-payload", '{"placa": "abc1d23", "km": "1234.5"}')
    await ui.page.get_by_test_id("dry-run").get_by_role("button", name="Testar").click()
    result = ui.page.get_by_test_id("dry-run-result")
    await result.wait_for()
    text = await result.inner_text()
    assert "Atualizaria o cadastro" in text and "1234.5" in text and "1000" in text
    assert await ui.page.input_value("#f-payload") == '{"placa": "abc1d23", "km": "1234.5"}'
    await ui.shot("mapping-dry-run")
    stored = await ui.services.entities.get("acme", "vehicle", "ABC1D23")
    assert stored["data"]["odometer_km"] == 1000  # a dry run writes nothing


async def test_a_failed_delivery_is_replayed_from_its_timeline(ui: Ui, partner: Partner) -> None:
    await make_user(ui.services)
    partner_doc = await create_partner(ui.api, partner.url)
    action = await create_action(ui.api, partner_doc["id"])
    await create_subscription(ui.api, action["id"], ("entity.created",))
    partner.respond_with(400, {"error": "placa desconhecida"})
    await create_vehicle(ui.api, "ABC1D23")
    await ui.services.relay.run_until_idle()
    await ui.services.delivery_worker.run_until_idle()
    await ui.log_in()
    assert await ui.page.inner_text("[data-testid=failed-count] strong") == "1"
    await ui.page.get_by_test_id("failed-count").click()
    await ui.page.locator("#deliveries tbody a").first.click()
    timeline = ui.page.get_by_test_id("timeline")
    await timeline.wait_for()
    assert "400" in await timeline.inner_text()
    await ui.shot("delivery-timeline")
    partner.respond_with(200, {})
    await ui.page.get_by_role("button", name="Reenviar").click()
    await ui.page.locator(".flash").wait_for()
    assert "pendente" in await ui.page.inner_text("h1")
    await ui.services.delivery_worker.run_until_idle()
    await ui.page.reload()
    assert "entregue" in await ui.page.inner_text("h1")
    assert len(partner.requests) == 2


async def test_the_language_follows_the_browser_and_the_switch(ui: Ui) -> None:
    await make_user(ui.services)
    await ui.log_in()
    assert await ui.page.get_attribute("html", "lang") == "pt-BR"
    await ui.page.get_by_role("link", name="English").click()
    await ui.page.get_by_role("heading", name="Dashboard").wait_for()
    await ui.page.get_by_role("link", name="Deliveries", exact=True).click()
    await ui.page.get_by_role("heading", name="Deliveries").wait_for()
    assert await ui.page.get_attribute("html", "lang") == "en"
    await ui.shot("deliveries-en")
    await ui.page.get_by_role("link", name="Português").click()
    await ui.page.get_by_role("heading", name="Entregas").wait_for()


async def test_a_second_tenants_admin_sees_none_of_the_first_tenants_data(ui: Ui) -> None:
    trigger = await ui.services.triggers.create("acme", name="acme gps", entity_type="vehicle")
    await create_vehicle(ui.api, "ABC1D23", make="Volvo")
    await ui.services.mappings.upload("acme", FIXED_MAPPING, author="t")
    await make_user(ui.services, tenant="globex", email="gil@globex.com")
    await ui.log_in("globex", "gil@globex.com")
    for path in ("/admin/triggers", "/admin/mappings", "/admin/entities/vehicle"):
        await ui.goto(path)
        body = await ui.page.inner_text("main")
        assert "acme gps" not in body and "ABC1D23" not in body and "fleet-feed" not in body
    response = await ui.page.goto(ui.url(f"/admin/triggers/{trigger.trigger['id']}"))
    assert response.status == 404
    await ui.shot("stranger-not-found")


async def test_markup_and_scripts_in_names_and_payloads_are_shown_as_text(ui: Ui) -> None:
    evil = '<script>window.pwned = 1</script><img src=x onerror="window.pwned=2"><b>bold</b>'
    await make_user(ui.services)
    await ui.services.triggers.create("acme", name=evil[:100], entity_type="vehicle")
    await ui.services.entities.create(
        "acme", "vehicle", {"plate": "ABC1D23", "model": evil}, Origin("admin", "t")
    )
    await ui.log_in()
    await ui.goto("/admin/triggers")
    assert "<script>window.pwned = 1</script>" in await ui.page.inner_text("#triggers")
    vehicles = await ui.api.get("/api/v1/entities/vehicle", headers=auth())
    vehicle_id = (await vehicles.json())["items"][0]["id"]
    await ui.goto(f"/admin/entities/vehicle/{vehicle_id}")
    assert 'onerror=\\"window.pwned=2\\"' in await ui.page.inner_text("main")
    assert await ui.page.evaluate("window.pwned") is None
    assert await ui.page.locator("main b").count() == 0
    await ui.shot("vehicle-escaped")


async def test_an_admin_schedules_a_partner_feed_runs_it_now_and_sees_the_run(
    ui: Ui, partner: Partner
) -> None:
    await make_user(ui.services)
    await upload_mapping(ui.api, POLLED_MAPPING)
    erp = await create_partner(ui.api, partner.url)
    await create_action(ui.api, erp["id"], name="frota", method="GET", path="/veiculos")
    partner.respond_with(200, {"veiculos": [], "next": "c2"})
    partner.respond_with(
        200, {"veiculos": [{"placa": "abc1d23", "km": "815"}], "next": "c2"}, times=1
    )
    await ui.log_in()
    await ui.page.get_by_role("link", name="Agendamentos", exact=True).click()
    await ui.page.get_by_role("link", name="Novo agendamento").click()
    await ui.page.fill("#f-name", "Frota do ERP")
    await ui.page.select_option("#f-action_id", label="frota (GET /veiculos)")
    await ui.page.fill("#f-every", "1h")
    await ui.page.select_option("#f-target\\.entity_type", "vehicle")
    await ui.page.select_option("#f-target\\.mapping", "frota-api")
    await ui.page.fill("#f-cursor\\.from", "next")
    await ui.page.fill("#f-cursor\\.param", "query.after")
    await ui.shot("schedule-form")
    await ui.page.get_by_role("button", name="Criar").click()
    await ui.page.locator(".flash").wait_for()
    assert "primeira leitura" in await ui.page.inner_text(".flash")
    await ui.page.get_by_role("button", name="Ler agora").click()
    await ui.page.locator(".flash").wait_for()
    assert await ui.services.schedule_runner.run_until_idle() == {"ok": 1}
    await ui.page.reload()
    runs = ui.page.get_by_test_id("schedule-runs")
    await runs.wait_for()
    cells = await runs.locator("tbody tr").first.locator("td").all_inner_texts()
    assert cells[1:7] == ["ok", "2", "1", "1", "0", "0"]  # pages, read, written, rejected, skipped
    assert cells[7] == "— → c2"
    assert "c2" in await ui.page.get_by_test_id("schedule-state").inner_text()
    await ui.shot("schedule-runs")
    await ui.goto("/admin/schedules")
    assert await ui.page.get_by_role("link", name="Frota do ERP").count() == 1
    await ui.shot("schedules")
    stored = await ui.services.entities.get("acme", "vehicle", "ABC1D23")
    assert stored["data"]["odometer_km"] == 815


async def test_an_admin_resets_a_schedule_and_its_next_call_starts_from_the_beginning(
    ui: Ui, partner: Partner
) -> None:
    """A partner that reset its feed: the schedule's Reiniciar leitura (confirmed, sent with
    the page's CSRF token) forgets the cursor and makes the schedule due at once; the next
    call carries no cursor, as `POST /api/v1/schedules/{id}/reset` does."""
    await make_user(ui.services)
    await upload_mapping(ui.api, POLLED_MAPPING)
    erp = await create_partner(ui.api, partner.url, timeout_seconds=10)  # a loaded machine
    action = await create_action(ui.api, erp["id"], name="frota", method="GET", path="/veiculos")
    partner.respond_with(200, {"veiculos": [], "next": "c2"})
    schedule = await post(
        ui.api,
        "/api/v1/schedules",
        {
            "name": "Frota do ERP",
            "action_id": action["id"],
            "every": "1h",
            "target": {"entity_type": "vehicle", "mapping": "frota-api"},
            "cursor": {"from": "next", "param": "query.after"},
        },
    )
    ran = await ui.services.schedule_runner.run_until_idle()
    assert ran == {"ok": 1}, await ui.services.schedules.get("acme", schedule["id"])
    await ui.log_in()
    await ui.goto(f"/admin/schedules/{schedule['id']}")
    state = ui.page.get_by_test_id("schedule-state")
    assert "c2" in await state.inner_text()
    reset = ui.page.locator(f"form[action='/admin/schedules/{schedule['id']}/reset']")
    assert await reset.locator("input[name=csrf]").get_attribute("value")
    await reset.get_by_role("button", name="Reiniciar leitura").click()  # the dialog accepted
    await ui.page.locator(".flash").wait_for()
    assert "cursor inicial" in await ui.page.inner_text(".flash")
    assert "c2" not in await state.inner_text()
    await ui.shot("schedule-reset")
    ran = await ui.services.schedule_runner.run_until_idle()
    assert ran == {"ok": 1}, await ui.services.schedules.get("acme", schedule["id"])
    assert [r.query.get("after") for r in partner.requests] == [None, None]


async def test_a_flow_runs_steps_lead_to_the_message_it_sent_and_the_channel_tests(
    ui: Ui, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await make_user(ui.services)
    erp = await create_partner(ui.api, partner.url)
    await create_action(ui.api, erp["id"])
    await email_channel(ui.api, smtp.port)
    await post(ui.api, "/api/v1/templates", ALERT_TEMPLATE)
    await post(ui.api, "/api/v1/flows", ALERT_FLOW)
    await create_vehicle(ui.api, "ABC1D23", model="<i>FH</i>")
    await drain(ui.services)
    await ui.log_in()
    await ui.goto("/admin/flows/alerta-frota")
    await ui.page.get_by_test_id("flow-runs-link").click()
    await ui.page.locator("#flow-runs tbody a").first.click()
    steps = ui.page.get_by_test_id("run-steps")
    await steps.wait_for()
    assert (await steps.locator(":scope > li").count()) == 2
    await ui.shot("flow-run")
    await steps.locator("li[data-step=aviso]").get_by_test_id("step-delivery").click()
    subject = ui.page.get_by_test_id("message-subject")
    await subject.wait_for()
    assert await subject.inner_text() == "Novo veículo ABC1D23: <i>FH</i>"
    assert "entregue" in await ui.page.inner_text("h1")
    await ui.shot("notification-delivery")
    await ui.goto("/admin/channels/email")
    test = ui.page.get_by_test_id("channel-test")
    await test.locator("input[name=to]").fill("ana@example.com.br")
    await test.get_by_role("button", name="Enviar agora").click()
    outcome = ui.page.get_by_test_id("test-outcome")
    await outcome.wait_for()
    assert "enviada" in await outcome.inner_text()
    assert [m.recipients for m in smtp.received] == [["frota@acme.com.br"], ["ana@example.com.br"]]
    await ui.shot("channel-test")
    await ui.page.get_by_role("link", name="Avisos", exact=True).click()
    await ui.page.get_by_test_id("settings-form").wait_for()
    await ui.shot("notification-settings")


async def test_a_runs_skipped_step_is_drawn_below_the_step_before_it(ui: Ui) -> None:
    """Every step of the timeline in its own place: a skipped step (styled like the skip link
    once) is not drawn over the step before it."""
    run = await guarded_run(ui.api)
    await make_user(ui.services)
    await ui.log_in()
    await ui.goto(f"/admin/flow-runs/{run['id']}")
    heading = await ui.page.get_by_role("heading", name="Passos").bounding_box()
    steps = ui.page.get_by_test_id("run-steps").locator(":scope > li")
    boxes = [await steps.nth(i).bounding_box() for i in range(await steps.count())]
    assert len(boxes) == 3
    assert heading["y"] + heading["height"] <= boxes[0]["y"]
    for above, below in itertools.pairwise(boxes):
        assert above["y"] + above["height"] <= below["y"], (above, below)
        assert above["x"] == below["x"]
    await ui.shot("flow-run-skipped-step")


async def test_an_admin_pauses_a_flow_and_resumes_it_and_the_held_run_sends(
    ui: Ui, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await make_user(ui.services)
    erp = await create_partner(ui.api, partner.url)
    await create_action(ui.api, erp["id"])
    await email_channel(ui.api, smtp.port)
    await post(ui.api, "/api/v1/templates", ALERT_TEMPLATE)
    await post(ui.api, "/api/v1/flows", ALERT_FLOW)
    await ui.log_in()
    await ui.goto("/admin/flows/alerta-frota")
    pause = ui.page.get_by_test_id("flow-pause")
    await pause.locator("input[name=reason]").fill("ERP em manutenção")
    await pause.get_by_role("button", name="Pausar").click()
    paused = ui.page.get_by_test_id("flow-paused")
    await paused.wait_for()
    assert "ERP em manutenção" in await paused.inner_text()
    await create_vehicle(ui.api, "ABC1D23", model="FH")
    await drain(ui.services)
    assert smtp.received == [] and partner.requests == []
    await ui.page.reload()
    assert "Execuções retidas: 1" in await ui.page.get_by_test_id("flow-paused").inner_text()
    await ui.shot("flow-paused")
    await ui.page.get_by_test_id("flow-resume").get_by_role("button").click()
    await ui.page.get_by_test_id("flow-pause").wait_for()
    await drain(ui.services)
    assert [m.recipients for m in smtp.received] == [["frota@acme.com.br"]]
    assert len(partner.requests) == 1


async def test_an_admin_draws_a_geofence_and_sees_it_over_a_vehicles_track(ui: Ui) -> None:
    await make_user(ui.services)
    vehicle = await create_vehicle(ui.api)
    trigger = await post(
        ui.api, "/api/v1/triggers", {"name": "gps", "target": "positions", "methods": ["POST"]}
    )
    fixes = [
        {
            "plate": vehicle["plate"],
            "time": f"2026-12-01T12:0{m}:00Z",
            "lat": -23.55 + m * 1e-3,
            "lon": -46.63,
        }
        for m in range(6)
    ]
    sent = await ui.api.post(
        f"/hooks/{trigger['id']}",
        json=fixes,
        headers={"Authorization": f"Bearer {trigger['token']}"},
    )
    assert sent.status in (200, 201, 207), await sent.text()
    await ui.log_in()
    await ui.page.get_by_role("link", name="Cercas virtuais", exact=True).click()
    await ui.page.get_by_role("link", name="Nova cerca").click()
    await ui.page.fill("#f-name", "Garagem SP")
    await ui.page.fill("#f-circle\\.lat", "-23,552")
    await ui.page.fill("#f-circle\\.lon", "-46.63")
    await ui.page.fill("#f-circle\\.radius_m", "400")
    await ui.page.get_by_role("button", name="Criar").click()
    await ui.page.locator(".flash").wait_for()
    assert await ui.page.locator("svg.map circle.fence-authorized").count() == 1
    await ui.goto("/admin/geofences")
    assert await ui.page.locator("svg.map polyline.track").count() == 1
    await ui.shot("geofences")
    await ui.goto(f"/admin/entities/vehicle/{vehicle['id']}")
    fences = ui.page.get_by_test_id("vehicle-fences")
    assert "Garagem SP" in await fences.inner_text()
    assert await ui.page.locator("svg.map polyline.track").count() == 1
    await ui.shot("vehicle")


async def test_an_admin_adds_a_soap_body_fixes_its_template_error_and_sees_it_as_text(
    ui: Ui, partner: Partner
) -> None:
    await make_user(ui.services)
    erp = await create_partner(ui.api, partner.url, timeout_seconds=10)
    action = await create_action(
        ui.api, erp["id"], name="multa-paga", mode="proxy", path="/ws/multas"
    )
    envelope = (
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">\n'
        "  <soapenv:Body>\n"
        '    <informarPagamento><ait>{{ body.ait }}</ait><img src="x" onerror="window.pwned=1"/>'
        "</informarPagamento>\n"
        "  </soapenv:Body>\n"
        "</soapenv:Envelope>"
    )
    await ui.log_in()
    await ui.page.get_by_role("link", name="Ações", exact=True).click()
    await ui.page.get_by_role("link", name="multa-paga").click()
    await ui.page.get_by_role("link", name="Alterar").click()
    await ui.page.fill(
        "#f-xml_body\\.template", envelope.replace("{{ body.ait }}", "{{ body.ait }")
    )
    await ui.page.select_option("#f-xml_body\\.soap", "1.1")
    await ui.page.fill("#f-xml_body\\.soap_action", "urn:erp:multas/informar")
    await ui.page.fill("#f-xml_body\\.sample", '{"body": {"ait": "A123456789"}}')
    await ui.page.get_by_role("button", name="Salvar").click()
    error = ui.page.locator(".field-error[data-field='xml_body.template']")
    await error.wait_for()
    assert "linha 3" in await error.inner_text()
    assert await ui.page.get_attribute("#f-xml_body\\.template", "aria-invalid") == "true"
    assert await ui.page.input_value("#f-xml_body\\.soap") == "1.1"
    await ui.shot("action-xml-body-error")
    await ui.page.fill("#f-xml_body\\.template", envelope)
    await ui.page.get_by_role("button", name="Salvar").click()
    await ui.page.locator(".flash").wait_for()
    section = ui.page.get_by_test_id("xml-body")
    assert "SOAP 1.1" in await section.inner_text()
    assert await ui.page.inner_text("#xml-template") == envelope
    assert await ui.page.evaluate("window.pwned") is None
    assert await ui.page.locator("main img").count() == 0
    await ui.shot("action-xml-body")
    # What the page saved is what the partner gets: a SOAP 1.1 call, the value escaped.
    partner.respond_with(200, {})
    invoked = await ui.api.post(
        f"/api/v1/actions/{action['id']}/invoke",
        headers=auth(),
        json={"payload": {"ait": "<A1>"}},
    )
    assert invoked.status == 200, await invoked.text()
    (sent,) = partner.requests
    assert sent.headers["SOAPAction"] == '"urn:erp:multas/informar"'
    assert b"<ait>&lt;A1&gt;</ait>" in sent.body


async def test_an_admin_adds_a_user_gives_them_another_role_and_removes_them(ui: Ui) -> None:
    await make_user(ui.services)
    await ui.log_in()
    await ui.page.get_by_role("link", name="Usuários").click()
    await ui.page.fill("#f-email", "vera@acme.com.br")
    await ui.page.select_option("#f-role", "viewer")
    await ui.page.fill("#f-password", PASSWORD)
    await ui.page.get_by_role("button", name="Criar").click()
    await ui.page.locator(".flash").wait_for()
    row = ui.page.locator("#users tbody tr", has_text="vera@acme.com.br")
    assert "leitor" in await row.inner_text()
    await row.locator("select[name=role]").select_option("admin")
    await row.get_by_role("button", name="Mudar papel").click()
    await ui.page.locator(".flash").wait_for()
    users = {u["email"]: u["role"] for u in await ui.services.accounts.users("acme")}
    assert users["vera@acme.com.br"] == "admin"
    await ui.shot("users")
    row = ui.page.locator("#users tbody tr", has_text="vera@acme.com.br")
    await row.get_by_role("button", name="Remover").click()  # the confirmation is accepted
    await ui.page.locator(".flash").wait_for()
    assert await ui.page.locator("#users tbody tr", has_text="vera@acme.com.br").count() == 0
    assert "vera@acme.com.br" not in {u["email"] for u in await ui.services.accounts.users("acme")}


async def test_users_with_accented_or_idn_emails_log_in_from_the_browser(ui: Ui) -> None:
    """Whoever created the account (the Users page in a browser, which may send the domain in
    ASCII, or the command line, which takes it as typed), its e-mail is stored in one form and
    the login form sends what it takes: an accented local part is not blocked by the browser."""
    await make_user(ui.services)
    await ui.services.accounts.create_user("acme", "Bia@AÇAO.com.br", "viewer", PASSWORD)
    await ui.log_in()
    await ui.goto("/admin/users")
    await ui.page.fill("#f-email", "maria.joão@açao.com.br")
    await ui.page.select_option("#f-role", "viewer")
    await ui.page.fill("#f-password", PASSWORD)
    await ui.page.get_by_role("button", name="Criar").click()
    await ui.page.locator(".flash").wait_for()
    stored = {u["email"] for u in await ui.services.accounts.users("acme")}
    assert {"bia@xn--aao-2la.com.br", "maria.joão@xn--aao-2la.com.br"} <= stored
    for typed in ("maria.joão@açao.com.br", "bia@açao.com.br", "BIA@xn--aao-2la.com.br"):
        await ui.page.context.clear_cookies()
        await ui.log_in(email=typed)
