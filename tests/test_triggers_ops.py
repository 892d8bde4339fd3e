"""Operations: 503 when the database goes away, metrics labels, the documented surface."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gateway.app import create_app
from gateway.config import Settings
from tests.triggers_support import VEHICLE, Client, bearer, create_trigger, entities, hook


class TcpProxy:
    """A local TCP relay to the database that a test can cut, as a failing network would."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self._cut = False
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        if self._cut:  # accepted while the cut was under way: it is cut too
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def cut(self) -> None:
        assert self._server is not None
        self._cut = True
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()


async def app_behind_proxy(
    aiohttp_client: Any, settings: Settings, mongodb_uri: str
) -> tuple[Client, TcpProxy]:
    """The app with a 300 ms database deadline, reaching the database through a TcpProxy."""
    parts = urlsplit(mongodb_uri)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 27017)
    await proxy.start()
    through_proxy = urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}"))
    client = await aiohttp_client(
        create_app(replace(settings, db_timeout_ms=300), mongodb_uri=through_proxy)
    )
    return client, proxy


async def test_database_down_is_503_with_retry_after(
    aiohttp_client: Any, settings: Settings, mongodb_uri: str
) -> None:
    client, proxy = await app_behind_proxy(aiohttp_client, settings, mongodb_uri)
    trigger = await create_trigger(client)
    assert (await hook(client, trigger, VEHICLE))[0] == 201
    await proxy.cut()
    response = await client.post(
        f"/hooks/{trigger['id']}", json={**VEHICLE, "make": "VW"}, headers=bearer(trigger)
    )
    assert response.status == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["type"].endswith("/store-unavailable")


async def test_metrics_label_calls_by_trigger_id_never_by_token_name_or_url(
    client: Client,
) -> None:
    trigger = await create_trigger(client, name="acme-secret-partner-name")
    await hook(client, trigger, VEHICLE)
    await hook(client, trigger, {"make": "no plate"})
    await client.post("/hooks/trg_attackerchosen_id_123", json=VEHICLE)
    await client.post(f"/hooks/{trigger['id']}", json=[VEHICLE, VEHICLE], headers=bearer(trigger))
    text = await (await client.get("/metrics")).text()
    assert (
        f'gateway_trigger_requests_total{{method="POST",outcome="created",'
        f'trigger="{trigger["id"]}"}} 1.0'
    ) in text
    assert f'outcome="rejected_entity",trigger="{trigger["id"]}"' in text
    assert 'outcome="rejected_auth",trigger="unknown"' in text
    assert f'gateway_trigger_batch_items_count{{trigger="{trigger["id"]}"}} 1.0' in text
    assert "gateway_trigger_request_duration_seconds_bucket" in text
    for leaked in (trigger["token"], "acme-secret-partner-name", "attackerchosen"):
        assert leaked not in text
    assert len(await entities(client)) == 1


async def test_the_hooks_are_documented_with_trigger_auth_and_their_errors(
    client: Client,
) -> None:
    doc = await (await client.get("/openapi.json")).json()
    post = doc["paths"]["/hooks/{trigger_id}"]["post"]
    assert post["security"] == [{"trigger": []}]
    assert {"401", "403", "405", "413", "415", "422", "429", "503"} <= set(post["responses"])
    assert "/api/v1/rejected/{id}/replay" in doc["paths"]
