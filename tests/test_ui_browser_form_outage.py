"""In a real browser: a trigger created while the database fails every write (the form's
one-time id cannot even be claimed) gets the page listing what was typed with *Salvar*;
pressed while only the trigger's own write fails, it is the trigger form again, at `503`,
what the admin typed in its fields and a message that nothing was saved; *Criar* once the
database answers creates it (docs/admin-ui.md, "A form refused")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.support import auth
from tests.test_ui_browser import Ui, ui
from tests.test_ui_form_outage import SAVED_AGAIN, failing
from tests.ui_support import make_user

__all__ = ["failing", "ui"]  # the fixtures


async def _press(ui: Ui, button: str) -> int:
    """Press a button that posts its form; the status of the page it answers."""
    async with ui.page.expect_navigation() as sent:
        await ui.page.get_by_role("button", name=button).click()
    answer = await sent.value
    assert answer is not None
    return int(answer.status)


async def test_a_trigger_created_while_the_database_is_busy_is_created_by_saving_again(
    ui: Ui, failing: Callable[..., Any]
) -> None:
    await make_user(ui.services)
    await ui.log_in()
    await ui.goto("/admin/triggers/new")
    await ui.page.fill("#f-name", "frota-gps")
    await ui.page.select_option("#f-entity_type", "vehicle")
    async with failing():
        assert await _press(ui, "Criar") == 503
    resume = ui.page.get_by_test_id("resume")
    assert "frota-gps" in await resume.inner_text()
    async with failing(["insert"]):  # the claim passes, the trigger's own write fails
        assert await _press(ui, "Salvar") == 503
    assert SAVED_AGAIN in await ui.page.locator("main").inner_text()
    assert await ui.page.input_value("#f-name") == "frota-gps"
    assert await ui.page.input_value("#f-entity_type") == "vehicle"
    for _ in range(20):  # a moment for the process to see the database answer again
        if await _press(ui, "Criar") != 503:
            break
        await asyncio.sleep(0.25)
    await ui.page.get_by_test_id("issued").wait_for()
    listed = await (await ui.api.get("/api/v1/triggers", headers=auth())).json()
    assert [t["name"] for t in listed["items"]] == ["frota-gps"]
    # The documents' 503s the browser logged were the point of the test.
    ui.console_errors[:] = [e for e in ui.console_errors if "status of 503" not in e]
