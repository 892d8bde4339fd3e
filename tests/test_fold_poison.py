"""A poison pill in the fleet fold: one vehicle whose fold raises an error of the code (a rule's
bug, a value nobody expected, such as the due time past year 9999 a fuzzing session found)
must not stall the fold of every other vehicle. Its batch is set aside, recorded in its fleet
(`fold_failures`), counted and logged; the others are folded, events and checkpoint included;
the vehicle is folded on from its last good state. The database's errors are not poison: the
batch is tried again, as before. Fixes go in through a position trigger, on the real embedded
database."""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from gateway.config import Settings
from gateway.errors import Conflict, StoreUnavailable
from gateway.fleet import fold as fold_module
from gateway.fleet.failures import set_aside
from gateway.fleet.fold import FoldSettings
from gateway.fleet.odometer import TrackPoint
from gateway.store.fleet import FoldFailure
from gateway.store.positions import position_id
from gateway.web.state import services_key
from tests.support import auth, cli_env, run_command
from tests.test_fleet_fold import own_fold
from tests.test_fleet_odometer import route_points
from tests.test_fold_mid_stream import _fix, _get_vehicle, _length_m, _vehicle
from tests.triggers_support import Client, create_position_trigger, hook

PLATES = ("AAA1A11", "BAD1B22", "CCC1C33")
POISONED = "BAD1B22"
REGISTERED_KM = 9_997.0  # the oil plan's 10,000 km comes due on the way


def _route() -> list[TrackPoint]:
    """The shared route's first 200 fixes (6.8 km), timed to end just before now: 150 of
    them in one request (3 vehicles: 450 items, under a trigger's 500), the rest later."""
    points = route_points()[:201]
    moved = datetime.now(UTC).replace(microsecond=0) - points[-1].t
    return [replace(p, t=p.t + moved) for p in points[:200]]


async def _fleet(client: Client) -> dict[str, str]:
    """The three vehicles (plate → id), an oil plan for all of them, a position trigger."""
    ids = {p: (await _vehicle(client, p, odometer_km=REGISTERED_KM))["id"] for p in PLATES}
    plan = {"name": "oil", "every_km": 10_000}
    response = await client.post("/api/v1/maintenance-plans", json=plan, headers=auth())
    assert response.status == 201, await response.text()
    return ids


async def _post(client: Client, trigger: dict[str, Any], plates: Sequence[str], route: Any) -> None:
    """One request: every plate's fixes of the route, interleaved (one inbox document)."""
    body = [_fix(point, plate) for point in route for plate in plates]
    status, answer = await hook(client, trigger, body)
    assert status == 200, answer


def _poison(monkeypatch: pytest.MonkeyPatch, vehicle: str, error: Exception) -> None:
    """The maintenance rule raises for one vehicle only (the others run it as ever)."""
    check = fold_module._VehicleRun._check_plans

    def failing(run: Any, at: datetime, received: datetime | None = None) -> None:
        if run._pass.key[1] == vehicle:
            raise error
        check(run, at, received)

    monkeypatch.setattr(fold_module._VehicleRun, "_check_plans", failing)


async def _maintenance_events(client: Client, vehicle: str) -> list[dict[str, Any]]:
    services = client.app[services_key]
    found = await services.events.find("acme", limit=500)
    return [
        e
        for e in found
        if e["type"].startswith("vehicle.maintenance.") and e["entity"]["id"] == vehicle
    ]


async def _failures_counted(client: Client, reason: str) -> float:
    text = await (await client.get("/metrics")).text()
    pattern = rf'^gateway_fleet_fold_vehicle_failures_total\{{reason="{reason}"\}} (\S+)$'
    found = re.search(pattern, text, re.M)
    return float(found[1]) if found else 0.0


async def test_a_vehicle_whose_fold_raises_is_set_aside_and_every_other_is_folded(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    services = client.app[services_key]
    ids = await _fleet(client)
    trigger = await create_position_trigger(client)
    _poison(monkeypatch, ids[POISONED], OverflowError("date value out of range"))
    timed = _route()
    route, later = timed[:150], timed[150:]
    with caplog.at_level(logging.ERROR, logger="gateway.fleet.fold"):
        await _post(client, trigger, PLATES, route)
        await services.fold.run_until_idle()

    for plate in ("AAA1A11", "CCC1C33"):  # folded: position, odometer, events
        vehicle = await _get_vehicle(client, plate)
        assert vehicle["last_position"]["lon"] == route[-1].lon
        assert vehicle["odometer_km"] == pytest.approx(
            REGISTERED_KM + _length_m(route) / 1000, abs=0.01
        )
        assert await _maintenance_events(client, ids[plate])
    last_inbox = await services.store.fleet.last_number()
    checkpoints = await services.store.fleet.checkpoints(range(fold_module.FOLD_SHARDS))
    assert set(checkpoints.values()) == {last_inbox}  # the batch is past, for every shard

    # The poisoned one: not moved, no event, its batch recorded, counted and logged.
    bad = await _get_vehicle(client, POISONED)
    assert "last_position" not in bad and bad["odometer_km"] == REGISTERED_KM
    assert await _maintenance_events(client, ids[POISONED]) == []
    (failure,) = await services.store.fleet.failures("acme")
    assert failure["vehicle"] == ids[POISONED]
    assert failure["reason"] == "OverflowError"
    assert failure["error"] == "OverflowError: date value out of range"
    assert failure["through"] == last_inbox and failure["inbox"] == [last_inbox]
    assert failure["fixes"] == [position_id(ids[POISONED], p.t) for p in route]
    assert len(failure["items"]) == len(route)
    assert await _failures_counted(client, "OverflowError") == 1
    (logged,) = [r for r in caplog.records if ids[POISONED] in r.getMessage()]
    assert logged.exc_info is not None and logged.exc_info[0] is OverflowError

    # Its later fixes (the rule fixed meanwhile): folded on from its last good state, the
    # set-aside segment left out of its odometer; the others go on as before.
    monkeypatch.undo()
    await _post(client, trigger, PLATES, later)
    await services.fold.run_until_idle()
    bad = await _get_vehicle(client, POISONED)
    assert bad["last_position"]["lon"] == later[-1].lon
    assert bad["odometer_km"] == pytest.approx(REGISTERED_KM + _length_m(later) / 1000, abs=0.01)
    good = await _get_vehicle(client, "AAA1A11")
    assert good["odometer_km"] == pytest.approx(
        REGISTERED_KM + _length_m([*route, *later]) / 1000, abs=0.05
    )
    assert len(await services.store.fleet.failures()) == 1
    assert await _failures_counted(client, "OverflowError") == 1

    # Not folded again (no replay: docs/fleet.md): the record stays, listed.
    assert [b.vehicle for b in await set_aside(services.store, "acme")] == [ids[POISONED]]


async def test_a_set_aside_batch_folded_again_after_a_crash_is_recorded_once_and_doubles_nothing(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fold A folds the batch (failure recorded, the others' events stored) and dies before its
    checkpoint; fold B folds the batch again from the checkpoint: the same failure (recorded
    once), the same events (the same ids: stored once)."""
    services = client.app[services_key]
    ids = await _fleet(client)
    trigger = await create_position_trigger(client)
    _poison(monkeypatch, ids[POISONED], OverflowError("date value out of range"))
    await _post(client, trigger, PLATES, _route()[:150])
    await services.store.positions.inserts.settled(5.0)
    fold_a = own_fold(services, FoldSettings())
    assert await fold_a.fold_once() == 1  # recorded and stored, nothing written: then gone
    events = sorted(str(e["_id"]) for e in await services.events.find("acme", limit=500))
    assert await _maintenance_events(client, ids["AAA1A11"])
    assert await _maintenance_events(client, ids["CCC1C33"])
    fold_b = own_fold(services, FoldSettings())
    assert await fold_b.run_until_idle() == 1
    assert sorted(str(e["_id"]) for e in await services.events.find("acme", limit=500)) == events
    (failure,) = await services.store.fleet.failures("acme")
    state = await services.store.fleet.state("acme", ids[POISONED])
    assert state is not None and state["through"] == failure["through"]  # folded past it


@pytest.mark.parametrize(
    "error",
    [
        StoreUnavailable("database unavailable: AutoReconnect"),
        AutoReconnect("connection closed"),
        TimeoutError(),
        ConnectionResetError("reset by peer"),
        Conflict("a resource with this key already exists"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_an_error_of_the_database_or_the_network_is_no_poison_the_batch_is_tried_again(
    client: Client, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """Only errors of the code set a vehicle aside: a transient one fails the batch, which is
    folded again (and a vehicle set aside for it would lose a batch a retry folds)."""
    services = client.app[services_key]
    ids = await _fleet(client)
    trigger = await create_position_trigger(client)
    _poison(monkeypatch, ids[POISONED], error)
    route = _route()[:100]
    await _post(client, trigger, PLATES, route)
    with pytest.raises(type(error)):
        await services.fold.run_until_idle()
    assert await services.store.fleet.failures() == []
    monkeypatch.undo()  # the database answers again
    await services.fold.run_until_idle()
    for plate in PLATES:
        vehicle = await _get_vehicle(client, plate)
        assert vehicle["last_position"]["lon"] == route[-1].lon
    assert await _maintenance_events(client, ids[POISONED])
    assert await _failures_counted(client, type(error).__name__) == 0


async def test_a_batch_whose_writes_fail_after_a_vehicle_was_set_aside_leaves_no_record(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is the batch's last write: a batch that fails before it is folded again,
    and a vehicle whose second try folds (an error that came and went) has no record, which
    would otherwise name fixes its odometer holds."""
    services = client.app[services_key]
    ids = await _fleet(client)
    trigger = await create_position_trigger(client)
    _poison(monkeypatch, ids[POISONED], OverflowError("date value out of range"))
    real_insert = services.store.events.insert_many

    async def failing_insert(events: Any) -> Any:
        raise StoreUnavailable("database unavailable: AutoReconnect")

    monkeypatch.setattr(services.store.events, "insert_many", failing_insert)
    route = _route()[:100]
    await _post(client, trigger, PLATES, route)
    with pytest.raises(StoreUnavailable):
        await services.fold.run_until_idle()
    assert await services.store.fleet.failures() == []
    monkeypatch.undo()  # the error came and went; the database answers
    assert services.store.events.insert_many == real_insert
    await services.fold.run_until_idle()
    assert await services.store.fleet.failures() == []
    bad = await _get_vehicle(client, POISONED)
    assert bad["last_position"]["lon"] == route[-1].lon


@pytest.mark.timeout(120)  # a child process opening the services
async def test_the_cli_lists_the_batches_set_aside(
    client: Client, monkeypatch: pytest.MonkeyPatch, settings: Settings, mongodb_uri: str
) -> None:
    services = client.app[services_key]
    ids = await _fleet(client)
    trigger = await create_position_trigger(client)
    _poison(monkeypatch, ids[POISONED], OverflowError("date value out of range"))
    route = _route()[:100]
    await _post(client, trigger, PLATES, route)
    await services.fold.run_until_idle()
    env = cli_env(settings, mongodb_uri)

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await run_command(env, "fold-failures", *args)

    listed = await cli("--tenant", "acme")
    assert listed.returncode == 0, listed.stderr
    line, summary = listed.stdout.splitlines()
    shape = (
        rf"acme vehicle {ids[POISONED]}: inbox (\d+)\.\.\1, 100 fixes, 100 items, "
        r"at 20\d\d-\d\d-\d\dT\S+: OverflowError: date value out of range"
    )
    assert re.fullmatch(shape, line), line
    assert summary == "1 batch set aside"
    assert (await cli("--tenant", "other")).stdout == "0 batches set aside\n"


async def test_a_failure_the_database_refuses_with_its_items_is_recorded_without_them(
    client: Client,
) -> None:
    """A record must never hold the fold up: one the database refuses (too large, or items
    BSON cannot hold) is written without its items (its fix ids remain)."""
    fleet = client.app[services_key].store.fleet
    entry = {
        "through": 7,
        "inbox": [7],
        "fixes": ["v1-20261204T120000.000Z"],
        "items": [{"k": "fix", "bad\x00key": 1}],
        "reason": "OverflowError",
        "error": "OverflowError: date value out of range",
        "at": datetime.now(UTC),
    }
    await fleet.record_failures([FoldFailure("acme", "v1", entry)])
    await fleet.record_failures([FoldFailure("acme", "v1", entry)])  # again: once
    (recorded,) = await fleet.failures("acme")
    assert recorded["_id"] == "acme:v1:7" and recorded["fixes"] == entry["fixes"]
    assert "items" not in recorded and recorded["items_dropped"] == 1
