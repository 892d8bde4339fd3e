"""Every word the admin UI shows comes from its catalog, in every language: a key a template
or a handler names must exist (in pt-BR and English), and so must every key built from an
enumeration the pages display."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.store.entities import FILTERABLE
from gateway.ui.entities import search_fields
from gateway.ui.entity_forms import LABEL_KEYS, Labels, fields_of
from gateway.ui.i18n import LANGUAGES, Catalog, CatalogError, _entries, choose_language
from gateway.ui.labels import ENUMS

ROOT = Path(__file__).resolve().parents[1]
UI = ROOT / "gateway" / "ui"
# The shipped schemas whose fields the UI labels in its own words: scope → schema file.
SHIPPED = {
    **{p.name.removesuffix(".schema.json"): p for p in (ROOT / "schemas" / "entities").glob("*")},
    **{p.name.removesuffix(".schema.json"): p for p in (ROOT / "schemas" / "kinds").glob("*")},
}
_LITERAL = re.compile(r"""\bt\(\s*["']([A-Za-z0-9_.-]+)["']""")  # t("key", ...)
_QUOTED = re.compile(r"""["']([a-z_]+\.[A-Za-z0-9_.-]*)["']""")  # "x." prefixes: see ENUMS


def _used_keys(namespaces: set[str]) -> set[str]:
    """Keys named in templates and handlers: every t("...") literal, and every quoted
    `namespace.name` string of a namespace the catalog has (form labels, flashes, confirms);
    field names such as "auth.token_in_query" belong to no namespace and are left out."""
    keys: set[str] = set()
    for path in [*UI.rglob("*.html"), *UI.glob("*.py")]:
        text = path.read_text()
        keys |= set(_LITERAL.findall(text))
        keys |= {k for k in _QUOTED.findall(text) if k.split(".", 1)[0] in namespaces}
    return {k for k in keys if not k.endswith((".", ".html"))}


def test_every_message_key_the_pages_name_exists_in_every_language() -> None:
    catalog = Catalog.load()
    used = _used_keys({key.split(".", 1)[0] for key in catalog.keys()})
    assert len(used) > 150, "the scan found too few keys: is the pattern still right?"
    missing = sorted(k for k in used if k not in catalog)
    assert missing == []


@pytest.mark.parametrize(("prefix", "values"), ENUMS.items())
def test_every_displayed_enumeration_value_has_its_words(
    prefix: str, values: tuple[str, ...]
) -> None:
    catalog = Catalog.load()
    assert [v for v in values if f"{prefix}.{v}" not in catalog] == []


def test_a_message_without_one_of_the_languages_is_refused_at_load() -> None:
    with pytest.raises(CatalogError, match="needs exactly pt-BR, en"):
        list(_entries("x.yaml", {"nav.x": {"pt-BR": "Olá"}}))
    with pytest.raises(CatalogError, match="empty"):
        list(_entries("x.yaml", {"nav.x": {"pt-BR": "Olá", "en": ""}}))


def test_the_shipped_catalog_loads_with_both_languages_for_every_key() -> None:
    catalog = Catalog.load()
    for key in catalog.keys():
        for lang in LANGUAGES:
            assert catalog.text(lang, key)


@pytest.mark.parametrize(
    ("cookie", "header", "chosen"),
    [
        (None, None, "pt-BR"),
        (None, "en-US,en;q=0.9", "en"),
        (None, "fr-FR, en;q=0.5, pt;q=0.8", "pt-BR"),
        (None, "de, fr", "pt-BR"),
        (None, "en;q=0", "pt-BR"),
        ("en", "pt-BR", "en"),
        ("xx", "en", "en"),
    ],
)
def test_the_language_is_the_cookie_then_the_browser_then_portuguese(
    cookie: str | None, header: str | None, chosen: str
) -> None:
    assert choose_language(cookie, header) == chosen


@pytest.mark.parametrize("scope", sorted(SHIPPED))
def test_every_field_of_a_shipped_schema_has_its_label_in_every_language(scope: str) -> None:
    """A field the entity forms or the list's search show (and each object holding one) is
    labelled from the catalog, not by the schema's English title; a field added to a shipped
    schema without its words fails here."""
    catalog = Catalog.load()
    schema = json.loads(SHIPPED[scope].read_text())
    shown = {f.dotted for f in fields_of(schema, Labels(scope, catalog))}
    if scope in FILTERABLE:  # and the fields its list is searched by
        shown |= set(search_fields(scope))
    paths = {
        ".".join(name.split(".")[: n + 1]) for name in shown for n in range(name.count(".") + 1)
    }
    assert len(paths) >= 2, paths
    assert sorted(p for p in paths if f"{LABEL_KEYS}{scope}.{p}" not in catalog) == []
    stale = [k for k in catalog.keys() if k.startswith(f"{LABEL_KEYS}{scope}.")]
    assert sorted(k for k in stale if k.removeprefix(f"{LABEL_KEYS}{scope}.") not in paths) == []
