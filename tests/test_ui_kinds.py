"""Custom kind pages over HTTP: another tenant's kind is a 404 and stays as it was; a stale
replacement is refused with what was typed kept; markup in a schema shows as text."""

from __future__ import annotations

from gateway.services import Services
from tests.ui_support import Client, csrf, form_fields, log_in, make_user, replaced

SCHEMA = {"type": "object", "properties": {"liters": {"type": "number"}}}


async def test_a_strangers_kind_is_not_found_and_nothing_of_theirs_changes(
    client: Client, services: Services
) -> None:
    await services.kinds.create("globex", {"name": "pneu", "schema": SCHEMA}, "api")
    await make_user(services)
    await log_in(client)
    assert (await client.get("/admin/kinds/pneu")).status == 404
    listing = await client.get("/admin/kinds")
    assert "pneu" not in await listing.text()
    token = await csrf(client)
    edit = {"csrf": token, "schema": '{"type": "object"}'}
    assert (await client.post("/admin/kinds/pneu/edit", data=edit)).status == 404
    assert (await client.post("/admin/kinds/pneu/delete", data={"csrf": token})).status == 404
    assert (await services.kinds.get("globex", "pneu"))["schema"] == SCHEMA


async def test_a_schema_replaced_meanwhile_is_a_409_keeping_what_was_typed(
    client: Client, services: Services
) -> None:
    await services.kinds.create("acme", {"name": "pneu", "schema": SCHEMA}, "api")
    await make_user(services)
    await log_in(client)
    page = await client.get("/admin/kinds/pneu")
    fields = form_fields(await page.text(), "/admin/kinds/pneu/edit")
    other = {"type": "object", "properties": {"psi": {"type": "number"}}}
    await services.kinds.replace("acme", "pneu", {"schema": other}, "someone else")
    typed = '{"type": "object", "properties": {"mm": {"type": "number"}}}'
    response = await client.post("/admin/kinds/pneu/edit", data=replaced(fields, schema=typed))
    assert response.status == 409
    html = await response.text()
    assert "mm" in html and "psi" in html  # what was typed, and the current value beside it
    assert (await services.kinds.get("acme", "pneu"))["schema"] == other


async def test_markup_in_a_kinds_schema_is_shown_as_text(
    client: Client, services: Services
) -> None:
    schema = {"type": "object", "description": "<script>alert(1)</script>"}
    await services.kinds.create("acme", {"name": "pneu", "schema": schema}, "<b>api</b>")
    await make_user(services)
    await log_in(client)
    for path in ("/admin/kinds", "/admin/kinds/pneu"):
        html = await (await client.get(path)).text()
        assert "<script>alert(1)" not in html and "<b>api</b>" not in html, path
    html = await (await client.get("/admin/kinds/pneu")).text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_a_kind_requiring_the_envelopes_key_is_refused_at_its_field_keeping_the_schema(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    schema = '{"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}}'
    token = await csrf(client, "/admin/kinds")
    refused = await client.post(
        "/admin/kinds", data={"csrf": token, "name": "pneu", "schema": schema}
    )
    page = await refused.text()
    assert refused.status == 422, page
    assert "/schema/properties/key" in page and "envelope" in page
    assert dict(form_fields(page, "/admin/kinds"))["schema"] == schema  # kept as typed
    assert await services.kinds.find("acme") == []
