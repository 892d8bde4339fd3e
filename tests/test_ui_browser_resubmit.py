"""Back and Reload on a page a form's POST answered send that form again: a form changes
things once. Rotating a subscription's secret, then reloading the page that shows it, leaves
the partner's current secret signing beside the new one (it is not rotated a second time)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from tests.partner_double import create_action, create_partner, create_subscription
from tests.support import auth
from tests.test_ui_browser import Ui, ui
from tests.ui_support import make_user

__all__ = ["ui"]  # the fixture


async def test_reloading_a_rotated_secret_does_not_rotate_it_again(ui: Ui) -> None:
    await make_user(ui.services)
    partner = await create_partner(ui.api, "https://erp.example.com")
    action = await create_action(ui.api, partner["id"])
    subscription = await create_subscription(ui.api, action["id"])
    before = await ui.services.actions.get_subscription("acme", subscription["id"])
    await ui.log_in()
    await ui.goto(f"/admin/subscriptions/{subscription['id']}")
    await ui.page.locator("form[action$='/rotate-secret'] button").click()
    await ui.page.wait_for_url(re.compile(r".*/rotate-secret$"))
    [shown] = re.findall(r"whsec_[A-Za-z0-9+/=_-]+", await ui.page.content())
    response = await ui.page.reload()  # the browser sends the rotation again
    assert response is not None and response.status == 409
    assert "já foi enviado" in await ui.page.locator("main, body").first.inner_text()
    assert shown
    stored = await ui.services.actions.get_subscription("acme", subscription["id"])
    # Rotated once: the new secret, and the partner's current one still signing for 24 h (a
    # second rotation would have dropped it at once, and the secret shown with it).
    assert [s["sealed"] for s in stored["secrets"][1:]] == [before["secrets"][0]["sealed"]]


async def test_a_second_click_on_create_while_the_answer_loads_keeps_the_token_shown(
    ui: Ui,
) -> None:
    """An impatient admin clicks *Criar* again while a slow answer loads: the form is not sent
    a second time (the 409 "already sent" would replace the page that shows the new
    trigger's token, once), and the token is shown."""
    await make_user(ui.services)
    await ui.log_in()
    await ui.goto("/admin/triggers/new")
    await ui.page.fill("#f-name", "frota-lenta")
    await ui.page.select_option("#f-entity_type", "vehicle")
    sent: list[str] = []

    async def slow(route: Any) -> None:  # a loaded server, a mobile link
        sent.append(route.request.method)
        answer = await route.fetch(max_redirects=0)
        await asyncio.sleep(1.5)
        await route.fulfill(response=answer)

    await ui.page.route("**/admin/triggers", slow)
    create = ui.page.get_by_role("button", name="Criar")
    await create.scroll_into_view_if_needed()
    box = await create.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    await ui.page.mouse.click(x, y)
    await asyncio.sleep(0.5)
    await ui.page.mouse.click(x, y)  # where the button still is: the answer has not come
    await ui.page.get_by_test_id("issued").wait_for()
    token = (await ui.page.inner_text("#trigger-token")).strip()
    assert sent == ["POST"] and token
    listed = await (await ui.api.get("/api/v1/triggers", headers=auth())).json()
    assert [t["name"] for t in listed["items"]] == ["frota-lenta"]


async def test_reloading_a_flows_or_an_actions_rotated_secret_does_not_rotate_it_again(
    ui: Ui,
) -> None:
    """As a subscription's: the reload is refused (409), and the secret shown is the current
    one, the one before it still signing beside it."""
    partner = await create_partner(ui.api, "https://erp.example.com")
    action = await create_action(ui.api, partner["id"], name="erp-vehicle")
    flow = "name: tell-erp\non: {events: [entity.created]}\nsteps: [{id: erp, call: erp-vehicle}]"
    uploaded = await ui.api.post(
        "/api/v1/flows", data=flow, headers={**auth(), "Content-Type": "application/yaml"}
    )
    assert uploaded.status == 201, await uploaded.text()
    await make_user(ui.services)
    await ui.log_in()
    for page, signing in (
        ("/admin/flows/tell-erp", _flow_signing(ui, "tell-erp")),
        (f"/admin/actions/{action['id']}", _action_signing(ui, action["id"])),
    ):
        before = await signing()
        await ui.goto(page)
        await ui.page.locator("form[action$='/rotate-secret'] button").click()
        await ui.page.wait_for_url(re.compile(r".*/rotate-secret$"))
        [shown] = re.findall(r"whsec_[A-Za-z0-9+/=_-]+", await ui.page.content())
        response = await ui.page.reload()  # the browser sends the rotation again
        assert response is not None and response.status == 409, page
        assert shown not in await ui.page.content()
        after = await signing()
        assert after["rev"] == before["rev"] + 1, page  # rotated once
        assert [s["sealed"] for s in after["secrets"][1:]] == [before["secrets"][0]["sealed"]]


def _flow_signing(ui: Ui, name: str) -> Any:
    async def read() -> Any:
        head = await ui.services.store.db["flow_heads"].find_one({"name": name})
        return head["signing"]

    return read


def _action_signing(ui: Ui, action_id: str) -> Any:
    async def read() -> Any:
        doc = await ui.services.store.actions.signing_of("acme", action_id)
        return doc["signing"]

    return read
