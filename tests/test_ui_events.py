"""The event log's pages over HTTP: events newest first, filtered by type and entity and
paged; one event linked to its entity, the deliveries it fanned out to and the flow runs it
started; another tenant's event is a 404."""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta, timezone

from gateway.services import Services
from gateway.web.state import services_key
from tests.flow_support import drain, email_channel
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    partner,
    post,
)
from tests.smtp_double import SmtpFactory, smtp_server
from tests.support import auth
from tests.triggers_support import create_trigger, upload_mapping
from tests.ui_support import (
    ALERT_FLOW,
    ALERT_TEMPLATE,
    POLLED_MAPPING,
    Client,
    guarded_run,
    log_in,
    make_user,
)

__all__ = ["partner", "smtp_server"]  # the fixtures


def _links(page: str, prefix: str) -> list[str]:
    found = re.findall(rf'href="{re.escape(prefix)}([^"?]+)"', page)
    return [link.replace("%3A", ":") for link in found]


async def test_the_event_log_filters_pages_and_links_each_events_entity_deliveries_and_runs(
    client: Client, services: Services, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    erp = await create_partner(client, partner.url)
    action = await create_action(client, erp["id"])
    await create_subscription(client, action["id"], ("entity.created",))
    await email_channel(client, smtp.port)
    await post(client, "/api/v1/templates", ALERT_TEMPLATE)
    await post(client, "/api/v1/flows", ALERT_FLOW)
    first = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/vehicle", {"plate": "BRA2E19"})
    patched = await client.patch(
        f"/api/v1/entities/vehicle/{first['id']}", json={"model": "Axor"}, headers=auth()
    )
    assert patched.status == 200
    await drain(client.app[services_key])
    await make_user(services)
    await log_in(client)
    listed = await (await client.get("/admin/events")).text()
    assert len(_links(listed, "/admin/events/")) == 3
    assert listed.index("entity.updated") < listed.index("entity.created")  # newest first
    assert f'href="/admin/entities/vehicle/{first["id"]}"' in listed
    created = await (await client.get("/admin/events?type=entity.created")).text()
    assert len(_links(created, "/admin/events/")) == 2 and "entity.updated" not in created
    mine = await (await client.get(f"/admin/events?entity_id={first['id']}")).text()
    assert len(_links(mine, "/admin/events/")) == 2
    none = await (await client.get("/admin/events?type=fine.paid")).text()
    assert "Nenhum evento com esses filtros" in none
    one = await (await client.get("/admin/events?type=entity.created&limit=1")).text()
    [cursor] = re.findall(r"cursor=([^&\"]+)", one)
    rest = await (
        await client.get(f"/admin/events?type=entity.created&limit=1&cursor={cursor}")
    ).text()
    assert set(_links(rest, "/admin/events/")).isdisjoint(_links(one, "/admin/events/"))
    # The first vehicle's creation: its entity, its webhook delivery, its flow run.
    events = await (
        await client.get(
            f"/api/v1/events?type=entity.created&entity_id={first['id']}", headers=auth()
        )
    ).json()
    [event] = events["items"]
    page = await client.get(f"/admin/events/{event['id']}")
    html = await page.text()
    assert page.status == 200, html
    assert f'href="/admin/entities/vehicle/{first["id"]}"' in html
    deliveries = await (
        await client.get(f"/api/v1/deliveries?event_id={event['id']}", headers=auth())
    ).json()
    assert deliveries["items"]
    assert sorted(_links(html, "/admin/deliveries/")) == sorted(
        d["id"] for d in deliveries["items"]
    )
    assert _links(html, "/admin/flow-runs/") == [f"{event['id']}:alerta-frota"]
    # The entity's page links its events to theirs.
    entity = await (await client.get(f"/admin/entities/vehicle/{first['id']}")).text()
    assert event["id"] in _links(entity, "/admin/events/")


async def test_a_strangers_event_is_not_found(client: Client, services: Services) -> None:
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(client.app[services_key])
    events = await (await client.get("/api/v1/events", headers=auth())).json()
    [event] = events["items"]
    await make_user(services, tenant="globex", email="gil@globex.com")
    await log_in(client, tenant="globex", email="gil@globex.com")
    assert (await client.get(f"/admin/events/{event['id']}")).status == 404
    assert event["id"] not in await (await client.get("/admin/events")).text()


async def test_a_deleted_entitys_link_answers_that_it_was_deleted_and_when(
    client: Client, services: Services
) -> None:
    """The event log keeps linking an entity deleted since: its page is a 410 that says it
    was deleted, when and by whom, and leads to its events; not a bare 404. An id that
    never was an entity stays a 404."""
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    deleted = await client.delete(f"/api/v1/entities/vehicle/{vehicle['id']}", headers=auth())
    assert deleted.status == 204
    await drain(client.app[services_key])
    await make_user(services)
    await log_in(client)
    events = await (await client.get("/api/v1/events?type=entity.created", headers=auth())).json()
    [created] = events["items"]
    event_page = await (await client.get(f"/admin/events/{created['id']}")).text()
    link = f"/admin/entities/vehicle/{vehicle['id']}"
    assert f'href="{link}"' in event_page
    page = await client.get(link)
    html = await page.text()
    assert page.status == 410, html
    assert "Administrador tester" in html  # who deleted it (the API token's origin)
    assert "Este cadastro foi excluído em" in html and "ABC1D23" in html
    [gone] = (
        await (await client.get("/api/v1/events?type=entity.deleted", headers=auth())).json()
    )["items"]
    assert f'href="/admin/events/{gone["id"]}"' in html
    assert f'href="/admin/events?entity_id={vehicle["id"]}"' in html
    assert (await client.get("/admin/entities/vehicle/6b12de0290f53a65293eb5ff")).status == 404
    # The same id under another type is no deleted driver.
    assert (await client.get(f"/admin/entities/driver/{vehicle['id']}")).status == 404


def _next(page: str, name: str) -> str | None:
    """The href of a list's next page (it lands at the list, `#name`), as the page has it."""
    found = re.search(rf'href="(\?[^"]*#{name})">Próxima página', page)
    return html.unescape(found.group(1)) if found else None


async def test_an_events_deliveries_and_flow_runs_are_paged_so_every_one_is_read(
    client: Client, services: Services, partner: Partner
) -> None:
    """More deliveries and runs than a page holds (`limit=2` here; 50 by default): each list
    has its next page, by a cursor of its own that keeps the other list where it is, and the
    pages together list every delivery and run of the event once."""
    erp = await create_partner(client, partner.url)
    for n in range(3):
        action = await create_action(client, erp["id"], name=f"push{n}")
        await create_subscription(client, action["id"], ("entity.created",))
        flow = {"name": f"aviso-{n}", "on": {"events": ["entity.created"]}}
        await post(client, "/api/v1/flows", {**flow, "steps": [{"id": "erp", "call": "push0"}]})
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(client.app[services_key])
    [event] = (await (await client.get("/api/v1/events", headers=auth())).json())["items"]
    api = await client.get(f"/api/v1/deliveries?event_id={event['id']}&limit=200", headers=auth())
    every = sorted(d["id"] for d in (await api.json())["items"])
    assert len(every) == 6  # three subscriptions, three flows' calls
    await make_user(services)
    await log_in(client)
    base = f"/admin/events/{event['id']}"
    seen: list[str] = []
    runs: list[str] = []
    query: str | None = "?limit=2"
    while query is not None:
        page = await (await client.get(base + query.split("#")[0])).text()
        seen += _links(page, "/admin/deliveries/")
        if not runs:
            runs = _links(page, "/admin/flow-runs/")
        query = _next(page, "deliveries")
    assert sorted(seen) == every and len(seen) == len(set(seen))
    # The runs' next page keeps the deliveries' page as it was.
    first = await (await client.get(f"{base}?limit=2")).text()
    more = _next(first, "deliveries")
    assert more is not None and more.endswith("#deliveries")
    second = await (await client.get(base + more.split("#")[0])).text()
    runs_next = _next(second, "runs")
    assert runs_next is not None and "deliveries=" in runs_next
    third = await (await client.get(base + runs_next.split("#")[0])).text()
    assert _links(third, "/admin/deliveries/") == _links(second, "/admin/deliveries/")
    runs += _links(third, "/admin/flow-runs/")
    assert runs == [f"{event['id']}:aviso-{n}" for n in range(3)]
    assert _next(third, "runs") is None
    back = re.search(r'href="(\?[^"]*#runs)">← Primeira página', third)
    assert back is not None and "runs=" not in back.group(1) and "deliveries=" in back.group(1)
    # A cursor no page could have written, or a limit out of range, is a 400 page that says
    # so (not an empty list): the UI's own page, in the visitor's language.
    other = f"{'0' * 24}:aviso-0"  # well formed, but another event's
    odds = ("deliveries=%00%FF", "runs=%7B%7D", "deliveries=zzz", "runs=..", "limit=0")
    for odd in (*odds, f"runs={other}", f"deliveries={other}"):
        refused = await client.get(f"{base}?{odd}")
        text = await refused.text()
        assert refused.status == 400 and refused.content_type == "text/html", odd
        assert "Pedido inválido" in text and ("cursor must be" in text or "limit" in text), odd


async def test_origins_entity_types_and_a_mappings_users_are_words_of_the_pages_language(
    client: Client, services: Services
) -> None:
    run = await guarded_run(client)  # an admin creates a supplier, a flow's `set` writes it
    await upload_mapping(client, POLLED_MAPPING)
    trigger = await create_trigger(client, name="frota", mapping="frota-api")
    await make_user(services)
    await log_in(client)
    listed = await (await client.get("/admin/events")).text()
    rows = re.findall(r"<tr>\s*<td><a href=\"/admin/events/.*?</tr>", listed, re.S)
    assert len(rows) == 2
    assert all(">Fornecedor 11444777000161</a></td>" in row for row in rows)
    assert sorted(re.findall(r"<td>(\w+)</td>\s*</tr>", listed)) == ["Administrador", "Fluxo"]
    [written] = _links(rows[0], "/admin/events/")
    page = await (await client.get(f"/admin/events/{written}")).text()
    assert f"<dt>Origem</dt><dd>Fluxo {run['flow']}</dd>" in page
    assert ">Fornecedor 11444777000161</a>" in page
    page = await (await client.get("/admin/mappings/frota-api")).text()
    assert f'<div>Gatilho: <a href="/admin/triggers/{trigger["id"]}">frota</a></div>' in page
    english = {"Accept-Language": "en"}
    page = await (await client.get(f"/admin/events/{written}", headers=english)).text()
    assert f"<dt>Origin</dt><dd>Flow {run['flow']}</dd>" in page
    assert ">Supplier 11444777000161</a>" in page


async def test_an_events_time_names_its_zone_and_is_the_moment_its_json_writes_in_utc(
    client: Client, services: Services
) -> None:
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(client.app[services_key])
    response = await client.get("/api/v1/events", headers=auth())
    [event] = (await response.json())["items"]
    moment = datetime.fromisoformat(event["occurred_at"])
    await make_user(services)
    await log_in(client)
    for lang, shown in (("pt-BR", "%d/%m/%Y %H:%M:%S"), ("en", "%Y-%m-%d %H:%M:%S")):
        headers = {"Accept-Language": lang}
        page = await (await client.get(f"/admin/events/{event['id']}", headers=headers)).text()
        local = moment.astimezone(timezone(timedelta(hours=-3))).strftime(shown)
        assert re.search(rf"<dt>(Quando|When)</dt><dd>{local} \(Brasília\)</dd>", page), lang
        listed = await (await client.get("/admin/events", headers=headers)).text()
        assert f"<td>{local} (Brasília)</td>" in listed
