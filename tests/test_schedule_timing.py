"""When schedules run: intervals, cron expressions in a time zone (São Paulo by default,
daylight-saving zones handled), what is refused, and the backoff after failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.schedules.timing import backoff_seconds, every_from_doc, parse_every

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
NOW = datetime(2026, 12, 4, 15, 7, 30, tzinfo=UTC)  # a Friday, 12:07:30 in São Paulo


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5), ("30s", 30), ("5m", 300), ("1h", 3600), ("7d", 604800)]
)
def test_intervals_run_that_long_after_the_last_start(text: str, seconds: int) -> None:
    every = parse_every(text)
    assert every.next_after(NOW) == NOW + timedelta(seconds=seconds)
    assert every_from_doc(every.as_doc()) == every


def test_cron_runs_at_the_next_matching_minute_in_sao_paulo_by_default() -> None:
    every = parse_every("*/15 9-17 * * 1-5")
    assert every.timezone == "America/Sao_Paulo"
    assert every.next_after(NOW).astimezone(SAO_PAULO) == datetime(
        2026, 12, 4, 12, 15, tzinfo=SAO_PAULO
    )
    friday_evening = datetime(2026, 12, 4, 20, 50, tzinfo=UTC)  # 17:50 local
    assert every.next_after(friday_evening).astimezone(SAO_PAULO) == datetime(
        2026, 12, 7, 9, 0, tzinfo=SAO_PAULO
    )


def test_cron_never_answers_the_instant_it_is_asked_at() -> None:
    every = parse_every("0 9 * * *")
    nine = datetime(2026, 12, 7, 9, 0, tzinfo=SAO_PAULO)
    assert every.next_after(nine) == datetime(2026, 12, 8, 9, 0, tzinfo=SAO_PAULO)


def test_cron_follows_daylight_saving_in_zones_that_have_it() -> None:
    every = parse_every("30 2 * * *", "America/New_York")
    # 2026-03-08: New York skips 02:00-03:00; the 02:30 run happens at 03:00 local (cron's way)
    before = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # 00:00 EST
    nxt = every.next_after(before).astimezone(ZoneInfo("America/New_York"))
    assert (nxt.month, nxt.day) == (3, 8) and nxt.hour == 3
    after = every.next_after(every.next_after(before))
    assert after.astimezone(ZoneInfo("America/New_York")).hour == 2


@pytest.mark.parametrize(
    ("zone", "night"),
    [
        ("America/New_York", datetime(2026, 11, 1, 3, 0, tzinfo=UTC)),  # falls back at 06:00Z
        ("America/New_York", datetime(2026, 3, 8, 4, 0, tzinfo=UTC)),  # springs forward
        ("Europe/London", datetime(2026, 10, 24, 22, 0, tzinfo=UTC)),
        ("America/Santiago", datetime(2026, 4, 4, 20, 0, tzinfo=UTC)),
    ],
)
@pytest.mark.parametrize("text", ["30 1 * * *", "59 1 * * *", "30 2 * * *", "*/15 1 * * *"])
def test_cron_runs_strictly_after_any_instant_of_a_daylight_saving_night(
    zone: str, night: datetime, text: str
) -> None:
    """Asked from the second pass of a fall-back's repeated hour, `30 1 * * *` answered the
    first pass's 01:30 (already gone): the run was due again at once, back-to-back, until the
    second 01:30. Every minute of the night (and a chain of runs through it) goes forward."""
    every = parse_every(text, zone)
    for minute in range(8 * 60):
        now = night + timedelta(minutes=minute, seconds=17)
        assert every.next_after(now) > now, (text, zone, now)
    run, runs = night, []
    for _ in range(12):
        run = every.next_after(run)
        runs.append(run)
    assert runs == sorted(set(runs))


def test_a_fixed_time_cron_asked_in_the_repeated_hour_runs_the_next_day() -> None:
    every = parse_every("30 1 * * *", "America/New_York")
    # 2026-11-01 06:10Z is 01:10 EST, the second 01:00-02:00; 01:30 EDT (05:30Z) ran already
    nxt = every.next_after(datetime(2026, 11, 1, 6, 10, tzinfo=UTC))
    assert nxt == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)  # 01:30 EST, once a day as cron


@pytest.mark.parametrize(
    ("text", "zone", "asked", "expected"),
    [
        # New York's repeated 01:00-02:00, asked at 01:05 EST (its second pass): every time of
        # the list is the first pass's, gone; the next run is tomorrow's first one
        (
            "0,10,20,30,40,50 1 * * *",
            "America/New_York",
            datetime(2026, 11, 1, 6, 5, tzinfo=UTC),
            datetime(2026, 11, 2, 6, 0, tzinfo=UTC),
        ),
        (
            "5,20,35,50 1 * * *",
            "America/New_York",
            datetime(2026, 11, 1, 6, 1, tzinfo=UTC),
            datetime(2026, 11, 2, 6, 5, tzinfo=UTC),
        ),
        (
            "0-59 1 * * *",
            "America/New_York",
            datetime(2026, 11, 1, 6, 5, tzinfo=UTC),
            datetime(2026, 11, 2, 6, 0, tzinfo=UTC),
        ),
        # Lord Howe's repeated half hour (02:00 +11 -> 01:30 +10:30), asked at 01:31 2nd pass
        (
            "30,35,40,45,50,55 1 * * *",
            "Australia/Lord_Howe",
            datetime(2026, 4, 4, 15, 1, tzinfo=UTC),
            datetime(2026, 4, 5, 15, 0, tzinfo=UTC),
        ),
        # Troll falls back two hours (02:00 +02 -> 00:00 +00): 120 gone minutes to walk
        (
            "* 0,1 * * *",
            "Antarctica/Troll",
            datetime(2026, 10, 25, 1, 59, 30, tzinfo=UTC),
            datetime(2026, 10, 26, 0, 0, tzinfo=UTC),
        ),
    ],
)
def test_a_cron_list_of_many_times_in_the_repeated_hour_runs_the_next_day(
    text: str, zone: str, asked: datetime, expected: datetime
) -> None:
    """The fixed-time walk gave up after 4 gone answers (AssertionError): a run's release
    raised and the schedule stayed running through the repeated hour; a PATCH answered 500."""
    assert parse_every(text, zone).next_after(asked) == expected


def test_a_cron_walk_that_finds_nothing_past_the_instant_reads_it_at_its_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Never an exception for a run's release: past the step bound, the next time is read at
    the instant's own offset, strictly after it."""
    monkeypatch.setattr("gateway.schedules.timing._CRON_STEPS", 1)
    asked = datetime(2026, 11, 1, 6, 5, 17, tzinfo=UTC)  # 01:05:17 EST, second pass
    every = parse_every("0-59 1 * * *", "America/New_York")
    assert every.next_after(asked) == datetime(2026, 11, 1, 6, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "zone", "message"),
    [
        ("2s", None, "from 5s to 7d"),
        ("8d", None, "from 5s to 7d"),
        ("every minute", None, "5 fields"),
        ("61 * * * *", None, "cron expression"),
        ("* * * * *", "Mars/Olympus", "unknown time zone"),
        ("30s", "Mars/Olympus", "unknown time zone"),  # an interval keeps its zone: checked
        ("0 0 30 2 *", None, "cron expression"),
    ],
)
def test_what_cannot_be_a_schedule_says_why(text: str, zone: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_every(text, zone)


def test_backoff_grows_then_stays_hourly_and_honours_retry_after_up_to_an_hour() -> None:
    half = lambda: 0.5  # noqa: E731 - no jitter
    assert [backoff_seconds(n, None, half) for n in (1, 2, 3, 4, 5, 6, 7, 50)] == [
        5,
        30,
        120,
        600,
        1800,
        3600,
        3600,
        3600,
    ]
    assert backoff_seconds(1, 120, half) == 120
    assert backoff_seconds(1, 7 * 86400, half) == 3600
    assert (
        4 <= backoff_seconds(1, None, lambda: 0.0) <= backoff_seconds(1, None, lambda: 1.0) <= 6.001
    )
