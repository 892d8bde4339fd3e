"""A channel's SMTP password typed in its JSON document is write-only in the admin UI too: not
kept through a login (the page after it asks for it in a field of its own), not echoed by a
refused form, and never saved by a form that lost it."""

from __future__ import annotations

import html
import json
from typing import Any

import pytest
from aiohttp import ClientResponse

from gateway.services import Services
from tests.partner_double import post
from tests.ui_support import (
    PASSWORD,
    Client,
    csrf,
    form_fields,
    log_in,
    log_in_from,
    make_user,
    replaced,
)

SMTP_PASSWORD = "Sup3r-SMTP-s3nha-XYZ"


def _channel_doc(password: str | None) -> dict[str, Any]:
    smtp: dict[str, Any] = {"host": "127.0.0.1", "port": 2525, "security": "none"}
    smtp.update(username="frota", cleartext_auth=True)
    if password is not None:
        smtp["password"] = password
    return {"name": "email", "type": "email", "smtp": smtp, "from": "Frota <a@acme.com.br>"}


async def _password_of(services: Services, channel_id: str) -> str | None:
    ready = await services.notify.channels.ready("acme", channel_id)
    assert ready.email is not None
    return ready.email.password


async def _edit_posted_as_the_session_ends(
    client: Client, services: Services, channel_id: str
) -> tuple[str, ClientResponse]:
    """The channel's edit form, only its password changed (the document otherwise the one
    shown), posted after the session ended (a new password): (its path, the answer)."""
    path = f"/admin/channels/{channel_id}/edit"
    fields = form_fields(await (await client.get(f"/admin/channels/{channel_id}")).text(), path)
    typed = replaced(fields, document=json.dumps(_channel_doc(SMTP_PASSWORD)))
    await services.accounts.change_user("acme", "ana@acme.com.br", password=PASSWORD)
    return path, await client.post(path, data=typed, allow_redirects=False)


async def test_a_channel_password_typed_as_the_session_ended_is_not_kept_and_is_asked_again(
    client: Client, services: Services
) -> None:
    channel = await post(client, "/api/v1/channels", _channel_doc("old-password-1"))
    await make_user(services)
    await log_in(client)
    path, refused = await _edit_posted_as_the_session_ends(client, services, channel["id"])
    login_page = await refused.text()
    assert refused.status == 401, login_page
    assert SMTP_PASSWORD not in login_page
    assert login_page.count('name="retype" value="document/smtp/password"') == 2
    assert "&#34;password&#34;: &#34;&#34;" in login_page  # blanked in the kept document
    resumed = await log_in_from(client, login_page)
    resume_page = await resumed.text()
    assert resumed.status == 200, resume_page
    assert SMTP_PASSWORD not in resume_page
    assert 'name="document/smtp/password" type="password"' in resume_page
    # Typed again in its field: saved, with it.
    resume = form_fields(resume_page, path)
    retyped = replaced(resume, **{"document/smtp/password": SMTP_PASSWORD})
    saved = await client.post(path, data=retyped, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    assert await _password_of(services, channel["id"]) == SMTP_PASSWORD


async def test_a_channel_form_resumed_without_its_password_is_refused_not_saved_without(
    client: Client, services: Services
) -> None:
    channel = await post(client, "/api/v1/channels", _channel_doc("old-password-1"))
    await make_user(services)
    await log_in(client)
    path, refused = await _edit_posted_as_the_session_ends(client, services, channel["id"])
    resume_page = await (await log_in_from(client, await refused.text())).text()
    # Saved without typing it again: refused, not saved with the old password as if changed.
    unsaid = await client.post(path, data=form_fields(resume_page, path))
    page = await unsaid.text()
    assert unsaid.status == 422, page
    assert "password is a non-empty string" in page
    assert await _password_of(services, channel["id"]) == "old-password-1"


async def test_a_new_channel_typed_as_the_session_ended_keeps_its_document_but_the_password(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    fields = form_fields(await (await client.get("/admin/channels")).text(), "/admin/channels")
    typed = replaced(fields, document=json.dumps(_channel_doc(SMTP_PASSWORD)))
    await services.accounts.change_user("acme", "ana@acme.com.br", password=PASSWORD)
    refused = await client.post("/admin/channels", data=typed, allow_redirects=False)
    login_page = await refused.text()
    assert refused.status == 401, login_page
    assert SMTP_PASSWORD not in login_page
    assert "&#34;username&#34;: &#34;frota&#34;" in login_page


async def test_a_channel_document_withheld_as_the_session_ended_is_asked_for_again_not_saved_empty(
    client: Client, services: Services
) -> None:
    """A document naming the password where its value cannot be told apart (Python's quotes)
    is withheld whole as the session ends: the page after the login offered to save "what you
    typed" with nothing of it (an empty document, a 422). It says the document was not kept
    and takes it pasted again, in a field that must be filled; pasted, it is saved."""
    await make_user(services)
    await log_in(client)
    fields = form_fields(await (await client.get("/admin/channels")).text(), "/admin/channels")
    pasted = str({"name": "email", "type": "email", "smtp": {"password": SMTP_PASSWORD}})
    await services.accounts.change_user("acme", "ana@acme.com.br", password=PASSWORD)
    refused = await client.post(
        "/admin/channels", data=replaced(fields, document=pasted), allow_redirects=False
    )
    login_page = await refused.text()
    assert refused.status == 401, login_page
    assert SMTP_PASSWORD not in html.unescape(login_page)
    assert login_page.count('name="retype" value="document"') == 2
    resumed = await log_in_from(client, login_page)
    resume_page = await resumed.text()
    assert resumed.status == 200, resume_page
    assert SMTP_PASSWORD not in html.unescape(resume_page)
    assert "Cole o documento de novo" in resume_page
    assert '<textarea id="r-1" name="document" rows="8" required' in resume_page
    assert 'type="hidden" name="document"' not in resume_page
    resume = form_fields(resume_page, "/admin/channels")
    assert [value for name, value in resume if name == "document"] == [""]
    saved = await client.post(
        "/admin/channels",
        data=replaced(resume, document=json.dumps(_channel_doc(SMTP_PASSWORD))),
        allow_redirects=False,
    )
    assert saved.status == 303, await saved.text()
    [channel] = await services.notify.channels.list("acme", after=None, limit=10)
    assert await _password_of(services, channel["_id"]) == SMTP_PASSWORD


async def test_a_refused_channel_document_is_shown_back_without_its_password(
    client: Client, services: Services
) -> None:
    channel = await post(client, "/api/v1/channels", _channel_doc("old-password-1"))
    await make_user(services)
    await log_in(client)
    token = await csrf(client, f"/admin/channels/{channel['id']}")
    doc = _channel_doc(SMTP_PASSWORD)
    doc["smtp"]["port"] = "x"
    refused = await client.post(
        f"/admin/channels/{channel['id']}/edit", data={"csrf": token, "document": json.dumps(doc)}
    )
    page = await refused.text()
    assert refused.status == 422, page
    assert SMTP_PASSWORD not in page
    assert "/smtp/password: a secret is never shown back; type it again" in html.unescape(page)
    token = await csrf(client, "/admin/channels")
    refused = await client.post(
        "/admin/channels", data={"csrf": token, "document": json.dumps(doc)}
    )
    page = await refused.text()
    assert refused.status == 422, page
    assert SMTP_PASSWORD not in page
    # Malformed JSON too: the member is blanked where it stands, the rest shown as typed.
    broken = json.dumps(_channel_doc(SMTP_PASSWORD))[:-1] + ","
    token = await csrf(client, "/admin/channels")
    refused = await client.post("/admin/channels", data={"csrf": token, "document": broken})
    page = await refused.text()
    assert refused.status == 422, page
    assert SMTP_PASSWORD not in page and "malformed JSON" in page
    assert broken.replace(SMTP_PASSWORD, "") in html.unescape(page)


_TYPED = {
    # A dict pasted from a script: Python's quotes.
    "single quotes": "{'name': 'email', 'type': 'email', 'smtp': {'password': '%s'}}",
    "an unquoted value": '{"name": "email", "type": "email", "smtp": {"password": %s}',
    "an escaped name": '{"name": "email", "smtp": {"host": "h", "pass\\u0077ord": "%s"},}',
    # JSON, the member given twice: the gateway reads the last, empty, one.
    "a member given twice": '{"name": "email", "smtp": {"password": "%s", "password": ""}}',
    "smtp given twice": '{"name": "email", "smtp": {"password": "%s"}, "smtp": {"host": "h"}}',
    # Malformed: the colon forgotten, a comma for it (where the value ends cannot be told).
    "no colon": '{"name": "email", "type": "email", "smtp": {"host": "h", "password" "%s"}}',
    "a comma for the colon": '{"name": "email", "smtp": {"host": "h", "password", "%s"}}',
    "an escaped name, no colon": '{"name": "email", "smtp": {"pass\\u0077ord" "%s"}}',
    # JSON: the document encoded twice (copied from a log line), another spelling of the name.
    "encoded twice": json.dumps(json.dumps({"name": "email", "smtp": {"password": "%s"}})),
    "capitalised": '{"name": "email", "type": "email", "smtp": {"Password": "%s"}}',
}


@pytest.mark.parametrize("typed", list(_TYPED))
async def test_a_channel_password_however_typed_is_neither_shown_back_nor_kept(
    client: Client, services: Services, typed: str
) -> None:
    """The password was blanked only as `"password": "…"` where the gateway read it: in a
    document with other quotes, escapes or a member given twice, a refused form showed it
    back, and the login page carried it, in what it kept of a form posted as the session
    ended. Whatever cannot be told apart from it is not shown back at all: the page says so."""
    document = _TYPED[typed] % SMTP_PASSWORD
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/channels")
    refused = await client.post("/admin/channels", data={"csrf": token, "document": document})
    page = html.unescape(await refused.text())
    assert refused.status == 422, page
    assert SMTP_PASSWORD not in page
    assert "a secret is never shown back" in page or "paste the document again" in page
    fields = form_fields(await (await client.get("/admin/channels")).text(), "/admin/channels")
    await services.accounts.change_user("acme", "ana@acme.com.br", password=PASSWORD)
    ended = await client.post(
        "/admin/channels", data=replaced(fields, document=document), allow_redirects=False
    )
    login_page = await ended.text()
    assert ended.status == 401, login_page
    assert SMTP_PASSWORD not in html.unescape(login_page)
