"""Entities in a real browser: an admin creates a vehicle from the list page (a problem
answered at its field, what was typed kept), edits it from its page, creates a fine (an
`other` of a built-in kind, chosen first) and deletes it after confirming."""

from __future__ import annotations

from gateway.entities import Origin
from tests.support import inbox_items
from tests.test_ui_browser import Ui, ui
from tests.ui_support import make_user

__all__ = ["ui"]  # the fixture

API = Origin("api", "tester")


async def test_an_admin_creates_edits_and_deletes_entities_by_clicking(ui: Ui) -> None:
    await make_user(ui.services)
    await ui.log_in()
    await ui.page.get_by_role("link", name="Cadastros", exact=True).click()
    await ui.page.get_by_test_id("entity-new-link").click()
    await ui.page.fill("#f-plate", "ABC1D23")
    await ui.page.fill("#f-model", "Actros 2651")
    await ui.page.fill("#f-year", "dois mil")
    await ui.page.select_option("#f-status", "active")
    await ui.page.fill("#f-last_service--at", "2026-11-30T08:00:00-03:00")
    await ui.page.get_by_test_id("entity-new").get_by_role("button", name="Criar").click()
    error = ui.page.locator('.field-error[data-field="/year"]')
    await error.wait_for()
    assert await ui.page.get_attribute("#f-year", "aria-invalid") == "true"
    assert await ui.page.input_value("#f-model") == "Actros 2651"  # kept as typed
    assert await ui.page.input_value("#f-status") == "active"
    await ui.page.fill("#f-year", "2022")
    await ui.page.get_by_test_id("entity-new").get_by_role("button", name="Criar").click()
    await ui.page.locator(".flash").wait_for()
    assert "Cadastro criado" in await ui.page.inner_text(".flash")
    vehicle = await ui.services.entities.get("acme", "vehicle", "ABC1D23")
    assert vehicle["data"]["year"] == 2022
    assert vehicle["data"]["last_service"] == {"at": "2026-11-30T08:00:00-03:00"}
    # Edit from its page.
    await ui.page.get_by_role("link", name="Alterar", exact=True).click()
    assert await ui.page.input_value("#f-year") == "2022"
    await ui.page.fill("#f-group", "Frota Sul")
    await ui.page.get_by_test_id("entity-edit").get_by_role("button", name="Salvar").click()
    await ui.page.locator(".flash").wait_for()
    assert "Cadastro salvo" in await ui.page.inner_text(".flash")
    stored = await ui.services.entities.get("acme", "vehicle", "ABC1D23")
    assert stored["data"]["group"] == "Frota Sul"
    await ui.shot("entity-edited")
    # A service done, from the same page.
    await ui.page.fill("#f-km", "12000")
    await ui.page.get_by_role("button", name="Registrar revisão").click()
    await ui.page.locator(".flash").wait_for()
    assert "Revisão registrada" in await ui.page.inner_text(".flash")
    vid = str(stored["_id"])
    [queued] = await inbox_items(ui.services.store, "acme", vid, "service")
    assert queued["km"] == 12000
    # A fine: its kind first, then its fields.
    await ui.goto("/admin/entities/other")
    await ui.page.get_by_test_id("entity-new-link").click()
    await ui.page.select_option("#f-kind", "fine")
    await ui.page.get_by_role("button", name="Continuar").click()
    await ui.page.fill("#f-key", "AIT-1")
    await ui.page.fill("#f-ait_number", "AIT-1")
    await ui.page.fill("#f-plate", "ABC1D23")
    await ui.page.fill("#f-amount_brl", "195,23")
    await ui.page.get_by_test_id("entity-new").get_by_role("button", name="Criar").click()
    await ui.page.locator("[data-testid=entity-new] .field-error").first.wait_for()
    assert await ui.page.input_value("#f-amount_brl") == "195,23"  # kept as typed
    await ui.shot("entity-fine-refused")
    assert await ui.page.locator('.field-error[data-field="/status"]').count() == 1
    await ui.page.select_option("#f-status", "open")
    await ui.page.get_by_test_id("entity-new").get_by_role("button", name="Criar").click()
    await ui.page.locator(".flash").wait_for()
    fine = await ui.services.entities.get("acme", "other", "fine:AIT-1")
    assert fine["data"]["amount_brl"] == 195.23 and fine["data"]["status"] == "open"
    # Delete it (the confirmation accepted): back on the list, gone.
    await ui.page.get_by_role("button", name="Excluir").click()
    await ui.page.wait_for_url(ui.url("/admin/entities/other"))
    assert "Cadastro excluído" in await ui.page.inner_text(".flash")
    assert "AIT-1" not in await ui.page.inner_text("main")


async def test_a_viewer_sees_no_entity_forms(ui: Ui) -> None:
    await ui.services.entities.create("acme", "vehicle", {"plate": "ABC1D23"}, API)
    await make_user(ui.services, role="viewer")
    await ui.log_in()
    await ui.goto("/admin/entities/vehicle")
    assert await ui.page.get_by_test_id("entity-new-link").count() == 0
    await ui.page.get_by_role("link", name="ABC1D23").click()
    assert await ui.page.get_by_role("link", name="Alterar", exact=True).count() == 0
    assert await ui.page.get_by_role("button", name="Excluir").count() == 0


async def test_saving_an_entity_unchanged_in_a_browser_keeps_its_spaces_and_line_breaks(
    ui: Ui,
) -> None:
    """A value with spaces around it or a line break in it (a partner wrote it so) is shown as
    stored, a multi-line one in a textarea (a one-line input drops the break), and a save
    that does not touch it keeps it: no new version. A line break typed in it is kept too."""
    created = await ui.services.entities.create(
        "acme", "vehicle", {"plate": "ABC1D23", "model": " Axor 2544 ", "make": "Merce\ndes"}, API
    )
    vehicle = created.entity
    await make_user(ui.services)
    await ui.log_in()
    await ui.goto(f"/admin/entities/vehicle/{vehicle['_id']}/edit")
    make = ui.page.locator("#f-make")
    assert await make.evaluate("e => e.tagName") == "TEXTAREA"
    assert await make.input_value() == "Merce\ndes"
    assert await ui.page.input_value("#f-model") == " Axor 2544 "
    await ui.page.get_by_test_id("entity-edit").get_by_role("button", name="Salvar").click()
    await ui.page.locator(".flash").wait_for()
    stored = await ui.services.entities.get("acme", "vehicle", "ABC1D23")
    assert stored["rev"] == vehicle["rev"]
    assert (stored["data"]["model"], stored["data"]["make"]) == (" Axor 2544 ", "Merce\ndes")
    await ui.page.get_by_role("link", name="Alterar", exact=True).click()
    await ui.page.fill("#f-make", "Mercedes\nBenz")
    await ui.page.get_by_test_id("entity-edit").get_by_role("button", name="Salvar").click()
    await ui.page.locator(".flash").wait_for()
    stored = await ui.services.entities.get("acme", "vehicle", "ABC1D23")
    assert stored["data"]["make"] == "Mercedes\nBenz"  # as typed, its line break as LF
    assert stored["data"]["model"] == " Axor 2544 "


async def _save_unchanged(ui: Ui, etype: str, ref: str) -> None:
    await ui.goto(f"/admin/entities/{etype}/{ref}/edit")
    await ui.page.get_by_test_id("entity-edit").get_by_role("button", name="Salvar").click()
    await ui.page.locator(".flash").wait_for()


async def test_a_date_a_date_input_cannot_hold_survives_an_untouched_save(ui: Ui) -> None:
    """`0000-01-01` passes the schema's `format: date` but is no value of an `<input
    type=date>` (year 0): the browser would show it empty and post "". It is shown in a
    text input instead, and an untouched save keeps it: no new version."""
    fine = {
        "kind": "fine",
        "key": "AIT-1",
        "ait_number": "AIT-1",
        "plate": "ABC1D23",
        "amount_brl": 130.16,
        "status": "open",
        "indication_deadline": "0000-01-01",
    }
    created = await ui.services.entities.create("acme", "other", fine, API)
    await make_user(ui.services)
    await ui.log_in()
    await _save_unchanged(ui, "other", str(created.entity["_id"]))
    stored = await ui.services.entities.get("acme", "other", str(created.entity["_id"]))
    assert stored["data"]["indication_deadline"] == "0000-01-01"
    assert stored["rev"] == created.entity["rev"]


async def test_a_nul_in_a_stored_text_survives_an_untouched_save(ui: Ui) -> None:
    """A NUL in a stored text (as a legacy fixed-width ERP field sends): the HTML parser
    shows it as U+FFFD, and the browser posts that back; an untouched save keeps the NUL."""
    created = await ui.services.entities.create(
        "acme", "vehicle", {"plate": "ABC1D23", "model": "Axor\u00002544"}, API
    )
    await make_user(ui.services)
    await ui.log_in()
    await _save_unchanged(ui, "vehicle", str(created.entity["_id"]))
    stored = await ui.services.entities.get("acme", "vehicle", "ABC1D23")
    assert stored["data"]["model"] == "Axor\u00002544"
    assert stored["rev"] == created.entity["rev"]
