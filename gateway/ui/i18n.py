"""The UI's languages: a message catalog loaded from `messages/*.yaml`, and choosing a
language per request (the `lang` cookie, else Accept-Language, else pt-BR).

Each YAML file holds one page family's keys, each with its text in every language side by
side, so a page and its words are added together and a missing translation is seen at a
glance (and refused at load). A text may name `{placeholders}`, filled from keyword
arguments; the result is plain text, escaped by the templates like any other value.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any, Final

import yaml

log = logging.getLogger(__name__)

LANGUAGES: Final = ("pt-BR", "en")
DEFAULT: Final = "pt-BR"
COOKIE: Final = "rabbot_lang"
# libyaml's parser when PyYAML has it (ten times faster than the pure-Python one).
_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class CatalogError(ValueError):
    """A message file that lacks a language, or holds something other than text."""


class Catalog:
    def __init__(self, texts: Mapping[str, Mapping[str, str]]) -> None:
        self._texts = texts

    @classmethod
    def load(cls) -> Catalog:
        """The shipped catalog, parsed once per process (an app is made per test)."""
        return _shipped()

    def keys(self) -> Iterable[str]:
        return self._texts.keys()

    def __contains__(self, key: object) -> bool:
        return key in self._texts

    def text(self, lang: str, key: str, **params: Any) -> str:
        entry = self._texts.get(key)
        if entry is None:
            log.warning("no message %r", key)  # tests/test_ui_catalog.py keeps this from happening
            return key
        text = entry[lang]
        return text.format_map({k: isolated(v) for k, v in params.items()}) if params else text

    def term(self, lang: str, prefix: str, value: Any) -> str:
        """The words for a value of an enumeration the pages show (`prefix.value`, labels.py
        ENUMS); a value the catalog has no words for as it is (an event's origin kind that
        is an assignment's source, `hr`, a name rather than a word of ours)."""
        key = f"{prefix}.{value}"
        return self.text(lang, key) if key in self._texts else str(value)


# Characters whose direction is right-to-left (R, AL) or that set a direction (the embeddings,
# overrides and isolates: U+202E makes what follows it read right to left).
_BIDI_CLASSES: Final = frozenset(
    {"R", "AL", "LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"}
)
_FSI, _PDI = "\u2068", "\u2069"


def isolated(value: Any) -> Any:
    """A value set into a sentence of ours (a name in "Trigger {name} created"): text with a
    right-to-left character or a direction control in it is isolated (FIRST STRONG ISOLATE ...
    POP DIRECTIONAL ISOLATE, as `<bdi>` does), so that it cannot turn the sentence's own words
    around it; any other value as it is."""
    if (
        isinstance(value, str)
        and not value.isascii()  # no ASCII character is right-to-left or a control
        and any(unicodedata.bidirectional(c) in _BIDI_CLASSES for c in value)
    ):
        return f"{_FSI}{value}{_PDI}"
    return value


@functools.cache
def _shipped() -> Catalog:
    texts: dict[str, dict[str, str]] = {}
    folder = resources.files("gateway.ui") / "messages"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            data = yaml.load(entry.read_text("utf-8"), Loader=_LOADER)
            for key, value in _entries(entry.name, data):
                if key in texts:
                    raise CatalogError(f"{entry.name}: {key!r} is defined twice")
                texts[key] = value
    return Catalog(texts)


def _entries(filename: str, data: Any) -> Iterable[tuple[str, dict[str, str]]]:
    if not isinstance(data, dict):
        raise CatalogError(f"{filename}: expected a mapping of message keys")
    for key, value in data.items():
        if not isinstance(value, dict) or set(value) != set(LANGUAGES):
            raise CatalogError(f"{filename}: {key!r} needs exactly {', '.join(LANGUAGES)}")
        if not all(isinstance(v, str) and v for v in value.values()):
            raise CatalogError(f"{filename}: {key!r} has an empty or non-text translation")
        yield str(key), value


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    """The `lang` cookie when it names one of ours; else the first language of the
    browser's Accept-Language (by q-value) that we speak; else pt-BR."""
    if cookie in LANGUAGES:
        return cookie
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, index, tag.strip().lower()))
    for quality, _, tag in sorted(ranked):
        if quality >= 0:
            continue
        if tag == "pt" or tag.startswith("pt-"):
            return "pt-BR"
        if tag == "en" or tag.startswith("en-"):
            return "en"
    return DEFAULT
