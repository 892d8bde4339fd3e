"""A partner's settings from its page, in a real browser: timeout, rate limit and status are
saved; another origin in the base URL is refused at that field (the credentials go only where
they were given for) and moved with new credentials from the credentials form."""

from __future__ import annotations

from tests.partner_double import create_partner
from tests.test_ui_browser import Ui, ui
from tests.ui_support import make_user

__all__ = ["ui"]  # the fixture


async def test_an_admin_edits_a_partners_settings_and_moves_it_with_new_credentials(
    ui: Ui,
) -> None:
    await make_user(ui.services)
    erp = await create_partner(ui.api, "https://erp.example.com/api", name="ERP ✓")
    await ui.log_in()
    await ui.goto(f"/admin/partners/{erp['id']}")
    edit = ui.page.get_by_test_id("partner-edit")
    assert await edit.locator("#f-timeout_seconds").input_value() == "2"
    await edit.locator("#f-timeout_seconds").fill("7,5")
    await edit.locator("#f-rate_limit\\.per_second").fill("3")
    await edit.locator("#f-status").select_option("disabled")
    await edit.get_by_role("button", name="Salvar").click()
    await ui.page.locator(".flash").wait_for()
    stored = await ui.services.actions.get_partner("acme", erp["id"])
    assert stored["timeout_seconds"] == 7.5 and stored["status"] == "disabled"
    assert stored["rate_limit"] == {"per_second": 3, "burst": 1}
    assert stored["name"] == "ERP ✓" and stored["auth_type"] == "bearer"
    # A bad number, then another origin: each refused at its field, what was typed kept.
    edit = ui.page.get_by_test_id("partner-edit")
    await edit.locator("#f-max_concurrency").fill("muitas")
    await edit.get_by_role("button", name="Salvar").click()
    await ui.page.locator(".field-error[data-field=max_concurrency]").wait_for()
    assert await ui.page.input_value("#f-max_concurrency") == "muitas"
    await ui.page.fill("#f-max_concurrency", "4")
    await ui.page.fill("#f-base_url", "https://outro.example.net/api")
    await ui.page.get_by_test_id("partner-edit").get_by_role("button", name="Salvar").click()
    url_error = ui.page.get_by_test_id("partner-edit").locator(".field-error[data-field=base_url]")
    await url_error.wait_for()
    assert "credentials again" in await url_error.inner_text()
    assert await ui.page.input_value("#f-base_url") == "https://outro.example.net/api"
    unchanged = await ui.services.actions.get_partner("acme", erp["id"])
    assert unchanged["base_url"] == "https://erp.example.com/api"
    # Moved with its new credentials.
    await ui.goto(f"/admin/partners/{erp['id']}")
    credentials = ui.page.get_by_test_id("partner-credentials")
    await credentials.locator("#f-credentials-base_url").fill("https://outro.example.net/api")
    await credentials.locator("#f-auth\\.type").select_option("bearer")
    await credentials.locator("#f-auth\\.token").fill("novo-token")
    await credentials.get_by_role("button", name="Salvar").click()
    await ui.page.locator(".flash").wait_for()
    moved = await ui.services.actions.get_partner("acme", erp["id"])
    assert moved["base_url"] == "https://outro.example.net/api"
    assert "novo-token" not in await ui.page.content()
