"""Member names an entity schema renamed, kept as deprecated aliases (docs/entities.md
"Renamed members").

A vehicle's `last_position` took the canonical fix's names (SPEC §3.5: `time`, `lat`, `lon`,
`heading`); it had `fix_time`, `latitude`, `longitude` and `course`. Entities stored under the
old names are renamed once at start (`store/position_names.py` `rename_position_members`); mapping
versions uploaded before still target the old names, and keep working: `current_mapping`
rewrites a mapping document's targets, `only_forward` orderings and `announce: {changed}`
paths to the new names before it compiles, and `current_data` renames what a mapping's
expression built whole (`last_position: <an object>`). An outbound mapping that reads them
(`entity.last_position.latitude`) reads the new name, or the old one when it is null
(`read_aliases`, compiled by `mapping/expressions.py`). An upload that still uses them is taken,
with a warning (CompiledMapping.deprecated).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

RENAMED: Final[Mapping[str, Mapping[str, Mapping[str, str]]]] = {
    "vehicle": {
        "last_position": {
            "fix_time": "time",
            "latitude": "lat",
            "longitude": "lon",
            "course": "heading",
        }
    }
}
"""entity type → object member → old name → new name."""


def current_path(etype: str | None, path: str) -> str:
    """A dotted field path with a renamed member's new name (`last_position.latitude` →
    `last_position.lat`); any other path as it is."""
    head, dot, rest = path.partition(".")
    members = RENAMED.get(etype or "", {}).get(head)
    if not dot or members is None:
        return path
    name, dot2, tail = rest.partition(".")
    new = members.get(name)
    return path if new is None else f"{head}.{new}{dot2}{tail}"


def current_data(etype: str | None, data: dict[str, Any]) -> dict[str, Any]:
    """An entity's fields with renamed members under their new names; a member given under
    both names keeps the new name's value. `data` itself when nothing is renamed."""
    renamed = dict(data)
    changed = False
    for head, members in RENAMED.get(etype or "", {}).items():
        inner = data.get(head)
        if not isinstance(inner, Mapping) or not any(old in inner for old in members):
            continue
        fresh = {members.get(k, k): v for k, v in inner.items() if k not in members}
        for old, new in members.items():
            if old in inner and new not in inner:
                fresh[new] = inner[old]
        renamed[head] = fresh
        changed = True
    return renamed if changed else data


def current_mapping(document: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[str]]:
    """An inbound mapping document whose targets, `only_forward: {by}` and
    `announce: {changed}` paths of an entity type with renamed members (the main one and each
    of `also`) use the new names, and a line per old name it used (for the upload's
    warnings). The document itself when it used none."""
    uses: list[str] = []
    result = _current_target(document, "", uses)
    also = document.get("also")
    if isinstance(also, list):
        items = [
            _current_target(item, f"/also/{i}", uses) if isinstance(item, Mapping) else item
            for i, item in enumerate(also)
        ]
        if any(a is not b for a, b in zip(items, also, strict=True)):
            result = {**result, "also": items}
    return result, uses


def read_aliases(etype: str | None, declared: Any) -> Mapping[str, Mapping[str, str]]:
    """The members an outbound mapping reads under their old names too (object member → old
    name → new): a vehicle's, for a mapping of vehicles or of no declared entity type (the
    entity or event it is given may be a vehicle); none for another type."""
    if declared is not None and etype is None:
        return {}  # a type the mapping got wrong: refused by the compiler
    if etype is None:
        return {k: v for members in RENAMED.values() for k, v in members.items()}
    return RENAMED.get(etype, {})


def _current_target(target: Mapping[str, Any], at: str, uses: list[str]) -> Mapping[str, Any]:
    etype = target.get("entity_type")
    if not isinstance(etype, str) or etype not in RENAMED:
        return target
    start = len(uses)

    def path(value: Any, where: str) -> Any:
        if not isinstance(value, str):
            return value
        new = current_path(etype, value)
        if new != value:
            uses.append(f"{where}: {value!r} is a deprecated name, write {new!r}")
        return new

    result = dict(target)
    fields = target.get("fields")
    if isinstance(fields, Mapping):
        table: dict[Any, Any] = {}
        for name, spec in fields.items():
            here = f"{at}/fields/{name}"
            new_name = path(name, here)
            forward = spec.get("only_forward") if isinstance(spec, Mapping) else None
            if isinstance(forward, Mapping) and "by" in forward:
                by = path(forward["by"], f"{here}/only_forward/by")
                spec = {**spec, "only_forward": {**forward, "by": by}}
            table[new_name] = spec
        result["fields"] = table
    emit = target.get("emit")
    if isinstance(emit, list):
        events = []
        for i, event in enumerate(emit):
            announce = event.get("announce") if isinstance(event, Mapping) else None
            changed = announce.get("changed") if isinstance(announce, Mapping) else None
            if isinstance(announce, Mapping) and isinstance(changed, list):
                where = f"{at}/emit/{i}/announce/changed"
                changed = [path(c, f"{where}/{j}") for j, c in enumerate(changed)]
                event = {**event, "announce": {**announce, "changed": changed}}
            events.append(event)
        result["emit"] = events
    return result if len(uses) > start else target
