"""Use case: reading vehicles' tracks.

GET /api/v1/entities/vehicle/{id|plate}/positions?from=&to=&cursor=&limit=
    fixes in device-time order, from <= time < to, in cursor pages; fixes the fold's
    quality gates refused are included, flagged with their reason (`rejected`)
GET /hooks/{position trigger}/{id|plate}  (or ?plate= / ?tracker_id=)
    the vehicle's recent track, newest first
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from gateway.clock import epoch_ms, from_epoch_ms, query_time
from gateway.errors import BadRequest
from gateway.fleet.append import PositionAppender, Vehicle, utc_text
from gateway.fleet.fix import rfc3339
from gateway.paging import page_params
from gateway.store import Doc, Store

RECENT_FIXES: Final = 50
_OPTIONAL: Final = (
    "speed_kmh", "heading", "accuracy_m", "odometer_km", "ignition", "valid", "attributes",
)  # fmt: skip
TRACK_PARAMS: Final = frozenset({"from", "to", "limit", "cursor"})


def public_fix(doc: Doc) -> dict[str, Any]:
    """A stored fix as the API shows it."""
    fix: dict[str, Any] = {
        "id": str(doc["_id"]),
        "time": utc_text(doc["t"]),
        "lat": doc["lat"],
        "lon": doc["lon"],
    }
    fix.update({name: doc[name] for name in _OPTIONAL if name in doc})
    fix["received_at"] = utc_text(doc["at"])
    fix["source"] = doc.get("source")
    if doc.get("device") is not None:
        fix["device"] = doc["device"]
    fix["rejected"] = doc.get("rejected")
    return fix


class Tracks:
    def __init__(self, store: Store, positions: PositionAppender) -> None:
        self._store = store
        self._positions = positions

    async def page(self, tenant: str, ref: str, query: Mapping[str, str]) -> dict[str, Any]:
        """One page of a vehicle's track (NotFound for an unknown vehicle; BadRequest for a
        malformed time or cursor)."""
        unknown = sorted(set(query) - TRACK_PARAMS)
        if unknown:
            raise BadRequest(f"unknown query parameter {unknown[0]!r} (from, to, cursor, limit)")
        limit, cursor = page_params(query)
        start, end = _time(query, "from"), _time(query, "to")
        after = _cursor(cursor)
        vehicle = await self._positions.vehicle(tenant, ref)
        # One more than the page: a full last page says so (`next_cursor` null), instead of
        # handing out a cursor whose page is empty.
        docs = await self._store.positions.track(tenant, vehicle.id, start, end, after, limit + 1)
        more = len(docs) > limit
        docs = docs[:limit]
        last = docs[-1]["t"] if more else None
        return {
            "vehicle": _vehicle(vehicle),
            "items": [public_fix(doc) for doc in docs],
            "next_cursor": None if last is None else str(epoch_ms(last)),
        }

    async def recent(self, tenant: str, ref: str, limit: int = RECENT_FIXES) -> dict[str, Any]:
        """A vehicle's newest fixes, newest first."""
        vehicle = await self._positions.vehicle(tenant, ref)
        docs = await self._store.positions.latest(tenant, vehicle.id, limit)
        return {"vehicle": _vehicle(vehicle), "items": [public_fix(doc) for doc in docs]}

    async def recent_by_tracker(
        self, tenant: str, tracker_id: str, limit: int = RECENT_FIXES
    ) -> dict[str, Any]:
        vehicle = await self._positions.by_tracker(tenant, tracker_id)
        docs = await self._store.positions.latest(tenant, vehicle.id, limit)
        return {"vehicle": _vehicle(vehicle), "items": [public_fix(doc) for doc in docs]}


def _vehicle(vehicle: Vehicle) -> dict[str, Any]:
    return {"id": vehicle.id, "plate": vehicle.plate}


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    parsed = rfc3339(query_time(raw))
    if parsed is not None:
        return parsed
    raise BadRequest(f"{name} must be an RFC 3339 time with an offset, e.g. 2026-12-01T12:00:00Z")


# After the last instant a date holds: a cursor past it has no fix after it (an empty page),
# as the document's cursor pattern (up to 15 digits) allows it.
_LAST: Final = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)


def _cursor(cursor: str | None) -> datetime | None:
    if cursor is None:
        return None
    digits = cursor.removeprefix("-")  # a fix dated before 1970 (a clock never set)
    if digits.isascii() and digits.isdigit() and len(digits) <= 15:
        try:
            return from_epoch_ms(int(cursor))
        except OverflowError:  # past the year 9999 (15 digits reach the year 33658)
            return _LAST if not cursor.startswith("-") else None
    raise BadRequest("cursor must be the next_cursor of the previous page")
