"""What is journaled (SPEC §5): every write that backs an answer; the event relay's own writes
(events, deliveries, drains) are not, because the outbox they empty is, and the journal keeps
writes in order. Read from the database's own profiler: the write concern each command had."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from gateway.config import Settings
from gateway.entities import Origin
from gateway.services import Services, open_services

ORIGIN = Origin("trigger", "t1")


@pytest.fixture
async def journaled(settings: Settings, mongodb_uri: str) -> AsyncIterator[Services]:
    """A gateway process whose client journals (`journal=true`, as SPEC §5 deploys it)."""
    uri = mongodb_uri + ("&" if "?" in mongodb_uri else "?") + "journal=true"
    async with open_services(replace(settings, run_workers=False), mongodb_uri=uri) as services:
        admin = services.store.db.client["admin"]
        for db in (admin, services.store.db):
            await db.command("profile", 2)
        try:
            yield services
        finally:
            for db in (admin, services.store.db):
                await db.command("profile", 0)


async def _profiled(services: Services) -> list[dict[str, Any]]:
    """(collection, what the command did, its write concern) of our database's writes."""
    name = services.store.db.name
    seen = []
    async for doc in services.store.db["system.profile"].find(
        {"op": {"$in": ["insert", "update", "remove", "delete"]}}
    ):
        command = doc["command"]
        target = command.get("insert") or command.get("update") or command.get("delete")
        j = command["writeConcern"]["j"]
        if target == "entities":  # a write alone in its group-commit round
            changes = [u["u"] for u in command.get("updates", [])]
            seen.append(
                {"what": f"{'drain' if any(map(_drains, changes)) else 'write'} {target}", "j": j}
            )
        else:
            op = "delete" if doc["op"] == "remove" else doc["op"]
            seen.append({"what": f"{op} {target}", "j": j})
    admin = services.store.db.client["admin"]["system.profile"]
    async for doc in admin.find({"command.bulkWrite": {"$exists": True}}):
        command = doc["command"]
        if not any(ns["ns"].startswith(f"{name}.") for ns in command["nsInfo"]):
            continue
        for op in command["ops"]:
            kind = "insert" if "insert" in op else "delete" if "delete" in op else "update"
            drain = kind == "delete" or _drains(op.get("updateMods", {}))
            what = f"{'drain' if drain else 'write'} entities"
            seen.append({"what": what, "j": command["writeConcern"]["j"]})
    return seen


def _drains(change: dict[str, Any]) -> bool:
    return "$unset" in change or "$pull" in change


async def test_entity_writes_are_journaled_and_the_relays_writes_are_not(
    journaled: Services,
) -> None:
    services = journaled
    partner = await services.actions.create_partner("acme", {
        "name": "erp", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}
    })  # fmt: skip
    action = await services.actions.create_action("acme", {
        "name": "push", "partner_id": str(partner["_id"]), "method": "POST", "path": "/",
        "mode": "deliver",
    })  # fmt: skip
    await services.actions.create_subscription(
        "acme", {"action_id": str(action["_id"]), "event_types": ["entity.*"]}
    )
    plates = [f"ABC1D{i}3" for i in range(5)]
    for plate in plates:  # one at a time: each write alone in its round, a plain command
        await services.entities.upsert("acme", "vehicle", {"plate": plate}, ORIGIN)
    # Together: the writes beyond the two rounds in flight share one bulkWrite, then a seal.
    await asyncio.gather(
        *(services.entities.upsert("acme", "vehicle", {"plate": p, "year": 2020}, ORIGIN)
          for p in plates)
    )  # fmt: skip
    assert await services.relay.run_until_idle() == 10
    by_kind: dict[str, set[bool]] = {}
    for command in await _profiled(services):
        by_kind.setdefault(command["what"], set()).add(command["j"])
    assert by_kind["write entities"] == {True}  # what the answers stand on
    # SecantusDB does not apply a bulkWrite's `j` to its operations: each round is sealed by
    # a journaled write after it (store/group_commit.py `seal`: the delete of the round's mark).
    assert by_kind["delete group_commits"] == {True}
    assert by_kind["insert events"] == {False}
    assert by_kind["insert deliveries"] == {False}
    assert by_kind["drain entities"] == {False}
    assert await services.store.db["deliveries"].count_documents({}) == 10
