"""Metrics telling what is true when scraped: a partner's circuit past its cooldown, schedules'
pages apart from triggers' batches, and the trigger gates' change stream when it is off; under
`serve --workers N`, metric files that a full disk cannot turn into a SIGBUS."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import values

from gateway import metrics as metrics_module
from gateway.actions.partners import MAX_TIMEOUT_SECONDS
from gateway.metrics import MULTIPROCESS_DIR, Metrics
from gateway.outbound.breaker import (
    BreakerState,
    CircuitBreaker,
    GuardSettings,
    PartnerGuards,
    Permit,
)
from gateway.web.state import services_key
from tests.feed_doubles import GeotabDouble, geotab
from tests.partner_double import Partner, create_action, create_partner, partner
from tests.schedule_support import geotab_schedule, runner
from tests.support import auth
from tests.triggers_support import VEHICLE, bearer, create_trigger

__all__ = ["geotab", "partner"]  # fixtures
Client = TestClient[Any, Any]


def _circuit(text: str, partner_id: str) -> dict[str, float]:
    prefix = f'gateway_partner_circuit_state{{partner="{partner_id}",state="'
    return {
        line[len(prefix) :].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


async def test_an_open_circuit_past_its_cooldown_is_scraped_half_open_without_any_call(
    client: Client, partner: Partner
) -> None:
    """The gauge was set on transitions only, and an open breaker turns half_open only when
    read: with no call to the partner, it said `open` for good."""
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"], mode="proxy")
    partner.respond_with(500, {"error": "down"})
    for _ in range(5):
        invoked = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
        )
        assert invoked.status == 502, await invoked.text()
    scraped = await (await client.get("/metrics")).text()
    assert _circuit(scraped, partner_doc["id"]) == {"closed": 0, "open": 1, "half_open": 0}

    client.app[services_key].guards.clock = lambda: time.monotonic() + 31  # the cooldown, 30 s
    scraped = await (await client.get("/metrics")).text()
    assert _circuit(scraped, partner_doc["id"]) == {"closed": 0, "open": 0, "half_open": 1}
    assert len(partner.requests) == 5  # no call made it so


async def test_a_partner_edited_while_its_circuit_is_open_is_reported_closed(
    client: Client, partner: Partner
) -> None:
    """New guard settings (a longer timeout for a partner that timed out) build a new,
    closed breaker: the gauge kept saying `open` for good, calls succeeding meanwhile."""
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"], mode="proxy")
    invoke = f"/api/v1/actions/{action['id']}/invoke"
    partner.respond_with(500, {"error": "down"})
    for _ in range(5):
        invoked = await client.post(invoke, json={"payload": {}}, headers=auth())
        assert invoked.status == 502, await invoked.text()
    edit = {"max_concurrency": 3}
    edited = await client.patch(f"/api/v1/partners/{partner_doc['id']}", json=edit, headers=auth())
    assert edited.status == 200, await edited.text()
    partner.respond_with(200, {"ok": True})
    invoked = await client.post(invoke, json={"payload": {}}, headers=auth())

    assert invoked.status == 200, await invoked.text()
    scraped = await (await client.get("/metrics")).text()
    assert _circuit(scraped, partner_doc["id"]) == {"closed": 1, "open": 0, "half_open": 0}


async def test_a_deleted_partner_leaves_no_circuit_series_and_no_guard(
    client: Client, partner: Partner
) -> None:
    """Its breaker open when it was deleted, the gauge said `open` (then `half_open`, read
    at the end of the cooldown) for the life of the process, and the guard stayed."""
    guards = client.app[services_key].guards
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"], mode="proxy")
    partner.respond_with(503, {})
    for _ in range(5):
        invoked = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
        )
        assert invoked.status == 502, await invoked.text()
    scraped = await (await client.get("/metrics")).text()
    assert _circuit(scraped, partner_doc["id"]) == {"closed": 0, "open": 1, "half_open": 0}

    deleted = await client.delete(f"/api/v1/actions/{action['id']}", headers=auth())
    assert deleted.status == 204
    deleted = await client.delete(f"/api/v1/partners/{partner_doc['id']}", headers=auth())
    assert deleted.status == 204

    scraped = await (await client.get("/metrics")).text()
    assert _circuit(scraped, partner_doc["id"]) == {}
    guards.clock = lambda: time.monotonic() + 31  # past the cooldown: nothing turns half_open
    scraped = await (await client.get("/metrics")).text()
    assert _circuit(scraped, partner_doc["id"]) == {}
    assert partner_doc["id"] not in guards.states()
    assert partner_doc["id"] not in guards._due  # no read of its breaker left pending


async def test_deleted_triggers_partners_and_schedules_leave_no_series(
    client: Client, partner: Partner, geotab: GeotabDouble
) -> None:
    """A trigger created, called once and deleted left its 19 series for the life of the
    process (a partner's calls and latency, a schedule's runs and pages the same): a tenant's
    admin grew /metrics without bound, ~6,000 series a second at the admin rate limit."""
    geotab.add_records(1)
    schedule = await geotab_schedule(client, geotab)
    assert await runner(client).run_until_idle() == {"ok": 1}
    for i in range(3):
        trigger = await create_trigger(client, name=f"churn-{i}")
        sent = await client.post(f"/hooks/{trigger['id']}", json=VEHICLE, headers=bearer(trigger))
        assert sent.status in (200, 201), await sent.text()
        deleted = await client.delete(f"/api/v1/triggers/{trigger['id']}", headers=auth())
        assert deleted.status == 204
    partner_doc = await create_partner(client, partner.url)
    action = await create_action(client, partner_doc["id"], mode="proxy")
    invoked = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    assert invoked.status == 200, await invoked.text()
    text = await (await client.get("/metrics")).text()
    assert f'partner="{partner_doc["id"]}"' in text and f'schedule="{schedule["id"]}"' in text

    for path in (f"actions/{action['id']}", f"partners/{partner_doc['id']}"):
        assert (await client.delete(f"/api/v1/{path}", headers=auth())).status == 204
    deleted = await client.delete(f"/api/v1/schedules/{schedule['id']}", headers=auth())
    assert deleted.status == 204, await deleted.text()
    text = await (await client.get("/metrics")).text()
    assert 'trigger="trg_' not in text
    assert f'partner="{partner_doc["id"]}"' not in text
    assert f'schedule="{schedule["id"]}"' not in text


def _let_through(breaker: CircuitBreaker) -> Permit:
    permit = breaker.allow()
    assert permit is not None
    return permit


async def test_an_open_breaker_is_reported_half_open_at_the_end_of_its_cooldown_unread() -> None:
    """Each process of `serve --workers N` writes its own gauges, and a scrape reads one
    process: the others' breakers must report their turn to half_open by themselves."""
    reported: list[tuple[str, BreakerState]] = []
    guards = PartnerGuards(on_breaker_change=lambda pid, state: reported.append((pid, state)))
    breaker = guards.get("p1", GuardSettings(breaker_threshold=2, breaker_cooldown=0.2)).breaker
    for _ in range(2):
        breaker.record_failure(_let_through(breaker))
    assert reported == [("p1", BreakerState.OPEN)]
    deadline = time.monotonic() + 5
    while len(reported) < 2:
        assert time.monotonic() < deadline, reported
        await asyncio.sleep(0.02)
    assert reported == [("p1", BreakerState.OPEN), ("p1", BreakerState.HALF_OPEN)]


def test_a_send_still_under_way_on_a_replaced_guard_reports_nothing() -> None:
    """The partner edited (a new guard, closed) while a send on the old one is under way: its
    failure tripped the old breaker, which reported `open` over the new one's `closed`."""
    reported: list[tuple[str, BreakerState]] = []
    guards = PartnerGuards(on_breaker_change=lambda pid, state: reported.append((pid, state)))
    old = guards.get("p", GuardSettings(max_concurrency=10))
    for _ in range(4):
        old.breaker.record_failure(_let_through(old.breaker))
    fifth = _let_through(old.breaker)
    guards.get("p", GuardSettings(max_concurrency=20))  # an admin edits the partner
    old.breaker.record_failure(fifth)  # the fifth failure, of a send made before the edit

    assert reported == [("p", BreakerState.CLOSED)]
    assert guards.states() == {"p": BreakerState.CLOSED}


async def test_a_schedules_pages_are_counted_by_schedule_not_as_a_triggers_batches(
    client: Client, geotab: GeotabDouble
) -> None:
    trigger = await create_trigger(client)
    batch = [{**VEHICLE, "plate": "QWE1R23"}]
    sent = await client.post(f"/hooks/{trigger['id']}", json=batch, headers=bearer(trigger))
    assert sent.status == 200, await sent.text()
    geotab.add_records(3)
    schedule = await geotab_schedule(client, geotab, limit=2)
    assert await runner(client).run_until_idle() == {"ok": 1}

    text = await (await client.get("/metrics")).text()
    batches = {
        line.split('trigger="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("gateway_trigger_batch_items_count{")
    }
    assert batches == {trigger["id"]}
    pages = f'gateway_schedule_page_items_count{{schedule="{schedule["id"]}"}}'
    assert f"{pages} 3.0" in text  # pages of 2, 1 and 0: a page with nothing is a page read
    assert f'gateway_schedule_page_items_sum{{schedule="{schedule["id"]}"}} 3.0' in text


async def test_the_change_stream_gauge_is_0_from_the_start_when_change_streams_are_off(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app(change_streams=False))
    text = await (await client.get("/metrics")).text()
    assert 'gateway_change_stream_up{collection="triggers"} 0.0' in text


@pytest.fixture
def metric_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process as one of `serve --workers N`: its metrics in files, in the directory
    returned, as prometheus_client chooses at its import in a process started with the
    variable set (its classes, which the first Metrics replaces, restored after)."""
    path = tmp_path / "metrics"
    path.mkdir()
    monkeypatch.setenv(MULTIPROCESS_DIR, str(path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())  # type: ignore[no-untyped-call]
    monkeypatch.setattr(values, "MmapedDict", values.MmapedDict)  # type: ignore[attr-defined]
    monkeypatch.setattr(metrics_module, "_unrecorded", metrics_module._Unrecorded())
    return path


def _no_room(
    monkeypatch: pytest.MonkeyPatch,
    refused: Callable[[int, int, int], bool],
    code: int = errno.ENOSPC,
) -> None:
    """The file system has no room for an allocation `refused(fd, offset, length)` says (or
    fails it with `code`)."""
    allocate = os.posix_fallocate

    def fallocate(fd: int, offset: int, length: int) -> None:
        if refused(fd, offset, length):
            raise OSError(code, os.strerror(code))
        allocate(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)


async def test_metric_files_under_workers_hold_every_block_so_a_full_disk_is_no_sigbus(
    aiohttp_client: Any, make_app: Callable[..., web.Application], metric_files: Path
) -> None:
    """prometheus_client grew its files with `truncate` (holes) and wrote through a mapping:
    on a full disk the first write to a new page was a SIGBUS, and the process died."""
    client = await aiohttp_client(make_app())
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/no/such/route")).status == 404
    scraped = await (await client.get("/metrics")).text()
    assert 'route="/healthz",status_class="2xx"} 1.0' in scraped  # the files are in use
    files = list(metric_files.glob("*.db"))
    assert len(files) >= 5  # counter, histogram and the gauges' kinds
    for file in files:
        stat = file.stat()
        assert stat.st_size > 0
        assert stat.st_blocks * 512 >= stat.st_size, (file.name, stat.st_size, stat.st_blocks)


async def test_a_metric_file_without_room_loses_its_series_not_the_requests(
    aiohttp_client: Any,
    make_app: Callable[..., web.Application],
    metric_files: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A disk too full for the histograms' file: the process starts and answers, those series
    are kept in memory (missing from the scrape), counted, and said once, with where and how
    much room is left."""
    _no_room(monkeypatch, lambda fd, *_: "histogram_" in os.readlink(f"/proc/self/fd/{fd}"))
    caplog.set_level(logging.ERROR, logger="gateway.metrics")
    client = await aiohttp_client(make_app())
    for path, status in [("/healthz", 200), ("/no/such/route", 404), ("/readyz", 200)] * 3:
        assert (await client.get(path)).status == status

    scraped = await (await client.get("/metrics")).text()
    assert 'route="/healthz",status_class="2xx"} 3.0' in scraped  # counters have their file
    assert "gateway_http_request_duration_seconds" not in scraped  # histograms had no room
    unrecorded = [
        float(line.rsplit(" ", 1)[1])
        for line in scraped.splitlines()
        if line.startswith("gateway_metric_series_unrecorded_total ")
    ]
    assert unrecorded and unrecorded[0] >= 3  # the histograms of this app's start and routes
    assert not list(metric_files.glob("histogram_*"))  # no empty file for scrapes to choke on
    said = [r.getMessage() for r in caplog.records if r.name == "gateway.metrics"]
    assert len(said) == 1, said
    assert str(metric_files) in said[0]
    assert "No space left on device" in said[0]
    assert "bytes free" in said[0]


def test_a_metric_file_that_cannot_grow_keeps_its_series_and_grows_once_there_is_room(
    metric_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file's growth refused (its first 64 KiB allocated, no more): the series past it are
    kept in memory, those in it still count, and the file grows again once there is room."""
    room = False
    _no_room(monkeypatch, lambda fd, offset, length: not room and offset + length > 1 << 16)
    metrics = Metrics("test", "asyncio")
    routes = [f"/route/{n}" for n in range(600)]  # far more than 64 KiB of keys
    for route in routes:
        metrics.child(metrics.http_requests, route, "GET", "2xx").inc()
    for route in routes:  # the stored ones count on, the others in memory
        metrics.child(metrics.http_requests, route, "GET", "2xx").inc()
    scraped = metrics.render().decode()
    stored = [line for line in scraped.splitlines() if '{method="GET",route="/route/' in line]
    assert 0 < len(stored) < len(routes)
    assert all(line.endswith(" 2.0") for line in stored)
    unrecorded = float(len(routes) - len(stored))
    assert f"gateway_metric_series_unrecorded_total {unrecorded}" in scraped

    room = True
    metrics.child(metrics.http_requests, "/after", "GET", "2xx").inc()
    scraped = metrics.render().decode()
    assert 'gateway_http_requests_total{method="GET",route="/after",status_class="2xx"} 1.0' in (
        scraped
    )
    assert f"gateway_metric_series_unrecorded_total {unrecorded}" in scraped


async def test_a_start_on_a_full_disk_scrapes_the_count_of_unrecorded_series(
    aiohttp_client: Any,
    make_app: Callable[..., web.Application],
    metric_files: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process started on a full disk: no metric file can be made, the unrecorded series'
    counter's own included, so it was missing from the scrape (an alert on it never fired)."""
    _no_room(monkeypatch, lambda *_: True)
    client = await aiohttp_client(make_app())
    for _ in range(3):
        assert (await client.get("/healthz")).status == 200
    before = metrics_module._unrecorded.count
    assert before > 3
    scraped = await (await client.get("/metrics")).text()
    (line,) = [s for s in scraped.splitlines() if s.startswith("gateway_metric_series_unrecorded_")]
    assert float(line.split()[1]) >= before  # and the scrape's own
    assert not list(metric_files.glob("*.db"))


async def test_a_metric_file_failing_after_the_start_never_fails_a_partners_request(
    aiohttp_client: Any,
    make_app: Callable[..., web.Application],
    metric_files: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the process serves, a metric file's growth failing with anything but a full disk
    (here EIO) raised into whatever made the series: a partner's call to /hooks answered
    500. The series is kept in memory and counted instead."""
    client = await aiohttp_client(make_app())
    metrics = client.app[services_key].metrics
    _no_room(monkeypatch, lambda fd, offset, length: offset + length > 1 << 16, errno.EIO)
    filler = 0
    while not metrics_module._unrecorded.count:  # the files' first 64 KiB filled up
        filler += 1
        metrics.child(metrics.http_latency, f"/filler/{filler}", "GET").observe(0.1)
        metrics.child(metrics.http_requests, f"/filler/{filler}", "GET", "2xx").inc()
    before = metrics_module._unrecorded.count
    r = await client.post("/hooks/no-such-trigger", json={})
    assert r.status == 401, await r.text()
    assert metrics_module._unrecorded.count >= before + 2  # the request's count and latency


_NO_NATIVE_FALLOCATE = """
import ctypes, errno, os, platform, struct, sys, tempfile
# seccomp: the fallocate system call answers EOPNOTSUPP, as on NFSv3, ZFS before 2.2, FUSE.
number = {"x86_64": 285, "aarch64": 47}[platform.machine()]
program = b"".join(
    struct.pack("HBBI", *op)
    for op in [
        (0x20, 0, 0, 0),  # load the system call's number
        (0x15, 0, 1, number),  # fallocate?
        (0x06, 0, 0, 0x00050000 | errno.EOPNOTSUPP),  # answer EOPNOTSUPP
        (0x06, 0, 0, 0x7FFF0000),  # allow
    ]
)
buffer = ctypes.create_string_buffer(program)
class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
fprog = Program(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0, ctypes.get_errno()  # a filter
with tempfile.TemporaryFile() as f:
    refused = libc.syscall(number, f.fileno(), 0, ctypes.c_long(0), ctypes.c_long(4096))
    assert refused == -1 and ctypes.get_errno() == errno.EOPNOTSUPP
from gateway.metrics import Metrics
metrics = Metrics("test", "asyncio")
for n in range(600):  # far more than 64 KiB of keys: the counters' file grows
    metrics.child(metrics.http_requests, f"/route/{n}", "GET", "2xx").inc()
sys.stdout.write(metrics.render().decode())
"""


def test_metric_files_grow_on_a_file_system_without_native_fallocate(tmp_path: Path) -> None:
    """glibc allocates by writing where the file system cannot (NFSv3, ZFS before 2.2, FUSE),
    and refuses that on a descriptor opened to append, prometheus_client's: a file's first
    growth past 64 KiB raised EBADF into the request or job making a series (partners' calls
    to /hooks answered 500). Run in a process whose fallocate system call is refused so."""
    files = tmp_path / "metrics"
    files.mkdir()
    env = {**os.environ, MULTIPROCESS_DIR: str(files), "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, "-c", _NO_NATIVE_FALLOCATE], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert 'route="/route/599",status_class="2xx"} 1.0' in done.stdout
    assert "gateway_metric_series_unrecorded_total 0.0" in done.stdout
    (counters,) = files.glob("counter_*.db")
    stat = counters.stat()
    assert stat.st_size > 1 << 16
    assert stat.st_blocks * 512 >= stat.st_size  # allocated all the same


def _top_bucket(metrics: Metrics, name: str) -> float:
    return max(
        float(sample.labels["le"])
        for family in metrics.registry.collect()
        if family.name == name
        for sample in family.samples
        if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf"
    )


def test_latency_histograms_reach_the_longest_duration_of_what_they_measure() -> None:
    """Every latency histogram stopped at 10 s: a call at the default 10 s partner timeout, a
    60 s one and a 10-minute schedule run were all +Inf, and histogram_quantile said 10 s."""
    metrics = Metrics("t", "asyncio")
    metrics.partner_latency.labels("p1", "deliver").observe(0.1)
    metrics.schedule_run_duration.labels("s1").observe(0.1)
    metrics.http_latency.labels("/x", "GET").observe(0.1)
    metrics.trigger_latency.labels("trg_1").observe(0.1)
    longest_call = MAX_TIMEOUT_SECONDS
    assert _top_bucket(metrics, "gateway_partner_request_duration_seconds") > longest_call
    assert _top_bucket(metrics, "gateway_http_request_duration_seconds") > longest_call
    assert _top_bucket(metrics, "gateway_trigger_request_duration_seconds") > longest_call
    # A run of 100 pages (`max_pages`' most) at a few seconds a page.
    assert _top_bucket(metrics, "gateway_schedule_run_duration_seconds") >= 100 * 10.0
