"""A custom kind's enumeration of mixed JSON types (`1`, `"1"`, `true`, `"true"`, `null`, `2.5`)
over HTTP: each option is told apart on the page, each is stored as its very value, and the
edit form selects the one stored, only it."""

from __future__ import annotations

import html as markup
import re

from gateway.services import Services
from tests.support import auth
from tests.ui_support import Client, form_fields, log_in, make_user

ENUM = [1, "1", True, "true", None, 2.5]
KIND = {
    "name": "misto",
    "schema": {"type": "object", "properties": {"valor": {"enum": ENUM}}},
}


def _options(page: str) -> list[tuple[str, str, bool]]:
    """The `/valor` select's options: value, text, selected (the empty one left out)."""
    select = re.search(r'<select id="f-valor" name="/valor">(.*?)</select>', page, re.S)
    assert select is not None, page
    found = re.findall(r'<option value="([^"]*)"( selected)?>(.*?)</option>', select.group(1))
    return [(markup.unescape(v), markup.unescape(t), bool(s)) for v, s, t in found if v]


async def test_an_enumeration_of_mixed_types_stores_each_option_as_its_value(
    client: Client, services: Services
) -> None:
    await services.kinds.create("acme", KIND, "api")
    await make_user(services)
    await log_in(client)
    page = await (await client.get("/admin/entities/other/new?kind=misto")).text()
    options = _options(page)
    assert len(options) == len(ENUM)
    assert len({v for v, _, _ in options}) == len(ENUM)  # each posts a value of its own
    assert len({t for _, t, _ in options}) == len(ENUM)  # and shows words of its own
    assert "None" not in {t for _, t, _ in options}  # no Python repr
    for n, (expected, (value, _, _)) in enumerate(zip(ENUM, options, strict=True)):
        fields = form_fields(page, "/admin/entities/other")
        body = [*((k, v) for k, v in fields if k not in ("/key", "/valor"))]
        body += [("/key", f"K{n}"), ("/valor", value)]
        saved = await client.post("/admin/entities/other", data=body, allow_redirects=False)
        assert saved.status == 303, await saved.text()
        page = await (await client.get("/admin/entities/other/new?kind=misto")).text()
        doc = await services.entities.get("acme", "other", f"misto:K{n}")
        stored = doc["data"]["valor"]
        assert stored == expected and type(stored) is type(expected), (value, stored)
        edit = await (await client.get(f"/admin/entities/other/{doc['_id']}/edit")).text()
        chosen = [v for v, _, selected in _options(edit) if selected]
        assert chosen == [value], (expected, chosen)


async def test_a_stored_choice_the_kind_no_longer_lists_is_offered_and_kept(
    client: Client, services: Services
) -> None:
    """A kind replaced with `?force=true` without one of its enumeration's values: an entity
    storing it shows it as the select's chosen option, so an untouched save keeps it (no new
    version); a save of another field keeps it too: a write is checked for what it
    changes, and the value it leaves stays as stored (docs/entities.md)."""
    kind = {
        "type": "object",
        "properties": {
            "estado": {"enum": ["novo", "usado", "perdido"]},
            "nota": {"type": "string"},
        },
    }
    r = await client.post("/api/v1/kinds", json={"name": "pneu", "schema": kind}, headers=auth())
    assert r.status == 201, await r.text()
    body = {"kind": "pneu", "key": "P-1", "estado": "perdido", "nota": "x"}
    r = await client.post("/api/v1/entities/other", json=body, headers=auth())
    ref = (await r.json())["id"]
    narrower = {**kind, "properties": {**kind["properties"], "estado": {"enum": ["novo", "usado"]}}}
    r = await client.put("/api/v1/kinds/pneu?force=true", json={"schema": narrower}, headers=auth())
    assert r.status == 200, await r.text()
    before = await services.entities.get("acme", "other", ref)
    await make_user(services)
    await log_in(client)
    action = f"/admin/entities/other/{ref}/edit"
    page = await (await client.get(action)).text()
    assert '<option value="perdido" selected>perdido</option>' in page
    saved = await client.post(action, data=form_fields(page, action), allow_redirects=False)
    assert saved.status == 303, await saved.text()
    after = await services.entities.get("acme", "other", ref)
    assert after["data"]["estado"] == "perdido" and after["rev"] == before["rev"]
    fields = form_fields(await (await client.get(action)).text(), action)
    other = [(n, "y" if n == "/nota" else v) for n, v in fields]
    saved = await client.post(action, data=other, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    after = (await services.entities.get("acme", "other", ref))["data"]
    assert after["estado"] == "perdido" and after["nota"] == "y"
