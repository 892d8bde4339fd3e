"""A Jinja2 environment that admin-uploaded templates can neither escape nor exhaust.

On top of Jinja's `ImmutableSandboxedEnvironment` (no `_` attributes, no mutation of lists and
dicts), every way a template could reach Python or take unbounded time or memory is closed:

- internals: an unsafe attribute raises at once (Jinja's default prints it as empty), and
  `include`, `import` and `extends` are refused when a template is compiled;
- calls: only macros, the few globals (`range`, `dict`, `namespace`, `cycler`, `joiner`) and
  an allowlist of plain string/dict/list methods; everything else is a SecurityError;
- memory: `*`, `**`, `+` and `%` are checked before they run, and so is every value that a
  filter, a call, `~` or `{{ }}` turns into text (a nested list shared with itself prints
  exponentially); an iterator handed to a filter is listed (bounded) first, so it is measured
  like a list; filters that pad or repeat take bounded widths, and those whose result can be
  many times their arguments (`join`, `replace`, `indent`) have it computed before they run;
  output is counted as it is produced, the whole part's and every captured one's (`{% set %}`
  and `{% filter %}` blocks, macro and call bodies: `_Output`), and stops at
  `MAX_OUTPUT_CHARS`; an allocation that fails anyway is a limit, not a crash;
- time: rendering runs under a step budget (Python trace events) and a deadline, so nested
  `range` loops or recursive macros stop with an error instead of running for ever; C code
  the trace never sees is linear in what it is given (`urlize` is `links.py`'s: Jinja's
  backtracks quadratically on a run of dots).
"""

from __future__ import annotations

import _weakrefset
import asyncio
import contextlib
import contextvars
import itertools
import math
import sys
import time
import weakref
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    Sized,
    ValuesView,
)
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import wraps
from types import FrameType
from typing import Any, ParamSpec, TypeVar

import jinja2
from jinja2 import ChainableUndefined, Environment, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.utils import Cycler, Joiner, Namespace, missing

from gateway.errors import RateLimited
from gateway.notify.links import urlize

MAX_OUTPUT_CHARS = 256 * 1024
"""Characters of one rendered part (and of any string a template builds)."""
MAX_VALUE_NODES = 20_000
"""Values (list items, dict members, nested) in one structure a template prints or passes on."""
MAX_WIDTH = 1_000
"""Width or count argument of a filter that pads or repeats (center, indent, batch, ...)."""
MAX_STEPS = 500_000
"""Python trace events one render may cost (a short e-mail costs a few thousand)."""
MAX_SECONDS = 1.0
"""CPU time one render may take (its thread's: a machine busy with other work does not make
a cheap template fail; wall-clock time failed the demo's sample under load)."""

_METHODS: Mapping[type, frozenset[str]] = {
    str: frozenset(
        "capitalize casefold count endswith find isalnum isalpha isdigit islower isnumeric "
        "isspace istitle isupper lower lstrip partition rfind rpartition rsplit rstrip split "
        "splitlines startswith strip swapcase title upper".split()
    ),
    dict: frozenset({"get", "items", "keys", "values"}),
    list: frozenset({"count", "index"}),
    LoopContext: frozenset({"cycle", "changed"}),
    Cycler: frozenset({"next", "reset"}),
}
_GLOBALS: Mapping[str, Any] = {
    "range": safe_range,
    "dict": dict,
    "namespace": Namespace,
    "cycler": Cycler,
    "joiner": Joiner,
}
_CALLABLE_TYPES = (Macro, Joiner)
_MAX_BITS = 4096
_WIDTH_FILTERS = frozenset({"center", "indent", "wordwrap", "batch", "slice", "truncate"})
_DROPPED_FILTERS = ("format", "random", "filesizeformat", "xmlattr")
# Jinja's own runs a regular expression in C that can take seconds on a field of dots.
_REPLACED_FILTERS: Mapping[str, Callable[..., Any]] = {"urlize": urlize}
_STANDALONE = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


RENDER_ERRORS: tuple[type[Exception], ...] = (
    jinja2.TemplateError,
    ArithmeticError,
    LookupError,
    TypeError,
    ValueError,
    # Jinja's own code raises these on bad arguments: `cycler()` without items is a
    # RuntimeError, `truncate(-1)` an AssertionError (RecursionError is `budget()`'s), and
    # filters given a value of another shape an AttributeError (`dictsort` on a list calls
    # its `items()`, `indent` on a list its `splitlines()`, `wordwrap` on a number). A sweep
    # of every filter and test over nulls, numbers, lists, dicts and strings finds no other
    # (tests/test_templates.py).
    AssertionError,
    AttributeError,
    RuntimeError,
)
"""What a template's own mistakes raise while it renders: a render failure, never a 500."""


COMPILE_LIMITS: tuple[type[Exception], ...] = (RecursionError, SyntaxError)
"""What compiling a template nested too deeply raises (Jinja's parser and code generator
recurse; Python refuses the code they write: `too many statically nested blocks`, `too many
levels of indentation`, `too many nested parentheses`): a `limit` problem, never a 500."""


def too_deep(exc: Exception) -> str:
    """The problem for a template that COMPILE_LIMITS refused."""
    why = f" ({exc.msg})" if isinstance(exc, SyntaxError) and exc.msg else ""
    return f"the template nests blocks, brackets or parentheses too deeply{why}"


class RenderLimit(Exception):
    """A render spent its budget: too many steps, too long, or too large an output."""


class BoundedUndefined(ChainableUndefined):
    """A missing value prints as nothing (`{{ driver.phone }}` with no phone) and chains
    (`{{ a.b.c }}`); `undefined_names` lists what was missing, for previews."""

    _member = False  # a member of a missing value (`driver.get`), not a missing name

    def __str__(self) -> str:
        _note_undefined(self._undefined_name)
        return ""

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__" and name[-2:] == "__":
            raise AttributeError(name)
        member = type(self)(self._undefined_hint, self._undefined_obj, self._undefined_name)
        member._member = True
        return member


# The names a render printed without a value; set by `budget()` for the render in progress.
_MISSING: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("missing", default=None)


def _note_undefined(name: str | None) -> None:
    missing = _MISSING.get()
    if missing is not None and name and name not in missing:
        missing.append(name)


def measure(value: Any, budget: int = MAX_VALUE_NODES) -> int:
    """Characters `value` will print as (roughly), visiting at most `budget` values; a
    structure larger than that raises RenderLimit before anything turns it into text."""
    size, stack = 0, [value]
    while stack:
        item = stack.pop()
        budget -= 1
        if budget < 0:
            raise RenderLimit(f"a value has more than {MAX_VALUE_NODES:,} parts")
        if isinstance(item, str):
            size += len(item)
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        else:
            size += 8
    if size > MAX_OUTPUT_CHARS:
        raise RenderLimit(f"a value of about {size:,} characters exceeds {MAX_OUTPUT_CHARS:,}")
    return size


def _guard_value(value: Any) -> Any:
    """A call's or a filter's result, measured when large; a null stays a null (`is none`)."""
    if isinstance(value, str):
        if len(value) > MAX_OUTPUT_CHARS:
            raise RenderLimit(f"a text of {len(value):,} characters exceeds {MAX_OUTPUT_CHARS:,}")
    elif not isinstance(value, int | float | bool | type(None) | BoundedUndefined):
        measure(value)
    return value


def _printed(value: Any) -> Any:
    """What `{{ value }}` prints: a JSON null as nothing, like a missing value ("Olá ," and
    not "Olá None," for a recipient without a name); a function, method or generator its kind
    only (its repr carries a memory address, `<built-in method upper of str object at
    0x7f...>`); anything large measured first. Only the printing: inside an expression a null
    is still one (`{% if d.get('x') is none %}`)."""
    if value is None:
        return ""
    if isinstance(value, Undefined | str):
        return value
    if callable(value) or isinstance(value, Iterator):
        return f"<{type(value).__name__}>"
    return _guard_value(value)


class _Generator(CodeGenerator):
    """Jinja's code generator, with `a ~ b` measuring its parts before joining them, and
    infinite or NaN constants (`1e999`, `'inf'|float` folded at compile time) written as
    values: Jinja writes `str(value)`, i.e. the unknown names `inf` and `nan`."""

    def visit_Const(self, node: nodes.Const, frame: Frame) -> None:
        value = node.as_const(frame.eval_ctx)
        if isinstance(value, float) and not math.isfinite(value):
            self.write(f"float({str(value)!r})")
        else:
            super().visit_Const(node, frame)

    # A list, tuple or dict a template writes is measured as it is built: `{% set ns.x =
    # [ns.x, ns.x] %}` sixty times is a value of 2**60 parts that only a few lists hold, and
    # comparing two of them (`==`, `is eq`, `in`) is C code no step budget or deadline stops.
    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.guard_literal(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.guard_literal(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # the names of `{% for a, b in ... %}`
            super().visit_Tuple(node, frame)
            return
        self.write("environment.guard_literal(")
        super().visit_Tuple(node, frame)
        self.write(")")

    def buffer(self, frame: Frame) -> None:
        """A captured output (`{% set x %}`, `{% filter %}`, a macro's or a call block's body)
        is collected in an `_Output`, counted as it grows: the chunks of a loop, each
        measured alone, were joined unmeasured at the end."""
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.output()")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"{join}(environment.guard_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _Generator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *, autoescape: bool, filters: Mapping[str, Callable[..., Any]]) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=BoundedUndefined,
            finalize=_printed,
            auto_reload=False,
            cache_size=0,
        )
        self.globals.clear()
        self.globals.update(_GLOBALS)
        for name in _DROPPED_FILTERS:
            self.filters.pop(name, None)
        self.filters.update(_REPLACED_FILTERS)
        self.filters.update(filters)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self._safe_functions = frozenset(id(f) for f in _GLOBALS.values())

    # -- reaching Python ---------------------------------------------------------------------

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed"
        )

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        if isinstance(obj, Undefined):
            # A member of a value (`driver.get(...)`, `fine.items()`) is missing because the
            # data is (a render failure, like `1/0`); a bare name no data can make callable.
            member = isinstance(obj, BoundedUndefined) and obj._member
            if member or obj._undefined_obj is not missing:
                obj._fail_with_undefined_error()
            raise SecurityError(f"{obj._undefined_name or 'a value'} is undefined: not callable")
        if not self._allowed_call(obj):
            name = getattr(obj, "__name__", type(obj).__name__)
            raise SecurityError(f"calling {name}() is not allowed in templates")
        measure((args, kwargs))
        return _guard_value(context.call(obj, *args, **kwargs))

    def _allowed_call(self, obj: Any) -> bool:
        if isinstance(obj, _CALLABLE_TYPES) or id(obj) in self._safe_functions:
            return True
        owner = getattr(obj, "__self__", None)
        name = getattr(obj, "__name__", "")
        allowed = next((m for t, m in _METHODS.items() if isinstance(owner, t)), frozenset())
        return name in allowed and callable(obj)

    # -- operators ---------------------------------------------------------------------------

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise SecurityError("'%' formatting is not allowed in templates; use filters")
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left).bit_length() * abs(right) > _MAX_BITS:
                raise RenderLimit(f"a power of more than {_MAX_BITS} bits")
        if operator == "*":
            _check_product(left, right)
        if operator == "+" and not (_number(left) and _number(right)):
            measure([left, right])
        return super().call_binop(context, operator, left, right)

    @staticmethod
    def output() -> _Output:
        return _Output()

    @staticmethod
    def concat(chunks: Iterable[str]) -> str:
        """Every output Jinja joins (a buffer, a block's chunks) as `bounded_text` does."""
        return _joined(chunks)

    def guard_literal(self, value: _T) -> _T:
        measure(value)
        return value

    def guard_parts(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        measure([p for p in parts if not isinstance(p, BoundedUndefined)])
        return parts


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_product(left: Any, right: Any) -> None:
    if _number(left) and _number(right):
        if isinstance(left, int) and isinstance(right, int):
            if abs(left).bit_length() + abs(right).bit_length() > _MAX_BITS:
                raise RenderLimit(f"a product of more than {_MAX_BITS} bits")
        return
    times, seq = (left, right) if _number(left) else (right, left)
    if _number(times) and isinstance(seq, str | list | tuple):
        if times > 0 and max(measure(seq), len(seq)) * times > MAX_OUTPUT_CHARS:
            raise RenderLimit(f"repeating a value {times} times exceeds {MAX_OUTPUT_CHARS:,}")


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Filters see measured arguments (an iterator listed first, so it is measured like a
    list), bounded widths, a result whose size is computed before it is built where the
    filter repeats an argument in it (`_REPEATED`), and give measured results."""
    repeated = _REPEATED.get(name, ())

    @wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        args = tuple(_listed(a) for a in args)
        kwargs = {k: _listed(v) for k, v in kwargs.items()}
        values = [a for a in args if not isinstance(a, Context | EvalContext | Environment)]
        measure((values, kwargs))
        if name in _WIDTH_FILTERS:
            for arg in [*values[1:], *kwargs.values()]:
                if _number(arg) and abs(arg) > MAX_WIDTH:
                    raise RenderLimit(f"{name}: a width or count of {arg} exceeds {MAX_WIDTH:,}")
        if repeated and values:
            size = _size(values[0]) + sum(r.most(values[0], values[1:], kwargs) for r in repeated)
            if size > MAX_OUTPUT_CHARS:
                raise RenderLimit(f"{name}: the result exceeds {MAX_OUTPUT_CHARS:,} characters")
        return _guard_value(func(*args, **kwargs))

    return guarded


def _listed(value: Any) -> Any:
    """An iterator (a generator, `map`, `select`, `reverse`) as the list of its items, at most
    MAX_VALUE_NODES of them: what a filter builds from it is then measured before it is built,
    as it is for a list. Anything else as it is (a loop's `loop` too: listing it would end
    the loop)."""
    if not isinstance(value, Iterator) or isinstance(value, LoopContext):
        return value
    items = list(itertools.islice(value, MAX_VALUE_NODES + 1))
    if len(items) > MAX_VALUE_NODES:
        raise RenderLimit(f"a value has more than {MAX_VALUE_NODES:,} parts")
    return items


def _size(value: Any) -> int:
    """Characters a filter's value prints as (roughly); a range or a dict's view, which
    `measure` sees as one value, counts its items."""
    if isinstance(value, range | KeysView | ValuesView | ItemsView):
        return 8 * len(value)
    return measure(value)


_Places = Callable[[Any, list[Any], Mapping[str, Any]], int]


@dataclass(frozen=True, slots=True)
class _Repeat:
    """An argument a filter writes into its result again and again: the `at`th after the
    value, or the one named `name` (else `default`), at most `places` times. A text counts
    its characters, a number that many spaces (an indentation)."""

    at: int
    name: str
    default: Any
    places: _Places

    def most(self, value: Any, given: list[Any], named: Mapping[str, Any]) -> int:
        argument = given[self.at] if len(given) > self.at else named.get(self.name, self.default)
        if argument is None or argument is False:
            return 0
        if _number(argument):
            width = max(int(argument), 0)
        else:
            width = len(argument) if isinstance(argument, str) else measure(argument)
        return width * self.places(value, given, named) if width else 0


def _between_items(value: Any, given: list[Any], named: Mapping[str, Any]) -> int:
    return max(len(value) - 1, 0) if isinstance(value, Sized) else 0


def _found(value: Any, given: list[Any], named: Mapping[str, Any]) -> int:
    """`replace(old, new)`: each `old` found, each gap for an empty one."""
    text = str(value)
    old = str(given[0] if given else named.get("old", ""))
    return text.count(old) if old else len(text) + 1


def _lines(value: Any, given: list[Any], named: Mapping[str, Any]) -> int:
    return len((str(value) + "\n").splitlines())


def _characters(value: Any, given: list[Any], named: Mapping[str, Any]) -> int:
    """At most one line for each character (`wordwrap(1)` breaks every word)."""
    return len(str(value)) + 1


def _words(value: Any, given: list[Any], named: Mapping[str, Any]) -> int:
    """`urlize`: at most one link for each word."""
    return len(str(value).split())


def _levels(value: Any, given: list[Any], named: Mapping[str, Any]) -> int:
    """`tojson(indent)`: every value and closing bracket on a line of its own, indented once
    for each level it is nested in (measured already: at most MAX_VALUE_NODES values)."""
    total, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
            total += 2 * depth + len(item)  # the closing bracket and each key's line
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
            total += 2 * depth
        else:
            total += depth
    return total


_REPEATED: Mapping[str, tuple[_Repeat, ...]] = {
    "join": (_Repeat(0, "d", "", _between_items),),
    "replace": (_Repeat(1, "new", "", _found),),
    "indent": (_Repeat(0, "width", 4, _lines),),
    "wordwrap": (_Repeat(2, "wrapstring", "\n", _characters),),
    "urlize": (_Repeat(2, "target", None, _words), _Repeat(3, "rel", None, _words)),
    "tojson": (_Repeat(0, "indent", None, _levels),),
}
"""Every filter that writes one of its arguments into its result more than once (a
separator, an indentation, a wrapstring, a link's target): the result is at most the value's
size plus each such argument as many times as it can be placed, computed before the filter
builds it. (`tests/test_templates.py` gives every text and number argument of every filter a
huge value, so one missing here is found.)"""


class _Output(list[str]):
    """An output as a template produces it (a part's, or a block's it captures), counted as it
    grows: past MAX_OUTPUT_CHARS, RenderLimit before the chunk is added."""

    __slots__ = ("_size",)

    def __init__(self) -> None:
        super().__init__()
        self._size = 0

    def append(self, chunk: str) -> None:
        self._size += len(chunk) if isinstance(chunk, str) else measure(chunk)
        if self._size > MAX_OUTPUT_CHARS:
            raise RenderLimit(f"the output exceeds {MAX_OUTPUT_CHARS:,} characters")
        super().append(chunk)

    def extend(self, chunks: Iterable[str]) -> None:
        for chunk in chunks:
            self.append(chunk)


def _joined(chunks: Iterable[str]) -> str:
    """The chunks joined, counted as they come (an `_Output`'s were counted already)."""
    if isinstance(chunks, _Output):
        return "".join(chunks)
    out = _Output()
    out.extend(chunks)
    return "".join(out)


_CALLBACK_FILES = frozenset({weakref.__file__, _weakrefset.__file__})
"""Where the garbage collector's callbacks run (a WeakValueDictionary's `remove`)."""

_P = ParamSpec("_P")
_T = TypeVar("_T")
# Renders run here, not on the event loop: a template that spends its whole budget (one viewer's
# preview of a slow draft) then costs the loop GIL switches, not a second of every request.
# What is sent (notifications, XML bodies) and what an author tries (previews, test sends, the
# test render of a save, dry runs) have threads of their own: a viewer's twelve previews of a
# slow draft queued every tenant's notifications behind them (2 s for a one-line preview).
_RENDERERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="render")
_PREVIEWS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="preview")
MAX_WAITING_PREVIEWS = 8
"""A tenant's previews run one at a time; past this many waiting, one is refused (429)."""
_PREVIEW_OF: contextvars.ContextVar[str | None] = contextvars.ContextVar("preview", default=None)


@dataclass(slots=True)
class _Turn:
    """One tenant's previews: the one rendering holds `lock`; `users` counts it and those
    waiting for it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Turn]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.contextmanager
def previewing(tenant: str) -> Iterator[None]:
    """The renders `off_loop` runs in this block are the tenant's previews: they run on the
    preview threads, one of the tenant's at a time."""
    token = _PREVIEW_OF.set(tenant)
    try:
        yield
    finally:
        _PREVIEW_OF.reset(token)


async def off_loop(render: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """`render(*args, **kwargs)` (a compile that test-renders, or a render) on a render thread,
    in this task's context; two at a time, the others wait their turn. Within `previewing`,
    on a preview thread instead, one of the tenant's at a time (others' take the second
    thread), at most MAX_WAITING_PREVIEWS of the tenant's waiting (RateLimited past them)."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    tenant = _PREVIEW_OF.get()
    if tenant is None:
        return await loop.run_in_executor(_RENDERERS, lambda: context.run(render, *args, **kwargs))
    turns = _TURNS.setdefault(loop, {})
    turn = turns.setdefault(tenant, _Turn())
    if turn.users > MAX_WAITING_PREVIEWS:
        raise RateLimited(
            f"{MAX_WAITING_PREVIEWS} previews of this tenant are waiting their turn; retry shortly"
        )

    def done(_: object = None) -> None:  # on the loop, once the render ended (or never began)
        turn.users -= 1
        turn.lock.release()
        if not turn.users:
            turns.pop(tenant, None)

    turn.users += 1
    try:
        await turn.lock.acquire()
    except BaseException:
        turn.users -= 1
        if not turn.users:
            turns.pop(tenant, None)
        raise
    try:
        rendered = loop.run_in_executor(_PREVIEWS, lambda: context.run(render, *args, **kwargs))
    except BaseException:
        done()
        raise
    # Released when the render ends, not when a cancelled caller stops waiting for it: the
    # tenant never has two renders on the preview threads.
    rendered.add_done_callback(done)
    return await rendered


@contextlib.contextmanager
def budget(steps: int = MAX_STEPS, seconds: float = MAX_SECONDS) -> Iterator[list[str]]:
    """Trace the render in this block: over `steps` events or past `seconds`, RenderLimit is
    raised where the template is. Yields the names of undefined values met while rendering.
    Rendering is synchronous and the trace is the thread's (`off_loop`), so it never sees
    another task's frames."""
    left = [steps]
    deadline = time.thread_time() + seconds
    over: list[RenderLimit] = []

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        left[0] -= 1
        if not over and left[0] < 0:
            over.append(RenderLimit(f"rendering took more than {steps:,} steps"))
        if not over and left[0] & 1023 == 0 and time.thread_time() > deadline:
            over.append(RenderLimit(f"rendering took more than {seconds:g} s of CPU"))
        # Raised in the render's own frames, not in a callback the garbage collector runs
        # meanwhile (a weakref's): there it would be swallowed, the render going on.
        if over and frame.f_code.co_filename not in _CALLBACK_FILES:
            raise over[0]
        return trace

    previous = sys.gettrace()
    missing: list[str] = []
    token = _MISSING.set(missing)
    sys.settrace(trace)
    try:
        yield missing
    except RecursionError:
        raise RenderLimit("rendering recursed too deeply") from None
    except MemoryError:  # a value no guard foresaw, larger than the memory there is
        raise RenderLimit("rendering ran out of memory") from None
    finally:
        sys.settrace(previous)
        _MISSING.reset(token)


def bounded_text(chunks: Iterator[str]) -> str:
    """Join a template's output as it is produced; stop past MAX_OUTPUT_CHARS."""
    return _valid_text(_joined(chunks))


def _valid_text(text: str) -> str:
    """`text` as UTF-8 can carry it: a template's `'\\ud83d\\ude00'` is one character (the pair
    joined), a lone surrogate (`'\\ud800'`) U+FFFD. Either one made the answer, the e-mail or
    the XML body fail to encode: a 500 on preview and save, a send that could never succeed."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def refusals(tree: nodes.Template, *, escaping: bool = False) -> list[tuple[int, str]]:
    """What a parsed template may not do, as (line, why): include, import or extend another
    (templates stand alone), name anything starting with `_` (Python internals); with
    `escaping`, turn autoescape off (`{% autoescape false %}`: every value stays escaped)."""
    kinds: tuple[type[nodes.Node], ...] = (nodes.Getattr, nodes.Getitem, *_STANDALONE)
    if escaping:
        kinds += (nodes.EvalContextModifier,)  # {% autoescape %} (and its scoped form)
    found = []
    for node in tree.find_all(kinds):
        if why := _refused(node):
            found.append((node.lineno, why))
    return found


def _refused(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.EvalContextModifier):
        return "autoescape cannot be turned off: every value is escaped"
    if isinstance(node, _STANDALONE):
        return "templates stand alone: include, import and extends are not available"
    name = None
    if isinstance(node, nodes.Getattr):
        name = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        name = node.arg.value if isinstance(node.arg.value, str) else None
    if name is not None and name.startswith("_"):
        return f"{name!r}: names starting with '_' reach Python internals and are refused"
    return None
