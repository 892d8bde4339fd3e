"""Fixes dated ahead of their arrival because the gateway's clock was behind (the database
server's clock: with the embedded database, this host's, which may boot or resume minutes or
hours behind until NTP steps it right) are held and folded once the clock is right, not
refused `future` for good; a tracker whose own clock is ahead, or a fix dated far ahead, is
still refused (docs/fleet.md "Fixes held for the clock")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import Client, create_position_trigger, hook, vehicle_track

STEP_M = 15.0  # ~27 km/h, a fix every 2 s
SETUP = timedelta(days=1)  # vehicles and trigger set up the day before, on a right clock


def _fix(plate: str, t: datetime, i: int) -> dict[str, Any]:
    return {
        "plate": plate,
        "time": t.isoformat().replace("+00:00", "Z"),
        "lat": -23.55 + i * 0.000135,  # 15 m north each fix
        "lon": -46.63,
        "speed_kmh": 27.0,
    }


async def _vehicle(client: Client, plate: str) -> None:
    r = await client.post(
        "/api/v1/entities/vehicle", json={"plate": plate, "odometer_km": 1000}, headers=auth()
    )
    assert r.status == 201, await r.text()


async def _car(client: Client, plate: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())
    return dict(await r.json())


async def _verdicts(client: Client, plate: str) -> list[str | None]:
    track = await vehicle_track(client, plate, "?limit=200")
    return [item["rejected"] for item in track["items"]]


async def _post(
    client: Client,
    trigger: dict[str, Any],
    fixes: list[dict[str, Any]],
    received: Callable[[int], datetime],
    gateway_time: Callable[[datetime], None],
) -> None:
    """Each 10 fixes in one request, received at `received(first index)` on the gateway's
    time, folded at once."""
    for n in range(0, len(fixes), 10):
        gateway_time(received(n))
        status, answer = await hook(client, trigger, fixes[n : n + 10])
        assert status == 200, answer
        await client.app[services_key].fold.run_until_idle()


async def test_fixes_received_while_the_gateways_clock_was_behind_count_once_it_is_right(
    client: Client, gateway_time: Callable[[datetime], None]
) -> None:
    """A minute of driving received while the gateway's clock is 10 minutes behind (its host
    booted with the RTC off), then a minute after NTP stepped it right: every fix counts, the
    odometer has the whole way, the last position is the newest fix. Before, the first minute
    was refused `future` for good (half the distance lost)."""
    real = datetime.now(UTC).replace(microsecond=0)
    gateway_time(real - SETUP)
    await _vehicle(client, "CLK1B01")
    trigger = await create_position_trigger(client)
    start = real - timedelta(minutes=2)
    fixes = [_fix("CLK1B01", start + timedelta(seconds=2 * i), i) for i in range(60)]
    behind = timedelta(minutes=10)
    await _post(
        client, trigger, fixes[:30], lambda n: start + timedelta(seconds=2 * n + 1) - behind,
        gateway_time,
    )  # fmt: skip
    assert set(await _verdicts(client, "CLK1B01")) == {"future"}  # held, not counted yet
    await _post(
        client, trigger, fixes[30:], lambda n: start + timedelta(seconds=2 * (30 + n) + 1),
        gateway_time,
    )  # fmt: skip
    assert await _verdicts(client, "CLK1B01") == [None] * 60
    car = await _car(client, "CLK1B01")
    assert abs(car["odometer_km"] - 1000 - 59 * STEP_M / 1000) < 0.02, car["odometer_km"]
    assert car["last_position"]["time"] == fixes[-1]["time"].replace("Z", ".000Z")


async def test_a_trackers_clock_ahead_or_a_fix_far_ahead_is_still_refused_future(
    client: Client, gateway_time: Callable[[datetime], None]
) -> None:
    """Held fixes are taken only once the device's later fixes agree with the gateway's time:
    a tracker whose own clock runs 10 minutes ahead, on a right gateway clock, never does
    (its fixes stay refused, the vehicle unmoved, also after the gateway's time passed
    theirs); and a fix dated more than 12 h ahead of its arrival (a gateway a day behind, a
    device's GPS week rollover) is refused for good, not held."""
    real = datetime.now(UTC).replace(microsecond=0)
    gateway_time(real - SETUP)
    await _vehicle(client, "CLK1B02")
    await _vehicle(client, "CLK1B03")
    trigger = await create_position_trigger(client)
    start = real - timedelta(minutes=15)
    ahead = timedelta(minutes=10)
    fixes = [_fix("CLK1B02", start + ahead + timedelta(seconds=20 * i), i) for i in range(40)]
    await _post(
        client, trigger, fixes, lambda n: start + timedelta(seconds=20 * n + 1), gateway_time
    )  # 13 minutes of the gateway's time: past the first fixes' dates
    assert set(await _verdicts(client, "CLK1B02")) == {"future"}
    car = await _car(client, "CLK1B02")
    assert car.get("last_position") is None and car["odometer_km"] == 1000, car

    start = real - timedelta(minutes=2)
    fixes = [_fix("CLK1B03", start + timedelta(seconds=2 * i), i) for i in range(40)]
    day = timedelta(days=1)
    await _post(
        client, trigger, fixes[:20], lambda n: start + timedelta(seconds=2 * n + 1) - day,
        gateway_time,
    )  # fmt: skip
    await _post(
        client, trigger, fixes[20:], lambda n: start + timedelta(seconds=2 * (20 + n) + 1),
        gateway_time,
    )  # fmt: skip
    assert await _verdicts(client, "CLK1B03") == ["future"] * 20 + [None] * 20
