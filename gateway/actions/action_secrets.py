"""An action's signing secrets: the requests made through it for no subscription nor flow, a
proxy call (`invoke`) and a schedule's pages, carry Standard Webhooks headers signed with
them, as a subscription's deliveries do with its own (same rotation: `signing.py`). An action
is the partner endpoint both go through, so the partner knows one secret for it.

They are kept on the action (`signing: {secrets, rev, rotated_at?}`, beside its own `rev`,
which a rotation leaves alone: an admin's edit meanwhile is no conflict), sealed to its id
(`action:<id>:secret`). The answer that creates an action shows its secret, once; an action
stored before actions had secrets gets one at its first signed request (`signing`), which
the admin obtains by rotating (`rotate`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.actions.signing import (
    SigningSecrets,
    first_signing,
    open_live,
    refuse_unseen_rotation,
    rotated_signing,
    signing_revision,
)
from gateway.auth.secretbox import SecretBox, SecretBoxError
from gateway.clock import as_stored, utcnow
from gateway.errors import Conflict, NotFound
from gateway.store import Store


def action_context(action_id: str) -> str:
    return f"action:{action_id}:secret"


class ActionSecrets:
    def __init__(self, store: Store, box: SecretBox) -> None:
        self._actions = store.actions
        self._box = box

    async def rotate(
        self, tenant: str, action_id: str, *, shown: str | None = None
    ) -> dict[str, Any]:
        """A new secret, `{id, secret, secret_rotated_at}`; each rotated out keeps signing for
        24 h after its own rotation, the newest 5 of them. An action without one gets its
        first (the way to obtain the secret of an action stored before secrets). `shown`:
        the `signing_revision` of the page asking (`refuse_unseen_rotation`)."""
        doc = await self._actions.signing_of(tenant, action_id)
        if doc is None:
            raise NotFound(f"no action {action_id!r}")
        refuse_unseen_rotation(shown, signing_revision(doc), "action")
        action_id = str(doc["_id"])  # the secret is sealed to the id as stored
        now = as_stored(utcnow())
        current = doc.get("signing")
        signing, secret = rotated_signing(self._box, action_context(action_id), current, now)
        rev = current["rev"] if current else None
        if await self._actions.set_signing(tenant, action_id, signing, rev=rev) is None:
            raise Conflict("the action's secret was rotated concurrently; retry")
        return {"id": action_id, "secret": secret, "secret_rotated_at": now}

    async def signing(self, tenant: str, action_id: str, now: datetime) -> SigningSecrets:
        """The secrets a request through the action is signed with; an action without one
        gets its first now. NotFound when there is no such action."""
        doc = await self._actions.signing_of(tenant, action_id)
        if doc is None:
            raise NotFound(f"no action {action_id!r}")
        action_id = str(doc["_id"])
        if not doc.get("signing"):
            signing, _ = first_signing(self._box, action_context(action_id), as_stored(utcnow()))
            # Unless another process stored one meanwhile: that one stands.
            await self._actions.set_signing(tenant, action_id, signing, rev=None)
            doc = await self._actions.signing_of(tenant, action_id)
            if doc is None or not doc.get("signing"):
                raise NotFound(f"no action {action_id!r}")
        try:
            return open_live(self._box, doc["signing"]["secrets"], action_context(action_id), now)
        except SecretBoxError as exc:
            raise exc.naming(f"action {action_id}: its stored signing secret") from None
