"""The Prometheus alert rules in docs/operations.md parse, and alert on metrics the gateway
exports (a renamed metric would silently never fire)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

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
