"""The `Link` response header (RFC 8288 §3): the target of the first link of a relation type.

    Link: <https://shop.example/products.json?page_info=cD0x>; rel="previous",
          <https://shop.example/products.json?page_info=cD0y>; rel=next; title="Page 2"

A header may hold several links, and a response several `Link` fields (joined with ", ");
a parameter's value is a token or a quoted string, which may hold ",", ";" and escaped
quotes; `rel` is a space-separated list of relation types, compared case-insensitively.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

# One link-value: "<" URI-Reference ">" then its parameters up to the next top-level ",".
_TARGET: Final = re.compile(r"\s*<([^>]*)>")
_PARAM: Final = re.compile(
    r'\s*;\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*))?'
)
_QUOTED_PAIR: Final = re.compile(r"\\(.)")


def link_target(header: str, relation: str = "next") -> str | None:
    """The target (as written: maybe relative) of the first link whose `rel` names
    `relation`; None when none does or the header cannot be read past a link."""
    wanted = relation.lower()
    for target, rels in _links(header):
        if wanted in rels:
            return target
    return None


def _links(header: str) -> Iterator[tuple[str, set[str]]]:
    position = 0
    while position < len(header):
        match = _TARGET.match(header, position)
        if match is None:
            return  # not a link-value: nothing past it can be trusted
        target, position = match.group(1).strip(), match.end()
        rels: set[str] = set()
        while param := _PARAM.match(header, position):
            name, value = param.group(1).lower(), param.group(2) or ""
            position = param.end()
            if value.startswith('"'):
                value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
            if name == "rel" and not rels:  # RFC 8288 §3.3: only the first rel counts
                rels = {each.lower() for each in value.split()}
        yield target, rels
        rest = header[position:].lstrip()
        if not rest.startswith(","):
            return
        position = len(header) - len(rest) + 1
