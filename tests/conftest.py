"""Test fixtures: one real SecantusDB server per test session, a fresh database per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.config import Secret, Settings
from gateway.services import Services, open_services
from gateway.store.embedded import EmbeddedServer
from tests.support import SECRET_KEY

_db_names = itertools.count()


@pytest.fixture(scope="session")
def mongodb_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MONGODB_URI from the environment if set (a real MongoDB), else an embedded server."""
    if uri := os.environ.get("TEST_MONGODB_URI"):
        yield uri
        return
    server = EmbeddedServer(tmp_path_factory.mktemp("secantus") / "db")
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        secret_key=Secret(SECRET_KEY),
        data_dir=tmp_path,
        database=f"test_{os.getpid()}_{next(_db_names)}",
        run_workers=False,
        log_json=False,
        outbound_allow=("127.0.0.1",),
        max_body_bytes=256 * 1024,
    )


@pytest.fixture
def make_app(settings: Settings, mongodb_uri: str) -> Callable[..., web.Application]:
    def factory(**overrides: Any) -> web.Application:
        return create_app(replace(settings, **overrides), mongodb_uri=mongodb_uri)

    return factory


@pytest.fixture
async def client(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> AsyncIterator[TestClient[Any, Any]]:
    yield await aiohttp_client(make_app())


@pytest.fixture
async def services(settings: Settings, mongodb_uri: str) -> AsyncIterator[Services]:
    """A gateway process without its web app, on the test's database (the same one the
    `client` fixture's app uses): for use cases driven directly."""
    async with open_services(settings, mongodb_uri=mongodb_uri) as opened:
        yield opened
