"""Entity forms over HTTP with property names that the form itself uses (`csrf`, `once`,
`lang`, `revision`, `loaded.odometer_km`) or that read as paths (`a.b` beside `a: {b}`,
`a/b`, `c~d`): every property is a control of its own, what was typed is stored as typed,
kept on a 422, and the stale-edit check neither refuses an edit nobody raced nor stores its
digest."""

from __future__ import annotations

import html as markup
import re
from typing import Any

from markupsafe import escape

from gateway.entities import Origin
from gateway.services import Services
from tests.test_ui_entity_forms import _errors
from tests.ui_support import Client, form_fields, log_in, make_user

API = Origin("api", "tester")
# Each property titled, so the test finds its control by its label whatever it is named.
PROPERTIES: dict[str, Any] = {
    "nome": {"type": "string", "title": "T-nome"},
    "csrf": {"type": "string", "title": "T-csrf"},
    "once": {"type": "string", "title": "T-once"},
    "lang": {"type": "string", "title": "T-lang"},
    "revision": {"type": "string", "title": "T-revision"},
    "loaded.odometer_km": {"type": "string", "title": "T-loaded"},
    "a.b": {"type": "string", "title": "T-dotted"},
    "a": {"type": "object", "properties": {"b": {"type": "string", "title": "T-nested"}}},
    "a/b": {"type": "string", "title": "T-slash"},
    "c~d": {"type": "string", "title": "T-tilde"},
    'x y"z': {"type": "string", "title": "T-odd"},
    "n": {"type": "integer", "title": "T-n"},
}
KIND = {"name": "colide", "schema": {"type": "object", "properties": PROPERTIES}}
TYPED = {
    "T-nome": "Nome",
    "T-csrf": "meu csrf",
    "T-once": "meu once",
    "T-lang": "meu idioma",
    "T-revision": "minha revisão",
    "T-loaded": "carregado",
    "T-dotted": "pontuado",
    "A › T-nested": "aninhado",
    "T-slash": "barra",
    "T-tilde": "til",
    "T-odd": "estranho",
    "T-n": "7",
}
STORED = {
    "nome": "Nome",
    "csrf": "meu csrf",
    "once": "meu once",
    "lang": "meu idioma",
    "revision": "minha revisão",
    "loaded.odometer_km": "carregado",
    "a.b": "pontuado",
    "a": {"b": "aninhado"},
    "a/b": "barra",
    "c~d": "til",
    'x y"z': "estranho",
    "n": 7,
}


def _controls(page: str) -> dict[str, str]:
    """Each property's label (its title) and the name of the control it labels."""
    labels = {
        key: markup.unescape(" ".join(re.sub(r"<[^>]+>", " ", text).split()))
        for key, text in re.findall(r'<label for="f-([^"]+)">(.*?)</label>', page, re.S)
    }
    named = dict(re.findall(r'id="f-([^"]+)" name="([^"]+)"', page))
    assert len(named) == len(re.findall(r'id="f-([^"]+)" name="', page)), "duplicate ids"
    return {label: markup.unescape(named[key]) for key, label in labels.items() if key in named}


def _typed(
    fields: list[tuple[str, str]], controls: dict[str, str], typed: dict[str, str]
) -> list[tuple[str, str]]:
    by_name = {controls[label]: value for label, value in typed.items()}
    assert len(by_name) == len(typed), "two properties share a control"
    return [(name, by_name.get(name, value)) for name, value in fields]


async def test_properties_named_like_the_forms_own_fields_or_paths_are_stored_as_typed(
    client: Client, services: Services
) -> None:
    await services.kinds.create("acme", KIND, "api")
    await make_user(services)
    await log_in(client)
    page = await (await client.get("/admin/entities/other/new?kind=colide")).text()
    controls = _controls(page)
    assert TYPED.keys() <= controls.keys(), controls
    fields = form_fields(page, "/admin/entities/other")
    body = _typed(fields, controls, {**TYPED, "Chave (obrigatório)": "K-1"})
    # A 422 keeps every value typed, each in its own control.
    refused = await client.post("/admin/entities/other", data=_typed(body, controls, {"T-n": "x"}))
    html = await refused.text()
    assert refused.status == 422, html
    assert _errors(html, controls["T-n"])
    kept = form_fields(html, "/admin/entities/other")
    assert {label: dict(kept)[controls[label]] for label in TYPED} == {**TYPED, "T-n": "x"}
    body = _typed(kept, controls, {"T-n": "7"})
    saved = await client.post("/admin/entities/other", data=body, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    doc = await services.entities.get("acme", "other", "colide:K-1")
    assert doc["data"] == {"kind": "colide", "key": "K-1", **STORED}

    action = f"/admin/entities/other/{doc['_id']}/edit"
    page = await (await client.get(action)).text()
    controls = _controls(page)
    loaded = form_fields(page, action)
    assert {label: dict(loaded)[controls[label]] for label in TYPED} == TYPED
    edited = {label: value + " 2" for label, value in TYPED.items() if label != "T-n"}
    saved = await client.post(action, data=_typed(loaded, controls, edited), allow_redirects=False)
    assert saved.status == 303, await saved.text()  # nobody raced: not stale
    doc = await services.entities.get("acme", "other", "colide:K-1")
    expected = {k: v + " 2" if isinstance(v, str) else v for k, v in STORED.items()}
    assert doc["data"] == {"kind": "colide", "key": "K-1", **expected, "a": {"b": "aninhado 2"}}

    # Someone else saves meanwhile: the edit is refused, what was typed kept.
    page = await (await client.get(action)).text()
    loaded = form_fields(page, action)
    await services.entities.patch("acme", "other", str(doc["_id"]), {"nome": "Deles"}, API)
    mine = _typed(loaded, controls, {"T-revision": "a minha"})
    refused = await client.post(action, data=mine)
    html = await refused.text()
    assert refused.status == 409 and 'data-testid="stale-edit"' in html, html
    assert dict(form_fields(html, action))[controls["T-revision"]] == "a minha"
    stored = (await services.entities.get("acme", "other", "colide:K-1"))["data"]
    assert stored["nome"] == "Deles" and stored["revision"] == "minha revisão 2"


async def test_problems_of_properties_named_with_slash_or_tilde_are_shown_at_their_fields(
    client: Client, services: Services
) -> None:
    """A problem's pointer writes `/` as `~1` and `~` as `~0` (`/a~1b`, `/c~0d`): read back, it
    lands at the field of `a/b` and `c~d`, not above the form."""
    names = ("a/b", "c~d", "tire size", 'x"y')
    schema = {"type": "object", "properties": {n: {"type": "integer", "title": n} for n in names}}
    await services.kinds.create("acme", {"name": "ptr", "schema": schema}, "api")
    await make_user(services)
    await log_in(client)
    page = await (await client.get("/admin/entities/other/new?kind=ptr")).text()
    controls = _controls(page)
    fields = form_fields(page, "/admin/entities/other")
    typed = {**{n: "notint" for n in names}, "Chave (obrigatório)": "P-1"}
    refused = await client.post("/admin/entities/other", data=_typed(fields, controls, typed))
    html = await refused.text()
    assert refused.status == 422, html
    for name in names:
        control = str(escape(controls[name]))
        assert re.search(rf'name="{re.escape(control)}"[^>]*aria-invalid="true"', html), name
        assert f'data-field="{control}"' in html, name
    assert 'class="alert"' not in html  # no problem left above the form
