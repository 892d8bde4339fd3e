"""Every write behind a 2xx is journaled (SPEC §5): what goes on the wire, seen by a pymongo
command listener, for ingest, idempotency records, admin writes, the relay's events and
deliveries, and delivery state. The drain of an outbox is the exception: it backs no answer,
and a drain lost in a crash is done again (gateway/store/client.py `unjournaled`)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from pymongo import monitoring

from gateway.config import ConfigError, Settings
from gateway.store.client import open_client
from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    partner,
    post,
)
from tests.support import auth
from tests.triggers_support import bearer, create_position_trigger, create_trigger

__all__ = ["partner"]

_WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify", "bulkWrite"})


class _Writes(monitoring.CommandListener):
    """Records write commands while `recording`; registered once for the session's clients."""

    def __init__(self) -> None:
        self.recording = False
        self.commands: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.recording and event.command_name in _WRITE_COMMANDS:
            self.commands.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


_LISTENER = _Writes()
monitoring.register(_LISTENER)  # applies to clients created from now on (the app's below)


async def test_every_write_the_gateway_sends_asks_for_the_journal(
    aiohttp_client: Any, make_app: Any, partner: Partner
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(make_app())
    _LISTENER.commands.clear()
    _LISTENER.recording = True
    try:
        partner_doc = await create_partner(client, partner.url)
        renamed = await client.patch(  # an optimistic update: a guarded update, then a read
            f"/api/v1/partners/{partner_doc['id']}", json={"name": "ERP Acme"}, headers=auth()
        )
        assert renamed.status == 200, await renamed.text()
        action = await create_action(client, partner_doc["id"])
        await create_subscription(client, action["id"], ("entity.created", "entity.updated"))
        trigger = await create_trigger(client)
        headers = {**bearer(trigger), "Idempotency-Key": "k-1"}
        answer = await client.post(
            f"/hooks/{trigger['id']}", json={"plate": "ABC1D23"}, headers=headers
        )
        assert answer.status == 201
        await post(client, "/api/v1/entities/vehicle", {"plate": "XYZ9A87"})
        trackers = await create_position_trigger(client)  # a round's inbox number: findAndModify
        fix = {"plate": "XYZ9A87", "time": "2026-12-07T10:00:00Z", "lat": -23.55, "lon": -46.63}
        answer = await client.post(f"/hooks/{trackers['id']}", json=fix, headers=bearer(trackers))
        assert answer.status in (200, 201, 202), await answer.text()
        await client.app[services_key].relay.run_until_idle()
        await client.app[services_key].delivery_worker.run_until_idle()
        assert len(partner.requests) == 2
    finally:
        _LISTENER.recording = False
    kinds = {name for name, _ in _LISTENER.commands}
    # A write alone in its group-commit round goes as a plain insert or update (a bulkWrite
    # when it shares the round: tests/test_relay_durability.py).
    assert kinds >= {"insert", "update", "findAndModify"}, kinds
    unjournaled = [
        (n, c.get("writeConcern"))
        for n, c in _LISTENER.commands
        if not _journaled(c) and not _relays(n, c)
    ]
    assert unjournaled == []
    entity_writes = [
        c
        for n, c in _LISTENER.commands
        if _entities(n, c) and n in ("bulkWrite", "insert", "update") and not _relays(n, c)
    ]
    assert entity_writes and all(_journaled(c) for c in entity_writes)


def _entities(name: str, command: dict[str, Any]) -> bool:
    if name == "bulkWrite":
        return any(ns["ns"].endswith(".entities") for ns in command["nsInfo"])
    return command.get(name) == "entities"


def _journaled(command: dict[str, Any]) -> bool:
    concern = command.get("writeConcern") or {}
    return concern.get("j") is True and concern.get("w", 1) != 0


def _relays(name: str, command: dict[str, Any]) -> bool:
    """An outbox drained by the event relay (every operation of the bulk removes relayed
    outbox entries)."""
    if name == "delete":  # a deleted entity's document, once its outbox is relayed
        return command["delete"] == "entities"
    if name == "update" and command["update"] == "entities":
        return all(_drains(u["u"]) for u in command["updates"])
    if name != "bulkWrite":
        return False
    return all("delete" in op or _drains(op.get("updateMods", {})) for op in command["ops"])


def _drains(change: dict[str, Any]) -> bool:
    return "outbox" in change.get("$unset", {}) or "outbox" in change.get("$pull", {})


def test_write_concern_setting_takes_majority_or_a_member_count() -> None:
    assert Settings.from_env({"GATEWAY_WRITE_CONCERN": "majority"}).db_write_concern == "majority"
    assert Settings.from_env({"GATEWAY_WRITE_CONCERN": "2"}).db_write_concern == 2
    assert Settings.from_env({}).db_write_concern is None
    for bad in ("0", "all", "-1"):
        try:
            Settings.from_env({"GATEWAY_WRITE_CONCERN": bad})
        except ConfigError as exc:
            assert "GATEWAY_WRITE_CONCERN" in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")


async def test_journal_cannot_be_switched_off_from_the_uri(mongodb_uri: str) -> None:
    sep = "&" if "?" in mongodb_uri else "?"
    client = open_client(f"{mongodb_uri}{sep}journal=false", write_concern="majority")
    try:
        assert client.write_concern.document == {"w": "majority", "j": True}
    finally:
        await client.close()
