"""What is journaled (SPEC §5): every write that backs an answer, and every write a later one
stands on (the relay's events and deliveries before the drain of their outbox, the fold's
vehicle writes before its state); the drains are not, a lost drain is done again. Read from
the database's own profiler: the write concern each command had."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from gateway.config import Settings
from gateway.entities import Origin
from gateway.services import Services, open_services
from gateway.store.entities import Folded
from tests.support import deliver_entity_events

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
            what = "drain" if any(map(_drains, changes)) else "write"
            what = "fold" if any(map(_folds, changes)) else what
            seen.append({"what": f"{what} {target}", "j": j})
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
            what = "drain" if drain else "fold" if _folds(op.get("updateMods", {})) else "write"
            what = f"{what} entities"
            seen.append({"what": what, "j": command["writeConcern"]["j"]})
    return seen


def _folds(change: dict[str, Any]) -> bool:
    return "folded" in change.get("$set", {})


def _drains(change: dict[str, Any]) -> bool:
    return "$unset" in change or "$pull" in change


async def test_entity_writes_and_the_relays_events_and_deliveries_are_journaled_not_drains(
    journaled: Services,
) -> None:
    services = journaled
    await deliver_entity_events(services)
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
    # A drain stands on them: journaled, or a database restarted between them and the drain
    # (the driver sends the drain there) would keep the drain and lose them.
    assert by_kind["insert events"] == {True}
    assert by_kind["insert deliveries"] == {True}
    assert by_kind["drain entities"] == {False}
    assert await services.store.db["deliveries"].count_documents({}) == 10


async def test_the_folds_vehicle_writes_are_journaled_rounds(journaled: Services) -> None:
    """The fold's state, journaled, says a vehicle's position and odometer are written: a
    vehicle write left to the journal's order would be lost with a database restarted
    between the two while the state kept it done, and the vehicle would show an old position
    until its tracker sent again."""
    services = journaled
    plates = [f"FLD1D{i}3" for i in range(4)]
    ids = [
        str((await services.entities.upsert("acme", "vehicle", {"plate": p}, ORIGIN)).entity["_id"])
        for p in plates
    ]
    position = {"last_position": {"lat": -23.5, "lon": -46.6}}
    alone = await services.store.entities.set_folded([Folded("acme", ids[0], position, 1)])
    assert alone == [True]  # a plain update
    together = [Folded("acme", i, position, 1) for i in ids[1:]]
    assert await services.store.entities.set_folded(together) == [True] * 3  # one round
    seen = await _profiled(services)
    assert [c for c in seen if c["what"] == "fold entities"] == [
        {"what": "fold entities", "j": True}
    ] * 4
    assert {"what": "delete group_commits", "j": True} in seen  # the round's seal
