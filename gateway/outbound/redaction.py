"""A partner's credentials, removed from what a partner sends back before we keep or show it.

A partner that echoes what it received (a debug endpoint, an error page quoting the request)
would otherwise put our credential for it into a delivery attempt's `response`, readable by
any viewer, or into a proxy 502's `partner_body`. Every credential value of the partner is
replaced by `[redacted]`: as sent, percent-encoded (query keys), JSON-escaped and
XML-escaped (a SOAP body, `actions/xml_body.py`), and the start of one cut off at the end of an
excerpt too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "[redacted]"
# Shorter values would mangle ordinary text; no partner credential is that short.
MIN_LENGTH = 4


# What URL encoders (yarl's included) leave as is in a query value.
_QUERY_SAFE = "/?:@!$'()*,;"


# How XML writers escape text and attribute values: `&` and `<` always; `>` mostly (Canonical
# XML, used by signed SOAP, leaves it in attributes); each quote as written (text, and the
# other quote's attributes: ElementTree, .NET), as ours (markupsafe: &#39; &#34;), as the
# named entity or as a hexadecimal reference. Every combination a value's characters allow.
_XML_CHOICES: dict[str, tuple[str, ...]] = {
    ">": ("&gt;", ">"),
    "'": ("'", "&#39;", "&apos;", "&#x27;"),
    '"': ('"', "&#34;", "&quot;", "&#x22;"),
}


def _xml_forms(value: str) -> set[str]:
    forms = {value.replace("&", "&amp;").replace("<", "&lt;")}
    for char, choices in _XML_CHOICES.items():
        if char in value:
            forms = {form.replace(char, choice) for form in forms for choice in choices}
    return forms


def _forms(value: str) -> set[str]:
    encoded = {quote(value, safe=s) for s in ("", _QUERY_SAFE)}
    encoded |= {quote_plus(value, safe=s) for s in ("", _QUERY_SAFE)}
    return {value, json.dumps(value)[1:-1], *encoded, *_xml_forms(value)}


class Redactor:
    """Built once per partner from its credential values; `redact(text)` per answer."""

    def __init__(self, values: Iterable[str]) -> None:
        forms = {f for v in values if len(v) >= MIN_LENGTH for f in _forms(v)}
        self._forms = sorted(forms, key=len, reverse=True)  # longest first: "Bearer x", then x

    def redact(self, text: str) -> str:
        if not text:
            return text
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return self._without_cut_tail(text)

    def _without_cut_tail(self, text: str) -> str:
        """An excerpt may end inside a credential: drop a tail that starts one."""
        for form in self._forms:
            for size in range(min(len(form) - 1, len(text)), MIN_LENGTH - 1, -1):
                if text.endswith(form[:size]):
                    return text[:-size] + MASK
        return text


NO_REDACTION = Redactor(())
