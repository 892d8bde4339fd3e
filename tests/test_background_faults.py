"""Database commands that fail under the background work that was never faulted before (SPEC
§3.1, §5; docs/reliability.md "Command faults"): the flow runner, the delivery worker
sending notifications, the schedule runner polling a feed, and the fold's rules that turn
fixes into alerts. `configureFailPoint` `failCommand`, scoped to the gateway's connections,
fails a command the loop issues (a state code, a failed write concern, a dropped connection,
a code that is not about the server's state) a couple of times and then lets it pass.

Once the fault is gone, with the real clock or one a couple of seconds ahead (a lease is
60-90 s: none is waited out): the loop resumes at its next pass, the work is done (the run
succeeds, the e-mail and the push are sent, the feed's items are stored), nothing twice that
must not be (one e-mail, one event per item), nothing healthy is set aside (no run failed, no
delivery failed or parked), and the API says so. Every failpoint is switched off in a `finally`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from gateway.delivery.worker import DeliveryWorker
from gateway.errors import StoreUnavailable
from gateway.services import Services
from tests.fcm_double import Fcm, fcm
from tests.feed_doubles import GeotabDouble, SamsaraDouble, geotab, samsara
from tests.flow_support import drain, email_channel, get, push_channel
from tests.partner_double import (
    FakeClock,
    Partner,
    create_action,
    create_partner,
    create_subscription,
    partner,
    post,
    upload_mapping,
)
from tests.schedule_support import (
    MAPPINGS,
    SAMSARA_FIXES,
    SAMSARA_VEHICLES,
    geotab_schedule,
    runner,
    runs,
    samsara_points,
    samsara_schedule,
    track,
)
from tests.schedule_support import get as relayed_get
from tests.smtp_double import SmtpFactory, smtp_server
from tests.test_command_faults import (
    FAULTS,
    Client,
    Fault,
    Injector,
    app,
    database_back,
    faults,
    ready,
    services_of,
)
from tests.triggers_support import bearer, create_position_trigger

__all__ = ["app", "faults", "fcm", "geotab", "partner", "samsara", "smtp_server"]  # the fixtures

FAULT = {f.name: f for f in FAULTS}
# Each loop meets one of each kind (a labelled state code: 91, 10107; a write concern error,
# the write applied; a dropped connection; a code not about the server's state, 2), spread
# over the commands it issues, as (point, fault) pairs: the whole product would only repeat
# the same paths (the translation is one, `store/client.py`) at 1-2 s a test.


def cases(*pairs: tuple[str, str]) -> Any:
    return pytest.mark.parametrize(
        ("point", "fault"),
        [pytest.param(point, FAULT[name], id=f"{point}-{name}") for point, name in pairs],
    )


def mode(skip: int, times: int = 2) -> dict[str, int]:
    """Skip `skip` matching commands, fail the next `times`: a write and the driver's one
    retry of it (a labelled error, a dropped connection), then it passes."""
    return {"skip": skip, "times": times}


@pytest.fixture(autouse=True)
def no_error_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A database fault is a WARNING (the loop pauses), never an ERROR with a traceback."""
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def a_moment_later(services: Services, seconds: float = 2) -> None:
    """The runner and the worker read a clock a moment ahead: what they handed back after a
    fault is due again after a pause (the poll interval, 1 s), never after a lease."""
    services.flow_runner.clock = services.delivery_worker.clock = lambda: (
        datetime.now(UTC) + timedelta(seconds=seconds)
    )


async def quietly(work: Any) -> None:
    """A pass under the fault: it may stop with StoreUnavailable, nothing else."""
    with contextlib.suppress(StoreUnavailable):
        await work


# -- a flow whose notify step sends an e-mail ------------------------------------------------


async def mail_flow(client: Client, port: int) -> None:
    """A vehicle created → an e-mail to ops (template `hello-email`)."""
    await email_channel(client, port)
    await post(
        client,
        "/api/v1/templates",
        {
            "name": "hello-email",
            "channel_type": "email",
            "default_locale": "en",
            "locales": {"en": {"subject": "New {{ entity.plate }}", "text": "Hi"}},
        },
    )
    await post(
        client,
        "/api/v1/flows",
        {
            "name": "hello",
            "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
            "steps": [
                {
                    "id": "say",
                    "notify": {
                        "channel": "email",
                        "template": "hello-email",
                        "recipients": [{"address": "ops@acme.com.br"}],
                    },
                }
            ],
        },
    )


async def assert_sent_once(
    client: Client, services: Services, messages: list[Any], *, exactly: bool = True
) -> None:
    """The run succeeded, its one notification delivery succeeded, the message went out once
    (`exactly`), or (its send was not recorded) again with the same Message-ID: at least
    once."""
    (run,) = (await get(client, "/api/v1/flows/hello/runs"))["items"]
    assert run["status"] == "succeeded", run
    deliveries = (await get(client, "/api/v1/deliveries"))["items"]
    assert [(d["kind"], d["status"]) for d in deliveries] == [("notification", "succeeded")]
    assert len(messages) >= 1
    stored = await services.store.db["deliveries"].find_one({})
    assert stored is not None
    assert {m.message["Message-ID"] for m in messages} == {stored["notification"]["message_id"]}
    if exactly:
        assert len(messages) == 1, "sent again although the first send was recorded"


# The runner's commands, in order: the expired leases (update), the claim (find, update), the
# notify step's delivery (insert), the run's record (update).
FLOW_POINTS = {
    "claim-read": (["find"], 0),
    "claim-write": (["update"], 1),
    "step-insert": (["insert"], 0),
    "record": (["update"], 2),
}


@cases(
    ("claim-read", "closeConnection"),
    ("claim-write", "WriteConcernFailed"),  # the claim applied: what it took is handed back
    ("step-insert", "BadValue"),
    ("step-insert", "ShutdownInProgress-labelled"),
    ("record", "NotWritablePrimary-labelled"),
    ("record", "WriteConcernFailed"),  # the final record applied
)
async def test_a_flow_run_the_database_fails_completes_once_it_is_back_without_a_lease_wait(
    app: Client, faults: Injector, smtp_server: SmtpFactory, fault: Fault, point: str
) -> None:
    services = services_of(app)
    smtp = await smtp_server()
    await mail_flow(app, smtp.port)
    await post(app, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await services.relay.run_until_idle()  # the run is stored, pending
    commands, skip = FLOW_POINTS[point]
    async with faults.failing(fault, commands, mode=mode(skip)):
        await quietly(services.flow_runner.run_until_idle())
    await database_back(services)
    a_moment_later(services)
    await drain(services)
    await assert_sent_once(app, services, smtp.received)


async def test_a_run_whose_write_the_database_keeps_refusing_is_tried_ever_less_often(
    app: Client, faults: Injector, smtp_server: SmtpFactory
) -> None:
    """A `notify` step whose insert the database refuses (2 BadValue) every time, while the
    hand-back passes: the run is pending again after 1 s, then 2 s, 4 s (a poison is not a
    spin), never failed; once the database takes the insert, it completes."""
    services = services_of(app)
    smtp = await smtp_server()
    await mail_flow(app, smtp.port)
    await post(app, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await services.relay.run_until_idle()
    runner, clock = services.flow_runner, FakeClock()
    runner.clock = clock
    runs = services.store.db["flow_runs"]
    async with faults.failing(FAULT["BadValue"], ["insert"]):
        for pause in (1, 2, 4):
            assert await runner.run_until_idle() == {"unrecorded": 1}
            (run,) = await runs.find({}).to_list(None)
            assert run["status"] == "pending"
            waits = (run["next_attempt_at"] - clock()).total_seconds()
            assert pause - 0.5 < waits <= pause, (pause, waits)
            assert await runner.run_until_idle() == {}  # not due yet: no spin
            clock.advance(pause)
    await database_back(services)
    a_moment_later(services, seconds=clock.offset.total_seconds() + 8)
    await drain(services)
    await assert_sent_once(app, services, smtp.received)


# -- the delivery worker sending a notification ----------------------------------------------


async def first_shard_holds_it(services: Services) -> None:
    """The worker's claim reads the delivery's shard first (one find), so the commands that
    follow are the send's own."""
    (doc,) = await services.store.db["deliveries"].find({}).to_list(None)
    services.delivery_worker._claims.shard = doc["shard"]


# The worker's commands for one notification: the partners disabled (find), the claim (find,
# update), the tenant's settings and the channel (find), the record of the attempt (update).
SEND_POINTS = {
    "claim-write": (["update"], 1, 2),
    "settings-read": (["find"], 2, 3),  # reads: the driver retries, a lookup tries twice
    "channel-read": (["find"], 3, 3),
    "record": (["update"], 2, 2),
}


@cases(
    ("claim-write", "WriteConcernFailed"),
    ("settings-read", "BadValue"),
    ("channel-read", "NotWritablePrimary-labelled"),
    ("channel-read", "BadValue"),  # it used to fail the notification for good
    ("record", "closeConnection"),
    ("record", "ShutdownInProgress-labelled"),
)
async def test_an_e_mail_the_database_fails_around_is_sent_once_it_is_back_never_failed(
    app: Client, faults: Injector, smtp_server: SmtpFactory, fault: Fault, point: str
) -> None:
    services = services_of(app)
    smtp = await smtp_server()
    await mail_flow(app, smtp.port)
    await post(app, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await services.relay.run_until_idle()
    await services.flow_runner.run_until_idle()  # one notification delivery, pending
    await first_shard_holds_it(services)
    commands, skip, times = SEND_POINTS[point]
    async with faults.failing(fault, commands, mode=mode(skip, times)):
        await quietly(services.delivery_worker.run_until_idle())
    await database_back(services)
    a_moment_later(services)
    await drain(services)
    # the send the database failed to record is sent again, with its Message-ID
    await assert_sent_once(app, services, smtp.received, exactly=point != "record")


async def test_a_push_whose_channel_read_fails_is_pushed_once_the_database_is_back(
    app: Client, faults: Injector, fcm: Fcm
) -> None:
    """The channel and its partner are read at send time: a failed read is the database's,
    not the push's (never a failed delivery)."""
    services = services_of(app)
    await push_channel(app, fcm)
    await post(
        app,
        "/api/v1/templates",
        {
            "name": "hello-push",
            "channel_type": "push",
            "default_locale": "en",
            "locales": {"en": {"title": "New vehicle", "body": "{{ entity.plate }}"}},
        },
    )
    await post(
        app,
        "/api/v1/flows",
        {
            "name": "hello",
            "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
            "steps": [
                {
                    "id": "say",
                    "notify": {
                        "channel": "push",
                        "template": "hello-push",
                        "recipients": [{"address": "device-token-1"}],
                    },
                }
            ],
        },
    )
    await post(app, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await services.relay.run_until_idle()
    await services.flow_runner.run_until_idle()
    await first_shard_holds_it(services)
    fault = next(f for f in FAULTS if f.name == "ShutdownInProgress")
    # the channel read: the driver retries it, the lookup tries twice
    async with faults.failing(fault, ["find"], mode=mode(3, times=3)):
        await quietly(services.delivery_worker.run_until_idle())
    await database_back(services)
    a_moment_later(services)
    await drain(services)
    deliveries = (await get(app, "/api/v1/deliveries"))["items"]
    assert [d["status"] for d in deliveries] == ["succeeded"], deliveries
    assert [m["token"] for m in fcm.messages] == ["device-token-1"]


# -- a polled feed ---------------------------------------------------------------------------

# The runner's commands for one run of a feed of 5 records in pages of 2, as the database sees
# them: the claim (findAndModify); updates: page 1's two entity writes (0, 1) and its commit
# (2), page 2's (3, 4; 5), page 3's one record (6; 7), the empty page 4's commit (8), the
# release (9); the run record (insert).
POLL_POINTS = {
    "claim": (["findAndModify"], 0),
    "first-write": (["update"], 0),
    "first-commit": (["update"], 2),
    "later-write": (["update"], 3),
    "later-commit": (["update"], 5),
    "release": (["update"], 9),
    "run-record": (["insert"], 0),
}
# At most this many records' `emit` events come twice, by case; none in the others:
# - a commit the database refuses (a code not about its state: not retried, maybe a poison)
#   leaves its page (2 records) to the next run, which lands it again;
# - a page whose entity write failed (applied or not) is landed again by the next run: the
#   records of the page written by then (or whose write was applied) come again.
REPEATED = {
    ("first-commit", "BadValue"): 2,
    ("first-write", "BadValue"): 2,
    ("first-write", "WriteConcernFailed"): 2,
}


@cases(
    ("claim", "WriteConcernFailed"),
    ("first-write", "BadValue"),
    ("first-write", "WriteConcernFailed"),
    ("first-commit", "BadValue"),
    ("first-commit", "WriteConcernFailed"),
    ("later-write", "closeConnection"),
    ("later-commit", "ShutdownInProgress-labelled"),
    ("release", "ShutdownInProgress-labelled"),
    ("release", "WriteConcernFailed"),
    ("run-record", "NotWritablePrimary-labelled"),
)
async def test_a_feed_the_database_fails_is_ingested_once_and_the_schedule_is_not_held_back(
    app: Client, faults: Injector, geotab: GeotabDouble, fault: Fault, point: str
) -> None:
    services = services_of(app)
    geotab.add_records(5)
    schedule = await geotab_schedule(app, geotab, limit=2)
    poller = runner(app)
    commands, skip = POLL_POINTS[point]
    async with faults.failing(fault, commands, mode=mode(skip)):
        await quietly(poller.run_until_idle())
    await database_back(services)
    # A run the database failed is due again after the first back-off (5 s ± 20%), not
    # after a lease (60 s) nor a growing back-off: the partner did nothing wrong.
    poller.clock = lambda: datetime.now(UTC) + timedelta(seconds=7)
    await poller.run_until_idle()
    state = (await get(app, f"/api/v1/schedules/{schedule['id']}"))["state"]
    assert state["cursor"] == f"{5:016x}", state
    assert state["failures"] == 0 and not state["running"], state
    events = (await relayed_get(app, "/api/v1/events?type=vehicle.position&limit=50"))["items"]
    ids = [e["data"]["attributes"]["geotab_log_id"] for e in events]
    assert set(ids) == {f"b{n:04x}" for n in range(1, 6)}
    # Every record's event, once: a page whose commit the database failed for a moment (its
    # entity writes durable) has that commit handed back, not the page landed again (the
    # entities would change nothing, but the mapping's `emit` events would come again).
    assert len(ids) <= 5 + REPEATED.get((point, fault.name), 0), ids
    updates = (await relayed_get(app, "/api/v1/events?type=entity.updated&limit=50"))["items"]
    assert len(updates) <= 5  # at most one per record: a page landed again changes nothing
    vehicle = await get(app, "/api/v1/entities/vehicle/BRA2E19")
    assert vehicle["attributes"]["geotab_log_id"] == "b0005"
    recorded = await runs(app, schedule["id"])
    assert recorded[0]["outcome"] == "ok", recorded[0]
    assert sum(r["written"] for r in recorded) >= 5


async def test_a_deduplicated_page_whose_commit_was_applied_unconfirmed_remembers_its_ids_once(
    app: Client, faults: Injector, partner: Partner
) -> None:
    """A page's commit (cursor, digest, the ids it remembers) applied by the database, its
    answer a write concern error: handed back and tried again, it must not push the page's
    ids a second time (a remembered id twice takes the place of one still to remember)."""
    services = services_of(app)
    await upload_mapping(app, (MAPPINGS / "fine-feed.yaml").read_text())
    sample = json.loads(
        (MAPPINGS.parent / "tests/data/partner_payloads/fine_feed.json").read_text()
    )
    partner.respond_with(200, [{**sample, "ait": f"A12345678{n}"} for n in range(3)])
    partner_doc = await create_partner(app, partner.url)
    action = await create_action(
        app, partner_doc["id"], name="fines", method="GET", path="/fines", mode="proxy"
    )
    schedule = {
        "name": "fines",
        "action_id": action["id"],
        "every": "*/10 * * * *",
        "target": {"entity_type": "other", "kind": "fine", "mapping": "fine-feed"},
        "dedupe": {"by": "ait", "keep": 5},
    }
    created = await post(app, "/api/v1/schedules", schedule)
    poller = runner(app)
    # The claim and the page's three fines (inserts: new entities) pass; its commit (the first
    # update) is applied and answered with a write concern error.
    async with faults.failing(FAULT["WriteConcernFailed"], ["update"], mode=mode(0, 1)):
        await quietly(poller.run_until_idle())
    await database_back(services)
    poller.clock = lambda: datetime.now(UTC) + timedelta(minutes=11)  # its next run
    await poller.run_until_idle()
    stored = await services.store.db["schedules"].find_one({})
    assert stored is not None
    assert sorted(stored["seen"]) == sorted(set(stored["seen"])) and len(stored["seen"]) == 3
    assert (await get(app, f"/api/v1/schedules/{created['id']}"))["state"]["remembered_ids"] == 3
    received = await relayed_get(app, "/api/v1/events?type=fine.received&limit=50")
    assert len(received["items"]) == 3


async def test_a_page_the_database_fails_between_its_batches_is_landed_again_once(
    aiohttp_client: Any,
    make_app: Callable[..., web.Application],
    faults: Injector,
    samsara: SamsaraDouble,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page over a batch's bound (1,200 Samsara GPS points, batches of 1,000) whose second
    batch the database fails: the run fails with the first batch's fixes stored and the
    cursor where it was; the next run lands the whole page again, the first batch's fixes
    duplicates (same vehicle and device time), each fix stored once, the cursor past it."""
    # The gateway's default database deadline (5 s), not the fault tests' 1 s (`app`: shorter
    # than a blocked command): this fault is an error answered at once, and on a loaded
    # machine the first batch's insert of 1,000 fixes outlasted 1 s (a NetworkTimeout before
    # any fault, nothing written).
    app = await ready(await aiohttp_client(make_app()))
    services = services_of(app)
    times = samsara_points(samsara, 400)
    await upload_mapping(app, SAMSARA_FIXES)
    target = {"type": "positions", "mapping": "samsara-vehicle-stats-positions"}
    schedule = await samsara_schedule(app, samsara, target=target)
    poller = runner(app)
    # The second batch's insert fails (no retry label: not written). The failpoint is armed as
    # that batch is appended, once the first batch's round has handed its fixes on to the
    # fold's inbox: counted from the page's start, which insert came third depended on
    # whether that inbox write went before the next round's insert (they may overlap).
    appender, appended = services.positions, services.positions.append
    batches = itertools.count(1)

    async def append(tenant: str, items: Sequence[Any], source: str) -> list[Any]:
        if next(batches) == 2:
            await services.store.positions.inserts.settled(10)
            data = {"failCommands": ["insert"], "appName": "rabbot-gateway"}
            data |= FAULT["HostUnreachable"].data
            await faults.admin.admin.command(
                "configureFailPoint", "failCommand", mode=mode(0, 1), data=data
            )
        return await appended(tenant, items, source)

    monkeypatch.setattr(appender, "append", append)
    await quietly(poller.run_until_idle())
    await faults.off(FAULT["HostUnreachable"])
    monkeypatch.undo()
    await database_back(services)
    (failed,) = await runs(app, schedule["id"])
    assert (failed["outcome"], failed["error"]["kind"]) == ("failed", "store"), failed
    assert (failed["items_read"], failed["written"], failed["cursor_after"]) == (1200, 1000, None)
    stored = [len(await track(app, plate)) for _, plate in SAMSARA_VEHICLES]
    assert sum(stored) == 1000, stored
    poller.clock = lambda: datetime.now(UTC) + timedelta(seconds=7)  # after the back-off
    assert await poller.run_until_idle() == {"ok": 1}
    landed = (await runs(app, schedule["id"]))[0]
    assert (landed["cursor_before"], landed["cursor_after"]) == (None, "c3"), landed
    assert (landed["written"], landed["rejected"]) == (1200, 0)  # 1,000 of them duplicates
    for _, plate in SAMSARA_VEHICLES:
        assert [fix["time"] for fix in await track(app, plate)] == times, plate


# -- a fleet rule's alert --------------------------------------------------------------------


async def test_a_geofence_exit_the_database_fails_to_start_is_alerted_once_it_is_back(
    app: Client, faults: Injector, smtp_server: SmtpFactory
) -> None:
    """The fold emits `vehicle.geofence.exited`; the hook that starts its flow run fails
    (the run's insert): the pass is done again and the alert is sent once."""
    services = services_of(app)
    smtp = await smtp_server()
    await email_channel(app, smtp.port)
    await post(
        app,
        "/api/v1/templates",
        {
            "name": "exit-email",
            "channel_type": "email",
            "default_locale": "en",
            "locales": {"en": {"subject": "{{ entity.plate }} left", "text": "Left"}},
        },
    )
    await post(
        app,
        "/api/v1/flows",
        {
            "name": "hello",
            "on": {"events": ["vehicle.geofence.exited"]},
            "steps": [
                {
                    "id": "say",
                    "notify": {
                        "channel": "email",
                        "template": "exit-email",
                        "recipients": [{"address": "ops@acme.com.br"}],
                    },
                }
            ],
        },
    )
    circle = {"lat": -23.55, "lon": -46.63, "radius_m": 200}
    await post(app, "/api/v1/geofences", {"name": "depot", "kind": "authorized", "circle": circle})
    await post(app, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    trigger = await create_position_trigger(app)
    start = datetime.fromisoformat("2026-12-01T12:00:00+00:00")
    fixes = [
        {"plate": "ABC1D23", "time": (start + timedelta(seconds=30 * i)).isoformat(),
         "lat": lat, "lon": -46.63}
        for i, lat in enumerate([-23.55, -23.5501, -23.56, -23.561])
    ]  # fmt: skip
    response = await app.post(f"/hooks/{trigger['id']}", json=fixes, headers=bearer(trigger))
    assert response.status == 200, await response.text()
    await services.relay.run_until_idle()
    fault = next(f for f in FAULTS if f.name == "ShutdownInProgress")
    async with faults.failing(fault, ["insert"], mode=mode(0)):
        await quietly(services.fold.run_until_idle())
    await database_back(services)
    a_moment_later(services)
    async with asyncio.timeout(30):
        while not smtp.received:
            await services.fold.run_until_idle()
            await drain(services)
    await drain(services)
    assert [m.message["Subject"] for m in smtp.received] == ["ABC1D23 left"]
    (run,) = (await get(app, "/api/v1/flows/hello/runs"))["items"]
    assert run["status"] == "succeeded"


async def test_a_run_handed_back_keeps_its_pause_when_a_failed_claim_is_released_first(
    app: Client, faults: Injector, smtp_server: SmtpFactory
) -> None:
    """A run the database failed waits for its hand-back (due after the pause); when a later
    claim fails and its release passes before that hand-back does, the release frees what the
    failed claim took, not the run still to be handed back: that one would be due again at
    once, its pause lost (a poison spinning), and its hand-back would then match nothing."""
    services = services_of(app)
    smtp = await smtp_server()
    await mail_flow(app, smtp.port)
    await post(app, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await services.relay.run_until_idle()
    runner, clock = services.flow_runner, FakeClock()
    runner.clock = clock
    runs = services.store.db["flow_runs"]
    # The expired leases, the claim (pass); the step's insert, the run's hand-back, its retry
    # before the next claim (fail).
    async with faults.failing(FAULT["WriteConflict"], ["insert", "update"], mode=mode(2, 3)):
        await quietly(runner.run_until_idle())
    (first,) = await runs.find({}).to_list(None)
    await post(app, "/api/v1/entities/vehicle", {"plate": "XYZ9A87"})
    await services.relay.run_until_idle()  # a second run, due
    # The expired leases (pass); the hand-back's retry, the claim of the second run (fail);
    # the failed claim's release (passes).
    async with faults.failing(FAULT["WriteConflict"], ["update"], mode=mode(1)):
        await quietly(runner.run_until_idle())
    await database_back(services)
    assert await runner.run_until_idle() == {"succeeded": 1}  # the second run only
    run = await runs.find_one({"_id": first["_id"]})
    assert run is not None and run["status"] == "pending"
    waits = (run["next_attempt_at"] - clock()).total_seconds()
    assert 0 < waits <= 1, waits
    a_moment_later(services)
    await drain(services)
    statuses = [r["status"] for r in (await get(app, "/api/v1/flows/hello/runs"))["items"]]
    assert statuses == ["succeeded", "succeeded"]
    assert len(smtp.received) == 2


# -- a disabled partner's probe ----------------------------------------------------------------


async def disabled_partner(app: Client, partner: Partner) -> tuple[DeliveryWorker, FakeClock]:
    """A partner that failed long enough to be disabled (one delivery waiting for it), now
    answering again, and its probe due on the worker's clock."""
    services = services_of(app)
    worker, clock = services.delivery_worker, FakeClock()
    worker.clock, worker.rng = clock, lambda: 0.5
    partner_doc = await create_partner(app, partner.url, disable_after_hours=0.001)
    action = await create_action(app, partner_doc["id"], retry_schedule=[5, 5, 5, 5, 5])
    await create_subscription(app, action["id"], ("entity.created",))
    await post(app, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await services.relay.run_until_idle()
    partner.respond_with(503, {})
    await worker.run_until_idle()
    clock.advance(5.1)
    await worker.run_until_idle()  # failing for longer than 0.001 h: disabled
    assert (await get(app, f"/api/v1/partners/{partner_doc['id']}"))["status"] == "disabled"
    partner.respond_with(200, {})
    clock.advance(services.settings.partner_probe_seconds + 1)
    return worker, clock


async def test_a_probe_claim_the_database_fails_is_handed_back_not_left_under_its_lease(
    app: Client, faults: Injector, partner: Partner
) -> None:
    """The probe of a disabled partner claims its oldest delivery; a claim the database
    failed after applying it (a write concern error) held that delivery under the probe's
    lease, which nobody would send, until the lease ran out. It is handed back at once."""
    services = services_of(app)
    worker, clock = await disabled_partner(app, partner)
    sent = len(partner.requests)
    # The probe's turn taken (a findAndModify of the partner: passes), the probe's claim of
    # the delivery (an update: applied, fails).
    async with faults.failing(FAULT["WriteConcernFailed"], ["update"], mode=mode(0, 1)):
        await quietly(worker.housekeeping(measure=False))
    delivery = await services.store.db["deliveries"].find_one({})
    assert delivery is not None
    assert (delivery["status"], delivery.get("lease_owner")) == ("pending", None)
    clock.advance(services.settings.partner_probe_seconds + 1)
    await worker.housekeeping(measure=False)  # the next probe sends it
    assert len(partner.requests) == sent + 1
    assert [d["status"] for d in (await get(app, "/api/v1/deliveries"))["items"]] == ["succeeded"]


async def test_a_failed_claims_release_never_frees_a_probe_in_flight(
    app: Client, partner: Partner
) -> None:
    """A failed claim's release frees what the worker's claims took and it does not hold; a
    probe's claim, applied but not answered yet (so not held yet), is none of them: freed, its
    delivery could be claimed and sent beside the probe."""
    services = services_of(app)
    worker, clock = await disabled_partner(app, partner)
    deliveries = services.store.deliveries
    (partner_doc,) = (await get(app, "/api/v1/partners"))["items"]
    token = f"{worker.owner}:probe:1"
    lease_until = clock() + timedelta(seconds=60)
    assert await deliveries.claim_for_partner(partner_doc["id"], token, clock(), lease_until)
    assert await deliveries.release_claims(worker.owner, [], clock()) == 0
    delivery = await services.store.db["deliveries"].find_one({})
    assert delivery is not None
    assert (delivery["status"], delivery["lease_owner"]) == ("in_flight", token)
