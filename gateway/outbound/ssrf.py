"""The SSRF guard: which outbound URLs and resolved addresses the gateway may connect to.

Two checks, because aiohttp never calls the resolver for IP-literal hosts (3.14
`TCPConnector._resolve_host` short-cuts them):
- `OutboundPolicy.check_url` before every request: scheme, host, and IP-literal hosts;
- `GuardedResolver`, the connector's resolver, on every resolved address at connect time,
  so a hostname that resolves (or re-resolves, DNS rebinding) to a private address is refused.
Redirects are never followed (the sender passes allow_redirects=False): a 3xx is an answer,
recorded with its Location, not a new request to an unchecked host.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from gateway.errors import PartnerError
from gateway.outbound.urls import exact_url

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})

_METADATA = frozenset({ip_address("169.254.169.254"), ip_address("fd00:ec2::254")})
# Named for the error message; anything else that is not globally routable is refused too.
_BLOCKED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ip_network(cidr), why)
    for cidr, why in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fc00::/7", "private"),
        # Site-local (RFC 3879 deprecated it; Python counts it global): networks that kept it
        # still route it inside.
        ("fec0::/10", "site-local"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = (ip_network("64:ff9b::/96"), ip_network("64:ff9b:1::/48"))
# IPv4-compatible addresses (::a.b.c.d, deprecated but still parsed and routed by some
# stacks): classed by the IPv4 address they carry, e.g. http://[::127.0.0.1] is loopback.
_COMPATIBLE = ip_network("::/96")
# IPv4-translated addresses (::ffff:0:a.b.c.d, RFC 2765/6052): a stateless SIIT translator
# sends them to a.b.c.d.
_TRANSLATED = ip_network("::ffff:0:0:0/96")
_MAX_PASSED = 1024


class OutboundBlocked(PartnerError):
    """The SSRF guard refused an outbound URL or address; nothing was sent."""

    title, slug = "Outbound request blocked", "outbound-blocked"


def _with_embedded(ip: IPAddress) -> Iterator[IPAddress]:
    """The address and any IPv4 address tunnelled inside it (mapped, compatible, translated,
    6to4, NAT64, Teredo)."""
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        yield ip.ipv4_mapped  # ::ffff:a.b.c.d *is* a.b.c.d on a dual-stack socket
        return
    yield ip
    if isinstance(ip, IPv6Address):
        if ip.sixtofour is not None:
            yield ip.sixtofour
        if ip.teredo is not None:
            yield from ip.teredo
        if (
            any(ip in net for net in _NAT64)
            or ip in _TRANSLATED
            or (ip in _COMPATIBLE and int(ip) > 1)
        ):
            yield IPv4Address(int(ip) & 0xFFFFFFFF)


def blocked_reason(ip: IPAddress) -> str | None:
    """Why an address is off-limits by default (e.g. "loopback"), or None if it is public."""
    for candidate in _with_embedded(ip):
        if candidate in _METADATA:
            return "cloud metadata"
        for network, why in _BLOCKED:
            if candidate in network:
                return why
        if candidate.is_multicast:
            return "multicast"
        if not candidate.is_global:
            return "reserved"
    return None


def _parse_ip(host: str) -> IPAddress | None:
    try:
        return ip_address(host.strip("[]"))
    except ValueError:
        return None


def _normalise_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """The allow-list (`GATEWAY_OUTBOUND_ALLOW`) and the checks that use it.

    A host entry exempts that exact hostname (whatever it resolves to); a CIDR or a bare IP
    exempts resolved or literal addresses inside it.
    """

    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    # URL hosts that passed check_url: its verdict depends on the host alone (a partner's
    # base URL is checked once, not on every call). Bounded: cleared when full.
    _passed: set[str] = field(default_factory=set, compare=False, repr=False)

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> OutboundPolicy:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if "/" in entry:
                networks.append(ip_network(entry, strict=False))
            elif (ip := _parse_ip(entry)) is not None:
                networks.append(ip_network(ip))
            else:
                hosts.add(_normalise_host(entry))
        return cls(frozenset(hosts), tuple(networks))

    def host_allowed(self, host: str) -> bool:
        return _normalise_host(host) in self.allowed_hosts

    def address_allowed(self, ip: IPAddress) -> bool:
        return any(c in net for c in _with_embedded(ip) for net in self.allowed_networks)

    def check_address(self, host: str, address: str) -> None:
        """Raise OutboundBlocked unless `host` may connect to `address`."""
        ip = _parse_ip(address)
        if ip is None:
            raise OutboundBlocked(f"{host!r} resolved to {address!r}, which is not an IP address")
        if self.address_allowed(ip):
            return
        reason = blocked_reason(ip)
        if reason is not None:
            shown = host if _parse_ip(host) == ip else f"{host} ({ip})"
            raise OutboundBlocked(
                f"refusing to connect to {shown}: {reason} address; "
                "add it to GATEWAY_OUTBOUND_ALLOW to allow it"
            )

    def check_url(self, url: str | URL) -> URL:
        """Parse and check an outbound URL before sending; IP-literal hosts are checked here.

        The URL comes back as it will be sent: its path and query as encoded (`exact_url`)."""
        try:
            parsed = url if isinstance(url, URL) else exact_url(url)
        except (ValueError, TypeError) as exc:
            raise OutboundBlocked(f"invalid outbound URL: {exc}") from None
        if parsed.scheme not in ALLOWED_SCHEMES:
            raise OutboundBlocked(
                f"outbound URLs must be http or https, not {parsed.scheme or 'relative'!r}"
            )
        host = parsed.raw_host
        if not host:
            raise OutboundBlocked("outbound URL has no host")
        if host in self._passed:
            return parsed
        if not self.host_allowed(host) and _parse_ip(host) is not None:
            self.check_address(host, host)
        if len(self._passed) >= _MAX_PASSED:
            self._passed.clear()
        self._passed.add(host)
        return parsed


class GuardedResolver(AbstractResolver):
    """Wraps a resolver and refuses answers with a blocked address, for the sender's connector.

    One blocked address refuses the whole answer rather than filtering it: a public name
    that also resolves to 127.0.0.1 is a rebinding attempt or a misconfiguration, and
    connecting to the remaining addresses would hide it.
    """

    def __init__(self, policy: OutboundPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._policy.host_allowed(host):
            for result in results:
                self._policy.check_address(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()
