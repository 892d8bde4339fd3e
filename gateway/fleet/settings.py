"""Use case: a tenant's fleet settings (`GET/PUT /api/v1/fleet/settings`): the quality gates,
the odometer's rules and how long positions are kept. The fold reads them through a short
cache (`for_fold`), so a change reaches every process within `CACHE_SECONDS`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.errors import FieldProblem, InvalidPayload
from gateway.fleet.odometer import SOURCES, OdometerSettings
from gateway.fleet.quality import QualitySettings
from gateway.formats.json_tree import whole_number
from gateway.store import Store
from gateway.store.positions import DEFAULT_RETENTION_DAYS

CACHE_SECONDS: Final = 2.0
# The positions' TTL index keeps every tenant's fixes this long (store/positions.py); a tenant
# may keep them for less (the fold purges them, `Fold.purge_expired`), not for more.
MAX_RETENTION_DAYS: Final = DEFAULT_RETENTION_DAYS

# Each number a tenant may set: (low, high, integer).
QUALITY_LIMITS: Final[dict[str, tuple[float, float, bool]]] = {
    "future_tolerance_s": (0, 86_400, False),
    "horizon_hours": (1, 24 * 365, False),
    "max_accuracy_m": (1, 100_000, False),
    "max_speed_kmh": (10, 2_000, False),
    "duplicate_s": (0, 3_600, False),
    "relocate_after": (2, 100, True),
}
ODOMETER_LIMITS: Final[dict[str, tuple[float, float, bool]]] = {
    "hold_hours": (0, 24 * 365, False),
    "jitter_min_m": (0, 1_000, False),
    "default_accuracy_m": (0, 1_000, False),
    "event_km": (0, 10_000, False),
    "still_kmh": (0, 20, False),
    "still_m": (0, 1_000, False),
    "still_window_s": (0, 3_600, False),
    "device_handover_s": (0, 86_400, False),
}


@dataclass(frozen=True, slots=True)
class FleetSettings:
    quality: QualitySettings = field(default_factory=QualitySettings)
    odometer: OdometerSettings = field(default_factory=OdometerSettings)
    retention_days: int = DEFAULT_RETENTION_DAYS

    def to_doc(self) -> dict[str, Any]:
        return {
            "quality": self.quality.to_doc(),
            "odometer": self.odometer.to_doc(),
            "retention_days": self.retention_days,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None) -> FleetSettings:
        if not doc:
            return cls()
        return cls(
            QualitySettings.from_doc(dict(doc.get("quality") or {})),
            OdometerSettings.from_doc(dict(doc.get("odometer") or {})),
            int(doc.get("retention_days") or DEFAULT_RETENTION_DAYS),
        )


def parse_settings(body: Any) -> FleetSettings:
    """A PUT body: every member optional (an omitted one takes its default); every problem
    listed at once."""
    problems: list[FieldProblem] = []
    if not isinstance(body, Mapping):
        raise InvalidPayload("invalid fleet settings", [FieldProblem("", "an object", "type")])
    _unknown(body, {"quality", "odometer", "retention_days"}, "", problems)
    quality = _numbers(body, "quality", QUALITY_LIMITS, problems)
    odometer = _numbers(body, "odometer", ODOMETER_LIMITS, problems)
    raw_odometer = body.get("odometer")
    if isinstance(raw_odometer, Mapping) and "precedence" in raw_odometer:
        precedence = raw_odometer["precedence"]
        valid = isinstance(precedence, list) and all(p in SOURCES for p in precedence)
        if not valid or len(set(precedence)) != len(precedence):
            problems.append(
                FieldProblem(
                    "/odometer/precedence",
                    f"a list of distinct sources among {', '.join(SOURCES)}, the first winning",
                    "enum",
                )
            )
        else:
            odometer["precedence"] = precedence
    retention = whole_number(body.get("retention_days", DEFAULT_RETENTION_DAYS))
    if (keyword := _out_of_range(retention, 1, MAX_RETENTION_DAYS)) is not None:
        message = f"an integer from 1 to {MAX_RETENTION_DAYS}"
        problems.append(FieldProblem("/retention_days", message, keyword))
    if problems or retention is None:
        raise InvalidPayload("invalid fleet settings", problems)
    return FleetSettings(
        QualitySettings.from_doc(quality), OdometerSettings.from_doc(odometer), retention
    )


def _unknown(body: Mapping[str, Any], allowed: set[str], at: str, out: list[FieldProblem]) -> None:
    out += [
        FieldProblem(f"{at}/{k}", f"unknown field {k!r}", "additionalProperties")
        for k in body
        if k not in allowed
    ]


def _numbers(
    body: Mapping[str, Any],
    member: str,
    limits: Mapping[str, tuple[float, float, bool]],
    out: list[FieldProblem],
) -> dict[str, Any]:
    """A member's numbers within their limits (absent: {}; null or not an object: a problem)."""
    if member not in body:
        return {}
    raw, at = body[member], f"/{member}"
    if not isinstance(raw, Mapping):
        out.append(FieldProblem(at, "an object", "type"))
        return {}
    extra = {"precedence"} if at == "/odometer" else set()
    _unknown(raw, set(limits) | extra, at, out)
    values: dict[str, Any] = {}
    for name, (low, high, integer) in limits.items():
        if name not in raw:
            continue
        value: Any = whole_number(raw[name]) if integer else raw[name]
        if (keyword := _out_of_range(value, low, high)) is not None:
            what = "an integer" if integer else "a number"
            out.append(FieldProblem(f"{at}/{name}", f"{what} from {low:g} to {high:g}", keyword))
        else:
            values[name] = value + 0.0 if isinstance(value, float) else value  # no -0.0
    return values


def _out_of_range(value: Any, low: float, high: float) -> str | None:
    """The JSON Schema keyword a setting's value fails (`type`: not a number, or not an
    integer where one goes, read as None; `minimum`, `maximum`), or None."""
    if not isinstance(value, int | float) or isinstance(value, bool) or value != value:  # NaN
        return "type"
    if value < low:
        return "minimum"
    return "maximum" if value > high else None


class FleetSettingsService:
    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock
        self._cache: dict[str, tuple[float, FleetSettings]] = {}

    async def get(self, tenant: str) -> FleetSettings:
        return FleetSettings.from_doc(await self._store.fleet_settings.get(tenant))

    async def put(self, tenant: str, body: Any) -> FleetSettings:
        settings = parse_settings(body)
        await self._store.fleet_settings.put(tenant, settings.to_doc())
        self._cache.pop(tenant, None)
        return settings

    async def for_fold(self, tenant: str) -> FleetSettings:
        """The tenant's settings as of at most CACHE_SECONDS ago."""
        now = self._clock()
        cached = self._cache.get(tenant)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        settings = await self.get(tenant)
        self._cache[tenant] = (now, settings)
        return settings
