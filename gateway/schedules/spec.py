"""A schedule as an admin writes it, checked whole (every problem with its JSON Pointer), and
as the API shows it.

    {"name", "action_id", "every": "30s" | "*/5 * * * *", "timezone"?,
     "cursor"?: {"from": JMESPath on the answer | "header.NAME" (an answer header holding it),
                 "param": "query.after" | "body.params.x" (through `request.body`'s objects
                 and arrays: `body.calls.0.x`) | "header.X",
                 "more"?: JMESPath (true while the partner has more pages),
                 "initial"?: the value of the first call},
                or {"step": n, "initial": integer, "param", "more"?}: page numbers or offsets,
                the next call's the last one's plus n, back to `initial` once the list ends,
                or {"follow": "header.Link" | "header.NAME" | "body.<JMESPath>"}: the next
                page's whole URL (RFC 8288 `rel="next"`, a header holding it, OData's
                `@odata.nextLink`), called as it is; back to the action's URL at the end,
     "target": {"type"?: "entities" (default) | "positions", "entity_type", "kind"?,
                "mapping", "params"?},
     "dedupe"?: {"by": JMESPath on an item (its id), "keep"?: ids remembered (1000)},
     "request"?: {"query"?: {...}, "body"?: {...}},  the call's fixed parts
     "error"?: JMESPath: a non-empty value fails the answer (JSON-RPC's `error`),
     "max_pages"?: pages per run (10), "status"?: "active" | "paused"}
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from gateway.errors import FieldProblem
from gateway.formats.headers import carries_credential, is_reserved_header, reserved_message
from gateway.formats.json_tree import is_text, text_refused, whole_number, with_member
from gateway.formats.unicode_forms import nfc
from gateway.mapping.compiler import HEADER_RE, QUERY_RE
from gateway.mapping.expressions import compile_expression
from gateway.schedules.timing import parse_every
from gateway.store import Doc

FIELDS: Final = frozenset(
    {
        "name",
        "action_id",
        "every",
        "timezone",
        "cursor",
        "target",
        "dedupe",
        "request",
        "error",
        "max_pages",
        "status",
    }
)
MAX_PAGES: Final = 100
DEFAULT_MAX_PAGES: Final = 10
DEFAULT_KEEP: Final = 1000
MAX_KEEP: Final = 20_000
# The largest first page or offset of a stepped cursor (2**53 - 1: exact in every JSON reader).
MAX_STEPPED: Final = 2**53 - 1
# Where a cursor goes: a query parameter or a header of any name an outbound mapping may
# send (`query.$skip`, `query.page[after]`: percent-encoded as needed when sent), or a
# member of the JSON body.
_BODY_PARAM = re.compile(r"^body(\.[A-Za-z0-9_\-]{1,100}){1,8}$")
_SCALARS = (str, int, float)
# A response header's name (RFC 9110 token).
_NOT_WITH_FOLLOW = ("from", "param", "step", "initial", "more")
# A cursor read from an answer header, not the body: `cursor.from` `header.NAME`.
HEADER_FROM: Final = "header."


class _Check:
    def __init__(self) -> None:
        self.problems: list[FieldProblem] = []

    def add(self, pointer: str, message: str, keyword: str) -> None:
        self.problems.append(FieldProblem(pointer, message, keyword))

    def object(self, value: Any, pointer: str, allowed: set[str]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.add(pointer, f"{pointer.lstrip('/')} must be an object", "type")
            return None
        for key in value:
            if key not in allowed:
                self.add(f"{pointer}/{key}", f"unknown field {key!r}", "additionalProperties")
        return value

    def expression(self, value: Any, pointer: str, *, required: bool = True) -> str | None:
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(pointer, "a JMESPath expression (text) is required", "type")
            return None
        getter, why = compile_expression(value)
        if getter is None:
            self.add(pointer, why, "expression")
            return None
        return value


def check_fields(
    body: Mapping[str, Any], target_types: Sequence[str]
) -> tuple[Doc, list[FieldProblem]]:
    """The stored fields of a whole schedule body, and every problem found (none: valid)."""
    check = _Check()
    for key in body:
        if key not in FIELDS:
            check.add(f"/{key}", f"unknown field {key!r}", "additionalProperties")
    fields: Doc = {
        "name": _name(check, body.get("name")),
        "action_id": _text(check, body.get("action_id"), "/action_id", max_len=64),
        "every": _every(check, body.get("every"), body.get("timezone")),
        "cursor": _cursor(check, body.get("cursor")),
        "target": _target(check, body.get("target"), target_types),
        "dedupe": _dedupe(check, body.get("dedupe")),
        "request": _request(check, body.get("request")),
        "error": check.expression(body.get("error"), "/error", required=False),
        "max_pages": _max_pages(check, body.get("max_pages", DEFAULT_MAX_PAGES)),
        "status": body.get("status", "active"),
    }
    _cursor_in_body(check, fields["cursor"], fields["request"])
    if fields["status"] not in ("active", "paused"):
        check.add("/status", "status must be active or paused", "enum")
    target = fields["target"] or {}
    fields["mapping"] = target.pop("mapping", None)
    return fields, check.problems


def _text(check: _Check, value: Any, pointer: str, *, max_len: int = 200) -> str | None:
    if refused := text_refused(value, max_len, nonblank=True):
        name = pointer.lstrip("/")
        message = f"{name} must be a non-empty string of at most {max_len} characters"
        check.add(pointer, message, refused)
        return None
    return str(value)  # a text (`text_refused`)


def _name(check: _Check, value: Any) -> str | None:
    """The name in NFC: one name in either Unicode form (unique per tenant); its length as
    composed (as stored: NFC lengthens a few scripts' letters)."""
    return _text(check, nfc(value) if is_text(value) else value, "/name")


def _every(check: _Check, value: Any, timezone: Any) -> dict[str, object] | None:
    if timezone is not None and not is_text(timezone):
        check.add("/timezone", "timezone is an IANA name such as America/Sao_Paulo", "type")
        return None
    if not isinstance(value, str):
        check.add("/every", 'every is an interval ("30s", "5m", "1h") or a cron expression', "type")
        return None
    try:
        return parse_every(value, timezone).as_doc()
    except ValueError as exc:
        pointer = "/timezone" if "time zone" in str(exc) else "/every"
        check.add(pointer, str(exc), "format")
        return None


def _cursor(check: _Check, value: Any) -> Doc | None:
    if value is None:
        return None
    allowed = {"from", "param", "more", "initial", "step", "follow"}
    cursor = check.object(value, "/cursor", allowed)
    if cursor is None:
        return None
    if cursor.get("follow") is not None:
        return _follow(check, cursor)
    param = cursor.get("param")
    if not isinstance(param, str) or not _valid_param(param):
        check.add(
            "/cursor/param",
            'param is where the cursor goes: "query.NAME" (any query parameter name without '
            'blanks, "&", "=" or "#": "query.$skip", "query.page[after]"), "header.NAME" or '
            '"body.a.b"',
            "pattern",
        )
    elif param.startswith("header.") and is_reserved_header(param.removeprefix("header.")):
        check.add("/cursor/param", reserved_message(param.removeprefix("header.")), "reserved")
    initial = cursor.get("initial")
    if initial is not None and (isinstance(initial, bool) or not isinstance(initial, _SCALARS)):
        check.add("/cursor/initial", "initial is a string or a number", "type")
    if cursor.get("step") is not None:
        return _stepped(check, cursor, param)
    return {
        "from": _from(check, cursor.get("from")),
        "param": param,
        "more": check.expression(cursor.get("more"), "/cursor/more", required=False),
        "initial": initial,
    }


def _valid_param(param: str) -> bool:
    where, _, name = param.partition(".")
    if where == "query":
        return QUERY_RE.fullmatch(name) is not None
    if where == "header":
        return HEADER_RE.fullmatch(name) is not None
    return _BODY_PARAM.fullmatch(param) is not None


def _stepped(check: _Check, cursor: Mapping[str, Any], param: Any) -> Doc:
    """Page numbers (`step` 1) or offsets (`step` the page size): no `from`, an integer
    `initial` (numeric text, as a form sends it, is read as one)."""
    step, initial = whole_number(cursor.get("step")), cursor.get("initial")
    if step is None or not 1 <= step <= 1_000_000:
        check.add("/cursor/step", "step is a whole number from 1 to 1000000", "type")
    if cursor.get("from") is not None:
        check.add("/cursor/from", "a cursor has from or step, not both", "oneOf")
    digits = initial.strip() if isinstance(initial, str) else ""
    if digits.isascii() and digits.isdigit() and len(digits) <= 16:  # ("²".isdigit() too)
        initial = int(digits)  # (int() refuses text past 4,300 digits: a 500 once)
    initial = initial if (number := whole_number(initial)) is None else number
    if isinstance(initial, bool) or not isinstance(initial, int):
        check.add("/cursor/initial", "with step, initial is the first page or offset", "type")
    elif not 0 <= initial <= MAX_STEPPED:
        # Pages and offsets count up from it: past 2**63 the next cursor cannot be stored.
        message = f"with step, initial is the first page or offset, from 0 to {MAX_STEPPED}"
        check.add("/cursor/initial", message, "maximum" if initial > 0 else "minimum")
    return {
        "step": step,
        "param": param,
        "more": check.expression(cursor.get("more"), "/cursor/more", required=False),
        "initial": initial,
    }


def _follow(check: _Check, cursor: Mapping[str, Any]) -> Doc:
    """The next page's whole URL, where the partner names it: the `Link` header's
    `rel="next"` (RFC 8288), another header holding the URL, or the body (`body.` and a
    JMESPath: OData's `body."@odata.nextLink"`). The URL is the next call: nothing else of
    the cursor applies."""
    follow = cursor["follow"]
    for name in _NOT_WITH_FOLLOW:
        if cursor.get(name) is not None:
            message = f"a cursor that follows the next page's URL takes no {name}"
            check.add(f"/cursor/{name}", message, "oneOf")
    if isinstance(follow, str) and follow.startswith("body."):
        check.expression(follow.removeprefix("body."), "/cursor/follow")
    elif not isinstance(follow, str) or not follow.startswith("header."):
        check.add(
            "/cursor/follow",
            'follow is where the partner names its next page\'s URL: "header.Link" (its '
            'rel="next"), "header.NAME" (a header holding the URL) or "body.<JMESPath>"',
            "pattern",
        )
    else:
        _answer_header(check, follow, "/cursor/follow")
    return {"follow": follow}


def _from(check: _Check, value: Any) -> str | None:
    """`cursor.from`: a JMESPath on the answer, or `header.NAME`, the answer header holding
    the next cursor (ServiceM8's `x-next-cursor`, an ERP's `X-Next-Page-Token`), named as
    `follow` names one. (A body member named `header` is `"header".next`.)"""
    if isinstance(value, str) and value.startswith(HEADER_FROM):
        return value if _answer_header(check, value, "/cursor/from") else None
    return check.expression(value, "/cursor/from")


def _answer_header(check: _Check, value: str, pointer: str) -> bool:
    """Whether `header.NAME` names an answer header a schedule may read: a header name (RFC
    9110 token), not one that may carry a credential (not kept with the answer, as an
    answer rule's header is not: `carries_credential`)."""
    name = value.removeprefix(HEADER_FROM)
    if HEADER_RE.fullmatch(name) is None:
        check.add(pointer, f"{name!r} is not a header name (header.NAME)", "pattern")
        return False
    if carries_credential(name):
        check.add(pointer, f"{name} may carry a credential: it is not read", "enum")
        return False
    return True


def _target(check: _Check, value: Any, types: Sequence[str]) -> Doc | None:
    target = check.object(value, "/target", {"type", "entity_type", "kind", "mapping", "params"})
    if target is None:
        return None
    kind = target.get("type", "entities")
    if kind not in types:
        known = ", ".join(types)
        check.add("/target/type", f"target type must be one of {known} on this gateway", "enum")
    entity_type = target.get("entity_type", "vehicle" if kind == "positions" else None)
    _text(check, entity_type, "/target/entity_type", max_len=64)
    if target.get("kind") is not None:
        _text(check, target.get("kind"), "/target/kind", max_len=64)
    _text(check, target.get("mapping"), "/target/mapping")
    params = target.get("params") or {}
    if not isinstance(params, dict):
        check.add("/target/params", "params is an object of name: value", "type")
    return {
        "type": kind,
        "entity_type": entity_type,
        "kind": target.get("kind"),
        "mapping": target.get("mapping"),
        "params": params if isinstance(params, dict) else {},
    }


def _dedupe(check: _Check, value: Any) -> Doc | None:
    if value is None:
        return None
    dedupe = check.object(value, "/dedupe", {"by", "keep"})
    if dedupe is None:
        return None
    keep = whole_number(dedupe.get("keep", DEFAULT_KEEP))
    if keep is None or not 1 <= keep <= MAX_KEEP:
        check.add(
            "/dedupe/keep", f"keep is how many ids are remembered: 1 to {MAX_KEEP}", "maximum"
        )
    return {"by": check.expression(dedupe.get("by"), "/dedupe/by"), "keep": keep}


def _request(check: _Check, value: Any) -> Doc | None:
    if value is None:
        return None
    request = check.object(value, "/request", {"query", "body"})
    if request is None:
        return None
    query = request.get("query") or {}
    if not isinstance(query, dict) or not all(isinstance(v, _SCALARS) for v in query.values()):
        check.add("/request/query", "query is an object of name: string or number", "type")
    body = request.get("body")
    if body is not None and not isinstance(body, dict):
        check.add("/request/body", "body is a JSON object", "type")
    return {"query": query if isinstance(query, dict) else {}, "body": body}


def _cursor_in_body(check: _Check, cursor: Doc | None, request: Doc | None) -> None:
    """A cursor sent in the body (`body.a.b`) goes where its path leads in `request.body`:
    through objects (one missing is added) and arrays (a number is an item's index, `0` the
    first: Geotab's `ExecuteMultiCall` `body.params.calls.0.params.fromVersion`). A path
    through a text, a number, null or past an array's end would replace that member, the
    partner getting a body without it: refused here, and by every run (`calls.request_for`)."""
    param = (cursor or {}).get("param")
    body = (request or {}).get("body")
    if not isinstance(param, str) or not _BODY_PARAM.match(param):
        return
    if not isinstance(body, dict):
        return
    try:
        with_member(body, param.split(".")[1:], (cursor or {}).get("initial"), name="body")
    except ValueError as exc:
        message = f"{param} cannot go into request.body: {exc}"
        check.add("/cursor/param", message, "path")


def _max_pages(check: _Check, value: Any) -> int | None:
    pages = whole_number(value)
    if pages is None or not 1 <= pages <= MAX_PAGES:
        check.add("/max_pages", f"max_pages is 1 to {MAX_PAGES} pages per run", "maximum")
        return None
    return pages


def public_schedule(doc: Doc, *, running: bool = False) -> dict[str, Any]:
    """A schedule as the API shows it: its definition and its state."""
    target = {**doc["target"], "mapping": doc.get("mapping")}
    return {
        "id": str(doc["_id"]),
        "name": doc["name"],
        "action_id": doc["action_id"],
        "every": doc["every"]["text"],
        "timezone": doc["every"].get("timezone"),
        "cursor": doc.get("cursor"),
        "target": {k: v for k, v in target.items() if v not in (None, {})},
        "dedupe": doc.get("dedupe"),
        "request": doc.get("request"),
        "error": doc.get("error"),
        "max_pages": doc["max_pages"],
        "status": doc["status"],
        "state": {
            "cursor": doc.get("cursor_value"),
            "next_run_at": doc.get("next_run_at"),
            "running": running,
            "failures": doc.get("failures", 0),
            "last_error": doc.get("last_error"),
            "last_run_at": doc.get("last_run_at"),
            "last_ok_at": doc.get("last_ok_at"),
            "remembered_ids": len(doc.get("seen") or ()),
            "runs_in_row": doc.get("runs_in_row") or 0,
        },
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
    }
