"""The MongoDB connection: opening it, translating driver errors, and tenant scoping."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    ServerSelectionTimeoutError,
)

from gateway.errors import Conflict, StoreUnavailable

Doc = dict[str, Any]
Collection = AsyncCollection[Doc]
Database = AsyncDatabase[Doc]


def open_client(uri: str, *, timeout_ms: int = 5000) -> AsyncMongoClient[Doc]:
    return AsyncMongoClient(
        uri,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        appname="rabbot-gateway",
    )


@contextlib.contextmanager
def translate_errors(
    conflict_detail: str = "a resource with this key already exists",
) -> Iterator[None]:
    """pymongo exceptions never leave store/: they become the gateway's own errors."""
    try:
        yield
    except DuplicateKeyError:
        raise Conflict(conflict_detail) from None
    except (
        ServerSelectionTimeoutError,
        AutoReconnect,
        NetworkTimeout,
        ConnectionFailure,
        ExecutionTimeout,
    ) as exc:
        raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc


def scoped(tenant: str, query: Mapping[str, Any] | None = None) -> Doc:
    """Every query names its tenant; the data layer refuses one that does not."""
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("a tenant is required for every query")
    return {**(query or {}), "tenant": tenant}
