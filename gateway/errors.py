"""The gateway's error tree; `web/problems.py` turns it into RFC 9457 bodies at one boundary.

    GatewayError                      500  anything we raise on purpose
    ├── BadRequest                    400  malformed body, bad query parameter
    ├── Unauthorized                  401  missing/invalid/revoked token, unknown trigger
    ├── Forbidden                     403  valid credentials, not for this
    ├── NotFound                      404  no such resource in this tenant
    ├── MethodNotAllowed              405
    ├── RequestTimeout                408  the client sent its body too slowly
    ├── Conflict                      409  duplicate natural key, resource in use
    │   └── StillProcessing           409  a call with the same key is running (carries retry_after)
    ├── PayloadTooLarge               413
    ├── UriTooLong                    414  a request line the HTTP parser refuses (web/server.py)
    ├── UnsupportedMediaType          415
    │   └── UnsupportedContentCoding  415  a Content-Encoding we cannot decode (names those we can)
    ├── ExpectationFailed             417  an Expect other than 100-continue
    ├── HeaderFieldsTooLarge          431  a header line the HTTP parser refuses (web/server.py)
    ├── InvalidPayload                422  schema, identifier or mapping failure (carries problems)
    ├── RateLimited                   429  (carries retry_after)
    ├── SecretDamaged                 500  a stored secret a send needs is damaged (keys.py)
    ├── PartnerError                  502  a partner answered badly or not at all
    ├── PartnerTimeout                504
    ├── NotImplementedCoding          501  a transfer coding before the final chunked
    └── Unavailable                   503  not ready to serve (carries retry_after)
        ├── StoreUnavailable          503  the database cannot be reached
        └── PartnerUnavailable        503  our guard holds calls to a partner (open circuit,
                                           disabled, its token endpoint asked us to wait)

No aiohttp or pymongo imports here: adapters translate their libraries' errors into this tree.
Every problem `type` the gateway answers is `PROBLEM_BASE` + the `slug` of a class of this tree
(`problem_types`); docs/api.md "Problem types" lists them all (tests/test_problem_types.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

# What a problem echoes of the input (an unknown key, a bad value) is cut: a 20,000-character
# key came back three times (pointer, message, detail), 60 KB answering 20 KB.
_LONG_RUN = re.compile(r"\S{129,}")
_MAX_TEXT = 1024

PROBLEM_BASE: Final = "https://rabbot.dev/problems/"


def clipped(text: str) -> str:
    """`text` with each run of more than 128 non-blank characters cut to its first 64, then
    the whole cut to 1,024 characters; "…" marks a cut. For every text a problem shows."""
    if len(text) <= 128:
        return text
    text = _LONG_RUN.sub(lambda run: run.group()[:64] + "…", text)
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "…"


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One validation problem. `pointer` is a JSON Pointer into the offending document;
    `schema_at`, for one a schema's keyword found, that keyword's place in the schema (its
    JSON Pointer: `/then/properties/eixos/minimum`), which tells two problems of one value
    and keyword apart (`schemas.problems.left_as_stored`). Never shown."""

    pointer: str
    message: str
    keyword: str
    extra: dict[str, Any] = field(default_factory=dict)
    schema_at: str = field(default="", compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pointer": clipped(self.pointer),
            "message": clipped(self.message),
            "keyword": self.keyword,
            **self.extra,
        }


def empty_keyword(value: Any) -> str:
    """The keyword of a required text (a credential: a partner's, a channel's SMTP login)
    that is missing or empty: left out (a form's field left empty, which the form does not
    send) is `required`; given empty, `minLength`; anything but text, `type`."""
    return "required" if value is None else "minLength" if value == "" else "type"


class GatewayError(Exception):
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal server error"
    slug: ClassVar[str] = "internal"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 members this error contributes (the web layer adds `instance`)."""
        return {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": clipped(self.detail),
            **self.extra,
        }


class BadRequest(GatewayError):
    status, title, slug = 400, "Bad request", "bad-request"


class Unauthorized(GatewayError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str = "", *, challenge: str = "Bearer", **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.challenge = challenge


class Forbidden(GatewayError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(GatewayError):
    status, title, slug = 404, "Not found", "not-found"


class NoActiveVersion(NotFound):
    """A versioned document (a mapping, a flow) that exists with no active version: nothing
    to show by default, though it may be deleted."""


class MethodNotAllowed(GatewayError):
    status, title, slug = 405, "Method not allowed", "method-not-allowed"

    def __init__(self, detail: str = "", *, allowed: Sequence[str] = (), **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.allowed = tuple(allowed)


class RequestTimeout(GatewayError):
    status, title, slug = 408, "Request timeout", "request-timeout"


class Conflict(GatewayError):
    status, title, slug = 409, "Conflict", "conflict"


class StillProcessing(Conflict):
    """A call with the same idempotency key is being processed: retry after `retry_after`
    seconds, when it is answered or its marker can be taken over."""

    def __init__(self, detail: str = "", *, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class PreconditionFailed(GatewayError):
    """A change sent with `If-Match` to a document that is no longer the one it names."""

    status, title, slug = 412, "Precondition failed", "precondition-failed"


class PayloadTooLarge(GatewayError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class UriTooLong(GatewayError):
    status, title, slug = 414, "URI too long", "uri-too-long"


class UnsupportedMediaType(GatewayError):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class UnsupportedContentCoding(UnsupportedMediaType):
    """RFC 9110 §15.5.16: answered with `Accept-Encoding` listing the codings we decode."""

    def __init__(self, detail: str, *, supported: Sequence[str], **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.supported = tuple(supported)


class ExpectationFailed(GatewayError):
    status, title, slug = 417, "Expectation failed", "expectation-failed"


class HeaderFieldsTooLarge(GatewayError):
    status, title, slug = 431, "Request header fields too large", "header-fields-too-large"


MAX_PROBLEMS: Final = 100
"""The problems an InvalidPayload lists: the first 100, and how many more (`omitted`). A body
of 250,000 wrong array items listed every one, a 25 MB answer (and a rejected record too large
for the database to keep) built in seconds of the event loop."""


class InvalidPayload(GatewayError):
    """Its `problems` are the first MAX_PROBLEMS it was given; `omitted` counts the others
    (those given past the cap, plus `omitted` found and never explained, `CompiledSchema`)."""

    status, title, slug = 422, "Invalid payload", "invalid-payload"

    def __init__(
        self,
        detail: str = "",
        problems: Sequence[FieldProblem] = (),
        *,
        omitted: int = 0,
        **extra: Any,
    ) -> None:
        super().__init__(detail, **extra)
        self.problems = list(problems[:MAX_PROBLEMS])
        self.omitted = omitted + max(0, len(problems) - MAX_PROBLEMS)

    def restated(
        self,
        detail: str | None = None,
        problems: Sequence[FieldProblem] | None = None,
        **extra: Any,
    ) -> InvalidPayload:
        """The same refusal said again (another detail, its problems moved or reworded,
        more `extra`), its count of omitted problems kept: every 422 that passes a refusal
        on counts what its list leaves out."""
        return InvalidPayload(
            self.detail if detail is None else detail,
            self.problems if problems is None else problems,
            omitted=self.omitted,
            **{**self.extra, **extra},
        )

    def problem(self, listed: int = MAX_PROBLEMS) -> dict[str, Any]:
        """The problem body (`listing`)."""
        return {**super().problem(), **self.listing(listed)}

    def listing(self, listed: int = MAX_PROBLEMS) -> dict[str, Any]:
        """`errors`: at most `listed` problems (a batch's items share a budget of
        MAX_PROBLEMS); `errors_omitted`, when there are others, counts them."""
        shown = self.problems[: max(0, listed)]
        omitted = self.omitted + len(self.problems) - len(shown)
        listing: dict[str, Any] = {"errors": [p.as_dict() for p in shown]}
        return listing | ({"errors_omitted": omitted} if omitted else {})


class SharedListing:
    """Problem bodies of a batch's items, listing MAX_PROBLEMS problems over them all (500
    items of 100 each were 50,000): each item past the budget lists its first problem (what
    is wrong with it, at least) and counts the others."""

    def __init__(self) -> None:
        self._room = MAX_PROBLEMS

    def problem(self, error: GatewayError) -> dict[str, Any]:
        if not isinstance(error, InvalidPayload):
            return error.problem()
        return {**GatewayError.problem(error), **self.listing(error)}

    def listing(self, error: InvalidPayload) -> dict[str, Any]:
        """`error.listing`, within what is left of the budget, its first problem at least."""
        listing = error.listing(max(1, self._room))
        self._room -= len(listing["errors"])
        return listing


class OverBudget(GatewayError):
    """A request whose answer would cost more than its budget to compute (a diff of two
    versions with too many lines to pair or too long to find): refused, not answered slowly."""

    status, title, slug = 422, "Over its budget", "over-budget"


class RateLimited(GatewayError):
    status, title, slug = 429, "Too many requests", "rate-limited"

    def __init__(self, detail: str = "", *, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class SecretDamaged(GatewayError):
    """A stored secret a send needs does not open, though this process's GATEWAY_SECRET_KEY
    opens the gateway's key check: the secret is at fault, not the key (`keys.StoredSecrets`);
    saved again, it works."""

    status, title, slug = 500, "Stored secret damaged", "secret-damaged"


class NotImplementedCoding(GatewayError):
    """RFC 9112 §6.1: a transfer coding the server does not understand is a 501."""

    status, title, slug = 501, "Not implemented", "not-implemented"


class PartnerError(GatewayError):
    status, title, slug = 502, "Partner error", "partner-error"


class PartnerTimeout(PartnerError):
    status, title, slug = 504, "Partner timeout", "partner-timeout"


class Unavailable(GatewayError):
    status, title, slug = 503, "Service unavailable", "unavailable"

    def __init__(self, detail: str = "", *, retry_after: int = 5, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class KeyRefused(Unavailable):
    """This process's GATEWAY_SECRET_KEY was found not to open what the database holds: a
    secret it sealed could not be opened by the others."""

    title, slug = "Secret key refused", "key-refused"


class PartnerUnavailable(Unavailable):
    title, slug = "Partner unavailable", "partner-unavailable"


class KeysUnavailable(Unavailable):
    """A partner's (or the identity provider's) signing keys cannot be fetched now."""


class EventsBacklogged(Unavailable):
    """An entity's events wait to be relayed: writes that add more wait (backpressure)."""


class EntityContended(Unavailable):
    """A write lost every round to other processes' writes of the same entity: nothing of it
    was stored; the same write succeeds once they are done."""

    title, slug = "Entity busy", "entity-contended"

    def __init__(self, detail: str = "", *, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)


class StoreUnavailable(Unavailable):
    title, slug = "Database unavailable", "store-unavailable"

    def __init__(
        self,
        detail: str = "",
        *,
        retry_after: int = 5,
        deadline: bool = False,
        answered: bool = False,
        refused: bool = False,
        **extra: Any,
    ) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        # True when an operation's deadline passed (a slow or frozen database), False when no
        # server could be reached or the connection was lost.
        self.deadline = deadline
        # True when the server answered, failing the command (an error code, a failed write
        # concern): it is reachable, so it is not known down; a ping decides.
        self.answered = answered
        # True when that error was not about the server's state (a stepping down, a full
        # disk, a failed write concern) but may be about what the command carried (an
        # InternalError on one document): background work may set that work aside.
        self.refused = refused


def problem_types() -> dict[str, type[GatewayError]]:
    """Each problem type's slug and the class that first defines it, over the whole tree (the
    subclasses of the modules imported so far: import the package's modules first)."""
    found: dict[str, type[GatewayError]] = {}
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        cls = pending.pop(0)
        found.setdefault(cls.slug, cls)
        pending.extend(cls.__subclasses__())
    return found
