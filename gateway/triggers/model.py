"""The plain values a partner call is made of, in and out (the web layer fills and sends them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class BodyReader(Protocol):
    async def read(self, limit: int) -> bytes:
        """The whole body; PayloadTooLarge past `limit` bytes."""
        ...


@dataclass(frozen=True, slots=True)
class HookCall:
    trigger_id: str
    method: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    query_string: str
    content_type: str
    body: BodyReader
    ref: str | None = None  # GET /hooks/{id}/{ref}
    charset: str | None = None  # the Content-Type's charset parameter, if any


@dataclass(frozen=True, slots=True)
class HookAnswer:
    status: int
    body: bytes  # JSON
    headers: Mapping[str, str] = field(default_factory=dict)
