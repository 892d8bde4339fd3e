"""Use case: stored secrets sealed again under the current key of GATEWAY_SECRET_KEY
(`gateway reseal`), the step between deploying `<new>,<old>` and dropping the old key
(docs/security.md "Rotating GATEWAY_SECRET_KEY")."""

from __future__ import annotations

from gateway.auth.secretbox import SecretBox, SecretBoxError
from gateway.store import Store
from gateway.store.sealed import Resealed, reseal


async def reseal_secrets(store: Store, box: SecretBox, *, dry_run: bool = False) -> Resealed:
    """Every stored secret sealed under an older key, sealed under the current one (its
    plaintext and record context unchanged); what no key opens is named, not touched."""

    def renew(token: str) -> str | None:
        try:
            return box.rotate(token) if box.needs_rotation(token) else token
        except SecretBoxError:
            return None

    return await reseal(store.db, renew, dry_run=dry_run)
