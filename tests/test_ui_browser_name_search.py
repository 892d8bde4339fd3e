"""Finding a trigger by name in a real browser: the live row filter (ui.js) compares names as
the server's name search does, in either Unicode form, any case and without accents."""

from __future__ import annotations

import unicodedata

from tests.partner_double import post
from tests.test_ui_browser import Ui, ui
from tests.ui_support import make_user

__all__ = ["ui"]  # the fixture

NAME = "Rastreador São João"


async def test_the_row_filter_finds_a_decomposed_name_typed_composed_or_without_accents(
    ui: Ui,
) -> None:
    await make_user(ui.services)
    decomposed = unicodedata.normalize("NFD", NAME)
    await post(ui.api, "/api/v1/triggers", {"name": decomposed, "entity_type": "vehicle"})
    await post(ui.api, "/api/v1/triggers", {"name": "Rastreador Ilhéus", "entity_type": "vehicle"})
    await ui.log_in()
    await ui.goto("/admin/triggers")
    shown = ui.page.locator("main table tbody tr:not([hidden])")
    for typed in ("São João", "sao joao", "SAO JOÃO"):
        await ui.page.fill("input[data-filter]", typed)  # NFC, as a keyboard types it
        assert await shown.count() == 1, typed
        assert unicodedata.normalize("NFC", await shown.inner_text()).startswith(NAME)
    await ui.page.fill("input[data-filter]", unicodedata.normalize("NFD", "ilhéus"))
    assert await shown.count() == 1
    assert "Ilhéus" in unicodedata.normalize("NFC", await shown.inner_text())
    await ui.page.fill("input[data-filter]", "")
    assert await shown.count() == 2


async def test_the_name_search_finds_a_decomposed_name_typed_composed(ui: Ui) -> None:
    await make_user(ui.services)
    decomposed = unicodedata.normalize("NFD", NAME)
    await post(ui.api, "/api/v1/triggers", {"name": decomposed, "entity_type": "vehicle"})
    await post(ui.api, "/api/v1/triggers", {"name": "Rastreador Ilhéus", "entity_type": "vehicle"})
    await ui.log_in()
    await ui.goto("/admin/triggers")
    await ui.page.fill("input[name=name]", "são joão")
    await ui.page.get_by_role("button", name="Buscar").click()
    await ui.page.wait_for_url("**/admin/triggers?name=*")
    rows = ui.page.locator("main table tbody tr")
    assert await rows.count() == 1, await ui.page.inner_text("main")
    assert unicodedata.normalize("NFC", await rows.inner_text()).startswith(NAME)
