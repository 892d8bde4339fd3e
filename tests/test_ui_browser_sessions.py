"""An admin's session ends while they edit (it expired, or their password was changed): the
form they then save is not lost. The login page keeps it, and once logged in they save it
with one click; the form's checks (its revision included) apply as on any save."""

from __future__ import annotations

from typing import Any

from tests.partner_double import post
from tests.support import auth
from tests.test_ui_browser import Ui, ui
from tests.ui_support import PASSWORD, make_user

__all__ = ["ui"]  # the fixture


async def _trigger(ui: Ui) -> dict[str, Any]:
    body = {"name": "gps", "entity_type": "vehicle", "methods": ["POST"]}
    trigger: dict[str, Any] = await post(ui.api, "/api/v1/triggers", body)
    return trigger


async def _stored_name(ui: Ui, trigger_id: str) -> str:
    response = await ui.api.get(f"/api/v1/triggers/{trigger_id}", headers=auth())
    return str((await response.json())["name"])


async def _log_in_here(ui: Ui) -> None:
    """Logs in on the login page the browser is showing (not a fresh one)."""
    form = ui.page.get_by_test_id("password-login")
    await form.locator("input[name=tenant]").fill("acme")
    await form.locator("input[name=email]").fill("ana@acme.com.br")
    await form.locator("input[name=password]").fill(PASSWORD)
    await form.locator("button").click()


async def test_an_edit_saved_after_the_session_expired_is_kept_through_the_login(ui: Ui) -> None:
    await make_user(ui.services)
    trigger = await _trigger(ui)
    await ui.log_in()
    await ui.goto(f"/admin/triggers/{trigger['id']}/edit")
    typed = "Rastreadores — São João <b>"
    await ui.page.locator("#f-name").fill(typed)
    # The session's cookie lives as long as the session: at expiry the browser drops it.
    await ui.page.context.clear_cookies(name="rabbot_session")
    await ui.page.get_by_test_id("trigger-edit").locator("button.primary").click()
    alert = ui.page.locator("p.alert")
    await alert.wait_for()
    assert "foi guardado" in await alert.inner_text()
    assert await _stored_name(ui, trigger["id"]) == "gps"  # nothing saved without a session
    await _log_in_here(ui)
    resume = ui.page.get_by_test_id("resume")
    assert typed in await resume.inner_text()  # shown as text, markup and all
    await ui.shot("resume-after-expiry")
    await resume.locator("button").click()
    await ui.page.wait_for_url(ui.url(f"/admin/triggers/{trigger['id']}"))
    assert await _stored_name(ui, trigger["id"]) == typed


async def test_an_edit_saved_after_the_session_was_ended_is_kept_and_still_checked(
    ui: Ui,
) -> None:
    """The password changed meanwhile (the session ends, its cookie stays): the form is kept;
    another admin saved the trigger meanwhile, so the resumed save is refused as stale."""
    await make_user(ui.services)
    trigger = await _trigger(ui)
    await ui.log_in()
    await ui.goto(f"/admin/triggers/{trigger['id']}/edit")
    await ui.page.locator("#f-name").fill("gps-novo")
    await ui.services.accounts.change_user("acme", "ana@acme.com.br", password=PASSWORD)
    patched = await ui.api.patch(
        f"/api/v1/triggers/{trigger['id']}", json={"name": "gps-deles"}, headers=auth()
    )
    assert patched.status == 200
    await ui.page.get_by_test_id("trigger-edit").locator("button.primary").click()
    await ui.page.locator("p.alert").wait_for()
    await _log_in_here(ui)
    await ui.page.get_by_test_id("resume").locator("button").click()
    stale = ui.page.get_by_test_id("stale-edit")
    await stale.wait_for()
    assert "gps-deles" in await stale.inner_text()
    assert await ui.page.locator("#f-name").input_value() == "gps-novo"
    assert await _stored_name(ui, trigger["id"]) == "gps-deles"
