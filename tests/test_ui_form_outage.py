"""Every create and edit form of the admin UI saved while the database is busy or unavailable
(its writes failing: MongoDB's `failCommand` on the gateway's own connections) answers `503`
with the form shown again, what the admin typed kept in its fields, its secrets never written
back (asked for again), a message that nothing was saved, and `Retry-After`; saved again once
the database answers, it is saved (docs/admin-ui.md, "A form refused"). A form whose one-time
id cannot even be claimed keeps what was typed too, with **Save it**."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from pymongo import AsyncMongoClient

from gateway.services import Services
from tests.partner_double import (
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    post,
    upload_mapping,
)
from tests.test_ui_channel_secrets import _channel_doc
from tests.ui_support import (
    ALERT_FLOW,
    ALERT_TEMPLATE,
    POLLED_MAPPING,
    Client,
    form_fields,
    log_in,
    make_user,
)

WRITES = ["insert", "update", "delete", "findAndModify", "bulkWrite"]
OUT_OF_DISK = {"errorCode": 14031}  # the server answers every write with a failure
SAVED_AGAIN = "Nada foi salvo: o banco de dados está ocupado ou indisponível"
MAPPING = """\
name: erp-km
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, transforms: [upper]}
"""


@pytest.fixture
async def client(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> Client:
    app: Client = await aiohttp_client(make_app(db_timeout_ms=1000))
    return app


@pytest.fixture
async def failing(mongodb_uri: str) -> AsyncIterator[Callable[[], Any]]:
    """`failing()`: a context in which every write of the gateway fails on the server (or
    those `commands` only)."""
    admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, appname="faults")

    @contextlib.asynccontextmanager
    async def writes_fail(commands: list[str] = WRITES) -> AsyncIterator[None]:
        data = {"failCommands": commands, "appName": "rabbot-gateway", **OUT_OF_DISK}
        await admin.admin.command("configureFailPoint", "failCommand", mode="alwaysOn", data=data)
        try:
            yield
        finally:
            await admin.admin.command("configureFailPoint", "failCommand", mode="off")

    try:
        yield writes_fail
    finally:
        await admin.admin.command("configureFailPoint", "failCommand", mode="off")
        await admin.close()


@dataclass
class Made:
    """What the forms edit, made through the API before any fault."""

    ids: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.ids[name]


async def _made(client: Client, services: Services) -> Made:
    made = Made()
    await upload_mapping(client, POLLED_MAPPING)
    body = {"name": "gps", "entity_type": "vehicle", "methods": ["POST"]}
    made.ids["trigger"] = (await post(client, "/api/v1/triggers", body))["id"]
    erp = await create_partner(client, "http://127.0.0.1:9")
    made.ids["partner"] = erp["id"]
    made.ids["action"] = (await create_action(client, erp["id"]))["id"]
    reader = await create_action(
        client, erp["id"], name="frota", method="GET", path="/veiculos", mode="proxy"
    )
    made.ids["reader"] = reader["id"]
    made.ids["subscription"] = (await create_subscription(client, made["action"]))["id"]
    schedule = {
        "name": "leitura",
        "action_id": reader["id"],
        "every": "5m",
        "target": {"entity_type": "vehicle", "mapping": "frota-api"},
    }
    made.ids["schedule"] = (await post(client, "/api/v1/schedules", schedule))["id"]
    made.ids["channel"] = (await post(client, "/api/v1/channels", _channel_doc("senha-antiga")))[
        "id"
    ]
    made.ids["template"] = (await post(client, "/api/v1/templates", ALERT_TEMPLATE))["id"]
    await post(client, "/api/v1/kinds", {"name": "pneu", "schema": {"type": "object"}})
    made.ids["vehicle"] = (await create_vehicle(client, "ABC1D23"))["id"]
    fence = {"name": "base", "kind": "authorized", "circle": {"lat": -23.5, "lon": -46.6}}
    fence["circle"]["radius_m"] = 500
    made.ids["fence"] = (await post(client, "/api/v1/geofences", fence))["id"]
    plan = {"name": "oleo", "every_km": 10000}
    made.ids["plan"] = (await post(client, "/api/v1/maintenance-plans", plan))["id"]
    await make_user(services)
    await log_in(client)
    return made


@dataclass(frozen=True)
class Case:
    """A form: the page it is on, where it posts, what the admin types in it (its secrets,
    never shown back, typed again to save it again)."""

    name: str
    page: str
    action: str
    typed: dict[str, str]
    secrets: tuple[str, ...] = ()


def _doc(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


CHANNEL = {**_channel_doc("senha-nova-123"), "name": "email-2"}
FLOW = {**ALERT_FLOW, "name": "alerta-2"}
CASES = [
    Case(
        "user",
        "/admin/users",
        "/admin/users",
        {"email": "vera@acme.com.br", "role": "viewer", "password": "uma senha longa"},
        ("password",),
    ),
    Case(
        "trigger",
        "/admin/triggers/new",
        "/admin/triggers",
        {"name": "frota-gps", "entity_type": "vehicle"},
    ),
    Case("trigger edit", "/admin/triggers/{trigger}/edit", "", {"name": "gps-frota"}),
    Case("mapping", "/admin/mappings", "/admin/mappings", {"source": MAPPING}),
    Case(
        "schedule",
        "/admin/schedules/new",
        "/admin/schedules",
        {
            "name": "leitura-2",
            "action_id": "{reader}",
            "target.entity_type": "vehicle",
            "target.mapping": "frota-api",
        },
    ),
    Case("schedule edit", "/admin/schedules/{schedule}/edit", "", {"name": "leitura-nova"}),
    Case(
        "partner",
        "/admin/partners",
        "/admin/partners",
        {
            "name": "TMS",
            "base_url": "http://127.0.0.1:9",
            "auth.type": "bearer",
            "auth.token": "token-do-tms",
        },
        ("auth.token",),
    ),
    Case("partner edit", "/admin/partners/{partner}", "/edit", {"name": "ERP novo"}),
    Case(
        "partner credentials",
        "/admin/partners/{partner}",
        "/credentials",
        {"auth.type": "bearer", "auth.token": "token-novo-do-erp"},
        ("auth.token",),
    ),
    Case(
        "action",
        "/admin/actions",
        "/admin/actions",
        {"name": "avisa", "partner_id": "{partner}", "path": "/avisos"},
    ),
    Case("action edit", "/admin/actions/{action}/edit", "", {"path": "/ganchos"}),
    Case(
        "subscription",
        "/admin/subscriptions",
        "/admin/subscriptions",
        {"action_id": "{action}", "event_types": "entity.created"},
    ),
    Case(
        "subscription edit",
        "/admin/subscriptions/{subscription}",
        "/edit",
        {"event_types": "entity.created"},
    ),
    Case("flow", "/admin/flows", "/admin/flows", {"source": _doc(FLOW)}),
    Case(
        "channel",
        "/admin/channels",
        "/admin/channels",
        {"document": _doc(CHANNEL)},
        ("document",),
    ),
    Case(
        "template",
        "/admin/templates",
        "/admin/templates",
        {"document": _doc({**ALERT_TEMPLATE, "name": "alerta-2"})},
    ),
    Case(
        "template edit",
        "/admin/templates/{template}",
        "/edit",
        {"document": _doc({**ALERT_TEMPLATE, "default_locale": "pt-BR", "description": "novo"})},
    ),
    Case("notice settings", "/admin/notification-settings", "", {"cooldown_seconds": "1800"}),
    Case("kind", "/admin/kinds", "/admin/kinds", {"name": "bateria"}),
    Case("kind edit", "/admin/kinds/pneu", "/edit", {"schema": '{"type": "object", "title": "P"}'}),
    Case(
        "entity",
        "/admin/entities/vehicle/new",
        "/admin/entities/vehicle",
        {"/plate": "XYZ9A87", "/model": "Onix"},
    ),
    Case(
        "entity edit",
        "/admin/entities/vehicle/ABC1D23/edit",
        "/admin/entities/vehicle/{vehicle}/edit",
        {"/model": "Onix"},
    ),
    Case(
        "service",
        "/admin/entities/vehicle/ABC1D23",
        "/admin/entities/vehicle/{vehicle}/services",
        {"km": "12000"},
    ),
    Case("fleet settings", "/admin/fleet-settings", "", {"retention_days": "60"}),
    Case(
        "geofence",
        "/admin/geofences/new",
        "/admin/geofences",
        {"name": "patio", "circle.lat": "-23,5", "circle.lon": "-46,6", "circle.radius_m": "300"},
    ),
    Case("geofence edit", "/admin/geofences/{fence}", "/edit", {"name": "base-2"}),
    Case(
        "plan",
        "/admin/maintenance-plans/new",
        "/admin/maintenance-plans",
        {"name": "pneus", "every_km": "20000"},
    ),
    Case("plan edit", "/admin/maintenance-plans/{plan}", "/edit", {"every_km": "15000"}),
]


def _where(case: Case, made: Made) -> tuple[str, str]:
    """The page and the action, ids filled in: an action "" is the page itself, one not under
    /admin is a path under the page."""
    page = case.page.format(**made.ids)
    action = case.action.format(**made.ids)
    return page, action if action.startswith("/admin") else page + action


def _typed(case: Case, made: Made) -> dict[str, str]:
    return {k: made[v[1:-1]] if _named(v) else v for k, v in case.typed.items()}


def _named(value: str) -> bool:
    """Whether a value typed is the id of something made (`{partner}`)."""
    return value.startswith("{") and value.endswith("}") and value[1:-1].isidentifier()


def _filled(fields: list[tuple[str, str]], typed: dict[str, str]) -> list[tuple[str, str]]:
    """A form's fields with `typed` typed over (each once, added when the form lacks it)."""
    filled = [(n, typed.get(n, v)) for n, v in fields if n != "once"]
    return filled + [(n, v) for n, v in typed.items() if n not in dict(fields)]


async def _page(client: Client, path: str) -> str:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.text()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_a_form_saved_while_the_database_is_busy_keeps_what_was_typed(
    client: Client,
    services: Services,
    failing: Callable[[], Any],
    case: Case,
) -> None:
    made = await _made(client, services)
    page, action = _where(case, made)
    typed = _typed(case, made)
    # Its one-time id already claimed (the claim passed, the form's own write failed): a post
    # without it reaches the form's handler as the browser's would.
    sent = _filled(form_fields(await _page(client, page), action), typed)
    async with failing():
        refused = await client.post(action, data=sent, allow_redirects=False)
        html = await refused.text()
    assert refused.status == 503, html
    assert int(refused.headers["Retry-After"]) > 0
    assert SAVED_AGAIN in html
    shown = dict(form_fields(html, action))
    for name, value in typed.items():
        if name in case.secrets:
            assert value not in html  # never written back into the page
            continue
        assert shown.get(name, "").replace("\r\n", "\n").strip() == value.strip(), name
    # Saved again as shown, its secrets typed again: saved.
    again = _filled(list(shown.items()), {k: typed[k] for k in case.secrets})
    saved = await _resent(client, action, again)
    assert saved.status < 400, await saved.text()


async def _resent(client: Client, action: str, data: list[tuple[str, str]]) -> Any:
    """The form sent again once the database answers (a moment for the process to see it)."""
    for _ in range(20):
        response = await client.post(action, data=data, allow_redirects=False)
        if response.status != 503:
            return response
        await _pause()
    return response


async def _pause() -> None:
    await asyncio.sleep(0.25)


async def test_a_form_whose_one_time_id_cannot_be_claimed_keeps_what_was_typed(
    client: Client, services: Services, failing: Callable[[], Any]
) -> None:
    """The database fails before the form's handler runs (the claim of its one-time id is a
    write): the page lists what was typed with **Save it**, the secret asked for again."""
    made = await _made(client, services)
    del made
    typed = {"email": "vera@acme.com.br", "role": "viewer", "password": "uma senha longa"}
    sent = _filled(form_fields(await _page(client, "/admin/users"), "/admin/users"), typed)
    sent.append(("once", "um-id-de-formulario"))
    async with failing():
        refused = await client.post("/admin/users", data=sent, allow_redirects=False)
        html = await refused.text()
    assert refused.status == 503, html
    assert int(refused.headers["Retry-After"]) > 0
    assert "uma senha longa" not in html and "vera@acme.com.br" in html
    resume = dict(form_fields(html, "/admin/users"))
    assert resume["email"] == "vera@acme.com.br" and resume["password"] == ""
    resume["password"] = "uma senha longa"
    saved = await _resent(client, "/admin/users", list(resume.items()))
    assert saved.status == 303, await saved.text()
    users = await services.accounts.users("acme")
    assert "vera@acme.com.br" in [u["email"] for u in users]


TAKEN = [
    Case(
        "trigger",
        "/admin/triggers/new",
        "/admin/triggers",
        {"name": "gps", "entity_type": "vehicle"},
    ),
    Case("trigger edit", "/admin/triggers/{trigger}/edit", "", {"name": "gps-2"}),
    Case(
        "schedule",
        "/admin/schedules/new",
        "/admin/schedules",
        {
            "name": "leitura",
            "action_id": "{reader}",
            "target.entity_type": "vehicle",
            "target.mapping": "frota-api",
        },
    ),
    Case("template", "/admin/templates", "/admin/templates", {"document": _doc(ALERT_TEMPLATE)}),
]


@pytest.mark.parametrize("case", TAKEN, ids=[c.name for c in TAKEN])
async def test_a_form_naming_a_name_taken_keeps_what_was_typed(
    client: Client, services: Services, case: Case
) -> None:
    """A conflict (409: another has the name) is said above the form, what was typed kept."""
    made = await _made(client, services)
    body = {"name": "gps-2", "entity_type": "vehicle", "methods": ["POST"]}
    await post(client, "/api/v1/triggers", body)
    page, action = _where(case, made)
    typed = _typed(case, made)
    sent = _filled(form_fields(await _page(client, page), action), typed)
    refused = await client.post(action, data=sent, allow_redirects=False)
    html = await refused.text()
    assert refused.status == 409, html
    shown = dict(form_fields(html, action))
    for name, value in typed.items():
        assert shown.get(name, "").replace("\r\n", "\n").strip() == value.strip(), name
