"""The sender's connections hand partners' answers to `AnswerHandler` through aiohttp's private
`TCPConnector._factory` (gateway/outbound/connection.py). pyproject.toml bounds aiohttp to
the minor series that has it; an aiohttp without it fails at the connector's construction,
naming the file, instead of silently reading answers with aiohttp's own handler (204s
with a body redelivered as transport failures)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
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


async def test_the_connector_makes_answer_handlers_through_aiohttps_hook() -> None:
    connector = Connector()
    try:
        assert isinstance(connector._factory(), AnswerHandler)
    finally:
        await connector.close()


async def test_an_aiohttp_without_the_hook_fails_loudly_at_construction() -> None:
    with pytest.raises(RuntimeError, match=r"gateway/outbound/connection\.py") as raised:
        _FutureConnector()
    assert aiohttp.__version__ in str(raised.value) and "_factory" in str(raised.value)


def test_the_installed_aiohttp_is_within_the_bound_pyproject_declares() -> None:
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [aiohttp_req] = [Requirement(d) for d in declared if Requirement(d).name == "aiohttp"]
    assert any(spec.operator == "<" for spec in aiohttp_req.specifier), aiohttp_req
    assert aiohttp_req.specifier.contains(aiohttp.__version__), aiohttp_req
