"""Header names no configuration may set on an outbound request: they frame the message or
route it, so they belong to the HTTP client.

A `Content-Length: 0` or `Transfer-Encoding: chunked` written by a mapping, a partner's
header credential or a schedule's cursor made aiohttp send framing that disagrees with the
body: the partner (or a proxy in front of it) reads the body as a second request on a
connection the gateway keeps open and shares with every tenant's calls to that host (request
smuggling: another tenant's next request, its credentials included, can end up inside a
request the first one chose). `Host` picks the virtual host behind an allow-listed proxy or
load balancer, not the partner the base URL names; `Connection`, `Upgrade` and the other
hop-by-hop headers change what the connection is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

RESERVED_HEADERS: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)


# Answer headers that may carry a credential or a cookie: nothing configured may have them
# kept with an answer (`Outcome.headers`): an answer rule's `header`, a schedule's
# `cursor.follow`.
CREDENTIAL_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "set-cookie", "cookie", "www-authenticate"}
)


def carries_credential(name: str) -> bool:
    """Whether `name` (any case) is an answer header that may carry a credential."""
    return name.strip().lower() in CREDENTIAL_HEADERS


def is_reserved_header(name: str) -> bool:
    """Whether `name` (any case) is a header only the HTTP client may set."""
    return name.strip().lower() in RESERVED_HEADERS


def reserved_in(names: Iterable[str]) -> list[str]:
    """The reserved names among `names`, as written."""
    return [name for name in names if is_reserved_header(name)]


def reserved_message(name: str) -> str:
    return f"{name!r} is set by the HTTP client from the request itself; it cannot be configured"
