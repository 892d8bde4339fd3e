"""A database outage under a real `gateway serve` and `serve --workers 2` (its embedded database
SIGSTOPped: every write 503, /readyz 503), its /metrics scraped every 2 s and the shipped
alert rules (docs/operations.md "Alerts") evaluated on the scrapes (`tests/promql.py`): the
outage must set off a paging rule, the shard gauges must drop once the leases ran out (the
`...Unowned` pages read them), and the gauges measured by reading the database must not go
on saying their last, healthy-looking values (docs/operations.md "A paused database")."""

from __future__ import annotations

import math
import os
import signal
import time
import urllib.request
from typing import Any

import pytest

from tests import promql
from tests.processes import Gateway, wait_until

OUTAGE = 30  # seconds; the shard leases are 10 s
pytestmark = pytest.mark.timeout(300)
RELAY, FOLD = "gateway_event_relay_shards", "gateway_fleet_fold_shards"
MEASURED = (
    ("gateway_event_relay_oldest_waiting_seconds", {}),
    ("gateway_fleet_fold_oldest_waiting_seconds", {}),
    ("gateway_delivery_oldest_due_age_seconds", {}),
    ("gateway_delivery_queue_depth", {"status": "pending"}),
    ("gateway_delivery_queue_depth", {"status": "in_flight"}),
)


def _scrape(gateway: Gateway) -> promql.Scrape:
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as answer:
        return promql.parse_scrape(time.time(), answer.read().decode())


def _settled(gateway: Gateway) -> bool:
    """Every shard held, the delivery queue measured, the database up, every change stream
    followed (a loaded machine starts them seconds after the shards are shared out: read
    before, a healthy gateway looked like `GatewayChangeStreamDown` pending)."""
    samples = _scrape(gateway).samples
    queue = ("gateway_delivery_queue_depth", frozenset({("status", "pending")}))
    streams = [v for (name, _), v in samples.items() if name == "gateway_change_stream_up"]
    return (
        samples.get((RELAY, frozenset())) == 16 == samples.get((FOLD, frozenset()))
        and samples.get(("gateway_database_up", frozenset())) == 1
        and queue in samples
        and bool(streams)
        and min(streams) == 1
    )


def _measured(scrape: promql.Scrape) -> bool:
    return not any(math.isnan(scrape.value(name, **labels)) for name, labels in MEASURED)


@pytest.fixture(scope="module", params=[(), ("--workers", "2")], ids=["serve", "workers-2"])
def outage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    gateway = Gateway(tmp_path_factory.mktemp("outage"), *request.param).start(120)
    try:
        trigger = gateway.create(
            "/api/v1/triggers", {"name": "cars", "entity_type": "vehicle", "methods": ["POST"]}
        )
        hook, head = f"/hooks/{trigger['id']}", {"Authorization": f"Bearer {trigger['token']}"}
        assert gateway.request("POST", hook, {"plate": "ABC1D23"}, headers=head)[0] == 201
        wait_until(lambda: _settled(gateway), 60, "the shards shared out", every=1)
        healthy = [_scrape(gateway) for _ in range(3)]
        database, frozen_at = gateway.db_pid, time.monotonic()
        os.kill(database, signal.SIGSTOP)
        scrapes, statuses = [], []
        try:
            while time.monotonic() < frozen_at + OUTAGE:
                answer = gateway.request("POST", hook, {"plate": "XYZ9K88"}, headers=head)
                statuses.append(answer[0])
                scrapes.append((time.monotonic() - frozen_at, _scrape(gateway)))
                time.sleep(2)
        finally:
            os.kill(database, signal.SIGCONT)
        wait_until(lambda: _settled(gateway), 90, "the gateway back", every=1)
        wait_until(lambda: _measured(_scrape(gateway)), 30, "the gauges measured", every=1)
        after = _scrape(gateway)
        return {"healthy": healthy, "outage": scrapes, "statuses": statuses, "after": after}
    finally:
        gateway.stop()


def _rule(name: str) -> dict[str, Any]:
    return next(rule for rule in promql.shipped_rules() if rule["alert"] == name)


def test_a_database_outage_pages_after_a_minute_and_not_on_a_blip(outage: dict[str, Any]) -> None:
    healthy, late = outage["healthy"], [s for t, s in outage["outage"] if t > 10]
    assert 503 in outage["statuses"]  # it is an outage
    for rule in promql.shipped_rules():  # the evaluator reads the healthy gateway as quiet
        assert not any(promql.pending(rule, healthy)), rule["alert"]
    down = _rule("GatewayDatabaseDown")
    assert down["labels"]["severity"] == "page" and down["for"] == "1m"
    assert all(promql.pending(down, late)), [s.value("gateway_database_up") for s in late]
    # Pending through the outage: it fires at a minute; the 30 s seen here page nobody yet.
    assert not any(promql.firing(down, healthy + [s for _, s in outage["outage"]]))
    a_minute_on = promql.Scrape(late[0].t + 61, late[-1].samples)
    assert promql.firing(down, [*late, a_minute_on])[-1]


def test_the_shard_gauges_drop_to_none_held_once_the_leases_ran_out(
    outage: dict[str, Any],
) -> None:
    late = [(round(t), s) for t, s in outage["outage"] if t > 15]  # past the 10 s leases
    assert late
    held = [(t, s.value(RELAY), s.value(FOLD)) for t, s in late]
    assert all(relay == 0 == fold for _, relay, fold in held), held
    scrapes = [s for _, s in late]
    for name in ("GatewayEventRelayUnowned", "GatewayFleetFoldUnowned"):
        assert all(promql.pending(_rule(name), scrapes)), name
    assert outage["after"].value(RELAY) == 16 == outage["after"].value(FOLD)


def test_the_gauges_read_from_the_database_are_unknown_while_it_is_down(
    outage: dict[str, Any],
) -> None:
    """NaN (a gap in a graph, no comparison holds), not the last values (0: nothing waits)."""
    late = [s for t, s in outage["outage"] if t > 15]
    for name, labels in MEASURED:
        values = [s.value(name, **labels) for s in late]
        assert all(math.isnan(v) for v in values), (name, labels, values)
    assert _measured(outage["after"])  # measured again once it is back
