"""Every admin page, in a real browser, over odd data: names that are long, in Portuguese
and emoji and carry markup (`<script>`), entities with only their required fields, a
rejected call, a failed delivery, a flow run, a schedule, a custom kind. A crawler follows
every link under /admin from the menu: every page answers 200 (no 5xx, no broken link), no
script runs, every form control has a label, and every page of the route table is reached.
Keyboard use: the first Tab reaches "skip to content" and whatever has the focus is
outlined."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.ui.navigation import NAV
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
from tests.support import auth
from tests.test_ui_browser import FIXED_MAPPING, Ui, ui
from tests.ui_support import ALERT_FLOW, ALERT_TEMPLATE, POLLED_MAPPING, make_user

__all__ = ["partner", "ui"]  # the fixtures

EVIL = "<script>window.pwned=1</script><img src=x onerror=pwned=2>"
ODD = "São João — ônibus ⛽🚚 “x” " + EVIL
LONG = ("Caminhão Ribeirão Preto ⛽ " * 10)[:100]  # the longest name the API takes
NOT_CRAWLED = ("/admin/lang/", "/admin/static/", "/admin/login")
UNLABELLED = """() => [...document.querySelectorAll(
    'input:not([type=hidden]):not([type=submit]), select, textarea')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
    && !e.getAttribute('aria-labelledby'))
  .map(e => e.name || e.id || e.outerHTML.slice(0, 80))"""
DUPLICATE_IDS = """() => { const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  return ids.filter((id, i) => ids.indexOf(id) !== i); }"""


async def seed_odd_data(api: TestClient[Any, Any], partner: Partner) -> None:
    """One of everything, named oddly, with as few fields as the API takes (and an admin)."""
    services = api.app[services_key]
    await make_user(services)
    await upload_mapping(api, FIXED_MAPPING)
    await upload_mapping(api, FIXED_MAPPING.replace("[number]", "[number, {round: 0}]"))
    await upload_mapping(api, POLLED_MAPPING)
    trigger = await post(
        api, "/api/v1/triggers", {"name": ODD, "entity_type": "vehicle", "mapping": "fleet-feed"}
    )
    await post(api, "/api/v1/triggers", {"name": LONG, "entity_type": "driver"})
    hook = urlsplit(trigger["url"]).path
    rejected = await api.post(
        hook,
        json={"placa": EVIL, "km": "x" * 300},
        headers={"Authorization": f"Bearer {trigger['token']}"},
    )
    assert rejected.status == 422, await rejected.text()
    erp = await create_partner(api, partner.url, name=ODD)
    await create_action(api, erp["id"])  # `push`, the flow's call
    odd_action = await create_action(api, erp["id"], name=ODD, path="/x/{plate}")
    await create_subscription(api, odd_action["id"], ("entity.created",))
    reader = await create_action(
        api, erp["id"], name="frota", method="GET", path="/veiculos", mode="proxy"
    )
    schedule = {
        "name": ODD,
        "action_id": reader["id"],
        "every": "5m",
        "target": {"entity_type": "vehicle", "mapping": "frota-api"},
    }
    await post(api, "/api/v1/schedules", schedule)
    await email_channel(api, 1)  # nothing listens: the notification fails, and is listed
    await post(api, "/api/v1/templates", ALERT_TEMPLATE)
    await post(api, "/api/v1/flows", ALERT_FLOW)
    kind = {"name": "abastecimento", "schema": {"type": "object", "description": EVIL}}
    await post(api, "/api/v1/kinds", kind)
    await post(api, "/api/v1/entities/other", {"kind": "abastecimento", "key": ODD[:60]})
    partner.respond_with(500, {"erro": EVIL})
    await create_vehicle(api, "ABC1D23")  # the plate alone
    await create_vehicle(api, "XYZ9A87", model=ODD, group=ODD[:60])
    fence = {
        "name": ODD,
        "kind": "authorized",
        "circle": {"lat": -23.5, "lon": -46.6, "radius_m": 500},
    }
    await post(api, "/api/v1/geofences", fence)
    await post(api, "/api/v1/maintenance-plans", {"name": ODD, "every_km": 10000})
    await drain(services)


def _routes(ui: Ui) -> list[Any]:
    """The UI's GET pages (their resources), but the login, language and static files."""
    [admin] = [
        r._app for r in ui.api.app.router.resources() if isinstance(r, web.PrefixedSubAppResource)
    ]
    pages = []
    for route in admin.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        where = info.get("path") or info.get("formatter") or info.get("prefix", "")
        if route.method == "GET" and not (where + "/").startswith(NOT_CRAWLED):
            pages.append(route.resource)
    return pages


async def test_every_admin_page_renders_odd_data_as_text_with_labelled_controls(
    ui: Ui, partner: Partner
) -> None:
    await seed_odd_data(ui.api, partner)
    await ui.log_in()
    vehicles = await (await ui.api.get("/api/v1/entities/vehicle", headers=auth())).json()
    queue = ["/admin/", *(f"/admin{item.path}" for item in NAV)]
    queue += ["/admin/mappings/fleet-feed/diff?from=1&to=2"]  # a GET form, not a link
    queue += [f"/admin/entities/vehicle/{v['id']}" for v in vehicles["items"]]
    seen: set[str] = set()
    unlabelled: dict[str, list[str]] = {}
    while queue and len(seen) < 250:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        response = await ui.page.goto(ui.url(path))
        assert response is not None and response.status == 200, (path, response and response.status)
        assert "/admin/login" not in ui.page.url, path  # still signed in: a page was shown
        assert await ui.page.evaluate("window.pwned") is None, path
        if missing := await ui.page.evaluate(UNLABELLED):
            unlabelled[path] = missing
        if twice := await ui.page.evaluate(DUPLICATE_IDS):  # a label would find the first
            unlabelled[path] = [f"id {i} twice" for i in twice]
        for href in await ui.page.eval_on_selector_all(
            "a[href]", "as => as.map(a => a.getAttribute('href'))"
        ):
            target = href.split("#")[0]
            if target.startswith("/admin/") and not target.startswith(NOT_CRAWLED):
                if target not in seen and "cursor=" not in target:
                    queue.append(target)
    assert unlabelled == {}, "form controls without a label"
    assert len(seen) > 60  # the crawl went through the seeded data
    paths = {urlsplit(p).path for p in seen}
    unreached = [
        r.canonical for r in _routes(ui) if not any(r._match(p) is not None for p in paths)
    ]
    assert unreached == [], "pages no link leads to (or not seeded)"
    # The odd names were shown, as text.
    await ui.goto("/admin/triggers")
    assert EVIL in await ui.page.inner_text("main")
    await ui.shot("every-page-odd-names")


async def test_keyboard_only_skips_to_the_content_and_the_focus_is_outlined(ui: Ui) -> None:
    await make_user(ui.services)
    await ui.log_in()
    await ui.goto("/admin/triggers/new")
    await ui.page.keyboard.press("Tab")
    focused = await ui.page.evaluate("document.activeElement.textContent")
    assert focused.strip() == "Ir para o conteúdo"
    assert (
        await ui.page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    )
    await ui.page.keyboard.press("Enter")
    assert await ui.page.evaluate("document.activeElement.id") == "main"
    await ui.page.keyboard.press("Tab")
    assert await ui.page.evaluate("document.activeElement.id") == "f-name"  # the form's first
    outline = await ui.page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    # The whole form is filled and sent from the keyboard.
    await ui.page.keyboard.type("Rastreador teclado")
    await ui.page.keyboard.press("Tab")  # the target: entities, as it is
    await ui.page.keyboard.press("Tab")
    assert await ui.page.evaluate("document.activeElement.id") == "f-entity_type"
    await ui.page.keyboard.press("v")  # a select follows the key typed
    assert await ui.page.input_value("#f-entity_type") == "vehicle"
    await ui.page.keyboard.press("Shift+Tab")
    await ui.page.keyboard.press("Shift+Tab")
    assert await ui.page.evaluate("document.activeElement.id") == "f-name"
    await ui.page.keyboard.press("Enter")  # a text field's Enter sends its form
    await ui.page.get_by_test_id("issued").wait_for()
    [trigger] = await ui.services.triggers.list("acme", after=None, limit=5)
    assert trigger["name"] == "Rastreador teclado"


async def test_an_empty_list_says_what_to_do_next(ui: Ui) -> None:
    """A new tenant's admin sees, on each empty list, what fills it and how (in English too)."""
    await make_user(ui.services)
    await ui.log_in()
    lists = {
        "/admin/triggers": "Novo gatilho",
        "/admin/rejected": "corrigir o mapeamento",
        "/admin/mappings": "pré-visualize",
        "/admin/schedules": "ação GET",
        "/admin/partners": "credenciais",
        "/admin/actions": "Registre antes um parceiro",
        "/admin/subscriptions": "tipos de evento",
        "/admin/deliveries": "evento assinado",
        "/admin/deliveries?status=dead": "Limpe-os",
        "/admin/flows": "YAML ou JSON",
        "/admin/channels": "mensagem de teste",
        "/admin/templates": "tipo de canal",
        "/admin/entities/vehicle": "pelos gatilhos",
        "/admin/entities/vehicle?plate=ABC1D23": "limpe a busca",
        "/admin/kinds": "esquema JSON",
        "/admin/geofences": "Nova cerca",
        "/admin/maintenance-plans": "Novo plano",
    }
    for path, words in lists.items():
        await ui.goto(path)
        assert words in await ui.page.inner_text("[data-testid=empty]"), path
    await ui.page.get_by_role("link", name="English").click()
    await ui.goto("/admin/triggers")
    assert "New trigger" in await ui.page.inner_text("[data-testid=empty]")
