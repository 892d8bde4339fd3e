"""The crash test for flows: a real `gateway worker` runs flow runs and is killed with SIGKILL
between steps (each run's first step recorded, its second waiting on a slow partner). Another
`gateway worker` takes the runs over once their leases expire and finishes them: every run
succeeds, no step that was recorded runs again (one HR lookup per run, one e-mail per run),
and only the step that was in flight at the kill is repeated (at least once, as documented).
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.flow_support import (
    add_template,
    email_channel,
    hr_lookup,
    sample,
    send_to,
    trigger_for,
)
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    partner,
    post,
    running_partner,
)
from tests.processes import start_worker
from tests.smtp_double import SmtpDouble, SmtpFactory, smtp_server

__all__ = ["partner", "smtp_server"]  # the fixtures

Client = TestClient[Any, Any]
RUNS = 6
LEASE_SECONDS = 3


@pytest.fixture
async def slow() -> AsyncIterator[Partner]:
    """A second partner: an audit service that answers only when the test lets it."""
    async with running_partner() as double:
        yield double


async def _worker(client: Client, mongodb_uri: str, data_dir: Path, name: str) -> Any:
    database = client.app[services_key].settings.database
    return await start_worker(
        data_dir, mongodb_uri, database, log=name, GATEWAY_DELIVERY_LEASE_SECONDS=str(LEASE_SECONDS)
    )


async def _setup(client: Client, hr: Partner, audit: Partner, smtp: SmtpDouble) -> dict[str, Any]:
    await hr_lookup(client, hr.url)
    hr.respond_with(200, sample("driver_lookup_response.json"))
    auditor = await create_partner(client, audit.url, name="Audit")
    await create_action(
        client, auditor["id"], name="audit", method="GET", path="/audit", mode="proxy"
    )
    await email_channel(client, smtp.port)
    await add_template(client, "fine-received")
    flow = {
        "name": "fine-audit",
        "on": {"events": ["fine.received"]},
        "steps": [
            {"id": "hr", "fetch": "hr-driver-lookup"},
            {"id": "audit", "fetch": "audit"},
            {
                "id": "email",
                "notify": {
                    "channel": "email",
                    "template": "fine-received",
                    "recipients": [{"driver": {"from": "steps.hr"}}],
                    "context": {
                        "fine": "entity",
                        "driver": "steps.hr",
                        "vehicle": "{plate: entity.plate}",
                    },
                },
            },
        ],
    }
    await post(client, "/api/v1/flows", flow)
    return await trigger_for(client, "fine-feed", kind="fine")


async def test_a_killed_worker_leaves_runs_that_resume_elsewhere_without_repeating_a_step(
    client: Client,
    partner: Partner,
    slow: Partner,
    smtp_server: SmtpFactory,
    mongodb_uri: str,
    tmp_path: Path,
) -> None:
    smtp = await smtp_server()
    fines = await _setup(client, partner, slow, smtp)
    slow.respond_with(200, {}, delay=60)  # the audit hangs until the test releases it
    for n in range(RUNS):
        fine = {**sample("fine_feed.json"), "ait": f"A00000000{n}"}
        fine["dataHora"] = f"2026-11-18T13:4{n}:00-03:00"
        await send_to(client, fines, fine)

    victim = await _worker(client, mongodb_uri, tmp_path, "victim")
    survivor = None
    try:
        await slow.wait_for(RUNS, timeout=40)  # every run is between its first two steps
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        runs = client.app[services_key].store.db["flow_runs"]
        at_kill = await runs.find({}, {"steps.id": 1, "status": 1}).to_list(None)
        assert [[s["id"] for s in r["steps"]] for r in at_kill] == [["hr"]] * RUNS
        assert {r["status"] for r in at_kill} == {"running"}  # leases the dead process held

        slow.respond_with(200, {})  # the audit answers again
        slow.release.set()
        survivor = await _worker(client, mongodb_uri, tmp_path, "survivor")
        async with smtp.arrived:
            await asyncio.wait_for(smtp.arrived.wait_for(lambda: len(smtp.received) >= RUNS), 60)
        # A graceful stop finishes the runs under way: each records its end.
        survivor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(survivor.wait(), 20) == 0
        finished = await runs.find().to_list(None)
    finally:
        for process in (victim, survivor):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 20)

    assert Counter(r["status"] for r in finished) == Counter(succeeded=RUNS)
    for run in finished:
        assert [s["id"] for s in run["steps"]] == ["hr", "audit", "email"]
        assert run["claims"] == 2  # the victim's, then the survivor's
    lookups = Counter(r.query["em"] for r in partner.requests)
    assert len(lookups) == RUNS and set(lookups.values()) == {1}  # recorded: never repeated
    assert len(slow.requests) == 2 * RUNS  # in flight at the kill: repeated
    assert len(smtp.received) == RUNS
    assert len({m.message["Message-ID"] for m in smtp.received}) == RUNS
    subjects = sorted(m.message["Subject"] for m in smtp.received)
    assert subjects == [f"Multa A00000000{n} - ABC1D23" for n in range(RUNS)]


async def test_a_worker_paused_past_its_lease_sends_no_fetch_of_a_run_taken_over(
    client: Client, partner: Partner, mongodb_uri: str, tmp_path: Path
) -> None:
    """Three runs whose one step fetches from a partner limited to a request every 2 s: a
    worker process claims them, fetches for one, and is paused (SIGSTOP) with the other two
    waiting for their rate tokens, past its lease. The test's runner takes them over and
    fetches. Continued, the paused worker must send neither fetch: its leases are another's
    (a fetch step checked no lease before its request until 2026-12-06, and each of the two
    went out twice)."""
    audit = await create_partner(
        client, partner.url, name="Audit", rate_limit={"per_second": 0.5, "burst": 1}
    )
    await create_action(
        client, audit["id"], name="audit", method="GET", path="/audit", mode="proxy"
    )
    flow = {
        "name": "audit",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
        "steps": [{"id": "audit", "fetch": "audit"}],
    }
    await post(client, "/api/v1/flows", flow)
    partner.respond_with(200, {"ok": True})
    for n in range(3):
        await post(client, "/api/v1/entities/vehicle", {"plate": f"RBT3F{n:02d}"})
    services = client.app[services_key]
    await services.relay.run_until_idle()
    runs = services.store.db["flow_runs"]
    assert await runs.count_documents({"status": "pending"}) == 3

    paused = await _worker(client, mongodb_uri, tmp_path, "paused")
    try:
        await partner.wait_for(1, timeout=40)
        while await runs.count_documents({"status": "succeeded"}) < 1:  # its first recorded
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # the other two wait for their tokens (2 s, 4 s)
        paused.send_signal(signal.SIGSTOP)
        await asyncio.sleep(LEASE_SECONDS + 1)  # its leases have expired
        assert await services.flow_runner.run_until_idle() == Counter(succeeded=2)
        paused.send_signal(signal.SIGCONT)
        await asyncio.sleep(3)  # its rate tokens are due at once; a few of its rounds
    finally:
        paused.send_signal(signal.SIGCONT)
        paused.send_signal(signal.SIGTERM)
        await asyncio.wait_for(paused.wait(), 30)

    assert len(partner.requests) == 3
    assert await runs.count_documents({"status": "succeeded"}) == 3
