"""A partner's recovery cut short in a real `gateway serve` (SPEC §5: "its backlog replayed
when it recovers"; docs/actions.md, "Partner protection"): the process is killed (SIGKILL),
or the database fails, as the recovery makes the partner's backlog due. Whatever recovers it
next (its next probe, the admin's retried PATCH) finishes the recovery: the backlog, whose
retry times were an hour away, is delivered within seconds, not an hour later.

The fault is injected by `tests/fault_hook/sitecustomize.py` as the process enters
`DeliveryStore.recovered`, once (a marker file keeps the restarted process from it)."""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.processes import Gateway, wait_until
from tests.support import auth

FAULT_HOOK = Path(__file__).parent / "fault_hook"
RECOVERED = "gateway.store.deliveries.DeliveryStore.recovered"
DISABLE_AFTER_HOURS = 0.0001  # 0.36 s of failures
LEASE_SECONDS = 15
HOUR_AWAY = timedelta(minutes=45)  # the backlog's retry times (0, 1 h, 1 h; ±20% jitter)


class _Partner(http.server.ThreadingHTTPServer):
    """Answers every request with `status`; the webhook-ids it answered 2xx."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = 500
        self.accepted: set[str] = set()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Partner

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = self.server.status
        if status < 300 and self.headers.get("webhook-id"):
            with self.server.lock:
                self.server.accepted.add(self.headers["webhook-id"])
        with contextlib.suppress(OSError):  # the gateway was killed as it waited
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(b"{}")

    do_POST = do_HEAD = _answer

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _partner() -> Iterator[_Partner]:
    server = _Partner()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _gateway(data_dir: Path, fault: str, probe_seconds: int) -> Gateway:
    return Gateway(
        data_dir,
        GATEWAY_PARTNER_PROBE_SECONDS=str(probe_seconds),
        # The delivery a killed probe sent stays in flight past the restart: the next probe
        # sends another, and recovers the partner while that one is still in flight.
        GATEWAY_DELIVERY_LEASE_SECONDS=str(LEASE_SECONDS),
        GATEWAY_TEST_FAULT_AT=RECOVERED,
        GATEWAY_TEST_FAULT=fault,
        GATEWAY_TEST_FAULT_MARKER=str(data_dir / "fault.fired"),
        PYTHONPATH=os.pathsep.join(
            [str(FAULT_HOOK), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    )


def _deliveries(gateway: Gateway) -> list[dict[str, Any]]:
    status, page = gateway.get("/api/v1/deliveries?limit=50", headers=auth())
    assert status == 200, page
    return list(page["items"])


def _partner_doc(gateway: Gateway, partner_id: str) -> dict[str, Any]:
    status, doc = gateway.get(f"/api/v1/partners/{partner_id}", headers=auth())
    assert status == 200, doc
    return dict(doc)


def _when(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _disabled_with_a_backlog(gateway: Gateway, partner: _Partner) -> str:
    """Three vehicles' deliveries fail (500) and wait for their retry an hour away; the
    third failure, past `disable_after_hours`, disables the partner."""
    erp = gateway.create(
        "/api/v1/partners",
        {"name": "ERP", "base_url": partner.url, "auth": {"type": "none"}}
        | {"timeout_seconds": 2, "disable_after_hours": DISABLE_AFTER_HOURS},
    )
    action = gateway.create(
        "/api/v1/actions",
        {"name": "push", "partner_id": erp["id"], "method": "POST", "path": "/hooks"}
        | {"mode": "deliver", "retry_schedule": [3600, 3600]},
    )
    gateway.create(
        "/api/v1/subscriptions", {"action_id": action["id"], "event_types": ["entity.created"]}
    )

    def failed_once(count: int) -> bool:
        found = _deliveries(gateway)
        return len(found) == count and all(d["attempt_count"] == 1 for d in found)

    for plate in ("RBT4A01", "RBT4A02"):
        gateway.create("/api/v1/entities/vehicle", {"plate": plate})
    wait_until(lambda: failed_once(2), 30, "the first deliveries to fail", every=0.2)
    since = _when(_partner_doc(gateway, erp["id"])["failing_since"])
    past = since + timedelta(hours=DISABLE_AFTER_HOURS, seconds=0.2)
    wait_until(lambda: datetime.now(UTC) > past, 10, "the partner to fail long enough")
    gateway.create("/api/v1/entities/vehicle", {"plate": "RBT4A03"})
    wait_until(lambda: failed_once(3), 30, "the third delivery to fail", every=0.2)
    wait_until(
        lambda: _partner_doc(gateway, erp["id"])["status"] == "disabled",
        30,
        "the disable",
        every=0.2,  # each look is a request to the gateway and reads of its database
    )
    later = datetime.now(UTC) + HOUR_AWAY
    backlog = [(d["status"], d.get("next_attempt_at")) for d in _deliveries(gateway)]
    assert all(status == "pending" and _when(at) > later for status, at in backlog), backlog
    return str(erp["id"])


def _delivered(gateway: Gateway, partner: _Partner, partner_id: str) -> None:
    """The partner active, and every delivery succeeded within seconds (its retry time was
    an hour away): the recovery was finished, not left to the schedule."""

    def all_succeeded() -> bool:
        return {d["status"] for d in _deliveries(gateway)} == {"succeeded"}

    try:
        wait_until(all_succeeded, LEASE_SECONDS + 30, "the backlog to be delivered", every=0.2)
    except AssertionError as exc:
        left = [(d["status"], d.get("next_attempt_at")) for d in _deliveries(gateway)]
        raise AssertionError(f"{exc}: {left}") from None
    assert _partner_doc(gateway, partner_id)["status"] == "active"
    found = _deliveries(gateway)
    assert len(found) == 3
    with partner.lock:  # each answered 2xx by the partner (the webhook-id is the delivery's)
        assert {d["id"] for d in found} <= partner.accepted


def _restarted_if_killed(gateway: Gateway, fault: str, data_dir: Path) -> None:
    assert gateway.proc is not None
    wait_until(lambda: (data_dir / "fault.fired").exists(), 30, "the fault to fire")
    if fault == "kill":
        gateway.proc.wait(30)
        gateway.start()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", ["kill", "unavailable"])
def test_a_probe_recovery_cut_short_is_finished_by_the_next_probe(
    tmp_path: Path, fault: str
) -> None:
    with _partner() as partner:
        gateway = _gateway(tmp_path, fault, probe_seconds=1).start()
        try:
            partner_id = _disabled_with_a_backlog(gateway, partner)
            partner.status = 200  # the next probe is answered: the recovery starts
            _restarted_if_killed(gateway, fault, tmp_path)
            _delivered(gateway, partner, partner_id)
        finally:
            gateway.stop()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", ["kill", "unavailable"])
def test_an_admin_reenable_cut_short_is_finished_by_its_retry(tmp_path: Path, fault: str) -> None:
    with _partner() as partner:
        gateway = _gateway(tmp_path, fault, probe_seconds=3600).start()  # no probe meanwhile
        try:
            partner_id = _disabled_with_a_backlog(gateway, partner)
            partner.status = 200
            where = f"/api/v1/partners/{partner_id}"
            status, _, body = gateway.request("PATCH", where, {"status": "active"}, auth())
            if fault == "kill":
                assert status == 0, body  # no answer: the process died
            else:
                assert status == 503 and body["outcome"] == "unknown", body
            _restarted_if_killed(gateway, fault, tmp_path)
            status, _, body = gateway.request("PATCH", where, {"status": "active"}, auth())
            assert status == 200 and body["status"] == "active", body
            _delivered(gateway, partner, partner_id)
        finally:
            gateway.stop()
