"""HTML forms: what was typed, and the use case's problems placed next to the fields.

A form's fields are named after the request body they become (`auth.token` is
`{"auth": {"token": ...}}`), so a problem's JSON Pointer finds its field: `/methods/0` goes to
`methods`, `/auth/token` to `auth.token`; a problem no field claims is shown above the form.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from multidict import MultiMapping

from gateway.errors import FieldProblem, GatewayError, InvalidPayload

ERROR_STATUSES = (400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 502, 503, 504)


def error_key(status: int) -> str:
    """The message key of an error's title (messages/common.yaml: error.*)."""
    return f"error.{status}" if status in ERROR_STATUSES else "error.other"


# Problem keywords with a translated label of their own (messages/common.yaml: problem.*);
# the use case's own message (English) follows the label.
KEYWORDS = (
    "required",
    "type",
    "format",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "additionalProperties",
    "exists",
    "mapping",
    "other",
)


@dataclass(frozen=True, slots=True)
class Problem:
    label: str  # a message key
    message: str  # the use case's words
    line: int | None = None


@dataclass(slots=True)
class Form:
    """What a page shows in a form: the values typed, and the problems by field."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, list[Problem]] = field(default_factory=dict)
    general: list[Problem] = field(default_factory=list)

    def value(self, name: str, default: Any = "") -> Any:
        return self.values.get(name, default)

    def has(self, name: str, option: str) -> bool:
        """Whether a checkbox or multi-select value was chosen."""
        chosen = self.values.get(name, ())
        return option in chosen if isinstance(chosen, list | tuple) else chosen == option

    def error(self, name: str) -> list[Problem]:
        return self.errors.get(name, [])

    @property
    def failed(self) -> bool:
        return bool(self.errors or self.general)

    def refuse(self, error: GatewayError, fields: Iterable[str]) -> Form:
        """Place an error's problems by field (InvalidPayload), or above the form."""
        if isinstance(error, InvalidPayload) and error.problems:
            names = sorted(fields, key=len, reverse=True)
            for problem in error.problems:
                self._place(problem, names)
        else:
            self.general.append(Problem(error_key(error.status), error.detail))
        return self

    def _place(self, problem: FieldProblem, names: list[str]) -> None:
        dotted = ".".join(p for p in problem.pointer.split("/") if p)
        keyword = problem.keyword if problem.keyword in KEYWORDS else "other"
        line = problem.extra.get("line")
        shown = Problem(
            f"problem.{keyword}", problem.message, line if isinstance(line, int) else None
        )
        for name in names:
            if dotted == name or dotted.startswith(name + "."):
                self.errors.setdefault(name, []).append(shown)
                return
        self.general.append(shown)


def read_values(data: MultiMapping[Any], lists: Iterable[str] = ()) -> dict[str, Any]:
    """A posted form as plain values: text fields as text (trimmed), the `lists` as lists
    (checkboxes, multi-selects); the CSRF token and uploaded files are left out."""
    many = set(lists)
    values: dict[str, Any] = {}
    for name in data:
        if name == "csrf" or name in values:
            continue
        if name in many:
            values[name] = [v for v in data.getall(name) if isinstance(v, str)]
        elif isinstance(raw := data[name], str):
            values[name] = raw.strip()
    for name in many:
        values.setdefault(name, [])
    return values


def nest(values: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The non-empty `names` of a form as a request body: `auth.type` → {"auth": {"type"}}."""
    body: dict[str, Any] = {}
    for name in names:
        value = values.get(name)
        if value in (None, "", []):
            continue
        *parents, leaf = name.split(".")
        target = body
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return body


def json_field(values: Mapping[str, Any], name: str) -> Any:
    """A textarea holding JSON: None when empty; malformed JSON is a problem of that field."""
    raw = values.get(name)
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = f"malformed JSON: {exc}"
        raise InvalidPayload(message, [FieldProblem(f"/{name}", message, "format")]) from None
