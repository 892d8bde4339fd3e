"""What a partner's answer means: the verdict on an outcome, the kinds of failure, whether it
is a throttle, and how long a partner asks us to wait (`Retry-After`)."""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal

ErrorKind = Literal[
    "timeout",  # no answer within the partner's timeout (connect or total)
    "connect",  # DNS failure, refused, unreachable
    "reset",  # the connection dropped mid-request or mid-response
    "blocked",  # refused by the SSRF guard or an unusable URL: never sent
    "too_large",  # the answer's body passed our read cap (status still known)
    "invalid_response",  # not HTTP, or a JSON body that does not parse (status may be known)
    "auth_failed",  # the partner's OAuth2 token endpoint did not give us a token (for now)
    "auth_refused",  # the token endpoint refused our credentials: a configuration error
    "auth_waiting",  # the token endpoint asked us to wait (Retry-After) and we do: never sent
    "rate_limited",  # our own per-partner rate/concurrency limit: never sent
    "circuit_open",  # the partner's circuit breaker is open: never sent
    "partner_disabled",  # the partner is disabled (by an admin, or after failing): never sent
    "overloaded",  # this process's own outbound capacity is taken (by any partner): never sent
]

# Error kinds of a request our own guard held back for a while (it names how long): nothing
# went out, and the same request is to be made again then, without counting as an attempt.
HELD: frozenset[ErrorKind] = frozenset(
    {"rate_limited", "circuit_open", "auth_waiting", "partner_disabled", "overloaded"}
)
# Error kinds for which no request reached the partner: the held ones, and `blocked`, which
# never will (a permanent failure).
NOT_SENT: frozenset[ErrorKind] = HELD | {"blocked"}
# Error kinds of a call that ended at the partner's credentials: its token endpoint (or
# Geotab's Authenticate) gave no usable token, or refused ours. Sent (to the token endpoint),
# but no request went to the partner's API.
AT_CREDENTIALS: frozenset[ErrorKind] = frozenset({"auth_failed", "auth_refused"})


class Verdict(enum.StrEnum):
    SUCCESS = "success"  # 2xx
    RETRY = "retry"  # worth another attempt later
    FAIL = "fail"  # the partner refused this request; retrying will not help
    GONE = "gone"  # 410: the partner wants no more of these; disable the subscription


_RETRY_STATUSES = frozenset({408, 425, 429})
# Failures without an answer that no retry mends: an unusable URL, refused credentials (a
# revoked or wrong key waits for an admin, not for 38 hours of retries).
_NEVER_BETTER: frozenset[ErrorKind] = frozenset({"blocked", "auth_refused"})


def classify(status: int | None, error: ErrorKind | None) -> Verdict:
    """What a send outcome means for the delivery.

    When the partner answered with a status, the status decides, even if its body was then
    too large, cut short or not JSON: the partner did say whether it took the request.
    Without a status, everything is transient except a URL the SSRF guard refuses and
    credentials the token endpoint refuses.
    """
    if status is None:
        return Verdict.FAIL if error in _NEVER_BETTER else Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.SUCCESS
    if status == 410:
        return Verdict.GONE
    if status in _RETRY_STATUSES or status >= 500:
        return Verdict.RETRY
    # 1xx/3xx (redirects are not followed, see ssrf.py) and the other 4xx.
    return Verdict.FAIL


def request_result(status: int | None, error: ErrorKind | None, verdict: Verdict) -> str:
    """The `result` label of `gateway_partner_requests_total`, one vocabulary for every mode
    (proxy, deliver, schedule, flow, notify): the verdict on an answer (`success`, `retry`,
    `fail`, `gone`), or, for a call that got none, its error kind (`timeout`, `connect`,
    `reset`, `blocked`, `rate_limited`, `circuit_open`, `auth_failed`, ...). `verdict` is the
    caller's, with the action's own idea of success."""
    if status is None:
        return str(error or "connect")
    return verdict.value


# The names a JSON-RPC partner gives its throttle (`error.errors[].name`): MyGeotab's
# "When a rate limit is exceeded, an OverLimitException error is returned" (its SDK guide).
OVER_LIMIT_ERRORS: Final = frozenset({"OverLimitException"})


def throttled(status: int | None, body: Any, *, retry_after: bool, reported: bool = False) -> bool:
    """Whether an answer is the partner asking us to slow down, not a failure of the request:
    a 429; or a 2xx reporting an error (JSON-RPC partners answer every error with HTTP 200)
    that names an over-limit error (`OVER_LIMIT_ERRORS`), or that comes with a `Retry-After`
    (`retry_after`: the answer has one). The error is the answer's JSON-RPC `error` object,
    or what the caller knows to be one (`reported`: a schedule's `error` found one)."""
    if status == 429:
        return True
    if status is None or not 200 <= status < 300:
        return False
    if OVER_LIMIT_ERRORS.intersection(error_names(body)):
        return True
    return retry_after and (reported or _rpc_error(body) is not None)


def error_names(body: Any) -> list[str]:
    """The names of a JSON-RPC error's inner errors (Geotab: `error.errors[].name`), else the
    error's own `name`."""
    error = _rpc_error(body)
    if error is None:
        return []
    inner = error.get("errors")
    names = [e.get("name") for e in inner if isinstance(e, dict)] if isinstance(inner, list) else []
    found = [n for n in names if isinstance(n, str)]
    if not found and isinstance(error.get("name"), str):
        found.append(error["name"])
    return found


def _rpc_error(body: Any) -> dict[str, Any] | None:
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


_DELTA_SECONDS = re.compile(r"[0-9]{1,10}")


def parse_retry_after(header: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or HTTP-date); None if unusable.

    `now` must be timezone-aware. A date in the past means "now" (0 seconds).
    """
    if header is None:
        return None
    value = header.strip()
    # Digits only, bounded: int() of a 5,000-digit string raises, and 10 digits is 300 years.
    if _DELTA_SECONDS.fullmatch(value):
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses as naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)
