"""Previews in a real browser. The mapping upload form's: an admin pastes a file and a
sample payload, sees the document it would make (or the problems, by field and line) beside
the entity stored now, fixes the file in place, and only then uploads it. A template's: the
text being edited, rendered before it is saved. Nothing is stored by a preview."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

from tests.partner_double import create_vehicle
from tests.support import auth
from tests.test_ui_browser import BROKEN_MAPPING, FIXED_MAPPING, Ui, ui
from tests.ui_support import make_user

__all__ = ["ui"]  # the fixture

DOC = Path(__file__).resolve().parents[1] / "docs" / "admin-ui.md"
SAMPLE = '{"placa": "abc1d23", "km": "1234.5"}'


async def test_an_admin_previews_a_mapping_on_a_sample_before_uploading_it(ui: Ui) -> None:
    await make_user(ui.services)
    await create_vehicle(ui.api, "ABC1D23", odometer_km=1000)
    await ui.log_in()
    await ui.goto("/admin/mappings")
    upload = ui.page.get_by_test_id("upload")
    await ui.page.fill("#f-source", BROKEN_MAPPING)
    await ui.page.fill("#f-payload", SAMPLE)
    await upload.get_by_role("button", name="Pré-visualizar").click()
    problems = ui.page.get_by_test_id("upload-problems")
    await problems.wait_for()
    text = await problems.inner_text()
    assert "pré-visualização encontrou problemas" in text and "linha 6" in text
    assert await ui.page.locator("pre.source span.line.bad[data-line='6']").count() == 1
    # What was typed stays: the file and the sample.
    assert await ui.page.input_value("#f-source") == BROKEN_MAPPING
    assert await ui.page.input_value("#f-payload") == SAMPLE
    await ui.page.fill("#f-source", FIXED_MAPPING)
    await ui.page.get_by_test_id("upload").get_by_role("button", name="Pré-visualizar").click()
    result = ui.page.get_by_test_id("dry-run-result")
    await result.wait_for()
    shown = await result.inner_text()
    assert "Atualizaria o cadastro" in shown and "ABC1D23" in shown
    assert "1234.5" in shown and "1000" in shown  # mapped beside stored
    await ui.shot("mapping-preview")
    assert await ui.services.mappings.find("acme", after=None, limit=5) == []
    stored = await ui.services.entities.get("acme", "vehicle", "ABC1D23")
    assert stored["data"]["odometer_km"] == 1000
    # Satisfied: upload the same text from the same form.
    await ui.page.get_by_test_id("upload").get_by_role("button", name="Enviar").click()
    await ui.page.wait_for_url(ui.url("/admin/mappings/fleet-feed"))
    [stored_mapping] = await ui.services.mappings.find("acme", after=None, limit=5)
    assert stored_mapping.name == "fleet-feed"


async def test_a_sample_the_mapping_cannot_read_is_shown_at_the_sample(ui: Ui) -> None:
    await make_user(ui.services)
    await ui.log_in()
    await ui.goto("/admin/mappings")
    await ui.page.fill("#f-source", FIXED_MAPPING)
    await ui.page.get_by_test_id("upload").get_by_role("button", name="Pré-visualizar").click()
    error = ui.page.locator(".field-error[data-field=payload]")
    await error.wait_for()
    assert "payload" in await error.inner_text()
    assert await ui.page.get_attribute("#f-payload", "aria-invalid") == "true"
    await ui.page.fill("#f-payload", '{"placa": "nope", "km": "x"}')
    await ui.page.get_by_test_id("upload").get_by_role("button", name="Pré-visualizar").click()
    await ui.page.locator(".field-error[data-field=payload]").wait_for()
    shown = await ui.page.inner_text(".field-error[data-field=payload]")
    assert 'cannot cast string "x" to number' in shown
    assert await ui.page.input_value("#f-payload") == '{"placa": "nope", "km": "x"}'


async def test_a_viewer_previews_but_cannot_upload(ui: Ui) -> None:
    await make_user(ui.services, role="viewer")
    await ui.log_in()
    await ui.goto("/admin/mappings")
    upload = ui.page.get_by_test_id("upload")
    assert await upload.get_by_role("button", name="Enviar").count() == 0
    await ui.page.fill("#f-source", FIXED_MAPPING)
    await ui.page.fill("#f-payload", SAMPLE)
    await upload.get_by_role("button", name="Pré-visualizar").click()
    result = ui.page.get_by_test_id("dry-run-result")
    await result.wait_for()
    assert "Criaria o cadastro" in await result.inner_text()
    assert await ui.services.mappings.find("acme", after=None, limit=5) == []


def _walk_block(name: str) -> str:
    """A code block of the walk-through in docs/admin-ui.md, by its `<!-- walk: name -->`."""
    text = DOC.read_text()
    found = re.search(rf"<!-- walk: {name} -->\n\s*```\w*\n(.*?)\n\s*```", text, re.S)
    assert found, name
    return textwrap.dedent(found.group(1))


async def test_the_walk_through_preview_shows_the_documented_document(ui: Ui) -> None:
    await make_user(ui.services)
    await ui.log_in()
    await ui.page.get_by_role("link", name="Mapeamentos", exact=True).click()
    await ui.page.fill("#f-source", _walk_block("mapping"))
    await ui.page.fill("#f-payload", _walk_block("sample"))
    await ui.page.get_by_test_id("upload").get_by_role("button", name="Pré-visualizar").click()
    mapped = ui.page.get_by_test_id("dry-run-result").locator(".side-by-side pre.json").first
    await mapped.wait_for()
    assert json.loads(await mapped.inner_text()) == json.loads(_walk_block("document"))
    assert "Criaria o cadastro" in await ui.page.get_by_test_id("dry-run-result").inner_text()
    await ui.page.get_by_test_id("upload").get_by_role("button", name="Enviar").click()
    await ui.page.wait_for_url(ui.url("/admin/mappings/erp-mileage"))


async def test_an_admin_previews_the_template_text_being_edited_before_saving_it(ui: Ui) -> None:
    """The template page's Preview, in a real browser: it renders the document as typed in
    the replace form (its own button in that form), keeps it, and stores nothing; Save then
    stores that text."""
    body = {"name": "alerta", "channel_type": "sms", "locales": {"pt-BR": {"text": "Olá {{ d }}"}}}
    response = await ui.api.post("/api/v1/templates", json=body, headers=auth())
    template = await response.json()
    await make_user(ui.services)
    await ui.log_in()
    await ui.goto(f"/admin/templates/{template['id']}")
    draft = json.dumps({**body, "locales": {"pt-BR": {"text": "Oi {{ d }}, rascunho"}}})
    form = ui.page.get_by_test_id("template-edit")
    await ui.page.fill("#f-document", draft)
    await ui.page.fill("#f-context", '{"d": "Ana"}')
    await form.get_by_role("button", name="Pré-visualizar").click()
    preview = ui.page.get_by_test_id("template-preview")
    await preview.wait_for()
    assert "Oi Ana, rascunho" in await preview.inner_text()
    assert await ui.page.input_value("#f-document") == draft
    stored = await ui.services.notify.templates.get("acme", "alerta")
    assert stored["locales"]["pt-BR"]["text"] == "Olá {{ d }}"
    await ui.page.get_by_test_id("template-edit").get_by_role("button", name="Salvar").click()
    await ui.page.get_by_text("Modelo salvo.").wait_for()
    stored = await ui.services.notify.templates.get("acme", "alerta")
    assert stored["locales"]["pt-BR"]["text"] == "Oi {{ d }}, rascunho"


async def test_an_unclosed_quote_is_listed_and_highlighted_at_the_line_that_opened_it(
    ui: Ui,
) -> None:
    """Not at "line 8" of a 7-line file (where the parser gave up), which highlights nothing."""
    await make_user(ui.services)
    await ui.log_in()
    await ui.goto("/admin/mappings")
    broken = FIXED_MAPPING.replace("name: fleet-feed", 'name: "fleet-feed', 1)
    assert broken != FIXED_MAPPING
    await ui.page.fill("#f-source", broken)
    await ui.page.get_by_test_id("upload").get_by_role("button", name="Enviar").click()
    problems = ui.page.get_by_test_id("upload-problems")
    await problems.wait_for()
    said = await problems.inner_text()
    highlighted = await ui.page.locator("pre.source span.line.bad").evaluate_all(
        "spans => spans.map(span => Number(span.dataset.line))"
    )
    assert "(linha 1)" in said and "at the end of the file" in said, said
    assert highlighted == [1], (said, highlighted)
