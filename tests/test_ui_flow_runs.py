"""Flow runs and the deliveries they create, over HTTP: a flow's runs filtered by status, a
run's step timeline linking each step's deliveries, a notification delivery's channel,
recipient and rendered subject (escaped), `suppressed` deliveries and the run filter; another
tenant's runs are a 404."""

from __future__ import annotations

import re
from typing import Any

from gateway.flows.deliveries import notification_id
from gateway.services import Services
from gateway.web.state import services_key
from tests.flow_support import drain, email_channel
from tests.partner_double import Partner, create_action, create_partner, partner, post
from tests.smtp_double import SmtpFactory, smtp_server
from tests.support import auth
from tests.ui_support import ALERT_FLOW, ALERT_TEMPLATE, Client, guarded_run, log_in, make_user

__all__ = ["partner", "smtp_server"]  # the fixtures

MODEL = "<b>Volvo</b> <script>window.pwned=1</script>"


async def _two_runs(
    client: Client, partner: Partner, smtp_port: int, erp: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The flow, its action (of partner `erp`, created unless given), channel and template;
    two vehicles created, everything sent."""
    erp = erp or await create_partner(client, partner.url)
    await create_action(client, erp["id"])
    await email_channel(client, smtp_port)
    await post(client, "/api/v1/templates", ALERT_TEMPLATE)
    await post(client, "/api/v1/flows", ALERT_FLOW)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "model": MODEL})
    await post(client, "/api/v1/entities/vehicle", {"plate": "BRA2E19", "model": "Scania"})
    await drain(client.app[services_key])
    response = await client.get("/api/v1/flows/alerta-frota/runs", headers=auth())
    runs: list[dict[str, Any]] = (await response.json())["items"]
    return runs


def _links(page: str, prefix: str) -> list[str]:
    """What follows `prefix` in the page's links (ids, with ":" as the URLs write it)."""
    found = re.findall(rf'href="{re.escape(prefix)}([^"?]+)"', page)
    return [link.replace("%3A", ":") for link in found]


def _message(run_id: str) -> str:
    """The id of the run's e-mail to the fleet's address (step `aviso`)."""
    return notification_id(run_id, "aviso", "frota@acme.com.br", "email")


async def test_a_runs_steps_link_the_deliveries_it_created(
    client: Client, services: Services, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    runs = await _two_runs(client, partner, smtp.port)
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    await make_user(services)
    await log_in(client)
    listed = await (await client.get("/admin/flows/alerta-frota/runs")).text()
    assert listed.count('class="badge s-succeeded">concluída') == 2
    assert sorted(_links(listed, "/admin/flow-runs/")) == sorted(r["id"] for r in runs)
    failed = await (await client.get("/admin/flows/alerta-frota/runs?status=failed")).text()
    assert "/admin/flow-runs/" not in failed and "Nenhuma execução nesse estado" in failed
    bad = await client.get("/admin/flows/alerta-frota/runs?status=nonsense")
    assert bad.status == 400 and "status must be one of" in await bad.text()

    run = next(r for r in runs if r["event"]["entity"]["key"] == "ABC1D23")
    page = await (await client.get(f"/admin/flow-runs/{run['id']}")).text()
    steps = page[page.index('data-testid="run-steps"') : page.index("</ol>")]
    assert steps.count("na fila") == 3  # the call, the notify step and its one message
    delivery_ids = {f"{run['id']}:erp", _message(run["id"])}
    assert set(_links(steps, "/admin/")) == {f"deliveries/{d}" for d in delivery_ids}
    deliveries = page[page.index('id="run-deliveries"') :]
    assert "chamada de fluxo" in deliveries and "notificação" in deliveries
    assert "email → frota@acme.com.br" in deliveries

    message = await (await client.get(f"/admin/deliveries/{_message(run['id'])}")).text()
    assert 'data-testid="delivery-kind">notificação' in message
    assert "<code>frota@acme.com.br</code>" in message and "alerta · pt-BR" in message
    subject = re.search(r'data-testid="message-subject">([^<]*)<', message)
    assert subject is not None
    assert subject.group(1) == (
        "Novo veículo ABC1D23: &lt;b&gt;Volvo&lt;/b&gt; &lt;script&gt;window.pwned=1&lt;/script&gt;"
    )
    assert MODEL not in message
    assert f'href="/admin/flow-runs/{run["id"]}"' in message.replace("%3A", ":")
    call = await (await client.get(f"/admin/deliveries/{run['id']}:erp")).text()
    assert 'data-testid="delivery-kind">chamada de fluxo' in call
    assert 'href="/admin/actions/' in call and 'data-testid="notification"' not in call


async def test_a_suppressed_notification_is_listed_with_its_reason_and_runs_filter(
    client: Client, services: Services, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    runs = await _two_runs(client, partner, smtp.port)
    assert len(smtp.received) == 1  # the second alert came within the cooldown
    await make_user(services)
    await log_in(client)
    suppressed = await (await client.get("/admin/deliveries?status=suppressed")).text()
    (delivery_id,) = _links(suppressed, "/admin/deliveries/")
    assert "suprimida" in suppressed and "notificação" in suppressed
    detail = await (await client.get(f"/admin/deliveries/{delivery_id}")).text()
    assert 'class="badge s-suppressed">suprimida' in detail
    assert "Motivo da supressão" in detail and "cooldown" in detail
    assert "/replay" not in detail  # only failed and dead deliveries are replayed

    run_id = runs[0]["id"]
    filtered = await (await client.get(f"/admin/deliveries?run_id={run_id}")).text()
    ids = set(_links(filtered, "/admin/deliveries/"))
    assert ids == {f"{run_id}:erp", _message(run_id)}
    assert f'name="run_id" value="{run_id}"' in filtered


async def test_a_set_steps_changes_are_shown_as_json(client: Client, services: Services) -> None:
    run = await guarded_run(client)
    await make_user(services)
    await log_in(client)
    page = await (await client.get(f"/admin/flow-runs/{run['id']}")).text()
    step = page[page.index('data-step="mark"') :]
    step = step[: step.index("</li>")]
    assert "<code>null</code> → <code>{\n  &#34;seen&#34;: &#34;y&#34;\n}</code>" in step
    assert "None" not in step and "&#39;" not in step


async def test_another_tenants_runs_are_not_found(
    client: Client, services: Services, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    runs = await _two_runs(client, partner, smtp.port)
    await make_user(services, tenant="globex", email="gil@globex.com")
    await log_in(client, tenant="globex", email="gil@globex.com")
    for path in (
        "/admin/flows/alerta-frota/runs",
        f"/admin/flow-runs/{runs[0]['id']}",
        f"/admin/deliveries/{_message(runs[0]['id'])}",
    ):
        response = await client.get(path)
        page = await response.text()
        assert response.status == 404 and "ABC1D23" not in page and "frota@acme" not in page
    listed = await (await client.get(f"/admin/deliveries?run_id={runs[0]['id']}")).text()
    assert _links(listed, "/admin/deliveries/") == []


async def test_a_runs_page_names_an_action_beyond_the_first_two_hundred(
    client: Client, services: Services, partner: Partner, smtp_server: SmtpFactory
) -> None:
    erp = await create_partner(client, partner.url)
    for n in range(200):  # a list page's worth of actions created before the flow's
        await create_action(client, erp["id"], name=f"outra-{n:03d}")
    runs = await _two_runs(client, partner, (await smtp_server()).port, erp)
    await make_user(services)
    await log_in(client)
    page = await (await client.get(f"/admin/flow-runs/{runs[0]['id']}")).text()
    deliveries = page[page.index('id="run-deliveries"') :]
    assert re.search(r'<a href="/admin/actions/[0-9a-f]{24}">push</a>', deliveries)


async def test_a_run_with_more_deliveries_than_a_page_says_how_many_and_pages_them(
    client: Client, services: Services
) -> None:
    """A notify step to 5 recipients of 50 addresses each: 250 deliveries. The table shows a
    page of 200 of the 250 and leads to the other 50; every message of the step has its
    delivery's status, not only those of the table's page."""
    await email_channel(client)
    await post(client, "/api/v1/templates", ALERT_TEMPLATE)
    recipients = [{"address": [f"p{r}-{i}@acme.com.br" for i in range(50)]} for r in range(5)]
    notify = {"channel": "email", "template": "alerta", "recipients": recipients}
    flow = {
        "name": "muitos",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
        "steps": [{"id": "avisa", "notify": notify}],
    }
    await post(client, "/api/v1/flows", flow)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await services.relay.run_until_idle()
    await services.flow_runner.run_until_idle()  # the deliveries are created, not sent
    response = await client.get("/api/v1/flows/muitos/runs", headers=auth())
    [run] = (await response.json())["items"]
    await make_user(services)
    await log_in(client)
    page = await (await client.get(f"/admin/flow-runs/{run['id']}")).text()
    steps = page[page.index('data-testid="run-steps"') : page.index("</ol>")]
    assert steps.count('data-testid="step-delivery"') == 250
    assert steps.count("badge s-pending") == 250  # each message's delivery status
    table = page[page.index('id="run-deliveries"') : page.index("</table>")]
    assert "Mostrando 200 de 250 entregas" in page and table.count("<tr>") == 201
    more = re.search(r'<p class="pager"><a href="\?([^"#]+)#run-deliveries">', page)
    assert more is not None, "no link to the other 50"
    rest = await (await client.get(f"/admin/flow-runs/{run['id']}?{more.group(1)}")).text()
    assert "Mostrando 50 de 250 entregas" in rest
    shown = set(_links(table, "/admin/deliveries/"))
    shown |= set(_links(rest[rest.index('id="run-deliveries"') :], "/admin/deliveries/"))
    assert len(shown) == 250


async def test_a_run_whose_deliveries_fill_the_last_page_offers_no_next_page(
    client: Client, services: Services
) -> None:
    """4 deliveries, 2 a page (as 200 deliveries at the default 200): the full second page
    offered a *Next page*, which said the run created none ("Nada por aqui ainda.") with no
    way back. A page past the run's last delivery counts them and links to the first."""
    await email_channel(client)
    await post(client, "/api/v1/templates", ALERT_TEMPLATE)
    notify = {
        "channel": "email",
        "template": "alerta",
        "recipients": [{"address": [f"p{i}@acme.com.br" for i in range(4)]}],
    }
    flow = {
        "name": "quatro",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
        "steps": [{"id": "avisa", "notify": notify}],
    }
    await post(client, "/api/v1/flows", flow)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await services.relay.run_until_idle()
    await services.flow_runner.run_until_idle()
    response = await client.get("/api/v1/flows/quatro/runs", headers=auth())
    [run] = (await response.json())["items"]
    await make_user(services)
    await log_in(client)
    url = f"/admin/flow-runs/{run['id']}"
    first = await (await client.get(f"{url}?limit=2")).text()
    more = re.search(r'<a href="\?([^"#]+)#run-deliveries">[^<]*→', first)
    assert more is not None and "Mostrando 2 de 4 entregas" in first
    last = await (await client.get(f"{url}?{more.group(1).replace('&amp;', '&')}")).text()
    assert "Mostrando 2 de 4 entregas" in last
    assert re.search(r'#run-deliveries">[^<]*→', last) is None, "a next page after the last"
    shown = _links(last[last.index('id="run-deliveries"') :], "/admin/deliveries/")
    past = await (await client.get(f"{url}?limit=2&cursor={shown[-1]}")).text()
    section = past[past.index("Entregas criadas") :]
    assert "Nada por aqui ainda" not in section and "Mostrando 0 de 4 entregas" in section
    assert re.search(r'<a href="\?limit=2#run-deliveries">←', section), "no way back"
