"""The key check: one document, `{_id: "secret_key", sealed, kids}` in the `meta`
collection, a known text sealed under GATEWAY_SECRET_KEY by the first process of a gateway,
opened by every process at start (`gateway/keys.py` `check_secret_key`): a process whose keys
cannot open it would fail every stored secret (`docs/security.md`). `kids`: the fingerprints
of every key the stored secrets may be sealed under (a sealed value names none), each process's
sealing key added at its start and narrowed to the current one by `gateway reseal`; absent
from a check stored by a version before it (None)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import Conflict
from gateway.store.client import Collection, translate_errors

_ID = "secret_key"


@dataclass(frozen=True, slots=True)
class KeyCheck:
    sealed: str
    kids: tuple[str, ...] | None  # None: stored before kids were recorded


class KeyCheckStore:
    def __init__(self, collection: Collection) -> None:
        self._c = collection

    async def read(self) -> KeyCheck | None:
        """The key check, None before the first process stored one."""
        with translate_errors():
            doc = await self._c.find_one({"_id": _ID})
        value = None if doc is None else doc.get("sealed")
        if doc is None or not isinstance(value, str):
            return None
        kids = doc.get("kids")
        return KeyCheck(value, tuple(kids) if isinstance(kids, list) else None)

    async def sealed(self) -> str | None:
        """The sealed key check, None before the first process stored one."""
        check = await self.read()
        return None if check is None else check.sealed

    async def store_first(self, sealed: str, kids: tuple[str, ...] = ()) -> bool:
        """Store the key check unless one is stored already: whether this one is."""
        try:
            with translate_errors():
                await self._c.insert_one({"_id": _ID, "sealed": sealed, "kids": list(kids)})
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

    async def update(self, read: KeyCheck, sealed: str, kids: tuple[str, ...]) -> bool:
        """The check as `sealed` and `kids`, unless either changed since `read` (a
        compare-and-set): whether it was."""
        with translate_errors():
            result = await self._c.update_one(
                {"_id": _ID, "sealed": read.sealed, **_kids_were(read.kids)},
                {"$set": {"sealed": sealed, "kids": list(kids)}},
            )
        return result.matched_count == 1

    async def narrow(self, kids_read: tuple[str, ...] | None, kids: tuple[str, ...]) -> bool:
        """`kids` the only keys the stored secrets need (`gateway reseal` found every one
        under them), unless another process added its key since `kids_read`."""
        with translate_errors():
            result = await self._c.update_one(
                {"_id": _ID, **_kids_were(kids_read)}, {"$set": {"kids": list(kids)}}
            )
        return result.matched_count == 1


def _kids_were(kids: tuple[str, ...] | None) -> dict[str, Any]:
    return {"kids": {"$exists": False}} if kids is None else {"kids": list(kids)}
