"""Which client a request came from, behind the proxies the operator trusts, and the key its
budgets count under.

The gateway serves plain HTTP: an https deployment puts a TLS proxy in front, and every
request then comes from the proxy's address. The per-client budgets (the admin limit's for
calls without a valid token, the UI's logins, `/hooks` calls refused for their credentials)
and the token login's lockout would all be the proxy's, shared by everyone. So a request
whose peer is in `GATEWAY_TRUSTED_PROXIES` (addresses and CIDRs) is from the address that
proxy names in the one header `GATEWAY_FORWARDED_HEADER` says the proxies write
(`X-Forwarded-For`, the default, or RFC 7239 `Forwarded`'s `for=`): its last hop that is not
itself a trusted proxy, read from the right (the hops a trusted proxy appended; what the client
wrote before them is never believed). The other header is never read: a proxy that appends to
one passes a client's own other header through untouched. A request from any other peer, or
without that header, is from its peer. Nothing is trusted by default.

A client's budgets and lockouts count under its key (`client_key`): an IPv4 address, or an
IPv6 address's /64 (`2001:db8:1:2::/64`): one host holds a whole /64 (a VPS, a home line),
and could give every request an address of its own; an IPv4-mapped IPv6 address is its IPv4.
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
_IPV6_HOST_BITS: Final = 64  # what one IPv6 host may use: a /64's interface ids
_KEY: Final = web.RequestKey("client_key", str)


def client_key(request: web.Request) -> str:
    """The key the client's budgets and lockouts count under (`key_of` its address), worked
    out once per request."""
    found = request.get(_KEY)
    if found is None:
        settings = services_of(request).settings
        trusted = trusted_networks(settings.trusted_proxies)
        peer = request.remote or ""
        found = key_of(client_of(peer, request.headers, trusted, settings.forwarded_header))
        request[_KEY] = found
    return found


def key_of(address: str) -> str:
    """An IPv4 address as it is; an IPv6 address as its /64 (`2001:db8:1:2::/64`), or an
    IPv4-mapped one (`::ffff:192.0.2.7`) as its IPv4; anything else (no address) as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    prefix = int(ip) >> _IPV6_HOST_BITS << _IPV6_HOST_BITS  # drops a zone (`%eth0`) too
    return f"{ipaddress.IPv6Address(prefix)}/{128 - _IPV6_HOST_BITS}"


@lru_cache(maxsize=8)
def trusted_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def client_of(
    peer: str,
    headers: CIMultiDictProxy[str],
    trusted: Sequence[Network],
    header: str = "x-forwarded-for",
) -> str:
    """The client of a request from `peer`, named by the trusted proxies in `header` (one of
    config.FORWARDED_HEADERS)."""
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = _forwarded_hops(headers) if header == "forwarded" else _xff_hops(headers)
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


def _forwarded_hops(headers: CIMultiDictProxy[str]) -> list[str]:
    """The addresses `Forwarded`'s `for=` names, the client's first."""
    hops = []
    for element in ",".join(headers.getall("Forwarded", [])).split(","):
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.lower() == "for":
                hops.append(_address(value.strip().strip('"')))
    return hops


def _xff_hops(headers: CIMultiDictProxy[str]) -> list[str]:
    """The addresses `X-Forwarded-For` names, the client's first."""
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
