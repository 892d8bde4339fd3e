"""Use case: subscriptions, which deliver a tenant's events to an action.

A subscription's signing secrets are sealed before they are stored and never leave this
module in clear, except in the answer that creates or rotates one (shown once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.actions.body_check import BodyCheck, doc_id
from gateway.actions.catalog import Catalog, subscription_context
from gateway.actions.filters import compile_filter, event_type_problem
from gateway.actions.signing import new_entry, refuse_unseen_rotation, rotated, rotation_revision
from gateway.audit import changed_members, log_change
from gateway.auth.secretbox import SecretBox
from gateway.clock import as_stored, utcnow
from gateway.errors import Conflict, InvalidPayload, NotFound
from gateway.store import Doc, Store, new_id


def public_subscription(doc: Doc) -> dict[str, Any]:
    return {
        "id": doc_id(doc),
        "action_id": doc["action_id"],
        "partner_id": doc.get("partner_id"),
        "event_types": doc["event_types"],
        "filter": doc.get("filter") or {},
        "sample_seconds": doc.get("sample_seconds"),
        "status": doc["status"],
        "disabled_reason": doc.get("disabled_reason"),
        "secret_rotated_at": doc.get("secret_rotated_at"),
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
    }


def secret_revision(subscription: Mapping[str, Any]) -> str:
    """When the signing secret was last rotated, as text ("": never), of a stored or public
    subscription: a rotation asked from a page that showed another is refused
    (`rotate_secret`), as it would replace, unseen, the secret another admin was just shown."""
    return rotation_revision(subscription.get("secret_rotated_at"))


class SubscriptionUseCases:
    """Create, read, update, rotate and delete subscriptions (part of `ActionService`)."""

    _store: Store
    _box: SecretBox
    _catalog: Catalog
    # Deliveries failed as unsendable (how many): counted, and the delivery worker woken for
    # those they held in their lines.
    _on_unsendable: Callable[[int], None]

    async def create_subscription(self, tenant: str, body: Mapping[str, Any]) -> tuple[Doc, str]:
        """The stored subscription and its signing secret (shown this once)."""
        fields = await self._subscription_fields(tenant, body, creating=True)
        oid, now = new_id(), as_stored(utcnow())
        entry, secret = new_entry(self._box, subscription_context(str(oid)), now)
        doc: Doc = {
            "_id": oid,
            "tenant": tenant,
            **fields,
            "status": "active",
            "secrets": [entry],
            "rev": 1,
            "created_at": now,
            "updated_at": now,
        }
        await self._store.subscriptions.insert(doc)
        log_change("subscription", str(oid), "created", tenant, action=doc["action_id"])
        return doc, secret

    async def get_subscription(self, tenant: str, subscription_id: str) -> Doc:
        doc = await self._store.subscriptions.get(tenant, subscription_id)
        if doc is None:
            raise NotFound(f"no subscription {subscription_id!r}")
        return doc

    async def list_subscriptions(
        self, tenant: str, filters: Mapping[str, str], *, after: str | None, limit: int
    ) -> list[Doc]:
        return await self._store.subscriptions.list(tenant, filters, after=after, limit=limit)

    async def update_subscription(
        self, tenant: str, subscription_id: str, body: Mapping[str, Any]
    ) -> Doc:
        current = await self.get_subscription(tenant, subscription_id)
        subscription_id = str(current["_id"])  # as cached (any URL spelling)
        fields = await self._subscription_fields(tenant, body, creating=False)
        unset: tuple[str, ...] = ()
        if fields.get("status") == "active":
            unset = ("disabled_reason",)
        elif fields.get("status") == "disabled":
            fields["disabled_reason"] = "disabled by an admin"
        fields["updated_at"] = utcnow()
        doc = await self._store.subscriptions.update(
            tenant, subscription_id, current["rev"], fields, unset
        )
        if doc is None:
            raise Conflict("the subscription was changed concurrently; retry")
        self._catalog.forget(subscription_id)
        if members := changed_members(current, doc, body):
            log_change("subscription", subscription_id, "updated", tenant, members=members)
        if fields.get("status") == "disabled":
            await self._unsendable(tenant, subscription_id, "the subscription is disabled")
        return doc

    async def rotate_secret(
        self, tenant: str, subscription_id: str, *, shown: str | None = None
    ) -> tuple[Doc, str]:
        """A new signing secret; each one rotated out keeps signing for 24 h after
        its own rotation (every such signature is sent), the newest 5 of them (`signing.rotated`): a
        second rotation within the day does not cut the first one's grace, which a receiver
        still on the first secret was promised. `shown`: the `secret_revision` of the page
        asking; a `Conflict`, nothing changed, when the secret was rotated since."""
        current = await self.get_subscription(tenant, subscription_id)
        refuse_unseen_rotation(shown, secret_revision(current), "subscription")
        subscription_id = str(current["_id"])  # the secret is sealed to the id as stored
        now = utcnow()
        entry, secret = new_entry(self._box, subscription_context(subscription_id), now)
        fields = {
            "secrets": rotated(current["secrets"], entry, now),
            "secret_rotated_at": now,
            "updated_at": now,
        }
        doc = await self._store.subscriptions.update(
            tenant, subscription_id, current["rev"], fields
        )
        if doc is None:
            raise Conflict("the subscription was changed concurrently; retry")
        self._catalog.forget(subscription_id)
        log_change("subscription", subscription_id, "secret_rotated", tenant)
        return doc, secret

    async def delete_subscription(self, tenant: str, subscription_id: str) -> None:
        """Disabled first, its pending deliveries failed, then deleted: a fault between the
        steps leaves it disabled, with nothing pending behind it, and the DELETE retried does
        every step again."""
        subscription_id = str((await self.get_subscription(tenant, subscription_id))["_id"])
        await self._store.subscriptions.disable(
            tenant, subscription_id, "being deleted by an admin", utcnow()
        )
        self._catalog.forget(subscription_id)
        await self._unsendable(tenant, subscription_id, "the subscription was deleted")
        if not await self._store.subscriptions.delete(tenant, subscription_id):
            raise NotFound(f"no subscription {subscription_id!r}")
        self._catalog.forget(subscription_id)
        log_change("subscription", subscription_id, "deleted", tenant)

    async def _unsendable(self, tenant: str, subscription_id: str, reason: str) -> None:
        """A subscription deleted or disabled: its pending deliveries, which can no longer be
        sent, fail now (not at their retry time, hours away, holding an ordered action's line
        for the other subscriptions' deliveries), and those they held are due."""
        deliveries = self._store.deliveries
        if failed := await deliveries.fail_unsendable(tenant, subscription_id, reason, utcnow()):
            self._on_unsendable(failed)

    async def _subscription_fields(
        self, tenant: str, body: Mapping[str, Any], *, creating: bool
    ) -> Doc:
        allowed = {"event_types", "filter", "sample_seconds"} | (
            {"action_id"} if creating else {"status"}
        )
        check = BodyCheck(body, allowed)
        fields: Doc = {}
        if creating:
            action_id = check.text("action_id", max_len=64)
            action = await self._store.actions.get(tenant, action_id) if action_id else None
            if action_id and action is None:
                check.add("/action_id", f"no action {action_id!r} in this tenant", "reference")
            elif action is not None and action["mode"] != "deliver":
                check.add(
                    "/action_id",
                    "subscriptions deliver events: the action's mode must be deliver",
                    "reference",
                )
            if action is not None:
                # The id as stored (the body's may be in upper case): deleting the action
                # finds its subscriptions by it.
                fields.update(action_id=str(action["_id"]), partner_id=action["partner_id"])
        if creating or "event_types" in body:
            fields["event_types"] = _event_types(check)
        if creating or "filter" in body:
            raw = body.get("filter") or {}
            try:
                compile_filter(raw)
            except InvalidPayload as exc:
                check.problems.extend(exc.problems)
            fields["filter"] = raw
        if "sample_seconds" in body:
            # vehicle.position events for this subscription: at most one per vehicle per N s.
            sample = check.number("sample_seconds", 1, 86_400, integer=True)
            fields["sample_seconds"] = None if sample is None else int(sample)
        if "status" in body:
            fields["status"] = check.choice("status", ("active", "disabled"))
        check.done("subscription")
        return fields


def _event_types(check: BodyCheck) -> list[str] | None:
    types = check.body.get("event_types")
    if not isinstance(types, list) or not types or len(types) > 50:
        check.add("/event_types", "event_types is a non-empty list of event types", "type")
        return None
    bad = [i for i, value in enumerate(types) if event_type_problem(value) is not None]
    for i in bad:
        check.add(f"/event_types/{i}", str(event_type_problem(types[i])), "pattern")
    return None if bad else sorted(set(types))
