"""The `actions` and `subscriptions` collections.

An action is `{_id, tenant, name, partner_id, method, path, mode, request_mapping?,
response_mapping?, success, retry_schedule?, ordered, write_back, signing?: {secrets:
[{sealed, created_at, expires_at?}], rev, rotated_at?}, rev, created_at, updated_at}`
(`signing`: its signing secrets, only stored sealed, `actions/action_secrets.py`; the
mapping field names are read by `store/mappings.py` to refuse deleting a mapping in use).
A subscription is `{_id, tenant, action_id, partner_id, event_types, filter, status,
disabled_reason?, secrets: [{sealed, created_at, expires_at?}], rev, created_at, updated_at}`;
its signing secrets are only stored sealed.
"""

from __future__ import annotations

from datetime import datetime

from bson import ObjectId
from pymongo import ASCENDING, IndexModel

from gateway.store.client import Doc, parse_id, scoped, translate_errors
from gateway.store.resources import TenantResources

ACTION_INDEXES = [
    IndexModel([("tenant", ASCENDING), ("_id", ASCENDING)], name="by_tenant"),
    IndexModel([("tenant", ASCENDING), ("partner_id", ASCENDING)], name="by_partner"),
]
SUBSCRIPTION_INDEXES = [
    # The fan-out's query: a tenant's active subscriptions (equality only: SecantusDB uses an
    # index for equality, and scans for `$in`).
    IndexModel([("tenant", ASCENDING), ("status", ASCENDING)], name="active"),
    IndexModel([("tenant", ASCENDING), ("action_id", ASCENDING)], name="by_action"),
]


class ActionStore(TenantResources):
    async def signing_of(self, tenant: str, action_id: str) -> Doc | None:
        """The action's id and `signing`, or None when there is no such action."""
        oid = parse_id(action_id)
        if oid is None:
            return None
        with translate_errors():
            found: Doc | None = await self._c.find_one(
                scoped(tenant, {"_id": oid}), {"_id": 1, "signing": 1}
            )
        return found

    async def set_signing(
        self, tenant: str, action_id: str, signing: Doc, *, rev: int | None
    ) -> Doc | None:
        """`signing` stored only over the one of revision `rev` (None: only where there is
        none); the action's `rev` untouched (an edit meanwhile is no conflict). The action
        after, or None when none matched."""
        query: Doc = {"_id": parse_id(action_id)}
        if rev is None:
            query["signing"] = {"$exists": False}
        else:
            query["signing.rev"] = rev
        # An update then a read by `_id`, each a point lookup: a `find_one_and_update`
        # SecantusDB writes with `{_id, $and: [filter]}`, matched against every tenant's
        # actions (194 ms at 1,000 tenants of 20). The guard is the write's, as it was.
        with translate_errors():
            if not (
                await self._c.update_one(scoped(tenant, query), {"$set": {"signing": signing}})
            ).matched_count:
                return None
            found: Doc | None = await self._c.find_one(scoped(tenant, {"_id": query["_id"]}))
        return found


class SubscriptionStore(TenantResources):
    async def active(self, tenant: str) -> list[Doc]:
        """The tenant's active subscriptions; the fan-out matches event types in memory, once
        per tenant and relay batch."""
        with translate_errors():
            return await self._c.find(scoped(tenant, {"status": "active"})).to_list(None)

    async def disable(self, tenant: str, subscription_id: str, reason: str, now: datetime) -> None:
        """An active subscription disabled, at `now`: by what a partner said (a `410`), or
        on its way to being deleted."""
        with translate_errors():
            await self._c.update_one(
                scoped(tenant, {"_id": ObjectId(subscription_id), "status": "active"}),
                {
                    "$set": {"status": "disabled", "disabled_reason": reason, "updated_at": now},
                    "$inc": {"rev": 1},
                },
            )

    async def repoint(self, tenant: str, action_id: str, partner_id: str, now: datetime) -> None:
        """An action moved to another partner: its subscriptions name it (`partner_id`), as
        their events go to it."""
        with translate_errors():
            await self._c.update_many(
                scoped(tenant, {"action_id": action_id, "partner_id": {"$ne": partner_id}}),
                {"$set": {"partner_id": partner_id, "updated_at": now}, "$inc": {"rev": 1}},
            )
