"""What an admin types reaches the use cases as typed, over HTTP: secrets are neither trimmed
nor kept through a login (the page after it asks for them again), numbers are read in the
form's language with the real problem named, a text too long is refused at its field (never
cut), and a just-deleted entity's page says so at once."""

from __future__ import annotations

import base64
import html
import re
from typing import Any

from aiohttp import FormData

from gateway.clock import from_iso, utcnow
from gateway.flows.service import MAX_PAUSE_REASON
from gateway.services import Services
from gateway.web.state import services_key
from tests.flow_support import drain
from tests.partner_double import Partner, create_action, create_partner, partner, post
from tests.support import auth
from tests.ui_support import (
    ALERT_FLOW,
    PASSWORD,
    POLLED_MAPPING,
    Client,
    csrf,
    form_fields,
    log_in,
    log_in_from,
    make_user,
    replaced,
)

__all__ = ["partner"]  # the fixture

SECRET = " S3cr3t Basic Pass! "  # spaces at both ends are part of it


def _field_error(page: str, name: str) -> str:
    found = re.search(
        rf'<div class="field-error" id="e-[^"]*" data-field="{re.escape(name)}">(.*?)</div>',
        page,
        re.S,
    )
    assert found is not None, f"no problem shown at {name}"
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1)))


async def _partner_basic(client: Client, partner: Partner) -> tuple[str, dict[str, Any]]:
    erp = await create_partner(client, partner.url)
    action = await create_action(
        client, erp["id"], name="ler", method="GET", path="/x", mode="proxy"
    )
    return erp["id"], action


async def _basic_seen(client: Client, partner: Partner, action: dict[str, Any]) -> str:
    """The Basic credentials the partner receives when the action is called now."""
    invoked = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", json={"payload": {"a": 1}}, headers=auth()
    )
    assert invoked.status == 200, await invoked.text()
    header = partner.requests[-1].headers["Authorization"]
    assert header.startswith("Basic ")
    return base64.b64decode(header[6:]).decode()


async def test_a_form_posted_after_its_session_ended_keeps_no_secret_and_asks_for_it_again(
    client: Client, services: Services, partner: Partner
) -> None:
    await make_user(services)
    await log_in(client)
    partner_id, action = await _partner_basic(client, partner)
    page = await (await client.get(f"/admin/partners/{partner_id}")).text()
    path = f"/admin/partners/{partner_id}/credentials"
    typed = replaced(
        form_fields(page, path), auth__type="basic", auth__username="erp", auth__password=SECRET
    )
    # The session ends (a new password) while the form is open; its cookie stays.
    await services.accounts.change_user("acme", "ana@acme.com.br", password=PASSWORD)
    refused = await client.post(path, data=typed, allow_redirects=False)
    login_page = await refused.text()
    assert refused.status == 401, login_page
    assert "S3cr3t" not in login_page  # not as a hidden field, not anywhere
    assert 'name="kept:auth.username" value="erp"' in login_page  # the rest is kept
    assert login_page.count('name="retype" value="auth.password"') == 2  # both login forms
    assert "Senhas e credenciais não são guardadas" in login_page
    # Logging in again from that page: the page after it shows no secret and asks for it.
    resumed = await log_in_from(client, login_page)
    resume_page = await resumed.text()
    assert resumed.status == 200, resume_page
    assert "S3cr3t" not in resume_page
    assert re.search(r'<input id="r-1" name="auth.password" type="password"', resume_page)
    assert '<label for="r-1"><code>auth.password</code></label>' in resume_page
    assert "Digite de novo, antes de salvar" in resume_page
    # Typed again there, the form is saved as typed, spaces and all.
    resume = replaced(form_fields(resume_page, path), auth__password=SECRET)
    saved = await client.post(path, data=resume, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    assert await _basic_seen(client, partner, action) == f"erp:{SECRET}"


async def test_a_new_users_password_typed_as_the_session_ended_is_not_kept(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    page = await (await client.get("/admin/users")).text()
    typed = replaced(
        form_fields(page, "/admin/users"), email="vera@acme.com.br", password="vera's new password"
    )
    await services.accounts.change_user("acme", "ana@acme.com.br", password=PASSWORD)
    refused = await client.post("/admin/users", data=typed, allow_redirects=False)
    login_page = await refused.text()
    assert refused.status == 401, login_page
    assert "new password" not in login_page and "vera&#39;s" not in login_page
    assert 'name="kept:email" value="vera@acme.com.br"' in login_page
    assert 'name="retype" value="password"' in login_page


async def test_a_password_with_spaces_set_by_the_cli_logs_in_as_typed(
    client: Client, services: Services
) -> None:
    spaced = "  spaced password here  "
    await services.accounts.create_user("acme", "vera@acme.com.br", "admin", spaced)
    trimmed = await log_in(client, email="vera@acme.com.br", password=spaced.strip())
    assert trimmed.status == 401  # the spaces are part of the password
    exact = await log_in(client, email="vera@acme.com.br", password=spaced)
    assert exact.status == 303, await exact.text()


async def test_partner_credentials_typed_in_the_ui_reach_the_partner_as_typed(
    client: Client, services: Services, partner: Partner
) -> None:
    await make_user(services)
    await log_in(client)
    partner_id, action = await _partner_basic(client, partner)
    page = await (await client.get(f"/admin/partners/{partner_id}")).text()
    path = f"/admin/partners/{partner_id}/credentials"
    typed = replaced(
        form_fields(page, path),
        base_url=f"  {partner.url}  ",  # not a secret: trimmed
        auth__type="basic",
        auth__username="u",
        auth__password=" pw with spaces ",
    )
    saved = await client.post(path, data=typed, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    assert await _basic_seen(client, partner, action) == "u: pw with spaces "


async def test_a_credentials_username_typed_in_the_ui_reaches_the_partner_as_from_the_api(
    client: Client, services: Services, partner: Partner
) -> None:
    """Every member of a credential is taken as typed, not only its secret: the same Basic
    username and password reach the partner alike from the API and from the page."""
    await make_user(services)
    await log_in(client)
    partner_id, action = await _partner_basic(client, partner)
    credentials = {"type": "basic", "username": " u ", "password": " p "}
    api = await client.patch(
        f"/api/v1/partners/{partner_id}", json={"auth": credentials}, headers=auth()
    )
    assert api.status == 200, await api.text()
    from_api = await _basic_seen(client, partner, action)
    assert from_api == " u : p "
    page = await (await client.get(f"/admin/partners/{partner_id}")).text()
    path = f"/admin/partners/{partner_id}/credentials"
    typed = replaced(
        form_fields(page, path), auth__type="basic", auth__username=" u ", auth__password=" p "
    )
    saved = await client.post(path, data=typed, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    assert await _basic_seen(client, partner, action) == from_api


async def _trigger(client: Client) -> dict[str, Any]:
    trigger: dict[str, Any] = await post(
        client, "/api/v1/triggers", {"name": "gps", "entity_type": "vehicle"}
    )
    return trigger


async def _rotate(client: Client, trigger_id: str, grace: str, lang: str) -> tuple[int, str]:
    token = await csrf(client, f"/admin/triggers/{trigger_id}")
    data = {"csrf": token, "lang": lang, "grace_seconds": grace}
    response = await client.post(f"/admin/triggers/{trigger_id}/rotate", data=data)
    return response.status, await response.text()


async def _longest_grace(client: Client, trigger_id: str) -> float:
    """The seconds the oldest credential still has, after a rotation."""
    doc = await (await client.get(f"/api/v1/triggers/{trigger_id}", headers=auth())).json()
    until = [from_iso(c["valid_until"]) for c in doc["credentials"] if c["valid_until"]]
    return max((u - utcnow()).total_seconds() for u in until)


async def test_a_rotations_grace_is_read_in_the_forms_language_and_each_problem_named(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    trigger = await _trigger(client)
    # 1800 as each language prints it.
    for grace, lang in (("1.800", "pt-BR"), ("1,800", "en")):
        status, page = await _rotate(client, trigger["id"], grace, lang)
        assert status == 200, page
        assert 1790 < await _longest_grace(client, trigger["id"]) <= 1800
    refused = {
        "99999999999": "Grande demais",  # the API's keyword: maximum
        "9" * 5000: "Grande demais",  # past what int() reads: still too large, not text
        "-5": "Pequeno demais",
        "abc": "Tipo inválido",
        "1,5": "Tipo inválido",  # a fraction of a second
    }
    for grace, label in refused.items():
        status, page = await _rotate(client, trigger["id"], grace, "pt-BR")
        assert status == 422, (grace, page[:300])
        assert _field_error(page, "grace_seconds").startswith(f"{label}:"), grace


async def test_a_whole_number_takes_ascii_digits_in_the_pages_grouping_and_nothing_else(
    client: Client, services: Services
) -> None:
    """Python's int() reads `1_800`, `+1800` and other scripts' digits: a form does not."""
    await make_user(services)
    await log_in(client)
    trigger = await _trigger(client)
    refused = {
        ("1_8_0_0", "pt-BR"): "Tipo inválido",
        ("1_0", "en"): "Tipo inválido",
        ("+1800", "en"): "Tipo inválido",
        ("\uff11\uff18\uff10\uff10", "en"): "Tipo inválido",  # full-width 1800
        ("\u0661\u0668\u0660\u0660", "pt-BR"): "Tipo inválido",  # Arabic-Indic 1800
        ("1.800", "en"): "Tipo inválido",  # a Portuguese group on an English page
        ("1 800", "pt-BR"): "Tipo inválido",
        ("1." + "000." * 1500 + "000", "pt-BR"): "Grande demais",  # grouped, 4,504 digits
        ("-" + "9" * 5000, "en"): "Pequeno demais",
    }
    for (grace, lang), label in refused.items():
        status, page = await _rotate(client, trigger["id"], grace, lang)
        assert status == 422, (grace[:20], page[:300])
        assert _field_error(page, "grace_seconds").startswith(f"{label}:"), grace[:20]
    # Leading zeros are no digits of the number: 4,999 of them and a 7 is 7.
    status, page = await _rotate(client, trigger["id"], "0" * 4999 + "7", "en")
    assert status == 200, page[:300]
    assert 0 < await _longest_grace(client, trigger["id"]) <= 7


async def test_a_flows_version_to_activate_that_is_no_number_is_refused_as_such(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    await _flow(client)
    token = await csrf(client, "/admin/flows/alerta-frota")
    refused = {
        "abc": "a version is a whole number (1, 2, ...), not &#39;abc&#39;",
        "0": "versions start at 1",
        "99999999999": "no version is that high",
        "0" * 5000: "versions start at 1",  # zero, however many zeros
    }
    for version, words in refused.items():
        data = {"csrf": token, "version": version}
        response = await client.post("/admin/flows/alerta-frota/activate", data=data)
        page = await response.text()
        assert response.status == 422, page
        assert words in page, version
    # The version as a Portuguese page prints a number: 1 is version 1.
    data = {"csrf": token, "version": "1", "lang": "pt-BR"}
    activated = await client.post("/admin/flows/alerta-frota/activate", data=data)
    assert activated.status == 200, await activated.text()


async def _flow(client: Client) -> None:
    """The flow `alerta-frota`: one call to an action (never made here)."""
    partner_id = (await create_partner(client, "http://127.0.0.1:9/"))["id"]
    await create_action(client, partner_id)
    await post(client, "/api/v1/flows", {**ALERT_FLOW, "steps": [ALERT_FLOW["steps"][0]]})


async def test_a_pause_reason_too_long_is_refused_at_its_field_not_cut(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    await _flow(client)
    reason = "manutenção " * 64  # 704 characters
    token = await csrf(client, "/admin/flows/alerta-frota")
    data = {"csrf": token, "reason": reason}
    response = await client.post("/admin/flows/alerta-frota/pause", data=data)
    page = await response.text()
    assert response.status == 422, page
    assert (
        _field_error(page, "reason")
        == f"Longo demais: reason is a text of at most {MAX_PAUSE_REASON}"
    )
    assert html.escape(reason.strip(), quote=True) in page  # what was typed is kept
    state = await (await client.get("/api/v1/flows/alerta-frota/pause", headers=auth())).json()
    assert state["paused"] is None, state  # not paused with a cut reason
    # The API refuses the same with the same words.
    api = await client.post(
        "/api/v1/flows/alerta-frota/pause", json={"reason": reason}, headers=auth()
    )
    problem = await api.json()
    assert api.status == 422 and problem["errors"][0]["message"] in _field_error(page, "reason")
    # One of the longest allowed is stored whole.
    token = await csrf(client, "/admin/flows/alerta-frota")
    longest = "x" * MAX_PAUSE_REASON
    paused = await client.post(
        "/admin/flows/alerta-frota/pause",
        data={"csrf": token, "reason": longest},
        allow_redirects=False,
    )
    assert paused.status == 303, await paused.text()
    flow_page = await (await client.get("/admin/flows/alerta-frota")).text()
    assert f"<q>{longest}</q>" in flow_page


async def test_a_pause_reason_too_long_for_a_flow_paused_meanwhile_shows_its_problem(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    await _flow(client)
    token = await csrf(client, "/admin/flows/alerta-frota")  # the page, not paused yet
    other_tab = await client.post(
        "/api/v1/flows/alerta-frota/pause", json={"reason": "other tab"}, headers=auth()
    )
    assert other_tab.status == 200, await other_tab.text()
    reason = "x" * 700
    response = await client.post(
        "/admin/flows/alerta-frota/pause", data={"csrf": token, "reason": reason}
    )
    page = await response.text()
    assert response.status == 422, page
    assert 'data-testid="pause-refused"' in page
    assert _field_error(page, "reason") == (
        f"Longo demais: reason is a text of at most {MAX_PAUSE_REASON}"
    )
    assert f'value="{reason}"' in page  # what was typed is shown, not lost
    state = await (await client.get("/api/v1/flows/alerta-frota/pause", headers=auth())).json()
    assert state["paused"]["reason"] == "other tab"


async def test_an_entity_deleted_in_the_ui_answers_410_at_once_before_the_relay_moves_it(
    client: Client, services: Services
) -> None:
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await drain(client.app[services_key])
    await make_user(services)
    await log_in(client)
    path = f"/admin/entities/vehicle/{vehicle['id']}"
    token = await csrf(client, path)
    deleted = await client.post(f"{path}/delete", data={"csrf": token}, allow_redirects=False)
    assert deleted.status == 303, await deleted.text()
    # No relay has run (the tests' app runs no workers): the deletion is only in the outbox.
    listed = await client.get("/api/v1/events?type=entity.deleted", headers=auth())
    assert (await listed.json())["items"] == []
    before = await client.get(path)
    page = await before.text()
    assert before.status == 410, page
    assert "Este cadastro foi excluído em" in page and "ABC1D23" in page
    assert "ana@acme.com.br" in page  # who deleted it
    event_link = re.search(r'href="/admin/events/([^"]+)"', page)
    assert event_link is not None
    # Once relayed, the same event, from the log.
    await drain(client.app[services_key])
    [gone] = (
        await (await client.get("/api/v1/events?type=entity.deleted", headers=auth())).json()
    )["items"]
    assert gone["id"] == event_link.group(1)
    after = await client.get(path)
    assert after.status == 410 and f'href="/admin/events/{gone["id"]}"' in await after.text()
    # An id that never was an entity of the type stays a 404.
    assert (await client.get(f"/admin/entities/driver/{vehicle['id']}")).status == 404


async def test_a_mapping_file_chosen_as_the_session_ended_is_asked_for_again_after_the_login(
    client: Client, services: Services
) -> None:
    """The upload form posted after its session ended, a file chosen: the login page and the
    page after it say the file (named) was not kept and ask for it again, in a file input of
    the resumed form; what they list as typed is the sample alone, not the form's own hidden
    `author` mark and `lang` (the sample and the box ticked). Chosen again, the resumed
    form uploads it."""
    await make_user(services)
    await log_in(client)
    page = await (await client.get("/admin/mappings")).text()
    loaded = form_fields(page, "/admin/mappings")
    await services.accounts.change_user("acme", "ana@acme.com.br", password=PASSWORD)
    upload = FormData()
    for name, value in replaced(loaded, payload='{"placa": "abc1d23"}'):
        upload.add_field(name, value)
    upload.add_field("file", POLLED_MAPPING.encode(), filename="erp.yaml")
    refused = await client.post("/admin/mappings", data=upload, allow_redirects=False)
    login_page = await refused.text()
    assert refused.status == 401, login_page
    assert login_page.count('name="refile:file" value="erp.yaml"') == 2  # both login forms
    assert "Arquivos escolhidos não são guardados" in login_page
    resumed = await log_in_from(client, login_page)
    resume_page = await resumed.text()
    assert resumed.status == 200, resume_page
    typed = resume_page.split('data-testid="typed"')[1].split("</dl>")[0]
    assert re.findall(r"<code>([^<]+)</code>", typed) == ["payload", "activate"]
    assert "O arquivo que você escolheu (erp.yaml) não foi guardado" in resume_page
    assert 'enctype="multipart/form-data"' in resume_page
    assert re.search(r'<input id="u-1" name="file" type="file"', resume_page)
    again = FormData()
    for name, value in form_fields(resume_page, "/admin/mappings"):
        again.add_field(name, value)
    again.add_field("file", POLLED_MAPPING.encode(), filename="erp.yaml")
    saved = await client.post("/admin/mappings", data=again, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    assert saved.headers["Location"] == "/admin/mappings/frota-api"
