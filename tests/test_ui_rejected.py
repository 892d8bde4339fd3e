"""Rejected calls over HTTP: a list filtered by a trigger (or a schedule) replays only its own
pending payloads and comes back to the same list; a schedule's kept item links back to the
schedule, a trigger's to the trigger."""

from __future__ import annotations

import re
from typing import Any

from gateway.services import Services
from gateway.web.state import services_key
from tests.partner_double import Partner, create_action, create_partner, partner, post
from tests.support import auth
from tests.test_triggers_rejected import BROKEN, FIXED
from tests.triggers_support import create_trigger, hook, upload_mapping
from tests.ui_support import POLLED_MAPPING, Client, form_fields, log_in, make_user

__all__ = ["partner"]  # the fixture


async def _rejected(client: Client, query: str = "") -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/rejected{query}", headers=auth())
    assert response.status == 200, await response.text()
    return list((await response.json())["items"])


async def test_replaying_every_pending_one_of_a_filtered_list_replays_only_that_list(
    client: Client, services: Services
) -> None:
    await upload_mapping(client, BROKEN)
    mine = await create_trigger(client, mapping="erp-vehicle")
    other = await create_trigger(client, name="other", mapping="erp-vehicle")
    await hook(client, mine, {"placa": "ABC1D23", "marca": "Fiat"})
    await hook(client, other, {"placa": "BRA2E19", "marca": "VW"})
    await upload_mapping(client, FIXED)
    await make_user(services)
    await log_in(client)
    listed = f"/admin/rejected?trigger_id={mine['id']}"
    page = await (await client.get(listed)).text()
    fields = form_fields(page, "/admin/rejected/replay")
    assert ("trigger_id", mine["id"]) in fields
    replayed = await client.post("/admin/rejected/replay", data=fields, allow_redirects=False)
    assert replayed.status == 303, await replayed.text()
    assert replayed.headers["Location"] == f"/admin/rejected?status=pending&trigger_id={mine['id']}"
    [kept] = await _rejected(client, f"?trigger_id={mine['id']}")
    assert (kept["status"], kept["attempts"]) == ("replayed", 1)
    [theirs] = await _rejected(client, f"?trigger_id={other['id']}")
    assert (theirs["status"], theirs["attempts"]) == ("pending", 0)  # not touched
    # Unfiltered, the list's button replays every pending one.
    page = await (await client.get("/admin/rejected")).text()
    fields = form_fields(page, "/admin/rejected/replay")
    assert "trigger_id" not in dict(fields)
    replayed = await client.post("/admin/rejected/replay", data=fields, allow_redirects=False)
    assert replayed.headers["Location"] == "/admin/rejected?status=pending"
    [theirs] = await _rejected(client, f"?trigger_id={other['id']}")
    assert theirs["status"] == "replayed"
    # A list of replayed ones has nothing pending to replay: no button.
    page = await (await client.get(f"{listed}&status=replayed")).text()
    assert 'action="/admin/rejected/replay"' not in page


async def test_a_kept_item_links_back_to_its_schedule_or_its_trigger(
    client: Client, services: Services, partner: Partner
) -> None:
    await upload_mapping(client, POLLED_MAPPING)
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(
        client, partner_doc["id"], name="frota", method="GET", path="/veiculos", mode="proxy"
    )
    # The second vehicle has no plate: the item is refused and kept under the schedule's id.
    page = {"veiculos": [{"placa": "abc1d23"}, {"km": "10"}]}
    partner.respond_with(200, page)
    body = {
        "name": "frota-api",
        "action_id": action["id"],
        "every": "5m",
        "target": {"entity_type": "vehicle", "mapping": "frota-api"},
    }
    schedule = await post(client, "/api/v1/schedules", body)
    assert await client.app[services_key].schedule_runner.run_until_idle() == {"ok": 1}
    [item] = await _rejected(client, f"?trigger_id={schedule['id']}")
    await upload_mapping(client, BROKEN)
    trigger = await create_trigger(client, mapping="erp-vehicle")
    await hook(client, trigger, {"placa": "ABC1D23"})
    [call] = await _rejected(client, f"?trigger_id={trigger['id']}")
    await make_user(services)
    await log_in(client)
    for record, back in (
        (item, f"/admin/schedules/{schedule['id']}"),
        (call, f"/admin/triggers/{trigger['id']}"),
    ):
        html = await (await client.get(f"/admin/rejected/{record['id']}")).text()
        [link] = re.findall(r'<p><a href="([^"]+)">←', html)
        assert link == back
        assert (await client.get(link)).status == 200


async def test_a_payload_received_again_shows_how_often_on_its_pages(
    client: Client, services: Services
) -> None:
    await upload_mapping(client, BROKEN)
    trigger = await create_trigger(client, mapping="erp-vehicle")
    for _ in range(3):
        await hook(client, trigger, {"placa": "ABC1D23", "marca": "Fiat"})
    [kept] = await _rejected(client)
    await make_user(services)
    await log_in(client)
    listed = await (await client.get("/admin/rejected")).text()
    row = re.search(r"<tr>\s*<td><a href=\"/admin/rejected/[^<]*</a></td>.*?</tr>", listed, re.S)
    assert row is not None and '<td class="num">3 <small>(primeira vez em' in row.group(0), listed
    page = await (await client.get(f"/admin/rejected/{kept['id']}")).text()
    assert "<dt>Recebida (vezes)</dt><dd>3</dd>" in page, page


async def test_a_kept_payload_of_thousands_of_problems_shows_a_hundred_and_the_count(
    client: Client, services: Services
) -> None:
    trigger = await create_trigger(client)
    await hook(client, trigger, {"plate": "ABC1D23", "groups": [0] * 5_000})
    [kept] = await _rejected(client)
    await make_user(services)
    await log_in(client)
    page = await (await client.get(f"/admin/rejected/{kept['id']}")).text()
    assert len(kept["errors"]) == 100
    listed = sum("is not of type" in e["message"] for e in kept["errors"])
    assert page.count("is not of type") == listed
    omitted = f"{kept['errors_omitted']:,}".replace(",", ".")
    assert f"e mais {omitted} problemas, não listados" in page, page[-3000:]


async def test_a_triggers_page_links_to_all_its_rejected_calls_and_the_list_names_whose(
    client: Client, services: Services
) -> None:
    mine = await create_trigger(client, name="rastreador")
    other = await create_trigger(client, name="outro")
    for n in range(21):  # one more than its page shows
        assert (await hook(client, mine, {"plate": f"BAD{n}"}))[0] == 422
    assert (await hook(client, other, {"plate": "RUIM"}))[0] == 422
    await make_user(services)
    await log_in(client)
    page = await (await client.get(f"/admin/triggers/{mine['id']}")).text()
    table = page[page.index('<table id="rejected">') : page.index("</table>")]
    assert table.count("<tr>") == 1 + 20
    listed = f"/admin/rejected?trigger_id={mine['id']}"
    assert f'As 20 mais recentes. <a href="{listed}">Todas as chamadas recusadas' in page

    page = await (await client.get("/admin/rejected")).text()
    assert page.count(f'<a href="/admin/triggers/{mine["id"]}">rastreador</a>') == 21
    assert page.count(f'<a href="/admin/triggers/{other["id"]}">outro</a>') == 1
    filters = page[page.index('data-testid="rejected-filters"') :]
    filters = filters[: filters.index("</form>")]
    assert f'<option value="{other["id"]}">outro</option>' in filters
    # Filtered by the trigger (its page's link), the status tabs keep the trigger.
    page = await (await client.get(listed)).text()
    assert page.count(f'<a href="/admin/triggers/{mine["id"]}">rastreador</a>') == 21
    assert "outro</a>" not in page
    tabs = re.findall(r'<p class="tabs">(.*?)</p>', page, re.S)[0]
    hrefs = re.findall(r'href="([^"]+)"', tabs)
    assert hrefs == [
        f"/admin/rejected?trigger_id={mine['id']}&amp;status=pending",
        f"/admin/rejected?trigger_id={mine['id']}&amp;status=replayed",
        listed,
    ]
    assert f'<option value="{mine["id"]}" selected>rastreador</option>' in page
    # The dashboard's count of pending ones leads to the pending ones.
    dashboard = await (await client.get("/admin/")).text()
    pending = '<a class="stat bad" href="/admin/rejected?status=pending"><strong>22</strong>'
    assert pending in dashboard
