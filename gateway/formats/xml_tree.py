"""XML into the JSON-like tree mappings read, with the stdlib's expat and nothing unsafe.

The convention (docs/mappings.md#xml-payloads):

- the document is `{root name: root value}`, so a SOAP message reads `Envelope.Body.…`;
- an element with neither attributes nor child elements is its text, stripped of the
  surrounding XML blanks (`<lat> -23.5 </lat>` → `"-23.5"`; `<x/>` → `""`); text stays text;
- otherwise it is an object: each attribute as `@name`, each child element by its name, and
  its own text, when it has any besides blanks, as `#text`;
- sibling elements of one name (and attributes that meet, below) become a list, in document
  order; a name seen once is not a list (JMESPath's `to_array()` makes it one);
- names lose their namespace prefix (`soap:Body` → `Body`, `@xsi:type` → `@type`); names that
  meet once their prefixes are gone are collected like repeated siblings; the `xmlns`
  declarations are not data and do not appear;
- `xsi:nil="true"` makes an element null;
- comments and processing instructions are left out; CDATA is text.

Safety: a document with a DTD (`<!DOCTYPE`) is refused before anything in it is read, so no
entity is ever declared, expanded or fetched (billion laughs, XXE); an undeclared entity is
malformed; elements nest at most MAX_DEPTH deep; the size is the caller's (a trigger's body
limit, the sender's answer cap). Every refusal is a DocumentRefused with a line and column.
"""

from __future__ import annotations

import codecs
import re
from typing import Any, Final, NoReturn
from xml.parsers import expat

from .charsets import NOT_CHARSETS as _NOT_CHARSETS
from .charsets import decode_charset as _decoded
from .charsets import decode_marked, is_ascii, is_utf8, is_windows_1252
from .json_tree import MAX_DEPTH
from .refusal import DocumentRefused

XML_CONTENT_TYPES: Final = ("application/xml", "text/xml", "application/soap+xml")
_SEPARATOR: Final = "}"  # not a name character: `uri}local` splits at the last one
_NIL: Final = "http://www.w3.org/2001/XMLSchema-instance}nil"
_BLANKS: Final = " \t\r\n"
_DECLARED: Final = re.compile(rb"^[^<]{0,8}<\?xml[^>]{0,200}?encoding\s*=\s*[\"']([^\"']{1,64})")


def is_xml(content_type: str) -> bool:
    """application/xml, text/xml, application/soap+xml or any other `+xml` type."""
    return content_type in XML_CONTENT_TYPES or content_type.endswith("+xml")


def parse_xml(
    document: bytes | str, *, charset: str | None = None, default: str | None = None
) -> dict[str, Any]:
    """The document's tree, `{root name: value}`; DocumentRefused when it is malformed, has a
    DTD or nests deeper than MAX_DEPTH. Bytes are decoded by `charset` when the media type
    names one (RFC 7303: it wins over the XML declaration), else by the XML declaration's
    encoding, else as UTF-8 when they are, else by `default` (a trigger's `charset`: a
    partner that cannot name its own); a byte order mark before all of them. Bytes that are
    not UTF-8 and name no encoding are refused saying so, and how to name one. Text is read
    as it is (expat then ignores the declaration's encoding)."""
    document = _text(document, charset, default)
    if not document.strip():
        raise DocumentRefused("the document is empty")
    builder = _Builder()
    parser = expat.ParserCreate(namespace_separator=_SEPARATOR)
    builder.attach(parser)
    try:
        parser.Parse(document, True)
    except expat.ExpatError as exc:
        raise DocumentRefused(expat.ErrorString(exc.code), exc.lineno, exc.offset + 1) from None
    except DocumentRefused:
        raise
    except (LookupError, ValueError) as exc:  # the XML declaration names an encoding expat
        # cannot read (`utf-32`, `utf-7`: multi-byte) or Python has no text codec for (`hex`)
        raise DocumentRefused(f"unsupported encoding in the XML declaration: {exc}") from None
    return builder.root


def element_text(value: Any) -> Any:
    """A scalar as an XML answer gives it: an element with attributes and text, such as a
    SOAP rpc/encoded `<temMais xsi:type="xsd:boolean">false</temMais>` (NuSOAP, Axis 1 type
    every element), is the object `{"@type": "xsd:boolean", "#text": "false"}` here; read as
    a value, it is its `#text`. Anything else (an element with child elements, one with
    attributes and no text, any other value) is itself."""
    if isinstance(value, dict) and "#text" in value:
        if all(name == "#text" or name.startswith("@") for name in value):
            return value["#text"]
    return value


def root_name(document: bytes | str, *, charset: str | None = None) -> tuple[str, str] | None:
    """The root element's namespace URI (`""` for none) and local name, read without reading
    further, with the same refusals as parse_xml; None when the document is refused before its
    root element (a DTD, an unknown charset, malformed before it) or has none."""
    builder = _Builder()
    parser = expat.ParserCreate(namespace_separator=_SEPARATOR)
    builder.attach(parser)
    parser.StartElementHandler = _stop_at_root
    try:
        parser.Parse(_text(document, charset), True)
    except _Root as root:
        namespace, _, local = root.name.rpartition(_SEPARATOR)
        return namespace, local
    except (expat.ExpatError, DocumentRefused, LookupError, ValueError):
        pass
    return None


class _Root(Exception):
    """Not an error: how the first start tag stops expat."""

    def __init__(self, name: str) -> None:
        self.name = name


def _stop_at_root(name: str, _: dict[str, str]) -> NoReturn:
    raise _Root(name)


def _text(document: bytes | str, charset: str | None, default: str | None = None) -> bytes | str:
    """The document as expat is to read it: text when a byte order mark or the media type's
    charset says what its bytes are, else the bytes (their XML declaration says, else
    UTF-8, else `default` says, else they are refused)."""
    if isinstance(document, str):
        return document
    if (marked := decode_marked(document)) is not None:
        return marked
    if charset:
        return _labelled(document, charset)
    declared = _check_declared(document)
    if b"\x00" in document[:400]:
        return document  # UTF-16 or UTF-32 without a mark: expat's to tell
    if declared is not None:
        if is_windows_1252(declared):
            return _labelled(document, declared)  # as a media type's charset=ISO-8859-1 would be
        return document
    try:
        document.decode()
    except UnicodeDecodeError as exc:
        if default and not is_utf8(default):
            return _decoded(document, default)
        line = document.count(b"\n", 0, exc.start) + 1
        column = exc.start - (document.rfind(b"\n", 0, exc.start) + 1) + 1
        raise NoEncodingNamed(_NOT_UTF8.format(byte=exc.start), line, column) from None
    return document


class NoEncodingNamed(DocumentRefused):
    """Bytes that are not UTF-8 in a document that names no other encoding: its writer is to
    name one (the message says how)."""


_NOT_UTF8: Final = (
    "the body is not valid UTF-8 (byte {byte}) and names no other encoding; a partner that "
    "sends another names it: Content-Type: text/xml; charset=ISO-8859-1, or an XML "
    'declaration <?xml version="1.0" encoding="ISO-8859-1"?>'
)


def _labelled(document: bytes, label: str) -> str:
    """The document in the charset `label` names, but UTF-8 under an ASCII label when it is
    valid UTF-8 (`encoding="US-ASCII"` on `São Paulo` in UTF-8 is no windows-1252 `SÃ£o`). A
    Latin-1 label is the document's word: its bytes are windows-1252 (`charsets.py`)."""
    if is_ascii(label):
        try:
            return document.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return _decoded(document, label)


def _check_declared(document: bytes) -> str | None:
    """The encoding an XML declaration names, if any. Refuses one naming one of Python's
    escape codecs, which expat would otherwise ask Python to decode with (NULs dropped: the
    declaration may be UTF-16)."""
    declared = _DECLARED.match(document[:400].replace(b"\x00", b""))
    if declared is None:
        return None
    label = declared.group(1).decode("ascii", "replace")
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return label  # expat says so, with the place
    if name in _NOT_CHARSETS:
        raise DocumentRefused(f"unsupported encoding in the XML declaration: {name}", 1, 1)
    return label


class _Frame:
    __slots__ = ("members", "name", "nil", "text")

    def __init__(self, name: str, members: dict[str, Any], nil: bool) -> None:
        self.name = name
        self.members = members
        self.nil = nil
        self.text: list[str] = []


class _Builder:
    """expat's callbacks, building the tree one element at a time."""

    def __init__(self) -> None:
        self._stack: list[_Frame] = []
        self._parser: expat.XMLParserType | None = None
        self.root: dict[str, Any] = {}

    def attach(self, parser: expat.XMLParserType) -> None:
        self._parser = parser
        parser.buffer_text = True
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartDoctypeDeclHandler = self._refuse_dtd
        # Unreachable without a DTD; refused all the same should expat ever report them.
        parser.EntityDeclHandler = self._refuse_dtd
        parser.UnparsedEntityDeclHandler = self._refuse_dtd
        parser.NotationDeclHandler = self._refuse_dtd
        parser.ExternalEntityRefHandler = self._refuse_dtd
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text

    def _refuse_dtd(self, *_: Any) -> NoReturn:
        self._refuse("a DTD (<!DOCTYPE ...>) is not accepted: no entities are declared or expanded")

    def _refuse(self, message: str) -> NoReturn:
        parser = self._parser
        assert parser is not None  # attached before parsing starts
        raise DocumentRefused(message, parser.CurrentLineNumber, parser.CurrentColumnNumber + 1)

    def _start(self, name: str, attributes: dict[str, str]) -> None:
        if len(self._stack) >= MAX_DEPTH:
            self._refuse(f"elements nested deeper than {MAX_DEPTH} levels")
        members: dict[str, Any] = {}
        nil = False
        for qualified, value in attributes.items():
            if qualified == _NIL:
                nil = value.strip(_BLANKS) in ("true", "1")
            _add(members, "@" + _local(qualified), value)
        self._stack.append(_Frame(_local(name), members, nil))

    def _text(self, data: str) -> None:
        self._stack[-1].text.append(data)

    def _end(self, _: str) -> None:
        frame = self._stack.pop()
        text = "".join(frame.text).strip(_BLANKS)
        value: Any
        if frame.nil:
            value = None
        elif not frame.members:
            value = text
        else:
            value = frame.members
            if text:
                value["#text"] = text
        if self._stack:
            _add(self._stack[-1].members, frame.name, value)
        else:
            self.root = {frame.name: value}


def _local(name: str) -> str:
    return name.rpartition(_SEPARATOR)[2]


def _add(members: dict[str, Any], name: str, value: Any) -> None:
    """A member, or one more of a repeated name (element values are never lists: a list is
    always a name's repetition)."""
    if name not in members:
        members[name] = value
    elif isinstance(existing := members[name], list):
        existing.append(value)
    else:
        members[name] = [existing, value]
