"""A flow's signing secrets: its `call` deliveries carry Standard Webhooks headers signed
with them, as a subscription's deliveries do with its own (same rotation: `signing.py`).

They are kept on the flow's head (`signing: {secrets, rev, rotated_at?}`, `store/flows.py`),
sealed to the head's id, so they belong to the flow's name in the tenant, not to a version:
uploading a new version, activating or rolling back keep them, and so does deleting the flow
(its head stays as a tombstone; calls queued before still sign, and a flow uploaded again
under the name keeps the secret its partner knows). The upload that first gives a flow a
secret answers it, once; a flow stored before flows had secrets gets one at its first call
(`signing`), which the admin obtains by rotating (`rotate`).
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
from gateway.store import Doc, Store


def flow_context(head_id: str) -> str:
    return f"flow:{head_id}:secret"


class FlowSecrets:
    def __init__(self, store: Store, box: SecretBox) -> None:
        self._flows = store.notify.flows
        self._box = box

    async def issue(self, tenant: str, name: str) -> str | None:
        """A first secret for the flow when it has none (it was just uploaded): the secret,
        shown this once; None when it has one (kept: its partner knows it)."""
        head = await self._flows.signing_head(tenant, name)
        if head is None or head.get("signing"):
            return None
        return await self._first(tenant, name, head)

    async def rotate(self, tenant: str, name: str, *, shown: str | None = None) -> dict[str, Any]:
        """A new secret for a listed flow, `{name, secret, secret_rotated_at}`; each rotated
        out keeps signing for 24 h after its own rotation, the newest 5 of them. A flow without
        one gets its first (the way to obtain the secret of a flow stored before secrets).
        `shown`: the `signing_revision` of the page asking (`refuse_unseen_rotation`)."""
        head = await self._flows.head(tenant, name)
        if head is None:
            raise NotFound(f"no flow {name!r}")
        refuse_unseen_rotation(shown, signing_revision(head), "flow")
        now = as_stored(utcnow())
        current = head.get("signing")
        signing, secret = rotated_signing(self._box, flow_context(str(head["_id"])), current, now)
        rev = current["rev"] if current else None
        if await self._flows.set_signing(tenant, name, signing, rev=rev, listed=True) is None:
            raise Conflict("the flow's secret was rotated concurrently; retry")
        return {"name": name, "secret": secret, "secret_rotated_at": now}

    async def revision(self, tenant: str, name: str) -> str:
        """The flow's `signing_revision`, which its page's *Rotate* carries ("": none)."""
        head = await self._flows.signing_head(tenant, name)
        return "" if head is None else signing_revision(head)

    async def signing(self, tenant: str, name: str, now: datetime) -> SigningSecrets:
        """The secrets a call of the flow is signed with (a deleted flow's too: its calls
        queued before still go); a flow without one gets its first now. NotFound when the
        flow never existed."""
        head = await self._flows.signing_head(tenant, name)
        if head is None:
            raise NotFound(f"no flow {name!r}")
        if not head.get("signing"):
            await self._first(tenant, name, head)
            head = await self._flows.signing_head(tenant, name)
            assert head is not None and head.get("signing")
        try:
            return open_live(
                self._box, head["signing"]["secrets"], flow_context(str(head["_id"])), now
            )
        except SecretBoxError as exc:
            raise exc.naming(f"flow {name!r}: its stored signing secret") from None

    async def _first(self, tenant: str, name: str, head: Doc) -> str | None:
        """The flow's first secret, stored unless another process stored one meanwhile
        (then None: that one stands)."""
        context = flow_context(str(head["_id"]))
        signing, secret = first_signing(self._box, context, as_stored(utcnow()))
        stored = await self._flows.set_signing(tenant, name, signing, rev=None, listed=False)
        return None if stored is None else secret
