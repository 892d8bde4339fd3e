"""How a partner's POST to /hooks is answered: JSON (the default), plain XML, or SOAP 1.1 or
1.2, for results and problems alike (docs/triggers.md#answers-to-xml-and-soap-calls).

JSON unless the trigger's `answers` is `as_called` and the caller has authenticated (so an
unknown trigger and a bad token are answered alike, in JSON, whatever the call speaks): then
the form follows what the request speaks. Before the body is read, its headers say:
`application/soap+xml` is SOAP 1.2, `text/xml` with a `SOAPAction` header SOAP 1.1, another
XML type plain XML. Once the body is read, its root element says: an `Envelope` in SOAP
1.1's or 1.2's namespace is that version, any other root plain XML. A SOAP call is answered
in SOAP unless its Accept prefers JSON; a plain XML call in XML only when its Accept prefers
XML (application/xml, text/xml); anything else in JSON.

The use case answers JSON (and its problems are the redacted RFC 9457 ones); this module only
writes them in another form (gateway/formats/xml_writer.py), with the HTTP status SOAP wants.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum
from typing import Any, Final

import orjson
from aiohttp import web

from gateway.formats import is_xml, root_name
from gateway.formats.xml_writer import (
    SOAP_ENVELOPES,
    SoapVersion,
    problem_xml,
    response_xml,
    soap_fault,
    soap_response,
)

# Statuses partners' retry logic and proxies act on (a credential to fix, a body to shrink
# or send otherwise, a pause before the next call, Retry-After): a Fault keeps them rather
# than SOAP's 500 (1.1) or 400 (1.2, the sender's fault).
KEPT_STATUSES: Final = frozenset({401, 408, 413, 415, 429, 503})
_XML_ACCEPTED: Final = ("application/xml", "text/xml", "application/soap+xml")
_JSON_ACCEPTED: Final = ("application/json", "application/problem+json")
_MAX_RANGES: Final = 50
_QVALUE: Final = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")  # RFC 9110 §12.4.2


class Form(Enum):
    JSON = "json"
    XML = "xml"
    SOAP_11 = "1.1"
    SOAP_12 = "1.2"


_CONTENT_TYPES: Final = {
    Form.XML: ("application/xml", "application/problem+xml"),
    Form.SOAP_11: ("text/xml", "text/xml"),
    Form.SOAP_12: ("application/soap+xml", "application/soap+xml"),
}
_BY_NAMESPACE: Final = {
    SOAP_ENVELOPES["1.1"]: Form.SOAP_11,
    SOAP_ENVELOPES["1.2"]: Form.SOAP_12,
}


class Reply:
    """What one request speaks, learnt from its headers and then from its body."""

    __slots__ = ("_accept", "_body", "_charset", "_content_type", "_soap_action", "_speaks")

    def __init__(
        self,
        content_type: str,
        *,
        soap_action: bool = False,
        accept: str | None = None,
        charset: str | None = None,
    ) -> None:
        self._content_type = content_type
        self._soap_action = soap_action
        self._accept = accept
        self._charset = charset
        self._body: bytes | None = None
        self._speaks = False  # whether the trigger answers this caller in its own form

    def as_called(self) -> None:
        """The caller is authenticated by a trigger that answers `as_called`."""
        self._speaks = True

    @classmethod
    def of(cls, request: web.Request) -> Reply:
        return cls(
            request.content_type if "Content-Type" in request.headers else "",
            soap_action="SOAPAction" in request.headers,
            accept=request.headers.get("Accept"),
            charset=request.charset,
        )

    def saw_body(self, body: bytes) -> None:
        self._body = body

    def form(self) -> Form:
        if not self._speaks:  # (a Reply is made for XML media types only: may_speak_xml)
            return Form.JSON
        preferred = _preferred(self._accept)
        if preferred is Form.JSON:
            return Form.JSON
        spoken = self._spoken()
        if spoken is Form.XML:
            return Form.XML if preferred is Form.XML else Form.JSON
        return spoken

    def _spoken(self) -> Form:
        root = root_name(self._body, charset=self._charset) if self._body else None
        if root is not None:
            namespace, local = root
            return _BY_NAMESPACE.get(namespace, Form.XML) if local == "Envelope" else Form.XML
        if self._content_type == "application/soap+xml":
            return Form.SOAP_12
        if self._content_type == "text/xml" and self._soap_action:
            return Form.SOAP_11
        return Form.XML


reply_key: Final = web.RequestKey("reply", Reply)


def may_speak_xml(request: web.Request) -> bool:
    """Whether a request could be answered in XML at all (an XML media type): the others,
    JSON and forms, are answered JSON without a Reply (the partners' hot path)."""
    return "Content-Type" in request.headers and is_xml(request.content_type)


def answer(
    request: web.Request, status: int, body: bytes, headers: Mapping[str, str]
) -> web.Response:
    """A use case's JSON answer in the request's form. SOAP stacks take 200 (and 202) as
    success only, so a SOAP answer is a 200 whose Response says the status."""
    reply = request.get(reply_key)
    form = reply.form() if reply is not None else Form.JSON
    if form is Form.JSON:
        return web.Response(
            body=body, status=status, headers=headers, content_type="application/json"
        )
    data = orjson.loads(body)
    content_type = _CONTENT_TYPES[form][0]
    if form is Form.XML:
        return _xml(response_xml(data, status), status, headers, content_type)
    return _xml(soap_response(_version(form), data, status), 200, headers, content_type)


def problem(
    request: web.Request, body: dict[str, Any], status: int, headers: Mapping[str, str]
) -> web.Response | None:
    """The problem in the request's XML form, or None when it is answered JSON."""
    reply = request.get(reply_key)
    form = reply.form() if reply is not None else Form.JSON
    if form is Form.JSON:
        return None
    content_type = _CONTENT_TYPES[form][1]
    if form is Form.XML:
        return _xml(problem_xml(body), status, headers, content_type)
    return _xml(soap_fault(_version(form), body), fault_status(form, status), headers, content_type)


def fault_status(form: Form, status: int) -> int:
    """SOAP 1.1 faults are 500; SOAP 1.2's are 400 for the sender's, 500 for ours; both keep
    KEPT_STATUSES."""
    if status in KEPT_STATUSES:
        return status
    if form is Form.SOAP_12 and status < 500:
        return 400
    return 500


def _version(form: Form) -> SoapVersion:
    return "1.1" if form is Form.SOAP_11 else "1.2"


def _xml(body: bytes, status: int, headers: Mapping[str, str], content_type: str) -> web.Response:
    return web.Response(
        body=body, status=status, headers=headers, content_type=content_type, charset="utf-8"
    )


def _preferred(accept: str | None) -> Form | None:
    """XML or JSON when the Accept header strictly prefers one (by q, the most specific
    range matching each type counting), else None."""
    if not accept:
        return None
    ranges = _ranges(accept)
    xml = max(_quality(ranges, media) for media in _XML_ACCEPTED)
    json = max(_quality(ranges, media) for media in _JSON_ACCEPTED)
    if xml > json:
        return Form.XML
    return Form.JSON if json > xml else None


def _ranges(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for part in accept.split(",")[:_MAX_RANGES]:
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                quality = float(value) if _QVALUE.fullmatch(value) else 0.0
        if media:
            ranges.append((media.lower(), quality))
    return ranges


def _quality(ranges: list[tuple[str, float]], media: str) -> float:
    """The q of the most specific range that matches `media` (0 when none does)."""
    patterns = (media, media.split("/")[0] + "/*", "*/*")
    best, specificity = 0.0, len(patterns)
    for pattern, quality in ranges:
        if pattern in patterns and (rank := patterns.index(pattern)) < specificity:
            best, specificity = quality, rank
    return best
