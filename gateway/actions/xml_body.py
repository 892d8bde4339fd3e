"""An action's XML request body (SOAP 1.1, SOAP 1.2 or plain XML): a template in the bounded
Jinja2 sandbox (`notify/sandbox.py`), autoescaped for XML, rendered on the request's context.

    compile_xml_body(value, problems) -> XmlBody | None    problems point at /xml_body/...
    XmlBody.render(context) -> bytes                        InvalidPayload at /xml_body/template
    XmlBody.headers() -> Content-Type (+ SOAPAction for SOAP 1.1)

The template writes the envelope as the partner's WSDL shows it; every value it prints is
escaped (`<`, `>`, `&`, quotes), and characters XML 1.0 cannot carry become U+FFFD, so no
partner, entity or cursor value can add markup. What could turn escaping off is refused when
the template is compiled (`|safe`, `{% autoescape false %}`; `tojson`, `urlize` and `xmlattr`
are not offered). Every render is read back by the project's XML reader before it is sent,
and its bytes (UTF-8, or the charset the request mapping's Content-Type names) are bounded by
MAX_BODY_BYTES.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any, Final
from xml.parsers import expat

import jinja2
import markupsafe
from jinja2.exceptions import SecurityError

from gateway.errors import FieldProblem, InvalidPayload
from gateway.formats import DocumentRefused, parse_xml
from gateway.formats.charsets import text_codec
from gateway.formats.json_tree import is_text, plain
from gateway.mapping.secret_marks import WHOLE, SecretMarks, SecretRead, holds_mark
from gateway.notify.sandbox import (
    COMPILE_LIMITS,
    RENDER_ERRORS,
    BoundedEnvironment,
    RenderLimit,
    bounded_text,
    budget,
    refusals,
    too_deep,
)

SOAP_VERSIONS: Final = ("1.1", "1.2")
ENVELOPE_NS: Final = {
    "1.1": "http://schemas.xmlsoap.org/soap/envelope/",
    "1.2": "http://www.w3.org/2003/05/soap-envelope",
}
CONTENT_TYPES: Final = {
    "1.1": "text/xml; charset=utf-8",
    "1.2": "application/soap+xml; charset=utf-8",
    None: "application/xml; charset=utf-8",
}
MAX_TEMPLATE_CHARS: Final = 64 * 1024
MAX_BODY_BYTES: Final = 256 * 1024
MAX_SOAP_ACTION: Final = 500
FIELDS: Final = ("template", "soap", "soap_action", "sample")
AT: Final = "/xml_body"


class _XmlEnvironment(BoundedEnvironment):
    """The templates' environment: a secret's mark is printed whole or not at all, so an
    index, an attribute (a method) or a filter given one is refused (`SecretRead`)."""

    def __init__(self) -> None:
        super().__init__(autoescape=True, filters={})
        for name in ("safe", "tojson", "urlize"):
            self.filters.pop(name, None)
        self.filters = {name: _whole(f) for name, f in self.filters.items()}

    def getitem(self, obj: Any, argument: Any) -> Any:
        _refuse_marks(obj)
        return super().getitem(obj, argument)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _refuse_marks(obj)
        return super().getattr(obj, attribute)


def _refuse_marks(value: Any) -> None:
    if isinstance(value, str) and holds_mark(value):
        raise SecretRead(WHOLE)


def _whole(func: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(func)
    def whole(*args: Any, **kwargs: Any) -> Any:
        if any(holds_mark(a) for a in (*args, *kwargs.values())):
            raise SecretRead(WHOLE)
        return func(*args, **kwargs)

    return whole


_ENV = _XmlEnvironment()
# A test render's charset when the request mapping's Content-Type will say it at each send.
_MAPPED: Final = "(the request mapping's)"
# Characters XML 1.0 cannot carry, even as character references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_DECLARED_ENCODING = re.compile(r"^<\?xml[^>]*encoding\s*=\s*[\"']([^\"']+)[\"']")
# Printable ASCII but `"` and backslash (the action goes into a quoted header or parameter).
_ACTION_TEXT = re.compile(r"[ !#-\[\]-~]*")


@dataclass(frozen=True, slots=True)
class XmlBody:
    template: jinja2.Template
    soap: str | None  # "1.1", "1.2" or None (plain XML)
    soap_action: str | None

    def headers(self) -> dict[str, str]:
        """Content-Type (the SOAP 1.2 action is its parameter) and SOAP 1.1's SOAPAction."""
        content_type = CONTENT_TYPES[self.soap]
        if self.soap == "1.2" and self.soap_action:
            return {"Content-Type": f'{content_type}; action="{self.soap_action}"'}
        if self.soap == "1.1":
            return {"Content-Type": content_type, "SOAPAction": f'"{self.soap_action or ""}"'}
        return {"Content-Type": content_type}

    def accept(self) -> str:
        return "application/soap+xml" if self.soap == "1.2" else "text/xml, application/xml"

    def render(
        self,
        context: Mapping[str, Any],
        marks: SecretMarks | None = None,
        charset: str | None = None,
    ) -> bytes:
        """The body's bytes, UTF-8 or in `charset` (the one the request mapping's Content-Type
        names: `text/xml; charset=ISO-8859-1`; a character it cannot write becomes its
        character reference, `&#337;`); InvalidPayload (pointer /xml_body/template) when it
        cannot be rendered, is not well-formed, is too large or declares another encoding.
        `marks`: the context's secrets are their marks, each put in place (escaped) once the
        body is rendered and checked."""
        return _render(self.template, _clean(plain(context)), marks, charset)


def compile_xml_body(
    value: Any, problems: list[FieldProblem], *, mapped_charset: bool = False
) -> XmlBody | None:
    """The `xml_body` member of an action, compiled and test-rendered on its `sample` (or an
    empty context); each problem is added with its pointer. `mapped_charset`: the action has
    a request mapping, whose Content-Type may name the charset the body is sent in, so a
    declaration of another encoding than UTF-8 is checked against it when sent."""
    if not isinstance(value, Mapping):
        problems.append(FieldProblem(AT, "xml_body is an object with a template", "type"))
        return None
    before = len(problems)
    problems += [
        FieldProblem(f"{AT}/{k}", f"unknown field {k!r}", "additionalProperties")
        for k in value
        if k not in FIELDS
    ]
    soap = value.get("soap")
    if soap is not None and soap not in SOAP_VERSIONS:
        problems.append(FieldProblem(f"{AT}/soap", 'soap is "1.1", "1.2" or null', "enum"))
    action = value.get("soap_action")
    if action is not None and (
        not is_text(action) or len(action) > MAX_SOAP_ACTION or not _ACTION_TEXT.fullmatch(action)
    ):
        problems.append(
            FieldProblem(
                f"{AT}/soap_action",
                f"soap_action is a URI of at most {MAX_SOAP_ACTION} printable ASCII "
                "characters, without quotes or backslashes",
                "pattern",
            )
        )
    sample = value.get("sample")
    if sample is not None and not isinstance(sample, Mapping):
        problems.append(FieldProblem(f"{AT}/sample", "sample is an object: a context", "type"))
    template = _compile(value.get("template"), problems)
    if template is None or len(problems) > before:
        return None
    body = XmlBody(template, soap, action)
    _test_render(body, sample, problems, mapped_charset)
    return None if len(problems) > before else body


def _compile(source: Any, problems: list[FieldProblem]) -> jinja2.Template | None:
    at = f"{AT}/template"
    if not is_text(source) or not source.strip():
        problems.append(FieldProblem(at, "template is the XML body's text", "type"))
        return None
    if len(source) > MAX_TEMPLATE_CHARS:
        problems.append(FieldProblem(at, f"at most {MAX_TEMPLATE_CHARS:,} characters", "maxLength"))
        return None
    try:
        tree = _ENV.parse(source)
        refused = [
            FieldProblem(at, why, "security", {"line": line})
            for line, why in refusals(tree, escaping=True)
        ]
        problems += refused
        return None if refused else _ENV.from_string(tree)
    except jinja2.TemplateSyntaxError as exc:  # a syntax error, an unknown filter
        problems.append(FieldProblem(at, exc.message or str(exc), "syntax", {"line": exc.lineno}))
        return None
    except COMPILE_LIMITS as exc:
        problems.append(FieldProblem(at, too_deep(exc), "limit"))
        return None


def _test_render(
    body: XmlBody, sample: Any, problems: list[FieldProblem], mapped_charset: bool
) -> None:
    """Without a sample only what fails whatever the data counts (limits, internals, markup
    that is not well-formed, a SOAP envelope of the other version); with one, anything."""
    context = sample if isinstance(sample, Mapping) else {}
    try:
        text = _render(
            body.template, _clean(plain(context)), charset=_MAPPED if mapped_charset else None
        )
    except InvalidPayload as exc:
        (problem,) = exc.problems
        if sample is not None or problem.keyword in ("limit", "security", "xml"):
            problems.append(problem)
        return
    if body.soap is not None:
        why = _envelope_problem(text, body.soap)
        if why:
            problems.append(FieldProblem(f"{AT}/template", why, "soap"))


def _render(
    template: jinja2.Template,
    data: Mapping[str, Any],
    marks: SecretMarks | None = None,
    charset: str | None = None,
) -> bytes:
    try:
        with budget():
            text = bounded_text(template.generate(data)).strip()
    except SecretRead as exc:
        raise _failed(f"xml_body: {exc}", "secret") from None
    except RenderLimit as exc:
        raise _failed(f"xml_body: {exc}", "limit") from None
    except SecurityError as exc:
        raise _failed(f"xml_body: {exc}", "security") from None
    except RENDER_ERRORS as exc:
        raise _failed(f"xml_body: {exc}", "render") from None
    declared = _DECLARED_ENCODING.match(text)
    named = declared and text_codec(declared.group(1))
    if declared and not named:
        raise _failed(
            f"xml_body: its declaration names an unknown encoding {declared.group(1)}", "xml"
        )
    if declared and charset is not _MAPPED and named != text_codec(charset or "utf-8"):
        sent = f"in {charset}" if charset else "as UTF-8"
        raise _failed(
            f"xml_body: the body is sent {sent}; its declaration says {declared.group(1)}",
            "xml",
        )
    if charset is _MAPPED:
        charset = None  # a test render: the charset is the request mapping's, when sent
    data_bytes = _bounded(text)
    try:
        parse_xml(data_bytes, charset="utf-8")
    except DocumentRefused as exc:
        message = f"xml_body: the rendered body is not well-formed XML: {exc.located()}"
        raise _failed(message, "xml") from None
    if marks is None and charset is None:
        return data_bytes
    if marks is not None:
        try:
            text = marks.reveal_text(text, _escaped)
        except InvalidPayload as exc:
            raise _failed(f"xml_body: {exc.problems[0].message}", "secret") from None
    return _bounded(text) if charset is None else _encoded(text, charset)


def _encoded(text: str, charset: str) -> bytes:
    """The body in `charset`: a character it cannot write as its character reference (the
    same character to any XML reader), where XML takes one (text and attribute values; not a
    name or a comment: then a problem naming the place)."""
    try:
        return _bounded(text, charset)
    except UnicodeEncodeError:
        pass
    data_bytes = _bounded(text, charset, "xmlcharrefreplace")
    try:
        parse_xml(data_bytes, charset=charset)
    except DocumentRefused as exc:
        message = (
            f"xml_body: a character {charset} cannot write is where XML takes no character "
            f"reference (a name, a comment): {exc.located()}"
        )
        raise _failed(message, "xml") from None
    return data_bytes


def _bounded(text: str, charset: str = "utf-8", errors: str = "strict") -> bytes:
    data_bytes = text.encode(charset, errors)
    if len(data_bytes) > MAX_BODY_BYTES:
        raise _failed(
            f"xml_body: {len(data_bytes):,} bytes rendered, the limit is {MAX_BODY_BYTES:,}",
            "limit",
        )
    return data_bytes


def _escaped(secret: str) -> str:
    """A secret as the template's autoescape would have printed it."""
    return str(markupsafe.escape(_clean(secret)))


def _failed(message: str, keyword: str) -> InvalidPayload:
    return InvalidPayload(message, [FieldProblem(f"{AT}/template", message, keyword)])


def _envelope_problem(body: bytes, version: str) -> str | None:
    """Why the rendered body is no SOAP `version` envelope (its root element), or None."""
    root: list[str] = []

    def start(name: str, attributes: Any) -> None:
        root.append(name)
        raise StopIteration  # the root is all we read

    parser = expat.ParserCreate(namespace_separator="}")
    parser.StartElementHandler = start
    try:
        parser.Parse(body, True)
    except (StopIteration, expat.ExpatError):
        pass
    expected = f"{ENVELOPE_NS[version]}}}Envelope"
    if root and root[0] == expected:
        return None
    found = root[0].replace("}", " ") if root else "nothing"
    return (
        f"a SOAP {version} body is an Envelope in {ENVELOPE_NS[version]}; "
        f"the template's root element is {found}"
    )


def _clean(value: Any) -> Any:
    """Text with the characters XML 1.0 cannot carry replaced by U+FFFD."""
    if isinstance(value, str):
        return _NOT_XML.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value
