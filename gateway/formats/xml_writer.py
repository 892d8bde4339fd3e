"""JSON-like answers written as XML: a result, an RFC 9457 problem, and either one inside a
SOAP 1.1 or 1.2 envelope (a problem as the Fault).

The convention is RFC 9457's (Appendix B), for results as for problems: an object's members
are child elements named by their keys, in order; an array's items are `i` elements; text is
text; numbers are written as in JSON, booleans `true` / `false`; null is an empty element
with `xsi:nil="true"`; an empty object or array is an empty element. A key that is no XML
name is written `<member name="the key">`.

    response_xml(data, status)      <rabbot:Response xmlns:rabbot="urn:rabbot:gateway:1"
                                     status="201"> with the members in that namespace
    problem_xml(problem)            <problem xmlns="urn:ietf:rfc:7807">
    soap_response(version, ...)     the Response in an Envelope's Body
    soap_fault(version, problem)    a Fault whose detail is the problem: 1.1 `faultcode`
                                    soap:Client (4xx) / soap:Server, `faultstring`, `detail`;
                                    1.2 `Code/Value` env:Sender / env:Receiver,
                                    `Reason/Text xml:lang="en"`, `Detail`

Written by the standard library's SAX XMLGenerator, which escapes text and attribute values;
characters XML 1.0 cannot carry become U+FFFD. The bytes are UTF-8 with an XML declaration.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, Literal
from xml.parsers import expat
from xml.sax.saxutils import XMLGenerator, escape
from xml.sax.xmlreader import AttributesNSImpl

import orjson

SoapVersion = Literal["1.1", "1.2"]

SOAP_ENVELOPES: Final[dict[SoapVersion, str]] = {
    "1.1": "http://schemas.xmlsoap.org/soap/envelope/",
    "1.2": "http://www.w3.org/2003/05/soap-envelope",
}
GATEWAY_NS: Final = "urn:rabbot:gateway:1"
PROBLEM_NS: Final = "urn:ietf:rfc:7807"  # RFC 9457 keeps RFC 7807's namespace
XSI_NS: Final = "http://www.w3.org/2001/XMLSchema-instance"
_XML_NS: Final = "http://www.w3.org/XML/1998/namespace"
_PREFIXES: Final[dict[SoapVersion, str]] = {"1.1": "soap", "1.2": "env"}
# Characters XML 1.0 cannot carry, even as character references.
_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
# A subset of XML's NCName (no colon): ASCII, Latin, Greek, Cyrillic and the other letters
# up to U+1FFF; a name with other than ASCII must also be one expat reads (XML 1.0 before its
# 5th edition: `Ǆ`, `Ⱦ` are names to the 5th edition only, and to ElementTree not at all).
_NAME: Final = re.compile(
    "[A-Za-z_\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u037d\u037f-\u1fff]"
    "[A-Za-z0-9._\\-\u00b7\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u037d\u037f-\u1fff]*"
)

Name = tuple[str | None, str]


def response_xml(data: Any, status: int) -> bytes:
    """A trigger's answer (`status` is the HTTP status the JSON answer has) as a document."""
    writer = _Writer()
    _response(writer, data, status)
    return writer.done()


def problem_xml(problem: Mapping[str, Any]) -> bytes:
    """An RFC 9457 problem as `application/problem+xml`."""
    writer = _Writer()
    _problem(writer, problem)
    return writer.done()


def soap_response(version: SoapVersion, data: Any, status: int) -> bytes:
    """The Response in a SOAP envelope of that version."""
    writer = _Writer()
    with _envelope(writer, version):
        _response(writer, data, status)
    return writer.done()


def soap_fault(version: SoapVersion, problem: Mapping[str, Any]) -> bytes:
    """The problem as a SOAP Fault: the sender's (a 4xx status) or the receiver's."""
    writer = _Writer()
    soap = SOAP_ENVELOPES[version]
    prefix = _PREFIXES[version]
    status = problem.get("status")
    senders = isinstance(status, int) and 400 <= status < 500
    reason = str(problem.get("detail") or problem.get("title") or "")
    with _envelope(writer, version), writer.element((soap, "Fault")):
        if version == "1.1":
            writer.leaf((None, "faultcode"), f"{prefix}:{'Client' if senders else 'Server'}")
            writer.leaf((None, "faultstring"), reason)
            with writer.element((None, "detail")):
                _problem(writer, problem)
        else:
            with writer.element((soap, "Code")):
                writer.leaf((soap, "Value"), f"{prefix}:{'Sender' if senders else 'Receiver'}")
            with writer.element((soap, "Reason")):
                writer.leaf((soap, "Text"), reason, {(_XML_NS, "lang"): "en"})
            with writer.element((soap, "Detail")):
                _problem(writer, problem)
    return writer.done()


def _response(writer: _Writer, data: Any, status: int) -> None:
    name = (GATEWAY_NS, "Response")
    with writer.element(name, {(None, "status"): str(status)}, prefixes={"rabbot": GATEWAY_NS}):
        _members(writer, GATEWAY_NS, data)


def _problem(writer: _Writer, problem: Mapping[str, Any]) -> None:
    with writer.element((PROBLEM_NS, "problem"), prefixes={"": PROBLEM_NS}):
        _members(writer, PROBLEM_NS, problem)


@contextmanager
def _envelope(writer: _Writer, version: SoapVersion) -> Iterator[None]:
    soap = SOAP_ENVELOPES[version]
    with (
        writer.element((soap, "Envelope"), prefixes={_PREFIXES[version]: soap}),
        writer.element((soap, "Body")),
    ):
        yield


def _members(writer: _Writer, namespace: str, value: Any) -> None:
    """The content of an element holding `value`: its members, its items or its text."""
    if isinstance(value, Mapping):
        for key, member in value.items():
            _value(writer, namespace, str(key), member)
    elif isinstance(value, list | tuple):
        for item in value:
            _value(writer, namespace, "i", item)
    else:
        writer.text(_scalar(value))


def _value(writer: _Writer, namespace: str, key: str, value: Any) -> None:
    attributes: dict[Name, str] = {}
    name = key
    if not _is_name(key):
        attributes[(None, "name")] = key
        name = "member"
    if value is None:
        attributes[(XSI_NS, "nil")] = "true"
        writer.leaf((namespace, name), "", attributes, prefixes={"xsi": XSI_NS})
        return
    with writer.element((namespace, name), attributes):
        _members(writer, namespace, value)


def _is_name(key: str) -> bool:
    return _NAME.fullmatch(key) is not None and (key.isascii() or _expat_reads(key))


@functools.lru_cache(maxsize=1024)
def _expat_reads(name: str) -> bool:
    try:
        expat.ParserCreate().Parse(f"<{name}/>", True)
    except expat.ExpatError:
        return False
    return True


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:  # a null answer: its element is empty
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):  # any size: JSON numbers have no limit
        return str(value)
    if isinstance(value, float):
        return orjson.dumps(value).decode()
    return str(value)


class _Writer:
    """XMLGenerator with namespaces, text made XML-safe."""

    def __init__(self) -> None:
        self._out = io.StringIO()
        self._xml = XMLGenerator(self._out, encoding="utf-8", short_empty_elements=True)
        self._xml.startDocument()

    @contextmanager
    def element(
        self,
        name: Name,
        attributes: dict[Name, str] | None = None,
        *,
        prefixes: dict[str, str] | None = None,
    ) -> Iterator[None]:
        self.start(name, attributes, prefixes=prefixes)
        yield
        self.end(name, prefixes=prefixes)

    def leaf(
        self,
        name: Name,
        text: str,
        attributes: dict[Name, str] | None = None,
        *,
        prefixes: dict[str, str] | None = None,
    ) -> None:
        with self.element(name, attributes, prefixes=prefixes):
            self.text(text)

    def start(
        self,
        name: Name,
        attributes: dict[Name, str] | None = None,
        *,
        prefixes: dict[str, str] | None = None,
    ) -> None:
        for prefix, uri in (prefixes or {}).items():
            self._xml.startPrefixMapping(prefix or None, uri)
        safe = {key: _clean(value) for key, value in (attributes or {}).items()}
        self._xml.startElementNS(name, None, AttributesNSImpl(safe, {}))

    def end(self, name: Name, *, prefixes: dict[str, str] | None = None) -> None:
        self._xml.endElementNS(name, None)
        for prefix in prefixes or {}:
            self._xml.endPrefixMapping(prefix or None)

    def text(self, text: str) -> None:
        # Escaped here, carriage returns too: a reader turns a literal one into a line feed.
        self._xml.ignorableWhitespace(escape(_clean(text), {"\r": "&#13;"}))

    def done(self) -> bytes:
        self._xml.endDocument()
        return self._out.getvalue().encode("utf-8")


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
