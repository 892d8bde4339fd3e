"""Partner URLs: a base URL, an action's path template with each {name} filled by exactly one
percent-encoded segment, and a query string."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from urllib.parse import quote, urlencode

from gateway.errors import FieldProblem, InvalidPayload

# A path parameter in an action's path template: "/fines/{ait}".
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# What some partner servers read as a path separator once the path is decoded.
_SEPARATORS = re.compile(r"[/\\]")


def malformed_template(template: str) -> bool:
    """Whether a brace of `template` is not part of a {name} placeholder."""
    rest = PLACEHOLDER.sub("", template)
    return "{" in rest or "}" in rest


def build_url(
    base_url: str,
    path_template: str,
    path_params: Mapping[str, object],
    query: Mapping[str, object] | Sequence[tuple[str, object]] = (),
) -> str:
    """base_url + path_template with each `{name}` replaced by one percent-encoded segment.

    A parameter can never leave its segment: "/", "?", "#" and "%" are encoded, and "",
    "." and ".." are refused (URL normalisation would turn them into a different path), and
    so is a value a server reads as "." or ".." (see `_dot_segment`).
    """
    texts, names, malformed = _template(path_template)
    problems: list[FieldProblem] = []
    parts = [texts[0]]
    for name, text in zip(names, texts[1:], strict=True):
        given = path_params.get(name)
        value = "" if given is None else str(given)
        if given is None:
            problems.append(
                FieldProblem(f"/path/{name}", f"path parameter {name} is missing", "required")
            )
        elif value == "" or _dot_segment(value):
            problems.append(
                FieldProblem(
                    f"/path/{name}", f"path parameter {name} cannot be {value!r}", "pattern"
                )
            )
        parts += (quote(value, safe=""), text)
    if malformed:
        problems.append(
            FieldProblem("/path", f"malformed path template {path_template!r}", "format")
        )
    if problems:
        raise InvalidPayload("cannot build the partner URL", problems)
    path = "".join(parts)
    url = base_url.rstrip("/") + ("/" + path.lstrip("/") if path else "")
    pairs = query.items() if isinstance(query, Mapping) else query
    encoded = urlencode([(k, _query_value(v)) for k, v in pairs if v is not None])
    return f"{url}{'&' if '?' in url else '?'}{encoded}" if encoded else url


def _dot_segment(value: str) -> bool:
    """Whether a server may read a dot segment ("." or "..") in the value of one segment.

    - As what comes before a ";": Tomcat, Jetty and Spring cut a segment's `;parameters`
      before resolving dot segments, and the ";" reaches the wire as itself (the URL library
      undoes its percent-encoding): "/fines/{ait}/pay" with `ait` "..;" is their "/pay".
    - Between encoded slashes or backslashes: a proxy that decodes the path before it
      normalises it (nginx with a URI in `proxy_pass`) or a server that takes "\\" for "/"
      (IIS) reads "..%2F..%2Fadmin" as "../../admin".
    A "/" elsewhere ("A 12/34") stays one encoded segment."""
    return any(piece.split(";", 1)[0] in (".", "..") for piece in _SEPARATORS.split(value))


@lru_cache(maxsize=1024)
def _template(template: str) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """A path template split once: its literal texts around the placeholders, the
    placeholders' names, and whether a brace is not part of one."""
    pieces = PLACEHOLDER.split(template)  # text, name, text, name, ..., text
    return tuple(pieces[0::2]), tuple(pieces[1::2]), malformed_template(template)


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
