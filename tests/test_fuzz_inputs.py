"""Property-based fuzzing of the input edges, the way an outside reviewer's fuzzer would:
the XML reader and writer (gateway/formats/), the body parsers of /hooks
(gateway/formats/bodies.py), the shipped mappings on random payloads (gateway/mapping/),
and `POST /hooks/{id}` over HTTP for XML, JSON and form triggers.

Every property is bounded (`max_examples`), derandomized and keeps no example database, so
a run is the same on every machine. The HTTP properties run hypothesis in a worker thread
whose examples are sent to the test's event loop, where the app's client lives."""

from __future__ import annotations

import asyncio
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import bson
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.actions.filters import compile_filter
from gateway.errors import BadRequest, InvalidPayload, UnsupportedMediaType
from gateway.fleet.fix import parse_fix
from gateway.formats import MAX_DEPTH, DocumentRefused, parse_xml, root_name
from gateway.formats.bodies import parse_form, parse_json
from gateway.formats.bodies import parse_xml as parse_xml_body
from gateway.formats.xml_writer import problem_xml, response_xml, soap_fault, soap_response
from gateway.mapping import CompiledMapping, MappedDocument, load_mapping, read_sample
from tests.test_shipped_mappings import INBOUND as SHIPPED
from tests.test_shipped_mappings import PARAMS
from tests.triggers_support import (
    MAPPINGS,
    PAYLOADS,
    Client,
    bearer,
    create_position_trigger,
    create_trigger,
    upload_mapping,
    upload_shipped,
)

T = TypeVar("T")

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DOCUMENT_FUZZ = settings(FUZZ, max_examples=80)  # the generated documents are big
HTTP_FUZZ = settings(FUZZ, max_examples=100)
# Statuses `POST /hooks/{id}` may answer to a partner's body: written (200/201/202),
# partly written (207), or a clear problem. Never a 500.
HOOK_STATUSES = {200, 201, 202, 207, 400, 413, 415, 422}

# -- strategies --------------------------------------------------------------------------------

CHARSETS = st.sampled_from(
    [
        "utf-8",
        "UTF-8",
        "utf-8-sig",
        "utf-16",
        "utf-16-le",
        "utf-32",
        "latin-1",
        "ISO-8859-1",
        "cp1252",
        "ascii",
        "cp037",
        "shift_jis",
        "utf-7",
        "unicode_escape",
        "raw_unicode_escape",
        "idna",
        "punycode",
        "hex",
        "rot13",
        "base64",
        "zlib",
        "undefined",
        "klingon",
        "",
    ]
)
NAME_START = st.sampled_from([*"abcXYZ_", "é", "ç", "Ω", "Ж", "Ǆ", "Ⱦ", "あ", "\u0300"])
NAME_REST = st.sampled_from([*"abc019-._·", "é", "ã", "Ω", "\u0300", "\u203f"])
LOCAL_NAMES = st.builds(lambda a, b: a + "".join(b), NAME_START, st.lists(NAME_REST, max_size=4))
PREFIXES = st.sampled_from(["", "", "", "a:", "soap:", "xsi:", "xmlns:", "undeclared:"])
# Text from every Unicode category; surrogates are written as character references below.
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
ENTITIES = st.sampled_from(
    ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&nbsp;", "&undefined;", "&#0;"]
) | st.integers(0, 0x11FFFF).map(lambda c: f"&#x{c:x};" if c % 2 else f"&#{c};")


def _escaped(text: str) -> str:
    out = []
    for ch in text:
        if ch in "<&":
            out.append("&lt;" if ch == "<" else "&amp;")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"&#x{ord(ch):x};")  # a surrogate can only be written as a reference
        else:
            out.append(ch)
    return "".join(out)


# The strategies the documents are drawn from, built once: built anew at each draw (a list
# given to `sampled_from` is not cached), hypothesis validated each again, for each of the
# thousands of draws of a document (a fifth of the generation's CPU). The same draws.
_PARTS = st.integers(0, 3)
_PART_KINDS = st.sampled_from(["text", "text", "entity", "cdata", "comment", "pi"])
_PI_TARGETS = st.sampled_from(["pi", "xml", "x-y"])
_DEPTHS = st.integers(0, MAX_DEPTH + 2)
_SIBLINGS = st.sampled_from([1, 1, 1, 2, 3, 40])
_ATTRIBUTES = st.integers(0, 2)
_COIN = st.booleans()
_EMPTY = st.integers(0, 4)
_PROLOGS = st.sampled_from(
    [
        "",
        '<?xml version="1.0"?>',
        '<?xml version="1.0" encoding="{}"?>',
        '<?xml version="1.1" encoding="{}"?>',
        "<!DOCTYPE r [<!ENTITY e 'x'>]>",
        "\ufeff",
    ]
)
_ENCODINGS = st.sampled_from(["utf-8", "utf-16", "latin-1", "cp037", "utf-32-be"])
_BOMS = st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])
_CHARSET_OR_NONE = st.none() | CHARSETS


@st.composite
def xml_documents(draw: st.DrawFn) -> str:
    """XML-ish documents: mostly well-formed, sometimes subtly not (undeclared prefixes,
    invalid references, names XML refuses), nested up to a few levels past MAX_DEPTH."""
    namespaces = ' xmlns:a="urn:a" xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
    namespaces += ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'

    budget = [60]  # elements in all: deep or wide, never both

    def name() -> str:
        return draw(PREFIXES) + draw(LOCAL_NAMES)

    def content(level: int) -> str:
        parts = []
        for _ in range(draw(_PARTS)):
            kind = draw(_PART_KINDS)
            if kind == "text":
                parts.append(_escaped(draw(TEXT)))
            elif kind == "entity":
                parts.append(draw(ENTITIES))
            elif kind == "cdata":
                parts.append(f"<![CDATA[{draw(TEXT).replace(']]>', '')}]]>")
            elif kind == "comment":
                parts.append(f"<!--{draw(TEXT).replace('--', '')}-->")
            else:
                parts.append(f"<?{draw(_PI_TARGETS)} {draw(TEXT)}?>")
        if level < draw(_DEPTHS) and budget[0] > 0:
            siblings = min(budget[0], draw(_SIBLINGS))
            budget[0] -= siblings
            parts.extend(element(level + 1) for _ in range(siblings))
        return "".join(parts)

    def element(level: int) -> str:
        tag = name()
        attributes = "".join(
            f' {name()}="{_escaped(draw(TEXT)).replace(chr(34), "&quot;")}"'
            for _ in range(draw(_ATTRIBUTES))
        )
        if draw(_COIN):
            attributes += ' xsi:nil="true"'
        if draw(_EMPTY) == 0:
            return f"<{tag}{attributes}/>"
        return f"<{tag}{attributes}>{content(level)}</{tag}>"

    root = name()
    body = f"<{root}{namespaces}>{content(1)}</{root}>"
    prolog = draw(_PROLOGS)
    return prolog.format(draw(CHARSETS)) + body


@st.composite
def xml_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """(bytes, the Content-Type charset if any): a document encoded as its declaration or
    charset says, or not (a fuzzer lies), with or without a byte order mark."""
    document = draw(xml_documents())
    encoding = draw(_ENCODINGS)
    body = document.encode(encoding, errors="surrogatepass" if "utf" in encoding else "replace")
    if draw(_COIN):
        body = draw(_BOMS) + body
    charset = draw(_CHARSET_OR_NONE)
    return body, charset


# The values at the edges of what JSON, BSON and XML hold, drawn as often as any other kind.
EDGES = st.sampled_from(
    [2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**63) - 1, -0.0, 1e308, -5e-324, "", "\x00"]
)
JSON_SCALARS = (
    EDGES
    | st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=10)
)
JSON_KEYS = st.text(st.characters(codec=None, exclude_categories=()), max_size=8) | st.sampled_from(
    [
        "a",
        "Ǆ",
        "Ⱦ",
        "ção",
        "xml",
        "xmlns",
        "i",
        "member",
        "1x",
        "a:b",
        "-",
        "ab\u0300",
        "\x00",
        "$x",
        "a.b",
    ]
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(JSON_KEYS, children, max_size=4)
    ),
    max_leaves=25,
)


def _expected_text(text: str) -> str:
    """What an XML reader gets back: text with characters XML cannot carry as U+FFFD."""
    return re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]", "\ufffd", text)


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return _expected_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _round_trips(element: ET.Element, value: Any, *, root: bool = True) -> None:
    """The element is the value written by the RFC 9457 Appendix B convention (a null
    answer, having no member to be nil, is an empty root element)."""
    children = list(element)
    if value is None and root:
        assert not children and not element.text
    elif value is None:
        assert element.get("{http://www.w3.org/2001/XMLSchema-instance}nil") == "true"
        assert not children and not element.text
    elif isinstance(value, Mapping):
        assert len(children) == len(value)
        for child, (key, member) in zip(children, value.items(), strict=True):
            if _local(child.tag) == "member" and key != "member":
                assert child.get("name") == _expected_text(key)
            else:
                assert _local(child.tag) == key
            _round_trips(child, member, root=False)
    elif isinstance(value, list):
        assert [_local(c.tag) for c in children] == ["i"] * len(value)
        for child, item in zip(children, value, strict=True):
            _round_trips(child, item, root=False)
    elif isinstance(value, float):
        assert not children and element.text
        read = float(element.text)  # as JSON writes it, -0.0 included
        assert read == value and math.copysign(1, read) == math.copysign(1, value)
    else:
        assert not children
        assert (element.text or "") == _scalar_text(value)


# -- running hypothesis next to the app's event loop --------------------------------------------


# The app's own tasks (retry jitter, background loops) use `random` in the loop's thread while
# hypothesis draws an example in its worker thread; hypothesis takes the global generator's
# moving for the strategy using `random` and warns (an error here). Not the strategies': they
# draw from hypothesis only.
LOOP_USES_RANDOM = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisDeprecationWarning"
)


async def _in_thread(test: Callable[[Callable[[Coroutine[Any, Any, T]], T]], None]) -> None:
    """Run a hypothesis test in a worker thread; `call(coroutine)` runs one on this loop."""
    loop = asyncio.get_running_loop()

    def call(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=20)

    await loop.run_in_executor(None, test, call)


async def _status(client: Client, trigger: dict[str, Any], body: bytes, **headers: str) -> int:
    response = await client.post(
        f"/hooks/{trigger['id']}", data=body, headers={**bearer(trigger), **headers}
    )
    return _checked(response.status, response.content_type, await response.read())


def _checked(status: int, content_type: str, body: bytes) -> int:
    """The status, asserted in HOOK_STATUSES. By design (SOAP 1.1 §6.2, gateway/web/replies.py)
    a SOAP 1.1 Fault is a 500 whatever its cause: there the problem in its detail says."""
    if status == 500 and content_type == "text/xml":
        problem = ET.fromstring(body).find(".//{urn:ietf:rfc:7807}status")
        assert problem is not None and problem.text, body[:500]
        status = int(problem.text)
    assert status in HOOK_STATUSES, (status, body[:500])
    return status


# -- the XML reader ----------------------------------------------------------------------------


def _read(document: bytes | str, charset: str | None) -> None:
    try:
        tree = parse_xml(document, charset=charset)
    except DocumentRefused as exc:
        assert exc.message
    else:
        assert isinstance(tree, dict) and len(tree) == 1
        orjson.dumps(tree)  # a JSON-like tree of dicts, lists, text and null
    found = root_name(document, charset=charset)
    assert found is None or (isinstance(found, tuple) and len(found) == 2)


@FUZZ
@given(st.binary(max_size=300), st.none() | CHARSETS)
def test_any_bytes_are_a_tree_or_refused(document: bytes, charset: str | None) -> None:
    _read(document, charset)


@DOCUMENT_FUZZ
@given(xml_bodies())
def test_generated_xml_documents_are_a_tree_or_refused(body: tuple[bytes, str | None]) -> None:
    _read(*body)


@DOCUMENT_FUZZ
@given(xml_documents())
def test_generated_xml_text_is_a_tree_or_refused(document: str) -> None:
    _read(document, None)


# -- the XML writer ----------------------------------------------------------------------------


@FUZZ
@given(JSON_VALUES, st.integers(100, 599), st.sampled_from(["1.1", "1.2"]))
def test_any_json_answer_is_written_as_xml_that_reads_back(
    data: Any, status: int, version: Any
) -> None:
    response = ET.fromstring(response_xml(data, status))
    assert response.get("status") == str(status)
    _round_trips(response, data)
    envelope = ET.fromstring(soap_response(version, data, status))
    (body,) = list(envelope)
    (inner,) = list(body)
    _round_trips(inner, data)


@FUZZ
@given(st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=6), st.sampled_from(["1.1", "1.2"]))
def test_any_problem_is_written_as_xml_that_reads_back(
    problem: dict[str, Any], version: Any
) -> None:
    _round_trips(ET.fromstring(problem_xml(problem)), problem)
    fault = ET.fromstring(soap_fault(version, problem))
    details = [e for e in fault.iter() if _local(e.tag) == "problem"]
    assert len(details) == 1
    _round_trips(details[0], problem)


# -- JSON and form bodies ----------------------------------------------------------------------

JSON_TYPES = st.sampled_from(
    ["application/json"] * 4 + ["application/ld+json", "text/plain", "", "application/xml"]
)


def _json_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["value", "deep", "bytes", "duplicates", "number"]))
    if kind == "value":
        return json.dumps(draw(JSON_VALUES)).encode("utf-8", "surrogatepass")
    if kind == "deep":
        depth = draw(st.integers(MAX_DEPTH - 2, MAX_DEPTH + 3))
        opener = draw(st.sampled_from(["[", '{"a":']))
        closer = "]" if opener == "[" else "}"
        return (opener * depth + "1" + closer * depth).encode()
    if kind == "duplicates":
        return b'{"a": 1, "a": {"a": [1, 2]}, "a": null}'
    if kind == "number":
        digits = draw(st.integers(1, 400))
        return b'{"n": ' + draw(st.sampled_from([b"", b"-"])) + b"9" * digits + b"}"
    return draw(st.binary(max_size=200))


@FUZZ
@given(st.data(), JSON_TYPES)
def test_any_json_body_is_a_payload_or_a_clear_refusal(
    data: st.DataObject, content_type: str
) -> None:
    body = _json_bytes(data.draw)
    try:
        payload = parse_json(content_type, body)
    except (BadRequest, UnsupportedMediaType):
        return
    assert isinstance(payload, dict | list)


FORM_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)


@FUZZ
@given(
    st.binary(max_size=200) | FORM_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
    FORM_TEXT,
    st.sampled_from(["application/x-www-form-urlencoded", "text/plain", ""]),
)
def test_any_form_body_and_query_are_fields_or_a_clear_refusal(
    body: bytes, query: str, content_type: str
) -> None:
    try:
        fields = parse_form(content_type, body, query)
    except (BadRequest, UnsupportedMediaType):
        return
    assert fields and all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())


@DOCUMENT_FUZZ
@given(xml_bodies(), st.sampled_from(["application/xml", "text/xml", "a/b+xml", "text/plain"]))
def test_any_xml_body_is_a_payload_or_a_clear_refusal(
    body: tuple[bytes, str | None], content_type: str
) -> None:
    try:
        payload = parse_xml_body(content_type, *body)
    except (BadRequest, UnsupportedMediaType):
        return
    assert isinstance(payload, dict)


# -- the shipped mappings on random payloads ---------------------------------------------------

INBOUND = sorted(p.name for p in MAPPINGS.glob("*.yaml") if "direction: inbound" in p.read_text())
# The shipped mappings' samples (JSON and XML; OsmAnd's query string is no JSON to mutate).
SAMPLES = {m: sample for m, sample in SHIPPED.items() if not sample.endswith(".txt")}
SECRETS = {"erp_token": "t", "hr_token": "t", "fcm_access_token": "t", "sms_api_key": "k"}


def _compiled(name: str) -> CompiledMapping:
    mapping = load_mapping((MAPPINGS / name).read_bytes(), filename=name)
    return mapping.bind(PARAMS.get(name, {}))


COMPILED = {name: _compiled(name) for name in INBOUND}


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [path] + [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [path] + [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))]
    return [path]


@st.composite
def mutated_samples(draw: st.DrawFn, name: str) -> Any:
    """The partner's sample with a few of its values replaced by random JSON or removed: the
    payloads a mapping meets in the field, near enough to reach its deeper specs."""
    sample = SAMPLES.get(name)
    if sample is None or draw(st.integers(0, 5)) == 0:
        return draw(JSON_VALUES)
    payload = read_sample((PAYLOADS / sample).read_text())
    paths = _leaves(payload)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths))
        if not path:
            continue
        parent = payload
        try:
            for step in path[:-1]:
                parent = parent[step]
            if draw(st.integers(0, 3)) == 0 and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(JSON_VALUES)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation changed the shape on this path
    return payload


@pytest.mark.parametrize("name", INBOUND)
def test_a_shipped_mapping_maps_a_random_payload_or_names_its_problems(name: str) -> None:
    mapping = COMPILED[name]

    @settings(FUZZ, max_examples=50)
    @given(mutated_samples(name))
    def check(payload: Any) -> None:
        try:
            mapping.probe(payload)
            items = mapping.items(payload)
            for item in items:
                mapped = mapping.apply(item, secrets=SECRETS)
                assert isinstance(mapped, MappedDocument)
                if mapping.target == "positions":
                    _storable_if_valid(mapped.document)
        except InvalidPayload as exc:
            assert exc.problems or exc.detail

    check()


def _storable_if_valid(item: Any) -> None:
    """A fix that passes its checks is one the database can hold (BSON: no NUL in a name,
    integers within 64 bits): anything else fails its whole insert round."""
    try:
        fix = parse_fix(item)
    except InvalidPayload as exc:
        assert exc.problems
        return
    bson.encode({"tracker_id": fix.tracker_id, "plate": fix.plate, **fix.document()})


@FUZZ
@given(
    st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=5),
    st.sampled_from(["ABC1D23", 353861053849681, 2**63, -(2**63) - 1, 2**64 - 1]),
)
def test_a_fix_that_passes_its_checks_is_one_the_database_can_store(
    attributes: dict[str, Any], tracker_id: str | int
) -> None:
    fix = {"time": "2026-12-01T12:00:00Z", "lat": -23.5, "lon": -46.6, "attributes": attributes}
    _storable_if_valid({**fix, "tracker_id": tracker_id})


# -- POST /hooks/{id} over HTTP ----------------------------------------------------------------

PLAIN_XML = """
name: fuzz-xml
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: veiculo.placa, transforms: [plate]}
  year: {from: veiculo.ano, transforms: [integer]}
  attributes.tags: {from: veiculo.etiqueta, transforms: []}
"""
ACCEPTS = st.sampled_from(
    ["application/json", "application/xml", "application/soap+xml", "text/xml", "*/*", ""]
)


@st.composite
def hook_xml(draw: st.DrawFn) -> tuple[bytes, str]:
    """A body and its Content-Type: sometimes a vehicle the mapping reads, sometimes not."""
    if draw(st.booleans()):
        plate = draw(st.sampled_from(["ABC1D23", "abc-1d23", "", "X"]) | TEXT)
        year = draw(st.sampled_from(["2022", "", "20.5", "9" * 30]) | TEXT)
        document = (
            f"<veiculo><placa>{_escaped(plate)}</placa><ano>{_escaped(year)}</ano>"
            f"<etiqueta>{_escaped(draw(TEXT))}</etiqueta>{draw(xml_documents())}</veiculo>"
        ).replace("<?xml", "<?pi")
        body = document.encode("utf-8", "surrogatepass")
        charset = draw(st.none() | st.just("utf-8"))
    else:
        body, charset = draw(xml_bodies())
    media = draw(st.sampled_from(["application/xml", "text/xml", "application/soap+xml"]))
    parameter = draw(
        st.sampled_from(["", f"; charset={charset}", f'; charset="{charset}"', "; charset"])
    )
    return body, media + (parameter if charset else "")


@LOOP_USES_RANDOM
async def test_any_xml_body_posted_to_a_hook_is_answered_without_a_server_error(
    client: Client,
) -> None:
    await upload_mapping(client, PLAIN_XML)
    trigger = await create_trigger(client, mapping="fuzz-xml", format="xml", max_body_bytes=8192)

    def run(call: Callable[[Coroutine[Any, Any, int]], int]) -> None:
        @HTTP_FUZZ
        @given(hook_xml(), ACCEPTS, st.sampled_from(["", '"urn:x"', "x"]))
        def post(body: tuple[bytes, str], accept: str, soap_action: str) -> None:
            headers = {"Content-Type": body[1], "Accept": accept, "SOAPAction": soap_action}
            call(_status(client, trigger, body[0], **{k: v for k, v in headers.items() if v}))

        post()

    await _in_thread(run)


@LOOP_USES_RANDOM
async def test_any_json_body_posted_to_a_hook_is_answered_without_a_server_error(
    client: Client,
) -> None:
    """Two shipped mappings: one writing entities (group commit), one positions (insert
    rounds)."""
    await upload_shipped(client, "traccar-event")
    await upload_shipped(client, "flespi")
    triggers = {
        "traccar-event": await create_trigger(client, mapping="traccar-event"),
        "flespi": await create_position_trigger(client, mapping="flespi"),
    }

    def run(call: Callable[[Coroutine[Any, Any, int]], int]) -> None:
        @HTTP_FUZZ
        @given(st.data(), st.sampled_from(sorted(triggers)), JSON_TYPES, ACCEPTS)
        def post(data: st.DataObject, name: str, content_type: str, accept: str) -> None:
            trigger = triggers[name]
            payload = data.draw(mutated_samples(f"{name}.yaml"))
            sample = read_sample((PAYLOADS / SAMPLES[f"{name}.yaml"]).read_text())
            kind = data.draw(st.sampled_from(["raw", "sample", "batch"]))
            if kind == "raw":
                body = _json_bytes(data.draw)
            else:
                document = payload if kind == "sample" else [payload, sample]
                body = json.dumps(document).encode("utf-8", "surrogatepass")
            headers = {"Content-Type": content_type, "Accept": accept}
            call(_status(client, trigger, body, **{k: v for k, v in headers.items() if v}))

        post()

    await _in_thread(run)


@LOOP_USES_RANDOM
async def test_any_form_body_or_query_posted_to_a_hook_is_answered_without_a_server_error(
    client: Client,
) -> None:
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(
        client, mapping="osmand", format="form", auth={"token_in_query": "token"}
    )

    def run(call: Callable[[Coroutine[Any, Any, int]], int]) -> None:
        @HTTP_FUZZ
        @given(
            st.binary(max_size=200)
            | st.sampled_from([b"id=ABC1D23&lat=-23.5&lon=-46.6&timestamp=1700000000"]),
            st.lists(st.tuples(FORM_TEXT, FORM_TEXT), max_size=5),
            st.sampled_from(["application/x-www-form-urlencoded", "text/plain", ""]),
        )
        def post(body: bytes, query: list[tuple[str, str]], content_type: str) -> None:
            from urllib.parse import quote

            params = "&".join(
                f"{quote(k.encode('utf-8', 'surrogatepass'))}="
                f"{quote(v.encode('utf-8', 'surrogatepass'))}"
                for k, v in query
            )

            async def send() -> int:
                response = await client.post(
                    f"/hooks/{trigger['id']}?{params}",
                    data=body,
                    headers={
                        **bearer(trigger),
                        **({"Content-Type": content_type} if content_type else {}),
                    },
                )
                return _checked(response.status, response.content_type, await response.read())

            call(send())

        post()

    await _in_thread(run)


# -- what the fuzzer found, each at its smallest -----------------------------------------------


def test_an_integer_beyond_64_bits_is_written_whole() -> None:
    answer = ET.fromstring(response_xml({"n": 2**64, "m": -(10**40)}, 200))
    assert [e.text for e in answer] == ["18446744073709551616", "-" + "1" + "0" * 40]


def test_a_key_that_only_newer_xml_calls_a_name_is_written_as_a_member() -> None:
    """`Ǆ` (U+01C4) and `Ⱦ` (U+023E) are names to XML 1.0 5th edition, not to the 4th that
    expat and ElementTree (and so many partners' parsers) read: the writer's element was
    unreadable. Portuguese keys stay elements."""
    answer = ET.fromstring(problem_xml({"Ǆ": 1, "Ⱦx": 2, "situação": 3}))
    assert [(e.tag, e.get("name")) for e in answer] == [
        ("{urn:ietf:rfc:7807}member", "Ǆ"),
        ("{urn:ietf:rfc:7807}member", "Ⱦx"),
        ("{urn:ietf:rfc:7807}situação", None),
    ]


def test_a_carriage_return_in_text_reads_back_as_itself() -> None:
    """A literal CR is read as a line feed (XML's end-of-line handling): it is written as a
    character reference."""
    answer = ET.fromstring(soap_response("1.1", {"note": "a\rb\r\nc"}, 200))
    assert [e.text for e in answer.iter() if e.tag.endswith("note")] == ["a\rb\r\nc"]


def test_a_null_answer_is_an_empty_response() -> None:
    answer = ET.fromstring(response_xml(None, 200))
    assert answer.text is None and not list(answer)


@pytest.mark.parametrize(
    ("document", "charset"),
    [
        (b'<?xml version="1.0" encoding="unicode_escape"?><r>\\]</r>', None),
        ('<?xml version="1.0" encoding="raw-unicode-escape"?><r/>'.encode("utf-16-le"), None),
        (b"<r>\\]</r>", "unicode_escape"),
    ],
)
def test_python_escape_codecs_are_no_xml_encodings(document: bytes, charset: str | None) -> None:
    """Decoding with them warns of invalid escapes (an error where warnings are): refused as
    any unsupported encoding, before expat asks Python to decode."""
    with pytest.raises(DocumentRefused, match=r"unicode.escape"):
        parse_xml(document, charset=charset)
    assert root_name(document, charset=charset) is None


def test_a_byte_order_mark_decides_even_over_an_escape_codecs_declaration() -> None:
    """With a mark, the document is read in the encoding the mark says (docs/triggers.md,
    XML bodies): the declaration's escape codec is never asked to decode."""
    document = '<?xml version="1.0" encoding="raw-unicode-escape"?><r/>'.encode("utf-16")
    assert parse_xml(document) == {"r": ""}
    assert root_name(document) == ("", "r")


_FILTER = compile_filter(
    {
        "entity_type": ["vehicle", "driver"],
        "changed": ["odometer_km", "position"],
        "entity": {"group": "north", "status": ["active", None]},
        "origin": {"kind": "trigger"},
    }
)
_EVENT_MEMBERS = st.sampled_from(["type", "entity", "data", "changes", "origin", "detail"])


@FUZZ
@given(st.dictionaries(_EVENT_MEMBERS, JSON_VALUES, max_size=6))
def test_an_event_filter_answers_any_json_event_with_a_yes_or_a_no(event: dict[str, Any]) -> None:
    """A flow dry run's sample event is the caller's: a member of another shape than a stored
    event's (`changes: ["x"]`, `entity: {"type": {}}`) must not raise, only not match."""
    assert _FILTER.matches(event) in (True, False)
