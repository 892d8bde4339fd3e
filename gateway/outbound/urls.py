"""Partner URLs: a base URL, an action's path template with each {name} filled by exactly one
percent-encoded segment, and a query string."""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from functools import lru_cache
from urllib.parse import quote, unquote_plus, urlencode, urlsplit

from yarl import URL

from gateway.errors import FieldProblem, InvalidPayload
from gateway.formats.json_tree import a_json_type

# A path parameter in an action's path template: "/fines/{ait}".
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Characters that go into a path segment as themselves (`quote` leaves them: RFC 3986).
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]+")
# What some partner servers read as a path separator once the path is decoded.
_SEPARATORS = re.compile(r"[/\\]")
# A character a path or query cannot carry as itself (RFC 3986 pchar, "/" and "?"), or a
# "%" that starts no escape: these are encoded; everything else goes out as written.
_UNSENDABLE = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%]|%(?![0-9A-Fa-f]{2})")


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
    so is a value a server reads as "." or ".." (see `_dot_segment`). Values are written as
    text the way a request mapping writes them (`_text`); an object or an array is no
    segment, refused.
    """
    texts, names, malformed = _template(path_template)
    problems: list[FieldProblem] = []
    parts = [texts[0]]
    for name, text in zip(names, texts[1:], strict=True):
        given = path_params.get(name)
        value = "" if given is None or isinstance(given, dict | list) else _text(given)
        if given is None:
            problems.append(
                FieldProblem(f"/path/{name}", f"path parameter {name} is missing", "required")
            )
        elif isinstance(given, dict | list):
            message = f"path parameter {name} is {a_json_type(given)}, not text for one segment"
            problems.append(FieldProblem(f"/path/{name}", message, "type"))
        elif _UNRESERVED.fullmatch(value) and value not in (".", ".."):
            parts += (value, text)  # the common case: nothing to encode
            continue
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
    encoded = urlencode([(k, _text(each)) for k, v in pairs for each in _repeated(v)])
    return f"{url}{'&' if '?' in url else '?'}{encoded}" if encoded else url


def _repeated(value: object) -> list[object]:
    """A query value as the values its parameter is sent with: a list, one per item (the
    parameter repeated: `deviceId=1&deviceId=2`), nulls left out."""
    items = value if isinstance(value, list) else [value]
    return [each for each in items if each is not None]


def _dot_segment(value: str) -> bool:
    """Whether a server may read a dot segment ("." or "..") in the value of one segment.

    - As what comes before a ";": Tomcat, Jetty and Spring cut a segment's `;parameters`
      before resolving dot segments, and a proxy or server that decodes "%3B" first does the
      same: "/fines/{ait}/pay" with `ait` "..;" is their "/pay".
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


def _text(value: object) -> str:
    """A path or query value as text, as a request mapping writes one (`casts.to_string`):
    `true`/`false` for booleans (Python wrote `True`), a whole number sent as a float as its
    integer's digits (`4711.0`, a Java `Double`'s id, is `4711`), anything else as itself."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def exact_url(url: str) -> URL:
    """The URL to send: scheme, host and port as the URL library reads them (the SSRF guard
    checks that host), path and query exactly as encoded here or in the configuration.

    yarl's parse decodes the escapes of sub-delimiters ("%3B" becomes ";", "%3D" "=",
    "%2C" ","): a partner whose ids hold them would get another resource. Only characters
    a URL cannot carry are encoded, and "." and ".." segments resolved, as yarl does.
    """
    parsed = URL(url)
    if not parsed.absolute:
        return parsed
    parts = urlsplit(url)
    path = parts.path
    if "." in path:  # a "." or ".." segment has one
        path = _without_dot_segments(path)
    return URL.build(
        scheme=parsed.scheme,
        authority=parsed.raw_authority,
        path=_requoted(path or "/"),
        query_string=_requoted(parts.query),
        encoded=True,
    )


def without_params(url: URL, names: Collection[str]) -> URL:
    """`url` without the query parameters named `names` (read decoded: `api%5Fkey` is
    `api_key`), the rest of its query exactly as encoded. A credential sent in the query
    replaces the parameters of its name (a next-page URL that echoes the key, masked)."""
    query = url.raw_query_string
    if not names or not query:
        return url
    kept = [p for p in query.split("&") if unquote_plus(p.partition("=")[0]) not in names]
    if len(kept) == query.count("&") + 1:
        return url
    return URL.build(
        scheme=url.scheme,
        authority=url.raw_authority,
        path=url.raw_path,
        query_string="&".join(kept),
        fragment=url.raw_fragment,
        encoded=True,
    )


def _requoted(text: str) -> str:
    return _UNSENDABLE.sub(lambda m: quote(m.group(), safe=""), text)


def _without_dot_segments(path: str) -> str:
    """RFC 3986 remove_dot_segments for a path's literal "." and ".." segments."""
    segments = path.split("/")
    kept: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment in (".", ".."):
            if segment == ".." and len(kept) > 1:
                kept.pop()
            if last:
                kept.append("")
            continue
        kept.append(segment)
    return "/".join(kept)
