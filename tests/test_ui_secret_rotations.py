"""Rotating a flow's or an action's signing secret from the admin UI carries the rotation its
page showed, as a subscription's does: a rotate form from a page loaded before another
rotation (a second tab, another admin, a page sent again) is a 409 saying the secret is shown
only once and to rotate again from the page as it is now; nothing is rotated, and the secret
the first rotation showed stays the current one. A script's post without it is not checked."""

from __future__ import annotations

import re
from typing import Any

from gateway.services import Services
from tests.partner_double import create_action, create_partner
from tests.support import auth
from tests.ui_support import Client, form_fields, log_in, make_user

CALLS = """\
name: tell-erp
on:
  events: [entity.created]
  filter: {entity_type: vehicle}
steps:
  - id: erp
    call: erp-vehicle
"""


async def _action(client: Client) -> dict[str, Any]:
    erp = await create_partner(client, "http://127.0.0.1:19302", name="ERP")
    return await create_action(client, erp["id"], name="erp-vehicle", path="/veiculos")


async def _flow(client: Client) -> None:
    await _action(client)
    response = await client.post(
        "/api/v1/flows", data=CALLS, headers={**auth(), "Content-Type": "application/yaml"}
    )
    assert response.status == 201, await response.text()


async def _stale_rotation_refused(
    client: Client, services: Services, page: str, secret_id: str
) -> None:
    """Two tabs of `page`: the first rotates, the second's rotation is refused, and a page
    loaded after rotates again."""
    await make_user(services)
    await log_in(client)
    rotate = f"{page}/rotate-secret"
    tab_a = await (await client.get(page)).text()
    tab_b = await (await client.get(page)).text()
    first = await client.post(rotate, data=form_fields(tab_a, rotate))
    shown = re.findall(rf'<code id="{secret_id}">(whsec_[^<]+)</code>', await first.text())
    assert first.status == 200 and len(shown) == 1
    second = await client.post(rotate, data=form_fields(tab_b, rotate))
    html = await second.text()
    assert second.status == 409, html
    assert "secret was rotated since this page was loaded" in html
    assert "shown only once" in html and "whsec_" not in html
    fresh = await (await client.get(page)).text()
    again = await client.post(rotate, data=form_fields(fresh, rotate))
    assert again.status == 200, await again.text()
    # A script's post, without the rotation its page showed, is not checked.
    script = [(n, v) for n, v in form_fields(fresh, rotate) if n not in ("once", "rotated")]
    assert (await client.post(rotate, data=script)).status == 200


async def test_a_flow_secret_rotation_from_a_page_loaded_before_another_is_refused(
    client: Client, services: Services
) -> None:
    await _flow(client)
    await _stale_rotation_refused(client, services, "/admin/flows/tell-erp", "flow-secret")


async def test_an_action_secret_rotation_from_a_page_loaded_before_another_is_refused(
    client: Client, services: Services
) -> None:
    action = await _action(client)
    page = f"/admin/actions/{action['id']}"
    await _stale_rotation_refused(client, services, page, "action-secret")


async def test_a_second_rotation_does_not_replace_the_secret_the_first_showed(
    client: Client, services: Services
) -> None:
    """The refused rotation changed nothing: the action's signing state is the first's."""
    action = await _action(client)
    await make_user(services)
    await log_in(client)
    page = f"/admin/actions/{action['id']}"
    rotate = f"{page}/rotate-secret"
    tab_a = await (await client.get(page)).text()
    tab_b = await (await client.get(page)).text()
    assert (await client.post(rotate, data=form_fields(tab_a, rotate))).status == 200
    after_first = await services.store.actions.signing_of("acme", action["id"])
    assert (await client.post(rotate, data=form_fields(tab_b, rotate))).status == 409
    assert await services.store.actions.signing_of("acme", action["id"]) == after_first
