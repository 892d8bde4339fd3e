"""Schedule pages over HTTP: created from the form (every problem next to its field, what was
typed kept), run now against a local partner and the run shown, edited with the cursor kept,
paused and resumed; a viewer changes nothing, another tenant's schedule is a 404, and names
stay text."""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

from gateway.services import Services
from gateway.web.state import services_key
from tests.partner_double import Partner, create_action, create_partner, partner, post
from tests.partner_double import upload_mapping as api_upload_mapping
from tests.support import auth
from tests.ui_support import POLLED_MAPPING, Client, csrf, form_fields, log_in, make_user

__all__ = ["partner"]  # the fixture

FIRST_PAGE = {"veiculos": [{"placa": "abc1d23", "km": "1200.5"}], "next": "c2"}


async def _reader(client: Client, partner: Partner, tenant: str = "acme") -> str:
    """A GET action on the partner double and the inbound mapping a schedule lands with."""
    await api_upload_mapping(client, POLLED_MAPPING, tenant=tenant)
    if tenant == "acme":
        partner_doc = await create_partner(client, partner.url)
        action = await create_action(
            client, partner_doc["id"], name="frota", method="GET", path="/veiculos", mode="proxy"
        )
        return str(action["id"])
    body = {"name": "ERP", "base_url": partner.url, "auth": {"type": "none"}}
    partner_doc = await post(client, "/api/v1/partners", body, tenant=tenant)
    action_body = {
        "name": "frota",
        "partner_id": partner_doc["id"],
        "method": "GET",
        "path": "/veiculos",
        "mode": "proxy",
    }
    return str((await post(client, "/api/v1/actions", action_body, tenant=tenant))["id"])


def _form(action_id: str, **fields: str) -> dict[str, str]:
    return {
        "name": "frota-api",
        "action_id": action_id,
        "every": "5m",
        "timezone": "America/Sao_Paulo",
        "target.type": "entities",
        "target.entity_type": "vehicle",
        "target.mapping": "frota-api",
        "cursor.from": "next",
        "cursor.param": "query.after",
        "max_pages": "10",
        **fields,
    }


async def _schedules(client: Client, tenant: str = "acme") -> list[dict[str, Any]]:
    response = await client.get("/api/v1/schedules", headers=auth(tenant))
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


async def test_a_schedule_is_created_run_now_and_its_run_shown(
    client: Client, services: Services, partner: Partner
) -> None:
    await make_user(services)
    action_id = await _reader(client, partner)
    partner.respond_with(200, {"veiculos": [], "next": "c2"})
    partner.respond_with(200, FIRST_PAGE, times=1)
    await log_in(client)
    token = await csrf(client, "/admin/schedules/new")
    created = await client.post(
        "/admin/schedules", data={"csrf": token, **_form(action_id)}, allow_redirects=False
    )
    assert created.status == 303, await created.text()
    (schedule,) = await _schedules(client)
    assert created.headers["Location"] == f"/admin/schedules/{schedule['id']}"
    assert (schedule["cursor"]["from"], schedule["cursor"]["param"]) == ("next", "query.after")
    runner = client.app[services_key].schedule_runner
    assert await runner.run_until_idle() == {"ok": 1}  # a new schedule is due at once
    run_now = await client.post(f"/admin/schedules/{schedule['id']}/run", data={"csrf": token})
    assert run_now.status == 200 and "Leitura pedida" in await run_now.text()
    assert await runner.run_until_idle() == {"ok": 1}
    # the first run read on while pages had items (two calls); the run now, one call
    assert [r.query.get("after") for r in partner.requests] == [None, "c2", "c2"]
    page = await (await client.get(f"/admin/schedules/{schedule['id']}")).text()
    runs = page[page.index('data-testid="schedule-runs"') :]
    assert runs.count('class="badge o-ok"') == 2
    # newest first: the run now read nothing; the first read one vehicle and wrote it
    first_run = runs[runs.rindex("<tr>") :]
    cells = [c.split(">", 1)[1] for c in first_run.split("</td>")[2:7]]
    assert cells == ["2", "1", "1", "0", "0"]  # pages, read, written, rejected, skipped
    assert "<code>—</code> → <code>c2</code>" in first_run
    listed = await (await client.get("/admin/schedules")).text()
    assert "frota-api" in listed and "ativo" in listed
    stored = await services.entities.get("acme", "vehicle", "ABC1D23")
    assert stored["data"]["odometer_km"] == 1200.5


async def test_missing_and_invalid_fields_are_shown_next_to_them_and_kept(
    client: Client, services: Services, partner: Partner
) -> None:
    await make_user(services)
    action_id = await _reader(client, partner)
    await log_in(client)
    token = await csrf(client, "/admin/schedules/new")
    bad = _form(
        action_id,
        every="toda hora",
        **{"cursor.param": "path.x", "target.mapping": "", "dedupe.keep": "0"},
    )
    refused = await client.post("/admin/schedules", data={"csrf": token, **bad})
    assert refused.status == 422
    page = await refused.text()
    for field in ("every", "cursor.param", "target.mapping", "dedupe.by", "dedupe.keep"):
        assert f'data-field="{field}"' in page, field
    assert 'value="toda hora"' in page and 'value="path.x"' in page
    malformed = {**_form(action_id), "request.query": '{"types": '}
    refused = await client.post("/admin/schedules", data={"csrf": token, **malformed})
    page = await refused.text()
    assert refused.status == 422 and 'data-field="request.query"' in page
    assert "{&#34;types&#34;:</textarea>" in page
    assert await _schedules(client) == []


async def test_an_edit_changes_the_definition_and_keeps_the_cursor(
    client: Client, services: Services, partner: Partner
) -> None:
    await make_user(services)
    action_id = await _reader(client, partner)
    partner.respond_with(200, FIRST_PAGE)
    body = {**_schedule_body(action_id), "cursor": {**_schedule_body(action_id)["cursor"]}}
    body["cursor"]["initial"] = 7
    schedule = await post(client, "/api/v1/schedules", body)
    await client.app[services_key].schedule_runner.run_until_idle()
    await log_in(client)
    form_page = await (await client.get(f"/admin/schedules/{schedule['id']}/edit")).text()
    assert 'value="frota-api"' in form_page and 'value="7"' in form_page
    token = await csrf(client, f"/admin/schedules/{schedule['id']}/edit")
    changed = _form(
        action_id,
        every="0 6 * * 1-5",
        timezone="America/Manaus",
        **{"cursor.initial": "7", "dedupe.by": "placa"},
    )
    saved = await client.post(
        f"/admin/schedules/{schedule['id']}/edit", data={"csrf": token, **changed}
    )
    assert saved.status == 200 and "cursor foi mantido" in await saved.text()
    (stored,) = await _schedules(client)
    assert (stored["every"], stored["timezone"]) == ("0 6 * * 1-5", "America/Manaus")
    assert stored["cursor"]["initial"] == 7  # shown unchanged: still a number
    assert stored["dedupe"] == {"by": "placa", "keep": 1000}
    assert stored["state"]["cursor"] == "c2"
    # A change of the request names another feed: the schedule starts it again, and says so.
    changed["request.query"] = '{"tipo": "leve"}'
    saved = await client.post(
        f"/admin/schedules/{schedule['id']}/edit", data={"csrf": token, **changed}
    )
    assert saved.status == 200 and "recomeça do cursor inicial" in await saved.text()
    (stored,) = await _schedules(client)
    assert stored["request"] == {"query": {"tipo": "leve"}, "body": None}
    assert stored["state"]["cursor"] is None
    # Emptying the cursor and the request removes them.
    cleared = {**changed, "cursor.from": "", "cursor.param": "", "cursor.initial": ""}
    cleared["request.query"] = ""
    await client.post(f"/admin/schedules/{schedule['id']}/edit", data={"csrf": token, **cleared})
    (stored,) = await _schedules(client)
    assert stored["cursor"] is None and stored["request"] is None


async def test_pause_and_resume_and_run_now_while_paused_is_refused(
    client: Client, services: Services, partner: Partner
) -> None:
    await make_user(services)
    schedule = await post(
        client, "/api/v1/schedules", _schedule_body(await _reader(client, partner))
    )
    base = f"/admin/schedules/{schedule['id']}"
    await log_in(client)
    token = await csrf(client, base)
    paused = await client.post(f"{base}/pause", data={"csrf": token})
    page = await paused.text()
    assert "Agendamento pausado" in page and f'action="{base}/resume"' in page
    refused = await client.post(f"{base}/run", data={"csrf": token})
    assert refused.status == 409 and "resume it first" in await refused.text()
    await client.post(f"{base}/resume", data={"csrf": token})
    assert [s["status"] for s in await _schedules(client)] == ["active"]


async def test_a_viewer_sees_schedules_but_every_change_is_refused(
    client: Client, services: Services, partner: Partner
) -> None:
    action_id = await _reader(client, partner)
    schedule = await post(client, "/api/v1/schedules", _schedule_body(action_id))
    await make_user(services, email="vera@acme.com.br", role="viewer")
    await log_in(client, email="vera@acme.com.br")
    base = f"/admin/schedules/{schedule['id']}"
    page = await (await client.get(base)).text()
    assert "frota-api" in page and f"{base}/pause" not in page and f"{base}/edit" not in page
    token = await csrf(client, "/admin/")
    for path, data in (
        ("/admin/schedules", _form(action_id, name="outro")),
        (f"{base}/pause", {}),
        (f"{base}/run", {}),
        (f"{base}/edit", _form(action_id, every="1h")),
        (f"{base}/delete", {}),
    ):
        response = await client.post(path, data={"csrf": token, **data})
        assert response.status == 403, path
    (kept,) = await _schedules(client)
    assert (kept["status"], kept["every"]) == ("active", "5m")


async def test_another_tenants_schedule_is_not_found_and_unchanged(
    client: Client, services: Services, partner: Partner
) -> None:
    theirs = await post(
        client,
        "/api/v1/schedules",
        {**_schedule_body(await _reader(client, partner, "globex")), "name": "their feed"},
        tenant="globex",
    )
    await make_user(services)
    await log_in(client)
    base = f"/admin/schedules/{theirs['id']}"
    for path in (base, f"{base}/edit"):
        response = await client.get(path)
        assert response.status == 404 and "their feed" not in await response.text()
    token = await csrf(client)
    for action in ("pause", "run", "delete", "edit"):
        response = await client.post(f"{base}/{action}", data={"csrf": token, "name": "x"})
        assert response.status == 404, action
    (kept,) = await _schedules(client, "globex")
    assert (kept["name"], kept["status"]) == ("their feed", "active")


async def test_markup_in_a_schedule_name_is_shown_as_text(
    client: Client, services: Services, partner: Partner
) -> None:
    evil = "<script>alert(1)</script><b>x</b>"
    action_id = await _reader(client, partner)
    schedule = await post(client, "/api/v1/schedules", {**_schedule_body(action_id), "name": evil})
    await make_user(services)
    await log_in(client)
    for path in ("/admin/schedules", f"/admin/schedules/{schedule['id']}"):
        page = await (await client.get(path)).text()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in page
        assert evil not in page


def _schedule_body(action_id: str) -> dict[str, Any]:
    return {
        "name": "frota-api",
        "action_id": action_id,
        "every": "5m",
        "cursor": {"from": "next", "param": "query.after"},
        "target": {"entity_type": "vehicle", "mapping": "frota-api"},
    }


async def test_a_page_numbered_schedule_is_created_from_the_form_and_edited_as_one(
    client: Client, services: Services, partner: Partner
) -> None:
    await make_user(services)
    action_id = await _reader(client, partner)
    await log_in(client)
    token = await csrf(client, "/admin/schedules/new")
    paged = {"cursor.from": "", "cursor.param": "query.page", "cursor.initial": "1"}
    created = await client.post(
        "/admin/schedules",
        data={"csrf": token, **_form(action_id, **paged, **{"cursor.step": "1"})},
        allow_redirects=False,
    )
    assert created.status == 303, await created.text()
    (schedule,) = await _schedules(client)
    assert schedule["cursor"] == {"step": 1, "param": "query.page", "more": None, "initial": 1}
    form_page = await (await client.get(f"/admin/schedules/{schedule['id']}/edit")).text()
    assert 'name="cursor.step"' in form_page and 'value="1"' in form_page
    shown = await (await client.get(f"/admin/schedules/{schedule['id']}")).text()
    assert "<code>+1</code> → <code>query.page</code>" in shown
    assert "cadastros · Veículos · " in shown  # its target, in the page's words


async def test_emptying_a_schedules_required_fields_is_refused_there_and_keeps_the_input(
    client: Client, services: Services, partner: Partner
) -> None:
    action_id = await _reader(client, partner)
    body = {
        "name": "poll",
        "action_id": action_id,
        "every": "5m",
        "max_pages": 7,
        "target": {"entity_type": "vehicle", "mapping": "frota-api"},
    }
    schedule = await post(client, "/api/v1/schedules", body)
    api = f"/api/v1/schedules/{schedule['id']}"
    before = await (await client.get(api, headers=auth())).json()
    await make_user(services)
    await log_in(client)
    edit = f"/admin/schedules/{schedule['id']}/edit"
    fields = form_fields(await (await client.get(edit)).text(), edit)
    emptied = ("name", "every", "max_pages")
    posted = [(n, "" if n in emptied else v) for n, v in fields]
    refused = await client.post(edit, data=posted, allow_redirects=False)
    assert refused.status == 422
    page = await refused.text()
    assert page.count('aria-invalid="true"') >= 3
    assert await (await client.get(api, headers=auth())).json() == before


async def test_an_interval_schedules_time_zone_is_kept_and_an_unknown_one_refused_there(
    client: Client, services: Services, partner: Partner
) -> None:
    await make_user(services)
    action_id = await _reader(client, partner)
    schedule = await post(
        client, "/api/v1/schedules", {**_schedule_body(action_id), "every": "30s"}
    )
    await log_in(client)
    edit = f"/admin/schedules/{schedule['id']}/edit"
    fields = form_fields(await (await client.get(edit)).text(), edit)
    typed = [(n, "Mars/Olympus" if n == "timezone" else v) for n, v in fields]
    refused = await client.post(edit, data=typed)
    page = await refused.text()
    assert refused.status == 422 and 'data-field="timezone"' in page, page
    assert "unknown time zone" in page and 'value="Mars/Olympus"' in page
    # typed again on the refused page (what was typed kept)
    again = form_fields(page, edit)
    typed = [(n, "America/Manaus" if n == "timezone" else v) for n, v in again]
    saved = await client.post(edit, data=typed)
    page = await saved.text()
    assert saved.status == 200, page
    assert "30s</code> · America/Manaus" in page
    (stored,) = await _schedules(client)
    assert (stored["every"], stored["timezone"]) == ("30s", "America/Manaus")


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def _listed(page: str) -> list[str]:
    """The names a list page shows, in order."""
    return re.findall(r'<td class="name"><a href="[^"]+">([^<]+)</a>', page)


async def test_triggers_and_schedules_are_found_by_name_beyond_the_page_shown(
    client: Client, services: Services, partner: Partner
) -> None:
    await make_user(services)
    for n in range(60):  # more than the list's page of 50
        await post(
            client, "/api/v1/triggers", {"name": f"gatilho-{n:02d}", "entity_type": "vehicle"}
        )
    action_id = await _reader(client, partner)
    for name in ("frota-norte", "Frota-Sul", "estoque"):
        await post(client, "/api/v1/schedules", {**_schedule_body(action_id), "name": name})
    await log_in(client)
    first = await (await client.get("/admin/triggers")).text()
    assert "Filtrar as linhas desta página" in first  # what the live filter covers
    later = sorted({f"gatilho-{n:02d}" for n in range(60)} - set(_listed(first)))
    assert len(later) == 10  # on the next page (by id)
    found = await (await client.get("/admin/triggers", params={"name": later[0].upper()})).text()
    assert _listed(found) == [later[0]] and f'value="{later[0].upper()}"' in found
    fives = await (await client.get("/admin/triggers?name=lho-5&limit=5")).text()
    after = re.search(r'<p class="pager"><a href="\?([^"]+)"', fives)
    assert after is not None and "name=lho-5" in after.group(1)
    rest = await (await client.get("/admin/triggers?" + html.unescape(after.group(1)))).text()
    assert sorted(_listed(fives) + _listed(rest)) == [f"gatilho-5{n}" for n in range(10)]
    literal = await (await client.get("/admin/triggers", params={"name": "gatilho.*"})).text()
    assert _listed(literal) == [] and "Nenhum nome contém esse texto" in literal
    schedules = await (await client.get("/admin/schedules?name=frota")).text()
    assert _listed(schedules) == ["frota-norte", "Frota-Sul"]


async def test_a_name_is_found_in_either_unicode_form_and_without_its_accents(
    client: Client, services: Services, partner: Partner
) -> None:
    """A name sent decomposed (NFD: macOS, iOS, many ERPs) is found typed composed (NFC, as a
    browser sends it), and the reverse; `sao joao` finds `São João`: the search compares the
    folded forms (any Unicode form and case, no accents)."""
    await make_user(services)
    name = "Rastreador São João"
    await post(client, "/api/v1/triggers", {"name": nfd(name), "entity_type": "vehicle"})
    await post(client, "/api/v1/triggers", {"name": "Rastreador Ilhéus", "entity_type": "vehicle"})
    action_id = await _reader(client, partner)
    await post(client, "/api/v1/schedules", {**_schedule_body(action_id), "name": nfd(name)})
    await log_in(client)
    for typed in ("São João", "SÃO JOÃO", "sao joao", nfd("são joão")):
        found = await (await client.get("/admin/triggers", params={"name": typed})).text()
        assert _listed(found) == [html.escape(name)], typed  # stored in NFC
        found = await (await client.get("/admin/schedules", params={"name": typed})).text()
        assert _listed(found) == [html.escape(name)], typed
    found = await (await client.get("/admin/triggers", params={"name": nfd("ILHÉUS")})).text()
    assert _listed(found) == ["Rastreador Ilhéus"]
    found = await (await client.get("/admin/triggers", params={"name": "sao  joao"})).text()
    assert _listed(found) == []  # the characters typed, two spaces included


async def test_a_name_stored_before_the_folded_form_is_found_once_the_upgrade_step_ran(
    client: Client, services: Services, partner: Partner
) -> None:
    """A trigger or schedule stored before the folded name existed gets it from the one-time
    upgrade step at start, and is then found as one written since: in any case and Unicode
    form, without its accents."""
    await make_user(services)
    name = "Rastreador São João"
    await post(client, "/api/v1/triggers", {"name": name, "entity_type": "vehicle"})
    action_id = await _reader(client, partner)
    await post(client, "/api/v1/schedules", {**_schedule_body(action_id), "name": nfd(name)})
    db = services.store.db
    for collection in ("triggers", "schedules"):  # as an earlier version stored them
        await db[collection].update_many({}, {"$unset": {"name_folded": ""}})
    await db["migrations"].delete_one({"_id": "names.folded"})  # a database from before
    await services.store.ensure_indexes()
    await log_in(client)
    for path, stored in (("/admin/triggers", name), ("/admin/schedules", name)):  # in NFC
        for typed in ("sao joao", "SÃO João"):
            found = await (await client.get(path, params={"name": typed})).text()
            assert _listed(found) == [stored], (path, typed)
    assert await db["migrations"].find_one({"_id": "names.folded"}) is not None


async def test_a_name_search_longer_than_any_name_is_a_bad_request_not_an_unavailable_database(
    client: Client, services: Services
) -> None:
    """501 dots escaped are a 1,002-character pattern, past the embedded server's cap: that
    was a 503 "database unavailable" with the engine's BadValue. A search of more characters
    than any name has is a 400 saying so; 200 still searches."""
    await make_user(services)
    await log_in(client)
    for path in ("/admin/triggers", "/admin/schedules"):
        for text in ("." * 501, "João.Silva " * 91):
            response = await client.get(path, params={"name": text})
            page = await response.text()
            assert response.status == 400, (path, response.status)
            assert "Retry-After" not in response.headers
            assert "a name search is at most 200 characters" in page and "BadValue" not in page
        most = await client.get(path, params={"name": "." * 200})
        assert most.status == 200 and "Nenhum nome contém esse texto" in await most.text()


async def test_a_runs_note_and_refused_cursor_are_shown_in_its_history(
    client: Client, services: Services, partner: Partner
) -> None:
    """A run the partner throttled (a 429 after a page: `more`, waiting as asked) says so in
    its `note`, and one whose partner answered an older time cursor names it
    (`cursor_refused`): the run history shows both, not a bare `more` or `ok`."""
    await make_user(services)
    action_id = await _reader(client, partner)
    partner.respond_with(200, {"veiculos": [], "next": "2026-11-01T00:00:00Z"})
    partner.respond_with(200, {**FIRST_PAGE, "next": "2026-11-20T10:00:00Z"}, times=1)
    partner.respond_with(429, {"erro": "devagar"}, times=1)
    await log_in(client)
    token = await csrf(client, "/admin/schedules/new")
    created = await client.post(
        "/admin/schedules", data={"csrf": token, **_form(action_id)}, allow_redirects=False
    )
    assert created.status == 303, await created.text()
    (schedule,) = await _schedules(client)
    runner = client.app[services_key].schedule_runner
    assert await runner.run_until_idle() == {"more": 1}
    await client.post(f"/admin/schedules/{schedule['id']}/run", data={"csrf": token})
    assert await runner.run_until_idle() == {"ok": 1}
    page = await (await client.get(f"/admin/schedules/{schedule['id']}")).text()
    runs = page[page.index('data-testid="schedule-runs"') :]
    note = re.search(r'data-testid="run-note">([^<]*)<', runs)
    assert note is not None and "429" in html.unescape(note.group(1)), runs
    refused = re.search(r'data-testid="run-cursor-refused">.*?<code>([^<]*)</code>', runs)
    assert refused is not None and refused.group(1) == "2026-11-01T00:00:00Z", runs
