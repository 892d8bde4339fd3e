"""The canonical fix: what a position trigger takes without a mapping, and what a position
mapping produces (SPEC §3.5, §6).

    {"plate" | "tracker_id", "time", "lat", "lon", "speed_kmh"?, "heading"?, "accuracy_m"?,
     "odometer_km"?, "ignition"?, "valid"?, "attributes"?}

`parse_fix` checks one item and lists every problem (a 422 names each failing field): the
vehicle named by a plate or a tracker id, `time` an RFC 3339 timestamp with an offset (or
"Z"), coordinates finite numbers, speed, accuracy and odometer finite and not negative
(the odometer at most 10,000,000 km), heading within [0, 360], ignition and valid booleans,
attributes an object whose member names and numbers the database can store (no leading "$",
no "." or NUL; integers within 64 bits). A fix that passes may still be refused by the
quality gates of the fold (a latitude outside [-90, 90] or a longitude outside [-180, 180],
(0,0), far future, impossible speed, `valid: false` ...): those are stored and flagged
(SPEC §6: `invalid_coordinates`, `null_island` ...), not refused here. A coordinate that is
no number at all (missing, text, NaN or infinite, which no JSON, form or mapped value
carries) is refused here. `valid` false says the device had no position fix
(no GPS lock: Traccar's and flespi's `valid`): its coordinates are the last ones the device
held, or none it measured, and the fold refuses it (`no_fix`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from gateway.clock import from_rfc3339
from gateway.errors import FieldProblem, InvalidPayload
from gateway.formats.json_tree import WideInt, plain_zeros, text_refused

FIELDS: Final = (
    "plate",
    "tracker_id",
    "time",
    "lat",
    "lon",
    "speed_kmh",
    "heading",
    "accuracy_m",
    "odometer_km",
    "ignition",
    "valid",
    "attributes",
)
_KNOWN: Final = frozenset(FIELDS)
_MAX_TEXT: Final = 100
_MAX_TIME: Final = 40  # characters of an RFC 3339 time: a fraction to the nanosecond and more
_INT64: Final = (-(2**63), 2**63 - 1)
# A device odometer past what any odometer shows (seven digits of km; a service's `km` and a
# plan's `start_km` have the same bound) is a glitch, not a count: the first one a vehicle's
# fold sees re-baselines it, and a device odometer never takes the count back down.
MAX_ODOMETER_KM: Final = 10_000_000.0
# Optional numbers: (lowest, highest) allowed.
_RANGES: Final[Mapping[str, tuple[float, float]]] = {
    "speed_kmh": (0.0, math.inf),
    "heading": (0.0, 360.0),
    "accuracy_m": (0.0, math.inf),
    "odometer_km": (0.0, MAX_ODOMETER_KM),
}


@dataclass(frozen=True, slots=True)
class Fix:
    """One valid fix. `plate` or `tracker_id` names the vehicle (with both, the vehicle that
    carries the tracker id; the plate's when none does: `append.PositionAppender._resolve`)."""

    plate: str | None
    tracker_id: str | int | None
    time: datetime  # UTC, millisecond precision (what the database keeps)
    lat: float
    lon: float
    extra: Mapping[str, Any] = field(default_factory=dict)  # the optional fields present
    # Its mapping gave it a value from when its message was received (`{received: time}`: a
    # tracker that sends no time): a copy of the message received later is another fix, not
    # a duplicate of this one (triggers/receiver.py `_memory_use`).
    at_receipt: bool = False

    def document(self) -> dict[str, Any]:
        """The position's fields as the track stores them (the store adds ids and times)."""
        return {"t": self.time, "lat": self.lat, "lon": self.lon, **self.extra}


def parse_fix(item: Any) -> Fix:
    """The fix `item` describes; InvalidPayload listing every problem otherwise."""
    if not isinstance(item, Mapping):
        raise _invalid([FieldProblem("", "a fix is a JSON object", "type")])
    problems: list[FieldProblem] = []
    for name in item:
        if name not in _KNOWN:
            message = f"/{name}: unknown field (a fix has {', '.join(FIELDS)})"
            problems.append(FieldProblem(f"/{name}", message, "additionalProperties"))
    plate = _vehicle_text(item, "plate", problems)
    tracker_id = _tracker_id(item, problems)
    if plate is None and tracker_id is None and not _has_vehicle(item):
        message = "a fix names its vehicle: plate or tracker_id is required"
        problems.append(FieldProblem("", message, "required"))
    when = _time(item.get("time"), problems)
    lat = _coordinate(item, "lat", problems)
    lon = _coordinate(item, "lon", problems)
    extra = _optional(item, problems)
    if problems or when is None or lat is None or lon is None:
        raise _invalid(problems)
    return Fix(plate, tracker_id, when, lat, lon, extra)


def _optional(item: Mapping[str, Any], problems: list[FieldProblem]) -> dict[str, Any]:
    """The optional fields present and valid (their problems added to `problems`)."""
    extra: dict[str, Any] = {}
    for name, (low, high) in _RANGES.items():
        value = _number(item, name, low, high, problems, required=False)
        if value is not None:
            extra[name] = value
    for name in ("ignition", "valid"):
        if name in item and item[name] is not None:
            if isinstance(item[name], bool):
                extra[name] = item[name]
            else:
                problems.append(FieldProblem(f"/{name}", f"/{name}: a boolean", "type"))
    if "attributes" in item and item["attributes"] is not None:
        if not isinstance(item["attributes"], Mapping):
            problems.append(FieldProblem("/attributes", "/attributes: an object", "type"))
        elif (bad := _bad_key(item["attributes"], "/attributes")) is not None:
            message = f"{bad}: a name may not start with '$' or hold '.' or NUL"
            problems.append(FieldProblem(bad, message, "propertyNames"))
        elif (big := _big_integer(item["attributes"], "/attributes")) is not None:
            message = f"{big}: an integer beyond 64 bits (the database holds none)"
            problems.append(FieldProblem(big, message, "maximum"))
        else:
            extra["attributes"] = dict(plain_zeros(item["attributes"]))
    return extra


def _invalid(problems: list[FieldProblem]) -> InvalidPayload:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return InvalidPayload(f"fix is invalid: {problems[0].message}{more}", problems)


def _bad_key(value: Any, at: str) -> str | None:
    """The pointer of the first object member name the database cannot store, if any."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            where = f"{at}/{str(key).replace('~', '~0').replace('/', '~1')}"
            if not isinstance(key, str) or key.startswith("$") or "." in key or "\x00" in key:
                return where
            if (bad := _bad_key(inner, where)) is not None:
                return bad
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            if (bad := _bad_key(inner, f"{at}/{i}")) is not None:
                return bad
    return None


def _big_integer(value: Any, at: str) -> str | None:
    """The pointer of the first integer BSON cannot hold (JSON allows up to 2**64 - 1 and
    orjson reads it): it would fail the whole insert round, everyone's fixes in it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return at if not _INT64[0] <= value <= _INT64[1] else None
    if isinstance(value, Mapping):
        members: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        members = enumerate(value)
    else:
        return None
    for key, inner in members:
        where = f"{at}/{str(key).replace('~', '~0').replace('/', '~1')}"
        if (big := _big_integer(inner, where)) is not None:
            return big
    return None


def _has_vehicle(item: Mapping[str, Any]) -> bool:
    return item.get("plate") is not None or item.get("tracker_id") is not None


def _vehicle_text(item: Mapping[str, Any], name: str, problems: list[FieldProblem]) -> str | None:
    value = item.get(name)
    if value is None:
        return None
    if (keyword := text_refused(value, _MAX_TEXT, nonblank=True)) is not None:
        message = f"/{name}: text of 1 to {_MAX_TEXT} characters"
        problems.append(FieldProblem(f"/{name}", message, keyword))
        return None
    return str(value).strip()


def _tracker_id(item: Mapping[str, Any], problems: list[FieldProblem]) -> str | int | None:
    """Text, or a number compared by value: a whole number written with a fraction part
    (`1500.0`, an id held as a float by pandas, Jackson or Python's json) is that integer,
    the vehicle's and the device's as `1500` would be. Only below 2^53: a float holds every
    whole number up to there, and from there on it is the parse of more than one
    (`12345678901234567.0` reads 12345678901234568, another device's id), so it is none."""
    value = item.get("tracker_id")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _vehicle_text(item, "tracker_id", problems)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    if isinstance(value, int) and abs(value) < 2**63:
        return value  # a partner's numeric device id (Motive): found as number or text
    # a fraction left, NaN, infinite, a float from 2^53 on, or past 64 bits: no id
    message = (
        f"/tracker_id: text of 1 to {_MAX_TEXT} characters, or a whole number within 64 bits"
        " (written with a fraction part, `.0`, below 2^53: a float holds no larger one exactly)"
    )
    problems.append(FieldProblem("/tracker_id", message, "type"))
    return None


def rfc3339(value: str) -> datetime | None:
    """An RFC 3339 time with an offset, in UTC, or None: not such a time (none without an
    offset), or one past the calendar once in UTC."""
    written = rfc3339_as_written(value)
    try:
        return None if written is None else written.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 past the calendar
        return None


def rfc3339_as_written(value: str) -> datetime | None:
    """An RFC 3339 time with an offset, at its own offset (year 9999 at -03:00 too: compared
    with other times, never moved to UTC), or None: not such a time (none without an offset,
    nor one of ISO 8601's other forms). RFC 3339 §5.6 lets "T" and "Z" be lower case, and
    the "T" be a space."""
    text = value.strip()
    if len(text) > _MAX_TIME:
        return None
    try:
        return from_rfc3339(text)
    except ValueError:  # not a time
        return None


def _time(value: Any, problems: list[FieldProblem]) -> datetime | None:
    if value is None:
        problems.append(FieldProblem("/time", "/time is required (RFC 3339)", "required"))
        return None
    utc = None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            try:
                utc = value.astimezone(UTC)
            except OverflowError:  # year 1 or 9999 pushed past the calendar by its offset
                utc = None
    elif isinstance(value, str):
        utc = rfc3339(value)
    if utc is None:
        message = "/time: an RFC 3339 timestamp with an offset, e.g. 2026-12-01T12:00:00Z"
        problems.append(FieldProblem("/time", message, "format"))
        return None
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def _coordinate(item: Mapping[str, Any], name: str, problems: list[FieldProblem]) -> float | None:
    """A latitude or longitude: any finite number. One off the globe (a firmware swapping
    latitude and longitude, a unit sending micro-degrees) is a fix the fold refuses
    (`quality.Reason.INVALID_COORDINATES`: kept in the track flagged, counted by reason),
    as it refuses (0, 0), not a payload refused here. An integer past 64 bits (`WideInt`, its
    digits) is such a number too."""
    value = item.get(name)
    if type(value) is float and math.isfinite(value):  # most coordinates
        return value + 0.0  # no negative zero stored (plain_zeros)
    if isinstance(value, WideInt):
        value = float(value)  # finite up to 308 digits; beyond, Infinity: refused below
    elif type(value) is int:
        try:
            value = float(value)
        except OverflowError:  # past any float: refused below, as `1e999` would be
            value = math.inf
    return _number({name: value}, name, -math.inf, math.inf, problems, required=True)


def _number(
    item: Mapping[str, Any],
    name: str,
    low: float,
    high: float,
    problems: list[FieldProblem],
    *,
    required: bool,
) -> float | None:
    value = item.get(name)
    if value is None:
        if required:
            where = f"/{name}"
            problems.append(FieldProblem(where, f"{where} is required", "required"))
        return None
    if type(value) is float and math.isfinite(value) and low <= value <= high:  # most numbers
        return value + 0.0  # -0.0 + 0.0 is 0.0: no negative zero is stored (plain_zeros)
    where = f"/{name}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(FieldProblem(where, f"{where}: a number", "type"))
        return None
    number = float(value)
    if not math.isfinite(number):
        problems.append(FieldProblem(where, f"{where}: a finite number", "type"))
        return None
    if not low <= number <= high:
        bounds = f"at least {low:g}" if math.isinf(high) else f"between {low:g} and {high:g}"
        keyword = "minimum" if number < low else "maximum"
        # The value as sent (`:g` keeps six digits: "between 0 and 360, not 360" for 360.0000001)
        shown = f"{number:g}" if float(f"{number:g}") == number else repr(number)
        problems.append(FieldProblem(where, f"{where}: {bounds}, not {shown}", keyword))
        return None
    return number + 0.0  # -0.0 + 0.0 is 0.0: no negative zero is stored (plain_zeros)
