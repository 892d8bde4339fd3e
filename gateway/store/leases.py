"""The `leases` collection: which process works on which shard of a background job, until when.

A lease is `{_id: "<job>:<shard>", job, shard, owner, until}`. A process takes a shard whose
lease is free or expired with one conditional update, so two processes never both get it;
it renews what it holds well before `until`, and a dead process's shards are free once their
leases expire. Each process running the job also keeps a membership document
`{_id: "<job>:member:<owner>", job, owner, until}` alive, so that the others count it before
it holds any shard. `gateway/shares.py` decides how many shards each process takes.
"""

from __future__ import annotations

from collections.abc import Collection as Items
from datetime import UTC, datetime, timedelta

from gateway.store.client import Collection, Doc, insert_new, translate_errors

_EXPIRED = datetime(1970, 1, 1, tzinfo=UTC)


def _lease_id(job: str, shard: int) -> str:
    return f"{job}:{shard}"


class LeaseStore:
    def __init__(self, collection: Collection) -> None:
        self._c = collection

    async def ensure(self, job: str, shards: int) -> None:
        """Every shard of the job has a lease document (free until someone takes it)."""
        await insert_new(
            self._c,
            [
                {"_id": _lease_id(job, n), "job": job, "shard": n, "owner": None, "until": _EXPIRED}
                for n in range(shards)
            ],
        )

    async def all(self, job: str) -> tuple[list[Doc], list[Doc]]:
        """(the shards' leases, the members' documents) of the job."""
        with translate_errors():
            docs = await self._c.find({"job": job}).to_list(None)
        return [d for d in docs if "shard" in d], [d for d in docs if "shard" not in d]

    async def announce(self, job: str, owner: str, until: datetime) -> None:
        """This process runs the job until `until` (renewed with its leases); members gone
        for an hour are removed."""
        with translate_errors():
            await self._c.update_one(
                {"_id": f"{job}:member:{owner}"},
                {"$set": {"job": job, "owner": owner, "until": until}},
                upsert=True,
            )
            await self._c.delete_many(
                {
                    "job": job,
                    "shard": {"$exists": False},
                    "until": {"$lt": until - timedelta(hours=1)},
                }
            )

    async def leave(self, job: str, owner: str) -> None:
        with translate_errors():
            await self._c.delete_one({"_id": f"{job}:member:{owner}"})

    async def take(self, job: str, shard: int, owner: str, now: datetime, until: datetime) -> bool:
        """Take the shard if its lease is free, expired or already ours."""
        with translate_errors():
            result = await self._c.update_one(
                {
                    "_id": _lease_id(job, shard),
                    "$or": [{"until": {"$lte": now}}, {"owner": owner}],
                },
                {"$set": {"owner": owner, "until": until}},
            )
        return result.matched_count == 1

    async def renew(self, job: str, shards: Items[int], owner: str, until: datetime) -> None:
        if shards:
            with translate_errors():
                await self._c.update_many(
                    {"_id": {"$in": [_lease_id(job, n) for n in shards]}, "owner": owner},
                    {"$set": {"until": until}},
                )

    async def release(self, job: str, shards: Items[int], owner: str) -> None:
        """Let go at once (a clean shutdown, or more than a fair share): no waiting for expiry."""
        if shards:
            with translate_errors():
                await self._c.update_many(
                    {"_id": {"$in": [_lease_id(job, n) for n in shards]}, "owner": owner},
                    {"$set": {"owner": None, "until": _EXPIRED}},
                )
