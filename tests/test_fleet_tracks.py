"""The fold on the classes of real tracks (issue 10: "checked on tracks you have not seen"):
synthetic tracks with a known ground truth (`tests/tracks.py`), posted through HTTP to position
triggers as canonical fixes and in trackers' own formats (Traccar, flespi), folded, and read
back: the odometer against the truth, the last position, the rejected fixes with their
reasons, a geofence border wandered along, a maintenance plan crossed.

The tolerances per class (docs/fleet.md "Odometer"): 0.5% where the fixes are dense enough
for chords to follow the road (highway at 1 s, a buffered upload at 5 s) or the gap is a
straight road (the tunnel: 1%); 2.5% for city driving (corners cut between fixes 1–10 s
apart, the anchor held through red lights); the sparse class against the chords of its
noiseless fixes (fixes 60–120 s apart cannot see the curves between them); a parked night
gains at most 50 m."""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine

from gateway.fleet.geometry import haversine_m
from gateway.web.state import services_key
from tests import tracks
from tests.flow_support import sample
from tests.support import auth
from tests.tracks import GenFix, Track
from tests.triggers_support import (
    PAYLOADS,
    Client,
    bearer,
    create_position_trigger,
    hook,
    upload_shipped,
)

TENANT = "acme"


def ending_now(make: Callable[[datetime], Track]) -> Track:
    """The track generated so that its newest fix is a minute old (the fold's gates judge
    device times against their arrival)."""
    origin = datetime(2026, 1, 1, tzinfo=UTC)
    probe = make(origin)
    end = max(f.t for f in probe.accepted)
    now = datetime.now(UTC).replace(microsecond=0)
    return make(now - (end - origin) - timedelta(minutes=1))


async def new_vehicle(client: Client, plate: str, **data: Any) -> None:
    body = {"plate": plate, **data}
    response = await client.post("/api/v1/entities/vehicle", json=body, headers=auth())
    assert response.status == 201, await response.text()


async def fold(client: Client) -> None:
    await client.app[services_key].fold.run_until_idle()


async def post_track(
    client: Client, trigger: dict[str, Any], track: Track, plate: str, *, fold_each: bool = False
) -> None:
    """Every batch of the track as canonical fixes, in its sending order (a batch sent again
    is answered as duplicates)."""
    sent: set[datetime] = set()
    for batch in track.batches():
        body = [fix.canonical(plate) for fix in batch]
        status, answer = await hook(client, trigger, body)
        assert status == 200, answer
        resent = sum(fix.t in sent for fix in batch)
        assert answer["summary"]["duplicates"] == resent, answer
        assert answer["summary"]["failed"] == 0, answer
        sent.update(fix.t for fix in batch)
        if fold_each:
            await fold(client)


async def vehicle(client: Client, plate: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())
    assert response.status == 200
    return dict(await response.json())


async def whole_track(client: Client, plate: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    query = "?limit=200"
    while True:
        response = await client.get(
            f"/api/v1/entities/vehicle/{plate}/positions{query}", headers=auth()
        )
        page = await response.json()
        assert response.status == 200, page
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        query = f"?limit=200&cursor={page['next_cursor']}"


def stamp(t: datetime | str) -> datetime:
    """A time as the API writes it (with or without milliseconds), comparable."""
    return datetime.fromisoformat(t) if isinstance(t, str) else t


async def check_fold(client: Client, track: Track, plate: str) -> float:
    """The vehicle's odometer (m) within the track's tolerance, its last position the newest
    accepted fix, every fix in the track read with the verdict it should have."""
    car = await vehicle(client, plate)
    metres = car["odometer_km"] * 1000
    error = metres - track.expected_m
    assert track.within(metres), (track.name, round(metres), round(track.expected_m), track.note)
    newest = track.newest_accepted
    last = car["last_position"]
    assert (last["lat"], last["lon"]) == (newest.lat, newest.lon), track.name
    assert stamp(last["time"]) == newest.t, track.name
    read = {stamp(item["time"]): item["rejected"] for item in await whole_track(client, plate)}
    assert read == {f.t: f.expect for f in track.fixes}, track.name
    return error


async def test_track_classes_posted_as_canonical_fixes_fold_to_their_ground_truth(
    client: Client,
) -> None:
    """City stop-and-go (with and without accuracy or speed), highway at 1 s, sparse fixes on
    curves, a parked night (with and without accuracy or speed), an hour idling with a fix
    every few seconds and neither, a coverage gap, and a city track with bad fixes mixed in
    and a batch resent: each one vehicle, posted in batches, folded once."""
    seed = 5
    classes: dict[str, Track] = {
        "URB1A01": ending_now(lambda s: tracks.urban(seed, s)),
        "URB1A02": ending_now(lambda s: tracks.urban(seed + 1, s, accuracy=False)),
        "URB1A03": ending_now(lambda s: tracks.urban(seed + 3, s, speed=False, drift_tau_s=30)),
        "HWY1A01": ending_now(lambda s: tracks.highway(seed, s)),
        "SPR1A01": ending_now(lambda s: tracks.sparse(seed, s)),
        "PRK1A01": ending_now(lambda s: tracks.parked_night(seed, s)),
        "PRK1A02": ending_now(lambda s: tracks.parked_night(seed, s, accuracy=False)),
        "PRK1A03": ending_now(lambda s: tracks.parked_night(seed, s, accuracy=False, speed=False)),
        "IDL1A01": ending_now(
            lambda s: tracks.parked_night(
                seed, s, accuracy=False, speed=False, hours=1, every_s=(1, 10)
            )
        ),
        "TUN1A01": ending_now(lambda s: tracks.tunnel(seed, s)),
        "BAD1A01": ending_now(lambda s: tracks.with_bad_fixes(tracks.urban(seed + 2, s), seed)),
    }
    trigger = await create_position_trigger(client)
    for plate, track in classes.items():
        await new_vehicle(client, plate)
        await post_track(client, trigger, track, plate)
    await fold(client)
    errors = {
        track.name: await check_fold(client, track, plate) for plate, track in classes.items()
    }
    assert set(errors) == {t.name for t in classes.values()}


async def test_a_store_and_forward_upload_after_live_fixes_adds_the_buffered_road(
    client: Client,
) -> None:
    """Out of coverage for an hour, the tracker sends its live fixes first (each folded as it
    comes), then uploads the hour it buffered in a few large batches: every buffered fix is
    late, and the road they describe is added between the fixes around it. The plan the
    upload carries the odometer past is announced then, not at some later live fix."""
    plan = {"name": "Longa", "every_km": 20}
    response = await client.post("/api/v1/maintenance-plans", json=plan, headers=auth())
    assert response.status == 201, await response.text()
    track = ending_now(lambda s: tracks.store_and_forward(3, s, hours=1.0))
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "SAF1A01")
    await post_track(client, trigger, track, "SAF1A01", fold_each=True)
    await check_fold(client, track, "SAF1A01")
    due = await client.app[services_key].events.find(TENANT, event_type="vehicle.maintenance.due")
    # 8 km live, then 42 km buffered in two batches: past 20 km, then past 40 km
    assert sorted(e["detail"]["due_km"] for e in due) == [20, 40]


def traccar_forward(fix: GenFix, plate: str) -> dict[str, Any]:
    """Traccar's position forward (its own sample) carrying `fix`: speed in knots."""
    payload = copy.deepcopy(sample("traccar_position_forward.json"))
    position = payload["position"]
    when = fix.t.isoformat(timespec="milliseconds")
    position.update(latitude=fix.lat, longitude=fix.lon, fixTime=when, deviceTime=when)
    position.update(speed=(fix.speed_kmh or 0) / 1.852, course=fix.heading or 0)
    position["accuracy"] = fix.accuracy_m or 0.0
    position["attributes"].pop("odometer", None)
    payload["device"]["name"] = plate
    return payload


def flespi_message(fix: GenFix, plate: str) -> dict[str, Any]:
    """One message of a flespi stream: no accuracy, speed in km/h, Unix seconds."""
    message: dict[str, Any] = {
        "device.name": plate,
        "ident": f"35386105{plate}",
        "timestamp": fix.t.timestamp(),
        "position.latitude": fix.lat,
        "position.longitude": fix.lon,
        "position.valid": True,
    }
    if fix.speed_kmh is not None:
        message["position.speed"] = fix.speed_kmh
    if fix.heading is not None:
        message["position.direction"] = fix.heading
    return message


async def test_tracks_in_traccar_and_flespi_formats_fold_like_canonical_ones(
    client: Client,
) -> None:
    """The tunnel track through Traccar's forward (one fix a request, accuracy and speed in
    knots) and a city track with a parked hour through a flespi stream (batches, no
    accuracy): the same odometer and last position as the truth says."""
    await upload_shipped(client, "traccar-position")
    await upload_shipped(client, "flespi")
    traccar = await create_position_trigger(
        client, name="traccar", mapping="traccar-position", methods=["POST"]
    )
    flespi = await create_position_trigger(
        client, name="flespi", mapping="flespi", methods=["POST"]
    )
    tunnel = ending_now(lambda s: tracks.tunnel(8, s))
    await new_vehicle(client, "TRC1A01")
    for fix in tunnel.fixes:
        status, answer = await hook(client, traccar, traccar_forward(fix, "TRC1A01"))
        assert status == 201, answer
    city = ending_now(lambda s: tracks.urban(8, s, accuracy=False))
    await new_vehicle(client, "FLS1A01")
    for batch in city.batches():
        status, answer = await hook(client, flespi, [flespi_message(f, "FLS1A01") for f in batch])
        assert status == 200 and answer["summary"]["failed"] == 0, answer
    await fold(client)
    for plate, track in (("TRC1A01", tunnel), ("FLS1A01", city)):
        car = await vehicle(client, plate)
        assert track.within(car["odometer_km"] * 1000), (plate, car["odometer_km"])
        assert stamp(car["last_position"]["time"]) == track.newest_accepted.t


async def test_fixes_without_gps_lock_through_a_tunnel_move_nothing_and_the_road_counts(
    client: Client,
) -> None:
    """Two vehicles drive the same road at 90 km/h through the shipped `traccar-position`
    forward, a fix every 30 s: 10 min, a 10-min tunnel (15 km), 10 min. One tracker sends
    nothing in the tunnel; the other sends what trackers without a lock send and Traccar
    forwards: `valid: false`, the tunnel entrance's coordinates, the current time. Those are
    stored, refused `no_fix` and move neither the last position nor the odometer: the first
    real fix after the tunnel counts the 15 km, both vehicles fold to the same 59.25 km. A
    flespi message with `position.valid: false` is refused the same way. Before, the invalid
    fixes were folded as positions: the fix after the tunnel was a 15 km jump in 30 s,
    refused and then taken without the jump (42.0 km)."""
    await upload_shipped(client, "traccar-position")
    await upload_shipped(client, "flespi")
    traccar = await create_position_trigger(client, name="traccar", mapping="traccar-position")
    flespi = await create_position_trigger(client, name="flespi", mapping="flespi")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=45)
    road: list[tuple[datetime, tuple[float, float], bool]] = []
    for i in range(61):  # 750 m every 30 s; the tunnel from 10 to 20 min
        place = tracks.destination(-23.0, -46.0, 0, 750 * i)
        road.append((start + timedelta(seconds=30 * i), place, not 20 < i < 40))
    entrance = road[20][1]
    for plate, in_tunnel in (("TNL1A01", False), ("TNL2A01", True)):
        await new_vehicle(client, plate)
        for t, (lat, lon), lock in road:
            if not lock and not in_tunnel:
                continue
            body = copy.deepcopy(sample("traccar_position_forward.json"))
            when = t.isoformat(timespec="milliseconds")
            body["position"].update(fixTime=when, deviceTime=when, speed=90 / 1.852, valid=lock)
            body["position"].update(latitude=lat, longitude=lon)
            if not lock:
                body["position"].update(latitude=entrance[0], longitude=entrance[1], speed=0.0)
            body["device"].update(name=plate, uniqueId=f"imei-{plate}")
            status, answer = await hook(client, traccar, body)
            assert status == 201, answer
        if in_tunnel:  # and one flespi message without a lock, at the entrance too
            message = {
                "device.name": plate, "ident": f"imei-{plate}",
                "timestamp": (road[30][0] + timedelta(seconds=1)).timestamp(),
                "position.latitude": entrance[0], "position.longitude": entrance[1],
                "position.valid": False,
            }  # fmt: skip
            status, answer = await hook(client, flespi, [message])
            assert status == 200 and answer["summary"]["stored"] == 1, answer
        await fold(client)
    for plate in ("TNL1A01", "TNL2A01"):
        car = await vehicle(client, plate)
        assert car["odometer_km"] == pytest.approx(45.0, abs=0.01), (plate, car["odometer_km"])
        assert stamp(car["last_position"]["time"]) == road[-1][0]
    read = await whole_track(client, "TNL2A01")
    refused = [i for i in read if i["rejected"] is not None]
    assert len(refused) == 20 and {i["rejected"] for i in refused} == {"no_fix"}
    assert all(i["valid"] is False for i in refused)
    assert all("valid" not in i for i in read if i["rejected"] is None)
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_fleet_fixes_rejected_total{reason="no_fix"} 20.0' in metrics
    found = await client.app[services_key].events.find(
        TENANT, event_type="vehicle.position.rejected"
    )
    assert [(e["detail"]["reason"], e["detail"]["count"]) for e in found] == [("no_fix", 1)]


@pytest.mark.parametrize("valid", ["false", "0", "FALSE", "no"])
async def test_an_osmand_fix_marked_not_valid_is_refused_no_fix(client: Client, valid: str) -> None:
    """Traccar's OsmAnd decoder reads `valid` as a fix only when `true` (any case) or `1`; any
    other value is a position without one, its coordinates the last the phone held: the
    canonical `valid: false`, refused `no_fix` as Traccar's and flespi's are. A `valid=true`,
    `valid=1` or no `valid` is a fix. Before, every such fix moved the last position, the
    odometer and the fences, which for a tunnel the gate exists for."""
    await upload_shipped(client, "osmand")
    trigger = await create_position_trigger(
        client, mapping="osmand", format="form", auth={"token_in_query": "token"}
    )
    await new_vehicle(client, "OSV1A11", attributes={"tracker_id": "863071016800770"})
    now = int((datetime.now(UTC) - timedelta(minutes=5)).timestamp())
    url = f"/hooks/{trigger['id']}?token={trigger['token']}&id=863071016800770&lat=-23.5&lon=-46.6"
    for i, flag in enumerate(["&valid=true", "&valid=1", "", f"&valid={valid}"]):
        response = await client.get(f"{url}&timestamp={now + 30 * i}{flag}")
        assert response.status == 201, await response.text()
    await fold(client)
    track = await whole_track(client, "OSV1A11")
    assert [(fix["rejected"], fix.get("valid")) for fix in track] == [
        (None, None), (None, None), (None, None), ("no_fix", False)
    ]  # fmt: skip


async def test_a_sascar_packet_without_a_valid_gps_position_is_refused_no_fix(
    client: Client,
) -> None:
    """Sascar's `gps` says whether the packet's position is a GPS fix (1) or not (0): the
    mapping kept it as `attributes.gps_valid` only, and a `<gps>0</gps>` packet was folded as
    a good fix. It is the canonical `valid: false` now, refused `no_fix`."""
    await upload_shipped(client, "sascar-pacote-posicoes")
    trigger = await create_position_trigger(client, mapping="sascar-pacote-posicoes", format="xml")
    await new_vehicle(client, "SAS1A11", attributes={"tracker_id": "1231226"})
    body = (PAYLOADS / "sascar_pacote_posicoes.xml").read_text()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    for old, new in (("10:45:22", start), ("10:45:52", start + timedelta(seconds=30))):
        body = body.replace(f"2026-11-20T{old}-03:00", new.isoformat())
    second = body.index("<return>", body.index("<return>") + 1)
    body = body[:second] + body[second:].replace("<gps>1</gps>", "<gps>0</gps>", 1)
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=body.encode(),
        headers={**bearer(trigger), "Content-Type": "application/xml"},
    )
    assert response.status == 207, await response.text()  # the third packet's vehicle: none
    await fold(client)
    track = await whole_track(client, "SAS1A11")
    assert [(fix["attributes"]["gps_valid"], fix["rejected"]) for fix in track] == [
        (True, None),
        (False, "no_fix"),
    ]


async def test_a_vehicle_wandering_along_a_fence_border_exits_once(client: Client) -> None:
    """Fixes a second along a circle's border, the road itself weaving ±15 m across it and
    the receiver's error on top, for five minutes; then the vehicle leaves: one exit, no
    entry. The naive inside/outside rule flips many times on the same fixes."""
    centre, radius = tracks.SAO_PAULO, 1500.0
    track = ending_now(lambda s: tracks.border_wander(4, s, centre, radius))
    flips = sum(
        (a > radius) != (b > radius)
        for a, b in zip(
            [tracks.haversine_m(*centre, f.lat, f.lon) for f in track.fixes],
            [tracks.haversine_m(*centre, f.lat, f.lon) for f in track.fixes[1:]],
            strict=False,
        )
    )
    assert flips > 10  # the test means something
    circle = {"lat": centre[0], "lon": centre[1], "radius_m": radius}
    fence = {"name": "Centro", "kind": "authorized", "circle": circle}
    response = await client.post("/api/v1/geofences", json=fence, headers=auth())
    assert response.status == 201, await response.text()
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "GEO1A01")
    await post_track(client, trigger, track, "GEO1A01")
    await fold(client)
    services = client.app[services_key]
    exits = await services.events.find(TENANT, event_type="vehicle.geofence.exited")
    entries = await services.events.find(TENANT, event_type="vehicle.geofence.entered")
    assert (len(exits), len(entries)) == (1, 0)
    left_at = exits[0]["detail"]["occurred_at"]
    assert stamp(left_at) >= track.fixes[-1].t - timedelta(seconds=120)  # when it really left


async def test_a_plan_is_announced_once_per_crossing_on_a_real_track(client: Client) -> None:
    """A plan every km, due soon 250 m before, on a city track with red lights and drift,
    folded batch by batch: each crossing of the odometer announced exactly once."""
    plan = {"name": "Curta", "every_km": 1, "due_soon_km": 0.25}
    response = await client.post("/api/v1/maintenance-plans", json=plan, headers=auth())
    assert response.status == 201, await response.text()
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "MNT1A01")
    track = ending_now(lambda s: tracks.urban(9, s))
    await post_track(client, trigger, track, "MNT1A01", fold_each=True)
    car = await vehicle(client, "MNT1A01")
    services = client.app[services_key]
    due = await services.events.find(TENANT, event_type="vehicle.maintenance.due")
    soon = await services.events.find(TENANT, event_type="vehicle.maintenance.due_soon")
    crossed = math.floor(car["odometer_km"])
    assert crossed >= 3
    assert sorted(e["detail"]["due_km"] for e in due) == list(range(1, crossed + 1))
    expected_soon = list(range(1, crossed + 1))
    if car["odometer_km"] >= crossed + 1 - 0.25:
        expected_soon.append(crossed + 1)
    assert sorted(e["detail"]["due_km"] for e in soon) == expected_soon


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_generator_is_deterministic_and_its_truth_is_the_path(seed: int) -> None:
    start = datetime(2026, 12, 1, 12, tzinfo=UTC)
    one, two = tracks.urban(seed, start), tracks.urban(seed, start)
    assert one == two
    assert 3_000 < one.truth_m < 8_000
    sparse = tracks.sparse(seed, start)
    assert sparse.measurable_m is not None and sparse.measurable_m < sparse.truth_m


async def test_a_track_with_fixes_from_before_1970_reads_through_every_page(
    client: Client,
) -> None:
    """A tracker whose clock was never set sends its epoch in local time
    (1970-01-01T00:00:00+03:00 is 1969 in UTC): the fixes are stored and refused as too old,
    and the track still pages through them (the cursor of such a page is negative)."""
    await new_vehicle(client, "OLD1A01")
    trigger = await create_position_trigger(client)
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    times = ["1970-01-01T00:00:00+03:00", "1970-01-01T00:00:05+03:00", tracks.iso(now)]
    batch = [{"plate": "OLD1A01", "time": t, "lat": -23.55, "lon": -46.63} for t in times]
    status, answer = await hook(client, trigger, batch)
    assert status == 200 and answer["summary"]["stored"] == 3, answer
    await fold(client)
    items: list[dict[str, Any]] = []
    query = "?limit=1"
    while query:
        response = await client.get(
            f"/api/v1/entities/vehicle/OLD1A01/positions{query}", headers=auth()
        )
        page = await response.json()
        assert response.status == 200, page
        items += page["items"]
        query = page["next_cursor"] and f"?limit=1&cursor={page['next_cursor']}"
    assert [i["rejected"] for i in items] == ["too_old", "too_old", None]


async def test_live_fixes_taken_while_the_hosts_clock_is_stepped_back_are_not_refused_as_future(
    client: Client,
) -> None:
    """A step back of the web process's host clock (NTP, a hand correction: 10 minutes here,
    the monotonic clock untouched) went straight into the arrival time of the fixes it took
    until the next reading of the database server's clock: a tracker's live fixes, on the
    right time, were refused for good as `future` (answered 201, moving nothing). The gateway's
    time counts on from its last reading on a clock that does not step: the step never
    reaches it."""
    await new_vehicle(client, "STP1A01")
    trigger = await create_position_trigger(client)
    now = datetime.now(UTC).replace(microsecond=0)
    fixes = [
        {"plate": "STP1A01", "time": tracks.iso(now - timedelta(seconds=3 - i)), "lat": lat}
        | {"lon": -46.63}
        for i, lat in enumerate((-23.5500, -23.5501, -23.5502))
    ]
    status, answer = await hook(client, trigger, fixes[0])
    assert status == 201, answer
    with time_machine.travel(now - timedelta(minutes=10)):
        for fix in fixes[1:]:
            status, answer = await hook(client, trigger, fix)
            assert status == 201, answer
    await fold(client)
    assert [i["rejected"] for i in await whole_track(client, "STP1A01")] == [None, None, None]
    car = await vehicle(client, "STP1A01")
    assert stamp(car["last_position"]["time"]) == stamp(fixes[-1]["time"])


async def test_a_track_with_fixes_dated_far_ahead_pages_through_each_fix_once(
    client: Client,
) -> None:
    """A clock glitch dates fixes centuries ahead (refused as `future`, listed in the track):
    paging one fix at a time reads each once, in order. The cursor is the fix's millisecond,
    read back exactly: through a float, 2300-01-01T00:00:00.001Z came back as .000999, and
    the page after it began with it again, for ever."""
    await new_vehicle(client, "FAR1A01")
    trigger = await create_position_trigger(client)
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    times = [
        now.isoformat().replace("+00:00", "Z"),
        "2300-01-01T00:00:00.001Z",
        "2300-01-01T00:00:00.002Z",
        "9999-12-31T23:59:59.998Z",
        "9999-12-31T23:59:59.999Z",
    ]
    batch = [{"plate": "FAR1A01", "time": t, "lat": -23.55, "lon": -46.63} for t in times]
    status, answer = await hook(client, trigger, batch)
    assert status == 200 and answer["summary"]["stored"] == 5, answer
    await fold(client)
    items: list[dict[str, Any]] = []
    query = f"?limit=1&from={tracks.iso(now)}"
    for _ in range(len(times) + 1):
        response = await client.get(
            f"/api/v1/entities/vehicle/FAR1A01/positions{query}", headers=auth()
        )
        page = await response.json()
        assert response.status == 200, page
        items += page["items"]
        if page["next_cursor"] is None:
            break
        query = f"?limit=1&cursor={page['next_cursor']}"
    assert [i["time"] for i in items] == times
    assert [i["rejected"] for i in items] == [None, "future", "future", "future", "future"]


async def test_a_cursor_past_the_year_9999_is_an_empty_page(client: Client) -> None:
    """The document's cursor is up to 15 digits, which reach the year 33658: one past the
    last date a fix can hold was a 400 for a cursor the document allows (schemathesis
    found it); there is no fix after it."""
    await new_vehicle(client, "FAR1A02")
    for cursor in ("999999999999999", "253402300800000"):
        response = await client.get(
            f"/api/v1/entities/vehicle/FAR1A02/positions?cursor={cursor}", headers=auth()
        )
        page = await response.json()
        assert response.status == 200, page
        assert page["items"] == [] and page["next_cursor"] is None


async def test_off_globe_fixes_in_a_track_are_kept_flagged_and_bad_ones_refused(
    client: Client,
) -> None:
    """A highway track whose batches carry a latitude of 91, a longitude of −181 and 1e300
    (stored, answered as the rest, and flagged `invalid_coordinates` by the fold: SPEC §6's
    gate), a negative speed (refused alone with a 422 naming the field, the rest stored), and
    a request whose JSON carries NaN (a 400: JSON has no NaN): the odometer and the last
    position are the clean track's."""
    clean = ending_now(lambda s: tracks.highway(6, s))
    good = clean.fixes
    off = [
        (91.0, good[10].lon),
        (good[40].lat, -181.0),
        (1e300, good[70].lon),
    ]
    extra = [
        replace(good[i], t=good[i].t + timedelta(seconds=0.5), lat=lat, lon=lon,
                expect="invalid_coordinates")
        for i, (lat, lon) in zip((10, 40, 70), off, strict=True)
    ]  # fmt: skip
    fixes = sorted([*good, *extra], key=lambda f: f.t)
    track = replace(clean, fixes=fixes, sends=tracks.in_batches(len(fixes), 50))
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "NAN1A01")
    await post_track(client, trigger, track, "NAN1A01")
    negative = {**good[5].canonical("NAN1A01"), "speed_kmh": -5.0}
    negative["time"] = tracks.iso(good[5].t + timedelta(seconds=0.25))
    status, answer = await hook(client, trigger, [good[5].canonical("NAN1A01"), negative])
    assert status == 207, answer
    (refused,) = [r for r in answer["results"] if r["status"] == 422]
    assert [e["pointer"] for e in refused["problem"]["errors"]] == ["/speed_kmh"]
    nan = json.dumps([{**good[5].canonical("NAN1A01"), "lat": math.nan}])
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=nan,
        headers={"Authorization": f"Bearer {trigger['token']}", "Content-Type": "application/json"},
    )
    assert response.status == 400 and response.content_type == "application/problem+json"
    await fold(client)
    await check_fold(client, track, "NAN1A01")


async def test_a_lone_30_km_jump_after_a_long_stop_is_refused_once_the_road_goes_on(
    client: Client,
) -> None:
    """Parked three hours, the tracker's first fix is 30 km off (reachable in three hours,
    so accepted at first, and the vehicle's odometer written with it); the fixes after it are
    back on the road where the vehicle parked. The jump is then refused after all (flagged in
    the track) and taken off the count, while the vehicle's odometer, which only moves
    forward, holds what it showed until the count passes it: a fix 40 km on, 40 minutes
    later, shows the road without the jump. Before, the vehicle's odometer went back by the
    jump (an ERP that refuses decreasing meters refused the update)."""
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "JMP1A01")
    east = 0.0004893  # about 50 m of longitude at this latitude
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4)
    drive = [(start + timedelta(seconds=5 * i), -23.5, -46.6 + i * east) for i in range(60)]
    jump_t = drive[-1][0] + timedelta(hours=3)
    jump = (jump_t, -23.5 + 0.27, drive[-1][2])
    on = [(jump_t + timedelta(seconds=5 * i), -23.5, drive[-1][2] + i * east) for i in range(1, 20)]
    far_t = on[-1][0] + timedelta(minutes=40)
    far = (far_t, *tracks.destination(-23.5, on[-1][2], 90, 40_000))
    body = [
        {"plate": "JMP1A01", "time": t.isoformat(), "lat": lat, "lon": lon, "speed_kmh": 36}
        for t, lat, lon in [*drive, jump, *on, far]
    ]
    # the drive and the jump in one upload, then the road fix by fix, each folded as it comes
    shown = []
    for batch in [body[: len(drive) + 1], *([fix] for fix in body[len(drive) + 1 :])]:
        status, answer = await hook(client, trigger, batch)
        assert status == 200 and answer["summary"]["stored"] == len(batch), answer
        await fold(client)
        shown.append((await vehicle(client, "JMP1A01"))["odometer_km"])
    road = [*drive, *on, far]
    truth = sum(haversine_m(a[1], a[2], b[1], b[2]) for a, b in itertools.pairwise(road))
    assert shown[0] > 32  # the drive and the jump
    assert shown[:-1] == [shown[0]] * (len(shown) - 1)  # held through the take-back
    assert shown[-1] * 1000 == pytest.approx(truth, rel=0.005)  # the road, no jump
    read = {stamp(item["time"]): item["rejected"] for item in await whole_track(client, "JMP1A01")}
    assert read[jump_t] == "impossible_speed"


async def test_a_device_odometer_glitch_for_one_fix_reaches_neither_vehicle_nor_plans(
    client: Client,
) -> None:
    """A tracker reporting its odometer with every fix sends 4,294,967.295 km once (its
    register's all-ones) and 0 once: the vehicle's odometer never shows them, no re-baseline
    event is emitted for them, and the plan announces nothing at the bad value."""
    plan = {"name": "Oleo", "every_km": 10000, "due_soon_km": 500}
    response = await client.post("/api/v1/maintenance-plans", json=plan, headers=auth())
    assert response.status == 201, await response.text()
    trigger = await create_position_trigger(client)
    await new_vehicle(client, "ODO1A01")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    body = []
    for i in range(40):  # 36 km/h, 50 m a fix, the device counting the same
        km = 9_999.0 + i * 0.05
        km = {10: 4_294_967.295, 20: 0.0}.get(i, km)
        body.append(
            {"plate": "ODO1A01", "time": (start + timedelta(seconds=5 * i)).isoformat(),
             "lat": -23.5, "lon": -46.6 + i * 0.0004893, "speed_kmh": 36, "odometer_km": km}
        )  # fmt: skip
    for i in range(0, 40, 8):  # a few requests, folded as they come
        status, answer = await hook(client, trigger, body[i : i + 8])
        assert status == 200 and answer["summary"]["stored"] == 8, answer
        await fold(client)
    car = await vehicle(client, "ODO1A01")
    assert car["odometer_km"] == pytest.approx(9_999 + 39 * 0.05, abs=0.01)
    events = client.app[services_key].events
    rebased = await events.find(TENANT, event_type="vehicle.odometer.rebaselined")
    assert [e["detail"]["to_km"] for e in rebased] == [9_999.0]  # the first value only
    due = await events.find(TENANT, event_type="vehicle.maintenance.due")
    assert [e["detail"]["due_km"] for e in due] == [10_000]
