"""Calling an action now from its page, in a real browser: on a stored vehicle (by its
plate) or a pasted payload, the partner's answer is shown; its refusal is shown in plain
words with what was typed kept; an unknown plate is a problem of the entity field."""

from __future__ import annotations

from tests.partner_double import Partner, create_action, create_partner, create_vehicle, partner
from tests.test_ui_browser import Ui, ui
from tests.ui_support import make_user

__all__ = ["partner", "ui"]  # the fixtures


async def test_an_admin_calls_an_action_now_and_reads_the_partners_answer(
    ui: Ui, partner: Partner
) -> None:
    await make_user(ui.services)
    erp = await create_partner(ui.api, partner.url)
    action = await create_action(
        ui.api, erp["id"], name="consulta", method="POST", path="/frota/{plate}", mode="proxy"
    )
    await create_vehicle(ui.api, "ABC1D23", model="<i>FH</i>")
    partner.respond_with(200, {"situacao": "<b>regular</b>"})
    await ui.log_in()
    await ui.goto(f"/admin/actions/{action['id']}")
    call = ui.page.get_by_test_id("action-call")
    await call.locator("#f-entity\\.ref").fill("abc-1d23")
    await call.get_by_role("button", name="Chamar").click()
    answer = ui.page.get_by_test_id("call-answer")
    await answer.wait_for()
    shown = await answer.inner_text()
    assert "Resposta do parceiro: 200" in shown and '"<b>regular</b>"' in shown
    [sent] = partner.requests
    assert sent.path == "/frota/ABC1D23" and sent.json()["model"] == "<i>FH</i>"
    await ui.shot("action-call")
    # An unknown plate: the problem sits at the entity field, nothing is sent.
    await call.locator("#f-entity\\.ref").fill("ZZZ9Z99")
    await call.get_by_role("button", name="Chamar").click()
    error = ui.page.locator(".field-error[data-field='entity.ref']")
    await error.wait_for()
    assert "ZZZ9Z99" in await error.inner_text()
    assert len(partner.requests) == 1
    # The partner refuses a pasted payload: its status in plain words, the payload kept.
    partner.respond_with(400, {"erro": "placa desconhecida"})
    await call.locator("#f-entity\\.ref").fill("")
    await call.locator("#f-payload").fill('{"plate": "XYZ9A87"}')
    await call.get_by_role("button", name="Chamar").click()
    alert = ui.page.get_by_test_id("action-call").locator("[role=alert]")
    await alert.wait_for()
    text = await alert.inner_text()
    assert "Erro no parceiro" in text and "400" in text
    assert await ui.page.input_value("#f-payload") == '{"plate": "XYZ9A87"}'
    assert partner.requests[-1].path == "/frota/XYZ9A87"


async def test_a_viewer_sees_no_call_form(ui: Ui, partner: Partner) -> None:
    await make_user(ui.services, role="viewer")
    erp = await create_partner(ui.api, partner.url)
    action = await create_action(ui.api, erp["id"], mode="proxy")
    await ui.log_in()
    await ui.goto(f"/admin/actions/{action['id']}")
    await ui.page.locator("h1").wait_for()
    assert await ui.page.get_by_test_id("action-call").count() == 0
