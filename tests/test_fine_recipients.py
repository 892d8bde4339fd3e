"""A fine goes to the driver at its time: `driver: {vehicle, at}` read from the assignment
history whatever the offsets the partners wrote, at the exact boundary of two assignments, in
an open-ended one; a fine from before any assignment reaches nobody, and the run says so."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.flow_support import drain, fine_email_flow, get
from tests.partner_double import post
from tests.smtp_double import SmtpFactory, smtp_server
from tests.support import auth

__all__ = ["smtp_server"]

Client = TestClient[Any, Any]
ANA = {"name": "Ana Souza", "cpf": "52998224725", "email": "ana@example.com"}
BRUNO = {"name": "Bruno Lima", "cpf": "11144477735", "email": "bruno@example.com"}


async def _setup(client: Client, port: int) -> None:
    await fine_email_flow(client, port)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", ANA)
    await post(client, "/api/v1/entities/driver", BRUNO)


async def _fine(client: Client, key: str, at: str) -> None:
    fine = {"kind": "fine", "key": key, "ait_number": key, "amount_brl": 130.16}
    body = {**fine, "status": "open", "plate": "ABC1D23", "occurred_at": at}
    await post(client, "/api/v1/entities/other", body)


async def test_a_fine_reaches_the_driver_at_its_time_across_offsets_and_boundaries(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await _setup(client, smtp.port)
    drivers = "/api/v1/entities/vehicle/ABC1D23/drivers"
    # A checklist: Bruno from 09:00 in São Paulo; the ERP, later: Ana from 08:00 (in UTC).
    start = "2026-11-18T09:00:00-03:00"
    await post(client, drivers, {"driver": BRUNO["cpf"], "start": start, "source": "checklist"})
    start = "2026-11-18T11:00:00Z"
    await post(client, drivers, {"driver": ANA["cpf"], "start": start, "source": "erp"})
    fines = {
        "A1": ("2026-11-18T08:00:00-03:00", "ana@example.com"),  # Ana's first instant
        "A2": ("2026-11-18T11:59:59.999Z", "ana@example.com"),  # her last millisecond
        "B1": ("2026-11-18T12:00:00Z", "bruno@example.com"),  # the boundary: the new driver
        "B2": ("2026-11-18T09:00:00-03:00", "bruno@example.com"),  # the same, in local time
        "B3": ("2026-12-01T10:00:00-03:00", "bruno@example.com"),  # his open-ended assignment
    }
    for key, (at, _) in fines.items():
        await _fine(client, key, at)
    await drain(client.app[services_key])
    got = {m.message["Subject"]: m.recipients for m in smtp.received}
    assert got == {key: [to] for key, (_, to) in fines.items()}


async def test_a_fine_from_before_any_assignment_reaches_nobody_and_the_run_says_so(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    await _setup(client, smtp.port)
    start = "2026-11-18T08:00:00-03:00"
    await post(
        client, "/api/v1/entities/vehicle/ABC1D23/drivers", {"driver": ANA["cpf"], "start": start}
    )
    await _fine(client, "EARLY", "2026-11-18T07:59:59-03:00")
    await drain(client.app[services_key])
    assert smtp.received == []
    (run,) = (await get(client, "/api/v1/flows/fine/runs"))["items"]
    (step,) = run["steps"]
    assert step["outcome"] == "nobody", step
    assert step["messages"] == []
    assert step["unreachable"] == [
        {
            "recipient": "driver",
            "reason": "vehicle ABC1D23 had no driver at 2026-11-18T07:59:59-03:00",
        }
    ]


async def test_a_fine_reaches_the_driver_deleted_and_created_again_who_drove_then(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """A driver is one person by CPF: the history kept the deleted driver's id, so every
    fine of the time before the deletion reached nobody, though Ana (created again, the same
    CPF) is a stored driver with an e-mail."""
    smtp = await smtp_server()
    await _setup(client, smtp.port)
    drivers = "/api/v1/entities/vehicle/ABC1D23/drivers"
    await post(client, drivers, {"driver": ANA["cpf"], "start": "2026-11-01T08:00:00-03:00"})
    response = await client.delete(f"/api/v1/entities/driver/{ANA['cpf']}", headers=auth())
    assert response.status == 204
    await post(client, "/api/v1/entities/driver", {**ANA, "email": "ana.souza@example.com"})
    await drain(client.app[services_key])
    await _fine(client, "A1", "2026-11-15T12:00:00Z")
    await drain(client.app[services_key])
    assert [(m.message["Subject"], m.recipients) for m in smtp.received] == [
        ("A1", ["ana.souza@example.com"])
    ]
