"""Fleet settings in a real browser: an admin changes a quality gate from the menu's page (a
value out of range answered at its field first); a viewer reads them without a save button."""

from __future__ import annotations

from tests.test_ui_browser import Ui, ui
from tests.ui_support import make_user

__all__ = ["ui"]  # the fixture


async def test_an_admin_changes_a_quality_gate_by_clicking(ui: Ui) -> None:
    await make_user(ui.services)
    await ui.log_in()
    await ui.page.get_by_role("link", name="Ajustes da frota", exact=True).click()
    assert await ui.page.input_value("#f-quality\\.max_speed_kmh") == "300"
    await ui.page.get_by_label("Velocidade máxima plausível (km/h)").fill("5")
    await ui.page.get_by_test_id("fleet-settings").get_by_role("button", name="Salvar").click()
    error = ui.page.locator(".field-error[data-field='quality.max_speed_kmh']")
    await error.wait_for()
    assert await ui.page.input_value("#f-quality\\.max_speed_kmh") == "5"
    await ui.page.get_by_label("Velocidade máxima plausível (km/h)").fill("160")
    await ui.page.get_by_test_id("fleet-settings").get_by_role("button", name="Salvar").click()
    await ui.page.locator(".flash").wait_for()
    assert "Ajustes da frota salvos" in await ui.page.inner_text(".flash")
    settings = await ui.services.fleet_settings.get("acme")
    assert settings.to_doc()["quality"]["max_speed_kmh"] == 160
    await ui.shot("fleet-settings")


async def test_a_viewer_reads_the_fleet_settings_and_cannot_save(ui: Ui) -> None:
    await make_user(ui.services, role="viewer")
    await ui.log_in()
    await ui.goto("/admin/fleet-settings")
    assert await ui.page.input_value("#f-retention_days") == "90"
    assert await ui.page.get_by_role("button", name="Salvar").count() == 0
    # The values are read, not typed over: disabled fields, in no form that posts.
    assert await ui.page.is_disabled("#f-retention_days")
    assert await ui.page.locator("main form[method=post]").count() == 0
    await ui.goto("/admin/notification-settings")
    assert await ui.page.is_disabled("#f-cooldown_seconds")
    assert await ui.page.locator("main form[method=post]").count() == 0
