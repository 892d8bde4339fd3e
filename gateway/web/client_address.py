"""Which client a request came from, behind the proxies the operator trusts.

The gateway serves plain HTTP: an https deployment puts a TLS proxy in front, and every
request then comes from the proxy's address. The per-client budgets (the admin limit's for
calls without a valid token, the UI's logins, `/hooks` calls refused for their credentials)
and the token login's lockout would all be the proxy's, shared by everyone. So a request
whose peer is in `GATEWAY_TRUSTED_PROXIES` (addresses and CIDRs) is from the address that
proxy names: the last hop of `Forwarded` (RFC 7239 `for=`) or, without it, of
`X-Forwarded-For` that is not itself a trusted proxy, read from the right (the hops a trusted
proxy appended; what the client wrote before them is never believed). A request from any
other peer, or without such a header, is from its peer. Nothing is trusted by default.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.web.state import services_of

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAX_HOP_CHARS: Final = 64  # an address, bracketed and with a port; longer is no address
_ADDRESS: Final = web.RequestKey("client_address", str)


def client_address(request: web.Request) -> str:
    """The client's address (text), worked out once per request."""
    found = request.get(_ADDRESS)
    if found is None:
        trusted = trusted_networks(services_of(request).settings.trusted_proxies)
        found = client_of(request.remote or "", request.headers, trusted)
        request[_ADDRESS] = found
    return found


@lru_cache(maxsize=8)
def trusted_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def client_of(peer: str, headers: CIMultiDictProxy[str], trusted: Sequence[Network]) -> str:
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = _hops(headers)
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in trusted)


def _hops(headers: CIMultiDictProxy[str]) -> list[str]:
    """The addresses the proxies named, the client's first: `Forwarded`'s `for=`, else
    `X-Forwarded-For`'s."""
    forwarded = headers.getall("Forwarded", [])
    if forwarded:
        hops = []
        for element in ",".join(forwarded).split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.lower() == "for":
                    hops.append(_address(value.strip().strip('"')))
        return hops
    listed = ",".join(headers.getall("X-Forwarded-For", []))
    return [_address(hop.strip()) for hop in listed.split(",") if hop.strip()]


def _address(hop: str) -> str:
    """A hop without its port (`[2001:db8::1]:4711`, `192.0.2.7:4711`), cut to a bound."""
    hop = hop[:_MAX_HOP_CHARS]
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop
