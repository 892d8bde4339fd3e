"""Pausing a flow (docs/flows.md, "Pausing a flow"): an operator stops a flow from acting
(its partner answers nonsense, its template is wrong) without deleting it. Paused, its events
still start runs, stored as ever; no step runs: each run is `held` at its next step. Resumed,
the held runs go on from there, in their events' order — or, asked, are `skipped`. Through
the admin API and the admin UI, with the fine scenario's real partners (HR double, SMTP)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.services import Services
from gateway.web.state import services_key
from tests.flow_support import (
    ANA,
    add_template,
    drain,
    email_channel,
    get,
    hr_lookup,
    sample,
    send_to,
    trigger_for,
    upload_flow,
)
from tests.partner_double import FakeClock, Partner, partner, post
from tests.smtp_double import SmtpFactory, smtp_server
from tests.support import auth
from tests.test_flow_crash import _setup, _worker, slow
from tests.ui_support import csrf_of, log_in, make_user

__all__ = ["partner", "slow", "smtp_server"]  # the fixtures

Client = TestClient[Any, Any]
FLOW = "/api/v1/flows/fine-email-driver"


async def _fines(client: Client, hr: Partner, smtp_port: int) -> dict[str, Any]:
    """The tenant of scenario 3: the fines trigger, the HR lookup, the e-mail channel."""
    await hr_lookup(client, hr.url)
    await email_channel(client, smtp_port)
    await add_template(client, "fine-received")
    await upload_flow(client, "fine-email-driver")
    hr.respond_with(200, sample("driver_lookup_response.json"))
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    return await trigger_for(client, "fine-feed", kind="fine")


def _fine(ait: str) -> dict[str, Any]:
    fine = dict(sample("fine_feed.json"))
    fine["ait"] = ait
    return fine


async def _runs(client: Client) -> list[dict[str, Any]]:
    return list((await get(client, f"{FLOW}/runs"))["items"])


async def test_a_paused_flow_holds_its_fines_and_e_mails_them_once_resumed(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    fines = await _fines(client, partner, smtp.port)
    reason = {"reason": "HR names the wrong drivers"}
    paused = await post(client, f"{FLOW}/pause", reason, status=200)
    assert paused["paused"]["reason"] == "HR names the wrong drivers"
    assert paused["held"] == 0
    await send_to(client, fines, _fine("A123456789"))
    await send_to(client, fines, _fine("A123456790"))
    await drain(client.app[services_key])

    assert partner.requests == [] and smtp.received == []  # nothing asked, nothing sent
    assert [r["status"] for r in await _runs(client)] == ["held", "held"]
    state = await get(client, f"{FLOW}/pause")
    assert state["held"] == 2 and state["paused"]["by"]
    listed = (await get(client, "/api/v1/flows"))["items"]
    assert [f["paused"] is not None for f in listed] == [True]
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_flow_runs_total{outcome="held"} 2.0' in metrics

    resumed = await post(client, f"{FLOW}/resume", None, status=200)
    assert resumed == {"name": "fine-email-driver", "paused": None, "released": 2, "skipped": 0}
    await drain(client.app[services_key])
    assert len(partner.requests) == 2
    assert sorted(m.message["Subject"] for m in smtp.received) == [
        "Multa A123456789 - ABC1D23",
        "Multa A123456790 - ABC1D23",
    ]
    assert [r["status"] for r in await _runs(client)] == ["succeeded", "succeeded"]
    assert (await get(client, f"{FLOW}/pause")) == {
        "name": "fine-email-driver",
        "paused": None,
        "held": 0,
    }


async def test_a_flow_resumed_skipping_its_held_runs_sends_nothing_for_them(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    fines = await _fines(client, partner, smtp.port)
    await post(client, f"{FLOW}/pause", None, status=200)
    await send_to(client, fines, _fine("A123456789"))
    await drain(client.app[services_key])
    resumed = await post(client, f"{FLOW}/resume", {"held": "skip"}, status=200)
    assert (resumed["released"], resumed["skipped"]) == (0, 1)
    await drain(client.app[services_key])
    assert partner.requests == [] and smtp.received == []
    (run,) = await _runs(client)
    assert run["status"] == "skipped" and run["finished_at"] is not None
    # after the resume, the flow runs as ever
    await send_to(client, fines, _fine("A123456790"))
    await drain(client.app[services_key])
    assert [m.message["Subject"] for m in smtp.received] == ["Multa A123456790 - ABC1D23"]
    # and it can be paused again
    again = await post(client, f"{FLOW}/pause", {"reason": "de novo"}, status=200)
    assert again["paused"]["reason"] == "de novo"


async def test_a_run_waiting_for_its_partner_when_paused_is_held_at_that_step(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """A run under way stops before its next step: HR down, the run waits to ask again; paused
    meanwhile, it does not ask HR when its retry comes, and asks once resumed."""
    smtp = await smtp_server()
    fines = await _fines(client, partner, smtp.port)
    services = client.app[services_key]
    clock = FakeClock()
    services.flow_runner.clock = services.delivery_worker.clock = clock
    partner.respond_with(503, {"erro": "manutenção"}, times=2)
    await send_to(client, fines, _fine("A123456789"))
    await drain(services)
    (run,) = await _runs(client)
    assert run["status"] == "pending" and len(partner.requests) == 2  # and its immediate retry
    await post(client, f"{FLOW}/pause", None, status=200)
    clock.advance(400)  # past the fetch's retry
    await drain(services)
    (run,) = await _runs(client)
    assert run["status"] == "held" and len(partner.requests) == 2
    await post(client, f"{FLOW}/resume", {}, status=200)
    await drain(services)
    assert len(partner.requests) == 3 and len(smtp.received) == 1
    assert (await _runs(client))[0]["status"] == "succeeded"


async def test_pause_and_resume_refuse_what_they_do_not_know(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await _fines(client, partner, smtp.port)
    missing = await post(client, "/api/v1/flows/no-such-flow/pause", None, status=404)
    assert "no-such-flow" in missing["detail"]
    await post(client, "/api/v1/flows/no-such-flow/resume", None, status=404)
    bad = await post(client, f"{FLOW}/resume", {"held": "drop"}, status=422)
    assert bad["errors"][0]["pointer"] == "/held"
    bad = await post(client, f"{FLOW}/pause", {"why": "x"}, status=422)
    assert bad["errors"][0]["pointer"] == "/why"
    viewer = await client.post(f"{FLOW}/pause", headers=auth(role="viewer"))
    assert viewer.status == 403
    # pausing twice keeps the first note
    first = await post(client, f"{FLOW}/pause", {"reason": "one"}, status=200)
    again = await post(client, f"{FLOW}/pause", {"reason": "two"}, status=200)
    assert again["paused"] == first["paused"]


async def test_a_run_held_just_as_its_flow_was_resumed_is_let_go(
    client: Client, services: Services, partner: Partner, smtp_server: SmtpFactory
) -> None:
    """The runner reads "paused", the admin resumes, then the runner writes "held": the resume
    let go the runs held before it, and this one too, as the runner asks again after it holds
    one (`FlowService.let_go_if_resumed`)."""
    smtp = await smtp_server()
    fines = await _fines(client, partner, smtp.port)
    await post(client, f"{FLOW}/pause", None, status=200)
    await send_to(client, fines, _fine("A123456789"))
    await drain(services)
    (run,) = await _runs(client)
    flows = services.notify.flows
    stored = await services.store.notify.runs.get("acme", run["id"])
    assert stored is not None
    assert not await flows.let_go_if_resumed(
        "acme", "fine-email-driver", run["id"], stored["created_at"]
    )
    await services.store.notify.flows.set_paused("acme", "fine-email-driver", None)
    assert await flows.let_go_if_resumed(
        "acme", "fine-email-driver", run["id"], stored["created_at"]
    )
    await drain(services)
    assert len(smtp.received) == 1


async def test_the_admin_ui_pauses_and_resumes_a_flow(
    client: Client, services: Services, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    fines = await _fines(client, partner, smtp.port)
    await make_user(services)
    await log_in(client)
    page = await (await client.get("/admin/flows/fine-email-driver")).text()
    assert 'data-testid="flow-pause"' in page
    response = await client.post(
        "/admin/flows/fine-email-driver/pause",
        data={"csrf": csrf_of(page), "reason": "template errado"},
        allow_redirects=False,
    )
    assert response.status in (302, 303), await response.text()
    await send_to(client, fines, _fine("A123456789"))
    await drain(services)
    page = await (await client.get("/admin/flows/fine-email-driver")).text()
    assert 'data-testid="flow-paused"' in page and "template errado" in page
    assert 'data-testid="flow-resume"' in page and 'data-testid="flow-resume-skip"' in page
    assert smtp.received == []
    response = await client.post(
        "/admin/flows/fine-email-driver/resume",
        data={"csrf": csrf_of(page), "held": "run"},
        allow_redirects=False,
    )
    assert response.status in (302, 303), await response.text()
    await drain(services)
    assert len(smtp.received) == 1
    page = await (await client.get("/admin/flows/fine-email-driver")).text()
    assert 'data-testid="flow-paused"' not in page


async def until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Look again every 50 ms until `condition` holds (a condition, not a fixed sleep)."""
    try:
        async with asyncio.timeout(timeout):
            while not await condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}") from None


async def test_a_pause_holds_a_real_workers_runs_after_their_step_in_flight(
    client: Client,
    partner: Partner,
    slow: Partner,
    smtp_server: SmtpFactory,
    mongodb_uri: str,
    tmp_path: Path,
) -> None:
    """A real `gateway worker` (another process) runs three fines' runs; each is in its second
    step (an audit call the partner holds) when the admin pauses the flow through this
    process's API. The audit answers: each run records it and holds before its e-mail, in the
    worker, at once (the pause is read from the database before each step). Resumed here, the
    worker sends the three e-mails; no step ran twice."""
    smtp = await smtp_server()
    fines = await _setup(client, partner, slow, smtp)
    slow.respond_with(200, {}, delay=60)  # the audit hangs until the test releases it
    for n in range(3):
        await send_to(client, fines, {**sample("fine_feed.json"), "ait": f"A00000000{n}"})
    runs = client.app[services_key].store.db["flow_runs"]

    async def statuses() -> list[str]:
        return sorted(r["status"] for r in await runs.find({}, {"status": 1}).to_list(None))

    async def all_held() -> bool:
        return await statuses() == ["held"] * 3

    worker = await _worker(client, mongodb_uri, tmp_path, "worker")
    try:
        await slow.wait_for(3, timeout=40)  # every run is in its audit step
        await post(client, "/api/v1/flows/fine-audit/pause", None, status=200)
        slow.respond_with(200, {})
        slow.release.set()
        await until(all_held, 30, "the runs held")
        assert smtp.received == []
        resumed = await post(client, "/api/v1/flows/fine-audit/resume", None, status=200)
        # A run the worker had just held may be let go by the worker itself, which reads the
        # flow again after holding (runner._hold): the resume counts only what it moved.
        assert 1 <= resumed["released"] <= 3
        async with smtp.arrived:
            await asyncio.wait_for(smtp.arrived.wait_for(lambda: len(smtp.received) >= 3), 30)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 20) == 0
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            await asyncio.wait_for(worker.wait(), 20)
    finished = await runs.find().to_list(None)
    assert {r["status"] for r in finished} == {"succeeded"}
    for run in finished:
        assert [s["id"] for s in run["steps"]] == ["hr", "audit", "email"]
    assert len(partner.requests) == 3 and len(slow.requests) == 3  # none asked twice
    assert len(smtp.received) == 3


async def test_a_new_version_keeps_the_pause_and_deleting_the_flow_fails_its_held_runs(
    client: Client, partner: Partner, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    fines = await _fines(client, partner, smtp.port)
    await post(client, f"{FLOW}/pause", {"reason": "migração"}, status=200)
    flow = await get(client, FLOW)
    edited = flow["source"].replace("e-mail the driver the fine", "e-mail the fine")
    response = await client.post(
        "/api/v1/flows",
        data=edited.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert response.status == 201, await response.text()
    assert (await get(client, f"{FLOW}/pause"))["paused"]["reason"] == "migração"
    await send_to(client, fines, _fine("A123456789"))
    await drain(client.app[services_key])
    (held,) = await _runs(client)
    assert held["status"] == "held"
    deleted = await client.delete(FLOW, headers=auth())
    assert deleted.status == 204
    await drain(client.app[services_key])
    # the held run is not left waiting for a resume that cannot come: it fails, as every run
    # of a deleted flow does
    run = await get(client, f"/api/v1/flow-runs/{held['id']}")
    assert run["status"] == "failed" and "has no version" in run["last_error"], run
    assert partner.requests == [] and smtp.received == []
    await upload_flow(client, "fine-email-driver")
    assert (await get(client, f"{FLOW}/pause"))["paused"] is None
