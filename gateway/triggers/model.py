"""The plain values a partner call is made of, in and out (the web layer fills and sends them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    # Called once the caller is authenticated by a trigger whose `answers` is `as_called`:
    # from then on its answers may be written in the form it speaks (gateway/web/replies.py).
    as_called: Callable[[], None] | None = None
    client: str = ""  # the key of the caller (web/client_address.py), whose refused calls count


@dataclass(frozen=True, slots=True)
class HookAnswer:
    status: int
    body: bytes  # JSON
    headers: Mapping[str, str] = field(default_factory=dict)
