"""JMESPath expressions: compiled once, checked for size, evaluated within a work budget.

Plain dotted paths (`position.latitude`, `"position.latitude"`) skip the JMESPath interpreter
and read the dicts directly: same answer (a missing key or a non-object gives None), ten
times faster. Everything else runs in `Run`, an interpreter that counts the nodes it visits
and the values multi-selects build, so `[@, @] | [@, @] | ...` cannot double its way out of
memory, and whose `join()` and `to_string()` refuse to build huge strings. Two functions
of ours read a document held in a text field (a form's `payload={"plate": ...}`, a SOAP
`<return>` carrying escaped XML): `from_json()` and `from_xml()`, bounded like a body, each
text parsed once per payload (`DecodedTexts`) however many items and fields read it. A third,
`to_entries()`, gives an object's members with their names (a record set keyed by id); a
fourth, `trim()`, text without its surrounding blanks, null when blank (no value).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from math import isfinite
from typing import Any, Final

import jmespath
from jmespath import exceptions as jp_exceptions
from jmespath import functions as jp_functions
from jmespath import visitor as jp_visitor

from ..errors import FieldProblem
from ..fleet.quality import place_reason
from ..formats import DocumentRefused, load_json_text, parse_xml
from ..formats.json_tree import WideInt, as_numbers
from .casts import not_finite, unstorable
from .limits import (
    MAX_DECODED_TEXT,
    MAX_EXPRESSION_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_OUTPUT_CHARS,
    MAX_PAYLOAD_OUTPUT_CHARS,
    MAX_PAYLOAD_STEPS,
    MAX_STEPS,
    MAX_STRING_LENGTH,
)
from .model import EvalError, LimitExceeded
from .paths import plain_path

Getter = Callable[[Any, "Run"], Any]
"""A compiled value source: (root, run) → value or None; raises EvalError."""


def _too_big(what: str, limit: int) -> LimitExceeded:
    return LimitExceeded(f"{what} exceeds the limit of {limit:,}")


def _size_of(value: Any) -> int:
    """The nodes of a value, counted up to one past MAX_STEPS (more fits no item's work)."""
    try:
        return MAX_STEPS - charge_size(value, MAX_STEPS)
    except LimitExceeded:
        return MAX_STEPS + 1


def charge_size(value: Any, budget: int) -> int:
    """Walk a value, spending one unit per node; return what is left (raise when spent)."""
    stack = [value]
    while stack:
        item = stack.pop()
        budget -= 1
        if budget < 0:
            raise _too_big("the work to evaluate this item", MAX_STEPS)
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return budget


def charge_output(run: Run, value: Any) -> int:
    """Spend the run's output budget on a value a field maps to, or a multi-select built: its
    size written as JSON, roughly (a text its length and quotes, an object or a list its
    brackets and separators, another value 8), each reference counted, for JSON writes a
    value as often as it is named. Return that size; raise once the budget is spent, having
    walked no further than the budget (every node costs at least one).

    A value built for this item (`run.built`: a multi-select's result, a table's document)
    was charged as it was built: named the first time, it costs nothing more and is not
    walked again; named again, it costs its size again (`[x, x, x]` over `{x: {a: @}}` is
    three payloads, and a list of such lists multiplies them)."""
    if type(value) is str:
        size = charged = len(value) + 2
    else:
        built = run.built
        size = charged = 0
        room = run.output
        stack = [value]
        while stack and charged <= room:
            item = stack.pop()
            if isinstance(item, str):
                n = len(item) + 2
                size += n
                charged += n
            elif (entry := built.get(id(item))) is not None:
                size += entry[1]
                if entry[2]:
                    charged += entry[1]
                else:
                    built[id(item)] = (entry[0], entry[1], True)
            elif isinstance(item, dict):
                n = 1 + 2 * len(item)
                size += n
                charged += n
                stack.extend(item)  # the keys
                stack.extend(item.values())
            elif isinstance(item, list):
                n = 1 + len(item)
                size += n
                charged += n
                stack.extend(item)
            else:
                if (error := unstorable(item)) is not None:
                    raise error
                size += 8
                charged += 8
    run.output -= charged
    if run.output < 0:
        raise output_too_big(run)
    return size


def work_too_big(run: Run) -> LimitExceeded:
    """The work budget is spent: this item's, or what its payload's items had left."""
    if run.texts is not None and run.texts.steps < MAX_STEPS:
        return _too_big("the work to map the items of this payload", MAX_PAYLOAD_STEPS)
    return _too_big("the work to evaluate this item", MAX_STEPS)


def output_too_big(run: Run) -> LimitExceeded:
    """The output budget is spent: this item's, or what its payload's items had left."""
    if run.texts is not None and run.texts.output < MAX_OUTPUT_CHARS:
        what = "what the items of this payload map to (characters, as JSON)"
        return _too_big(what, run.texts.bound)
    return _too_big("what this item maps to (characters, as JSON)", MAX_OUTPUT_CHARS)


class _Wide(int):
    """A wide integer (`WideInt`, its text) as the interpreter sees it: the number it is, so
    `>`, `==` with a number, `type()`, `max()`, `sort_by()` and the rest take it as one, as
    every type check does (docs/triggers.md "Content types"). It keeps its text: a value an
    expression gives back unchanged (`max([counter, x])`) is the partner's, written as
    the `WideInt` it was (`Run.as_read`). Arithmetic on it (`abs()`) gives a plain int, a
    value computed, which the database holds within 64 bits only (`casts.unstorable`)."""

    text: str

    def __new__(cls, wide: WideInt) -> _Wide:
        number = super().__new__(cls, as_numbers(wide))
        number.text = str(wide)
        return number


# JMESPath types a value by its class's name: a `_Wide` is a number to its functions.
jp_functions.TYPES_MAP[_Wide.__name__] = "number"
jp_functions.REVERSE_TYPES_MAP["number"] = (*jp_functions.REVERSE_TYPES_MAP["number"], "_Wide")


class _BoundedFunctions(jp_functions.Functions):
    @jp_functions.signature({"types": ["string"]}, {"types": ["array-string"]})
    def _func_join(self, separator: str, array: list[str]) -> str:
        size = len(separator) * max(len(array) - 1, 0) + sum(len(s) for s in array)
        if size > MAX_STRING_LENGTH:
            raise _too_big("the string built by join()", MAX_STRING_LENGTH)
        return separator.join(array)

    @jp_functions.signature({"types": []})
    def _func_to_string(self, arg: Any) -> str:
        if isinstance(arg, str):
            return arg
        if type(arg) is _Wide:
            return arg.text
        charge_size(arg, MAX_STEPS)
        if type(arg) is float and not isfinite(arg):
            raise not_finite(arg)  # json.dumps writes Infinity and NaN, which JSON has not
        try:
            text = json.dumps(arg, separators=(",", ":"), default=str, allow_nan=False)
        except ValueError:  # Infinity or NaN inside a list or an object
            raise EvalError(
                "cast", "to_string() of a value holding a number that is not finite"
            ) from None
        if len(text) > MAX_STRING_LENGTH:
            raise _too_big("the string built by to_string()", MAX_STRING_LENGTH)
        return text

    @jp_functions.signature({"types": []})
    def _func_trim(self, value: Any) -> Any:
        """Text without its surrounding blanks, null when nothing is left (a blank cell of an
        exported sheet, a fixed-width export's empty column: no value, as null is); any other
        value as it is."""
        if not isinstance(value, str):
            return value
        return value.strip() or None

    @jp_functions.signature({"types": ["object", "null"]})
    def _func_to_entries(self, members: dict[str, Any] | None) -> list[dict[str, Any]] | None:
        """jq's `to_entries`: an object's members as `[{"key": name, "value": value}]`, in
        the order sent, so `items` can iterate a record set keyed by id (PHP's `json_encode`
        of an array indexed by plate, Firebase); null for null."""
        if members is None:
            return None
        return [{"key": name, "value": value} for name, value in members.items()]

    @jp_functions.signature({"types": []}, {"types": []})
    def _func_is_fix(self, lat: Any, lon: Any) -> bool:
        """Whether a latitude and a longitude are a place a fix can be at: numbers, finite,
        within [-90, 90] and [-180, 180], not exactly (0, 0): the position path's gates
        (`invalid_coordinates`, `null_island`: `fleet.quality.place_reason`), so that a
        mapping writing a vehicle's last position leaves out a garbled fix (latitude 95,
        "NaN", null) instead of failing the vehicle's schema with the whole payload."""
        if not (_finite(lat) and _finite(lon)):
            return False
        return place_reason(float(lat), float(lon)) is None

    @jp_functions.signature({"types": []})
    def _func_is_number(self, value: Any) -> bool:
        """Whether a value is a number a reading can be: finite (as a float), not a boolean,
        not text (Traccar's `"NaN"`, Jackson's writing of a NaN double), not null. A mapping
        writing a fix's readings gates each on it (`when`), so a garbled one is left out
        instead of failing a conversion or the vehicle's schema with the whole payload."""
        return _finite(value)

    @jp_functions.signature({"types": ["string", "null"]})
    def _func_from_json(self, text: str | None) -> Any:
        # A byte order mark before the JSON is ignored, as before a JSON body (a Windows
        # sender's text read from a file with it), and as from_xml() does.
        unmarked = None if text is None else text.removeprefix("\ufeff")
        return _decoded(unmarked, "JSON", load_json_text)

    @jp_functions.signature({"types": ["string", "null"]})
    def _func_from_xml(self, text: str | None) -> Any:
        return _decoded(text, "XML", parse_xml)


def _finite(value: Any) -> bool:
    """Whether `value` is a number that is finite as a float (`is_number`, `is_fix`)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return isfinite(value)
    except OverflowError:  # an integer past a float's range
        return False


def _decoded(text: str | None, what: str, parse: Callable[[str], Any]) -> Any:
    """The document a text field holds (null for null), or a `decode` problem."""
    if text is None:
        return None
    if len(text) > MAX_DECODED_TEXT:
        raise _too_big(f"the text read by from_{what.lower()}()", MAX_DECODED_TEXT)
    try:
        value = parse(text)
    except DocumentRefused as exc:
        raise EvalError("decode", f"the text is not {what}: {exc.located()}") from None
    return value  # charged to the item's work by Run.visit_function_expression


_DECODERS = frozenset({"from_json", "from_xml"})
_FUNCTIONS = _BoundedFunctions()
_KEPT_TEXT = 4 * MAX_DECODED_TEXT
"""Characters of text whose documents one DecodedTexts keeps (`DecodedTexts._keep`)."""
_KEPT_NODES = MAX_STEPS // 5
"""Nodes of the documents one DecodedTexts keeps besides those of the item being mapped (~2.5
MB): it lives as long as its payload's items are written, so 1,000 items that each read a text
of their own must not keep all 1,000 documents (~13 MB for a 1 MiB body) until the last one is
written."""

_Found = tuple[Any, int] | str
_Key = tuple[str, str]


def _nodes_of(found: _Found) -> int:
    return 0 if isinstance(found, str) or found[0] is None else found[1]


class DecodedTexts:
    """The documents from_json()/from_xml() read in one payload's texts, each text parsed once.

    The items of a payload share their outer element's texts (1,000 points listed in one
    SOAP `<return>` of escaped XML are 1,000 items holding the same text): made once per
    payload and handed to every run over it (`CompiledMapping.items`, `apply`), it parses the
    text for the first item and gives the others the same document, with its size counted
    then, which `Run` charges to each item that reads it. A text that is not JSON (XML) is
    remembered too: a `decode` problem for every item, parsed once. Keyed by the function
    and the text's value (a shared text is hashed once). Read-only documents: the engine
    never changes a value it reads, and neither does anything downstream.

    What it keeps is bounded (`_KEPT_NODES`, `_KEPT_TEXT`): past that, the documents read
    least recently go, but never one the item being mapped has read (`pinned`). So a text
    every item reads stays, and texts each item has for itself come and go (each parsed once,
    as before). A document over one item's work is kept as its size only: every item that
    reads it is refused.
    """

    __slots__ = ("_found", "_kept", "_nodes", "bound", "output", "steps")

    def __init__(self, body_bytes: int = 0) -> None:
        # What the payload's items may still map to: shared by them as the texts are; each
        # `apply` spends what its item mapped to. MAX_PAYLOAD_OUTPUT_CHARS, or more for a
        # body limit raised past 1 MiB (`body_bytes`: a trigger's `max_body_bytes`).
        self.bound = self.output = max(MAX_PAYLOAD_OUTPUT_CHARS, 16 * body_bytes)
        # The work the payload's items may still cost (MAX_PAYLOAD_STEPS), spent the same way.
        self.steps = MAX_PAYLOAD_STEPS
        self._found: dict[_Key, _Found] = {}  # the least recently read first
        self._kept = 0  # characters of the texts in _found
        self._nodes = 0  # nodes of the documents in _found

    def next_batch(self) -> None:
        """The next batch of the same payload's items (a polled page over MAX_LIST_ITEMS
        items, landed in batches: `schedules/poll.py`) has the whole work and output
        budgets, as a batch sent on its own would; the documents read stay parsed."""
        self.output = self.bound
        self.steps = MAX_PAYLOAD_STEPS

    def read(self, name: str, text: str, pinned: Collection[_Key] = frozenset()) -> tuple[Any, int]:
        """The document `name` finds in `text` and its size (nodes), or its EvalError.
        `pinned`: the texts the item being mapped read already (kept while it is)."""
        key = (name, text)
        found = self._found.pop(key, None)
        if found is not None:
            self._found[key] = found  # now the most recently read
        else:
            try:
                document = _FUNCTIONS.call_function(name, [text])
            except LimitExceeded:
                raise  # a text over the size limit: refused before any parse
            except EvalError as exc:
                found = exc.message
            else:
                size = _size_of(document)
                found = (None if size > MAX_STEPS else document, size)
            self._keep(key, found, pinned)
        if isinstance(found, str):
            raise EvalError("decode", found)
        return found

    def _keep(self, key: _Key, found: _Found, pinned: Collection[_Key]) -> None:
        self._kept += len(key[1])
        self._nodes += _nodes_of(found)
        gone: list[_Key] = []
        for oldest in self._found:
            if self._kept <= _KEPT_TEXT and self._nodes <= _KEPT_NODES:
                break
            if oldest not in pinned:
                gone.append(oldest)
                self._kept -= len(oldest[1])
                self._nodes -= _nodes_of(self._found[oldest])
        for oldest in gone:
            del self._found[oldest]
        self._found[key] = found


_OPTIONS = jp_visitor.Options(custom_functions=_FUNCTIONS)
_Visit = Callable[..., Any]
_DISPATCH: dict[str, _Visit] = {}


class Run(jp_visitor.TreeInterpreter):
    """One evaluation of one item: secrets, the work budget left, the problems found."""

    def __init__(
        self,
        secrets: Mapping[str, Any] | None = None,
        texts: DecodedTexts | None = None,
        received: datetime | None = None,
    ) -> None:
        # No super().__init__(): the dispatch table is shared by the class, so a Run costs
        # only these attributes (one is made per item, on the hot path).
        self._options = _OPTIONS
        self._functions = _FUNCTIONS
        self._dict_cls = dict
        self.secrets: Mapping[str, Any] = secrets or {}
        self.steps = MAX_STEPS
        self.output = MAX_OUTPUT_CHARS
        if texts is not None and texts.output < MAX_OUTPUT_CHARS:
            self.output = max(texts.output, 0)  # the payload's items have mapped to nearly all
        if texts is not None and texts.steps < MAX_STEPS:
            self.steps = max(texts.steps, 0)  # the payload's items have spent nearly all work
        # Objects and lists built for this item, by id (kept alive, so no id is reused): the
        # value, its size as JSON (charged to `output` as it was built), and whether a value
        # holding it was charged since (it costs its size again when named again).
        self.built: dict[int, tuple[Any, int, bool]] = {}
        self.problems: list[FieldProblem] = []
        self.dropped = 0
        self.target = ""
        self.main: Mapping[str, Any] = {}  # the main document, for the `main` source of `also`
        self.texts = texts  # None: made on the first from_json()/from_xml(), for this run only
        self.received = received  # when the payload came ({received: time}); None: now
        self.at_receipt = False  # whether `{received: time}` gave a value to what it maps
        # The source of the alternative the last `coalesce` took, for a problem with the value
        # it gave (a template var's object, a failed cast): reset by who reads it.
        self.matched: str | None = None
        # The documents this run was charged for, by function and text: each field that reads
        # the same text costs the item once, not once per field.
        self.charged: set[tuple[str, str]] | None = None
        # What those documents cost this item: the payload parsed each once (`DecodedTexts`),
        # so its work budget is not charged for them again per item that reads one.
        self.read_steps = 0
        self.widened = False  # whether a wide integer was read as a number (`_Wide`)

    def visit(self, node: Any, *args: Any, **kwargs: Any) -> Any:
        self.steps -= 1
        if self.steps < 0:
            raise work_too_big(self)
        found = _DISPATCH[node["type"]](self, node, *args, **kwargs)
        # The one place a wide integer becomes the number it is: each value a node gives.
        return self._widened(found) if type(found) is WideInt else found

    def _widened(self, wide: WideInt) -> _Wide:
        self.widened = True
        return _Wide(wide)

    def _numbered(self, arg: Any) -> Any:
        """A function's argument with the wide integers of a list (`values(@)`, whose
        elements no node gave) the numbers they are."""
        if type(arg) is not list or WideInt not in map(type, arg):  # at C speed
            return arg
        return [self._widened(item) if type(item) is WideInt else item for item in arg]

    def as_read(self, value: Any) -> Any:
        """An expression's value with each `_Wide` the `WideInt` it was read as (in place:
        a list or an object holding one was built by this run, never the payload's)."""
        if not self.widened:
            return value
        kind = type(value)
        if kind is _Wide:
            return WideInt(value.text)
        if kind is list:
            for index, item in enumerate(value):
                if type(item) in _HOLDERS:
                    value[index] = self.as_read(item)
        elif kind is dict:
            for key, item in value.items():
                if type(item) in _HOLDERS:
                    value[key] = self.as_read(item)
        return value

    def spend(self, units: int) -> None:
        self.steps -= units
        if self.steps < 0:
            raise work_too_big(self)

    def visit_function_expression(self, node: Any, value: Any) -> Any:
        name = node["value"]
        if name not in _DECODERS:
            args = [self._numbered(self.visit(child, value)) for child in node["children"]]
            return self._functions.call_function(name, args)
        (child,) = node["children"]  # the arity is checked when the expression compiles
        text = self.visit(child, value)
        if not isinstance(text, str):  # null, or a type the function's signature refuses
            return self._functions.call_function(name, [text])
        if self.texts is None:
            self.texts = DecodedTexts()
        document, size = self.texts.read(name, text, self.charged or ())
        if self.charged is None:
            self.charged = set()
        key = (name, text)
        if key not in self.charged:
            # The values read are values built for this item, like a multi-select's: two
            # documents spend one budget, not one each. Counted once, when the text was parsed.
            if size > self.steps:
                raise work_too_big(self)
            self.steps -= size
            self.read_steps += size
            self.charged.add(key)
        return document

    def _charge_size(self, result: Any) -> None:
        try:
            self.steps = charge_size(result, self.steps)
        except LimitExceeded:
            raise work_too_big(self) from None

    def _charge_built(self, result: Any) -> None:
        """`{a: @, b: @}` names a value again and again without copying it: what it will be
        once written is charged here, where it multiplies."""
        if result is not None:
            self.built[id(result)] = (result, charge_output(self, result), False)

    def visit_slice(self, node: Any, value: Any) -> Any:
        """A slice cuts text too (`cpf[0:3]`, JMESPath Community's string slices): standard
        JMESPath gives null, a field silently left out, where a partner wants `529.982...`."""
        if type(value) is str:
            return value[slice(*node["children"])]
        return super().visit_slice(node, value)

    def visit_projection(self, node: Any, value: Any) -> Any:
        """A slice of text is no list to project over: what follows it reads the text cut
        (`cpf[0:3]`, and `[0:3]` of `@`), as a sub-expression would."""
        left, right = node["children"]
        if left["type"] == "index_expression" and left["children"][1]["type"] == "slice":
            base = self.visit(left, value)
            if type(base) is str:
                return self.visit(right, base)
            if not isinstance(base, list):
                return None
            collected = []
            for element in base:
                current = self.visit(right, element)
                if current is not None:
                    collected.append(current)
            return collected
        return super().visit_projection(node, value)

    def visit_multi_select_list(self, node: Any, value: Any) -> list[Any] | None:
        result = super().visit_multi_select_list(node, value)
        self._charge_size(result)
        self._charge_built(result)
        return result

    def visit_multi_select_dict(self, node: Any, value: Any) -> Any:
        result = super().visit_multi_select_dict(node, value)
        self._charge_size(result)
        self._charge_built(result)
        return result


_DISPATCH.update(
    (name[len("visit_") :], getattr(Run, name)) for name in dir(Run) if name.startswith("visit_")
)
_HOLDERS: Final = frozenset({_Wide, list, dict})


def is_truthy(value: Any) -> bool:
    """JMESPath truth: null, false, "", [] and {} are false; everything else (0 too) is true."""
    return not (value is None or value is False or value == "" or value == [] or value == {})


def compile_expression(
    expression: str,
    *,
    aliases: Mapping[str, Mapping[str, str]] | None = None,
    aliased: list[tuple[str, str]] | None = None,
) -> tuple[Getter | None, str]:
    """A getter for `expression`, or (None, why it is refused). `aliases`: object member →
    old member name → new (`schemas/renamed.py`): a read of `<member>.<old>` reads the new
    name, or the old one when the new is null; each such read goes to `aliased` as
    (`member.old`, `member.new`)."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        return None, (
            f"expression is {len(expression):,} characters long, more than the limit of "
            f"{MAX_EXPRESSION_LENGTH:,}"
        )
    if _bracket_depth(expression) > MAX_EXPRESSION_DEPTH:
        return None, f"expression is nested more than {MAX_EXPRESSION_DEPTH} levels deep"
    try:
        parsed = jmespath.compile(expression)
    except RecursionError:
        return None, f"expression is nested more than {MAX_EXPRESSION_DEPTH} levels deep"
    except jp_exceptions.JMESPathError as exc:
        return None, f"expression does not compile: {_one_line(exc)}"
    why = _check_tree(parsed.parsed)
    if why:
        return None, why
    if aliases:
        found: list[tuple[str, str]] = []
        tree, _ = _aliased(parsed.parsed, aliases, found)
        if found:
            if aliased is not None:
                aliased += found
            return _interpreted(tree, expression), ""
    keys = plain_path(expression)
    if keys is not None:
        return _path_getter(keys), ""
    if expression.strip() == "@":
        return _identity, ""
    return _interpreted(parsed.parsed, expression), ""


def _aliased(
    node: Any,
    aliases: Mapping[str, Mapping[str, str]],
    found: list[tuple[str, str]],
    member: str | None = None,
) -> tuple[Any, str | None]:
    """The tree with each read of an old name of `<member>` read as `<new> || <old>`, and the
    member the node gives, if it gives one of `aliases` (`last_position`). `member`: the
    member the node reads from. A chain (`a.b`, `a | b`) reads each step from the one before;
    a multiselect, a function's arguments, a condition read from what their node reads from;
    the right side of a projection or filter reads elements, never a member itself."""
    if not _is_node(node):
        return node, None
    kind, children = node["type"], node.get("children", ())
    if kind == "field":
        new = aliases.get(member, {}).get(node["value"]) if member else None
        if new is None:
            return node, node["value"] if node["value"] in aliases else None
        found.append((f"{member}.{node['value']}", f"{member}.{new}"))
        return {"type": "or_expression", "children": [{**node, "value": new}, node]}, None
    if kind == "current":
        return node, member
    if kind in ("subexpression", "pipe"):
        steps = []
        for child in children:
            child, member = _aliased(child, aliases, found, member)
            steps.append(child)
        return {**node, "children": steps}, member
    if kind in (
        "projection",
        "value_projection",
        "filter_projection",
        "flatten",
        "index_expression",
    ):
        first, _ = _aliased(children[0], aliases, found, member) if children else (None, None)
        rest = [_aliased(child, aliases, found)[0] for child in children[1:]]
        return {**node, "children": [first, *rest][: len(children)]}, None
    if kind == "expref":  # evaluated on each element by the function
        return {**node, "children": [_aliased(c, aliases, found)[0] for c in children]}, None
    return {**node, "children": [_aliased(c, aliases, found, member)[0] for c in children]}, None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _bracket_depth(expression: str) -> int:
    """Deepest nesting of ( [ { outside quotes: checked before the recursive parser runs."""
    depth = deepest = 0
    quote = ""
    escaped = False
    for char in expression:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


def _check_tree(root: Any) -> str:
    """Tree depth and function names and arity, which JMESPath checks only at run time."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            return f"expression is nested more than {MAX_EXPRESSION_DEPTH} levels deep"
        if node.get("type") == "function_expression":
            why = _check_function(node["value"], len(node["children"]))
            if why:
                return why
        stack.extend((child, depth + 1) for child in node.get("children", ()) if _is_node(child))
    return ""


def _is_node(value: Any) -> bool:
    return isinstance(value, dict) and "type" in value


def _check_function(name: str, arity: int) -> str:
    spec = _FUNCTIONS.FUNCTION_TABLE.get(name)
    if spec is None:
        return f"unknown function {name}()"
    signature = spec["signature"]
    variadic = bool(signature) and signature[-1].get("variadic", False)
    if arity < len(signature) if variadic else arity != len(signature):
        return f"{name}() takes {len(signature)}{' or more' if variadic else ''} arguments"
    return ""


def _identity(root: Any, run: Run) -> Any:
    return root


def _path_getter(keys: tuple[str, ...]) -> Getter:
    if len(keys) == 1:
        (k1,) = keys

        def get1(root: Any, run: Run) -> Any:
            return root.get(k1) if isinstance(root, dict) else None

        return get1
    if len(keys) == 2:
        k1, k2 = keys

        def get2(root: Any, run: Run) -> Any:
            if isinstance(root, dict):
                root = root.get(k1)
                if isinstance(root, dict):
                    return root.get(k2)
            return None

        return get2

    def get_n(root: Any, run: Run) -> Any:
        for key in keys:
            if not isinstance(root, dict):
                return None
            root = root.get(key)
        return root

    return get_n


def _interpreted(tree: Any, expression: str) -> Getter:
    def get(root: Any, run: Run) -> Any:
        try:
            return run.as_read(run.visit(tree, root))
        except jp_exceptions.JMESPathError as exc:
            raise EvalError("expression", _one_line(exc), expression) from None
        except EvalError as exc:  # a spent budget, or a text from_json()/from_xml() refused
            exc.source = exc.source or expression
            raise
        except RecursionError:
            raise work_too_big(run) from None
        except (ArithmeticError, ValueError, TypeError) as exc:
            # A built-in function or slice JMESPath does not check: floor() of an Infinity
            # (`floor(to_number('1e999'))`), a slice step of 0 (`a[::0]`), sum() of an
            # integer past the largest float and a float.
            raise EvalError("expression", _one_line(exc), expression) from None

    return get
