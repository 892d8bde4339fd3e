"""The lease of one unit of background work (a delivery, a flow run): claimed under a token
(`lease_owner`) until `lease_until`, while the unit has the status of work under way. The stores
of those units renew their leases here, one rule for both."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway.store.client import Collection, translate_errors


async def renew_held(
    c: Collection, held: Mapping[Any, str], status: str, lease_until: datetime
) -> int:
    """Extend the leases a live runner still holds (`held`: unit id → claim token), so only
    the leases of dead runners ever expire; how many were extended."""
    if not held:
        return 0
    with translate_errors():
        result = await c.update_many(
            {
                "_id": {"$in": list(held)},
                "lease_owner": {"$in": sorted(set(held.values()))},
                "status": status,
            },
            {"$set": {"lease_until": lease_until}},
        )
    return result.modified_count


async def renew_one(
    c: Collection, unit_id: Any, token: str, status: str, lease_until: datetime
) -> bool:
    """Extend one lease, if the claim under `token` still holds it (nobody took it over, even
    past its `lease_until`); False when another runner has it."""
    with translate_errors():
        result = await c.update_one(
            {"_id": unit_id, "lease_owner": token, "status": status},
            {"$set": {"lease_until": lease_until}},
        )
    return result.matched_count == 1
