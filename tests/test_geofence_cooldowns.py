"""Scenario 1's cooldown is judged on the crossing's time, per driver: a tracker that flushes
its buffer (exits hours apart, a handover between them) alerts each exit to the driver then;
a crossing repeated within 30 minutes of an alerted one is suppressed, in whatever order the
two are sent; a driver who took the vehicle over is told within the last driver's 30 minutes.

Until 2026-12-07 the cooldown (per vehicle and geofence) was judged on the send time: every
exit of a flushed buffer fell within 30 minutes of the first one sent, and the other drivers
were never told (`suppressed`, final)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.fleet.odometer import TrackPoint
from gateway.web.state import services_key
from tests.fcm_double import Fcm, fcm
from tests.flow_support import (
    ANA,
    FLOWS,
    add_mapping,
    add_template,
    drain,
    get,
    push_channel,
    sample,
    send_to,
    trigger_for,
    upload_flow,
)
from tests.partner_double import post
from tests.support import auth

__all__ = ["fcm"]  # the fixture

Client = TestClient[Any, Any]
BRUNO = {"name": "Bruno Lima", "cpf": "11144477735", "language": "pt-BR"}
PAULISTA = (-23.5613, -46.6565)
DRIVERS = "/api/v1/entities/vehicle/ABC1D23/drivers"


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


async def _scenario_1(client: Client, fcm: Fcm) -> None:
    """The shipped flow and template, FCM's double, Ana's and Bruno's phones."""
    await push_channel(client, fcm)
    await add_template(client, "geofence-exit")
    await upload_flow(client, "geofence-exit-push")
    await post(client, "/api/v1/entities/driver", {**ANA, "push_tokens": ["ana-phone"]})
    await post(client, "/api/v1/entities/driver", {**BRUNO, "push_tokens": ["bruno-phone"]})


async def _positions(client: Client) -> dict[str, Any]:
    """ABC1D23 with its tracker, the authorized circle around it, Traccar's position trigger."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    lat, lon = PAULISTA
    circle = {"lat": lat, "lon": lon, "radius_m": 1000}
    await post(
        client, "/api/v1/geofences", {"name": "Garagem SP", "kind": "authorized", "circle": circle}
    )
    await add_mapping(client, "traccar-position")
    mapping = "traccar-position"
    body = {"name": "pos", "target": "positions", "methods": ["POST"], "mapping": mapping}
    return dict(await post(client, "/api/v1/triggers", body))


async def _flush(client: Client, trigger: dict[str, Any], fixes: list[TrackPoint]) -> None:
    """The tracker's buffer, posted at once in its order, then folded and its flows run."""
    for point in fixes:
        payload = copy.deepcopy(sample("traccar_position_forward.json"))
        stamp = point.t.isoformat(timespec="milliseconds")
        position = payload["position"]
        position.update(latitude=point.lat, longitude=point.lon, fixTime=stamp, deviceTime=stamp)
        position["attributes"].pop("odometer", None)
        payload["device"]["name"] = "ABC1D23"
        await send_to(client, trigger, payload)
    services = client.app[services_key]
    for _ in range(4):  # relayed, folded; the fold's events, their flows, their deliveries
        await services.fold.run_until_idle()
        await drain(services)


def _track(t0: datetime, moves: list[tuple[int, float]]) -> list[TrackPoint]:
    """(seconds after t0, degrees east of the circle's centre): 0.0196 is 2 km out."""
    lat, lon = PAULISTA
    return [TrackPoint(t0 + timedelta(seconds=s), lat, lon + east) for s, east in moves]


async def test_a_late_upload_with_two_exits_hours_apart_pushes_each_to_its_driver_then(
    client: Client, fcm: Fcm
) -> None:
    await _scenario_1(client, fcm)
    trigger = await _positions(client)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    await post(client, DRIVERS, {"driver": ANA["cpf"], "start": _iso(t0 - timedelta(hours=1))})
    await post(client, DRIVERS, {"driver": BRUNO["cpf"], "start": _iso(t0 + timedelta(hours=2))})
    minute = 60
    # Ana out at t0+1 min, back at t0+60 min; Bruno (from t0+2 h) out at t0+3 h.
    moves = [(0, 0.0), (1 * minute, 0.0196), (2 * minute, 0.0206), (60 * minute, 0.0)]
    moves += [(150 * minute, 0.0), (180 * minute, 0.0196), (181 * minute, 0.0206)]
    await _flush(client, trigger, _track(t0, moves))

    exits = (await get(client, "/api/v1/events?type=vehicle.geofence.exited"))["items"]
    assert len(exits) == 2
    assert sorted(m["token"] for m in fcm.messages) == ["ana-phone", "bruno-phone"]
    suppressed = await get(client, "/api/v1/deliveries?status=suppressed")
    assert suppressed["items"] == []
    # Each run's step says the crossing's time it judged and each message's key (the driver's).
    runs = (await get(client, "/api/v1/flows/geofence-exit-push/runs"))["items"]
    steps = sorted((r["steps"][0] for r in runs), key=lambda step: step["cooldown_at"])
    exits_at = [_iso(t0 + timedelta(minutes=k)) for k in (1, 180)]
    assert [step["cooldown_at"].replace("+00:00", "Z") for step in steps] == exits_at
    keys = [step["messages"][0]["cooldown_key"] for step in steps]
    assert keys[0].startswith("geofence-exit:ABC1D23:") and ":driver:" in keys[0]
    assert keys[0] != keys[1] and keys[0].split(":driver:")[0] == keys[1].split(":driver:")[0]


async def test_a_driver_who_took_the_vehicle_over_is_told_within_the_last_drivers_cooldown(
    client: Client, fcm: Fcm
) -> None:
    """Live: out with Ana, back, Bruno takes over, out again 4 minutes later."""
    await _scenario_1(client, fcm)
    trigger = await _positions(client)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    await post(client, DRIVERS, {"driver": ANA["cpf"], "start": _iso(t0 - timedelta(hours=1))})
    await post(client, DRIVERS, {"driver": BRUNO["cpf"], "start": _iso(t0 + timedelta(seconds=90))})
    await _flush(client, trigger, _track(t0, [(0, 0.0), (60, 0.0196), (120, 0.0206)]))
    await _flush(client, trigger, _track(t0, [(200, 0.0), (260, 0.0)]))
    await _flush(client, trigger, _track(t0, [(300, 0.0196), (360, 0.0206)]))
    assert [m["token"] for m in fcm.messages] == ["ana-phone", "bruno-phone"]
    # Bruno's repeat within 30 minutes of his alert's time: his cooldown holds.
    await _flush(client, trigger, _track(t0, [(400, 0.0), (460, 0.0)]))
    await _flush(client, trigger, _track(t0, [(500, 0.0196), (560, 0.0206)]))
    assert [m["token"] for m in fcm.messages] == ["ana-phone", "bruno-phone"]
    (held,) = (await get(client, "/api/v1/deliveries?status=suppressed"))["items"]
    assert held["last_error"].startswith("suppressed: cooldown: an alert for ")


async def test_a_repeated_crossing_is_suppressed_by_its_time_whatever_order_it_is_sent_in(
    client: Client, fcm: Fcm
) -> None:
    """Traccar's own exits (`eventTime`): 16:45 arrives first, then a late 13:45 (three hours
    before it: alerted), then 13:55 (ten minutes after the alerted 13:45: suppressed), then
    16:40 (five minutes before the alerted 16:45, sent after it: suppressed)."""
    await _scenario_1(client, fcm)
    traccar = await trigger_for(client, "traccar-event", entity_type="vehicle")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, DRIVERS, {"driver": ANA["cpf"], "start": "2026-11-20T08:00:00Z"})
    forward = sample("traccar_event_forward_geofence_exit.json")
    for n, at in enumerate(("16:45", "13:45", "13:55", "16:40")):
        event = {**forward["event"], "id": 2000 + n, "eventTime": f"2026-11-20T{at}:13.000Z"}
        await send_to(client, traccar, {**forward, "event": event})
        await drain(client.app[services_key])
    bodies = [m["notification"]["body"] for m in fcm.messages]
    assert [b[-5:] for b in bodies] == ["13:45", "10:45"]  # São Paulo's time (UTC-3)
    suppressed = (await get(client, "/api/v1/deliveries?status=suppressed"))["items"]
    errors = sorted(d["last_error"] for d in suppressed)
    assert [e.split(" went out")[0] for e in errors] == [
        "suppressed: cooldown: an alert for 2026-11-20T13:45:13+00:00",
        "suppressed: cooldown: an alert for 2026-11-20T16:45:13+00:00",
    ]
    # The dry run judges the same way, on Ana's key, noting nothing.
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    entity = {"type": "vehicle", "id": vehicle["id"], "key": "ABC1D23"}
    geofence = {"id": 3, "name": "Garagem SP"}
    for at, action in (("2026-11-20T14:05:00Z", "suppress"), ("2026-11-20T15:00:00Z", "send")):
        detail = {"geofence": geofence, "occurred_at": at}
        event = {"type": "vehicle.geofence.exited", "occurred_at": at, "entity": entity}
        body = {"flow": "geofence-exit-push", "event": {**event, "detail": detail}}
        (push,) = (await post(client, "/api/v1/flows/test", body, status=200))["steps"]
        (message,) = push["messages"]
        assert message["decision"]["action"] == action, message["decision"]
    assert len(fcm.messages) == 2


async def test_a_crossing_whose_push_failed_holds_back_no_later_crossing(
    client: Client, fcm: Fcm
) -> None:
    """The note of a condition's time stands only for an alert that went out: FCM refusing
    the 13:45 exit's push gives it back, and the 13:55 exit is pushed."""
    await _scenario_1(client, fcm)
    traccar = await trigger_for(client, "traccar-event", entity_type="vehicle")
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, DRIVERS, {"driver": ANA["cpf"], "start": "2026-11-20T08:00:00Z"})
    forward = sample("traccar_event_forward_geofence_exit.json")
    fcm.answer_next(400)
    for n, at in enumerate(("13:45", "13:55")):
        event = {**forward["event"], "id": 3000 + n, "eventTime": f"2026-11-20T{at}:13.000Z"}
        await send_to(client, traccar, {**forward, "event": event})
        await drain(client.app[services_key])
    assert [m["notification"]["body"][-5:] for m in fcm.messages] == ["10:55"]
    assert len((await get(client, "/api/v1/deliveries?status=failed"))["items"]) == 1
    assert (await get(client, "/api/v1/deliveries?status=suppressed"))["items"] == []


async def test_a_stale_second_phone_does_not_give_back_the_alert_the_first_phone_got(
    client: Client, fcm: Fcm
) -> None:
    """Ana's old phone's token is unregistered at FCM: its push fails, in whichever order
    the two are sent, but her phone got the alert, so her repeat exit 10 minutes later is
    suppressed (until 2026-12-07 a failure noted after the delivered push gave the note back;
    `tests/test_cooldowns.py` holds that order fixed)."""
    await push_channel(client, fcm)
    await add_template(client, "geofence-exit")
    await upload_flow(client, "geofence-exit-push")
    await post(client, "/api/v1/entities/driver", {**ANA, "push_tokens": ["ana-phone", "ana-old"]})
    fcm.unregistered.add("ana-old")
    trigger = await _positions(client)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=25)
    await post(client, DRIVERS, {"driver": ANA["cpf"], "start": _iso(t0 - timedelta(hours=1))})
    await _flush(client, trigger, _track(t0, [(0, 0.0), (60, 0.0196), (120, 0.0206)]))
    assert [m["token"] for m in fcm.messages if m["token"] == "ana-phone"] == ["ana-phone"]
    await _flush(client, trigger, _track(t0, [(400, 0.0), (460, 0.0)]))
    await _flush(client, trigger, _track(t0, [(660, 0.0196), (720, 0.0206)]))
    assert [m["token"] for m in fcm.messages if m["token"] == "ana-phone"] == ["ana-phone"]
    suppressed = (await get(client, "/api/v1/deliveries?status=suppressed"))["items"]
    assert suppressed and all(
        d["last_error"].startswith("suppressed: cooldown: an alert for ") for d in suppressed
    )


async def test_a_flow_edited_to_judge_on_the_send_time_reads_the_notes_of_crossings_times(
    client: Client, fcm: Fcm
) -> None:
    """The shipped flow noted Ana's exit on its crossing's time; the flow, edited to drop
    `cooldown.at` (same key), judges her repeat exit 10 minutes later on the send time: the
    crossing's note counts as an alert sent then, in the run and in the dry run. Until
    2026-12-07 both raised KeyError: 'sent_at' (the delivery errored, the dry run was a 500)."""
    await _scenario_1(client, fcm)
    trigger = await _positions(client)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=25)
    await post(client, DRIVERS, {"driver": ANA["cpf"], "start": _iso(t0 - timedelta(hours=1))})
    await _flush(client, trigger, _track(t0, [(0, 0.0), (60, 0.0196), (120, 0.0206)]))
    assert [m["token"] for m in fcm.messages] == ["ana-phone"]
    shipped = (FLOWS / "geofence-exit-push.yaml").read_text()
    edited = "".join(
        line for line in shipped.splitlines(True) if not line.strip().startswith("at: ")
    )
    assert edited.count("\n") == shipped.count("\n") - 1
    headers = {**auth(), "Content-Type": "application/yaml"}
    response = await client.post("/api/v1/flows", data=edited.encode(), headers=headers)
    assert response.status in (200, 201), await response.text()

    (fence,) = (await get(client, "/api/v1/geofences"))["items"]
    vehicle = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    at = _iso(t0 + timedelta(minutes=11))
    event = {
        "type": "vehicle.geofence.exited",
        "occurred_at": at,
        "entity": {"type": "vehicle", "id": vehicle["id"], "key": "ABC1D23"},
        "detail": {"geofence": {"id": fence["id"], "name": "Garagem SP"}, "occurred_at": at},
    }
    dry = await post(
        client, "/api/v1/flows/test", {"flow": "geofence-exit-push", "event": event}, status=200
    )
    (message,) = dry["steps"][0]["messages"]
    assert message["decision"]["action"] == "suppress", message["decision"]

    await _flush(client, trigger, _track(t0, [(400, 0.0), (460, 0.0)]))
    await _flush(client, trigger, _track(t0, [(660, 0.0196), (720, 0.0206)]))
    assert [m["token"] for m in fcm.messages] == ["ana-phone"]
    (held,) = (await get(client, "/api/v1/deliveries?status=suppressed"))["items"]
    assert held["last_error"].startswith("suppressed: cooldown: sent at "), held


async def test_an_exit_pushed_before_the_upgrade_holds_a_repeat_within_30_minutes(
    client: Client, fcm: Fcm
) -> None:
    """Until 2026-12-07 the flow noted a pushed exit under the vehicle and geofence
    (`geofence-exit:<plate>:<fence>`, on the send time); it now notes the driver's key, and
    heeds the old key (`also`): an exit the previous version pushed 10 minutes before the
    upgrade holds back a crossing 6 minutes after it, as it would have before, and none 39
    minutes before it (a late upload's)."""
    await _scenario_1(client, fcm)
    trigger = await _positions(client)
    (fence,) = (await get(client, "/api/v1/geofences"))["items"]
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - timedelta(minutes=50)
    await post(client, DRIVERS, {"driver": ANA["cpf"], "start": _iso(t0 - timedelta(hours=1))})
    cooldowns = client.app[services_key].store.notify.cooldowns
    old_key = f"geofence-exit:ABC1D23:{fence['id']}"
    sent, wait = now - timedelta(minutes=10), timedelta(minutes=30)
    noted = await cooldowns.claim(
        "acme", old_key, sent, sent - wait, sent + wait, by="old-run:push", delivered=True
    )
    assert noted is None
    minute = 60
    # Out at t0+1 min (39 minutes before the old alert), back, out again at t0+46 min.
    moves = [(0, 0.0), (1 * minute, 0.0196), (2 * minute, 0.0206), (30 * minute, 0.0)]
    moves += [(45 * minute, 0.0), (46 * minute, 0.0196), (47 * minute, 0.0206)]
    await _flush(client, trigger, _track(t0, moves))
    assert [m["token"] for m in fcm.messages] == ["ana-phone"]
    runs = (await get(client, "/api/v1/flows/geofence-exit-push/runs"))["items"]
    assert [run["steps"][0]["cooldown_also"] for run in runs] == [[old_key], [old_key]]
    (held,) = (await get(client, "/api/v1/deliveries?status=suppressed"))["items"]
    assert held["last_error"].startswith(f"suppressed: cooldown: an alert for {sent.isoformat()}")
