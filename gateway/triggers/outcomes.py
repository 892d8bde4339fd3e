"""The `outcome` label of `gateway_trigger_requests_total`: a small, fixed set."""

from __future__ import annotations

from typing import Final

from gateway.errors import (
    BadRequest,
    Conflict,
    EntityContended,
    EventsBacklogged,
    Forbidden,
    GatewayError,
    InvalidPayload,
    KeysUnavailable,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    StoreUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)

_BY_CLASS: Final = (
    (Unauthorized, "rejected_auth"),
    (Forbidden, "rejected_auth"),
    (MethodNotAllowed, "rejected_method"),
    (PayloadTooLarge, "rejected_size"),
    (UnsupportedMediaType, "rejected_format"),
    (BadRequest, "rejected_format"),
    (RateLimited, "rate_limited"),
    (StoreUnavailable, "unavailable"),
    (KeysUnavailable, "keys_unavailable"),  # the partner's JWKS cannot be fetched now
    (EventsBacklogged, "backlogged"),  # the entity's events wait to be relayed
    (EntityContended, "contended"),  # other processes kept writing the entity
    (RequestTimeout, "timeout"),  # the body took too long to arrive
    (NotFound, "not_found"),
    (Conflict, "conflict"),
)
_REASONS: Final = frozenset({"schema", "mapping", "entity", "idempotency"})


def outcome_of(error: GatewayError) -> str:
    if isinstance(error, InvalidPayload):
        reason = error.extra.get("reason")
        return f"rejected_{reason}" if reason in _REASONS else "rejected_payload"
    for cls, outcome in _BY_CLASS:
        if isinstance(error, cls):
            return outcome
    return "error"
