"""Back and Reload on a page a form's POST answered send that form again: a form changes
things once. Rotating a subscription's secret, then reloading the page that shows it, leaves
the partner's current secret signing beside the new one (it is not rotated a second time)."""

from __future__ import annotations

import re

from tests.partner_double import create_action, create_partner, create_subscription
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
