"""The Prometheus alert rules in docs/operations.md parse, and alert on metrics the gateway
exports (a renamed metric would silently never fire)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.web.state import services_key
from tests import promql
from tests.triggers_support import Client

ROOT = Path(__file__).resolve().parents[1]


def _rules() -> list[dict[str, Any]]:
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text[text.index("## Alerts") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    (group,) = yaml.safe_load(block[1])["groups"]
    return list(group["rules"])


async def test_every_alert_rule_reads_a_metric_the_gateway_exports(client: Client) -> None:
    text = await (await client.get("/metrics")).text()
    exported = set(re.findall(r"^# TYPE (\w+)", text, re.M))
    rules = _rules()
    assert {r["alert"] for r in rules} >= {"GatewayEventRelayBehind", "GatewayEventRelayLagHigh"}
    for rule in rules:
        names = re.findall(r"\bgateway_\w+", rule["expr"])
        assert names, rule["alert"]
        for name in names:
            assert re.sub(r"_(bucket|sum|count)$", "", name) in exported, (rule["alert"], name)


async def test_the_delivery_queue_gauge_is_there_only_where_the_delivery_job_runs(
    client: Client,
) -> None:
    """GatewayDeliveryJobAbsent reads the absence of the pending-queue sample: a process
    without the delivery job (this app runs no workers) exports none; the job's first
    housekeeping pass exports it."""
    pending = 'gateway_delivery_queue_depth{status="pending"}'
    rule = next(r for r in _rules() if r["alert"] == "GatewayDeliveryJobAbsent")
    assert rule["expr"] == f"absent({pending})"
    assert pending not in await (await client.get("/metrics")).text()
    await client.app[services_key].delivery_worker.housekeeping()
    assert f"{pending} 0.0" in await (await client.get("/metrics")).text()


def test_a_damaged_secret_and_the_gateways_own_overload_each_have_an_alert_rule() -> None:
    """Both need a person (a damaged secret: save it again, then replay; an overload: the
    capacity or the open-file limit), and docs/actions.md says to alert on any."""
    exprs = {r["alert"]: r["expr"] for r in _rules()}
    damaged = [a for a, e in exprs.items() if "gateway_damaged_secrets_total" in e]
    overloaded = [a for a, e in exprs.items() if 'result="overloaded"' in e]
    assert damaged == ["GatewayStoredSecretDamaged"] and "> 0" in exprs[damaged[0]]
    assert overloaded == ["GatewayOutboundOverloaded"]


def test_the_deployment_wide_delivery_gauges_are_never_summed_across_processes() -> None:
    """Every process that runs `delivery` reports the whole database's queue: the dashboard's
    `sum by (status)` showed K times the backlog with K such processes scraped. The
    dashboard and the alerts take the max."""
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    exprs += [rule["expr"] for rule in _rules()]
    wide = ("gateway_delivery_queue_depth", "gateway_delivery_oldest_due_age_seconds")
    read = [e for e in exprs if any(name in e for name in wide)]
    assert len(read) >= 3
    for expr in read:
        assert expr.startswith(("max(", "max by", "absent(")), expr


def test_every_metric_documented_alert_on_any_has_a_shipped_rule() -> None:
    """docs/operations.md's metrics table tells the operator to "alert on any" of some
    counters: each has a shipped rule (gateway_metric_series_unrecorded_total had none,
    though the series it counts can be the very ones the other rules read)."""
    text = (ROOT / "docs" / "operations.md").read_text()
    told = {
        m[1]
        for line in text.splitlines()
        if "alert on any" in line and (m := re.match(r"\| `(gateway_\w+)` \|", line))
    }
    assert "gateway_metric_series_unrecorded_total" in told
    exprs = " ".join(rule["expr"] for rule in _rules())
    assert sorted(name for name in told if name not in exprs) == []


def test_a_schedule_that_keeps_failing_has_an_alert_rule() -> None:
    """A schedule whose every run fails (expired credentials, a changed feed) backs off up to
    72 min and reads nothing: a person must look. The rule reads its failed runs and no
    run that read a page."""
    exprs = {r["alert"]: r["expr"] for r in _rules()}
    failing = [a for a, e in exprs.items() if 'gateway_schedule_runs_total{outcome="failed"}' in e]
    assert failing == ["GatewayScheduleFailing"]
    assert "unless" in exprs[failing[0]] and 'outcome=~"ok|more"' in exprs[failing[0]]


def test_the_failing_schedule_rule_holds_for_failures_alone_not_beside_a_page_read() -> None:
    """Evaluated (tests/promql.py) on scrapes 30 min apart over 3 h: schedule `a` failing
    every run holds the rule; `b`, failing as often but reading a page once, does not."""
    rule = next(r for r in _rules() if r["alert"] == "GatewayScheduleFailing")
    runs = "gateway_schedule_runs_total"

    def scrape(n: int) -> promql.Scrape:
        samples = {
            (runs, frozenset({("schedule", "a"), ("outcome", "failed")})): float(n),
            (runs, frozenset({("schedule", "b"), ("outcome", "failed")})): float(n),
            (runs, frozenset({("schedule", "b"), ("outcome", "ok")})): float(n >= 4),
        }
        return promql.Scrape(1800.0 * n, samples)

    scrapes = [scrape(n) for n in range(7)]
    assert {dict(k)["schedule"] for k in promql.evaluate(rule["expr"], scrapes)} == {"a"}
    assert promql.firing(rule, scrapes)[-1]
