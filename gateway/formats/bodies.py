"""Turning a partner's bytes into a payload: JSON (object or batch array; JSON Lines as the
batch array), XML (one object, gateway/formats/xml_tree.py) or a form/query (urlencoded, or
the text fields of multipart/form-data). A trigger reads its body here, and `gateway mapping
test` and the dry run their sample (gateway/mapping/files.py), so a sample is read, or
refused, as the trigger reads the same bytes."""

from __future__ import annotations

import re
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_plus

import orjson

from gateway.errors import BadRequest, UnsupportedMediaType
from gateway.formats import MAX_DEPTH, DocumentRefused, is_xml, json_depth_exceeds
from gateway.formats import parse_xml as _parse_xml
from gateway.formats.charsets import (
    UTF8_BOM,
    decode_charset,
    is_utf8,
    is_windows_1252,
    latin_1_to_windows_1252,
    text_codec,
    unmarked,
    utf8_json,
)
from gateway.formats.json_tree import loads_exact, repeated_member, repeated_message
from gateway.formats.xml_tree import NoEncodingNamed

MAX_FORM_FIELDS: Final = 200
FORM: Final = "application/x-www-form-urlencoded"
MULTIPART: Final = "multipart/form-data"
_MAX_PART_HEADERS: Final = 20
# Types under which a partner that cannot set its headers sends a urlencoded body.
UNLABELLED: Final = frozenset({"", "text/plain", "application/octet-stream"})
_URLENCODED: Final = re.compile(rb"[^\s&=]+=\S*")


# JSON Lines (one JSON object a line): trackers' and log shippers' batches (Fluent Bit,
# Vector, Logstash). Read as an array, the batch it is.
NDJSON_TYPES: Final = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
        "application/json-lines",
    }
)


def is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def parse_json(content_type: str, body: bytes, charset: str | None = None) -> Any:
    """A JSON object or array; JSON Lines (NDJSON) as the array of its lines' objects. A body
    that starts as JSON does (`{` or `[`) is read as JSON whatever its Content-Type says, or
    none (AWS SNS posts `text/plain`, curl `-d` a form type, IoT modules nothing: a partner
    cannot change its headers); another is a 415. A 400 when malformed, nested deeper than
    MAX_DEPTH, or neither UTF-8 nor in the charset its media type names (UTF-8 is read first,
    and a byte order mark ignored: gateway/formats/charsets.py)."""
    lines = content_type in NDJSON_TYPES
    if not (lines or is_json(content_type) or starts_as(body, b"{", b"[")):
        raise UnsupportedMediaType(
            f"expected application/json, got {content_type or 'no content type'}"
        )
    if not body.strip():
        raise BadRequest("the request body is empty")
    body = utf8_body(body, charset)
    if lines:
        return _json_lines(body)
    try:
        data = loads_exact(body)
    except orjson.JSONDecodeError as exc:
        # NDJSON labelled application/json (or not labelled): every line an object.
        batch = _json_lines_or_none(body)
        if batch is None:
            raise malformed(body, exc) from None
        return batch
    if not isinstance(data, dict | list):
        raise BadRequest("the body must be a JSON object or an array of objects")
    check_json(body, data)
    return data


def utf8_body(body: bytes, charset: str | None) -> bytes:
    """A JSON body as UTF-8 bytes (`utf8_json`: a byte order mark dropped, a body that is not
    UTF-8 decoded by the charset its media type names); 400 for bytes that are not of that
    charset, or a charset no one knows."""
    try:
        return utf8_json(body, charset)
    except DocumentRefused as exc:
        raise BadRequest(f"malformed JSON: {exc.message}") from None


def malformed(body: bytes, exc: orjson.JSONDecodeError) -> BadRequest:
    """The 400 for a JSON body orjson refused: why, or that it is not UTF-8 and should name
    its charset (orjson's word for that speaks of surrogates)."""
    return BadRequest(f"malformed JSON: {_not_utf8(body) or exc}")


def starts_as(body: bytes, *first: bytes) -> bool:
    """Whether the body's first character, after a byte order mark (UTF-8, UTF-16 or UTF-32,
    read in the encoding it says) and blanks, is one of `first`."""
    return unmarked(body).lstrip()[:1] in first


def _json_lines(body: bytes) -> list[Any]:
    """Each non-blank line of an NDJSON body, an object; 400 naming the first line that is
    not."""
    items: list[Any] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            item = loads_exact(line)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"malformed JSON on line {number}: {_not_utf8(line) or exc}") from None
        if not isinstance(item, dict):
            raise BadRequest(f"line {number} of the JSON Lines body is not a JSON object")
        check_json(line, item)
        items.append(item)
    if not items:
        raise BadRequest("the request body is empty")
    return items


def _json_lines_or_none(body: bytes) -> list[Any] | None:
    """The body as JSON Lines when it has two lines or more and each is a JSON object."""
    if body.strip().count(b"\n") == 0:
        return None
    try:
        return _json_lines(body)
    except BadRequest:
        return None


def _not_utf8(body: bytes) -> str | None:
    """Why a body that names no charset is unreadable, when it is its encoding."""
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        return (
            f"the body is not valid UTF-8 (byte {exc.start}); a partner that sends another "
            "encoding names it: Content-Type: application/json; charset=ISO-8859-1"
        )
    return None


def check_json(body: bytes, data: Any) -> None:
    """400 for JSON nested deeper than MAX_DEPTH (SPEC §7), or whose object names a member
    twice, on every route that reads JSON."""
    if json_depth_exceeds(body, data):
        raise BadRequest(f"the JSON body is nested deeper than {MAX_DEPTH} levels")
    if (name := repeated_member(body, data)) is not None:
        raise BadRequest(f"malformed JSON: {repeated_message(name)}")


def parse_xml(
    content_type: str, body: bytes, charset: str | None = None, default: str | None = None
) -> dict[str, Any]:
    """An XML (or SOAP) body as one object (gateway/formats/xml_tree.py), also under another
    media type when it starts as XML does (`<`: PHP's curl posts XML as a form); 415 for
    other content, 400 naming the line and column when it is malformed, has a DTD or nests
    deeper than MAX_DEPTH, or is not in the charset its media type names (or, naming none
    and no declaration either, neither UTF-8 nor in `default`, the trigger's `charset`)."""
    if not is_xml(content_type) and not starts_as(body, b"<"):
        raise UnsupportedMediaType(
            "expected application/xml, text/xml or application/soap+xml, got "
            f"{content_type or 'no content type'}"
        )
    if not body.strip():
        raise BadRequest("the request body is empty")
    try:
        return _parse_xml(body, charset=charset, default=default)
    except DocumentRefused as exc:
        message = f"malformed XML: {exc.located()}"
        if isinstance(exc, NoEncodingNamed):
            message += ' (or the trigger says it: "charset": "windows-1252")'
        raise BadRequest(message, line=exc.line, column=exc.column) from None


def reads_as_json(content_type: str, body: bytes) -> bool:
    """Whether a form trigger's body is JSON instead (labelled so, or starting as JSON does):
    the OsmAnd protocol is a query string, a form, or, from Traccar Client 9 on, a JSON body
    posted to the same URL."""
    if not body:
        return False
    return is_json(content_type) or content_type in NDJSON_TYPES or starts_as(body, b"{", b"[")


def parse_form(
    content_type: str,
    body: bytes,
    query_string: str,
    charset: str | None = None,
    header: str = "",
) -> dict[str, str]:
    """OsmAnd-style: a urlencoded body and/or the query string, as a flat object of strings
    (body fields win over query fields; a repeated field keeps its last value). The body's
    text and its percent-escapes are UTF-8, or else in the charset its media type names
    (`charset=ISO-8859-1`: `cidade=S%E3o+Paulo`), as for JSON. A multipart/form-data body
    (HTML forms, some trackers) gives its text fields the same way; `header` is the whole
    Content-Type, whose boundary splits it. Under text/plain, application/octet-stream or no
    type, a body that reads as urlencoded (`name=value` pairs, no blanks) is a form, as
    Traccar reads an OsmAnd body whatever its type (GPSLogger's templates, curl `--data`
    with a text type)."""
    if body and content_type not in (FORM, MULTIPART) and not _unlabelled_form(content_type, body):
        raise UnsupportedMediaType(
            f"expected {FORM}, {MULTIPART} or a query string, got "
            f"{content_type or 'no content type'}"
        )
    fields = _query_fields(query_string, charset)
    if body and content_type == MULTIPART:
        fields.update(_multipart_fields(header, body, charset))
    # A byte order mark (a file saved by a Windows tool) and blanks around urlencoded text
    # are never part of a name or a value.
    elif body := body.removeprefix(UTF8_BOM).strip():
        try:
            fields.update(_pairs(body.decode("utf-8")))
        except (UnicodeDecodeError, _NotUtf8):
            if charset is None or is_utf8(charset):
                raise BadRequest(
                    f"the form body is not valid UTF-8 once decoded; {_NAME_IT}"
                ) from None
            fields.update(_pairs(_form_text(body, charset), charset))
    if not fields:
        raise BadRequest("no fields in the query string or form body")
    return fields


# How a partner that does not send UTF-8 says what it sends.
_NAME_IT: Final = (
    "a partner that sends another encoding names it: Content-Type: "
    f'{FORM}; charset=ISO-8859-1 (or the trigger says it: "charset": "windows-1252")'
)


def _query_fields(query_string: str, charset: str | None) -> dict[str, str]:
    """The query string's fields, read as a form body's (docs/triggers.md#encodings): its
    percent-escapes UTF-8, or else in the charset the request names (its Content-Type's,
    for a GET with no body too) or the trigger does: `nome=Jo%E3o` under ISO-8859-1 is
    `João`. A 400 naming the first field that is neither, and how to say the charset."""
    try:
        return _pairs(query_string)
    except _NotUtf8:
        if charset is None or is_utf8(charset):
            name = _undecodable_field(query_string)
            raise BadRequest(
                f"the query string field {name!r} is not valid UTF-8 once decoded; {_NAME_IT}"
            ) from None
    if not is_windows_1252(charset) and text_codec(charset) is None:
        raise BadRequest(f"the query string: unknown charset {charset!r}")
    return _pairs(query_string, charset)


def _undecodable_field(query_string: str) -> str:
    """The name of the first field of a query string whose name or value is not UTF-8 once
    its percent-escapes are decoded (its bytes that are not shown as U+FFFD)."""
    for part in query_string.split("&"):
        name, _, value = part.partition("=")
        try:
            unquote_plus(name, errors="strict")
            unquote_plus(value, errors="strict")
        except UnicodeDecodeError:
            return unquote_plus(name, errors="replace")
    return ""


def _unlabelled_form(content_type: str, body: bytes) -> bool:
    return content_type in UNLABELLED and _URLENCODED.fullmatch(body.strip()) is not None


class _NotUtf8(Exception):
    """A percent-escape that is not UTF-8 once decoded."""


def _form_text(body: bytes, charset: str) -> str:
    try:
        return decode_charset(body, charset)
    except DocumentRefused as exc:
        raise BadRequest(f"the form body: {exc.message}") from None


def _pairs(text: str, charset: str = "utf-8") -> dict[str, str]:
    """The fields of urlencoded text, percent-escapes decoded in `charset` (a Latin-1 or ASCII
    label as windows-1252: gateway/formats/charsets.py)."""
    windows_1252 = charset != "utf-8" and is_windows_1252(charset)
    try:
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            encoding="latin-1" if windows_1252 else charset,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
        if windows_1252:
            fixed = latin_1_to_windows_1252
            return {fixed(name): fixed(value) for name, value in pairs}
        return dict(pairs)
    except UnicodeDecodeError:
        if charset == "utf-8":
            raise _NotUtf8 from None
        raise BadRequest(f"a form field is not valid {charset} once decoded") from None
    except ValueError:
        raise BadRequest(f"more than {MAX_FORM_FIELDS} form fields") from None


def _multipart_fields(header: str, body: bytes, charset: str | None) -> dict[str, str]:
    """The text fields of a multipart/form-data body (RFC 7578), in order (a repeated name
    keeps its last value). Each is UTF-8, or else in its part's charset or the request's. A
    file is a 415 naming its field (a form trigger reads text), but an empty file input an
    HTML form sends unused (no file name, nothing in it) is left out. 400 for a body its
    boundary does not split into parts, and for a part without a name. The body is cut at
    its boundaries in one pass, and the parts counted before any is read: a body of 20,000
    tiny parts costs no more than one of 200."""
    boundary = _params("Content-Type", header).get_boundary()
    if not boundary:
        raise BadRequest(f"a {MULTIPART} body needs the boundary parameter of its Content-Type")
    delimiter = b"--" + boundary.encode("latin-1", "replace")
    start = body.find(delimiter)
    newline = b"\r\n" if body[start + len(delimiter) :].startswith(b"\r\n") else b"\n"
    chunks = body[start + len(delimiter) :].split(newline + delimiter) if start >= 0 else []
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise BadRequest(
            f"malformed {MULTIPART} body: its boundary does not split it into parts, or the "
            "closing boundary is missing"
        )
    if len(chunks) - 1 > MAX_FORM_FIELDS:
        raise BadRequest(f"more than {MAX_FORM_FIELDS} form fields")
    fields: dict[str, str] = {}
    for number, chunk in enumerate(chunks[:-1], start=1):
        head, gap, data = chunk.partition(newline + newline)
        lines = head.split(newline)
        if not gap or lines[0].strip(b" \t"):  # transport padding only after a delimiter
            raise BadRequest(f"part {number} of the {MULTIPART} body is malformed")
        part = _part_headers(lines[1:])
        name, filename = _disposition(part, number)
        if filename is not None or part.get_content_maintype() == "multipart":
            if not filename and not data:
                continue  # an unused file input
            raise UnsupportedMediaType(
                f"form field {name!r} is a file ({filename or 'several files'}): a form trigger "
                "reads text fields only"
            )
        fields[name] = _part_text(name, data, part.get_content_charset() or charset)
    return fields


def _disposition(part: Message, number: int) -> tuple[str, str | None]:
    """A part's form-data name and file name (`name*=UTF-8''…` as RFC 2231 writes them)."""
    try:
        raw = part.get_param("name", header="content-disposition")
        name = None if raw is None else collapse_rfc2231_value(raw)
        filename = part.get_filename()
    except (ValueError, LookupError, TypeError):  # a charset no one knows, a NUL in it
        raise BadRequest(
            f"part {number} of the {MULTIPART} body has a malformed Content-Disposition"
        ) from None
    if not name or part.get_content_disposition() != "form-data":
        raise BadRequest(f"part {number} of the {MULTIPART} body has no form-data name")
    return name, filename


def _part_headers(lines: list[bytes]) -> Message:
    """A part's headers (UTF-8, as browsers send a field's name, else Latin-1)."""
    part = Message()
    for line in lines[:_MAX_PART_HEADERS]:
        name, colon, value = line.partition(b":")
        if colon:
            text = value.strip()
            try:
                decoded = text.decode("utf-8")
            except UnicodeDecodeError:
                decoded = text.decode("latin-1")
            part[name.strip().decode("latin-1")] = decoded
    return part


def _params(name: str, value: str) -> Message:
    """A header's value with its parameters readable (`get_param`, `get_boundary`)."""
    message = Message()
    message[name] = value
    return message


def _part_text(name: str, data: bytes, charset: str | None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if charset is None or is_utf8(charset):
            raise BadRequest(
                f"form field {name!r} is not valid UTF-8; a partner that sends another "
                "encoding names it in the part's Content-Type (text/plain; charset=ISO-8859-1)"
            ) from None
    try:
        return decode_charset(data, charset)
    except DocumentRefused as exc:
        raise BadRequest(f"form field {name!r}: {exc.message}") from None
