from datetime import UTC, datetime, timedelta

import pytest

from gateway.actions.catalog import DEFAULT_SCHEDULE
from gateway.delivery.retry import DEFAULT_MAX_RETRY_AFTER, next_attempt_at
from gateway.outbound.sender import Outcome
from gateway.outbound.verdict import ErrorKind, Verdict, classify, parse_retry_after

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def no_jitter() -> float:
    return 0.5  # the midpoint: 1 + 0.2 * (2 * 0.5 - 1) == 1


def seconds_after_now(when: datetime | None) -> float:
    assert when is not None
    return (when - NOW).total_seconds()


def test_default_retries_are_immediately_then_5s_to_10h_after_the_first_attempt() -> None:
    """SPEC §5: retries "immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h": the
    first attempt fails, the first retry goes at once; nine attempts in all."""
    delays = [
        seconds_after_now(next_attempt_at(failed, DEFAULT_SCHEDULE, NOW, rng=no_jitter))
        for failed in range(1, 9)
    ]
    assert delays == [0, 5, 300, 1800, 7200, 18000, 36000, 36000]


def test_delivery_dead_after_schedule_exhausted() -> None:
    assert next_attempt_at(9, DEFAULT_SCHEDULE, NOW) is None
    assert next_attempt_at(1, (), NOW) is None
    assert next_attempt_at(9, DEFAULT_SCHEDULE, NOW, retry_after=10) is None


def test_no_attempt_made_is_a_bug() -> None:
    with pytest.raises(ValueError):
        next_attempt_at(0, DEFAULT_SCHEDULE, NOW)


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 240.0), (1.0, 360.0), (0.25, 270.0)])
def test_jitter_stays_within_twenty_percent(draw: float, expected: float) -> None:
    when = next_attempt_at(3, DEFAULT_SCHEDULE, NOW, rng=lambda: draw)
    assert seconds_after_now(when) == pytest.approx(expected)


def test_retry_after_longer_than_schedule_is_honoured() -> None:
    when = next_attempt_at(2, DEFAULT_SCHEDULE, NOW, retry_after=120, rng=no_jitter)
    assert seconds_after_now(when) == 120
    when = next_attempt_at(1, DEFAULT_SCHEDULE, NOW, retry_after=120, rng=no_jitter)
    assert seconds_after_now(when) == 120  # the immediate retry waits what the partner asks


def test_retry_after_never_brings_an_attempt_forward() -> None:
    when = next_attempt_at(4, DEFAULT_SCHEDULE, NOW, retry_after=0, rng=no_jitter)
    assert seconds_after_now(when) == 1800


def test_hostile_retry_after_is_clamped() -> None:
    week = 7 * 86400.0
    when = next_attempt_at(2, DEFAULT_SCHEDULE, NOW, retry_after=week, rng=no_jitter)
    assert seconds_after_now(when) == DEFAULT_MAX_RETRY_AFTER
    when = next_attempt_at(
        2, DEFAULT_SCHEDULE, NOW, retry_after=week, max_retry_after=60, rng=no_jitter
    )
    assert seconds_after_now(when) == 60
    when = next_attempt_at(2, DEFAULT_SCHEDULE, NOW, retry_after=float("inf"), rng=no_jitter)
    assert seconds_after_now(when) == 5


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Sun, 01 Mar 2026 12:05:00 GMT", 300.0),
        ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),  # in the past: now
        ("Sunday, 01-Mar-26 12:01:00 GMT", 60.0),  # RFC 850, still legal to receive
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("9" * 5000, None),  # int() would raise on this many digits
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected


def test_parse_retry_after_date_is_relative_to_now() -> None:
    later = NOW + timedelta(minutes=1)
    assert parse_retry_after("Sun, 01 Mar 2026 12:05:00 GMT", later) == 240.0


@pytest.mark.parametrize(
    ("status", "error", "verdict"),
    [
        (200, None, Verdict.SUCCESS),
        (204, None, Verdict.SUCCESS),
        (200, "too_large", Verdict.SUCCESS),  # the partner said yes; only the body was big
        (None, "timeout", Verdict.RETRY),
        (None, "connect", Verdict.RETRY),
        (None, "reset", Verdict.RETRY),
        (None, "invalid_response", Verdict.RETRY),
        (None, "rate_limited", Verdict.RETRY),
        (None, "circuit_open", Verdict.RETRY),
        (None, "auth_failed", Verdict.RETRY),
        (None, "auth_refused", Verdict.FAIL),
        (None, "blocked", Verdict.FAIL),
        (408, None, Verdict.RETRY),
        (425, None, Verdict.RETRY),
        (429, None, Verdict.RETRY),
        (500, None, Verdict.RETRY),
        (503, None, Verdict.RETRY),
        (400, None, Verdict.FAIL),
        (401, None, Verdict.FAIL),
        (404, None, Verdict.FAIL),
        (422, None, Verdict.FAIL),
        (302, None, Verdict.FAIL),
        (410, None, Verdict.GONE),
    ],
)
def test_classify(status: int | None, error: str | None, verdict: Verdict) -> None:
    assert classify(status, error) is verdict  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "retry_in", "held"),
    [
        ("circuit_open", 29.2, ("circuit_open", 30, 503)),
        ("rate_limited", 0.2, ("rate_limited", 1, 429)),  # never less than a second
        ("auth_waiting", 119.5, ("auth_waiting", 120, 503)),
        ("blocked", None, None),  # no wait mends it: a permanent failure
        ("auth_failed", 120.0, None),  # the token endpoint was asked: an attempt
        ("timeout", None, None),
    ],
)
def test_only_a_refusal_of_our_own_guard_for_a_while_is_a_hold(
    error: ErrorKind, retry_in: float | None, held: tuple[str, int, int] | None
) -> None:
    hold = Outcome(error=error, message="why", retry_in=retry_in).hold
    if held is None:
        assert hold is None
        return
    assert hold is not None
    assert (hold.error, hold.seconds, hold.problem("x").status) == held
    assert hold.describe() == f"not sent: why, retry in {held[1]} s"
