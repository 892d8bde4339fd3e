"""Maintenance plans, pure: due_soon and due once per crossing, distance or time, whichever
first, and a recorded service resets them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from gateway.fleet.maintenance import Due, Plan, PlanState, record_service, step

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
OIL = Plan(id="p1", name="oil change", every_km=10_000, due_soon_km=500)


def drive(
    plan: Plan, odometers: Iterable[float], state: PlanState | None = None, hours: float = 1
) -> tuple[PlanState, list[Due]]:
    """Step through odometer readings an hour apart, the state through its document."""
    found: list[Due] = []
    for i, km in enumerate(odometers):
        state, dues = step(plan, state, km, T0 + timedelta(hours=i * hours))
        state = PlanState.from_doc(state.to_doc())
        found.extend(dues)
    assert state is not None
    return state, found


def test_crossing_10000_km_announces_due_soon_once_and_due_once() -> None:
    # 9,000 → 10,800 km in 20 km steps, with the odometer dithering back now and then
    readings = []
    for km in range(9_000, 10_801, 20):
        readings.extend([km, km - 5] if km % 100 == 0 else [km])
    _, found = drive(OIL, readings)
    assert found == [
        Due("due_soon", 10_000, None, "distance"),
        Due("due", 10_000, None, "distance"),
    ]


def test_each_multiple_is_announced_once() -> None:
    _, found = drive(OIL, [0, 9_600, 10_000, 10_100, 19_400, 19_600, 20_000, 20_001])
    assert [(d.kind, d.due_km) for d in found] == [
        ("due_soon", 10_000),
        ("due", 10_000),
        ("due_soon", 20_000),
        ("due", 20_000),
    ]


def test_a_jump_over_several_cycles_announces_each_multiple_crossed_once() -> None:
    """SPEC §6: an event each time a multiple is crossed, once; before, only the last."""
    state, found = drive(OIL, [100, 35_000])
    assert [(d.kind, d.due_km, d.earlier) for d in found] == [
        ("due", 10_000, 0),
        ("due", 20_000, 0),
        ("due", 30_000, 0),
    ]
    _, found = drive(OIL, [35_000, 41_000], state)  # then the next one, once
    assert [(d.kind, d.due_km) for d in found] == [("due", 40_000)]


def test_a_huge_jump_announces_the_last_few_multiples_and_counts_the_others() -> None:
    _, found = drive(OIL, [100, 1_000_000])
    assert [(d.due_km, d.earlier) for d in found] == [
        (980_000, 97),
        (990_000, 0),
        (1_000_000, 0),
    ]


def test_the_first_reading_sets_the_state_without_announcing_the_past() -> None:
    state, found = drive(OIL, [57_300])
    assert found == []
    _, found = drive(OIL, [57_300, 59_600, 60_000], state)
    assert [(d.kind, d.due_km) for d in found] == [("due_soon", 60_000), ("due", 60_000)]


def test_a_plan_first_seeing_a_vehicle_through_an_old_fix_counts_time_from_its_receipt() -> None:
    """A daily plan first evaluated by a fix of 3 days ago received now (a buffered upload, a
    replay of kept fixes), then by the upload's later fixes, one every 30 min: nothing is
    announced for the days before the plan saw the vehicle; its first day is a day after
    the receipt. Before, its time base was the first fix's date, and each later fix of the
    upload crossed a day: three `due`s at once (none when a reading or the tick had
    evaluated the plan first)."""
    plan = Plan(id="p", name="daily inspection", every_km=None, every_days=1)
    received = T0 + timedelta(days=3)
    state: PlanState | None = None
    found: list[Due] = []
    for half_hours in range(3 * 48 + 1):
        at = T0 + timedelta(minutes=30 * half_hours)
        state, dues = step(plan, state, 50_000, at, received_at=received)
        found += dues
    assert found == []
    assert state is not None and state.started_at == received
    _, dues = step(plan, state, 50_000, received + timedelta(days=1, minutes=1))
    assert dues == [Due("due", None, received + timedelta(days=1), "time")]
    # a live fix (received as it is dated, or before: a device clock ahead) is its own time
    live, _ = step(plan, None, 50_000, T0, received_at=T0 - timedelta(seconds=2))
    assert live.started_at == T0


def test_start_km_moves_the_cycles() -> None:
    plan = Plan(id="p", name="tyres", every_km=10_000, start_km=5_000)
    _, found = drive(plan, [0, 10_000, 14_999, 15_000])
    assert [(d.kind, d.due_km) for d in found] == [("due", 15_000)]


def test_time_comes_first_when_the_vehicle_barely_moves() -> None:
    plan = Plan(id="p", name="inspection", every_km=10_000, every_days=30, due_soon_days=7)
    daily = [100 + d for d in range(40)]  # one reading a day, 1 km a day
    _, found = drive(plan, daily, hours=24)
    assert found == [
        Due("due_soon", 10_000, T0 + timedelta(days=30), "time"),
        Due("due", 10_000, T0 + timedelta(days=30), "time"),
    ]
    assert found[0].due_at is not None


def test_distance_and_time_for_the_same_cycle_announce_once() -> None:
    plan = Plan(id="p", name="service", every_km=1_000, every_days=10)
    state, found = drive(plan, [0, 1_000], hours=1)  # distance first
    assert [(d.kind, d.reason) for d in found] == [("due", "distance")]
    later, _ = step(plan, state, 1_001, T0 + timedelta(days=11))  # time of the same cycle
    assert _ == []
    assert later.notified["due"] == 1_000


def test_a_recorded_service_resets_the_plan() -> None:
    state, found = drive(OIL, [0, 9_600, 10_200])
    assert [d.kind for d in found] == ["due_soon", "due"]
    serviced = record_service(OIL, state, 10_200, T0 + timedelta(days=1))
    assert serviced.notified == {}
    assert serviced.last_service_km == 10_200
    # the next cycle counts from the service: nothing at 20,000, due_soon at 19,700
    _, found = drive(OIL, [10_250, 19_650, 20_000, 19_700, 20_200], serviced)
    assert [(d.kind, d.due_km) for d in found] == [("due_soon", 20_200), ("due", 20_200)]


def test_the_same_service_recorded_twice_does_not_repeat_announcements() -> None:
    state, _ = drive(OIL, [0, 9_000])
    serviced = record_service(OIL, state, 9_000, T0)
    state, found = drive(OIL, [18_600], serviced)
    assert [d.kind for d in found] == ["due_soon"]
    again = record_service(OIL, state, 9_000, T0)  # the same report, relayed twice
    _, found = drive(OIL, [18_700, 19_000], again)
    assert [d.kind for d in found] == ["due"]


def test_a_service_without_km_counts_from_the_last_odometer_seen() -> None:
    state, _ = drive(OIL, [0, 4_321])
    serviced = record_service(OIL, state, None, T0)
    assert serviced.last_service_km == 4_321
    _, found = drive(OIL, [13_821, 14_321], serviced)
    assert [(d.kind, d.due_km) for d in found] == [("due_soon", 14_321), ("due", 14_321)]


def test_a_service_without_km_on_a_plan_not_run_yet_counts_from_the_odometer() -> None:
    serviced = record_service(OIL, None, None, T0, odometer_km=152_340.0004)
    assert serviced.last_service_km == 152_340
    _, found = drive(OIL, [152_341, 161_840, 162_340], serviced)
    assert [(d.kind, d.due_km) for d in found] == [("due_soon", 162_340), ("due", 162_340)]


def test_a_service_without_km_before_any_odometer_counts_from_the_first_one_seen() -> None:
    serviced = record_service(OIL, None, None, T0)  # registered without an odometer, no fix
    assert serviced.last_service_km is None
    state, found = drive(OIL, [18_250, 27_800, 28_250], serviced)
    assert state.last_service_km == 18_250
    assert [(d.kind, d.due_km) for d in found] == [("due_soon", 28_250), ("due", 28_250)]


def test_an_odometer_of_0_is_unknown_to_a_plan() -> None:
    """0 is unknown: a tick at 0 after a service without km leaves its km to the first known
    odometer; a plan without a service first seen at 0 takes the odometer then set (a
    reading) as its first check by distance (nothing behind it announced), then counts on."""
    plan = Plan(id="p", name="r", every_km=10_000, due_soon_km=500, every_days=180)
    serviced = record_service(plan, None, None, T0)
    state, found = step(plan, serviced, 0, T0 + timedelta(hours=1))  # a tick
    assert (state.last_service_km, found) == (None, [])
    state, found = step(plan, state, 152_340, T0 + timedelta(hours=2), odometer_set=True)
    assert (state.last_service_km, found) == (152_340, [])
    state, _ = step(plan, None, 0, T0)
    state, found = step(plan, state, 152_340, T0 + timedelta(hours=1), odometer_set=True)
    assert found == []
    _, found = step(plan, state, 159_600, T0 + timedelta(days=1))
    assert [(d.kind, d.due_km) for d in found] == [("due_soon", 160_000)]
    # counted from 0 by GPS distance (driven, not set): each cycle crossed is announced
    state, _ = step(plan, None, 0, T0)
    _, found = step(plan, state, 10_000, T0 + timedelta(hours=1))
    assert [(d.kind, d.due_km) for d in found] == [("due", 10_000)]


def test_a_feeds_service_not_newer_than_the_last_one_changes_nothing() -> None:
    state, _ = drive(OIL, [0, 9_950])
    newer = record_service(OIL, state, 9_950, T0 + timedelta(hours=4))
    assert record_service(OIL, newer, 9_000, T0) == newer  # a late report, a replay
    assert record_service(OIL, newer, None, T0, odometer_km=9_950) == newer
    # the same time with another km: only an admin's corrects it (below)
    assert record_service(OIL, newer, 9_050, T0 + timedelta(hours=4)) == newer


def test_an_admins_service_is_the_base_as_given_an_earlier_one_too() -> None:
    state, _ = drive(OIL, [1, 9_950])
    newer = record_service(OIL, state, 9_950, T0 + timedelta(hours=4))
    km_fixed = record_service(OIL, newer, 9_050, T0 + timedelta(hours=4), authoritative=True)
    assert (km_fixed.last_service_km, km_fixed.last_service_at) == (9_050, T0 + timedelta(hours=4))
    date_fixed = record_service(OIL, newer, 9_950, T0, authoritative=True)  # typed to the minute
    assert (date_fixed.last_service_km, date_fixed.last_service_at) == (9_950, T0)


def test_a_report_seen_before_changes_nothing_whatever_came_since() -> None:
    """A checklist's service (its event `e1`), corrected back by an admin, then relayed
    again: the correction stands; so does a newer service after an admin's `last_service`
    (event `e2`) relayed again."""
    state, _ = drive(OIL, [1, 9_950])
    typo = record_service(OIL, state, 9_050, T0 + timedelta(hours=4), report="e1")
    fixed = record_service(OIL, typo, 9_950, T0 + timedelta(hours=3), authoritative=True)
    again = record_service(OIL, fixed, 9_050, T0 + timedelta(hours=4), report="e1")
    assert (again.last_service_km, again.last_service_at) == (9_950, T0 + timedelta(hours=3))
    at = T0 + timedelta(hours=5)
    admin = record_service(OIL, again, 9_960, at, authoritative=True, report="e2")
    newest = record_service(OIL, admin, 9_990, T0 + timedelta(hours=6), report="e3")
    replayed = record_service(OIL, newest, 9_960, at, authoritative=True, report="e2")
    assert replayed == newest


def test_a_service_without_km_recorded_again_after_the_vehicle_moved_changes_nothing() -> None:
    state, _ = drive(OIL, [0, 4_321])
    serviced = record_service(OIL, state, None, T0, odometer_km=4_321)
    moved, _ = drive(OIL, [4_400, 13_900], serviced)
    assert record_service(OIL, moved, None, T0, odometer_km=13_900) == moved


def test_a_time_plan_counts_from_the_service_date() -> None:
    plan = Plan(id="p", name="inspection", every_km=50_000, every_days=30)
    state, _ = drive(plan, [0, 10])
    serviced = record_service(plan, state, 10, T0 + timedelta(days=20))
    after, found = step(plan, serviced, 20, T0 + timedelta(days=45))
    assert found == []  # 25 days since the service
    _, found = step(plan, after, 20, T0 + timedelta(days=50))
    assert found == [Due("due", 50_010, T0 + timedelta(days=50), "time")]


def test_a_plan_applies_to_its_plates_and_group_or_to_everyone() -> None:
    assert OIL.applies_to("ABC1D23", [])
    plan = Plan(id="p", name="vans", every_km=5_000, group="vans")
    assert plan.applies_to("ABC1D23", ["vans"])
    assert not plan.applies_to("ABC1D23", ["trucks"])


def test_plan_state_survives_its_document() -> None:
    state = PlanState(10_000.0, T0, {"due": 10_000.0}, T0 - timedelta(days=3), 10_050.5)
    assert PlanState.from_doc(state.to_doc()) == state


def test_an_odometer_spike_taken_back_does_not_silence_the_plan() -> None:
    # a device odometer glitch (0xFFFFFFFF metres) for one fix, then the real value again
    _, found = drive(OIL, [9_300, 4_294_967.295, 9_310, 9_600, 10_000, 19_600, 20_000])
    assert [(d.kind, d.due_km) for d in found] == [
        ("due", 4_270_000),  # (the last three multiples the glitch jumped over)
        ("due", 4_280_000),
        ("due", 4_290_000),
        ("due_soon", 10_000),
        ("due", 10_000),
        ("due_soon", 20_000),
        ("due", 20_000),
    ]


def test_an_odometer_corrected_down_within_a_cycle_does_not_announce_again() -> None:
    _, found = drive(OIL, [9_000, 9_600, 10_050, 8_900, 9_600, 10_100])
    assert [(d.kind, d.due_km) for d in found] == [("due_soon", 10_000), ("due", 10_000)]


def test_an_odometer_glitch_down_for_a_moment_announces_nothing_again() -> None:
    # a device reporting 0 for one fix, then its real value again
    _, found = drive(OIL, [149_000, 149_600, 150_010, 0, 150_020, 150_500])
    assert [(d.kind, d.due_km) for d in found] == [("due_soon", 150_000), ("due", 150_000)]


def test_a_cycle_announced_due_is_not_announced_due_soon_after_a_correction() -> None:
    # a jump past 10,000 km (no due_soon on the way), then corrected down into the due_soon band
    _, found = drive(OIL, [9_000, 10_050, 8_900, 9_600, 10_100])
    assert [(d.kind, d.due_km) for d in found] == [("due", 10_000)]


def test_a_plan_by_time_alone_announces_each_year_once_and_a_service_resets_it() -> None:
    """An annual inspection (`every_days` alone, no distance): due_soon 30 days before each
    anniversary and due on it, once each whatever the odometer does (it jumps and goes back
    here), `due_km` None; a service recorded counts the next year from its date."""
    plan = Plan(id="p", name="vistoria anual", every_km=None, every_days=365, due_soon_days=30)
    odometers = [100 + (d % 7) * 5_000 for d in range(2 * 365 + 10)]  # a wild odometer
    state, found = drive(plan, odometers, hours=24)
    year = timedelta(days=365)
    assert found == [
        Due("due_soon", None, T0 + year, "time"),
        Due("due", None, T0 + year, "time"),
        Due("due_soon", None, T0 + 2 * year, "time"),
        Due("due", None, T0 + 2 * year, "time"),
    ]
    serviced = record_service(plan, state, None, T0 + timedelta(days=740))
    quiet, found = step(plan, serviced, 0, T0 + timedelta(days=740 + 330))
    assert found == []
    _, found = step(plan, quiet, 0, T0 + timedelta(days=740 + 336))
    assert found == [Due("due_soon", None, T0 + timedelta(days=740) + year, "time")]


def test_time_counts_its_own_cycles_on_a_vehicle_far_past_its_first_km_cycle() -> None:
    """Every 10,000 km or 180 days from start_km 0, first seen at 152,340 km: due_soon and
    due by time at 165 and 180 days (the next km due with them), again at 360 days, and the
    distance at 160,000 km after that; each once."""
    plan = Plan(
        id="p", name="r", every_km=10_000, due_soon_km=500, every_days=180, due_soon_days=15
    )
    days = [0, 100, 166, 181, 200, 346, 361, 362]
    state: PlanState | None = None
    found: list[Due] = []
    for d in days:
        state, dues = step(plan, state, 152_340, T0 + timedelta(days=d))
        state = PlanState.from_doc(state.to_doc())
        found += dues
    half, year = timedelta(days=180), timedelta(days=360)
    assert found == [
        Due("due_soon", 160_000, T0 + half, "time"),
        Due("due", 160_000, T0 + half, "time"),
        Due("due_soon", 160_000, T0 + year, "time"),
        Due("due", 160_000, T0 + year, "time"),
    ]
    found = []
    for d, km in zip(range(363, 367), [159_600, 160_000, 169_600, 170_000], strict=True):
        state, dues = step(plan, state, km, T0 + timedelta(days=d))
        found += dues
    # 160,000 km falls in the time cycle announced at 360 days: the same service
    assert [(d.kind, d.due_km, d.reason) for d in found] == [
        ("due_soon", 170_000, "distance"),
        ("due", 170_000, "distance"),
    ]


def test_a_due_on_one_measure_counts_for_the_others_cycle_it_falls_in() -> None:
    """Every 1,000 km or 10 days: due by distance on day 2; day 10 (the same time cycle)
    announces nothing, day 20 (the next) does; a service resets both."""
    plan = Plan(id="p", name="s", every_km=1_000, every_days=10)
    state, _ = step(plan, None, 0, T0)
    state, found = step(plan, state, 1_000, T0 + timedelta(days=2))
    assert found == [Due("due", 1_000, T0 + timedelta(days=10), "distance")]
    state, found = step(plan, state, 1_100, T0 + timedelta(days=10, hours=1))
    assert found == []
    state, found = step(plan, state, 1_200, T0 + timedelta(days=20, hours=1))
    assert found == [Due("due", 2_000, T0 + timedelta(days=20), "time")]
    serviced = record_service(plan, state, 1_200, T0 + timedelta(days=21))
    _, found = step(plan, serviced, 1_300, T0 + timedelta(days=31, hours=1))
    assert found == [Due("due", 2_200, T0 + timedelta(days=31), "time")]


def test_an_edited_interval_does_not_repeat_a_time_due() -> None:
    """Due by time at 180 days; the interval edited to 90 days: day 181 (its cycle 2, the
    same day 180) announces nothing, day 270 does."""
    plan = Plan(id="p", name="t", every_km=None, every_days=180)
    state, _ = step(plan, None, 0, T0)
    state, found = step(plan, state, 0, T0 + timedelta(days=180, hours=1))
    assert [d.due_at for d in found] == [T0 + timedelta(days=180)]
    edited = Plan(id="p", name="t", every_km=None, every_days=90)
    state, found = step(edited, state, 0, T0 + timedelta(days=181))
    assert found == []
    _, found = step(edited, state, 0, T0 + timedelta(days=270, hours=1))
    assert [d.due_at for d in found] == [T0 + timedelta(days=270)]


def test_a_state_kept_before_distance_and_time_counted_apart_repeats_nothing() -> None:
    """States written before: one mark per kind, a cycle's due km (a time-only plan's, its
    number), that stood for its time too. Read again, nothing already said is said again,
    and a vehicle far past its first km cycle comes due by time."""
    both = Plan(id="p", name="b", every_km=10_000, every_days=30)
    old = PlanState.from_doc({"notified": {"due": 10_000.0}, "started_at": T0})
    _, found = step(both, old, 400, T0 + timedelta(days=31))  # day 30 said (cycle 1)
    assert found == []
    far = PlanState.from_doc({"notified": {"due": 150_000.0}, "started_at": T0})
    _, found = step(both, far, 152_340, T0 + timedelta(days=31))
    assert found == [Due("due", 160_000, T0 + timedelta(days=30), "time")]
    yearly = Plan(id="y", name="v", every_km=None, every_days=365)
    old = PlanState.from_doc({"notified": {"due": 1.0}, "started_at": T0})
    later, found = step(yearly, old, 0, T0 + timedelta(days=400))
    assert found == []
    _, found = step(yearly, later, 0, T0 + timedelta(days=731))
    assert found == [Due("due", None, T0 + timedelta(days=730), "time")]


def test_a_shortened_interval_does_not_repeat_what_a_due_on_the_other_measure_covered() -> None:
    """Every 1,000 km or 10 days, first seen on day 0, due by distance on day 12 (day 10's
    time due with it: one service); edited to 5 days on day 13, the cycle day 12 falls in
    ends on day 15: nothing on days 13 and 16, due by time on day 20. Likewise every_km
    shortened after a due by time. Before, the time measure's next point under the old
    interval (day 20) read as a glitch past the new one, and day 10 was announced again."""
    plan = Plan(id="p", name="s", every_km=1_000, every_days=10)
    state, _ = step(plan, None, 0, T0)
    state, found = step(plan, state, 1_000, T0 + timedelta(days=12))
    assert found == [Due("due", 1_000, T0 + timedelta(days=20), "distance")]
    edited = Plan(id="p", name="s", every_km=1_000, every_days=5)
    for day in (13, 16):
        state, found = step(edited, state, 1_100, T0 + timedelta(days=day))
        state = PlanState.from_doc(state.to_doc())
        assert found == []
    _, found = step(edited, state, 1_200, T0 + timedelta(days=20, hours=1))
    assert found == [Due("due", 2_000, T0 + timedelta(days=20), "time")]
    # due by time on day 10 at 400 km; every_km edited to 300: 400 km is in the cycle to 600
    state, _ = step(plan, None, 0, T0)
    state, found = step(plan, state, 400, T0 + timedelta(days=10, hours=1))
    assert found == [Due("due", 1_000, T0 + timedelta(days=10), "time")]
    edited = Plan(id="p", name="s", every_km=300, every_days=10)
    state, found = step(edited, state, 650, T0 + timedelta(days=11))
    assert found == []
    _, found = step(edited, state, 900, T0 + timedelta(days=12))
    assert found == [Due("due", 900, T0 + timedelta(days=20), "distance")]
