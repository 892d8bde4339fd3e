import socket
from ipaddress import ip_address

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from gateway.outbound.sender import OutboundRequest, Sender
from gateway.outbound.ssrf import GuardedResolver, OutboundBlocked, OutboundPolicy, blocked_reason
from gateway.outbound.verdict import Verdict

DEFAULT = OutboundPolicy.from_entries([])


class FakeDNS(AbstractResolver):
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=addr, port=port, family=family, proto=0, flags=0)
            for addr in self.answers[host]
        ]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "reserved"),  # documentation range: not globally routable
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("64:ff9b:1::7f00:1", "loopback"),  # local-use NAT64 of 127.0.0.1
        ("::127.0.0.1", "loopback"),  # IPv4-compatible
        ("::10.0.0.1", "private"),
        ("::169.254.169.254", "cloud metadata"),
        ("2002:a9fe:a9fe::", "cloud metadata"),  # 6to4 of 169.254.169.254
        ("fec0::1", "site-local"),  # deprecated, still routed inside networks that kept it
        ("::ffff:0:7f00:1", "loopback"),  # IPv4-translated (SIIT) 127.0.0.1
        ("::ffff:0:a00:1", "private"),  # IPv4-translated 10.0.0.1
        ("::ffff:0:a9fe:a9fe", "cloud metadata"),  # IPv4-translated 169.254.169.254
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_blocked_reason(address: str, reason: str | None) -> None:
    assert blocked_reason(ip_address(address)) == reason


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.0.0.7:8080/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9000/",
        "http://[::127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[fd00:ec2::254]/",
        "http://[fec0::a00:1]/",
        "http://[::ffff:0:7f00:1]/",
        "ftp://partner.example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "/relative/path",
        "http:///no-host",
    ],
)
def test_check_url_refuses(url: str) -> None:
    with pytest.raises(OutboundBlocked):
        DEFAULT.check_url(url)


def test_check_url_leaves_hostnames_to_the_resolver() -> None:
    assert str(DEFAULT.check_url("https://erp.example.com/api")) == "https://erp.example.com/api"
    assert DEFAULT.check_url("http://8.8.8.8/").host == "8.8.8.8"


def test_allow_list_hosts_ips_and_cidrs() -> None:
    policy = OutboundPolicy.from_entries(
        [" 127.0.0.1", "10.20.0.0/16", "Partner.Internal.", "", "::1"]
    )
    assert policy.allowed_hosts == frozenset({"partner.internal"})
    policy.check_url("http://127.0.0.1:8080/")
    policy.check_url("http://10.20.3.4/")
    policy.check_url("http://[::1]/")
    policy.check_url("http://PARTNER.internal/")
    with pytest.raises(OutboundBlocked, match="private address"):
        policy.check_url("http://10.21.0.1/")


def test_each_check_of_a_literal_address_gives_the_same_verdict() -> None:
    # check_url remembers the hosts that passed: a refused one must stay refused
    policy = OutboundPolicy.from_entries(["10.20.0.0/16"])
    for _ in range(3):
        assert policy.check_url("http://10.20.3.4/a").host == "10.20.3.4"
        with pytest.raises(OutboundBlocked, match="private address"):
            policy.check_url("http://10.21.0.1/")
        with pytest.raises(OutboundBlocked, match="cloud metadata"):
            policy.check_url("http://169.254.169.254/")


def test_blocked_message_says_how_to_allow() -> None:
    with pytest.raises(OutboundBlocked) as caught:
        DEFAULT.check_url("http://169.254.169.254/")
    assert "cloud metadata" in caught.value.detail
    assert "GATEWAY_OUTBOUND_ALLOW" in caught.value.detail
    assert caught.value.status == 502


async def test_resolver_refuses_a_name_that_resolves_privately() -> None:
    dns = FakeDNS(
        {
            "rebind.example.com": ["93.184.216.34", "127.0.0.1"],
            "good.example.com": ["93.184.216.34"],
        }
    )
    resolver = GuardedResolver(DEFAULT, dns)
    with pytest.raises(OutboundBlocked, match=r"rebind\.example\.com \(127\.0\.0\.1\): loopback"):
        await resolver.resolve("rebind.example.com", 80)
    assert [r["host"] for r in await resolver.resolve("good.example.com", 80)] == ["93.184.216.34"]
    await resolver.close()


async def test_resolver_honours_host_and_cidr_allow_entries() -> None:
    dns = FakeDNS({"erp.internal": ["10.0.0.5"], "hr.internal": ["10.9.0.5"]})
    resolver = GuardedResolver(OutboundPolicy.from_entries(["erp.internal", "10.9.0.0/16"]), dns)
    assert (await resolver.resolve("erp.internal", 443))[0]["host"] == "10.0.0.5"
    assert (await resolver.resolve("hr.internal", 443))[0]["host"] == "10.9.0.5"


# End to end: a real local partner, a real sender, the default resolver.


class Partner:
    def __init__(self, server: TestServer, hits: list[str]) -> None:
        self.server, self.hits, self.port = server, hits, server.port

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def partner(aiohttp_server: AiohttpServer) -> Partner:
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path == "/redirect":
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return Partner(await aiohttp_server(app), hits)


async def send(policy: OutboundPolicy, url: str) -> tuple[int | None, str | None, str | None]:
    async with Sender(policy) as sender:
        outcome = await sender.send(OutboundRequest("GET", url, timeout=2), partner_id="p")
    return outcome.status, outcome.error, outcome.message


async def test_loopback_refused_by_default(partner: Partner) -> None:
    status, error, message = await send(DEFAULT, partner.url("/x"))
    assert (status, error) == (None, "blocked")
    assert message is not None and "loopback" in message
    assert partner.hits == []


async def test_loopback_allowed_when_allow_listed(partner: Partner) -> None:
    status, error, _ = await send(OutboundPolicy.from_entries(["127.0.0.1"]), partner.url("/x"))
    assert (status, error) == (200, None)
    assert partner.hits == ["/x"]


async def test_hostname_resolving_to_loopback_refused(partner: Partner) -> None:
    status, error, message = await send(DEFAULT, f"http://localhost:{partner.port}/x")
    assert (status, error) == (None, "blocked")
    assert message is not None and "localhost" in message
    assert partner.hits == []


async def test_allow_listed_hostname_may_resolve_to_loopback(partner: Partner) -> None:
    status, error, _ = await send(
        OutboundPolicy.from_entries(["localhost"]), f"http://localhost:{partner.port}/x"
    )
    assert (status, error) == (200, None)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:1/",
        "ftp://127.0.0.1/",
    ],
)
async def test_private_literals_and_other_schemes_never_connect(url: str) -> None:
    status, error, _ = await send(OutboundPolicy.from_entries(["127.0.0.1"]), url)
    assert (status, error) == (None, "blocked")


async def test_redirects_are_answers_not_followed(partner: Partner) -> None:
    async with Sender(OutboundPolicy.from_entries(["127.0.0.1"])) as sender:
        outcome = await sender.send(
            OutboundRequest("GET", partner.url("/redirect"), timeout=2), partner_id="p"
        )
    assert outcome.status == 302
    assert outcome.headers["Location"] == "http://169.254.169.254/latest/meta-data/"
    assert outcome.verdict is Verdict.FAIL
    assert partner.hits == ["/redirect"]


@pytest.mark.parametrize(
    "host", ["2130706433", "127.1", "0x7f.0.0.1", "017700000001", "127.0.0.1.", "[::ffff:7f00:1]"]
)
async def test_odd_spellings_of_loopback_are_refused(partner: Partner, host: str) -> None:
    status, error, _ = await send(DEFAULT, f"http://{host}:{partner.port}/x")
    assert (status, error) == (None, "blocked")
    assert partner.hits == []
