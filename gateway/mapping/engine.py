"""CompiledMapping: a mapping ready to run on payloads (inbound) or contexts (outbound)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Final

from ..errors import FieldProblem, InvalidPayload
from ..formats import at_path
from ..formats.json_tree import a_json_type
from ..schemas.renamed import current_data
from .casts import to_string
from .compiler import OCCURRENCE, WHOLE_BODY, AlsoPlan, Guard, Inner, Key, Plan, compile_plan
from .conditions import Condition
from .expressions import DecodedTexts, Run
from .getters import describe
from .limits import MAX_LIST_ITEMS, MAX_NESTED_ITEM_FIELDS
from .model import (
    Direction,
    Emit,
    EvalError,
    Forward,
    LimitExceeded,
    MappedDocument,
    MappedTarget,
    OutboundRequest,
)
from .params import Param, value_problems
from .problems import Problems, payload_error
from .secret_marks import SecretMarks
from .tables import Table, evaluate, record

_MAX_BOUND: Final = 64
"""Sets of param values kept compiled per mapping version (one per trigger that sets them)."""
# What an HTTP header value cannot carry besides line breaks: the other C0 controls (a tab
# is allowed) and DEL.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class CompiledMapping:
    """A compiled mapping file. Immutable and shareable between tasks and threads."""

    __slots__ = ("_bound", "_events", "_forward", "_plan", "checksum", "emit", "source")

    def __init__(self, plan: Plan, source: dict[str, Any], checksum: str) -> None:
        self._plan = plan
        self.source = source
        self.checksum = checksum
        self.emit: tuple[str, ...] = tuple(dict.fromkeys(e.type for e, _ in plan.emit))
        static = all(c is None for _, c in plan.emit)
        self._events = tuple(e for e, _ in plan.emit) if static else None
        self._forward = _static_forward(plan.forward)
        self._bound: dict[str, CompiledMapping] = {}

    @property
    def name(self) -> str:
        return self._plan.name

    @property
    def direction(self) -> Direction:
        return self._plan.direction

    @property
    def entity_type(self) -> str | None:
        return self._plan.entity_type

    @property
    def kind(self) -> str | None:
        return self._plan.kind

    @property
    def create(self) -> bool:
        """Inbound, entities: whether an item may create the entity it names (`create:
        false`: it must exist)."""
        return self._plan.create

    @property
    def target(self) -> str:
        """Inbound: "entities" (upserts by key) or "positions" (canonical fixes)."""
        return self._plan.target

    @property
    def key_fields(self) -> tuple[str, ...]:
        """Every target the key names, in order (of all its alternatives)."""
        return tuple(dict.fromkeys(name for choice in self._plan.key for name in choice))

    @property
    def key_alternatives(self) -> tuple[tuple[str, ...], ...]:
        """The key's alternatives in order: an item is found by the first it has."""
        return self._plan.key

    def alternatives_from(
        self, key: Mapping[str, Any], document: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """The key's alternatives `document` has values for, each as its values, from the one
        it is found by (`key`, the item's `MappedDocument.key`) on, in order."""
        alternatives = self._plan.key
        chosen = next((i for i, names in enumerate(alternatives) if set(names) == set(key)), None)
        if chosen is None:
            return [dict(key)]
        found = []
        for names in alternatives[chosen:]:
            values = {name: at_path(document, name) for name in names}
            if all(_present(value) for value in values.values()):
                found.append(values)
        return found

    @property
    def also_entity_types(self) -> tuple[str, ...]:
        """The entity types of the further entities an item writes (`also`), in order."""
        return tuple(a.entity_type for a in self._plan.also)

    @property
    def has_occurrence_id(self) -> bool:
        """Whether the mapping names the partner's id of an item's occurrence (`occurrence_id`)."""
        return bool(self._plan.occurrence)

    @property
    def secrets(self) -> frozenset[str]:
        """Names of the secrets the mapping reads: pass them all to apply/build_request."""
        return self._plan.secrets

    @property
    def deprecated(self) -> tuple[str, ...]:
        """Each use of a renamed member's old name (`/fields/last_position.latitude:
        'last_position.latitude' is a deprecated name, write 'last_position.lat'`): the
        upload's warnings (schemas/renamed.py)."""
        return self._plan.deprecated

    @property
    def reads_received(self) -> bool:
        """Whether what it writes depends on when the payload came (`{received: time}`)."""
        return self._plan.reads_received

    @property
    def params(self) -> Mapping[str, Param]:
        """The parameters the mapping declares (`params:`), by name."""
        return self._plan.params

    def param_problems(
        self, values: Mapping[str, Any], *, complete: bool = True
    ) -> list[FieldProblem]:
        """What is wrong with a trigger's or a schedule's params for this mapping (pointers
        /params/...): each against its declaration, then the mapping compiled with them all,
        as every payload will be (a `{round: {param: p}}` of a `p` of 20 compiles with none).
        A compile problem names the param its spot reads."""
        problems = value_problems(self._plan.params, values, complete=complete)
        if problems:
            return problems
        try:
            self.bind(values)
        except InvalidPayload as exc:
            return [self._param_compile_problem(values, p) for p in exc.problems]
        return []

    def _param_compile_problem(
        self, values: Mapping[str, Any], problem: FieldProblem
    ) -> FieldProblem:
        spot = _at_pointer(self.source, problem.pointer)
        read = [name for name in _params_read(spot) if name in values] or sorted(values)
        where = f"/params/{read[0]}" if len(read) == 1 else "/params"
        message = (
            f"mapping {self.name!r} does not compile with these params: "
            f"{problem.pointer}: {problem.message}"
        )
        return FieldProblem(where, message, "param", {"mapping_pointer": problem.pointer})

    def bind(self, values: Mapping[str, Any], *, strict: bool = False) -> CompiledMapping:
        """This mapping with a trigger's params bound (compiled once per set of values).

        Values the mapping does not declare are ignored (a trigger is checked against the
        mapping when it is saved; a later version may drop a param), unless `strict`. A
        value that does not fit raises InvalidPayload naming the param; unset required
        params make the fields that read them fail per payload.
        """
        declared = self._plan.params
        if strict and (problems := value_problems(declared, values, complete=False)):
            raise InvalidPayload(f"params do not fit mapping {self.name!r}", problems)
        chosen = {k: v for k, v in values.items() if k in declared}
        if not chosen:
            return self
        key = _values_key(chosen)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._compile_bound(chosen)
            if len(self._bound) >= _MAX_BOUND:
                self._bound.pop(next(iter(self._bound)))
            self._bound[key] = bound
        return bound

    def _compile_bound(self, values: dict[str, Any]) -> CompiledMapping:
        problems = value_problems(self._plan.params, values, complete=False)
        if problems:
            raise InvalidPayload(f"params do not fit mapping {self.name!r}", problems)
        found = Problems()
        plan = compile_plan(self.source, found, None, values, strict=self._plan.strict)
        found.raise_if_any(f"mapping {self.name!r} does not compile with these params")
        assert plan is not None
        return CompiledMapping(plan, self.source, self.checksum)

    def __repr__(self) -> str:
        return f"<CompiledMapping {self.name!r} {self.direction} {self.checksum[:12]}>"

    # -- inbound -----------------------------------------------------------------------------

    def source_of(self, target: str, also: int | None = None) -> str | None:
        """The source expression(s) of a target of `fields` (`position.latitude`), or of the
        `also` entry at place `also` (one written `{main: name}` has the main field's), for
        messages about the value it gave; None for a target the file does not map."""
        table = self.source
        if also is not None:
            entries = self.source.get("also")
            table = entries[also] if isinstance(entries, list) and also < len(entries) else {}
        fields = table.get("fields") if isinstance(table, dict) else None
        spec = fields.get(target) if isinstance(fields, dict) else None
        if also is not None and isinstance(spec, dict) and isinstance(spec.get("main"), str):
            return self.source_of(spec["main"])
        return None if spec is None else describe(spec)

    def probe(self, payload: Any) -> dict[str, Any] | None:
        """The answer to a partner's probe (the file's `probe`), or None for a payload to map."""
        probe = self._plan.probe
        return None if probe is None else probe.answer_for(payload)

    @property
    def acknowledgement(self) -> dict[str, Any] | None:
        """The file's `answer`: the members every 2xx answer of a call it maps carries."""
        added = self._plan.answer
        return None if added is None else copy.deepcopy(dict(added))

    def answered(self, answer: dict[str, Any]) -> dict[str, Any]:
        """A 2xx answer to a call this mapping mapped, with the file's `answer` added."""
        added = self.acknowledgement
        return answer if added is None else {**answer, **added}

    def items(self, payload: Any, *, texts: DecodedTexts | None = None) -> list[Any]:
        """The items of a batch payload (`items` expression); a single object → [payload].

        `texts`: the documents from_json()/from_xml() read in this payload, shared with the
        `apply` of its items (each text parsed once per payload, not once per item)."""
        return self.numbered_items(payload, texts=texts)[0]

    def numbered_items(
        self, payload: Any, *, texts: DecodedTexts | None = None
    ) -> tuple[list[Any], list[int] | None]:
        """The items, and each one's index in the partner's list when `items: {..., when}`
        left some out (None: the items are that list, numbered from 0), so a batch's results
        and refusals name the item the partner sent, not its place among those kept."""
        _, items, numbers = self.listed_items(payload, texts=texts)
        return items, numbers

    def listed_items(
        self,
        payload: Any,
        *,
        texts: DecodedTexts | None = None,
        refused: list[tuple[int, InvalidPayload]] | None = None,
        limit: int = MAX_LIST_ITEMS,
    ) -> tuple[list[Any], list[Any], list[int] | None]:
        """The partner's records (its list before `items: {..., when}` kept some), and the
        items with their numbers as `numbered_items` gives them: a polled page of records
        the mapping leaves out is not an empty page (`schedules/poll.py`).

        `refused`: a record `when` cannot be evaluated on (a function given a value of the
        wrong type) is left out and named there (its index, its problem) instead of refusing
        the whole payload: a polled page's other records go on (`schedules/poll.py`). A spent
        work budget still refuses the whole payload.

        `limit`: the items the payload may hold, a batch's (MAX_LIST_ITEMS) unless said: a
        polled page already read may hold more, landed in batches of MAX_LIST_ITEMS
        (`schedules/poll.py`)."""
        self._need("inbound")
        getter = self._plan.items
        if getter is None:
            found = payload
        else:
            try:
                found = getter(payload, Run(texts=texts))
            except EvalError as error:
                raise self._error(error, "items") from None
            if found is None:
                raise self._items_problem("the payload has no items", "required")
        if not isinstance(found, list):
            found = [found]
        if self._plan.inner is not None:
            found = self._inner_items(found, self._plan.inner, texts, limit)
        numbers = None
        listed = found
        if self._plan.keep is not None:
            found, numbers = self._kept_items(found, self._plan.keep, texts, refused)
        if len(found) > limit:
            message = f"{len(found):,} items, more than the limit of {limit:,}"
            raise self._items_problem(message, "limit")
        return listed, found, numbers

    def _kept_items(
        self,
        found: list[Any],
        keep: Condition,
        texts: DecodedTexts | None,
        refused: list[tuple[int, InvalidPayload]] | None,
    ) -> tuple[list[Any], list[int]]:
        """`items: {..., when}`: the items the condition holds for (one work budget), and
        their indexes in the list they were kept from (`listed_items` for `refused`)."""
        run = Run(texts=texts)
        numbers: list[int] = []
        for index, item in enumerate(found):
            try:
                if keep(item, run):
                    numbers.append(index)
            except EvalError as error:
                if refused is None or isinstance(error, LimitExceeded):
                    raise self._error(error, "items") from None
                refused.append((index, self._error(error, "items")))
        return [found[index] for index in numbers], numbers

    def _inner_items(
        self, outers: list[Any], inner: Inner, texts: DecodedTexts | None, limit: int
    ) -> list[Any]:
        """`items: {from, each, as}`: per outer element, an item per element of its inner
        list: the outer element with that element under `as` (an outer without the list, or
        with an empty one, gives none)."""
        items: list[Any] = []
        fields = 0  # copied into the items: each is a copy of its outer element
        run = Run(texts=texts)  # one work budget for the walk, as for an `items` expression
        for index, outer in enumerate(outers):
            if outer is None:
                continue
            if not isinstance(outer, dict):
                message = f"element {index} of items' from is not an object"
                raise self._items_problem(message, "type")
            try:
                elements = inner.each(outer, run)
            except EvalError as error:
                raise self._error(error, "items") from None
            listed = elements if isinstance(elements, list) else [elements]
            present = [element for element in listed if element is not None]
            # Bounded before anything is copied: one outer element may list 100,000s.
            if len(items) + len(present) > limit:
                count = len(items) + len(present)
                message = f"{count:,} items or more, more than the limit of {limit:,}"
                raise self._items_problem(message, "limit")
            fields += (len(outer) + 1) * len(present)
            if fields > MAX_NESTED_ITEM_FIELDS:
                message = (
                    f"the items would copy more than {MAX_NESTED_ITEM_FIELDS:,} fields of their "
                    f"outer elements, the limit"
                )
                raise self._items_problem(message, "limit")
            items.extend({**outer, inner.name: element} for element in present)
        return items

    def apply(
        self,
        payload: Any,
        *,
        secrets: dict[str, Any] | None = None,
        texts: DecodedTexts | None = None,
        received: datetime | None = None,
    ) -> MappedDocument:
        """Map one item to entity fields, key and events; InvalidPayload lists every failure.
        `texts`: those of the payload the item is from (`items`), else its own; `received`:
        when the payload came (`{received: time}`; None: now)."""
        plan = self._plan
        if plan.direction != "inbound":
            self._need("inbound")
        run = Run(secrets, texts, received)
        room, work = run.output, run.steps
        document: dict[str, Any] = {}
        key: dict[str, Any] = {}
        events: tuple[Emit, ...] = ()
        event_data: dict[str, Any] = {}
        forward = self._forward
        also: tuple[MappedTarget, ...] = ()
        occurrence: str | None = None
        try:
            document = current_data(plan.entity_type, evaluate(plan.fields, payload, run))
            key = _key(plan.key, document, run)
            if self._events is not None:
                events = self._events
            else:
                events = tuple(e for e, when in plan.emit if when is None or when(payload, run))
            run.main = document  # for `main` in event_data and in also's fields
            if plan.event_data:
                event_data = evaluate(plan.event_data, payload, run, "event_data.")
            if forward is None:
                forward = _forward(plan.forward, payload, run)
            if plan.kind is not None and "kind" not in document:
                document = {"kind": plan.kind, **document}
            if plan.also:
                run.main = document  # with its kind
                also = tuple(_also(plan.also, payload, run))
            if plan.occurrence:
                source = describe(self.source.get(OCCURRENCE))
                occurrence = _occurrence(plan.occurrence, payload, run, source)
                events, also = _of_occurrence(occurrence, events, also)
        except EvalError as error:  # a spent budget, or a failing emit condition
            if not error.recorded:
                record(run, error, "emit")
        if texts is not None:  # the next items have that much less
            texts.output -= room - run.output
            texts.steps -= work - run.steps - run.read_steps  # texts parsed once: not again
        if run.problems:
            raise payload_error(self.name, run.problems, run.dropped)
        forward = forward or ()
        lifted = _lifted(plan.forward, forward)
        return MappedDocument(
            document, key, events, event_data, forward, also, lifted, occurrence, run.at_receipt
        )

    # -- outbound ----------------------------------------------------------------------------

    def build_request(
        self, context: Any, *, secrets: Mapping[str, Any] | SecretMarks | None = None
    ) -> OutboundRequest:
        """The partner request's parts for a context such as {"entity": ..., "event": ...}.
        The mapping reads each secret as its mark (`secret_marks.py`): the parts have the
        secrets in place, or, given `SecretMarks`, still their marks (the caller reveals them
        once it has built the rest). No problem raised quotes a secret."""
        self._need("outbound")
        plan = self._plan
        marks = secrets if isinstance(secrets, SecretMarks) else SecretMarks(secrets)
        run = Run(marks.marks)
        path: dict[str, str] = {}
        query: dict[str, str | list[str]] = {}
        headers: dict[str, str] = {}
        body: Any = None
        try:
            path = _strings(plan.path, context, run, "path", required=True)
            query = _query(plan.query, context, run)
            headers = _strings(plan.headers, context, run, "headers")
            if plan.whole_body:  # `body_value`: the value of its one spec, any JSON value
                body = evaluate(plan.body or (), context, run).get(WHOLE_BODY)
            elif plan.body is not None:
                body = evaluate(plan.body, context, run, "body.")
        except LimitExceeded:
            pass  # recorded in run.problems
        if run.problems:
            raise payload_error(self.name, marks.shown(run.problems), run.dropped)
        if isinstance(secrets, SecretMarks):
            return OutboundRequest(path, query, headers, body)
        try:
            return OutboundRequest(*(marks.reveal(part) for part in (path, query, headers, body)))
        except InvalidPayload as exc:
            raise payload_error(self.name, exc.problems, 0) from None

    def map_response(self, response_body: Any) -> dict[str, Any]:
        """The entity fields in a partner's answer (the `response` section)."""
        self._need("outbound")
        run = Run()
        document: dict[str, Any] = {}
        try:
            document = evaluate(self._plan.response, response_body, run)
        except LimitExceeded:
            pass  # recorded in run.problems
        if run.problems:
            raise payload_error(self.name, run.problems, run.dropped)
        return document

    def _need(self, direction: Direction) -> None:
        if self._plan.direction != direction:
            raise TypeError(f"mapping {self.name!r} is {self._plan.direction}, not {direction}")

    def _items_problem(self, message: str, keyword: str) -> InvalidPayload:
        """The payload's items cannot be had (none, too many, not objects)."""
        problem = FieldProblem("", message, keyword, {"target": "items"})
        return payload_error(self.name, [problem], 0)

    def _error(self, error: EvalError, target: str) -> InvalidPayload:
        run = Run()
        record(run, error, target)
        return payload_error(self.name, run.problems, 0)


def _key(alternatives: Key, document: dict[str, Any], run: Run, prefix: str = "") -> Any:
    """The values of the key's first alternative whose targets all have one (`first_of`); a
    problem when the item has none (its missing fields, or the alternatives it lacks). An
    empty text is no identifier: a tracker that sends `"deviceId": ""` is found by the next
    alternative."""
    for fields in alternatives:
        key = {name: at_path(document, name) for name in fields}
        if all(_present(value) for value in key.values()):
            return key
    if not alternatives:
        return {}
    failed = {p.extra.get("target") for p in run.problems}  # their own failure is listed
    if len(alternatives) == 1:
        for name in alternatives[0]:
            if not _present(at_path(document, name)) and prefix + name not in failed:
                record(run, EvalError("key", f"key field {name!r} has no value"), prefix + name)
        return {}
    if any(prefix + name in failed for fields in alternatives for name in fields):
        return {}
    described = "; ".join(" + ".join(fields) for fields in alternatives)
    message = f"the item has none of the key's alternatives: {described}"
    record(run, EvalError("key", message), f"{prefix}key")
    return {}


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _values_key(values: dict[str, Any]) -> str:
    """A set of param values as its canonical JSON, which keeps their types: `true`, `1` and
    `1.0` are three sets (Python's `True == 1 == 1.0`, with one hash, would share a plan)."""
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _static_forward(guards: tuple[Guard, ...]) -> Forward | None:
    """The guards as they apply to every payload, or None when a condition decides."""
    if any(g.unless is not None for g in guards):
        return None
    return tuple((g.target, g.by) for g in guards)


def _forward(guards: tuple[Guard, ...], payload: Any, run: Run) -> Forward:
    """The guards that hold for this payload: an `unless` that holds turns one off."""
    return tuple((g.target, g.by) for g in guards if g.unless is None or not g.unless(payload, run))


def _lifted(guards: tuple[Guard, ...], forward: Forward) -> tuple[str, ...]:
    """The only-forward targets an `unless` turned off for this payload: the source may move
    them back (an authoritative ERP), and says so on its events (`origin.authoritative`)."""
    kept = {target for target, _ in forward}
    return tuple(g.target for g in guards if g.target not in kept)


def _occurrence(table: Table, payload: Any, run: Run, source: str) -> str | None:
    """The item's `occurrence_id` as text (a number's digits); None when the payload gives
    none (absent, null, or blank text): its events are then announced as `announce` says,
    every copy. Anything else (true, an object, a list) is a problem at `occurrence_id`: an
    id is a text or a number, and the problem points where the payload has it (`source`)."""
    value = evaluate(table, payload, run).get(OCCURRENCE)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if isinstance(value, bool | dict | list):
            kind = (
                "a boolean" if isinstance(value, bool) else
                "an object" if isinstance(value, dict) else "a list"
            )  # fmt: skip
            raise EvalError("type", f"{kind} is not an id: an id is a text or a number")
        return to_string(value)
    except EvalError as error:
        error.source = error.source or source
        record(run, error, OCCURRENCE)
        return None


def _of_occurrence(
    occurrence: str | None, events: tuple[Emit, ...], also: tuple[MappedTarget, ...]
) -> tuple[tuple[Emit, ...], tuple[MappedTarget, ...]]:
    """The item's events (and its `also` targets' events), each carrying its occurrence."""
    if occurrence is None:
        return events, also
    events = tuple(e._replace(occurrence=occurrence) for e in events)
    also = tuple(
        t._replace(events=tuple(e._replace(occurrence=occurrence) for e in t.events)) for t in also
    )
    return events, also


def _also(plans: tuple[AlsoPlan, ...], payload: Any, run: Run) -> Iterator[MappedTarget]:
    """The further entities of `also` whose `when` holds, mapped from the same payload."""
    for index, plan in enumerate(plans):
        if plan.when is not None and not plan.when(payload, run):
            continue
        prefix = f"also.{index}."
        document = current_data(plan.entity_type, evaluate(plan.fields, payload, run, prefix))
        key = _key(plan.key, document, run, prefix)
        events = tuple(e for e, when in plan.emit if when is None or when(payload, run))
        if plan.kind is not None and "kind" not in document:
            document = {"kind": plan.kind, **document}
        forward = _forward(plan.forward, payload, run)
        lifted = _lifted(plan.forward, forward)
        yield MappedTarget(
            plan.entity_type, document, key, events, forward, plan.create, lifted, index
        )


def _strings(
    table: Table, context: Any, run: Run, section: str, *, required: bool = False
) -> dict[str, str]:
    """Path, query and header values: text, present when required, no line breaks."""
    result: dict[str, str] = {}
    if not table:
        return result
    values = evaluate(table, context, run, f"{section}.")
    for entry in table:
        value = values.get(entry.key)
        target = f"{section}.{entry.target}"
        if value is None:
            if required and not any(p.extra.get("target") == target for p in run.problems):
                record(run, EvalError("required", "path parameter has no value"), target)
            continue
        if isinstance(value, dict | list):
            record(run, EvalError("type", f"{a_json_type(value)} is not text"), target)
            continue
        text = to_string(value)
        if "\r" in text or "\n" in text:
            record(run, EvalError("type", "line breaks are not allowed"), target)
            continue
        if section == "headers" and _CONTROL.search(text):
            # The HTTP client refuses them when sending: the partner blamed, nothing sent.
            message = "control characters are not allowed in a header"
            record(run, EvalError("type", message), target)
            continue
        result[entry.key] = text
    return result


def _query(table: Table, context: Any, run: Run) -> dict[str, str | list[str]]:
    """Query values: text, or a list of values as the parameter repeated, one per item
    (Traccar's `deviceId=1&deviceId=2`), as a form body repeats a field (`bodies.form_pairs`):
    its nulls left out, an empty list no parameter. An object, or one in the list, is no
    text."""
    result: dict[str, str | list[str]] = {}
    if not table:
        return result
    values = evaluate(table, context, run, "query.")
    for entry in table:
        value = values.get(entry.key)
        target = f"query.{entry.target}"
        listed = isinstance(value, list)
        items: list[Any] = value if isinstance(value, list) else [value]
        texts = [t for each in items if (t := _query_text(each, target, run, listed)) is not None]
        if len(texts) < sum(each is not None for each in items):
            continue  # a problem recorded
        if listed and texts:
            result[entry.key] = texts
        elif texts:
            result[entry.key] = texts[0]
    return result


def _query_text(value: Any, target: str, run: Run, listed: bool) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict | list):
        message = f"{a_json_type(value)} is not text" + (" (an item of a list)" if listed else "")
        record(run, EvalError("type", message), target)
        return None
    text = to_string(value)
    if "\r" in text or "\n" in text:
        record(run, EvalError("type", "line breaks are not allowed"), target)
        return None
    return text


def _at_pointer(document: Any, at: str) -> Any:
    for token in at.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(document, dict):
            document = document.get(token)
        elif isinstance(document, list) and token.isdigit() and int(token) < len(document):
            document = document[int(token)]
        else:
            return None
    return document


def _params_read(spec: Any) -> list[str]:
    """The params a part of a mapping file reads (`{param: name}`), in order."""
    if isinstance(spec, dict):
        own = [spec["param"]] if isinstance(spec.get("param"), str) else []
        return [*own, *(name for value in spec.values() for name in _params_read(value))]
    if isinstance(spec, list):
        return [name for value in spec for name in _params_read(value)]
    return []
