"""The `partners` collection: partner endpoints, their sealed credentials and their health.

A partner is `{_id, tenant, name, base_url, auth_type, auth_sealed, secrets_sealed?,
secret_names, timeout_seconds, max_concurrency, rate_limit?, disable_after_hours?, status,
failing_since?, dead_at?, deaths?, disabled_at?, probe_at?, rev, created_at, updated_at}`.
Credentials are only ever stored sealed (SecretBox, context `partner:<id>:auth`); this module
never sees them in clear. `status` is `active` or `disabled` (failing for longer than
`disable_after_hours`). `dead_at`: the last time a retryable failure spent the schedule of a
delivery to it (an outage that ends replays its dead deliveries only if one died during it).
`deaths`: how many deliveries were written `dead` during an outage (`note_death`): an answer
ending the outage clears `failing_since` only if none was since it read the partner.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel

from gateway.clock import as_stored
from gateway.store.client import Doc, parse_id, scoped, translate_errors
from gateway.store.resources import TenantResources

_NOTE_TRIES = 5  # a failure's note, read then written guarded: the tries before it gives up
_IDS_A_READ = 1000  # ids `gone` asks about in one query

INDEXES = [
    IndexModel([("tenant", ASCENDING), ("_id", ASCENDING)], name="by_tenant"),
    IndexModel([("tenant", ASCENDING), ("name", ASCENDING)], name="by_name"),
    IndexModel([("status", ASCENDING), ("probe_at", ASCENDING)], name="disabled_probe"),
]


class PartnerStore(TenantResources):
    # -- health: written by every process, as it calls the partner ---------------------------

    async def note_failure(
        self, tenant: str, partner_id: str, now: datetime, *, dying: bool = False
    ) -> Doc | None:
        """Remember when the partner started failing (the earliest report wins); `dying`: the
        failure spent a delivery's schedule (`dead_at`, the latest: whether an outage that
        ends killed any, before a delivery is written `dead`)."""
        update: Doc = {"$min": {"failing_since": now}}
        if dying:
            update["$max"] = {"dead_at": now}
        # A read, then the update guarded on the `failing_since` read (absent, or as read),
        # each by `_id`: a `find_one_and_update` SecantusDB writes with `{_id, $and:
        # [filter]}`, matched against every tenant's partners (434 ms a failure at 1,000
        # tenants of 20). The outage start returned is the one this write saw or set, as the
        # atomic call returned it: `died` needs it when an answer ends that outage before the
        # delivery is written `dead` (a read after the write would miss it, rev41a R1). A
        # write between the two (an answer clearing it, another failure) misses: read again.
        query = scoped(tenant, {"_id": ObjectId(partner_id)})
        with translate_errors():
            for _ in range(_NOTE_TRIES):
                found: Doc | None = await self._c.find_one(query)
                if found is None:
                    return None
                read = found.get("failing_since")
                guard = {"$exists": False} if read is None else read
                if (
                    await self._c.update_one({**query, "failing_since": guard}, update)
                ).matched_count:
                    stored = as_stored(now)  # as the database holds it, to the ms
                    found["failing_since"] = stored if read is None else min(read, stored)
                    if dying:
                        dead_at = found.get("dead_at")
                        found["dead_at"] = stored if dead_at is None else max(dead_at, stored)
                    return found
            # Written over and over in between: noted unguarded, its start read after.
            if not (await self._c.update_one(query, update)).matched_count:
                return None
            return await self._c.find_one(query)

    async def note_death(self, tenant: str, partner_id: str, failing_since: datetime) -> bool:
        """A delivery to the partner was written `dead` during its outage that began at
        `failing_since`: counted (`deaths`) if that outage is still on (failing since then,
        disabled or not); whether it was. One write, the check and the mark: an answer
        ending the outage either cleared it before (False: the caller replays the delivery)
        or reads the partner before and then leaves it failing (`note_success`)."""
        query = {"_id": ObjectId(partner_id), "failing_since": failing_since}
        with translate_errors():
            result = await self._c.update_one(scoped(tenant, query), {"$inc": {"deaths": 1}})
        return result.matched_count == 1

    async def note_success(
        self,
        tenant: str,
        partner_id: str,
        *,
        failing_since: datetime | None = None,
        deaths: int | None = None,
    ) -> bool:
        """The partner answered a call: no longer failing (since `failing_since`, when given:
        the outage whose dead deliveries were replayed, not one begun after another process
        ended it; and with `deaths`, the count read before they were: a delivery written dead
        since, `note_death`, which that replay may have missed, leaves it failing for the
        next answer to replay). Not while it is disabled: its `failing_since` then says since
        when its recovery replays (`enable`), and an answer to a call let through just before
        it was disabled must not erase it. Whether it was cleared."""
        since = {"$exists": True} if failing_since is None else failing_since
        query: Doc = {"_id": ObjectId(partner_id), "failing_since": since}
        if deaths is not None:
            query["deaths"] = deaths if deaths else {"$exists": False}
        with translate_errors():
            result = await self._c.update_one(
                scoped(tenant, {**query, "status": {"$ne": "disabled"}}),
                {"$unset": {"failing_since": ""}},
            )
        return result.modified_count == 1

    async def disable(
        self,
        tenant: str,
        partner_id: str,
        now: datetime,
        probe_at: datetime,
        *,
        failing_since: datetime | None,
    ) -> bool:
        """The partner disabled, if it is active and still failing since `failing_since`,
        the outage its disabling was decided on (None: not failing); whether it was. An
        answer that ended its failing since (`note_success`, any call of any process) leaves
        it active: disabled, it would lose the `failing_since` its recovery replays from."""
        query = {"_id": ObjectId(partner_id), "status": "active", "failing_since": failing_since}
        with translate_errors():
            result = await self._c.update_one(
                scoped(tenant, query),
                {"$set": {"status": "disabled", "disabled_at": now, "probe_at": probe_at}},
            )
        return result.modified_count == 1

    async def enable(self, tenant: str, partner_id: str) -> Doc | None:
        """A disabled partner active again: the partner as it was (its `failing_since`, when
        its outage began), or None when it was not disabled (another process enabled it).
        Its `rev` moves on, as with an admin's update: an admin's change read while it was
        disabled (a re-enable racing this one) is refused, not applied over it.

        Read, then written guarded by `status` (one of two enables racing wins, as with the
        one atomic call): a `find_one_and_update` SecantusDB writes with `{_id, $and:
        [filter]}`, matched against every tenant's partners. The partner returned is the
        one read, disabled: a write between the two (a failure noted, a probe's time) is not
        in it."""
        disabled = scoped(tenant, {"_id": ObjectId(partner_id), "status": "disabled"})
        enabled = {
            "$set": {"status": "active"},
            "$unset": {"disabled_at": "", "probe_at": "", "failing_since": ""},
            "$inc": {"rev": 1},
        }
        with translate_errors():
            found: Doc | None = await self._c.find_one(disabled)
            if found is None or not (await self._c.update_one(disabled, enabled)).matched_count:
                return None
        return found

    # -- system work across tenants, never reached from a request ----------------------------

    async def gone(self, ids: Iterable[str]) -> set[str]:
        """Of `ids`, those that name no partner any more (deleted, by any process): one read
        of ids alone per 1,000. An id that could not name one (not an ObjectId) is none of
        them: it was never a partner's, and is not this store's to judge."""
        parsed = {oid: pid for pid in ids if (oid := parse_id(pid)) is not None}
        found: set[Any] = set()
        every = list(parsed)
        for start in range(0, len(every), _IDS_A_READ):
            chunk = every[start : start + _IDS_A_READ]
            with translate_errors():
                docs = await self._c.find({"_id": {"$in": chunk}}, {"_id": 1}).to_list(None)
            found.update(d["_id"] for d in docs)
        return {pid for oid, pid in parsed.items() if oid not in found}

    async def disabled_ids(self) -> builtins.list[str]:
        with translate_errors():
            docs = await self._c.find({"status": "disabled"}, {"_id": 1}).to_list(None)
        return [str(d["_id"]) for d in docs]

    async def probe_again_at(self, partner_id: Any, claimed: datetime, probe_at: datetime) -> None:
        """A disabled partner's probe (`claim_probe`, which set its probe time to `claimed`)
        ended: its next one is due at `probe_at`, unless it was enabled, or probed since."""
        with translate_errors():
            await self._c.update_one(
                {"_id": partner_id, "status": "disabled", "probe_at": claimed},
                {"$set": {"probe_at": probe_at}},
            )

    async def claim_probe(
        self, now: datetime, next_probe: datetime, admit: Callable[[Doc], bool]
    ) -> Doc | None:
        """A disabled partner due for a probe, first due first, that `admit` (given `_id` and
        `tenant`) takes, pushed to `next_probe` so that one process probes it at a time. Its
        `probe_at` is `next_probe` (to the ms), the claim's token for `probe_again_at`, even
        when a write landed between the claim and the read of the partner."""
        due: Doc = {"status": "disabled", "probe_at": {"$lte": now}}
        with translate_errors():
            cursor = self._c.find(due, {"tenant": 1}).sort("probe_at", ASCENDING)
            candidates = [doc async for doc in cursor if admit(doc)]
            for candidate in candidates:
                # `_id` first, and an update then a read: a `find_one_and_update` SecantusDB
                # writes with `{_id, $and: [filter]}`, every tenant's partners read for each
                # probe claimed. The guard (still due) makes one process the claimant.
                pushed = {"$set": {"probe_at": next_probe}}
                taken = await self._c.update_one({"_id": candidate["_id"], **due}, pushed)
                if not taken.matched_count:
                    continue  # another process took it between the two reads
                claimed: Doc | None = await self._c.find_one({"_id": candidate["_id"]})
                if claimed is not None:  # else deleted since
                    # The claim's own probe time (its token), not one written since.
                    claimed["probe_at"] = as_stored(next_probe)
                    return claimed
        return None
