"""One call of a schedule: the request (the action's, with the cursor where `cursor.param`
says), and its answer read into a page (cursor, whether there is more, the items) or refused
with a `PollFailure` that names what was wrong. Nothing here writes."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import orjson

from gateway.actions.answer_rules import AnswerRule
from gateway.actions.catalog import Action, Partner, build_request
from gateway.errors import FieldProblem, InvalidPayload
from gateway.formats import element_text
from gateway.formats.json_tree import with_member
from gateway.formats.link_header import link_target
from gateway.mapping import CompiledMapping, DecodedTexts
from gateway.mapping.casts import partner_flag
from gateway.mapping.expressions import Run, compile_expression
from gateway.mapping.model import EvalError, LimitExceeded
from gateway.mapping.secret_marks import SecretMarks
from gateway.outbound.redaction import Redactor
from gateway.outbound.sender import OutboundRequest, Outcome
from gateway.outbound.verdict import Verdict, error_names
from gateway.schedules.spec import HEADER_FROM
from gateway.store import Doc

_EXCERPT: Final = 300
_MAX_ID: Final = 100
# The longest next page's URL a `follow` cursor takes (kept as the schedule's cursor).
MAX_NEXT_URL: Final = 8192
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class PollFailure(Exception):
    """A run stops here: `kind` is a metrics label, `message` what the admin reads."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        problems: Sequence[Mapping[str, Any]] = (),
        transient: bool = False,
        held: bool = False,
        throttle: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        # The partner asked us to slow down (`Outcome.throttled`): what said so, for a note
        # ("429", "200 OverLimitException"). After pages of the run it ends it, no failure.
        self.throttle = throttle
        # The database's state (not the partner's doing): its back-off does not grow.
        self.transient = transient
        # Our own guard held the call back before anything left (`Outcome.hold`): no
        # failure, the run goes again when the hold ends.
        self.held = held
        self.status = status
        self.retry_after = retry_after
        self.problems = list(problems)

    def masked(self, redactor: Redactor) -> PollFailure:
        """The same failure, what it says masked of every credential of the partner (its
        message and problems may quote the page, where a numeric one is not: `request_for`)."""
        if redactor.empty:
            return self
        return PollFailure(
            self.kind,
            redactor.redact(self.message, cut=False),
            status=self.status,
            retry_after=self.retry_after,
            problems=redactor.redact_said(self.problems),
            transient=self.transient,
            held=self.held,
            throttle=self.throttle,
        )

    def as_doc(self, at: datetime) -> Doc:
        doc: Doc = {"at": at, "kind": self.kind, "message": self.message}
        if self.status is not None:
            doc["status"] = self.status
        if self.problems:
            doc["errors"] = self.problems[:5]
        return doc


@dataclass(frozen=True, slots=True)
class Page:
    answer: Any
    cursor: str | int | float | None  # what the answer says the next call starts from
    more: bool | None  # the partner says it has more (None: the schedule does not ask)
    empty: bool = False  # a 2xx without a body: no records, the cursor stays, no more


async def request_for(
    doc: Doc,
    action: Action,
    partner: Partner,
    request_mapping: CompiledMapping | None,
    cursor: Any,
) -> OutboundRequest:
    """The action's request with the schedule's fixed parts and the cursor in place
    (InvalidPayload: the action's XML body cannot be rendered on them)."""
    fixed = doc.get("request") or {}
    body = copy.deepcopy(fixed.get("body"))
    query: dict[str, Any] = dict(fixed.get("query") or {})
    headers: dict[str, str] = {}
    path_values: Mapping[str, Any] = {}
    context = {"cursor": cursor, "tenant": doc["tenant"], "schedule": _about(doc)}
    marks = SecretMarks(partner.secrets)  # revealed by build_request, once all is in place
    if request_mapping is not None:
        parts = request_mapping.build_request(context, secrets=marks)
        path_values, body = parts.path_params, parts.body if parts.body is not None else body
        query.update(marks.reveal(parts.query))  # sent as it is, not through build_request
        headers.update(parts.headers)
    spec = doc.get("cursor")
    follow = (spec or {}).get("follow")
    if spec is not None and cursor is not None and follow is None:
        where, _, name = spec["param"].partition(".")
        if where == "query":
            query[name] = cursor
        elif where == "header":
            headers[name] = str(cursor)
        else:  # the fixed body unchanged but for the cursor, or nothing sent
            try:
                body = with_member(
                    {} if body is None else body, name.split("."), cursor, name="body"
                )
            except ValueError as exc:
                raise PollFailure("request", f"cursor.param {spec['param']}: {exc}") from None
    # An action with an XML body renders it on the context, `body` being this JSON value.
    request, _ = await build_request(
        action,
        partner,
        None,
        context,
        default_body=body,
        path_values=path_values,
        headers=headers,
        marks=marks,
    )
    # The page is written as if pushed: its numbers and codes equal to a numeric credential
    # are not masked (what a run says of it is: `PollFailure.masked`).
    query_items = tuple(
        (k, _text(each))
        for k, v in query.items()
        for each in (v if isinstance(v, list) else [v])
        if each is not None
    )
    request = replace(request, query=query_items, answer_is_data=True)
    if (header := _from_header(spec)) is not None:  # kept with the answer, to be read
        request = replace(request, answer_headers=(*request.answer_headers, header))
    if follow is not None:
        where, _, name = follow.partition(".")
        if where == "header":
            request = replace(request, answer_headers=(*request.answer_headers, name))
        if cursor is not None:  # the partner's next page, as it named it (`next_url`)
            request = replace(request, url=str(cursor), query=())
    return request


def read_page(
    doc: Doc,
    outcome: Outcome,
    now: datetime,
    sent: Any = None,
    *,
    url: str = "",
    base_url: str = "",
) -> Page:
    """The partner's answer as a page; PollFailure for anything that is not a usable one. What
    a failure quotes of the answer, as the page itself, is redacted of the partner's
    credentials and secrets (a SOAP fault may quote the envelope, password included: the
    sender masks them, `Outcome`). `url` is the one the page was asked at and `base_url` the
    partner's: a `follow` cursor's next URL is read against them (`next_url`)."""
    if (hold := outcome.hold) is not None:
        raise PollFailure(hold.error, hold.describe(), retry_after=hold.seconds, held=True)
    status = outcome.status
    if status is None:
        raise PollFailure(
            str(outcome.error or "connect"),
            f"no answer: {outcome.message or ''}",
            retry_after=outcome.retry_in,
        )
    if not 200 <= status < 300:
        excerpt = outcome.redacted_excerpt(_EXCERPT)
        throttle = outcome.throttled()  # a 429
        raise PollFailure(
            "rate_limited" if throttle else "http_status",
            f"the partner answered {status}" + (f": {excerpt}" if excerpt else ""),
            status=status,
            retry_after=outcome.retry_after(now),
            throttle=str(status) if throttle else None,
        )
    if outcome.error is not None:
        message = outcome.message or ""
        raise PollFailure("invalid_response", f"unusable answer: {message}", status=status)
    if not outcome.readable:  # JSON, or XML with an XML content type
        if outcome.other_body is None:  # no body at all (a 204, a Content-Length: 0)
            return Page(None, None, False, empty=True)
        excerpt = outcome.redacted_excerpt(_EXCERPT)
        raise PollFailure("not_json", f"the answer is not JSON or XML: {excerpt!r}", status=status)
    answer = outcome.json_body
    error = _search(doc["error"], answer, "error") if doc.get("error") else None
    reported = partner_flag(error)
    if outcome.throttled(reported=reported):
        # A JSON-RPC partner's throttle (HTTP 200, MyGeotab's OverLimitException): a 429's.
        names = ", ".join(error_names(answer)) or "an error with Retry-After"
        said = _short(error if reported else answer)
        raise PollFailure(
            "rate_limited",
            f"the partner answered {status} asking to slow down: {said}",
            status=status,
            retry_after=outcome.retry_after(now),
            throttle=f"{status} {names}",
        )
    if reported:
        raise PollFailure("partner_error", f"the partner reported an error: {_short(error)}")
    spec = doc.get("cursor")
    if spec is None:
        return Page(answer, None, None)
    if spec.get("follow"):
        found = next_url(spec["follow"], outcome, answer, url, base_url)
        return Page(answer, found, found is not None)
    return _cursor_page(spec, outcome, answer, sent)


def ruled_failure(rule: AnswerRule, outcome: Outcome, now: datetime) -> PollFailure | None:
    """The run's failure when one of the action's answer rules decides the answer (a GraphQL
    throttle in a 200, a SOAP fault in a 500): nothing of it is read as a page, the cursor
    stays; its message names the rule and what its body expression found, else the
    answer's start. A `retry` rule's answer is the partner saying "try again later": after pages of
    the run it ends it `more`, no failure, as a throttle (`throttle`, its Retry-After
    honoured). None for a throttle (a 429, a 2xx over-limit error: `Outcome.throttled`) a
    `fail` rule matched: a throttle is the schedule's to wait out whatever a rule says (rules
    written for deliveries, `{"status": ["4xx"], "then": "fail"}`), read as one by
    `read_page`."""
    status, retry = outcome.status, rule.then is Verdict.RETRY
    throttled = outcome.throttled()
    if throttled and not retry:
        return None
    said = rule.describe(outcome)
    if rule.body is None and (excerpt := outcome.redacted_excerpt(_EXCERPT)):
        # A rule without a body found nothing to quote: the answer's start, as a delivery's
        # `last_error` says it, gives the partner's reason (an expired token, a bad parameter).
        said += f": {excerpt}"
    return PollFailure(
        "rate_limited" if throttled else "answer_rule",
        f"the partner answered {status}, decided by an answer rule{said}",
        status=status,
        retry_after=outcome.retry_after(now) if retry else None,
        throttle=f"{status} {rule.name}" if retry else None,
    )


def _cursor_page(spec: Doc, outcome: Outcome, answer: Any, sent: Any) -> Page:
    """The page of a `from` or `step` cursor: where it says the next call starts."""
    more = partner_flag(_search(spec["more"], answer, "cursor.more")) if spec.get("more") else None
    if spec.get("step"):  # page numbers or offsets: the next is the one sent plus the step
        start = sent if isinstance(sent, int) and not isinstance(sent, bool) else spec["initial"]
        return Page(answer, start + spec["step"], more)
    if (header := _from_header(spec)) is not None:
        return Page(answer, _header_cursor(outcome, header), more)
    cursor = element_text(_search(spec["from"], answer, "cursor.from"))
    if isinstance(cursor, bool) or not isinstance(cursor, str | int | float | None):
        raise PollFailure(
            "bad_cursor",
            f"cursor.from ({spec['from']}) found {_short(cursor)}, not a string or a number",
        )
    return Page(answer, cursor, more)


def _from_header(spec: Doc | None) -> str | None:
    """The answer header a `from` cursor is read from (`header.NAME`), if it is one."""
    given = (spec or {}).get("from")
    if isinstance(given, str) and given.startswith(HEADER_FROM):
        return given.removeprefix(HEADER_FROM)
    return None


def _header_cursor(outcome: Outcome, name: str) -> str | None:
    """The next cursor a partner gives in an answer header (ServiceM8's `x-next-cursor`): its
    value, blanks around it dropped; None when it is absent or blank (no next cursor). Masked
    as the body's data is: the cursor is kept and shown."""
    value = outcome.headers.get(name)
    if value is None or not value.strip():
        return None
    return outcome.redactor.redact(value.strip(), cut=False, whole=True)


def next_url(follow: str, outcome: Outcome, answer: Any, url: str, base_url: str) -> str | None:
    """The next page's whole URL where `follow` says the partner names it (None: the list
    ended): a header's (`Link`: its `rel="next"`, RFC 8288; another header: its value), or
    the body's (`body.` and a JMESPath). A relative one is read against the URL the page was
    asked at (`Vehicles?$skip=20`); its fragment is dropped. PollFailure `bad_cursor` for one
    that is not text, too long, or off the partner's origin (scheme, host and port of its
    base URL): the partner's credentials go with every call, and only its own host gets
    them. The SSRF guard checks it again as it checks every call (`Sender`)."""
    where, _, name = follow.partition(".")
    if where == "header":
        value = outcome.headers.get(name)
        found: Any = None
        if value is not None:  # masked as the body's data is: the cursor is kept and shown
            value = outcome.redactor.redact(value, cut=False, whole=True)
            found = link_target(value) if name.lower() == "link" else value
    else:
        found = element_text(_search(name, answer, "cursor.follow"))
    if found is None or (isinstance(found, str) and not found.strip()):
        return None
    if not isinstance(found, str):
        message = f"cursor.follow ({follow}) found {_short(found)}, not a URL"
        raise PollFailure("bad_cursor", message)
    target = urljoin(url, found.strip()).partition("#")[0]
    if len(target) > MAX_NEXT_URL:
        message = f"the partner's next page URL is {len(target):,} characters long, over the "
        raise PollFailure("bad_cursor", message + f"limit of {MAX_NEXT_URL:,}: not followed")
    if (origin := _origin(target)) is None or origin != _origin(base_url):
        raise PollFailure(
            "bad_cursor",
            f"the partner named its next page at {_short(target)}, off its base URL's scheme, "
            "host and port: not followed (its credentials go only to its own host)",
        )
    return target


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
        scheme, port = parts.scheme.lower(), parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.rstrip(".").lower(), port or _DEFAULT_PORTS[scheme]


@dataclass(frozen=True, slots=True)
class Refused:
    """One record of a page refused on its own (an expression it cannot be read by): kept as
    a rejected item at its index in the partner's list, the page's others go on."""

    number: int
    record: Any
    error: InvalidPayload


def page_items(
    mapping: CompiledMapping, answer: Any, texts: DecodedTexts, *, limit: int
) -> tuple[list[Any], list[Any], list[int], list[Refused]]:
    """The partner's records on the page (before `items: {..., when}` leaves some out), the
    page's items as the target's mapping finds them (InvalidPayload if it cannot, or if they
    are more than `limit`), each one's index in the partner's list, and the records `when`
    cannot be evaluated on; `texts` keeps what from_json()/from_xml() read, for the items'
    own mapping."""
    if isinstance(answer, list) and mapping.source.get("items") is None:
        return answer, answer, list(range(len(answer))), []
    refused: list[tuple[int, InvalidPayload]] = []
    records, items, numbers = mapping.listed_items(
        answer, texts=texts, refused=refused, limit=limit
    )
    return (
        records,
        items,
        list(range(len(items))) if numbers is None else numbers,
        [
            Refused(
                n,
                records[n],
                InvalidPayload(e.detail, e.problems, omitted=e.omitted, reason="mapping"),
            )
            for n, e in refused
        ],
    )


def item_id(expression: str, item: Any) -> str | None:
    """An item's id for deduplication, as text (long or structured ids are hashed);
    InvalidPayload (reason `dedupe`) when it cannot be evaluated on this item."""
    try:
        value = _search(expression, item, "dedupe.by")
    except PollFailure as failure:
        problem = FieldProblem("", failure.message, "expression")
        raise InvalidPayload(failure.message, [problem], reason="dedupe") from None
    if value is None:
        return None
    text = value if isinstance(value, str) else _canonical(value)
    if len(text) > _MAX_ID:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def refused_key(expression: str, record: Any) -> str:
    """How a record refused alone (`Refused`) is remembered by a schedule's dedupe: its id
    (`item_id`) when `dedupe.by` gives one, else its content, so that the same record is
    known again and a changed one (the partner fixed it) is new."""
    try:
        key = item_id(expression, record)
    except InvalidPayload:
        key = None
    return "record:" + digest([record]) if key is None else key


def cursor_key(cursor: Any) -> str:
    """A cursor as a short key (a partner's token may be long): a run names the cursors it
    sent so (`poll.py`)."""
    return hashlib.sha256(_canonical(cursor).encode()).hexdigest()[:16]


def page_mark(records: Sequence[Any], cursor: Any, more: bool) -> str:
    """What a cursor answered, short: its records as the partner listed them and where they
    send the schedule on. A run keeps it per cursor it sent (`poll.py`)."""
    return hashlib.sha256(_canonical([list(records), cursor, more]).encode()).hexdigest()[:16]


def digest(items: Sequence[Any]) -> str:
    return hashlib.sha256(_canonical(list(items)).encode()).hexdigest()


def _canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


def _search(expression: str, value: Any, what: str) -> Any:
    getter, why = compile_expression(expression)
    if getter is None:
        raise PollFailure("expression", f"{what}: {why}")
    try:
        return getter(value, Run())
    except (EvalError, LimitExceeded) as exc:
        raise PollFailure("expression", f"{what} ({expression}) failed: {exc}") from None


def _about(doc: Doc) -> dict[str, Any]:
    return {"id": str(doc["_id"]), "name": doc["name"]}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text[:_EXCERPT]
