"""The sender's connections hand partners' answers to `AnswerHandler` through aiohttp's private
`TCPConnector._factory` (gateway/outbound/connection.py). pyproject.toml bounds aiohttp to
the minor series that has it; an aiohttp without it fails at the connector's construction,
naming the file, instead of silently reading answers with aiohttp's own handler (204s
with a body redelivered as transport failures)."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from packaging.requirements import Requirement

from gateway.outbound.connection import AnswerHandler, Connector

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"


class _WithoutHook(aiohttp.TCPConnector):
    """aiohttp as a release without the hook would be: no `_factory` after construction."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        del self._factory


class _FutureConnector(Connector, _WithoutHook):
    """Our connector over that aiohttp (the MRO puts `_WithoutHook` under `Connector`)."""


async def test_a_request_through_the_connector_is_read_by_an_answer_handler(
    aiohttp_server: Any,
) -> None:
    """aiohttp opens its connections with the hook: a real request's connection is ours."""

    async def streaming(request: web.Request) -> web.StreamResponse:
        # The body is still coming when the client looks: its connection is held.
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"part")
        await finish.wait()
        return response

    finish = asyncio.Event()
    app = web.Application()
    app.router.add_get("/", streaming)
    server = await aiohttp_server(app)
    async with (
        aiohttp.ClientSession(connector=Connector()) as session,
        session.get(server.make_url("/")) as response,
    ):
        assert response.status == 200
        assert response.connection is not None
        assert isinstance(response.connection.protocol, AnswerHandler)
        finish.set()
        assert await response.read() == b"part"


async def test_an_aiohttp_without_the_hook_fails_loudly_at_construction() -> None:
    with pytest.raises(RuntimeError, match=r"gateway/outbound/connection\.py") as raised:
        _FutureConnector()
    assert aiohttp.__version__ in str(raised.value) and "_factory" in str(raised.value)


def test_the_installed_aiohttp_is_within_the_bound_pyproject_declares() -> None:
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [aiohttp_req] = [Requirement(d) for d in declared if Requirement(d).name == "aiohttp"]
    assert any(spec.operator == "<" for spec in aiohttp_req.specifier), aiohttp_req
    assert aiohttp_req.specifier.contains(aiohttp.__version__), aiohttp_req
