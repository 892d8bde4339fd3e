"""A page's form changes things once: the same rendering of it sent again is refused and does
nothing; a form whose handling failed (an error page) may be sent again; dry runs may be
sent again; a post without the one-time id (a script of its own) is not checked."""

from __future__ import annotations

from typing import Any

from gateway.services import Services
from tests.partner_double import post
from tests.support import auth
from tests.ui_support import Client, form_fields, log_in, make_user, replaced


async def _trigger(client: Client, name: str) -> dict[str, Any]:
    body = {"name": name, "entity_type": "vehicle", "methods": ["POST"]}
    trigger: dict[str, Any] = await post(client, "/api/v1/triggers", body)
    return trigger


async def test_a_form_sent_twice_changes_things_once(client: Client, services: Services) -> None:
    trigger = await _trigger(client, "gps")
    await make_user(services)
    await log_in(client)
    page = f"/admin/triggers/{trigger['id']}"
    rotate = form_fields(await (await client.get(page)).text(), f"{page}/rotate")
    assert [n for n, _ in rotate].count("once") == 1
    first = await client.post(f"{page}/rotate", data=rotate)
    assert first.status == 200, await first.text()
    rotated = await (await client.get(f"/api/v1/triggers/{trigger['id']}", headers=auth())).json()
    again = await client.post(f"{page}/rotate", data=rotate)
    assert again.status == 409 and "já foi enviado" in await again.text()
    now = await (await client.get(f"/api/v1/triggers/{trigger['id']}", headers=auth())).json()
    assert now == rotated  # not rotated a second time
    # A form without the id nor the credentials it was shown (a script) is not checked: it
    # rotates.
    script = [(n, v) for n, v in rotate if n not in ("once", "credentials")]
    assert (await client.post(f"{page}/rotate", data=script)).status == 200


async def test_a_form_whose_handling_failed_may_be_sent_again(
    client: Client, services: Services
) -> None:
    trigger = await _trigger(client, "gps")
    other = await _trigger(client, "frota")
    await make_user(services)
    await log_in(client)
    edit = f"/admin/triggers/{trigger['id']}/edit"
    form = replaced(form_fields(await (await client.get(edit)).text(), edit), name="frota")
    taken = await client.post(edit, data=form)
    assert taken.status == 409 and "already exists" in await taken.text()
    renamed = await client.patch(
        f"/api/v1/triggers/{other['id']}", json={"name": "frota-antiga"}, headers=auth()
    )
    assert renamed.status == 200
    saved = await client.post(edit, data=form, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    stored = await client.get(f"/api/v1/triggers/{trigger['id']}", headers=auth())
    assert (await stored.json())["name"] == "frota"
