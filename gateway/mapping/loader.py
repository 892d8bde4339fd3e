"""Mapping files → compiled mappings: parse YAML or JSON with line numbers, within limits.

Parsing composes YAML nodes (safe: no tags but the standard ones, no anchors/aliases, no
merge keys) and converts them ourselves, so every value's JSON Pointer gets its line and
duplicate keys are reported instead of silently dropped. A JSON file (one that parses as a
JSON object) keeps JSON's own values; YAML composes it only to find the lines.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from ..formats import DocumentRefused
from ..formats.charsets import decode_text
from .compiler import compile_plan
from .engine import CompiledMapping
from .limits import MAX_DOCUMENT_DEPTH, MAX_DOCUMENT_NODES, MAX_FILE_BYTES
from .model import FieldCatalog
from .paths import pointer
from .problems import Problems

_TAG = "tag:yaml.org,2002:"
_SCALARS = {
    f"{_TAG}str": "construct_yaml_str",
    f"{_TAG}int": "construct_yaml_int",
    f"{_TAG}float": "construct_yaml_float",
    f"{_TAG}bool": "construct_yaml_bool",
    f"{_TAG}null": "construct_yaml_null",
}
_AS_TEXT = {f"{_TAG}timestamp"}  # dates stay text: 2026-12-18 means the string
_CONSTRUCTOR = SafeConstructor()
# YAML 1.1 number forms that read as another number than the text shows: a leading zero
# (010 is octal 8), 0x/0o/0b, sexagesimal (12:30 is 750) and underscores (1_000). ERP status
# codes and shift times look exactly like these: such a file must say which it means.
_AMBIGUOUS_NUMBER = re.compile(r"[-+]?(?:0[0-9_]+|0[xXoObB].*|.*:.*|.*_.*)")
_INT64 = range(-(2**63), 2**63)


class _TooBig(Exception):
    pass


class _Converter:
    """YAML node tree → plain data, recording the line of every pointer."""

    def __init__(self, problems: Problems, strict: bool) -> None:
        self.problems = problems
        self.strict = strict
        self.lines: dict[str, int] = {}
        self.nodes = 0
        self.seen: set[int] = set()

    def convert(self, node: yaml.Node, at: str, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_DOCUMENT_NODES:
            raise _TooBig(f"has more than {MAX_DOCUMENT_NODES:,} values")
        if depth > MAX_DOCUMENT_DEPTH:
            raise _TooBig(f"is nested more than {MAX_DOCUMENT_DEPTH} levels deep")
        self.lines.setdefault(at, node.start_mark.line + 1)
        if id(node) in self.seen:
            self._add(at, "anchors and aliases (&name, *name) are not allowed", "yaml")
            return None
        self.seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, at)
        if isinstance(node, yaml.SequenceNode) and node.tag == f"{_TAG}seq":
            return [self.convert(item, f"{at}/{i}", depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode) and node.tag == f"{_TAG}map":
            return self._mapping(node, at, depth)
        self._add(at, f"YAML tag {node.tag!r} is not allowed", "yaml")
        return None

    def _scalar(self, node: yaml.ScalarNode, at: str) -> Any:
        if node.tag in _AS_TEXT:
            return node.value
        method = _SCALARS.get(node.tag)
        if method is None:
            self._add(at, f"YAML tag {node.tag!r} is not allowed", "yaml")
            return None
        if (
            self.strict
            and node.tag in (f"{_TAG}int", f"{_TAG}float")
            and not node.style  # plain: None, or '' from libyaml
            and _AMBIGUOUS_NUMBER.fullmatch(node.value)
        ):
            self._add(
                at,
                f"{node.value} is a YAML 1.1 number form read as another number than it shows:"
                f" quote it ('{node.value}') for the text, or write the number plainly",
                "yaml",
            )
            return None
        try:
            return getattr(_CONSTRUCTOR, method)(node)
        except ValueError:  # an integer of more digits than Python converts (4,300)
            self._add(at, f"{node.value[:20]}... is too long a number", "limit")
            return None

    def _mapping(self, node: yaml.MappingNode, at: str, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self._add(at, "keys are plain text, not lists or objects", "yaml", key_node)
                continue
            key = key_node.value  # the text as written: `1:` and `yes:` are the keys "1", "yes"
            here = f"{at}{pointer(key)}"
            if key in result:
                line = key_node.start_mark.line + 1
                self.problems.lines = self.lines
                self.problems.add(here, f"duplicate key {key!r}", "yaml", line=line)
                continue
            self.lines[here] = key_node.start_mark.line + 1
            result[key] = self.convert(value_node, here, depth + 1)
        return result

    def _add(self, at: str, message: str, keyword: str, node: yaml.Node | None = None) -> None:
        if node is not None:
            self.lines.setdefault(at, node.start_mark.line + 1)
        self.problems.lines = self.lines
        self.problems.add(at, message, keyword)


# What a refusal of a file's bytes adds: how to make them readable.
_CHARSET_REMEDY = (
    "save it as UTF-8, or name its charset (Content-Type: application/yaml; "
    "charset=windows-1252; the CLI's --charset windows-1252)"
)


def file_text(raw: bytes, charset: str | None = None, what: str = "mapping") -> str:
    """A mapping file's text from its bytes, read as the admin API reads a body (docs/api.md):
    the encoding its byte order mark says (UTF-8, UTF-16, UTF-32), else UTF-8, else the
    charset `charset` names (an upload's Content-Type, a multipart part's, the CLI's
    `--charset`: gateway/formats/charsets.py `decode_text`). A flow file is read alike
    (`what`: "flow"). InvalidPayload (an `encoding`
    problem saying how to fix it) for bytes of none of these; a file over the size limit,
    a `limit` problem."""
    problems = Problems()
    text = _decode(raw, problems, charset)
    problems.raise_if_any(f"{what} is not valid")
    assert text is not None
    return text


def _decode(text: str | bytes, problems: Problems, charset: str | None = None) -> str | None:
    if isinstance(text, str):
        size = len(text.encode("utf-8", "surrogatepass"))
    else:
        size = len(text)
    if size > MAX_FILE_BYTES:
        problems.add(
            "", f"file is {size:,} bytes, more than the limit of {MAX_FILE_BYTES:,}", "limit"
        )
        return None
    if isinstance(text, str):
        return text
    try:
        return decode_text(text, charset)
    except DocumentRefused as exc:
        message = exc.message.removeprefix("the body is ")
        if message != exc.message or message.startswith("not "):
            message = f"file is {message}"  # not UTF-8, not valid UTF-16 (a charset named)
        else:
            message = f"file: {message}"  # an unknown charset
        problems.add("", f"{message}; {_CHARSET_REMEDY}", "encoding")
        return None


def _as_json(text: str) -> Any:
    """The JSON object in `text`, or None when it is not JSON (then it is read as YAML)."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


# libyaml when present: 7x faster, and it refuses deep nesting itself.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_FLOW_DEPTH = 200  # a pre-check only: the converter enforces MAX_DOCUMENT_DEPTH
_BRACKETS = re.compile(r"[\[\]{}]")


def _flow_depth(text: str) -> int:
    """Deepest nesting of [ and { (quotes ignored: they only over-count). PyYAML's pure-Python
    scanner is quadratic in it, so a file of 200,000 `[` must be refused before parsing."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(text):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _compose(text: str, problems: Problems, quiet: bool) -> yaml.Node | None:
    if _flow_depth(text) > _MAX_FLOW_DEPTH:
        if not quiet:
            problems.add("", f"file is nested more than {MAX_DOCUMENT_DEPTH} levels deep", "limit")
        return None
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        if not quiet:
            message, line = _yaml_problem(exc, text)
            problems.add("", f"not valid YAML: {message}", "yaml", line=line)
    except yaml.YAMLError as exc:
        if not quiet:
            problems.add("", f"not valid YAML: {exc}", "yaml")
    except RecursionError:
        if not quiet:
            problems.add("", f"nested more than {MAX_DOCUMENT_DEPTH} levels deep", "limit")
    finally:
        loader.dispose()
    return None


def _check_numbers(value: Any, at: str, problems: Problems) -> None:
    """Every number of the document is one the database stores and JSON writes: finite (not
    `.inf`, `.nan`, JSON's `NaN` or `1e400`) and an integer within 64 bits. A constant that
    is not would be refused with every payload, or when the document is stored."""
    kind = type(value)
    if kind is float and not math.isfinite(value):
        problems.add(at, f"{value!r} is not a finite number", "type")
    elif kind is int and value not in _INT64:
        problems.add(at, "an integer beyond 64 bits, which the database cannot store", "type")
    elif kind is dict:
        for key, item in value.items():
            _check_numbers(item, f"{at}{pointer(key)}", problems)
    elif kind is list:
        for index, item in enumerate(value):
            _check_numbers(item, f"{at}/{index}", problems)


# The constructs a mistake leaves open: a quote, a [ or { not closed, a key without its colon.
# PyYAML's context_mark is where it was opened, the line to fix; its problem_mark is where the
# parser gave up, a later line (often a correct one) or past the end of the file. The other
# contexts (a block mapping or list, the next token) start far above the mistake: there the
# problem's line is the one to fix.
_OPENED = re.compile(r"quoted scalar|flow sequence|flow mapping|simple key")


def _yaml_problem(exc: yaml.MarkedYAMLError, text: str) -> tuple[str, int | None]:
    """The message and the line of a YAML syntax mistake: the line where an unclosed construct
    was opened (the message names where the parser gave up too), else where it gave up; never
    a line past the end of the file."""
    last = max(1, len(text.splitlines()))

    def line_of(mark: yaml.Mark | None) -> int | None:
        return None if mark is None else min(mark.line + 1, last)

    context, problem = exc.context or "", exc.problem or ""
    opened, stopped = line_of(exc.context_mark), line_of(exc.problem_mark)
    past_end = exc.problem_mark is not None and exc.problem_mark.line + 1 > last
    if opened is None or stopped is None:
        return " ".join(filter(None, (context, problem))), stopped or opened
    where = "at the end of the file" if past_end else f"on line {stopped}"
    if opened == stopped and not past_end:
        where = ""
    message = f"{context} (line {opened}): {problem} {where}".strip() if context else problem
    return message, opened if _OPENED.search(context) else stopped


def parse_document(text: str | bytes, problems: Problems, *, strict: bool = True) -> Any:
    """The mapping document in `text` (JSON or YAML), with `problems.lines` filled in.

    `strict` (a new text, uploaded or validated) refuses YAML 1.1 number forms and numbers
    the database cannot store; a stored version (not `strict`) is read as it was when it was
    stored (`2_000_000` is 2000000, `010` is 8), so an upgrade never stops it."""
    decoded = _decode(text, problems)
    if decoded is None:
        return None
    json_value = _as_json(decoded)
    node = _compose(decoded, problems, quiet=json_value is not None)
    data = None
    if node is not None:
        converter = _Converter(problems, strict)
        try:
            data = converter.convert(node, "", 0)
        except (_TooBig, RecursionError) as exc:
            reason = str(exc) if isinstance(exc, _TooBig) else "is nested too deeply"
            problems.add("", f"file {reason}", "limit")
            return None
        problems.lines = converter.lines
    if json_value is not None:
        data = json_value
    elif node is None and not problems:
        problems.add("", "file is empty", "required")
    if strict:
        _check_numbers(data, "", problems)
    return data


def canonical_checksum(data: Any) -> str:
    """sha256 of the document as canonical JSON (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def load_mapping(
    text: str | bytes,
    *,
    catalog: FieldCatalog | None = None,
    filename: str | None = None,
    strict: bool = True,
) -> CompiledMapping:
    """Parse, validate and compile a mapping file; raise InvalidPayload listing every problem.

    `strict=False` compiles a stored version: the rules only new texts meet (number forms,
    finite 64-bit numbers, reserved `emit` types) are not applied, so it keeps meaning what
    it meant when it was stored."""
    problems = Problems(filename=filename)
    data = parse_document(text, problems, strict=strict)
    what = f"mapping {filename or ''}".rstrip()
    problems.raise_if_any(f"{what} is not valid")
    plan = compile_plan(data, problems, catalog, strict=strict)
    problems.raise_if_any(f"{what} is not valid")
    assert plan is not None and isinstance(data, Mapping)
    return CompiledMapping(plan, dict(data), canonical_checksum(data))
