"""Custom kinds in a real browser: an admin registers a kind of `other` entity from its name
and JSON Schema (a broken schema answered at the schema, what was typed kept), browses its
entities, replaces its schema, and cannot delete it while entities of it exist."""

from __future__ import annotations

import json

from tests.support import auth
from tests.test_ui_browser import Ui, ui
from tests.ui_support import make_user

__all__ = ["ui"]  # the fixture

BROKEN = '{"type": "object", "properties": {"liters": {"type": "nope"}}}'
SCHEMA = {
    "type": "object",
    "required": ["liters"],
    "properties": {"liters": {"type": "number", "minimum": 0}, "plate": {"type": "string"}},
}


async def test_an_admin_registers_a_kind_replaces_its_schema_and_deletes_it(ui: Ui) -> None:
    await make_user(ui.services)
    await ui.log_in()
    await ui.page.get_by_role("link", name="Tipos próprios", exact=True).click()
    assert "Nenhum tipo próprio ainda" in await ui.page.inner_text("[data-testid=empty]")
    await ui.page.fill("#f-name", "Abastecimento")
    await ui.page.fill("#f-schema", BROKEN)
    await ui.page.get_by_test_id("kind-new").get_by_role("button", name="Criar").click()
    await ui.page.locator(".field-error[data-field=name]").wait_for()
    assert "lower case" in await ui.page.inner_text(".field-error[data-field=name]")
    assert await ui.page.input_value("#f-schema") == BROKEN  # kept as typed
    await ui.page.fill("#f-name", "abastecimento")
    await ui.page.get_by_test_id("kind-new").get_by_role("button", name="Criar").click()
    error = ui.page.locator(".field-error[data-field=schema]")
    await error.wait_for()
    assert "nope" in await error.inner_text()
    assert await ui.page.get_attribute("#f-schema", "aria-invalid") == "true"
    assert await ui.services.kinds.find("acme") == []
    await ui.page.fill("#f-schema", json.dumps(SCHEMA))
    await ui.page.get_by_test_id("kind-new").get_by_role("button", name="Criar").click()
    await ui.page.wait_for_url(ui.url("/admin/kinds/abastecimento"))
    assert "Tipo registrado" in await ui.page.inner_text(".flash")
    await ui.shot("kind")
    # The kind is usable at once: an entity of it, then browsed from the kind's page.
    entity = {"kind": "abastecimento", "key": "A-1", "liters": 40, "plate": "ABC1D23"}
    created = await ui.api.post("/api/v1/entities/other", json=entity, headers=auth())
    assert created.status == 201, await created.text()
    await ui.page.get_by_role("link", name="Ver os cadastros do tipo abastecimento").click()
    assert "A-1" in await ui.page.inner_text("main")
    # Replace the schema: a new required field.
    await ui.goto("/admin/kinds/abastecimento")
    replaced = {**SCHEMA, "required": ["liters", "plate"]}
    await ui.page.fill("#f-schema", json.dumps(replaced))
    await ui.page.get_by_test_id("kind-edit").get_by_role("button", name="Salvar").click()
    await ui.page.locator(".flash").wait_for()
    assert (await ui.services.kinds.get("acme", "abastecimento"))["schema"] == replaced
    # In use: the deletion is refused on the kind's page, nothing removed.
    await ui.page.get_by_role("button", name="Excluir").click()
    alert = ui.page.locator("[role=alert]")
    await alert.wait_for()
    assert "abastecimento" in await alert.inner_text()
    assert await ui.services.kinds.get("acme", "abastecimento")


async def test_a_viewer_reads_a_kinds_schema_and_changes_nothing(ui: Ui) -> None:
    await ui.services.kinds.create("acme", {"name": "pneu", "schema": SCHEMA}, "api")
    await make_user(ui.services, role="viewer")
    await ui.log_in()
    await ui.goto("/admin/kinds")
    assert await ui.page.get_by_test_id("kind-new").count() == 0
    await ui.page.get_by_role("link", name="pneu").click()
    assert '"liters"' in await ui.page.inner_text("pre.json")
    assert await ui.page.get_by_test_id("kind-edit").count() == 0
