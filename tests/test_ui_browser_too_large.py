"""A form over the body limit in a real browser: the UI's 413 page's "Back to the form" link
returns to the form with what was pasted (300 KB of mapping and the sample), as the
browser's Back does; it loaded the form anew, empty."""

from __future__ import annotations

from tests.test_ui_browser import FIXED_MAPPING, Ui, ui
from tests.ui_support import make_user

__all__ = ["ui"]  # the fixture

SAMPLE = '{"placa": "abc1d23"}'


async def test_the_413_pages_link_back_to_the_form_keeps_what_was_pasted(ui: Ui) -> None:
    await make_user(ui.services)
    await ui.log_in()
    await ui.goto("/admin/mappings")
    big = FIXED_MAPPING + "#" + "x" * 300_000 + "\n"  # over the test app's 256 KiB body limit
    await ui.page.fill("#f-source", big)
    await ui.page.fill("#f-payload", SAMPLE)
    await ui.page.get_by_test_id("upload").get_by_role("button", name="Enviar").click()
    await ui.page.get_by_test_id("too-large").wait_for()
    await ui.page.get_by_role("link", name="Voltar ao formulário").click()
    await ui.page.wait_for_url("**/admin/mappings")
    await ui.page.locator("#f-source").wait_for()
    assert len(await ui.page.input_value("#f-source")) == len(big)
    assert await ui.page.input_value("#f-payload") == SAMPLE
