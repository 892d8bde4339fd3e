"""A delivery, or a flow run, created by one process and claimed by another goes out at once
(SPEC §5: the first attempt is made at once): a web process that relays
(`GATEWAY_WORKERS=relay`) beside a real `gateway worker` whose poll is 30 s. The worker follows
the change streams of `deliveries` and `flow_runs` and claims what arrives in the shard the
change names (`leased_loop.follow_arrivals`); before, it found the work at its next poll only
(up to four times its poll interval while idle: at load 9, 6 s with the default 1 s poll)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    partner,
    post,
)
from tests.processes import free_port, start_worker, until_ready

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]
POLL_SECONDS = 30
BOUND_SECONDS = 10  # far below the poll (30 s, then 60 s and more while idle)


async def test_work_another_process_created_reaches_the_partner_long_before_the_worker_polls(
    aiohttp_client: Any, make_app: Any, partner: Partner, mongodb_uri: str, tmp_path: Path
) -> None:
    client = await aiohttp_client(make_app(run_workers=True, jobs=("relay",)))  # sends nothing
    erp = await create_partner(client, partner.url)
    push = await create_action(client, erp["id"])
    await create_subscription(client, push["id"], ("entity.created",))
    await create_action(
        client, erp["id"], name="lookup", method="GET", path="/lookup", mode="proxy"
    )
    flow = {
        "name": "look-up",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
        "steps": [{"id": "lookup", "fetch": "lookup"}],
    }
    await post(client, "/api/v1/flows", flow)
    port = free_port()
    database = client.app[services_key].settings.database
    worker = await start_worker(
        tmp_path,
        mongodb_uri,
        database,
        *("--jobs", "delivery,flows"),
        GATEWAY_DELIVERY_POLL_SECONDS=str(POLL_SECONDS),
        GATEWAY_WORKER_PORT=str(port),
    )
    try:
        await until_ready(f"http://127.0.0.1:{port}/readyz", worker, 60)
        await asyncio.sleep(2)  # its first look found nothing: its next poll is 60 s away

        await post(client, "/api/v1/entities/vehicle", {"plate": "RBT3W01"})
        await partner.wait_for(2, timeout=BOUND_SECONDS)
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 30)

    assert sorted(request.path for request in partner.requests) == ["/hooks", "/lookup"]
