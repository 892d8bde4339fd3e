"""Partners that misbehave on purpose: a 1 GB answer is cut at the sender's cap (streamed,
never held in memory), whether or not it declares its length."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.partner_double import create_action, create_partner, post
from tests.support import auth

Client = TestClient[Any, Any]
GIB = 1024**3
CHUNK = b"x" * (1024 * 1024)


class Flood:
    """Answers 200 with 1 GB, in 1 MiB chunks, and counts what it managed to send."""

    def __init__(self) -> None:
        self.sent = 0
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if request.query.get("declared") == "1":
            response.content_length = GIB
        await response.prepare(request)
        try:
            while self.sent < GIB:
                await response.write(CHUNK)
                self.sent += len(CHUNK)
        except (ConnectionError, RuntimeError):
            pass  # the gateway hung up: what we wanted
        return response


@pytest.fixture
async def flood() -> AsyncIterator[Flood]:
    double = Flood()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", double.handle)
    double.server = TestServer(app, host="127.0.0.1")
    await double.server.start_server()
    yield double
    await double.server.close()


@pytest.mark.parametrize("declared", ["0", "1"])
async def test_a_1_gb_answer_is_cut_at_the_cap_not_read(
    client: Client, flood: Flood, declared: str
) -> None:
    partner = await create_partner(client, flood.url, timeout_seconds=30)
    action = await create_action(
        client, partner["id"], mode="proxy", method="GET", path=f"/big?declared={declared}"
    )
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke",
        json={"entity": {"type": "vehicle", "id": vehicle["id"]}},
        headers=auth(),
    )
    problem = await response.json()
    assert response.status == 502 and "cap" in problem["detail"], problem
    # The gateway stopped reading at its 1 MiB cap; the partner could push a few socket
    # buffers more before it noticed, never the gigabyte.
    assert flood.sent < 64 * 1024 * 1024
