"""Checking an admin body whole: every problem listed with its JSON Pointer, one
InvalidPayload raised at the end, before anything is stored."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from gateway.errors import FieldProblem, InvalidPayload
from gateway.formats.json_tree import is_text, whole_number
from gateway.formats.unicode_forms import nfc
from gateway.store import Doc


class BodyCheck:
    """Collects every problem of a body before raising one InvalidPayload."""

    def __init__(self, body: Mapping[str, Any], allowed: Collection[str]) -> None:
        self.body = body
        self.problems = [
            FieldProblem(f"/{k}", f"unknown field {k!r}", "additionalProperties")
            for k in body
            if k not in allowed
        ]

    def add(self, pointer: str, message: str, keyword: str) -> None:
        self.problems.append(FieldProblem(pointer, message, keyword))

    def text(
        self, name: str, *, required: bool = True, max_len: int = 200, compose: bool = False
    ) -> str | None:
        """`compose`: the text in NFC (`nfc`), its length checked as composed (NFC lengthens
        a few scripts' letters: U+0958 is two characters)."""
        value = self.body.get(name)
        if compose and is_text(value):
            value = nfc(value)
        if value is None:
            if required:
                self.add(f"/{name}", f"{name} is required", "required")
            return None
        if not is_text(value) or not value.strip() or len(value) > max_len:
            self.add(
                f"/{name}",
                f"{name} must be a non-empty string of at most {max_len} characters",
                "type",
            )
            return None
        return value

    def number(
        self,
        name: str,
        low: float,
        high: float,
        *,
        integer: bool = False,
        default: float | None = None,
    ) -> float | None:
        value = self.body.get(name, default)
        if value is None:
            return None
        kinds = (int,) if integer else (int, float)
        if integer and (number := whole_number(value)) is not None:
            value = number  # 3.0 is the integer 3, as in JSON Schema
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            what = "an integer" if integer else "a number"
            keyword = (
                "type"
                if isinstance(value, bool) or not isinstance(value, kinds)
                else "minimum"
                if value < low
                else "maximum"
            )
            self.add(f"/{name}", f"{name} must be {what} from {low:g} to {high:g}", keyword)
            return None
        # -0.0 + 0.0 is 0.0: JSON has one zero, and no negative zero is stored (plain_zeros)
        return value + 0.0 if isinstance(value, float) else value

    def flag(self, name: str) -> bool:
        value = self.body.get(name) or False
        if not isinstance(value, bool):
            self.add(f"/{name}", f"{name} must be true or false", "type")
            return False
        return value

    def choice(self, name: str, options: tuple[str, ...]) -> str | None:
        value = self.body.get(name)
        if value not in options:
            self.add(f"/{name}", f"{name} must be one of {', '.join(options)}", "enum")
            return None
        return str(value)

    def done(self, what: str) -> None:
        if self.problems:
            raise InvalidPayload(f"invalid {what}", self.problems)


def doc_id(doc: Doc) -> str:
    return str(doc["_id"])
