"""When a notification may go out: cooldowns per (vehicle, condition) and a tenant's quiet
hours. Pure: the caller brings the time, the last send and the settings.

    decide(now, channel_type, last_sent=, settings=, cooldown=, urgent=) -> Decision
        send      go now (then note the send for the cooldown)
        suppress  an alert for the same key went out less than `cooldown` ago, or quiet hours
                  say "suppress"
        delay     quiet hours say "delay": try again at `until` (the end of the quiet period)

Settings (`PUT /api/v1/notification-settings`):

    {"cooldown_seconds": 3600,
     "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "America/Sao_Paulo",
                     "during": "delay" | "suppress", "channels": ["push", "sms"]}}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from gateway.clock import zone_named
from gateway.errors import FieldProblem, InvalidPayload
from gateway.formats.json_tree import is_text, whole_number

DEFAULT_COOLDOWN = timedelta(hours=1)
MAX_COOLDOWN = timedelta(days=30)
CHANNEL_TYPES = ("email", "push", "sms")
_SECOND = timedelta(seconds=1)
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: time
    end: time
    zone: ZoneInfo
    during: Literal["delay", "suppress"]
    channels: frozenset[str]

    def end_if_inside(self, now: datetime) -> datetime | None:
        """The end of the quiet period `now` falls in, or None outside quiet hours."""
        local = now.astimezone(self.zone)
        clock = local.time().replace(tzinfo=None)
        overnight = self.start > self.end
        inside = (
            (clock >= self.start or clock < self.end)
            if overnight
            else self.start <= clock < self.end
        )
        if not inside:
            return None
        day = local.date() + timedelta(days=1 if overnight and clock >= self.start else 0)
        return _reaching(datetime.combine(day, self.end), self.zone, now)

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.strftime("%H:%M"),
            "end": self.end.strftime("%H:%M"),
            "timezone": self.zone.key,
            "during": self.during,
            "channels": sorted(self.channels),
        }


def _reaching(wall: datetime, zone: ZoneInfo, now: datetime) -> datetime:
    """The first moment after `now` at which the clock of `zone` reads `wall` or later. In an
    hour the clock repeats (fall back), the pass still ahead: the other one may be over (a
    hold in the repeated hour ended half an hour ago). In an hour it skips (spring forward),
    the jump past it: read in the offset before the jump it was an hour late."""
    passes = {wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)}
    real = sorted(p for p in passes if p.astimezone(zone).replace(tzinfo=None) == wall)
    if real:
        return next((p for p in real if p > now), real[-1])
    # Skipped: between reading it an offset too early and too late, the second the clock
    # jumps (searched: the zone does not say when it changes).
    early, late = min(passes), max(passes)
    while late - early > _SECOND:
        middle = early + _SECOND * ((late - early) // _SECOND // 2)
        if middle.astimezone(zone).replace(tzinfo=None) >= wall:
            late = middle
        else:
            early = middle
    return late


@dataclass(frozen=True, slots=True)
class NotifySettings:
    cooldown: timedelta = DEFAULT_COOLDOWN
    quiet_hours: QuietHours | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "cooldown_seconds": int(self.cooldown.total_seconds()),
            "quiet_hours": None if self.quiet_hours is None else self.quiet_hours.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["send", "suppress", "delay"]
    until: datetime | None = None  # delay: when to try again; suppress: when it would pass
    reason: str = ""


def decide(
    now: datetime,
    channel_type: str,
    *,
    last_sent: datetime | None,
    settings: NotifySettings,
    cooldown: timedelta | None = None,
    urgent: bool = False,
) -> Decision:
    """`cooldown` overrides the tenant's (a flow step's own); `urgent` ignores quiet hours."""
    wait = settings.cooldown if cooldown is None else cooldown
    if last_sent is not None and now < last_sent + wait:
        return Decision("suppress", last_sent + wait, f"cooldown: sent at {last_sent.isoformat()}")
    quiet = settings.quiet_hours
    if quiet is None or urgent or channel_type not in quiet.channels:
        return Decision("send")
    end = quiet.end_if_inside(now)
    if end is None:
        return Decision("send")
    if quiet.during == "suppress":
        return Decision("suppress", end, "quiet hours")
    return Decision("delay", end, "quiet hours")


def parse_settings(body: Mapping[str, Any]) -> NotifySettings:
    """The settings in an admin body; InvalidPayload lists every problem."""
    problems = [
        FieldProblem(f"/{k}", f"unknown field {k!r}", "additionalProperties")
        for k in body
        if k not in ("cooldown_seconds", "quiet_hours")
    ]
    seconds = whole_number(body.get("cooldown_seconds", int(DEFAULT_COOLDOWN.total_seconds())))
    limit = MAX_COOLDOWN.total_seconds()
    if seconds is None or not 0 <= seconds <= limit:
        problems.append(
            FieldProblem("/cooldown_seconds", f"a whole number from 0 to {limit:.0f}", "range")
        )
        seconds = 0
    quiet = _quiet_hours(body.get("quiet_hours"), problems)
    if problems:
        raise InvalidPayload("invalid notification settings", problems)
    return NotifySettings(timedelta(seconds=seconds), quiet)


def _quiet_hours(raw: Any, problems: list[FieldProblem]) -> QuietHours | None:
    if raw is None:
        return None
    at = "/quiet_hours"
    if not isinstance(raw, Mapping):
        problems.append(FieldProblem(at, "quiet_hours is an object or null", "type"))
        return None
    allowed = {"start", "end", "timezone", "during", "channels"}
    problems += [
        FieldProblem(f"{at}/{k}", f"unknown field {k!r}", "additionalProperties")
        for k in raw
        if k not in allowed
    ]
    start = _clock(raw.get("start"), f"{at}/start", problems)
    end = _clock(raw.get("end"), f"{at}/end", problems)
    if start is not None and start == end:
        problems.append(FieldProblem(f"{at}/end", "end must differ from start", "range"))
    zone = _zone(raw.get("timezone", "America/Sao_Paulo"), problems)
    during = raw.get("during", "delay")
    if during not in ("delay", "suppress"):
        problems.append(FieldProblem(f"{at}/during", "during is delay or suppress", "enum"))
    channels = raw.get("channels", list(CHANNEL_TYPES))
    if (
        not isinstance(channels, list)
        or not channels
        or not all(is_text(c) for c in channels)
        or set(channels) - set(CHANNEL_TYPES)
    ):
        problems.append(
            FieldProblem(f"{at}/channels", "channels is a list of push, email, sms", "enum")
        )
    if start is None or end is None or zone is None or problems:
        return None
    return QuietHours(start, end, zone, during, frozenset(channels))


def _clock(value: Any, at: str, problems: list[FieldProblem]) -> time | None:
    match = _CLOCK.match(value) if isinstance(value, str) else None
    if match is None:
        problems.append(FieldProblem(at, "a time of day like 22:00", "format"))
        return None
    return time(int(match.group(1)), int(match.group(2)))


def _zone(value: Any, problems: list[FieldProblem]) -> ZoneInfo | None:
    if (zone := zone_named(value)) is not None:
        return zone
    problems.append(
        FieldProblem("/quiet_hours/timezone", "an IANA time zone, e.g. America/Sao_Paulo", "format")
    )
    return None
