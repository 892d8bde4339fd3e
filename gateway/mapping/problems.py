"""Collecting compile problems with their location: JSON Pointer and source line."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from difflib import get_close_matches
from typing import Any

from ..errors import FieldProblem, InvalidPayload
from .limits import MAX_PROBLEMS


def suggest(word: str, choices: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for the closest choice, preferring the same first letter."""
    choices = tuple(choices)
    same_start = [c for c in choices if c[:1] == word[:1]]
    hint = get_close_matches(word, same_start, n=1, cutoff=0.5) or get_close_matches(
        word, choices, n=1
    )
    return f" (did you mean {hint[0]!r}?)" if hint else ""


class Problems:
    """Every problem found in one mapping file, each with its pointer and line."""

    def __init__(self, lines: Mapping[str, int] | None = None, filename: str | None = None):
        self.lines = lines or {}
        self.filename = filename
        self.items: list[FieldProblem] = []
        self.dropped = 0

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, pointer: str, message: str, keyword: str = "invalid", **extra: Any) -> None:
        if len(self.items) >= MAX_PROBLEMS:
            self.dropped += 1
            return
        line = self.line_of(pointer)
        if line is not None:
            extra = {"line": line, **extra}
        if self.filename:
            extra = {"file": self.filename, **extra}
        self.items.append(FieldProblem(pointer, message, keyword, extra))

    def line_of(self, pointer: str) -> int | None:
        """The line of the pointer's node, or of its nearest ancestor that has one."""
        while True:
            line = self.lines.get(pointer)
            if line is not None or not pointer:
                return line
            pointer = pointer.rsplit("/", 1)[0]

    def raise_if_any(self, what: str) -> None:
        if self.items:
            count = len(self.items) + self.dropped
            detail = f"{what}: {count} problem{'s' if count > 1 else ''}"
            raise InvalidPayload(detail, problems=self.items, omitted=self.dropped)


def payload_error(name: str, problems: list[FieldProblem], dropped: int) -> InvalidPayload:
    """The error for a payload that a compiled mapping could not map."""
    count = len(problems) + dropped
    detail = f"the payload does not fit mapping {name!r}: {count} problem{'s' if count > 1 else ''}"
    return InvalidPayload(detail, problems=problems, omitted=dropped)
