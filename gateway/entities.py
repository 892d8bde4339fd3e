"""Use case: create, read, change and delete entities, with the events each change causes.

Every write validates the whole resulting document, computes what changed, and stores the
change together with its events in one single-document write (see `store/entities.py`); a
write that spans several entities (`upsert_together`, a mapping's `also`) stores them all
with their events in one transaction. Only-forward fields (`forward`) are compared with the
stored entity at the revision the write is guarded by, so a stale value is never written.
Writes to one entity take turns in this process (`_Lanes`), in the order they arrived;
writes to different entities go to the database together (`store/group_commit.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Hashable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from gateway import write_fence
from gateway.clock import from_iso, utcnow
from gateway.doorbell import Doorbell
from gateway.errors import (
    BadRequest,
    Conflict,
    EntityContended,
    FieldProblem,
    InvalidPayload,
    NotFound,
    PreconditionFailed,
)
from gateway.formats import at_path
from gateway.formats.json_tree import (
    as_number,
    change_reaches,
    path_key,
    plain,
    reaches,
    same_json,
)
from gateway.kinds import KindService
from gateway.mapping.model import Emit
from gateway.paging import PAGE_PARAMS
from gateway.schemas.ids import (
    canonical_plate_key,
    is_mercosul_plate,
    normalize_identifier,
    normalize_plate,
    plate_equivalents,
)
from gateway.schemas.problems import pointer
from gateway.schemas.registry import (
    NATURAL_KEYS,
    SchemaRegistry,
    WholeValue,
    reference_field,
)
from gateway.store import Doc, Store, new_id
from gateway.store.entities import FILTERABLE, TogetherWrite
from gateway.store.occurrences import occurrence_key

log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 32
"""Rounds an optimistic write (guarded by the entity's revision) may lose to other writers of
the entity before it gives up: `EntityContended`, a 503 with Retry-After (`_Rounds`)."""
TURN_AFTER = 2
"""Rounds lost before a write reads the entity by taking its turn (a write) rather than by a
read: a copy made stale once by another process (writes spread over processes) costs a read,
as before; only a write that keeps losing moves the revision on."""
BACKOFF_SECONDS = 0.002
BACKOFF_CAP_SECONDS = 0.1
CONTENDED = "the entity is being changed concurrently by another process; retry shortly"


class _Rounds:
    """The rounds of one optimistic write. Writes to one entity take turns within a process
    (`_Lanes`), not across processes. A process writes from the copy it remembers, without a
    read, while the other, having lost, needs a read and a write to get in: with two
    processes, the one that lost once kept losing to the other's queue of writes, and 8
    rounds tried again at once were a 409 for some writes in a hundred at 200 concurrent
    (tests/test_entity_writes.py). So a write that lost a round pauses, at random (full
    jitter), up to `BACKOFF_SECONDS` doubled each round, at most `BACKOFF_CAP_SECONDS`, and
    reads the entity again; from its `TURN_AFTER`th lost round on by taking its turn
    (`EntityStore.take_turn`: the read moves the revision on, so the other process's next
    write from its remembered copy loses and reads too). After `WRITE_ATTEMPTS` rounds lost:
    `EntityContended`."""

    def __init__(self) -> None:
        self.lost = 0

    async def lose(self) -> None:
        """A round lost: pause, unless the request is past its write fence (`write_fence`:
        WriteAbandoned, nothing more is sent)."""
        self.lost += 1
        if self.lost >= WRITE_ATTEMPTS:
            raise EntityContended(CONTENDED)
        pause = min(BACKOFF_CAP_SECONDS, BACKOFF_SECONDS * 2 ** (self.lost - 1))
        await asyncio.sleep(random.uniform(0, pause))
        await write_fence.check()


def filter_fields(etype: str) -> tuple[str, ...]:
    """What a list of `etype` filters by (`EntityService.filters`): its indexed fields and
    its natural key."""
    own = FILTERABLE.get(etype, ())
    key = reference_field(etype)
    return own if key in own else (*own, key)


@dataclass(frozen=True, slots=True)
class Change:
    field: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class WriteResult:
    entity: Doc
    created: bool
    changes: tuple[Change, ...] = ()
    events: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # only-forward fields not written: their value was stale
    also: tuple[WriteResult, ...] = ()  # the further entities of the same write (`also`)


Forward = Sequence[tuple[str, str]]
"""Only-forward fields: (field, ordering field) pairs, see `forward_only`; an empty ordering
field (`IF_ABSENT`) is a field written only while the entity has no value there."""

IF_ABSENT = ""  # gateway.mapping.model.IF_ABSENT: the mapping package stays below this one

FUTURE_TOLERANCE_S = 300.0
"""How far ahead of now the time a partner says something happened may be (`too_far_ahead`):
the positions path's `future` gate (gateway.fleet.quality, `future_tolerance_s`' default).
A time further ahead is a clock gone wrong (a device clock a year off, local time sent as
UTC): an only-forward field's ordering time that far ahead would hold every later value
back until that date (it is skipped as a stale one is), a service done then is refused
(gateway.fleet.servicing), a driver report (a checklist's, a tracker's) is not recorded as a
handover scheduled for then (gateway.assignment_feed)."""


@dataclass(frozen=True, slots=True)
class Upsert:
    """One entity of `upsert_together`: like the arguments of `upsert`, plus whether it may
    be created (`create=False`: it must exist)."""

    etype: str
    fields: Mapping[str, Any]
    extra_events: Sequence[Emit] = ()
    event_detail: Mapping[str, Any] | None = None
    forward: Forward = ()
    create: bool = True
    visible: Sequence[str] | None = None  # what the writer reads (`visible_to`)


@dataclass(frozen=True, slots=True)
class Origin:
    """Who caused a write: recorded on its events. A write a flow run caused, by whichever
    step and whenever (a `set`, the driver a `fetch` assigns, also once its scheduled start
    comes, the push token a notification of the run was refused, the fold's events an
    odometer it wrote brings: `fleet/readings.py`), carries the run's chain in
    `extra`: `{run, depth}` (`flows/deliveries.py` `RunRef.chain`), which the flow starter's
    loop guard reads whatever the kind (docs/flows.md, "Loop guard")."""

    kind: str  # "admin", "trigger", "action", "schedule", "flow", "notification", an
    # assignment's source ("hr", "erp", ...) (docs/concepts.md)
    id: str
    extra: Mapping[str, Any] = field(default_factory=dict)


def diff(old: Any, new: Any, prefix: str = "") -> list[Change]:
    """The differences between two documents, as paths (`path_key`: dotted, a member whose
    name has a dot bracketed, `attributes["fuel.card"]`): where both sides are objects,
    their members' differences; elsewhere the value whole (leaves, lists, and an object that
    appears, goes or replaces a value of another kind: ONE change at the object, which
    `change_reaches` relates to the fields under it), compared as JSON values
    (`same_json`)."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[Change] = []
        for key in old.keys() | new.keys():
            changes.extend(diff(old.get(key), new.get(key), path_key(prefix, key)))
        return sorted(changes, key=lambda c: c.field)
    return [] if same_json(old, new) else [Change(prefix, old, new)]


Sees = Callable[[str], bool]
"""Whether the writer of a change can read the dotted field (`visible_to`)."""


def visible_to(expose: Sequence[str] | None) -> Sees | None:
    """What a writer that reads the entity through a trigger's `expose` sees: an exposed
    field, one inside it, and one holding an exposed field (`contact` when `contact.email`
    is exposed), member by member (`change_reaches`: `attributes` shows a change to
    `attributes["fuel.card"]`). None: every field (no `expose`)."""
    if expose is None:
        return None
    shown = tuple(expose)

    def sees(path: str) -> bool:
        return any(change_reaches(path, e) for e in shown)

    return sees


def merge(
    base: Mapping[str, Any],
    patch: Mapping[str, Any],
    whole: Mapping[str, WholeValue] = MappingProxyType({}),
    sees: Sees | None = None,
) -> dict[str, Any]:
    """RFC 7396 JSON merge patch: objects merge recursively, null removes a member. An object
    patched over a member that is no object (or absent) is merged into an empty one: its
    nulls mean absent there too, whatever was stored before. So is one patched over a member
    named in `whole` (`SchemaRegistry.whole_members`): an object that is one value (a
    driver's identity, a service record) is replaced, never paired with stored members; but
    those the writer cannot read (`sees`: a partner shown `contact.name` and
    `contact.email` by its trigger's `expose`) are kept while it names the same value: it
    could not send them back, and its write neither removes them nor tells of them
    (`pipeline.written`). A write changing a member that says which one the value is (its
    `x-identity`: `current_driver.cpf`, `last_service.at`) is another value: none are kept,
    or one driver's id and name would be stored with another's CPF."""
    result = dict(base)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            target = result.get(key)
            if key in whole:
                target = _unseen(target, value, key, whole[key].identity, sees)
            result[key] = merge(target if isinstance(target, Mapping) else {}, value)
        else:
            result[key] = value
    return result


def _unseen(
    stored: Any, sent: Mapping[str, Any], key: str, identity: Collection[str], sees: Sees | None
) -> dict[str, Any]:
    """The members of the stored whole value `stored` (member `key`) its writer cannot read,
    unless the value `sent` changes one of its `identity` members: then none."""
    if sees is None or not isinstance(stored, Mapping):
        return {}
    if any(
        name in sent and _spelled(name, sent[name]) != _spelled(name, stored.get(name))
        for name in identity
    ):
        return {}
    return {name: value for name, value in stored.items() if not sees(f"{key}.{name}")}


def _spelled(name: str, value: Any) -> Any:
    """`value` of member `name` as stored (a CPF written with its dots is the same CPF)."""
    return normalize_identifier(name, value) if isinstance(value, str) else value


def _values(query: Mapping[str, str], name: str) -> list[str]:
    """Every value of a query parameter (a multidict's; a plain mapping has one)."""
    getall = getattr(query, "getall", None)
    return list(getall(name, ())) if getall is not None else [query[name]]


def _instant(value: str) -> datetime | None:
    try:
        moment = from_iso(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def behind(new: Any, old: Any) -> bool:
    """Whether `new` is before `old` (stored): numbers by value (a wide integer too, as
    `as_number` reads it, the stored one from its text), date-times (ISO 8601 text) in time.
    Values that cannot be ordered (text, mixed kinds) are never behind."""
    new_number, old_number = as_number(new), as_number(old, stored=True)
    if new_number is not None and old_number is not None:
        return new_number < old_number
    if isinstance(new, str) and isinstance(old, str):
        new_at, old_at = _instant(new), _instant(old)
        return new_at is not None and old_at is not None and new_at < old_at
    return False


def known_whole(
    current: Doc,
    patch: Mapping[str, Any],
    whole: Mapping[str, WholeValue],
    news: News = MappingProxyType({}),
) -> Mapping[str, Any]:
    """`patch` without the whole values (`merge`'s `whole`) it sends again (`_sent_again`):
    what the writer knows of the stored one (an ERP's `{cpf}` of the driver in force, over
    the history's `{id, cpf, name}`; its `{cpf, name}` with the name as the ERP spells it).
    It stays as stored, and the write changes nothing there; replaced by what was sent, it
    was written back by the history at once, and again after each send, two events a send
    for ever. Only while no event of the entity waits for the relay (`waiting`): one that
    does may be an earlier report the history has not read, which this write, a later
    report, must follow (`assignment_feed.py`). Never those `news` says are news (True): a
    report the stored value says nothing of (`EntityService.news`: a handover time the
    history has another driver at); always those it says the history has heard (False): a
    stale report of a driver the history has at its handover time, who no longer drives
    (an ERP re-sending "Ana since 08:00" after a checklist's handover to Bruno at 10:00),
    which the history records nothing of and would write back over at once (the write
    hands it to the history, which keeps it as a repeat: `EntityService.heard`). `patch`
    itself when it keeps every member."""
    if waiting(current):
        return patch
    stored = current["data"]
    kept = {
        key: value
        for key, value in patch.items()
        if news.get(key)
        or (
            news.get(key) is None
            and not (key in whole and _sent_again(value, stored.get(key), whole[key].named_by))
        )
    }
    return patch if len(kept) == len(patch) else kept


def _sent_again(sent: Any, held: Any, named_by: Collection[str]) -> bool:
    """Whether the whole value `sent` is the stored `held` again: every member it gives, one
    at least, is the stored value's (an identifier in any spelling); a null gives nothing
    (an ERP mapping whose source for `id` or `name` is absent: `{cpf, name: null}` is
    `{cpf}` sent again). Or, `held` being a copy of the entity it names (it holds every
    member that names the value on its own, `named_by`: the history's `{id, cpf, name}` of a
    driver), it names it by them, one at least and each as stored, whatever its other
    members say: the driver's `name` is the driver entity's, which the history copies. A
    value holding fewer (an ERP's `{cpf, name}` of a driver the tenant does not have) is a
    copy of nothing: no rename reaches it, and a write of another name corrects it. The
    report's own members (`REPORTED`: a driver's `since`), which no stored value holds, are
    not compared: whether the history has heard them is `EntityService.news`'s question."""
    if not (isinstance(sent, Mapping) and isinstance(held, Mapping)):
        return False
    given = [name for name in sent if sent[name] is not None and name not in REPORTED]
    copy = bool(named_by) and all(held.get(name) is not None for name in named_by)
    naming = [name for name in given if name in named_by]
    compared = naming if copy and naming else given
    return bool(compared) and all(_same_member(n, sent[n], held.get(n)) for n in compared)


def merged_write(
    current: Doc | None,
    fields: Mapping[str, Any],
    whole: Mapping[str, WholeValue],
    sees: Sees | None = None,
    *,
    as_sent: bool = False,
    news: News = MappingProxyType({}),
) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """What a write of `fields` leaves of the entity `current`, before it is checked: merged
    into its data (`merge`), a whole value it sends again left as stored (`known_whole`,
    unless the write's whole values are `as_sent`: the history's copy of a driver); into
    nothing for an entity not stored (None). With the change merged, which is what the
    write sends (`SchemaRegistry.check_write`'s `change`). The one rule the writes and the
    dry runs (`mapping_files/dry_run.py`, `flows/dry_run.py`) share, so a dry run says what
    the write does. A whole value naming nothing is no write of it (`without_lone_reports`:
    a `current_driver` with neither `cpf` nor `id`)."""
    fields = without_lone_reports(fields, whole)
    if current is None:
        return merge({}, fields, whole, sees), fields
    known = fields if as_sent else known_whole(current, fields, whole, news)
    return merge(current["data"], known, whole, sees), known


def without_lone_reports(
    fields: Mapping[str, Any], whole: Mapping[str, WholeValue]
) -> Mapping[str, Any]:
    """`fields` without the whole values that name nothing (`lone_reports`): no write of
    them, which stay as stored (a null never removes anything; a removal is `{remove:
    true}`). `fields` itself when none is left out."""
    lone = lone_reports(fields, whole)
    return {k: v for k, v in fields.items() if k not in lone} if lone else fields


def lone_reports(fields: Mapping[str, Any], whole: Mapping[str, WholeValue]) -> list[str]:
    """The whole values of `fields` that name nothing: giving something, but none of the
    members naming the value on its own (`named_by`), or, where the schema names none,
    only a report's members (`REPORTED`). A `current_driver` with neither `cpf` nor `id`
    (an ERP's record whose CPF is blank beside its name column, with or without the date
    of its last change: `{name: "SEM CONDUTOR"}`, `{name, since}`, `{since}`; an admin's
    `{name: "Fulano"}`) names no driver: written, it left the vehicle's field naming
    nobody while the history kept the driver, for good (no report is read from it)."""
    return [key for key, value in fields.items() if key in whole and _lone(value, whole[key])]


def _lone(value: Any, whole: WholeValue) -> bool:
    """Whether the whole value `value` gives something and names nothing (`named_by`)."""
    if not isinstance(value, Mapping):
        return False
    given = {name for name, member in value.items() if member is not None}
    if whole.named_by:
        return bool(given) and not given & whole.named_by
    return bool(given & REPORTED) and not given - REPORTED


def waiting(current: Doc) -> bool:
    """Whether events of the entity wait for the relay (its outbox's bytes, `outbox_bytes`,
    counted with every write and drain; a copy this process remembers from its own write
    always says so)."""
    return bool(current.get("outbox_bytes"))


def _names_held(sent: Mapping[str, Any], held: Any) -> bool:
    """Whether a `current_driver` value sent names the driver the stored one `held` names:
    each of its `id` and `cpf` given (one at least) as held (any spelling)."""
    if not isinstance(held, Mapping):
        return False
    named = [name for name in ("id", "cpf") if isinstance(sent.get(name), str)]
    return bool(named) and all(_same_member(n, sent[n], held.get(n)) for n in named)


def _same_member(name: str, sent: Any, held: Any) -> bool:
    if isinstance(sent, str) and isinstance(held, str):
        return normalize_identifier(name, sent) == normalize_identifier(name, held)
    return same_json(sent, held)


def too_far_ahead(at: datetime, now: datetime) -> bool:
    """Whether `at`, the time something happened, is later than `now` by more than
    FUTURE_TOLERANCE_S: a clock gone wrong."""
    return (at - now).total_seconds() > FUTURE_TOLERANCE_S


HANDOVER_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)  # `assignments.EARLIEST`

News = Mapping[str, bool]
"""What the history says of the whole values a write reports (`EntityService.news`): True,
news (never taken for the stored value sent again); False, heard (a stale report, left as
stored); a value not named is judged on the stored one alone (`known_whole`)."""

REPORTED = frozenset({"since"})
"""Members of a whole value that a report gives and no stored value holds: a vehicle's
`current_driver.since`, the handover time, which the history keeps as its change's start
(the field is written back without it)."""

DrivesAt = Callable[[str, str, datetime, Mapping[str, Any]], Awaitable[bool]]
"""Whether the history has the driver a vehicle's `current_driver` value names in force at a
time: (tenant, vehicle id, time, value) (`AssignmentService.drives_at`)."""


Hear = Callable[[str, str, Mapping[str, Any], "Origin"], Awaitable[None]]
"""Keep in the history a report a vehicle's write left out as heard (`EntityService.heard`):
(tenant, vehicle id, the `current_driver` value sent, the write's origin)
(`AssignmentFeed.heard`)."""


def reported_since(value: Any) -> datetime | None:
    """The handover time a `current_driver` value sent reports (its `since`), None if none."""
    return _moment(value.get("since")) if isinstance(value, Mapping) else None


def handover_problems(sent: Mapping[str, Any], now: datetime) -> list[FieldProblem]:
    """The problems of the handover time a vehicle write sends (`current_driver.since`: from
    when the driver it names drives, `assignment_feed.py`): a time that happened, so not
    `too_far_ahead` of `now` (a clock gone wrong, not a handover scheduled for then: the
    history's API schedules), and not before 2000, as the history's own times."""
    driver = sent.get("current_driver")
    since = _moment(driver.get("since")) if isinstance(driver, Mapping) else None
    if since is None:  # none sent, or no time (the schema's `format` says so)
        return []
    at = "/current_driver/since"
    if too_far_ahead(since, now):
        why = (
            f"a handover time more than {FUTURE_TOLERANCE_S:g} s ahead of now: a report "
            "says when a handover happened (a clock gone wrong?)"
        )
        return [FieldProblem(at, why, "range")]
    if since < HANDOVER_EARLIEST:
        return [FieldProblem(at, "a handover time must be after 2000", "range")]
    return []


def refuse_handover(etype: str, sent: Mapping[str, Any], now: datetime) -> None:
    """InvalidPayload `invalid current_driver.since` when the handover time a vehicle write
    sends (`sent`: the fields as written, before `known_whole`) has problems
    (`handover_problems`): the one check of the writes (`EntityService`) and of the mapping
    dry run (`mapping_files/dry_run.py`), so a dry run refuses what the write refuses,
    whoever drives the vehicle now."""
    if etype == "vehicle" and (problems := handover_problems(sent, now)):
        raise InvalidPayload("invalid current_driver.since", problems)


def ahead(value: Any, now: datetime) -> bool:
    """Whether `value` is a date-time (ISO 8601 text) `too_far_ahead` of `now`."""
    if not isinstance(value, str):
        return False
    at = _instant(value)
    return at is not None and too_far_ahead(at, now)


def forward_only(
    stored: Mapping[str, Any],
    fields: Mapping[str, Any],
    forward: Forward,
    now: datetime | None = None,
) -> tuple[Mapping[str, Any], tuple[str, ...]]:
    """`fields` without the only-forward fields whose ordering field would go back (its new
    value is behind the stored one) or, another target's, is a time too far in the future
    (`ahead` of `now`: a stored one that far ahead holds nothing back), and the dotted fields
    left out. A field ordered by another leaves with it: a stale reading keeps neither its
    value nor its time (nor what is ordered by either). An if-absent field the stored entity
    has is left out too (not listed: it is not stale)."""
    stale: dict[str, None] = {}
    present: set[str] = set()  # if-absent fields the entity has: kept as they are, not stale
    moment = utcnow() if now is None else now
    for target, by in forward:
        if by == IF_ABSENT:
            if at_path(stored, target) is not None:
                present.add(target)
            continue
        new, old = at_path(fields, by), at_path(stored, by)
        # Another target orders it: the reading's time, whose future is a clock gone wrong (a
        # value ordered by itself may be a date ahead: a licence's expiry). A stored time too
        # far ahead (written before this rule) holds nothing back either.
        timed = by != target
        held = old is not None and not (timed and ahead(old, moment)) and behind(new, old)
        if new is not None and ((timed and ahead(new, moment)) or held):
            stale[target] = None
            stale[by] = None
    # A field ordered by one left out leaves too (a reading's source goes with its time,
    # which goes with its value): the entity keeps all of the reading it has, or none.
    while more := [t for t, by in forward if by in stale and t not in stale]:
        stale.update(dict.fromkeys(more))
    if not stale and not present:
        return fields, ()
    kept = _without(fields, set(stale) | present)
    return kept, tuple(stale)


def _without(fields: Mapping[str, Any], dotted: set[str], prefix: str = "") -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in fields.items():
        path = f"{prefix}{key}"
        if path in dotted:
            continue
        if isinstance(value, Mapping) and any(d.startswith(f"{path}.") for d in dotted):
            inner = _without(value, dotted, f"{path}.")
            if inner:
                result[key] = inner
            continue
        result[key] = value
    return result


def keyed_as_stored(
    etype: str, stored: Mapping[str, Any], data: Mapping[str, Any], *, create: bool = True
) -> Mapping[str, Any]:
    """`data`, the stored entity's data `stored` with a write merged into it, with the natural
    key as the write stores it. The key found the entity (`natural_key`: a plate and its
    Mercosul twin find one vehicle) and is written only by a write that could have created
    the entity, and never back: with `create` false (the key is a lookup) the entity keeps
    its key members as stored, and a vehicle whose plate is Mercosul keeps it when a write
    names it by its old twin (a conversion is one way: a source still sending ABC1234 for
    ABC1C34 is out of date). Old → Mercosul is written: that is the conversion."""
    if create and not _back_to_old_plate(etype, stored, data):
        return data
    key = {name: stored[name] for name in NATURAL_KEYS.get(etype, ()) if name in stored}
    return {**data, **key}


def _back_to_old_plate(etype: str, stored: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """Whether `data` names a vehicle stored under its Mercosul plate by the old twin."""
    was, now = stored.get("plate"), data.get("plate")
    if etype != "vehicle" or not isinstance(was, str) or not isinstance(now, str):
        return False
    if not is_mercosul_plate(was) or is_mercosul_plate(now):
        return False
    try:
        return canonical_plate_key(now) == canonical_plate_key(was)
    except ValueError:  # no plate: the write's check refuses it
        return False


def _must_exist(etype: str, nk: str) -> InvalidPayload:
    """At the field the entity is named by (`/plate`): a trigger names it by the mapping's
    target and source, where the source sits in the payload (`/placa`)."""
    message = f"no {etype} {nk!r}: this mapping does not create one"
    field = reference_field(etype)
    problem = FieldProblem(pointer((field,)), message, "not_found", {"target": field})
    return InvalidPayload(message, [problem])


SAME_ENTITY = "two targets of one payload write the same entity"


def repeated_targets(keys: Sequence[Hashable]) -> tuple[int, ...]:
    """The places of the targets of one write (a mapping's main target, then its `also`) that
    name an entity an earlier target names: `keys` are their `EntityService.target_key`s.
    `upsert_together` refuses such a write (`same_entity_refusal`); the dry run marks those
    targets with the same refusal."""
    seen: set[Hashable] = set()
    repeats: list[int] = []
    for index, key in enumerate(keys):
        if key in seen:
            repeats.append(index)
        seen.add(key)
    return tuple(repeats)


def same_entity_refusal() -> InvalidPayload:
    return InvalidPayload(SAME_ENTITY, [FieldProblem("", SAME_ENTITY, "duplicate")])


METADATA = ("id", "entity_type", "version", "created_at", "updated_at")
"""What an entity's view (`public`) shows beside its data."""


def unmet(expect: Mapping[str, Any], data: Mapping[str, Any]) -> str | None:
    """Why the entity's `data` is not as `expect` says (a path, read as `reaches` reads a
    filter's → the value it must hold, null: absent or null), None when it is: the condition
    of a conditional write (`patch(expect=)`, a flow's `set` with `expect`), the first field
    that differs."""
    for name, wanted in expect.items():
        held = plain(reaches(data, name))
        if not same_json(held, plain(wanted)):
            return f"its {name} is {_shown(held)}, not {_shown(wanted)}"
    return None


def _shown(value: Any) -> str:
    return "null" if value is None else repr(plain(value))


def public(doc: Doc) -> dict[str, Any]:
    """The API's view of a stored entity: its data, its id and its metadata."""
    return {
        **as_mapped(doc["data"], str(doc["_id"]), doc["type"], doc["rev"]),
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
    }


def as_mapped(
    data: Mapping[str, Any] | None, entity_id: Any, entity_type: Any, version: Any
) -> dict[str, Any]:
    """An entity as an action's request mapping reads it (`entity`), a proxy call's and a
    delivery's alike: its own fields (a vehicle's `type`, an `other` entity's `key`), then
    its `id`, `entity_type` and `version` under names no entity field may take."""
    return {**(data or {}), "id": entity_id, "entity_type": entity_type, "version": version}


class EntityService:
    def __init__(
        self,
        store: Store,
        schemas: SchemaRegistry,
        kinds: KindService,
        relay_doorbell: Doorbell,
        recent_size: int = 10_000,
    ) -> None:
        self._store = store
        self._schemas = schemas
        self._kinds = kinds
        # Every write that adds events rings it: the relay moves them on at once.
        self._relay_doorbell = relay_doorbell
        self._recent = _RecentEntities(recent_size)
        self._lanes = _Lanes()
        # Called with (tenant, type, id) once an entity is deleted here: what this process
        # cached about it (the position appender's plates and tracker ids) goes at once.
        self.on_deleted: list[Callable[[str, str, str], None]] = []
        # The history's answer to "does this driver drive the vehicle then?" (set once the
        # assignments exist, `notify/wiring.py`): a handover time it has not heard is news.
        self.drives_at: DrivesAt | None = None
        # Where a report the history has heard goes instead of the vehicle's field (set with
        # `drives_at`): the history keeps it as a repeat (`heard`).
        self.hear: Hear | None = None

    async def _check(
        self,
        tenant: str,
        etype: str,
        data: Mapping[str, Any],
        current: Doc | None = None,
        change: Mapping[str, Any] | None = None,
        *,
        dry: bool = False,
    ) -> dict[str, Any]:
        """The validated, normalised document; tenants' custom kinds use their own schema.
        `current`: the entity `data` is merged into (None: a new entity); `change`: the
        change merged into it, or into nothing (None: `data` is sent whole), which says what
        the write sends (`SchemaRegistry.check_write`). A stored value the write does not
        send, which a newer rule refuses, fails no write: it stays as
        stored, and the write says so in the log (its pointer, never its value). `dry`: for
        a dry run, which writes nothing (a custom kind is not marked as being written) and
        logs nothing."""
        stored = None if current is None else current["data"]
        kind_schema = None
        if etype == "other":
            kinds = self._kinds
            kind_schema = await (kinds.schema_for if dry else kinds.schema_for_write)(
                tenant, data.get("kind")
            )
            data = local_time_kept(paid_on_kept(data, stored), stored)
        checked = self._schemas.check_write(
            etype, data, kind_schema=kind_schema, stored=stored, change=change
        )
        refuse_handover(etype, data if change is None else change, utcnow())
        if checked.left and current is not None and not dry:
            log.warning(
                "%s %r of tenant %s: a write leaves stored values the schema refuses as they "
                "are: %s; a write sending valid values (or null) corrects them",
                etype,
                current["nk"],
                tenant,
                ", ".join(f"{p.pointer} ({p.keyword})" for p in checked.left),
            )
        return checked.document

    async def news(self, tenant: str, etype: str, current: Doc, fields: Mapping[str, Any]) -> News:
        """What the history says of the whole values of `fields` (`known_whole`'s `news`): a
        vehicle's `current_driver` with a handover time (`since`) at which the history has
        not the driver it names (another, nobody, none yet) is news (True), never taken for
        the stored one sent again: the driver in force now, reported from before the change
        that records them (an ERP's handover at 08:00 after a checklist's of 10:00), drives
        from then (SPEC §6: a fine goes to the driver at its time). A report of the driver
        the history has then is a repeat, whether the relay has caught up or not
        (`assignment_feed.py`); one naming another driver than the stored value's (the
        ERP's "Ana since 08:00" sent again after Bruno's checklist at 10:00) is heard
        (False): the field stays as stored, as the history would write it back, and the
        report goes to the history all the same, as a repeat (`heard`). One naming the
        stored value's driver is judged on it (a pending driver's name corrected)."""
        sent = fields.get("current_driver") if etype == "vehicle" else None
        since = reported_since(sent)
        if since is None or self.drives_at is None or not isinstance(sent, Mapping):
            return {}
        if not await self.drives_at(tenant, str(current["_id"]), since, sent):
            return {"current_driver": True}
        held = current["data"].get("current_driver")
        return {} if _names_held(sent, held) else {"current_driver": False}

    def heard(
        self,
        etype: str,
        sent: Mapping[str, Any],
        written: Mapping[str, Any],
        news: News,
    ) -> Mapping[str, Any] | None:
        """The `current_driver` report a vehicle write (`sent`, as `news` judged it) leaves
        out of what it writes (`written`: `merged_write`'s change) because the history has
        that driver at its `since` (`news` not True: heard, or the driver in force sent
        again), else None. Left out, it causes no event, so the relay never hands it to the
        history: it is handed over at once (`hear`), to be kept as a repeat of the change
        in force then, which it stands in for when that change is taken back (a checklist
        corrected). Until 2026-12-07 such a report was dropped, and a first report of the
        previous driver (the ERP's "Ana since 09:00" after Bruno's checklist at 10:00) did
        not stand when Ana's checklist of 08:00 was deleted."""
        sent_value = sent.get("current_driver") if etype == "vehicle" else None
        if (
            self.hear is None
            or self.drives_at is None
            or not isinstance(sent_value, Mapping)
            or reported_since(sent_value) is None
            or news.get("current_driver") is True
            or "current_driver" in written
        ):
            return None
        return sent_value

    async def _hand_over(
        self, tenant: str, vehicle: Doc, value: Mapping[str, Any] | None, origin: Origin
    ) -> None:
        """The report `heard` found, handed to the history (`hear`) once the write stood."""
        if value is not None and self.hear is not None:
            await self.hear(tenant, str(vehicle["_id"]), value, origin)

    def _say_lone(
        self,
        tenant: str,
        etype: str,
        fields: Mapping[str, Any],
        origin: Origin,
        nk: str | None = None,
    ) -> None:
        """Log the whole values a write leaves out as naming nothing (`lone_reports`), with
        the writer: the reason the field stays as stored (a blank CPF in an ERP's feed)."""
        for name in lone_reports(fields, self._schemas.whole_members(etype)):
            log.info(
                "%s %r of tenant %s: %s names nothing (%s): not written (write by %s:%s)",
                etype,
                nk if nk is not None else "(created)",
                tenant,
                name,
                "neither cpf nor id" if name == "current_driver" else "no member naming it",
                origin.kind,
                origin.id,
            )

    def _merged_into_nothing(
        self, etype: str, change: Mapping[str, Any]
    ) -> tuple[dict[str, Any], Mapping[str, Any]]:
        """A change to an entity not stored yet, merged into nothing as into a stored one:
        a null removes its member (one the schema requires keeps it, at any depth: where it
        sent null, `SchemaRegistry.check_write`'s `change`). So whether a payload is
        accepted does not depend on whether its entity exists yet."""
        return merged_write(None, change, self._schemas.whole_members(etype))

    def natural_key(self, etype: str, data: Mapping[str, Any]) -> str:
        """The stored natural key. Vehicles use the Mercosul form of the plate, so ABC1234
        and its Mercosul twin ABC1C34 are one vehicle; others join their key fields."""
        if etype == "vehicle":
            return self._schemas.derived_fields(etype, data)["plate_key"]
        return ":".join(self._schemas.natural_key(etype, data).values())

    def target_key(self, etype: str, data: Mapping[str, Any]) -> tuple[str, str]:
        """Which entity a target of a write names: its type and natural key."""
        return etype, self.natural_key(etype, data)

    def _key_from_ref(self, etype: str, ref: str) -> str | None:
        """A path reference as a natural key: a plate, a CPF, a CNPJ, or `kind:key`."""
        if etype == "other":
            kind, _, key = ref.partition(":")
            return f"{kind}:{key}" if key else None
        try:
            return self.natural_key(etype, {reference_field(etype): ref})
        except InvalidPayload:
            return None

    def filters(
        self, etype: str, query: Mapping[str, str], *, ignore: Collection[str] = ()
    ) -> dict[str, str]:
        """Query parameters as filters on the type's indexed fields and its natural key,
        normalised as stored, but a `plate` as sent (`find` matches its spellings, and the
        text as sent where a kind keeps it so); BadRequest names the unknown ones. Paging
        parameters and `ignore` (a token parameter, say) are not filters."""
        self._schemas.require_type(etype)
        allowed = set(filter_fields(etype))
        filters = {k: v for k, v in query.items() if k not in PAGE_PARAMS and k not in ignore}
        if twice := sorted(k for k in filters if len(_values(query, k)) > 1):
            # Which value the caller meant (either, the first?) would be a guess.
            raise BadRequest(f"the filter {', '.join(twice)} is given more than once")
        if unknown := sorted(set(filters) - allowed):
            raise BadRequest(
                f"cannot filter {etype} by {', '.join(unknown)}; "
                f"filters: {', '.join(sorted(allowed))}"
            )
        return {k: v if k == "plate" else normalize_identifier(k, v) for k, v in filters.items()}

    async def get(self, tenant: str, etype: str, ref: str) -> Doc:
        """By id, or else by natural key."""
        self._schemas.require_type(etype)
        doc = await self._store.entities.get(tenant, etype, id=ref)
        if doc is None and (nk := self._key_from_ref(etype, ref)) is not None:
            doc = await self._store.entities.get(tenant, etype, nk=nk)
        if doc is None:
            raise NotFound(f"no {etype} {ref!r}")
        return doc

    async def every(self, tenant: str, etype: str, fields: Sequence[str]) -> list[Doc]:
        """Every entity of a type, by id, only the `data` members `fields`, in one query."""
        self._schemas.require_type(etype)
        return await self._store.entities.every(tenant, etype, fields)

    async def find(
        self,
        tenant: str,
        etype: str,
        filters: Mapping[str, Any],
        *,
        after: str | None,
        limit: int,
        excluding: Mapping[str, str] | None = None,
    ) -> list[Doc]:
        """Entities matching `filters` and none of `excluding` (a field unset is not excluded).
        A `plate` filter finds by either spelling (old or Mercosul): a vehicle, as `get` does,
        on the natural key; a fine (or any entity with a plate) by every `plate_equivalents`
        spelling, so the fines of FIN1C34 include those issued to it as FIN1234, and by the
        text as given and normalised (a kind whose `plate` is free text keeps it as sent:
        `abc-1234`, `MOTO 77`)."""
        self._schemas.require_type(etype)
        nk = None
        one_of: dict[str, tuple[str, ...]] = {}
        plate = filters.get("plate")
        if isinstance(plate, str) and etype == "vehicle":
            nk = self._key_from_ref(etype, plate)
            if nk is None:  # no vehicle has an invalid plate
                return []
        elif isinstance(plate, str):
            try:
                spellings: tuple[str, ...] = plate_equivalents(plate)
            except ValueError:  # not a plate: a kind's free text
                spellings = (normalize_plate(plate),)
            one_of["plate"] = tuple(dict.fromkeys((*spellings, plate)))
        if nk is not None or one_of:
            filters = {k: v for k, v in filters.items() if k != "plate"}
        return await self._store.entities.find(
            tenant,
            etype,
            filters,
            after=after,
            limit=limit,
            nk=nk,
            one_of=one_of,
            excluding=excluding,
        )

    async def create(
        self,
        tenant: str,
        etype: str,
        data: Mapping[str, Any],
        origin: Origin,
        extra_events: Sequence[Emit] = (),
        event_detail: Mapping[str, Any] | None = None,
        change: Mapping[str, Any] | None = None,
    ) -> WriteResult:
        """The entity `data` is, stored as sent (an admin's create); `change`: `data` is
        that change merged into nothing (`_check`). A whole value naming nothing is left
        out (`without_lone_reports`), as from every write."""
        if change is None:
            self._say_lone(tenant, etype, data, origin)
            data = without_lone_reports(data, self._schemas.whole_members(etype))
        clean = await self._check(tenant, etype, data, change=change)
        nk = self.natural_key(etype, clean)
        events = _events(etype, clean, True, [], origin, extra_events, event_detail)
        write_fence.check_deadline()  # a held-up create would bring back a deleted entity
        doc = await self._store.entities.insert(tenant, etype, nk, clean, events)
        if doc is None:
            raise Conflict(f"a {etype} with key {nk!r} already exists")
        self._relay_doorbell.ring()
        self._recent.put(tenant, doc)
        return WriteResult(doc, True, (), tuple(e["type"] for e in events))

    async def upsert(
        self,
        tenant: str,
        etype: str,
        fields: Mapping[str, Any],
        origin: Origin,
        extra_events: Sequence[Emit] = (),
        event_detail: Mapping[str, Any] | None = None,
        forward: Forward = (),
        *,
        create: bool = True,
        visible: Sequence[str] | None = None,
    ) -> WriteResult:
        """Create the entity `fields` name by natural key (unless `create` is false: then it
        must exist, else InvalidPayload `not_found`), or merge `fields` into it: a merge
        patch (`merge`) either way, into nothing for a new entity (`_merged_into_nothing`).
        `visible`: the fields the writer reads (its trigger's `expose`), whose whole values'
        other members the write keeps (`merge`).

        The entity as this process last wrote it is tried first: the write is guarded by the
        entity's version, so a stale copy costs one failed update and a re-read, never a lost
        change. A tracker sending positions for one vehicle thus costs one round trip a fix.
        Only-forward fields (`forward`) whose value is stale are left out (`skipped`).
        """
        nk = self.natural_key(etype, fields)
        extra_events = await self._unannounced(tenant, etype, origin, extra_events)
        self._say_lone(tenant, etype, fields, origin, nk)
        async with self._lanes.turn((tenant, etype, nk)):
            return await self._upsert(
                tenant,
                etype,
                nk,
                fields,
                origin,
                extra_events,
                event_detail,
                forward,
                create,
                visible_to(visible),
            )

    async def _upsert(
        self,
        tenant: str,
        etype: str,
        nk: str,
        fields: Mapping[str, Any],
        origin: Origin,
        extra_events: Sequence[Emit],
        event_detail: Mapping[str, Any] | None,
        forward: Forward = (),
        create: bool = True,
        sees: Sees | None = None,
    ) -> WriteResult:
        current = self._recent.get(tenant, etype, nk)
        rounds = _Rounds()
        while True:
            remembered = current is not None
            if current is None:
                current = await self._read(rounds, tenant, etype, nk)
            if current is None:
                if not create:
                    raise _must_exist(etype, nk)
                # Nothing stored holds a value back; a reading's time far ahead still does.
                kept, skipped = forward_only({}, fields, forward) if forward else (fields, ())
                data, change = self._merged_into_nothing(etype, kept)
                try:
                    made = await self.create(
                        tenant, etype, data, origin, extra_events, event_detail, change
                    )
                    return replace(made, skipped=skipped) if skipped else made
                except Conflict:  # created concurrently: merge into it on the next round
                    await rounds.lose()
                    continue
            # Only-forward fields are judged against `current`, and the write is guarded by
            # its revision: a value judged fresh is never written over a newer one.
            kept, skipped = (
                forward_only(current["data"], fields, forward) if forward else (fields, ())
            )
            whole = self._schemas.whole_members(etype)
            refuse_handover(etype, kept, utcnow())  # as sent: the stored value may stay
            news = await self.news(tenant, etype, current, kept)
            if (
                remembered
                and waiting(current)
                and known_whole({"data": current["data"]}, kept, whole, news) is not kept
            ):
                # A repeat of a whole value judged on the copy of our own write, which
                # always has events waiting: read whether they still do.
                self._recent.drop(tenant, etype, nk)
                current = None
                continue
            merged, change = merged_write(current, kept, whole, sees, news=news)
            result = await self._write(
                tenant,
                current,
                merged,
                origin,
                extra_events,
                event_detail,
                create=create,
                change=change,
            )
            # "Nothing changed" was decided against the remembered copy without a write to
            # guard it: confirm it against the database before answering.
            if result is not None and (result.events or not remembered):
                heard = self.heard(etype, kept, change, news)
                await self._hand_over(tenant, current, heard, origin)
                return replace(result, skipped=skipped) if skipped else result
            self._recent.drop(tenant, etype, nk)
            current = None
            if result is None:
                await rounds.lose()

    async def _unannounced(
        self, tenant: str, etype: str, origin: Origin, events: Sequence[Emit]
    ) -> Sequence[Emit]:
        """`events` without those whose partner's occurrence (`Emit.occurrence`) an event
        already announced: a redelivery's answer lists none. The relay is what makes sure
        (`store/occurrences.py`): two redeliveries at once both pass here, one is stored."""
        keys = [
            None
            if e.occurrence is None
            else occurrence_key(
                tenant, {"kind": origin.kind, "id": origin.id}, etype, e.type, e.occurrence
            )
            for e in events
        ]
        if not any(keys):
            return events
        done = await self._store.occurrences.announced([k for k in keys if k is not None], utcnow())
        return [e for e, k in zip(events, keys, strict=True) if k is None or k not in done]

    async def upsert_together(
        self, tenant: str, upserts: Sequence[Upsert], origin: Origin
    ) -> list[WriteResult]:
        """Upsert several entities in one durable write: every entity with its events, or
        nothing (a multi-document transaction, `store/entities.py` `write_together`). Each
        is checked first, so one that does not validate fails them all before any write;
        one that changed meanwhile makes them all re-read and try again. The entities take
        their turns (`_Lanes`) in one order, so two such writes never wait for each other."""
        keys = [(tenant, *self.target_key(u.etype, u.fields)) for u in upserts]
        upserts = [
            replace(
                u, extra_events=await self._unannounced(tenant, u.etype, origin, u.extra_events)
            )
            for u in upserts
        ]
        if repeated_targets(keys):
            raise same_entity_refusal()
        for u, (_, _, nk) in zip(upserts, keys, strict=True):
            self._say_lone(tenant, u.etype, u.fields, origin, nk)
        async with contextlib.AsyncExitStack() as turns:
            for key in sorted(set(keys)):
                await turns.enter_async_context(self._lanes.turn(key))
            rounds = _Rounds()
            while True:
                planned = await asyncio.gather(  # read and check them side by side
                    *(
                        self._plan(rounds, tenant, u, nk, origin)
                        for u, (_, _, nk) in zip(upserts, keys, strict=True)
                    )
                )
                writes = [write for write, _, _ in planned if write is not None]
                if writes:
                    write_fence.check_deadline()
                docs = await self._store.entities.write_together(tenant, writes) if writes else []
                if docs is None:  # one of them changed meanwhile: read them all again
                    await rounds.lose()
                    continue
                if writes:
                    self._relay_doorbell.ring()
                stored = iter(docs)
                results = []
                for write, result, heard in planned:
                    if write is not None:
                        doc = next(stored)
                        self._recent.put(tenant, doc)
                        result = replace(result, entity=doc)
                    results.append(result)
                    await self._hand_over(tenant, result.entity, heard, origin)
                return results

    async def _plan(
        self, rounds: _Rounds, tenant: str, upsert: Upsert, nk: str, origin: Origin
    ) -> tuple[TogetherWrite | None, WriteResult, Mapping[str, Any] | None]:
        """One entity of `upsert_together`, checked: its write (None when nothing changes),
        its result, whose entity the write will replace, and the report it leaves out as
        heard (`heard`). Read as a single write's round reads it (`_read`: taking its turn
        once the write kept losing)."""
        etype, extra, detail = upsert.etype, upsert.extra_events, upsert.event_detail
        current = await self._read(rounds, tenant, etype, nk)
        try:
            if current is None:
                if not upsert.create:
                    raise _must_exist(etype, nk)
                kept, skipped = forward_only({}, upsert.fields, upsert.forward)
                created, change = self._merged_into_nothing(etype, kept)
                clean = await self._check(tenant, etype, created, change=change)
                events = _events(etype, clean, True, [], origin, extra, detail)
                made = TogetherWrite(etype, nk, None, clean, events)
                types = tuple(e["type"] for e in events)
                return made, WriteResult({}, True, (), types, skipped), None
            kept, skipped = forward_only(current["data"], upsert.fields, upsert.forward)
            whole = self._schemas.whole_members(etype)
            refuse_handover(etype, kept, utcnow())  # as sent: the stored value may stay
            news = await self.news(tenant, etype, current, kept)
            merged, change = merged_write(
                current, kept, whole, visible_to(upsert.visible), news=news
            )
            clean = await self._written(
                tenant, current, merged, create=upsert.create, change=change
            )
        except InvalidPayload as exc:
            problems = [replace(p, extra={**p.extra, "entity_type": etype}) for p in exc.problems]
            raise exc.restated(f"{etype} {nk!r}: {exc.detail}", problems) from None
        changes = diff(current["data"], clean)
        events = _events(etype, clean, False, changes, origin, extra, detail)
        types = tuple(e["type"] for e in events)
        result = WriteResult(current, False, tuple(changes), types, skipped)
        write = TogetherWrite(etype, nk, current, clean, events) if events else None
        return write, result, self.heard(etype, kept, change, news)

    async def patch(
        self,
        tenant: str,
        etype: str,
        ref: str,
        patch: Mapping[str, Any],
        origin: Origin,
        *,
        as_sent: bool = False,
        at_rev: int | None = None,
        expect: Mapping[str, Any] | None = None,
    ) -> WriteResult:
        """`patch` merged into the entity's data as it is written over (read again after a
        concurrent write). `as_sent`: its whole values are written as sent, never taken for
        the stored one sent again (`known_whole`): the history's own copy of a driver, a
        rename keeping the id and CPF. `at_rev`: written only over that revision of the
        entity (`rev`, the one the patch was made from), else PreconditionFailed and
        nothing written: a patch holding values read from it (the admin UI's whole
        `contact`, built from the members it read) would put back what a write meanwhile
        changed. `expect` (dotted field → value, `unmet`): written only while the entity
        holds those values, else PreconditionFailed and nothing written; checked on the
        revision the write replaces (a write that loses a round checks the entity it reads
        again), so no write between the check and the write's own goes unseen: a flow's
        `set` of what a partner said about the values its event had (a fine's driver at its
        time) is not written over a fine corrected since."""
        nk = (await self.get(tenant, etype, ref))["nk"]
        self._say_lone(tenant, etype, patch, origin, nk)
        async with self._lanes.turn((tenant, etype, nk)):
            rounds = _Rounds()
            while True:
                current = await self._current(rounds, tenant, etype, ref, nk)
                if at_rev is not None and current["rev"] != at_rev:
                    raise PreconditionFailed(
                        f"the {etype} was written since revision {at_rev} (it is at "
                        f"{current['rev']}); nothing was changed"
                    )
                if expect and (why := unmet(expect, current["data"])) is not None:
                    raise PreconditionFailed(
                        f"the {etype} is not as expected: {why} (revision {current['rev']}); "
                        "nothing was changed"
                    )
                clean, heard = await self._patched(tenant, current, patch, as_sent=as_sent)
                result = await self._replace(tenant, current, clean, origin)
                if result is not None:
                    await self._hand_over(tenant, current, heard, origin)
                    return result
                await rounds.lose()

    async def patched(
        self,
        tenant: str,
        current: Doc,
        patch: Mapping[str, Any],
        *,
        as_sent: bool = False,
        dry: bool = False,
    ) -> dict[str, Any]:
        """The document a `patch` of the entity `current` stores (its `type`, `nk` and
        `data`): merged into its data (`merged_write`), keyed, checked and derived as every
        write is (`_written`: a fine marked paid records its `paid_on`). InvalidPayload or
        Conflict (its natural key changed) when the write is refused. The one path of
        `patch` and of a flow dry run's `set` (`flows/dry_run.py`, `dry`: nothing written),
        so the dry run stores in its answer what the run stores."""
        return (await self._patched(tenant, current, patch, as_sent=as_sent, dry=dry))[0]

    async def _patched(
        self,
        tenant: str,
        current: Doc,
        patch: Mapping[str, Any],
        *,
        as_sent: bool = False,
        dry: bool = False,
    ) -> tuple[dict[str, Any], Mapping[str, Any] | None]:
        """`patched`, and the report the patch leaves out as heard (`heard`)."""
        etype = current["type"]
        whole = self._schemas.whole_members(etype)
        refuse_handover(etype, patch, utcnow())  # as sent: the stored value may stay
        news = {} if as_sent else await self.news(tenant, etype, current, patch)
        merged, change = merged_write(current, patch, whole, as_sent=as_sent, news=news)
        clean = await self._written(tenant, current, merged, change=change, dry=dry)
        return clean, None if as_sent else self.heard(etype, patch, change, news)

    async def _write(
        self,
        tenant: str,
        current: Doc,
        data: Mapping[str, Any],
        origin: Origin,
        extra_events: Sequence[Emit] = (),
        event_detail: Mapping[str, Any] | None = None,
        *,
        create: bool = True,
        change: Mapping[str, Any] | None = None,
    ) -> WriteResult | None:
        """Write `data` over the entity `current` (`_written`). None: `current` was stale."""
        clean = await self._written(tenant, current, data, create=create, change=change)
        return await self._replace(tenant, current, clean, origin, extra_events, event_detail)

    async def _written(
        self,
        tenant: str,
        current: Doc,
        data: Mapping[str, Any],
        *,
        create: bool = True,
        change: Mapping[str, Any] | None = None,
        dry: bool = False,
    ) -> dict[str, Any]:
        """What a write of `data` (`change` merged into the entity `current`) stores: keyed
        as `keyed_as_stored` keys it (`create`: whether the write could have created the
        entity), checked (`_check`, by what the change sends). Conflict when it
        would change the entity's natural key: a refusal, which no retry cures."""
        etype = current["type"]
        data = keyed_as_stored(etype, current["data"], data, create=create)
        clean = await self._check(tenant, etype, data, current, change, dry=dry)
        if self.natural_key(etype, clean) != current["nk"]:
            raise Conflict("the natural key of an entity cannot change; create a new one")
        return clean

    async def remove_item(
        self, tenant: str, etype: str, ref: str, name: str, item: Any, origin: Origin
    ) -> WriteResult | None:
        """`item` out of the entity's list field `name` (a dead push token out of a driver's
        `push_tokens`; the field goes with its last item), from the list as it is written
        over: two removals at once keep each other's. None when the list does not hold it.
        Taking an item out of a list (no schema of ours sets a minimum of items) cannot make
        an entity invalid, so the rest is written back as stored, not validated again: an
        entity stored before a rule tightened (a driver's old 8-digit mobile, refused since)
        loses the item as any other."""
        nk = (await self.get(tenant, etype, ref))["nk"]
        async with self._lanes.turn((tenant, etype, nk)):
            rounds = _Rounds()
            while True:
                current = await self._current(rounds, tenant, etype, ref, nk)
                items = current["data"].get(name)
                if not isinstance(items, list) or item not in items:
                    return None
                data = {k: v for k, v in current["data"].items() if k != name}
                if kept := [i for i in items if i != item]:
                    data[name] = kept
                result = await self._replace(tenant, current, data, origin)
                if result is not None:
                    return result
                await rounds.lose()

    async def _replace(
        self,
        tenant: str,
        current: Doc,
        clean: Doc,
        origin: Origin,
        extra_events: Sequence[Emit] = (),
        event_detail: Mapping[str, Any] | None = None,
    ) -> WriteResult | None:
        """Store `clean` (what a write leaves of the entity `current`) with the events its
        changes cause; None: `current` was stale."""
        etype = current["type"]
        changes = diff(current["data"], clean)
        events = _events(etype, clean, False, changes, origin, extra_events, event_detail)
        if not events:
            return WriteResult(current, False)
        write_fence.check_deadline()
        doc = await self._store.entities.replace_data(tenant, current, clean, events)
        if doc is None:
            self._recent.drop(tenant, etype, current["nk"])
            return None
        self._relay_doorbell.ring()
        self._recent.put(tenant, doc)
        return WriteResult(doc, False, tuple(changes), tuple(e["type"] for e in events))

    async def delete(self, tenant: str, etype: str, ref: str, origin: Origin) -> None:
        nk = (await self.get(tenant, etype, ref))["nk"]
        async with self._lanes.turn((tenant, etype, nk)):
            rounds = _Rounds()
            while True:
                current = await self._current(rounds, tenant, etype, ref, nk)
                event = _event("entity.deleted", etype, current["data"], [], origin)
                write_fence.check_deadline()
                if await self._store.entities.mark_deleted(tenant, current, event):
                    self._relay_doorbell.ring()
                    self._recent.drop(tenant, etype, current["nk"])
                    for forget in self.on_deleted:
                        forget(tenant, etype, str(current["_id"]))
                    return
                await rounds.lose()

    async def _read(self, rounds: _Rounds, tenant: str, etype: str, nk: str) -> Doc | None:
        """The entity for a write's round: after `TURN_AFTER` lost rounds, by taking its turn."""
        if rounds.lost >= TURN_AFTER:
            return await self._store.entities.take_turn(tenant, etype, nk)
        return await self._store.entities.get(tenant, etype, nk=nk)

    async def _current(self, rounds: _Rounds, tenant: str, etype: str, ref: str, nk: str) -> Doc:
        """`_read` for a write to an entity that must exist (NotFound, as `get`)."""
        if not rounds.lost:
            return await self.get(tenant, etype, ref)
        doc = await self._read(rounds, tenant, etype, nk)
        if doc is None:
            raise NotFound(f"no {etype} {ref!r}")
        return doc


def _events(
    etype: str,
    data: Mapping[str, Any],
    created: bool,
    changes: Sequence[Change],
    origin: Origin,
    extra: Sequence[Emit],
    detail: Mapping[str, Any] | None,
) -> list[Doc]:
    """A write's events: `entity.created`, or `entity.updated` when it changed something,
    then the further events it announces (`announced_events`)."""
    if created:
        events = [_event("entity.created", etype, data, [], origin)]
    else:
        events = [_event("entity.updated", etype, data, changes, origin)] if changes else []
    events += [
        _event(e.type, etype, data, changes, origin, detail, e.occurrence)
        for e in announced_events(etype, data, created, changes, extra)
    ]
    return events


def _checklist_completed(created: bool, data: Mapping[str, Any], fields: Sequence[str]) -> bool:
    return created


def _fine_paid(created: bool, data: Mapping[str, Any], fields: Sequence[str]) -> bool:
    return data.get("status") == "paid" and (created or "status" in fields)


def _fine_received(created: bool, data: Mapping[str, Any], fields: Sequence[str]) -> bool:
    """The write that gives a fine what tells its driver (who drove that vehicle then): its
    infraction time (created with it, or keyed in later), or a corrected time or plate."""
    if not data.get("occurred_at"):
        return False
    return created or "occurred_at" in fields or "plate" in fields


BRASILIA = ZoneInfo("America/Sao_Paulo")


def paid_on_kept(data: Mapping[str, Any], stored: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A fine's write that makes it paid (`_fine_paid`) without saying the day (the back office
    marking it paid) records the day it was written in Brasília as `paid_on`: the fine keeps
    the day it was paid, which every later message to the ERP says again (a driver recorded
    days later is not a payment that day). A payment notice says its own day. `data` is the
    write merged into `stored`: a `paid_on` it has is the write's own only when the write
    changed it — a fine paid again after its payment was reversed (`open` again) has the
    first payment's day stored, which is not this payment's."""
    if data.get("kind") != "fine" or data.get("status") != "paid":
        return data
    if stored is not None and stored.get("status") == "paid":
        return data
    said = data.get("paid_on")
    if said and (stored is None or said != stored.get("paid_on")):
        return data
    return {**data, "paid_on": utcnow().astimezone(BRASILIA).date().isoformat()}


def local_time_kept(data: Mapping[str, Any], stored: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A fine's write that corrects its instant (`occurred_at`) and leaves `occurred_at_local`
    as stored (an admin's PATCH, the UI, a trigger without a mapping: only the provider's
    notice writes both) moves the local time with it: the corrected instant on the notice's
    own clock (its offset, `-05:00` in Rio Branco). The e-mail tells the driver the local
    time (flows/templates/fine-received.yaml): the notice's old one would name a time at
    which HR says someone else drove."""
    if data.get("kind") != "fine" or stored is None:
        return data
    local, before = data.get("occurred_at_local"), stored.get("occurred_at_local")
    if local is None or not same_json(plain(local), plain(before)):
        return data  # none, or written by this write
    instant, was = _moment(data.get("occurred_at")), _moment(stored.get("occurred_at"))
    clock = _moment(local)
    if instant is None or was is None or clock is None or instant == was:
        return data  # not a time (the schema refuses it), or the same instant
    moved = instant.astimezone(clock.tzinfo).isoformat()
    return {**data, "occurred_at_local": moved}


def _moment(value: Any) -> datetime | None:
    """A time as a write or the store holds it (text, or a datetime), None if none."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return _instant(value) if isinstance(value, str) else None


_Rule = Callable[[bool, Mapping[str, Any], Sequence[str]], bool]

KIND_EVENTS: Mapping[str, tuple[tuple[str, _Rule], ...]] = {
    "checklist": (("checklist.completed", _checklist_completed),),
    "fine": (("fine.received", _fine_received), ("fine.paid", _fine_paid)),
}
"""Built-in kinds whose writes are themselves events, whoever writes them (an admin, a
trigger with or without a mapping, a flow's `set`, a schedule), derived from the write: a
checklist is completed once, when it is first stored (the fleet's feeds act on
`checklist.completed`: a `service` resets the vehicle's plans, `driver_cpf` drives the
vehicle from `completed_at`, `odometer_km` is the vehicle's reading); a fine is received by
the write that gives it its infraction time (created with it, or keyed in later) and again
by one that corrects its time or plate (who drove is asked again: flows/fine-email-driver.yaml
e-mails the driver then), and paid by the write that makes its `status` `paid` (created so,
or changed to it: the provider's payment notice, the back office's PATCH), and `fine.paid`
tells the ERP (flows/fine-paid-erp.yaml)."""


def announced_events(
    etype: str,
    data: Mapping[str, Any],
    created: bool,
    changes: Sequence[Change],
    extra: Sequence[Emit],
) -> list[Emit]:
    """The events beside `entity.*` a write announces: the mapping's (`extra`) that this write
    announces (`Emit.announced`: by default only a write that changed the entity; a stale or
    repeated value changes nothing), and a built-in kind's own (`KIND_EVENTS`) when its rule
    holds, unless the mapping announces that one itself (the shipped `checklist` and
    `fine-payment` mappings do: one event, with the mapping's detail)."""
    found = [e for e in extra if e.announced(created, changes, data)]
    fields = [c.field for c in changes]
    rules = KIND_EVENTS.get(str(data.get("kind")), ()) if etype == "other" else ()
    own = [
        Emit(name, "create" if created else "change")
        for name, rule in rules
        if rule(created, data, fields) and all(e.type != name for e in found)
    ]
    return own + found


def _event(
    etype_event: str,
    etype: str,
    data: Mapping[str, Any],
    changes: Sequence[Change],
    origin: Origin,
    detail: Mapping[str, Any] | None = None,
    occurrence: str | None = None,
) -> Doc:
    """An outbox entry: everything the relay needs to store and fan out the event.
    `detail` is what the event adds to the entity's data (a geofence name, a fine's amount);
    `occurrence` the partner's id of what it reports (the relay announces it once)."""
    entry: Doc = {
        "id": new_id(),
        "type": etype_event,
        "occurred_at": utcnow(),
        "entity_type": etype,
        "data": dict(data),
        "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in changes],
        "origin": {"kind": origin.kind, "id": origin.id, **origin.extra},
    }
    if detail:
        entry["detail"] = dict(detail)
    if occurrence is not None:
        entry["occurrence_id"] = occurrence
    return entry


class _Lanes:
    """One write at a time per entity in this process, in the order they arrived (asyncio's
    lock is first come, first served): a later write builds on the earlier one's result
    instead of racing it, and one group commit never carries two writes of one entity."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: tuple[str, str, str]) -> AsyncIterator[None]:
        lock, waiting = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, waiting + 1)
        try:
            async with lock:
                yield
        finally:
            lock, waiting = self._locks[key]
            if waiting == 1:
                del self._locks[key]  # nobody else wants this entity: forget its lock
            else:
                self._locks[key] = (lock, waiting - 1)


class _RecentEntities:
    """The entities this process wrote last, by natural key, bounded (least recent goes)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._docs: OrderedDict[tuple[str, str, str], Doc] = OrderedDict()

    def get(self, tenant: str, etype: str, nk: str) -> Doc | None:
        key = (tenant, etype, nk)
        doc = self._docs.get(key)
        if doc is not None:
            self._docs.move_to_end(key)
        return doc

    def put(self, tenant: str, doc: Doc) -> None:
        key = (tenant, doc["type"], doc["nk"])
        self._docs[key] = doc
        self._docs.move_to_end(key)
        if len(self._docs) > self._size:
            self._docs.popitem(last=False)

    def drop(self, tenant: str, etype: str, nk: str) -> None:
        self._docs.pop((tenant, etype, nk), None)
