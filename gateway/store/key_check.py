"""The key check: one document, `{_id: "secret_key", sealed}` in the `meta`
collection, a known text sealed under GATEWAY_SECRET_KEY by the first process of a gateway,
opened by every process at start (`gateway/keys.py` `check_secret_key`): a process whose keys
cannot open it would fail every stored secret (`docs/security.md`)."""

from __future__ import annotations

from gateway.errors import Conflict
from gateway.store.client import Collection, translate_errors

_ID = "secret_key"


class KeyCheckStore:
    def __init__(self, collection: Collection) -> None:
        self._c = collection

    async def sealed(self) -> str | None:
        """The sealed key check, None before the first process stored one."""
        with translate_errors():
            doc = await self._c.find_one({"_id": _ID})
        value = None if doc is None else doc.get("sealed")
        return value if isinstance(value, str) else None

    async def store_first(self, sealed: str) -> bool:
        """Store the key check unless one is stored already: whether this one is."""
        try:
            with translate_errors():
                await self._c.insert_one({"_id": _ID, "sealed": sealed})
        except Conflict:
            return False
        return True

    async def replace(self, old: str, new: str) -> bool:
        """The key check sealed again (under the newest key), unless it changed meanwhile:
        whether it was (a compare-and-set on the value read)."""
        with translate_errors():
            result = await self._c.update_one(
                {"_id": _ID, "sealed": old}, {"$set": {"sealed": new}}
            )
        return result.matched_count == 1
