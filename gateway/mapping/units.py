"""The `convert` transform: units of speed, distance, volume, fuel economy and duration.

Each unit is a factor to its kind's base unit (km/h, km, l, km/l, ms). Litres per 100 km is the
one inverse unit: more of it is less distance per litre, so it converts by division. Units
whose factors are whole numbers (durations) convert by multiplying, then dividing, so that
36000 ms is 0.01 h, not 0.009999999999999998 (1/3600000 has no exact binary fraction).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .model import EvalError

_US_GALLON_L = 3.785411784  # exact, by definition (231 cubic inches)
_IMPERIAL_GALLON_L = 4.54609  # exact, by definition
_MILE_KM = 1.609344  # exact, by definition
_FOOT_KM = 0.0003048  # exact, by definition (0.3048 m)


class Unit(NamedTuple):
    kind: str
    factor: float
    """How many base units one of this unit is (inverse units: base = factor / value)."""
    inverse: bool = False


UNITS: dict[str, Unit] = {
    "km/h": Unit("speed", 1.0),
    "knots": Unit("speed", 1.852),
    "m/s": Unit("speed", 3.6),
    "mph": Unit("speed", _MILE_KM),
    "km": Unit("distance", 1.0),
    "m": Unit("distance", 0.001),
    "mi": Unit("distance", _MILE_KM),
    "ft": Unit("distance", _FOOT_KM),
    "l": Unit("volume", 1.0),
    "ml": Unit("volume", 0.001),
    "m3": Unit("volume", 1000.0),
    "gal": Unit("volume", _US_GALLON_L),
    "gal_imp": Unit("volume", _IMPERIAL_GALLON_L),
    "km/l": Unit("fuel_economy", 1.0),
    "mpg": Unit("fuel_economy", _MILE_KM / _US_GALLON_L),
    "mpg_imp": Unit("fuel_economy", _MILE_KM / _IMPERIAL_GALLON_L),
    "l/100km": Unit("fuel_economy", 100.0, inverse=True),
    # Engine hours: Traccar's `hours` in ms, Geotab's and Samsara's engine seconds.
    "ms": Unit("duration", 1.0),
    "s": Unit("duration", 1000.0),
    "min": Unit("duration", 60_000.0),
    "h": Unit("duration", 3_600_000.0),
}
KINDS = tuple(dict.fromkeys(unit.kind for unit in UNITS.values()))

Convert = Callable[[Any], Any]
ToNumber = Callable[[Any], int | float]


def conversion(source: str, target: str, to_number: ToNumber) -> Convert | str:
    """A function converting `source` units to `target` units, or why there is none."""
    found = [UNITS.get(name) for name in (source, target)]
    for name, unit in zip((source, target), found, strict=True):
        if unit is None:
            return f"unknown unit {name!r}; known: {', '.join(UNITS)}"
    a, b = found
    assert a is not None and b is not None
    if a.kind != b.kind:
        return f"cannot convert {a.kind} ({source}) to {b.kind} ({target})"
    if a.inverse or b.inverse:
        return _through_base(a, b, to_number)
    if a.factor.is_integer() and b.factor.is_integer() and a.factor % b.factor:
        return _times_over(a.factor, b.factor, to_number)
    return multiply(a.factor / b.factor, to_number)


def multiply(factor: float, to_number: ToNumber) -> Convert:
    numbers = (int, float)

    def times(value: Any) -> Any:
        if type(value) in numbers:
            return value * factor
        return to_number(value) * factor

    return times


def _times_over(times: float, over: float, to_number: ToNumber) -> Convert:
    numbers = (int, float)

    def convert(value: Any) -> Any:
        number = value if type(value) in numbers else to_number(value)
        return number * times / over

    return convert


def _through_base(source: Unit, target: Unit, to_number: ToNumber) -> Convert:
    def convert(value: Any) -> Any:
        number = to_number(value)
        base = _divide(source.factor, number) if source.inverse else number * source.factor
        return _divide(target.factor, base) if target.inverse else base / target.factor

    return convert


def _divide(numerator: float, value: float) -> float:
    if value == 0:
        raise EvalError("transform", "cannot convert 0 to or from an inverse unit (l/100km)")
    return numerator / value
