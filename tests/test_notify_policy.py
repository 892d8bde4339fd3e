"""Cooldowns and quiet hours decide whether a notification goes now, later or not at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import InvalidPayload
from gateway.notify.policy import NotifySettings, decide, parse_settings

SP = {"start": "22:00", "end": "07:00", "timezone": "America/Sao_Paulo"}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_second_alert_within_the_cooldown_is_suppressed() -> None:
    settings = parse_settings({"cooldown_seconds": 600})
    sent = _at("2026-11-18T12:00:00+00:00")
    inside = decide(sent + timedelta(minutes=5), "push", last_sent=sent, settings=settings)
    assert inside.action == "suppress" and inside.until == sent + timedelta(minutes=10)
    after = decide(sent + timedelta(minutes=10), "push", last_sent=sent, settings=settings)
    assert after.action == "send"


def test_a_step_cooldown_overrides_the_tenant_default() -> None:
    sent = _at("2026-11-18T12:00:00+00:00")
    decision = decide(
        sent + timedelta(minutes=5),
        "sms",
        last_sent=sent,
        settings=NotifySettings(),
        cooldown=timedelta(minutes=1),
    )
    assert decision.action == "send"


def test_quiet_hours_overnight_delay_until_the_morning_in_the_tenant_zone() -> None:
    settings = parse_settings({"quiet_hours": SP})
    late = _at("2026-11-18T23:30:00-03:00")
    decision = decide(late, "push", last_sent=None, settings=settings)
    assert decision.action == "delay"
    assert decision.until == _at("2026-11-19T07:00:00-03:00")
    early = decide(_at("2026-11-19T06:59:00-03:00"), "push", last_sent=None, settings=settings)
    assert early.until == _at("2026-11-19T07:00:00-03:00")
    day = decide(_at("2026-11-19T07:00:00-03:00"), "push", last_sent=None, settings=settings)
    assert day.action == "send"


def test_quiet_hours_within_one_day_and_suppress() -> None:
    body = {
        "quiet_hours": {"start": "12:00", "end": "14:00", "timezone": "UTC", "during": "suppress"}
    }
    settings = parse_settings(body)
    lunch = decide(_at("2026-11-18T13:00:00+00:00"), "sms", last_sent=None, settings=settings)
    assert lunch.action == "suppress" and lunch.until == _at("2026-11-18T14:00:00+00:00")
    evening = decide(_at("2026-11-18T20:00:00+00:00"), "sms", last_sent=None, settings=settings)
    assert evening.action == "send"


def test_quiet_hours_spare_other_channels_and_urgent_alerts() -> None:
    settings = parse_settings({"quiet_hours": {**SP, "channels": ["push", "sms"]}})
    night = datetime(2026, 11, 19, 3, 0, tzinfo=UTC)  # 00:00 in São Paulo
    assert decide(night, "email", last_sent=None, settings=settings).action == "send"
    assert decide(night, "push", last_sent=None, settings=settings, urgent=True).action == "send"


def test_settings_round_trip_and_defaults() -> None:
    settings = parse_settings({"quiet_hours": SP})
    assert settings.as_dict() == {
        "cooldown_seconds": 3600,
        "quiet_hours": {**SP, "during": "delay", "channels": ["email", "push", "sms"]},
    }
    assert parse_settings(settings.as_dict()) == settings


def test_bad_settings_list_every_problem() -> None:
    with pytest.raises(InvalidPayload) as caught:
        parse_settings(
            {
                "cooldown_seconds": -1,
                "quiet_hours": {
                    "start": "25:00",
                    "end": "7h",
                    "timezone": "Mars/Olympus",
                    "during": "later",
                    "channels": ["fax"],
                    "mood": "calm",
                },
            }
        )
    assert {p.pointer for p in caught.value.problems} == {
        "/cooldown_seconds",
        "/quiet_hours/start",
        "/quiet_hours/end",
        "/quiet_hours/timezone",
        "/quiet_hours/during",
        "/quiet_hours/channels",
        "/quiet_hours/mood",
    }


def _quiet_in(zone: str, start: str, end: str) -> NotifySettings:
    quiet = {"start": start, "end": end, "timezone": zone, "during": "delay"}
    return parse_settings({"quiet_hours": {**quiet, "channels": ["push"]}})


def test_a_hold_in_the_repeated_hour_of_a_fall_back_night_ends_in_the_future() -> None:
    """2027-11-07, New York: 01:59 EDT → 01:00 EST. At 01:15 EST (06:15 UTC), inside
    01:00-01:45, the hold ended at 01:45 *EDT* (05:45 UTC), half an hour in the past: due
    again at once, judged, held again in the past, a loop of claims until 06:45 UTC."""
    settings = _quiet_in("America/New_York", "01:00", "01:45")
    now = _at("2027-11-07T06:15:00+00:00")
    decision = decide(now, "push", last_sent=None, settings=settings)
    assert decision.action == "delay" and decision.until == _at("2027-11-07T06:45:00+00:00")
    first_pass = decide(_at("2027-11-07T05:15:00+00:00"), "push", last_sent=None, settings=settings)
    assert first_pass.until == _at("2027-11-07T05:45:00+00:00")  # 01:45 EDT


def test_a_hold_whose_end_the_clock_skips_ends_when_the_clock_passes_it() -> None:
    """2027-03-14, New York: 01:59 EST → 03:00 EDT. Quiet 22:00-02:30 is over at 03:00 EDT
    (07:00 UTC), and `decide` says `send` from then; a message held at 01:00 EST was held to
    02:30 read as EST, 03:30 EDT (07:30 UTC)."""
    settings = _quiet_in("America/New_York", "22:00", "02:30")
    decision = decide(_at("2027-03-14T06:00:00+00:00"), "push", last_sent=None, settings=settings)
    assert decision.action == "delay" and decision.until == _at("2027-03-14T07:00:00+00:00")


@pytest.mark.parametrize(
    ("zone", "nights"),
    [
        ("America/New_York", ["2027-03-14", "2027-11-07"]),
        ("America/Santiago", ["2027-04-04", "2027-09-05"]),  # the clock changes at midnight
        ("Australia/Lord_Howe", ["2027-04-04", "2027-10-03"]),  # by half an hour
    ],
)
@pytest.mark.parametrize(
    ("start", "end"),
    [("01:00", "01:45"), ("22:00", "02:30"), ("00:15", "00:30"), ("23:30", "02:00")],
)
def test_quiet_hours_across_a_clock_change_hold_until_the_first_moment_outside(
    zone: str, nights: list[str], start: str, end: str
) -> None:
    """Every five minutes around a night the clock changes: a held message is held to a time
    ahead, when quiet hours are over, and not a second longer."""
    settings = _quiet_in(zone, start, end)
    for night in nights:
        now = _at(f"{night}T00:00:00+00:00") - timedelta(hours=14)
        for _ in range(12 * 40):
            now += timedelta(minutes=5)
            decision = decide(now, "push", last_sent=None, settings=settings)
            if decision.action != "delay":
                continue
            assert decision.until is not None and decision.until > now, (now, decision)
            after = decide(decision.until, "push", last_sent=None, settings=settings)
            before = decide(
                decision.until - timedelta(seconds=1), "push", last_sent=None, settings=settings
            )
            assert (after.action, before.action) == ("send", "delay"), (now, decision.until)
