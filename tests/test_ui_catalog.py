"""Every word the admin UI shows comes from its catalog, in every language: a key a template
or a handler names must exist (in pt-BR and English), and so must every key built from an
enumeration the pages display."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.ui.i18n import LANGUAGES, Catalog, CatalogError, _entries, choose_language
from gateway.ui.labels import ENUMS

UI = Path(__file__).resolve().parents[1] / "gateway" / "ui"
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
