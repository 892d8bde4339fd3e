"""Notification templates: parts per channel type and language, compiled once, rendered in the
bounded sandbox (`sandbox.py`).

    compile_template(doc) -> CompiledTemplate        InvalidPayload lists every problem, each
                                                     with a pointer such as /locales/en/html
    CompiledTemplate.render(context, wanted_locale) -> Rendered(locale, parts, undefined)
                                                     RenderFailed carries the part and line

An upload renders every part once, with the document's `sample` or an empty context. Without a
sample only template-wide failures count (a loop that never ends, Python internals, an output
over the limit); with one, any error does, because that is the data the admin vouches for.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError

from gateway.errors import FieldProblem, InvalidPayload
from gateway.formats.json_tree import plain
from gateway.notify.formats import FILTERS
from gateway.notify.sandbox import (
    COMPILE_LIMITS,
    MAX_SECONDS,
    RENDER_ERRORS,
    BoundedEnvironment,
    RenderLimit,
    bounded_text,
    budget,
    refusals,
    too_deep,
)

CHANNEL_TYPES = ("email", "push", "sms")
LOCALES = ("pt-BR", "en")
PARTS: Mapping[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "push": ("title", "body"),
    "sms": ("text",),
}
REQUIRED: Mapping[str, tuple[str, ...]] = {
    "email": ("subject", "text"),
    "push": ("title", "body"),
    "sms": ("text",),
}
# Characters of a rendered part, where the medium has a limit of its own.
PART_LIMITS = {"subject": 255, "title": 200, "body": 2_000, "sms.text": 1_600}
ONE_LINE = frozenset({"subject", "title"})
MAX_SOURCE_CHARS = 64 * 1024
_TEXT = BoundedEnvironment(autoescape=False, filters=FILTERS)
_HTML = BoundedEnvironment(autoescape=True, filters=FILTERS)
_SPACES = re.compile(r"\s+")


class RenderFailed(InvalidPayload):
    """A template could not be rendered on this context (a recorded outcome at run time)."""

    title, slug = "Template failed", "template-failed"

    def __init__(self, detail: str, *, pointer: str, keyword: str, line: int | None) -> None:
        extra = {} if line is None else {"line": line}
        super().__init__(detail, [FieldProblem(pointer, detail, keyword, extra)])
        self.pointer, self.keyword, self.line = pointer, keyword, line

    def as_problem(self) -> FieldProblem:
        return self.problems[0]


@dataclass(frozen=True, slots=True)
class Rendered:
    locale: str
    parts: dict[str, str]
    undefined: list[str]  # names a part printed although the context lacked them


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    name: str
    channel_type: str
    default_locale: str
    locales: Mapping[str, Mapping[str, jinja2.Template]]

    def locale_for(self, wanted: str | None) -> str:
        return choose_locale(tuple(self.locales), wanted, self.default_locale)

    def render(self, context: Mapping[str, Any], wanted: str | None = None) -> Rendered:
        locale = self.locale_for(wanted)
        data = {**plain(context), "locale": locale}
        parts: dict[str, str] = {}
        missing: list[str] = []
        clock = _Deadline()
        for part, template in self.locales[locale].items():
            text, undefined = _render_part(template, data, f"/locales/{locale}/{part}", clock)
            parts[part] = _finish(self.channel_type, part, text, f"/locales/{locale}/{part}")
            missing += [n for n in undefined if n not in missing]
        return Rendered(locale, parts, missing)


def choose_locale(available: tuple[str, ...], wanted: str | None, default: str) -> str:
    """The exact language, else the same language of another region ("en-US" → "en",
    "pt" → "pt-BR"), else the template's default. A tag is read in any case and with `_`
    for `-` (`pt_BR`, as Java, Android and many HR systems write it)."""
    if not wanted:
        return default
    tag = wanted.replace("_", "-").lower()
    exact = [locale for locale in available if locale.lower() == tag]
    language = [locale for locale in available if _base(locale) == _base(tag)]
    return next(iter(exact + language), default)


def _base(tag: str) -> str:
    return tag.split("-")[0].lower()


def compile_template(doc: Mapping[str, Any]) -> CompiledTemplate:
    """A template document (`{name, channel_type, locales, default_locale?, sample?}`),
    already checked for its shape, compiled and test-rendered."""
    problems: list[FieldProblem] = []
    channel_type = doc["channel_type"]
    compiled: dict[str, dict[str, jinja2.Template]] = {}
    for locale, parts in doc["locales"].items():
        compiled[locale] = {}
        for part, source in parts.items():
            at = f"/locales/{locale}/{part}"
            template = _compile_part(part, source, at, problems)
            if template is not None:
                compiled[locale][part] = template
    if problems:
        raise InvalidPayload(f"template {doc['name']!r} is not valid", problems)
    result = CompiledTemplate(doc["name"], channel_type, doc["default_locale"], compiled)
    _test_render(result, doc.get("sample"), problems)
    if problems:
        raise InvalidPayload(f"template {doc['name']!r} fails on its sample", problems)
    return result


def _compile_part(
    part: str, source: str, at: str, problems: list[FieldProblem]
) -> jinja2.Template | None:
    if len(source) > MAX_SOURCE_CHARS:
        problems.append(FieldProblem(at, f"at most {MAX_SOURCE_CHARS:,} characters", "maxLength"))
        return None
    env = _HTML if part == "html" else _TEXT
    try:
        tree = env.parse(source)
        for line, why in refusals(tree):
            problems.append(FieldProblem(at, why, "security", {"line": line}))
        return env.from_string(tree)
    except jinja2.TemplateSyntaxError as exc:  # a syntax error, an unknown filter
        problems.append(FieldProblem(at, exc.message or str(exc), "syntax", {"line": exc.lineno}))
        return None
    except COMPILE_LIMITS as exc:
        problems.append(FieldProblem(at, too_deep(exc), "limit"))
        return None


def _test_render(template: CompiledTemplate, sample: Any, problems: list[FieldProblem]) -> None:
    context = sample if isinstance(sample, Mapping) else {}
    clock = _Deadline()
    for locale, parts in template.locales.items():
        data = {**plain(context), "locale": locale}
        for part, compiled in parts.items():
            at = f"/locales/{locale}/{part}"
            try:
                text, _ = _render_part(compiled, data, at, clock)
                _finish(template.channel_type, part, text, at)
            except RenderFailed as exc:
                if sample is not None or exc.keyword in ("limit", "security"):
                    problems.append(exc.as_problem())


class _Deadline:
    """One CPU budget (the rendering thread's) for every part of a template (subject, text,
    html; each locale when testing): six parts must not take six times MAX_SECONDS."""

    def __init__(self) -> None:
        self._until = time.thread_time() + MAX_SECONDS

    def left(self, at: str) -> float:
        seconds = self._until - time.thread_time()
        if seconds <= 0:
            limit = RenderLimit(f"rendering took more than {MAX_SECONDS:g} s")
            raise _failed(limit, at, "limit")
        return seconds


def _render_part(
    template: jinja2.Template, data: Mapping[str, Any], at: str, clock: _Deadline
) -> tuple[str, list[str]]:
    try:
        with budget(seconds=clock.left(at)) as undefined:
            text = bounded_text(template.generate(data))
        return text, list(undefined)
    except RenderLimit as exc:
        raise _failed(exc, at, "limit") from None
    except SecurityError as exc:
        raise _failed(exc, at, "security") from None
    except RENDER_ERRORS as exc:
        raise _failed(exc, at, "render") from None


def _failed(exc: BaseException, at: str, keyword: str) -> RenderFailed:
    message = f"{at.rsplit('/', 1)[-1]}: {exc}"
    return RenderFailed(message, pointer=at, keyword=keyword, line=_template_line(exc))


def _template_line(exc: BaseException) -> int | None:
    """The template line where it failed: Jinja maps its frames to template lines."""
    tb: TracebackType | None = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _finish(channel_type: str, part: str, text: str, at: str) -> str:
    if part in ONE_LINE:
        text = _SPACES.sub(" ", text).strip()
    limit = PART_LIMITS.get(f"{channel_type}.{part}", PART_LIMITS.get(part))
    if limit is not None and len(text) > limit:
        detail = f"{part}: {len(text):,} characters rendered, the limit is {limit:,}"
        raise RenderFailed(detail, pointer=at, keyword="limit", line=None)
    return text
