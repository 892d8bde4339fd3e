"""Where the secrets `SecretBox` sealed are stored, and their sealing again under the current
key (`gateway reseal`, step 3 of rotating GATEWAY_SECRET_KEY: docs/security.md).

- `partners`: `auth_sealed`, `secrets_sealed` (a partner's credentials and named secrets);
- `channels`: `smtp_sealed` (an e-mail channel's SMTP password);
- `subscriptions`: `secrets[].sealed` (signing secrets, the current and a rotated-out one);
- `triggers`: `auth.secrets[].sealed` (the secrets of triggers that require signed bodies);
- `flow_heads`: `signing.secrets[].sealed` (a flow's signing secrets, its calls' and fetches');
- `actions`: `signing.secrets[].sealed` (an action's signing secrets: proxy calls, schedules).

Each document is written back only where its sealed values are still the ones read (compare
and set), so a secret an admin replaced meanwhile is never overwritten with the old one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from gateway.formats import at_path
from gateway.store.client import Database, translate_errors

FIELDS: Final = {"partners": ("auth_sealed", "secrets_sealed"), "channels": ("smtp_sealed",)}
LISTS: Final = {
    "subscriptions": "secrets",
    "triggers": "auth.secrets",
    "flow_heads": "signing.secrets",
    "actions": "signing.secrets",
}

Renew = Callable[[str], str | None]
"""A sealed value sealed again under the current key: the same value when it already is,
None when no key opens it."""


@dataclass(slots=True)
class Resealed:
    resealed: int = 0  # values sealed again under the current key
    current: int = 0  # values already sealed under it
    changed: int = 0  # documents an admin changed meanwhile (left as they are now)
    unreadable: list[str] = field(default_factory=list)  # "collection/_id/path": no key opens


async def reseal(db: Database, renew: Renew, *, dry_run: bool = False) -> Resealed:
    outcome = Resealed()
    for name in (*FIELDS, *LISTS):
        paths = FIELDS.get(name, (LISTS.get(name, ""),))
        with translate_errors():
            docs = await db[name].find({}, {"_id": 1, **dict.fromkeys(paths, 1)}).to_list(None)
        for doc in docs:
            found, changes = {}, {}
            for path in paths:
                value = at_path(doc, path)
                if value is None:
                    continue
                new = _renewed(value, renew, f"{name}/{doc['_id']}/{path}", outcome)
                found[path] = value
                if new != value:
                    changes[path] = new
            if changes and not dry_run:
                with translate_errors():
                    result = await db[name].update_one(
                        {"_id": doc["_id"], **found}, {"$set": changes}
                    )
                if result.matched_count == 0:
                    outcome.changed += 1
    return outcome


async def sample(db: Database, per_collection: int = 3) -> list[str]:
    """A few of the sealed values stored (up to `per_collection` documents of each
    collection holding one): the key that opens one of them is the key the gateway sealed them with.

    One round trip: the first collection's query, each other's beside it (`$unionWith`),
    every document tagged with the collection it came from. Six finds, one per collection,
    cost every start that stores its key check (a new database's, each test's) about 4 ms of
    CPU more between the process and its database."""
    names = (*FIELDS, *LISTS)
    first, *others = (_sealed_query(name, per_collection) for name in names)
    pipeline = [
        *first,
        *(
            {"$unionWith": {"coll": name, "pipeline": query}}
            for name, query in zip(names[1:], others, strict=True)
        ),
    ]
    with translate_errors():
        docs = await (await db[names[0]].aggregate(pipeline)).to_list(None)
    values: list[str] = []
    for doc in docs:
        name = doc.get(_FROM)
        for path in FIELDS.get(name, (LISTS.get(name, ""),)) if name in names else ():
            value = at_path(doc, path)
            entries = value if isinstance(value, list) else [{"sealed": value}]
            values += [
                entry["sealed"]
                for entry in entries
                if isinstance(entry, dict) and isinstance(entry.get("sealed"), str)
            ]
    return values


async def unopened(db: Database, opens: Callable[[str], bool], now: datetime) -> list[str]:
    """Where a stored secret that `opens` refuses is ("collection/_id/path"), every one read:
    a rotated-out secret whose grace ended before `now` is skipped (never opened again; its
    end is `expires_at`, a trigger's `until`)."""
    found: list[str] = []
    for name in (*FIELDS, *LISTS):
        paths = FIELDS.get(name, (LISTS.get(name, ""),))
        with translate_errors():
            docs = await db[name].find({}, {"_id": 1, **dict.fromkeys(paths, 1)}).to_list(None)
        for doc in docs:
            for path in paths:
                value = at_path(doc, path)
                entries = value if isinstance(value, list) else [{"sealed": value}]
                found += [
                    f"{name}/{doc['_id']}/{path}"
                    for entry in entries
                    if isinstance(entry, dict)
                    and isinstance(entry.get("sealed"), str)
                    and not _expired(entry.get("expires_at", entry.get("until")), now)
                    and not opens(entry["sealed"])
                ]
    return found


def _expired(at: Any, now: datetime) -> bool:
    return isinstance(at, datetime) and at.tzinfo is not None and at <= now


KINDS: Final = {
    "partners": "partner",
    "channels": "channel",
    "subscriptions": "subscription",
    "triggers": "trigger",
    "flow_heads": "flow",
    "actions": "action",
}


@dataclass(frozen=True, slots=True)
class Unopened:
    """A stored secret no key opens: where it is, never its value."""

    tenant: str
    kind: str  # KINDS: partner, channel, subscription, trigger, flow, action
    id: str
    field: str  # its path, a list entry's index after it (`secrets[0]`)
    ended: bool  # a rotated-out secret (in its grace or past it): dropped, nothing to redo


@dataclass(slots=True)
class Forgotten:
    secrets: list[Unopened] = field(default_factory=list)
    changed: int = 0  # documents an admin changed meanwhile (left as they are now)
    narrowed: bool = False  # the key check's keys narrowed to the configured ones
    missing: tuple[str, ...] = ()  # key ids the key check records, the configured keys lack


async def forget(
    db: Database, opens: Callable[[str], bool], lost: str, now: datetime, *, dry_run: bool
) -> Forgotten:
    """Every stored secret `opens` refuses, replaced by `lost` unless `dry_run`: the last
    resort once the key that sealed them is gone for good (`gateway reseal
    --forget-unreadable`). Each document is written only where its sealed values are still
    the ones read, as `reseal` does."""
    outcome = Forgotten()
    for name in (*FIELDS, *LISTS):
        paths = FIELDS.get(name, (LISTS.get(name, ""),))
        with translate_errors():
            docs = (
                await db[name]
                .find({}, {"_id": 1, "tenant": 1, **dict.fromkeys(paths, 1)})
                .to_list(None)
            )
        for doc in docs:
            found, changes = {}, {}
            for path in paths:
                value = at_path(doc, path)
                new = _forgotten(value, opens, lost, now, outcome.secrets, doc, name, path)
                if new is not value:
                    found[path], changes[path] = value, new
            if changes and not dry_run:
                with translate_errors():
                    result = await db[name].update_one(
                        {"_id": doc["_id"], **found}, {"$set": changes}
                    )
                outcome.changed += result.matched_count == 0
    return outcome


def _forgotten(
    value: Any,
    opens: Callable[[str], bool],
    lost: str,
    now: datetime,
    into: list[Unopened],
    doc: dict[str, Any],
    name: str,
    path: str,
) -> Any:
    """`value` (a sealed string or a list of `{"sealed": ...}` entries) with what `opens`
    refuses replaced by `lost`, each one added to `into`; `value` itself when none is.

    A list's rotated-out entry (one with an end, `expires_at` or a trigger's `until`) is
    dropped instead, even in its grace: the current secret signs alone, and kept as lost it
    would fail every send or call of its owner until the grace ends."""

    def unopened(field: str, ended: bool) -> None:
        tenant = str(doc.get("tenant", ""))
        into.append(Unopened(tenant, KINDS[name], str(doc["_id"]), field, ended))

    if isinstance(value, str):
        if opens(value):
            return value
        unopened(path, False)
        return lost
    if not isinstance(value, list):
        return value
    entries = []
    for i, entry in enumerate(value):
        if isinstance(entry, dict) and isinstance(entry.get("sealed"), str):
            if not opens(entry["sealed"]):
                rotated_out = _rotated_out(entry)
                unopened(f"{path}[{i}]", rotated_out)
                if rotated_out:
                    continue
                entry = {**entry, "sealed": lost}
        entries.append(entry)
    return value if entries == value else entries


def _rotated_out(entry: dict[str, Any]) -> bool:
    """Whether a list entry is a rotated-out secret (it has an end: `expires_at`, a
    trigger's `until`), not its owner's current one."""
    return entry.get("expires_at", entry.get("until")) is not None


_FROM: Final = "__sealed_in"
"""The member `sample`'s query names each document's collection in (no stored document has
it: it is added by the projection)."""


def _sealed_query(name: str, per_collection: int) -> list[dict[str, Any]]:
    """The documents of collection `name` holding a sealed value, up to `per_collection`:
    those values and the collection's name (`_FROM`).

    Only documents where a value is sealed match (a string at the field, or in an entry of
    the list): every trigger stores `auth.secrets` (empty when unsigned), a partner may store
    `secrets_sealed: null`; the first documents having the field could hold none, and a key
    tried on nothing passes (a wrong one then sealed as the key check)."""
    paths = FIELDS.get(name, (LISTS.get(name, ""),))
    sealed = [f"{path}.sealed" for path in paths] if name in LISTS else list(paths)
    return [
        {"$match": {"$or": [{path: {"$type": "string"}} for path in sealed]}},
        {"$limit": per_collection},
        {"$project": {**dict.fromkeys(paths, 1), _FROM: {"$literal": name}}},
    ]


def _renewed(value: Any, renew: Renew, where: str, outcome: Resealed) -> Any:
    """A sealed string, or a list of `{"sealed": ...}` entries, with each value renewed."""
    if isinstance(value, list):
        return [
            {**entry, "sealed": _renewed(entry["sealed"], renew, f"{where}/{i}", outcome)}
            if isinstance(entry, dict) and isinstance(entry.get("sealed"), str)
            else entry
            for i, entry in enumerate(value)
        ]
    if not isinstance(value, str):
        return value
    new = renew(value)
    if new is None:
        outcome.unreadable.append(where)
        return value
    if new == value:
        outcome.current += 1
    else:
        outcome.resealed += 1
    return new
