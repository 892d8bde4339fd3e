"""JSON nested at most MAX_DEPTH deep (SPEC §7), for bodies and for JSON inside a field."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Final, TypeGuard

import orjson

from .refusal import DocumentRefused

MAX_DEPTH: Final = 32
# How deep a partner's answer is read. orjson writes 254 levels and no more, and every answer
# read is written again inside a document of the gateway's own (a proxy call's `data`, a flow
# run's `steps`, a schedule's page): an answer any deeper is not JSON the gateway can use.
ANSWER_DEPTH: Final = 200
# An integer of 19 digits or more may be outside BSON's 64-bit range (orjson turns one past
# 2**64 into a float, losing digits, and one past 2**63 - 1 into an int BSON cannot store);
# only a document that has such a run is read again. The digits are found by
# translating every byte to "0" (a digit) or " ", at C speed: a regular expression costs ten
# times more on the partners' hot path.
_DIGIT_MAP: Final = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN: Final = b"0" * 19
_FLOAT: Final = (b".", b"e", b"E")  # what follows the digits of a number that is no integer
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
# The end of an object member's name: its closing quote, blanks, a colon. Every member has
# one; text inside a string can add more (`"a\": b"`), never fewer. Without a blank before
# any colon (as JSON writers write), a name's end is `":` and a count finds them all.
_NAME_END: Final = re.compile(rb'"[ \t\n\r]*:')
_BLANK_COLON: Final = re.compile(rb"[ \t\n\r]:")
MAX_INT_DIGITS: Final = 4300
"""Python reads and writes no longer integer text (`sys.get_int_max_str_digits`)."""


class WideInt(str):
    """A JSON integer outside the 64-bit signed range, as `loads_exact` reads one: its exact
    decimal text, which is what is stored (BSON has no wider integer), written out (as a JSON
    string) and shown, but a number to every type check (`json_type`, `is_text`, the JSON
    Schema validation of `schemas/compiled.py`): where text is wanted it is refused as a
    narrow number is, and where any value is allowed (a free-form field) its digits are kept.
    A mapping's casts read it as the integer it is (`string` gives its digits)."""

    __slots__ = ()


def is_text(value: Any) -> TypeGuard[str]:
    """Whether `value` is a JSON string: a wide integer (`WideInt`) is a number."""
    return isinstance(value, str) and type(value) is not WideInt


def text_refused(value: Any, limit: int, *, nonblank: bool = False) -> str | None:
    """The JSON Schema keyword that refuses `value` as a text of at most `limit` characters
    (with `nonblank`, a required one with more than spaces), as the API's problems name it:
    `required` when a required text is absent or null (`None`: nothing given, as a form's
    field left empty), `type` when it is no string, `minLength` when empty, `pattern` when
    blank, `maxLength` when longer (a text is never "of the wrong type" for its length); None
    when it is such a text."""
    if value is None and nonblank:
        return "required"
    if not is_text(value):
        return "type"
    if nonblank and not value:
        return "minLength"
    if nonblank and not value.strip():
        return "pattern"
    return "maxLength" if len(value) > limit else None


def same_json(old: Any, new: Any) -> bool:
    """Whether two values are the same JSON value, at any depth: a number whatever its
    spelling (`1` and `1.0`), but `true` is no `1` nor `false` a `0`, though Python's `==`
    says they are (so a write from one to the other was once taken for no change at all)."""
    kind = type(old)
    if kind is type(new) and kind is not list and kind is not dict:
        return bool(old == new)  # the common case: two strings, two floats, ...
    if old != new:
        return False
    if isinstance(old, list):  # equal, so `new` is a list of as many items
        return all(map(same_json, old, new))
    if isinstance(old, dict):  # equal, so `new` has the same keys
        return all(same_json(value, new[key]) for key, value in old.items())
    return isinstance(old, bool) == isinstance(new, bool)


def json_type(value: Any) -> str:
    """The JSON name of a value's type, as messages name it: null, boolean, number, string,
    array or object (never Python's: dict, list, NoneType)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | WideInt):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list | tuple) else "object"


def a_json_type(value: Any) -> str:
    """`json_type` with its article, for a sentence: null, a boolean, an array, ..."""
    name = json_type(value)
    return name if name == "null" else ("an " if name[0] in "aeiou" else "a ") + name


SHOWN_CHARS: Final = 40
"""How much of a value a message quotes (`shown`): its first characters, then "..."."""


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A value as a message quotes it: compact JSON (`{"k":"v","z":null}`, `true`, `"a\\tb"`,
    never Python's `{'k': 'v', 'z': None}`), cut to `limit` characters ending in "…" (as
    `errors.clipped` marks a cut echo). Written
    piece by piece and stopped at the limit, so a large or deep value costs no more than that.
    What JSON has no word for is written as JavaScript does (NaN, Infinity); a date-time as
    its ISO text."""
    out: list[str] = []
    size = 0
    for piece in _pieces(value, lambda item: _scalar(item, limit)):
        out.append(piece)
        size += len(piece)
        if size > limit:
            return "".join(out)[: max(limit - 1, 0)] + "…"
    return "".join(out)


def _pieces(value: Any, scalar: Callable[[Any], str]) -> Iterator[str]:
    """`value` as JSON text, piece by piece: objects and arrays here, each key (as text) and
    every other value written by `scalar`."""
    if isinstance(value, Mapping):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield ("," if i else "") + scalar(str(key)) + ":"
            yield from _pieces(item, scalar)
        yield "}"
    elif isinstance(value, list | tuple):
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ","
            yield from _pieces(item, scalar)
        yield "]"
    else:
        yield scalar(value)


def _scalar(value: Any, limit: int) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # past sys.get_int_max_str_digits: Python writes no such text
            return "(an integer of over 4,300 digits)"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else _NOT_FINITE[str(value)]
    if isinstance(value, datetime | date):
        return json.dumps(value.isoformat())
    if type(value) is WideInt:
        return str(value[: limit + 1])  # a number: its digits, unquoted
    text = value if isinstance(value, str) else str(value)
    return json.dumps(text[: limit + 1], ensure_ascii=False)  # past the limit: cut anyway


_NOT_FINITE: Final = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def loads_exact(raw: bytes | str) -> Any:
    """Parsed JSON (orjson.JSONDecodeError when malformed) whose integers outside the 64-bit
    signed range are their exact decimal text, as `WideInt` (a number to type checks): an
    ERP's 25-digit id keeps every digit, and the tree can be stored (BSON has no wider
    integer). So for a document that is one bare number, and at any depth orjson reads (it
    refuses past 1,024 levels; past the standard library's depth, which every reader refuses
    as nested too deep, they are plain text). Whatever orjson refuses stays refused: only
    what it accepted is read again."""
    data = orjson.loads(raw)
    text = raw if isinstance(raw, bytes) else raw.encode()  # valid UTF-8: orjson read it
    digits = text.translate(_DIGIT_MAP)
    if _LONG_RUN not in digits or not _past_int64(text, digits):
        return data
    try:
        return json.loads(raw, parse_int=_int_or_text)
    except RecursionError:  # past the standard library's depth (under 1,000 levels)
        return orjson.loads(_quoted(text, digits))


def _past_int64(text: bytes, digits: bytes) -> bool:
    """Whether a run of 19 digits or more (`digits`: `text` translated) could be an integer
    outside the 64-bit range: one of 20 digits or more, or of 19 past 2**63 - 1. A 19-digit
    nanosecond timestamp is not: the document is not read twice for it."""
    return any(end - at > 19 or int(text[at:end]) > INT64_MAX for at, end in _long_runs(digits))


def _long_runs(digits: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of each run of 19 digits or more in `digits` (a text translated)."""
    at = digits.find(_LONG_RUN)
    while at >= 0:
        end = digits.find(b" ", at)
        end = len(digits) if end < 0 else end
        yield at, end
        at = digits.find(_LONG_RUN, end)


def _int_or_text(text: str) -> int | str:
    if len(text.lstrip("-")) > 19:  # past int64 anyway (and past int()'s digit limit)
        return WideInt(text)
    number = int(text)
    return number if INT64_MIN <= number <= INT64_MAX else WideInt(text)


TOO_WIDE: Final = "is an integer beyond 64 bits (the database holds none)"


def holds_wide_integers(value: Any) -> bool:
    """Whether a parsed document holds a `WideInt`: orjson refuses it (a subclass of str)
    with OPT_PASSTHROUGH_SUBCLASS, at C speed; only a document it refuses is walked."""
    try:
        orjson.dumps(value, option=orjson.OPT_PASSTHROUGH_SUBCLASS)
    except TypeError:
        return next(wide_integers(value), None) is not None
    return False


def wide_integers(value: Any) -> Iterator[tuple[str, WideInt]]:
    """(JSON Pointer, value) of each `WideInt` in a parsed document, walked without
    recursion."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, at = stack.pop()
        kind = type(node)
        if kind is WideInt:
            yield at, node
        elif kind is dict:
            stack.extend((item, f"{at}/{_escaped(str(key))}") for key, item in node.items())
        elif kind is list:
            stack.extend((item, f"{at}/{index}") for index, item in enumerate(node))


def _escaped(key: str) -> str:
    """A member name in a JSON Pointer (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def as_numbers(value: Any) -> Any:
    """`value` with each `WideInt` the integer it is (for a validator that compares numbers);
    the same object when it holds none."""
    kind = type(value)
    if kind is WideInt:
        return _as_number(value)
    if kind is dict:
        items = {key: as_numbers(item) for key, item in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else items
    if kind is list:
        listed = [as_numbers(item) for item in value]
        return value if all(a is b for a, b in zip(listed, value, strict=True)) else listed
    return value


def as_number(value: Any, *, stored: bool = False) -> int | float | None:
    """The number a JSON value is, to order it (a condition's `gt`, an only-forward field):
    an int or a float (never a bool), a wide integer (`WideInt`) the integer it is; None
    for any other value. With `stored`, a value as the database holds it: a wide integer is
    stored as its text, so an integer's digits outside the 64-bit range (no JSON number
    past it is written otherwise) are that integer too."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if not isinstance(value, str):
        return value
    if type(value) is WideInt or (stored and _wide_text(value)):
        return _as_number(value)
    return None


def _wide_text(text: str) -> bool:
    """Whether `text` is what the database stores for a `WideInt`: an integer's digits as
    JSON writes them (no leading zero), outside the 64-bit range."""
    digits = text[1:] if text.startswith("-") else text
    if not digits.isascii() or not digits.isdigit() or digits[0] == "0" or len(digits) < 19:
        return False
    return len(digits) > 19 or not INT64_MIN <= int(text) <= INT64_MAX


def _as_number(wide: str) -> int:
    """The integer a `WideInt` (or its text) is; one of over 4,300 digits (which Python
    reads from no text, nor a validator from Python) as ±10**4299, as far from every bound
    a schema writes."""
    if len(wide.lstrip("-")) <= MAX_INT_DIGITS:
        return int(wide)
    far: int = 10 ** (MAX_INT_DIGITS - 1)
    return -far if wide.startswith("-") else far


def dumps_exact(value: Any) -> bytes:
    """`value` as the JSON text `loads_exact` reads back as it is: each `WideInt` (and a
    Python int past 64 bits, which a mapping's items may make) written as the number it is,
    its digits unquoted. orjson writes a `WideInt` as a JSON string, which is text to whoever
    reads it again (a kept payload's replay), or refuses the int; only then is the value
    written piece by piece."""
    try:
        return orjson.dumps(value, option=orjson.OPT_PASSTHROUGH_SUBCLASS)
    except TypeError:  # orjson.JSONEncodeError
        return "".join(_pieces(value, _exact_scalar)).encode()


def _exact_scalar(value: Any) -> str:
    if type(value) is WideInt or type(value) is int:  # an int past 64 bits too
        return str(value)
    return orjson.dumps(value).decode()


def as_texts(value: Any) -> Any:
    """`value` with each `WideInt` plain text, as the database stores it."""
    kind = type(value)
    if kind is WideInt:
        return str(value)
    if kind is dict:
        return {key: as_texts(item) for key, item in value.items()}
    if kind is list:
        return [as_texts(item) for item in value]
    return value


def _quoted(text: bytes, digits: bytes) -> bytes:
    """Valid JSON `text` with its integers outside the 64-bit range quoted (strings for
    orjson, as `_int_or_text` makes them), for a document too deep for the standard
    library: it reads them as orjson does, at C speed (twice the standard library's time
    on a page of wide ids, hence not the first choice)."""
    parts: list[bytes] = []
    last = 0
    for start, end in _wide_integers(text, digits):
        parts += (text[last:start], b'"', text[start:end], b'"')
        last = end
    parts.append(text[last:])
    return b"".join(parts)


def _wide_integers(text: bytes, digits: bytes) -> list[tuple[int, int]]:
    """Where the integers outside the 64-bit range are in valid JSON `text` (`digits`: it
    translated), sign included: runs of 19 digits or more outside strings, not a fraction's
    or an exponent's, of 20 digits or more or past the range. A 19-digit nanosecond time is
    not one, nor digits inside a string (a phone number, a barcode)."""
    wide: list[tuple[int, int]] = []
    plain = b""  # `text` of the same length, escaped backslashes and quotes blanked: made
    inside, counted = False, 0  # for the first run past the range (a 19-digit time is not)
    for at, end in _long_runs(digits):
        start = at - 1 if text[at - 1 : at] == b"-" else at
        before, after = text[start - 1 : start], text[end : end + 1]
        if before not in (*_FLOAT, b"+", b"-") and after not in _FLOAT:
            number = int(text[at:end]) if end - at <= 19 else None
            if number is None or number > (INT64_MAX if start == at else -INT64_MIN):
                if not plain:  # each quote left opens or closes a string
                    plain = text.replace(b"\\\\", b"__").replace(b'\\"', b"__")
                inside ^= plain.count(b'"', counted, at) % 2 == 1
                counted = at
                if not inside:
                    wide.append((start, end))
    return wide


def json_depth_exceeds(raw: bytes | str, data: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether parsed JSON nests deeper than `limit`. Counting brackets in the raw text is
    a C-speed upper bound on depth: only a suspicious document is walked."""
    opening = raw.count(b"{") + raw.count(b"[") if isinstance(raw, bytes) else _brackets(raw)
    return opening > limit and depth(data, limit) > limit


def load_json_text(text: str) -> Any:
    """Any JSON value from text; DocumentRefused (with its line and column) when malformed,
    nested deeper than MAX_DEPTH, or naming a member twice in one object."""
    try:
        data = loads_exact(text)
    except orjson.JSONDecodeError as exc:
        raise DocumentRefused(exc.msg, exc.lineno, exc.colno) from None
    if json_depth_exceeds(text, data):
        raise DocumentRefused(f"nested deeper than {MAX_DEPTH} levels")
    if (name := repeated_member(text, data)) is not None:
        raise DocumentRefused(repeated_message(name))
    return data


def repeated_member(raw: bytes | str, data: Any) -> str | None:
    """The name of a member that an object of `raw` (parsed: `data`, nested at most
    MAX_DEPTH) gives twice, or None. JSON readers keep the last one (orjson, the standard
    library), so what would be stored is not what was sent, and a reader before the gateway
    (a partner's own check, a proxy) may have taken the first: RFC 8259 §4, RFC 7493 §2.3.
    The name ends counted in the raw text bound the members from above, at C speed: only a
    document with more of them than its parsed objects hold members is read again, pair by
    pair."""
    text = raw if isinstance(raw, bytes) else raw.encode()
    if _BLANK_COLON.search(text):
        ends = len(_NAME_END.findall(text))
    else:
        ends = text.count(b'":')
    if ends == _members(data):
        return None
    repeated: list[str] = []

    def pairs(members: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [name for name, _ in members]
        if len(set(names)) < len(names) and not repeated:
            repeated.append(next(n for i, n in enumerate(names) if n in names[:i]))
        return {}

    try:
        json.loads(text, object_pairs_hook=pairs, parse_int=str, parse_float=str)
    except RecursionError:  # deeper than any reader accepts: refused for that by each
        return None
    return repeated[0] if repeated else None


def loads_sent(raw: bytes | str) -> Any:
    """`loads_exact` for a document a person or a partner wrote (a form's JSON field):
    ValueError (orjson.JSONDecodeError when malformed) for a member named twice too."""
    data = loads_exact(raw)
    if (name := repeated_member(raw, data)) is not None:
        raise ValueError(repeated_message(name))
    return data


def repeated_message(name: str) -> str:
    return (
        f"the member {json.dumps(name, ensure_ascii=False)} is given twice in one object "
        "(which one counts would be a guess)"
    )


def _members(value: Any) -> int:
    """How many members the objects of a parsed document hold, nested ones included. By
    exact type (a parser makes plain dicts and lists) and by recursion (nested at most
    MAX_DEPTH): this runs on every body, and `isinstance` with a union, or a work list,
    costs several times more."""
    count = 0
    if type(value) is dict:
        count = len(value)
        value = value.values()
    elif type(value) is not list:
        return 0
    for child in value:
        if type(child) is dict or type(child) is list:
            count += _members(child)
    return count


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """The nesting of objects and arrays (a scalar is 0, `{}` is 1), walked up to past
    `limit` only."""
    # Level by level (a batch of 500 fixes is two levels, not 501 nodes pushed and popped).
    level = [value] if isinstance(value, dict | list) else []
    deepest = 0
    while level and deepest <= limit:
        deepest += 1
        below: list[Any] = []
        for node in level:
            children = node.values() if isinstance(node, dict) else node
            below.extend(c for c in children if isinstance(c, dict | list))
        level = below
    return deepest


def _brackets(text: str) -> int:
    return text.count("{") + text.count("[")


def at_path(tree: Any, dotted: str) -> Any:
    """The value at a dotted path of objects (`last_position.time`), None where a part is
    missing or not an object."""
    value = tree
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


# Paths. A field is named by a path of member names, written joined by dots
# (`last_position.lat`); a member whose name a dot would split, or a bracket open (a flat
# key a partner sends: flespi's `engine.ignition.status`), or that is empty, is written in
# brackets as a JSON string: `attributes["fuel.card"]`, `attributes["engine.ignition.status"]`.
# Every other name is written bare, as paths always were. Paths are matched member by member.
_JSON_STRING: Final = json.JSONDecoder()


def path_key(prefix: str, key: str) -> str:
    """The path of member `key` of the object at `prefix` ("": the document): `prefix.key`,
    or `prefix["key"]` for a name with a dot or a bracket in it, or an empty one."""
    if key and "." not in key and "[" not in key:
        return f"{prefix}.{key}" if prefix else key
    return f"{prefix}[{json.dumps(key, ensure_ascii=False)}]"


def path_parts(path: str) -> tuple[tuple[str, ...], bool]:
    """The member names a path says, and whether exactly: True when it brackets a name
    (`attributes["fuel.card"]` is two names, `attributes.fuel` two more), False for a plain
    dotted path, whose parts are its dot-separated pieces (`attributes.fuel.card`), where
    a piece may also be part of one name with dots (`reaches`). A bracket that is not a
    JSON string (`["x"]`) or a single-quoted one (`['x']`) reads the path plainly, as a
    path written before brackets meant anything did (a name `a[0]`)."""
    if "[" not in path:
        return tuple(path.split(".")), False
    names: list[str] = []
    at, size = 0, len(path)
    while at < size:
        if path[at] == "[":
            quote = path[at + 1 : at + 2]
            if quote == '"':
                try:
                    name, end = _JSON_STRING.raw_decode(path, at + 1)
                except ValueError:
                    return tuple(path.split(".")), False
            elif quote == "'":
                end = path.find("'", at + 2) + 1
                name = path[at + 2 : end - 1] if end else None
            else:
                name = None
            if not isinstance(name, str) or path[end : end + 1] != "]":
                return tuple(path.split(".")), False
            names.append(name)
            at = end + 1
            if at < size and path[at] not in ".[":
                return tuple(path.split(".")), False
            if at < size and path[at] == ".":
                at += 1
                if at == size:
                    return tuple(path.split(".")), False
            continue
        end = min((i for i in (path.find(".", at), path.find("[", at)) if i >= 0), default=size)
        names.append(path[at:end])
        at = end + 1 if end < size and path[end] == "." else end
        if at == size and path.endswith("."):
            return tuple(path.split(".")), False
    return tuple(names), True


def reaches(tree: Any, path: str) -> Any:
    """The value at `path` (`path_parts`), None where nothing is: what a filter's `entity`
    reads. A plain dotted path reads nested members first (`attributes.fuel.card` is
    `attributes.fuel`'s `card`); where nothing is there, its dots may be in a name:
    `attributes.fuel.card` reaches `attributes["fuel.card"]`, the fewest names joined
    first. A bracketed path reads exactly the names it says."""
    return _reached(tree, *path_parts(path))


def _reached(tree: Any, parts: Sequence[str], exact: bool) -> Any:
    value = _exactly(tree, parts)
    if value is not None or exact or len(parts) < 2:
        return value
    return _joined(tree, parts, 0, set())


def _exactly(tree: Any, parts: Sequence[str]) -> Any:
    value = tree
    for part in parts:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _joined(node: Any, parts: Sequence[str], start: int, tried: set[tuple[int, int]]) -> Any:
    """`reaches` past the nested members: names made of one piece or more of `parts` from
    `start`. Each object is tried once from each piece (`tried`): a document with names
    of every join cannot make it try every way of joining."""
    if start == len(parts):
        return node
    if not isinstance(node, Mapping) or (id(node), start) in tried:
        return None
    tried.add((id(node), start))
    name = parts[start]
    for end in range(start + 1, len(parts) + 1):
        if end > start + 1:
            name = f"{name}.{parts[end - 1]}"
        if name in node and (found := _joined(node[name], parts, end, tried)) is not None:
            return found
    return None


def with_member(tree: Any, path: Sequence[str], value: Any, *, name: str) -> Any:
    """A copy of `tree` (called `name` in messages) with `value` at `path`: a member of an
    object, an object missing on the way added, or an item of an array, `0` its first. Raises
    ValueError naming the first member on the way that is neither an object nor an array
    holding that index (a text, a number, null, an array too short): placing the value would
    replace it, and with it what the body was meant to say. `tree` is not changed."""
    key, rest = path[0], path[1:]
    where = f"{name}.{key}"
    if isinstance(tree, dict):
        copy = dict(tree)
        copy[key] = with_member(tree.get(key, {}), rest, value, name=where) if rest else value
        return copy
    if isinstance(tree, list):
        index = int(key) if key.isascii() and key.isdigit() and str(int(key)) == key else None
        if index is None or index >= len(tree):
            raise ValueError(
                f"{name} is an array of {len(tree)} item(s): {key!r} is not the index of one"
            )
        items = list(tree)
        items[index] = with_member(tree[index], rest, value, name=where) if rest else value
        return items
    raise ValueError(
        f"{name} is {a_json_type(tree)}, not an object or an array: {key!r} cannot go into it"
    )


def change_reaches(field: str, target: str, values: tuple[Any, Any] | None = None) -> bool:
    """Whether a change at `field` (a change's path: `entities.diff`) changed the path
    `target` or a value under it: the one rule of a mapping's `announce: {changed: [...]}`, a
    subscription's or a flow's filter `changed` and a trigger's `expose`. Member by member
    (`path_parts`): a change to `attributes["fuel.card"]` is none to `attributes.fuel`.
    A change at or under the target does. So does one above it (`entities.diff` reports an
    object that appears, goes or stops being an object as ONE change at the object: a
    vehicle's first `last_position`) when the target's value differs between the change's
    old and new `values`; not given (the field a flow is yet to write), it may. A plain
    dotted target's dots may be in a name too: `attributes.fuel.card` is
    `attributes["fuel.card"]` where a change names that member (as every change did before
    names were bracketed, so a filter written for it keeps matching)."""
    if "[" not in field and "[" not in target:  # every ordinary path: as it always was
        if field == target or field.startswith(f"{target}."):
            return True
        if not target.startswith(f"{field}."):
            return False
        rest, exact = tuple(target[len(field) + 1 :].split(".")), False
    else:
        names = path_parts(field)[0]
        wanted, exact = path_parts(target)
        if exact:
            if names[: len(wanted)] == wanted:
                return True
            if wanted[: len(names)] != names:
                return False
            at: int | None = len(names)
        else:
            at = _matched(names, wanted)
            if at is None:
                return False
            if at == len(wanted):
                return True
        rest = wanted[at:]
    if values is None:
        return True
    return not same_json(_reached(values[0], rest, exact), _reached(values[1], rest, exact))


def _matched(names: Sequence[str], pieces: Sequence[str]) -> int | None:
    """How many of a plain target's dot-separated `pieces` the change path `names` holds
    (the target is the change's path, or above it: all of them; or under it: fewer), each
    name as many pieces as it has dots and one; None when they part."""
    at = 0
    for name in names:
        if at == len(pieces):
            return at
        end = at + name.count(".") + 1
        if end > len(pieces) or ".".join(pieces[at:end]) != name:
            return None
        at = end
    return at


def plain(value: Any) -> Any:
    """`value` as the JSON the API writes of it: times as RFC 3339 text, ids as text. Every
    context a mapping or a template reads is made of these (a flow run's, a subscription's
    delivery, a proxy call's, a trigger's read): a stored document holds datetimes, which
    no transform, cast or template reads, and which the JSON encoder alone hid everywhere
    else (`event.occurred_at` formatted by an action's mapping failed every delivery).
    Its values are a stored document's (BSON holds no integer past 64 bits) or JSON read by
    `loads_exact` (one past 64 bits is its text): orjson refuses a wider Python int."""
    return orjson.loads(orjson.dumps(value, default=str))


def plain_zeros(value: Any) -> Any:
    """`value` with every negative zero made 0.0, the same object when it has none. JSON means
    one zero, but Python, BSON and orjson keep the sign: a longitude or a speed of -0.0 (a
    device at Greenwich writing `-0.000000`, a mapping rounding -0.04) would be stored and
    answered as `-0.0`. Entity documents (`CompiledSchema.normalise`) and fixes
    (`fleet/fix.py`) pass here on their way to the database."""
    kind = type(value)
    if kind is float:
        return 0.0 if value == 0.0 and math.copysign(1.0, value) < 0 else value
    if kind is dict:
        changed: dict[str, Any] | None = None
        for key, item in value.items():
            zeroed = plain_zeros(item)
            if zeroed is not item:
                changed = changed if changed is not None else dict(value)
                changed[key] = zeroed
        return value if changed is None else changed
    if kind is list:
        items = [plain_zeros(item) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def whole_number(value: Any) -> int | None:
    """An integer as JSON Schema counts them (3 and 3.0) as an int, else None (true, 3.5,
    text): every integer setting an admin sends is read through here, so `600.0` meets the
    same bounds and caps as `600` and is stored as 600."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
