"""The Users page in a real browser, as a screen reader meets it: each row's role select and
buttons are named with their user (with three users, every row's were "Papel", "Mudar papel"
and "Remover": tabbing through them said nothing of whom they demote or remove)."""

from __future__ import annotations

from tests.test_ui_browser import Ui, ui
from tests.ui_support import make_user

__all__ = ["ui"]  # the fixture

OTHERS = ("bia@acme.com.br", "caio@acme.com.br", "davi@acme.com.br")


async def test_each_rows_controls_are_named_with_their_user(ui: Ui) -> None:
    await make_user(ui.services)
    for email in OTHERS:
        await make_user(ui.services, email=email, role="viewer")
    await ui.log_in()
    await ui.goto("/admin/users")
    table = ui.page.locator("#users")
    for email in OTHERS:
        await table.get_by_role("combobox", name=f"Papel de {email}", exact=True).wait_for()
        change = table.get_by_role("button", name=f"Mudar papel de {email}", exact=True)
        await change.wait_for()
        remove = table.get_by_role("button", name=f"Remover {email}", exact=True)
        await remove.wait_for()
    # Removing by its name removes that user, and no other.
    async with ui.page.expect_navigation():
        await table.get_by_role("button", name=f"Remover {OTHERS[1]}", exact=True).click()
    users = [u["email"] for u in await ui.services.accounts.users("acme")]
    assert sorted(users) == ["ana@acme.com.br", OTHERS[0], OTHERS[2]]
