"""HTML forms: what was typed, and the use case's problems placed next to the fields.

A form's fields are named after the request body they become (`auth.token` is
`{"auth": {"token": ...}}`), so a problem's JSON Pointer finds its field: `/methods/0` goes to
`methods`, `/auth/token` to `auth.token`; a problem no field claims is shown above the form.
A field named by a JSON Pointer itself (an entity form's property, `/cnh/number`: any property
name, in a namespace of its own) takes the problems at or below that pointer.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import orjson
from multidict import MultiMapping

from gateway.errors import (
    Conflict,
    FieldProblem,
    GatewayError,
    InvalidPayload,
    KeysUnavailable,
    PartnerUnavailable,
    Unavailable,
)
from gateway.formats.json_tree import loads_sent
from gateway.notify.channels import SECRET_MEMBERS as CHANNEL_SECRETS
from gateway.ui.state import FORM_BACK, FORM_LANG
from gateway.versioned import ShownActive

ERROR_STATUSES = (400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 502, 503, 504)


# The errors a create or edit form answers with itself, shown again with what was typed (its
# secrets asked for again): its input refused (422), a conflict (a name taken, a limit, a
# change another made meanwhile: 409), the database busy or unavailable (503: nothing known
# saved; the same form saved again is safe, a create's name then tells if it landed). A
# form's handler catches these and renders its own page with `Form(values).refuse(exc, ...)`
# at `exc.status`; a NotFound has its page (what was typed listed, to copy).
FORM_ERRORS: Final = (InvalidPayload, Conflict, Unavailable)
# A partner's side unavailable (a channel's test send held, its keys not fetched): the form
# was taken, the partner was not reached; said above the form as any refusal, not as the
# database's "nothing was saved".
PARTNER_SIDE: Final = (PartnerUnavailable, KeysUnavailable)


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
    # An edit refused as stale: each field whose current value differs from what was
    # typed, with the current value (the page shows them beside the admin's input).
    stale: list[tuple[str, str]] | None = None
    # How many problems the refusal did not list (InvalidPayload.omitted: past its first 100).
    omitted: int = 0
    # Refused by a conflict (409) or the database busy or unavailable (503): the status the
    # page answers (rendering.render), whatever its handler passed; and the seconds to wait
    # before saving again (Retry-After).
    status: int | None = None
    retry_after: int | None = None

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
        return bool(self.errors or self.general or self.stale is not None)

    def refuse(
        self, error: GatewayError, fields: Iterable[str], *, rest: str | None = None
    ) -> Form:
        """Place an error's problems by field (InvalidPayload), or above the form. `rest`
        is the field that takes the problems no other field claims (a JSON document's
        textarea takes every problem of the document). The problems it did not list are
        counted (`omitted`: the page says how many more there are)."""
        if isinstance(error, InvalidPayload) and error.problems:
            names = sorted(fields, key=len, reverse=True)
            for problem in error.problems:
                self._place(problem, names, rest)
            self.omitted += error.omitted
        elif isinstance(error, Unavailable) and not isinstance(error, PARTNER_SIDE):
            # Nothing was saved: the page says so, and that saving again is all it takes.
            self.general.append(Problem("forms.unavailable_kept", error.detail))
            self.status, self.retry_after = error.status, error.retry_after
        else:
            self.general.append(Problem(error_key(error.status), error.detail))
            if isinstance(error, Conflict):
                self.status = error.status
        return self

    def _place(self, problem: FieldProblem, names: list[str], rest: str | None) -> None:
        # A pointer's reference tokens unescaped (RFC 6901: `~1` is `/`, `~0` is `~`).
        dotted = ".".join(_unescape(p) for p in problem.pointer.split("/") if p)
        keyword = problem.keyword if problem.keyword in KEYWORDS else "other"
        line = problem.extra.get("line")
        shown = Problem(
            f"problem.{keyword}", problem.message, line if isinstance(line, int) else None
        )
        for name in names:
            if name.startswith("/"):
                if problem.pointer == name or problem.pointer.startswith(name + "/"):
                    self.errors.setdefault(name, []).append(shown)
                    return
            elif dotted == name or dotted.startswith(name + "."):
                self.errors.setdefault(name, []).append(shown)
                return
        if rest is not None:
            # Inside a document the pointer says where: name it unless the message does.
            pointer = problem.pointer
            if pointer and not shown.message.startswith(pointer):
                shown = Problem(shown.label, f"{pointer}: {shown.message}", shown.line)
            self.errors.setdefault(rest, []).append(shown)
            return
        self.general.append(shown)


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


# The fields of the UI's forms that hold a secret: a password (logging in, a new user's), a
# partner's credentials (a bearer token, a header's or query parameter's value, a Basic
# password, an OAuth client secret) and a trigger's HMAC secret. The one list of them: the
# `field` macro (_macros.html) makes each an `<input type="password">` (and refuses a password
# input not listed here), a secret is taken as typed (a space is part of a password, as the
# API and the CLI keep it), never shown back, and never kept when a session ends while it is
# typed (middleware: the visitor types it again after logging in).
SECRET_FIELDS: Final = frozenset(
    {
        "password",
        "auth.token",
        "auth.value",
        "auth.password",
        "auth.client_secret",
        "auth.secret",
    }
)


RETYPED: Final = "retyped"
"""The hidden field a refused form's page posts for each secret field typed in it (the `field`
macro): a secret is never shown back, so the page asks for it again at its field, and a post
that names it and leaves it empty is refused there (`require_retyped`), never taken as "no
secret" (a trigger's HMAC secret: the gateway would issue one; an edit's: keep the old)."""


# The fields of every form (_macros.html `csrf_field`) besides its CSRF token: the one-time
# id of that rendering (middleware: a form changes things once) and who typed it (the tenant
# and account of its session).
ONCE: Final = "once"
AUTHOR: Final = "author"
# An entity edit form's hidden copy of a live value as the form was loaded (entity_forms).
LOADED: Final = "loaded."


def typed_field(name: str) -> bool:
    """Whether a posted field is one the admin types: not the form's own hidden ones (its
    token, one-time id, author mark, language, the page it is on, revision, the secrets it
    asks again, an entity's loaded live values), which a page listing what was typed leaves
    out."""
    own = name in ("csrf", ONCE, AUTHOR, FORM_LANG, FORM_BACK, REVISION, RETYPED)
    return not own and not name.startswith(LOADED)


def typed_values(data: MultiMapping[Any]) -> list[tuple[str, str]]:
    """What the admin typed in a posted form, to be shown (a page saying nothing was saved):
    its text fields that hold something and are typed_field, never a secret (NOT_KEPT) nor
    one a document holds (hide_secrets)."""
    typed: list[tuple[str, str]] = []
    for name, value in data.items():
        if isinstance(value, str) and value and typed_field(name) and name not in NOT_KEPT:
            shown, hidden = hide_secrets(name, value)
            if name not in hidden:
                typed.append((name, shown))
    return typed


def require_retyped(data: MultiMapping[Any]) -> None:
    """Refuse a post whose page asked for a secret again (RETYPED) that was left empty."""
    named = sorted({n for n in data.getall(RETYPED, []) if n in SECRET_FIELDS})
    message = "the secret typed before was not kept (a secret is never shown back): type it again"
    problems = [
        FieldProblem("/" + name.replace(".", "/"), message, "required")
        for name in named
        if not data.get(name)
    ]
    if problems:
        raise InvalidPayload("a secret must be typed again", problems)


# The fields holding a JSON document that may carry secrets, with those secrets' JSON Pointers:
# a channel's document (its SMTP password). Such a secret is never kept through a login nor
# shown back on a refused form: its value is blanked (`""`, which the use case refuses, so
# a form saved without it again fails rather than saves something else), and the page asks
# for it in a field of its own, named by field and pointer (`document/smtp/password`), which
# document_field puts back in place.
DOCUMENT_SECRETS: Final[Mapping[str, tuple[str, ...]]] = {"document": CHANNEL_SECRETS}
RETYPED_MEMBERS: Final = frozenset(
    f"{name}{pointer}" for name, pointers in DOCUMENT_SECRETS.items() for pointer in pointers
)
NOT_KEPT: Final = SECRET_FIELDS | RETYPED_MEMBERS
"""What a form carried across a session's end never holds, and asks to be typed again."""
PASTED_AGAIN: Final = frozenset(DOCUMENT_SECRETS)
"""The documents a form carried across a session's end does not hold when hide_secrets
withholds them whole (a secret named where its value cannot be told apart): the page after
the login says so and asks for the document again, rather than offering to save it empty."""
TYPED_AGAIN: Final = NOT_KEPT | PASTED_AGAIN
"""What the page after the login asks for again (the login form carries only the names)."""


def hide_secrets(name: str, text: str) -> tuple[str, list[str]]:
    """A document field's text with its secrets (DOCUMENT_SECRETS) blanked, and the names of
    what must be typed again: each secret's field (`document/smtp/password`), or the field
    itself (`document`) when its text is withheld whole. A member named as a secret is
    blanked wherever it stands, whatever its value:

    - in JSON, every one the text gives (a member given twice, or its name spelled with
      escapes, too), and the document is shown as the gateway reads it;
    - in malformed JSON, each `"name": "value"` where it stands (its string up to its closing
      quote, or to the end when there is none).

    Text that still holds the secret's name anywhere else, in any case, its escapes read
    (another member's name, `"Password"` or `"smtp_password"`; a string, the document
    encoded twice as one; malformed JSON naming it some other way: other quotes or none, no
    colon, escapes), may hold a secret whose end cannot be told: it is withheld (`""`),
    which the page asks to be pasted again.

    Text that gives none of them comes back as it is."""
    leaves = {p.rsplit("/", 1)[1]: f"{name}{p}" for p in DOCUMENT_SECRETS.get(name, ())}
    if not leaves:
        return text, []
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _hide_in_malformed(name, text, leaves)
    named = _secrets_given(text, leaves)
    _blank(doc, named)
    if _names_elsewhere(doc, leaves):
        return "", [name]
    if not named:
        return text, []
    try:
        shown = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONEncodeError:  # nested past what orjson writes: not shown at all
        return "", [name]
    return shown, sorted(leaves[leaf] for leaf in named)


def _secrets_given(text: str, leaves: Mapping[str, str]) -> set[str]:
    """The secret member names (`leaves`) a JSON text gives a value (not `""`, not null)
    anywhere: every member it holds is seen, a name given twice too (a parse keeps the last).
    Past the standard library's depth, all of them (it cannot tell)."""
    given: set[str] = set()

    def members(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        given.update(k for k, v in pairs if k in leaves and v not in (None, ""))
        return pairs  # an object, even an empty one, is a value given

    try:  # numbers are not needed: 0 (and no limit on an integer's digits)
        json.loads(text, object_pairs_hook=members, parse_int=_zero, parse_float=_zero)
    except RecursionError:
        return set(leaves)
    return given


def _zero(_: str) -> int:
    return 0


def _blank(doc: Any, names: set[str]) -> None:
    """Blank (`""`) every member of a parsed document named in `names`, at any depth."""
    todo = [doc]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in names:
                    node[key] = ""
                else:
                    todo.append(value)
        elif isinstance(node, list):
            todo.extend(node)


def _names_elsewhere(doc: Any, leaves: Mapping[str, str]) -> bool:
    """Whether a parsed document holds a secret's name (`leaves`) in any case in a string or
    in a member's name other than the secret's own (whose value is blanked)."""
    todo = [doc]
    while todo:
        node = todo.pop()
        if isinstance(node, str):
            if _names_a_secret(node, leaves):
                return True
        elif isinstance(node, dict):
            if any(k not in leaves and _names_a_secret(k, leaves) for k in node):
                return True
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return False


def _names_a_secret(text: str, leaves: Mapping[str, str]) -> bool:
    """Whether text, its escapes read, holds a secret's name (`leaves`) in any case."""
    folded = _ESCAPE.sub(_unescaped, text).casefold()
    return any(leaf.casefold() in folded for leaf in leaves)


def _hide_in_malformed(name: str, text: str, leaves: Mapping[str, str]) -> tuple[str, list[str]]:
    """hide_secrets for text that is no JSON: each `"name": "value"` blanked; the name left
    anywhere else, withheld."""
    hidden = []
    members = [re.escape(orjson.dumps(leaf).decode()) for leaf in leaves]
    for member, field_name in zip(members, leaves.values(), strict=True):
        text, found = re.subn(rf'({member}\s*:\s*)"(?:[^"\\]|\\.)*"?', r'\1""', text)
        if found:
            hidden.append(field_name)
    rest = text
    for member in members:
        rest = re.sub(rf'{member}\s*:\s*""', "", rest)
    if _names_a_secret(rest, leaves):
        return "", [name]
    return text, hidden


# A character escaped as JSON (`\u0077`) or Python and JavaScript (`\x77`) write it.
_ESCAPE: Final = re.compile(r"\\u([0-9A-Fa-f]{4})|\\x([0-9A-Fa-f]{2})")


def _unescaped(found: re.Match[str]) -> str:
    return chr(int(found.group(1) or found.group(2), 16))


def shown_back(values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A posted form's values as a refused form shows them: its documents' secrets blanked
    (hide_secrets), with the names of the fields that take them again."""
    shown, hidden = dict(values), []
    for name in DOCUMENT_SECRETS:
        if isinstance(text := shown.get(name), str):
            shown[name], found = hide_secrets(name, text)
            hidden.extend(found)
    for name in RETYPED_MEMBERS:
        shown.pop(name, None)
    return shown, hidden


# The fields taken as typed besides the secrets: the other members of a partner's credentials
# (a Basic username, an OAuth client id and scope, a header's or query parameter's name), as
# the API takes them: a space in one may be part of a working credential, and trimming it
# would change what the partner receives.
AS_TYPED_FIELDS: Final = SECRET_FIELDS | {
    "auth.username",
    "auth.client_id",
    "auth.scope",
    "auth.name",
    "auth.audience",
    "auth.header",
    "auth.prefix",  # `HMAC ` before the signature: its space is the partner's
    "auth.timestamp_header",
    "auth.signed",  # what the HMAC covers, each character of it
}


def input_type(name: str, requested: str = "text", value: Any = "") -> str:
    """The type of a form's control for the field `name` (the `field` macro): `password` for
    a secret field whatever was asked, and a password input only for one listed in
    SECRET_FIELDS, so that the secrets the server protects and those the page hides are the
    same fields; `textarea` for a text field whose value has a line break (a one-line input
    drops it from what it shows and sends back: HTML's value sanitisation); `text` for a
    date the browser's date input cannot hold (it would send it back emptied)."""
    if name in SECRET_FIELDS:
        return "password"
    if requested == "password":
        raise ValueError(f"{name!r} is a password field: list it in forms.SECRET_FIELDS")
    if requested == "date" and value and not _html_date(value):
        requested = "text"  # a date input would hold it as "" (year 0, `2030-02-30`)
    if requested == "text" and isinstance(value, str) and ("\n" in value or "\r" in value):
        return "textarea"
    return requested


def _html_date(value: Any) -> bool:
    """A value an `<input type=date>` holds as it is (HTML's valid date string, year 0001 or
    later): the browser sanitises any other to "", and an untouched form would post that."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return False
    try:
        return date.fromisoformat(value).year >= 1
    except ValueError:
        return False


def read_values(
    data: MultiMapping[Any], lists: Iterable[str] = (), shown: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A posted form as plain values: text fields as text, the `lists` as lists (checkboxes,
    multi-selects); the CSRF token, the form's language (state.form_lang reads it), the page
    it is on (rendering.page_back), the secrets asked again (RETYPED: require_retyped reads
    them) and uploaded files are left out.

    An edit form's text sent back as it was `shown` (the stored document's values as the form
    loaded them) is that text exactly, spaces and line breaks included (a browser sends a
    textarea's line breaks as CRLF, and a NUL as U+FFFD): what the admin did not touch is not
    rewritten. Text the
    admin typed is trimmed (names, ids, numbers, addresses: a space copied around them is no
    part of them), its line breaks LF (a textarea sends CRLF), except a secret's and a
    credential's (AS_TYPED_FIELDS, RETYPED_MEMBERS), taken as typed."""
    many = set(lists)
    values: dict[str, Any] = {}
    for name in data:
        if name in ("csrf", FORM_LANG, FORM_BACK, RETYPED) or name in values:
            continue
        if name in many:
            values[name] = [v for v in data.getall(name) if isinstance(v, str)]
        elif isinstance(raw := data[name], str):
            loaded = shown.get(name) if shown is not None else None
            if isinstance(loaded, str) and _lines(raw) == _lines(_parsed(loaded)):
                values[name] = loaded
            elif name in AS_TYPED_FIELDS or name in RETYPED_MEMBERS:
                values[name] = raw
            else:
                values[name] = _lines(raw).strip()
    for name in many:
        values.setdefault(name, [])
    return values


def _parsed(text: str) -> str:
    """Text as a browser holds it once the page is parsed, and sends it back: HTML's parser
    turns a NUL (U+0000, as a legacy fixed-width field may hold) into U+FFFD."""
    return text.replace("\0", "\ufffd")


def _lines(text: str) -> str:
    """Text with its line breaks as LF (a browser sends CRLF, HTML parsing reads CR as LF)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def changes(
    body: Mapping[str, Any], unchanged: Mapping[str, Any], *, deep: bool = False
) -> dict[str, Any]:
    """What the admin changed: the merge patch that makes the body the form makes unchanged
    (`unchanged`: the same function applied to the values the form was loaded with) into the
    edit form's `body`, and nothing else (an edit form sends only that). A member the body
    no longer has (an emptied field its body leaves out) is sent as `null`, the patch's
    removal, like one emptied to None; a required one is then the use case's problem at its
    field, never the stored value kept with a "saved". Absent and None are the same (a merge
    patch stores no null). `deep`, for an API that merges objects member by member (RFC 7396:
    the entities), patches an object's changed members, its removed ones `null`, at any
    depth; otherwise a changed object is sent whole, as the API replaces it."""
    patch: dict[str, Any] = {}
    for name in [*body, *(n for n in unchanged if n not in body)]:
        new, old = body.get(name), unchanged.get(name)
        if deep and isinstance(new, Mapping) and isinstance(old, Mapping):
            if inner := changes(new, old, deep=True):
                patch[name] = inner
        # repr tells 1 from True and 1.0, as the stored document does
        elif repr(new) != repr(old):
            patch[name] = new
    return patch


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
        return loads_sent(raw)
    except ValueError as exc:  # malformed, or a member named twice
        message = f"malformed JSON: {exc}"
        raise InvalidPayload(message, [FieldProblem(f"/{name}", message, "format")]) from None


def separators(lang: str) -> tuple[str, str]:
    """A language's decimal separator and its thousands separator: pt-BR `,` and `.`
    (18.250,5), English `.` and `,` (18,250.5)."""
    return (".", ",") if lang == "en" else (",", ".")


def number_field(values: Mapping[str, Any], name: str, *, lang: str, integer: bool = True) -> Any:
    """A number typed in a form, read in the page's language (`lang`): None when empty; text
    that is not a (finite) number stays text, for the use case to refuse by its field.

    The language's decimal separator is the decimal point, and its thousands separator groups
    digits by three (pt-BR `18.250,5`, English `18,250.5`: the figures the pages print). The
    other convention's decimal point is read too where it cannot be a group (`1234.5` or
    `12.5` on a Portuguese page, `1234,5` on an English one); `10.000` on a Portuguese page is
    ten thousand, as the page prints it. What a form shows to edit is written so (number_text)."""
    raw = str(values.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isascii() or "_" in raw:  # other scripts' digits, Python's `1_800`: text
        return raw
    point, group = separators(lang)
    text = raw
    if re.fullmatch(_GROUPED[lang == "en"], raw):
        text = raw.replace(group, "").replace(point, ".")
    elif re.fullmatch(rf"[+-]?\d*{re.escape(group)}\d+", raw):  # the other decimal point
        text = raw.replace(group, ".")
    elif point != ".":
        if "." in raw and "," in raw:  # a point that groups no thousands, and a comma
            return raw
        text = raw.replace(point, ".")
    try:
        number = int(text) if integer else float(text)
    except ValueError:
        return raw
    return number if math.isfinite(number) else raw


def whole_field(values: Mapping[str, Any], name: str, *, lang: str) -> int | None:
    """A whole number typed in a form, for a use case that takes an integer: ASCII digits, a
    `-` before them or not, grouped by thousands with the page's separator or not (`1.800` on
    a Portuguese page, `1,800` on an English one, is 1800); None when empty. Nothing else is
    read: no `+`, no `_` between digits, no other script's digits (Python's int() reads all
    three). One that is not a whole number so is a problem of its field, by what is wrong
    with it: `type` for text or a fraction, `maximum` (`minimum` when negative) for a number
    of more digits than Python reads (4,300, leading zeros aside). Its range is the use
    case's to check (its own keywords: `minimum`, `maximum`)."""
    raw = str(values.get(name) or "").strip()
    if not raw:
        return None
    group = re.escape(separators(lang)[1])
    found = re.fullmatch(rf"(-?)([0-9]+|[1-9][0-9]{{0,2}}(?:{group}[0-9]{{3}})+)", raw)
    if found is None:
        message = f"{name} is a whole number, not {raw!r}"
        raise InvalidPayload(message, [FieldProblem(f"/{name}", message, "type")])
    sign, digits = found.group(1), re.sub("[^0-9]", "", found.group(2)).lstrip("0") or "0"
    if len(digits) > _INT_DIGITS:  # past int()'s limit: a number, far out of range
        keyword = "minimum" if sign else "maximum"
        message = f"{name} is a number of {len(digits)} digits: far out of range"
        raise InvalidPayload(message, [FieldProblem(f"/{name}", message, keyword)])
    return int(sign + digits)


# The most digits int() reads from text (sys.get_int_max_str_digits(), 4,300 by default).
_INT_DIGITS: Final = sys.get_int_max_str_digits() or 4300


# The highest version number a form reads (ten digits, as the API's paths): above it, none is.
MAX_VERSION: Final = 9_999_999_999


def version_field(raw: Any, lang: str) -> int:
    """A version number (1, 2, ...), typed or posted by a page's form (the `version` field),
    read as whole_field reads numbers; a problem of the `version` field, in words of its own,
    when it is missing (`required`), not a whole number (`type`), below 1 (`minimum`) or
    above MAX_VERSION (`maximum`)."""
    if not isinstance(raw, str) or not raw.strip():
        keyword = "required" if raw is None or raw == "" else "type"
    else:
        try:
            number = whole_field({"version": raw}, "version", lang=lang)
        except InvalidPayload as exc:
            keyword = exc.problems[0].keyword
        else:
            if number is not None and 1 <= number <= MAX_VERSION:
                return number
            keyword = "minimum" if number is None or number < 1 else "maximum"
    message = {
        "required": "a version is a number (1, 2, ...): none was given",
        "type": f"a version is a whole number (1, 2, ...), not {raw!r}",
        "minimum": f"versions start at 1, not {raw!r}",
        "maximum": f"no version is that high (at most {MAX_VERSION}): {raw!r}",
    }[keyword]
    raise InvalidPayload(message, [FieldProblem("/version", message, keyword)])


def shown_active(form: Mapping[str, Any], lang: str) -> ShownActive | None:
    """The active version a mapping's or flow's page showed (its activate and roll back
    buttons post it as `active`, empty when none was): the change is refused if another is
    active now. A post without the field (a script of its own) is not checked."""
    if "active" not in form:
        return None
    raw = form.get("active")
    return ShownActive(version_field(raw, lang) if raw else None)


# The hidden field of a *Rotate the signing secret* button (a subscription's, a flow's, an
# action's): the rotation its page showed (`signing.rotation_revision`).
ROTATED: Final = "rotated"


def shown_rotation(form: Mapping[str, Any]) -> str | None:
    """The rotation of a signing secret a page showed: a rotation from a page loaded before
    another is refused (`signing.refuse_unseen_rotation`). A post without the field (a
    script of its own) is not checked."""
    shown = form.get(ROTATED)
    return shown if isinstance(shown, str) else None


# A number grouped by thousands (a first group of 1-3 digits, not 0), with decimals or not:
# pt-BR `18.250,5`, English `18,250.5`.
_GROUPED: Final = (
    r"[+-]?[1-9]\d{0,2}(\.\d{3})+(,\d+)?",
    r"[+-]?[1-9]\d{0,2}(,\d{3})+(\.\d+)?",
)


def number_text(value: Any, lang: str) -> str:
    """A number as a form shows it to edit, in the page's language and without grouping, so
    the form reads it back as the same number (number_field): every digit kept (18250.125 is
    `18250,125` on a Portuguese page, `18250.125` on an English one), a whole float as an
    integer (`10000`). Anything else as text; None as nothing."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value).replace(".", separators(lang)[0])


def number_shown(value: Any, lang: str, digits: int | None = None) -> str:
    """A number as a page prints it: grouped by thousands, in the page's language (pt-BR
    `18.250,0`, English `18,250.0`), with `digits` decimals (None: as many as it has)."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return str(value)
    if digits is None:
        exact = repr(value)
        if "e" in exact:  # 1e+20, 1.5e-07: as they are
            return exact.replace(".", separators(lang)[0])
        digits = 0 if isinstance(value, int) or value.is_integer() else len(exact.split(".")[1])
    text = f"{value:,.{digits}f}"
    point, group = separators(lang)
    return text.translate({ord(","): group, ord("."): point})


def document_field(values: Mapping[str, Any], name: str = "document") -> dict[str, Any]:
    """A textarea holding a resource's JSON document, as the admin API takes it."""
    doc = json_field(values, name)
    if not isinstance(doc, dict):
        message = "paste the JSON document, as the admin API takes it"
        keyword = "required" if doc is None else "type"  # empty, or not an object
        raise InvalidPayload(message, [FieldProblem(f"/{name}", message, keyword)])
    # A secret typed again apart (after a login: hide_secrets) goes back in its place.
    for pointer in DOCUMENT_SECRETS.get(name, ()):
        typed = values.get(f"{name}{pointer}")
        if isinstance(typed, str) and typed:
            *parents, leaf = pointer.split("/")[1:]
            target: Any = doc
            for part in parents:
                target = target.setdefault(part, {}) if isinstance(target, dict) else None
            if isinstance(target, dict):
                target[leaf] = typed
    return doc


def left_empty(error: GatewayError, doc: Any) -> GatewayError:
    """A refusal of a form's JSON document (`doc`, as posted) whose problems at a member it
    gives empty (`""`: emptied, or blanked by the page, a secret never shown back) say
    `required`: such a member is a field left empty, labelled "Obrigatório" as a form's own
    field left empty is (the form does not send it: `required` in the API too), not by the
    API's keyword for a value given empty (`minLength`, or `type`)."""
    if not isinstance(error, InvalidPayload) or not isinstance(doc, dict):
        return error
    problems = [
        replace(p, keyword="required")
        if p.keyword in ("minLength", "type") and _member(doc, p.pointer) == ""
        else p
        for p in error.problems
    ]
    return error.restated(problems=problems)


def _member(doc: Any, pointer: str) -> Any:
    """The value at a JSON Pointer of `doc` (None: none there)."""
    for token in pointer.split("/")[1:]:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(_unescape(token))
    return doc


# The hidden field of an edit form that names the revision of the document it was loaded from.
REVISION = "revision"


def revision_of(values: Mapping[str, Any]) -> str:
    """The revision of what an edit form shows: a fingerprint of each of the document's
    values as the form loads them (what the form does not show, such as a schedule's cursor or
    a trigger's statistics, moves no revision), by field, so that a stale save can tell the
    fields the admin changed from those left as loaded (stale_edit)."""
    prints = sorted((k, _fingerprint(v)) for k, v in values.items() if k != REVISION)
    return urlencode(prints)


def _fingerprint(value: Any) -> str:
    """A value as a field holds it, and as a browser sends it back untouched (its line breaks
    as CRLF, a NUL as U+FFFD, trimmed when read: read_values; a checkbox group's choices in
    the page's order): a short digest, the same for the value loaded and the value posted."""
    if isinstance(value, list | tuple):
        value = sorted(str(v) for v in value)
    text = _lines(_parsed(_shown(value))).strip()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def editing(values: Mapping[str, Any]) -> Form:
    """The edit form of a document's current `values`, carrying their revision."""
    return Form({**values, REVISION: revision_of(values)})


def stale_edit(values: Mapping[str, Any], current: Mapping[str, Any]) -> Form | None:
    """The refusal of an edit posted from a form loaded before the document last changed
    (another admin, the API, a partner's feed or the gateway itself wrote it meanwhile), or
    None when the form's revision is the current one. A post without a revision (a client of
    its own, not the page) is not checked.

    The refusal keeps as typed only the fields the admin changed from the form as loaded
    (their fingerprints in the posted revision), shows every other field at its current
    value, lists the fields whose current value differs from what was posted, and carries
    the current revision: saving it again replaces the current version with what was typed,
    knowingly, and never puts back a value the admin left as loaded (a feed's attributes,
    a partner's status the gateway set)."""
    loaded = values.get(REVISION)
    now = revision_of(current)
    if not loaded or loaded == now:
        return None
    prints = dict(parse_qsl(str(loaded), keep_blank_values=True))
    differs = [
        (name, _shown(value))
        for name, value in current.items()
        if name != REVISION and _shown(value) != _shown(values.get(name, ""))
    ]
    untouched = {
        name: value
        for name, value in current.items()
        if name != REVISION and prints.get(name) == _fingerprint(values.get(name, ""))
    }
    return Form({**values, **untouched, REVISION: now}, stale=differs)


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)
