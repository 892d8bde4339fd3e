"""Use cases: a tenant's geofences and maintenance plans as admin resources (create, list,
get, change, delete), checked whole before anything is stored; every change forgets the
tenant's cached rules (`rules.py` `FleetRules.forget`).

    geofence  {"name", "kind": "authorized"|"restricted", "circle": {"lat", "lon",
              "radius_m"} | "polygon": GeoJSON (Multi)Polygon, "vehicles"?: [plates], "group"?,
              "margin_m"? (25), "dwell_seconds"? (0), "description"?}
    plan      {"name", "every_km" and/or "every_days" (at least one), "due_soon_km"?,
              "due_soon_days"?, "start_km"? (0), "vehicles"?: [plates], "group"?,
              "description"?}

A rule with neither `vehicles` nor `group` applies to every vehicle of the tenant; otherwise to
the plates listed and to the vehicles whose `group` (or one of whose `groups`) is `group`.
"No plate list" is `vehicles` left out or null (stored and answered as null); a list names at
least one plate: `[]` is refused (a 422 on `/vehicles`), not read as "no list", since a fence
whose last plate is removed would otherwise watch every vehicle of the tenant.
Changing a fence keeps each vehicle's state: a vehicle that is now on the other side of the
border gets its crossing at its next clear fix.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from gateway.actions.body_check import BodyCheck
from gateway.clock import as_stored, utcnow
from gateway.errors import Conflict, InvalidPayload, NotFound
from gateway.fleet.geofences import DEFAULT_MARGIN_M
from gateway.fleet.geometry import circle_from, polygon_from
from gateway.formats.json_tree import is_text
from gateway.schemas.ids import canonical_plate_key, check_plate, normalize_plate
from gateway.store import Doc, new_id
from gateway.store.fleet_rules import MAX_RULES, RuleResources, polygon_positions

KINDS = ("authorized", "restricted")
MAX_VEHICLES = 1_000
MAX_MARGIN_M = 10_000.0
MAX_DWELL_SECONDS = 86_400.0
MAX_EVERY_KM = 1_000_000.0
MAX_START_KM = 10_000_000.0
MAX_EVERY_DAYS = 3_650.0
# The positions of all a tenant's polygon fences together: the fold walks a fence's edges for
# each fix within its bounding box (about 1 µs an edge), on the event loop every tenant
# shares; 50,000 (25 outlines of 2,000 corners, 500 of 100) is at most some 50 ms a fix.
MAX_TENANT_POSITIONS = 50_000
_COMMON = frozenset({"name", "description", "vehicles", "group"})


def public_rule(doc: Doc) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k not in ("_id", "tenant", "rev")}
    # (a rule stored before `[]` was refused holds `[]` for "no plate list")
    out["vehicles"] = doc.get("vehicles") or None
    return {"id": str(doc["_id"]), **out}


class RuleService(ABC):
    """CRUD shared by every kind of rule. A kind names itself (`what`), its `fields`, and
    checks a whole body into the document's fields (`_fields`)."""

    what: ClassVar[str]
    fields: ClassVar[frozenset[str]]
    # At most one of these is stored; a change that gives one (not null) drops the others.
    alternatives: ClassVar[tuple[str, ...]] = ()

    def __init__(self, resources: RuleResources, on_change: Callable[[str], None]) -> None:
        self._resources = resources
        self._on_change = on_change

    @abstractmethod
    def _fields(self, body: Mapping[str, Any]) -> Doc: ...

    async def _checked(self, body: Mapping[str, Any]) -> Doc:
        """`_fields` off the event loop: checking a large polygon's edges takes up to a second
        (geometry.py `MAX_POSITIONS`), and other requests must not wait for it."""
        return await asyncio.to_thread(self._fields, body)

    async def _check_room(self, tenant: str, fields: Doc, replacing: str | None = None) -> None:
        """Refuse (409) a rule past the tenant's limits: MAX_RULES of this kind, and
        MAX_TENANT_POSITIONS polygon positions in all; `replacing` is the rule being changed.
        The fold reads every rule: a rule past a limit is refused, never kept and ignored.
        Called in the tenant's turn (`RuleResources.turn`), so that what it counts is what
        the change is stored beside.
        Only a rule that adds positions is refused for them: a tenant past the limit (its
        outlines stored before there was one) can still rename a fence, add a circle, or
        simplify the outlines the 409 asks it to."""
        sizes = await self._resources.sizes(tenant)
        if replacing is None and len(sizes) >= MAX_RULES:
            raise Conflict(
                f"the tenant has {len(sizes):,} {self.what}s, the limit is {MAX_RULES:,}: "
                f"delete one before creating another",
                limit=MAX_RULES,
            )
        before = sizes.pop(replacing or "", 0)
        positions = polygon_positions(fields.get("polygon"))
        total = sum(sizes.values()) + positions
        if total > MAX_TENANT_POSITIONS and positions > before:
            raise Conflict(
                f"the tenant's polygon fences would hold {total:,} positions, the limit is "
                f"{MAX_TENANT_POSITIONS:,} in all: simplify or delete outlines first",
                limit=MAX_TENANT_POSITIONS,
            )

    async def create(self, tenant: str, body: Mapping[str, Any]) -> Doc:
        fields = await self._checked(body)
        async with self._resources.turn(tenant):
            await self._check_room(tenant, fields)
            await self._refuse_a_twin(tenant, fields["name"])
            now = as_stored(utcnow())
            doc = {"_id": new_id(), "tenant": tenant, **fields, "rev": 1}
            doc.update(created_at=now, updated_at=now)
            await self._resources.insert(doc)
        self._on_change(tenant)
        return doc

    async def _refuse_a_twin(self, tenant: str, name: str, own: str | None = None) -> None:
        """A name (in NFC) whose decomposed form (NFD, as macOS and iOS send it) another of
        the tenant's rules has, kept as stored by the one-time NFC step (`compose_names`),
        is a 409 like any duplicate: renaming or deleting the composed member of kept twins
        does not let a new twin in (other mixed forms are not looked for)."""
        if await self._resources.kept_twin_of(tenant, name, own):
            raise Conflict("a resource with this key already exists")

    async def get(self, tenant: str, ref: str) -> Doc:
        doc = await self._resources.by_ref(tenant, ref)
        if doc is None:
            raise NotFound(f"no {self.what} {ref!r}")
        return doc

    async def list(self, tenant: str, *, after: str | None, limit: int) -> list[Doc]:
        return await self._resources.list(tenant, after=after, limit=limit)

    async def update(self, tenant: str, ref: str, body: Mapping[str, Any]) -> Doc:
        """Merge `body` into the rule (null clears an optional field) and check the whole."""
        current = await self.get(tenant, ref)
        merged = {k: v for k, v in public_rule(current).items() if k in self.fields}
        if any(body.get(k) is not None for k in self.alternatives):
            for k in self.alternatives:
                merged.pop(k, None)
        fields = await self._checked({**merged, **body})
        if body.get("name") in (None, current.get("name")):
            # Not renamed: its name kept as stored. A twin kept in NFD by the one-time step
            # (`compose_names`), composed here, would collide with its NFC twin: a 409 for
            # a change of anything else.
            fields["name"] = current.get("name", fields["name"])
        async with self._resources.turn(tenant):
            await self._check_room(tenant, fields, str(current["_id"]))
            if fields["name"] != current.get("name"):
                await self._refuse_a_twin(tenant, fields["name"], str(current["_id"]))
            unset = [k for k in current if k in self.fields and k not in fields]
            fields["updated_at"] = utcnow()
            doc = await self._resources.update(
                tenant, str(current["_id"]), current["rev"], fields, unset
            )
        if doc is None:
            raise Conflict(f"the {self.what} was changed concurrently; retry")
        self._on_change(tenant)
        return doc

    async def delete(self, tenant: str, ref: str) -> None:
        doc = await self.get(tenant, ref)
        await self._resources.delete(tenant, str(doc["_id"]))
        self._on_change(tenant)


class GeofenceService(RuleService):
    what = "geofence"
    fields = _COMMON | {"kind", "circle", "polygon", "margin_m", "dwell_seconds"}
    alternatives = ("circle", "polygon")  # a new shape replaces the old one

    def _fields(self, body: Mapping[str, Any]) -> Doc:
        check = BodyCheck(body, self.fields)
        fields = _common(check, self.what)
        fields["kind"] = check.choice("kind", KINDS)
        # A shape given as null is no shape (an edit clearing it, RFC 7396): a polygon
        # fence becomes a circle with `{"circle": {...}, "polygon": null}`.
        shapes = [k for k in ("circle", "polygon") if body.get(k) is not None]
        if len(shapes) != 1:
            check.add("/circle", "give exactly one of circle or polygon", "oneOf")
        else:
            try:
                if shapes == ["circle"]:
                    fields["circle"] = circle_from(body["circle"]).to_doc()
                else:
                    fields["polygon"] = polygon_from(body["polygon"]).to_doc()
            except InvalidPayload as exc:
                check.problems.extend(exc.problems)
        fields["margin_m"] = _or(check.number("margin_m", 0, MAX_MARGIN_M), DEFAULT_MARGIN_M)
        fields["dwell_seconds"] = _or(check.number("dwell_seconds", 0, MAX_DWELL_SECONDS), 0)
        check.done(self.what)
        return fields


class PlanService(RuleService):
    what = "maintenance plan"
    fields = _COMMON | {"every_km", "due_soon_km", "every_days", "due_soon_days", "start_km"}

    def _fields(self, body: Mapping[str, Any]) -> Doc:
        check = BodyCheck(body, self.fields)
        fields = _common(check, self.what)
        # A distance, a time interval or both, whichever comes first (SPEC §6): an annual
        # inspection, the yearly licensing, is a plan by time alone.
        if body.get("every_km") is None and body.get("every_days") is None:
            message = "every_km or every_days is required (a plan by distance, time or both)"
            check.add("/every_km", message, "required")
        fields["start_km"] = _or(check.number("start_km", 0, MAX_START_KM), 0)
        optional = {
            "every_km": check.number("every_km", 1, MAX_EVERY_KM),
            "due_soon_km": check.number("due_soon_km", 0, MAX_EVERY_KM),
            "every_days": check.number("every_days", 1, MAX_EVERY_DAYS),
            "due_soon_days": check.number("due_soon_days", 0, MAX_EVERY_DAYS),
        }
        fields.update({k: v for k, v in optional.items() if v is not None})
        check.done(self.what)
        return fields


def _or(value: float | None, default: float) -> float:
    """An optional number left out or null (an edit clearing it) is its default."""
    return default if value is None else value


def _plates(check: BodyCheck, what: str) -> list[str] | None:
    """`vehicles`: None (no plate list: left out or null), or at least one plate, each a
    valid plate (a 422 naming the one that is not), stored as a vehicle's plate is
    (`ABC-1D23`, `abc1d23`: `ABC1D23`), once (an old plate and its Mercosul twin, the same
    vehicle, once: the first given). An empty list is refused: read as "no list" it made a
    rule whose plates were all removed apply to every vehicle."""
    vehicles = check.body.get("vehicles")
    if vehicles is None:
        return None
    if not isinstance(vehicles, list) or len(vehicles) > MAX_VEHICLES:
        check.add("/vehicles", f"vehicles is an array of at most {MAX_VEHICLES} plates", "type")
        return None
    if not vehicles:
        message = (
            "an empty list names no vehicle: name at least one plate, or leave vehicles out "
            f"(null) for the group's vehicles or, without a group, every vehicle; to watch "
            f"none, delete the {what}"
        )
        check.add("/vehicles", message, "minItems")
        return None
    plates: list[str] = []
    keys: set[str] = set()
    for i, plate in enumerate(vehicles):
        if not is_text(plate) or not 1 <= len(plate) <= 64:
            check.add(f"/vehicles/{i}", "a plate is a string of 1-64 characters", "type")
        elif (problem := check_plate(plate)) is not None:
            check.add(f"/vehicles/{i}", f"{plate!r} {problem}", "format")
        elif (key := canonical_plate_key(plate)) not in keys:
            keys.add(key)
            plates.append(normalize_plate(plate))
    return plates


def _common(check: BodyCheck, what: str) -> Doc:
    """name, description, vehicles and group: the fields every rule has."""
    # In NFC: one name in either Unicode form; its length as composed (as stored).
    fields: Doc = {"name": check.text("name", max_len=100, compose=True)}
    if check.body.get("description") is not None:
        fields["description"] = check.text("description", max_len=2000)
    fields["vehicles"] = _plates(check, what)
    fields["group"] = check.text("group", required=False, max_len=100)
    return fields
