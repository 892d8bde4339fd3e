"""Partner-signed JWTs against a JWKS (stub fetch or a real local server) or PEM keys."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.warnings import InsecureKeyLengthWarning

from gateway.auth.partner_jwt import JwksKeys, JwtPolicy, PartnerJwtVerifier, StaticKeys
from gateway.errors import PartnerError, Unauthorized

JWKS_URL = "https://partner.example/.well-known/jwks.json"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

KEYS: dict[str, PrivateKey] = {
    "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
}


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwk(alg: str, kid: str, key: PrivateKey | None = None, **extra: Any) -> dict[str, Any]:
    public = (key or KEYS[alg]).public_key()
    return {**jwt.get_algorithm_by_name(alg).to_jwk(public, as_dict=True), "kid": kid, **extra}


def jwks(*keys: dict[str, Any]) -> bytes:
    return orjson.dumps({"keys": list(keys)})


def token(alg: str = "RS256", kid: str | None = "k1", key: Any = None, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": "partner", "aud": "rabbot", "sub": "tracker-7", "iat": now, "exp": now + 60}
    body.update(claims)
    for name in [name for name, value in body.items() if value is None]:
        del body[name]
    headers = {"kid": kid} if kid else {}
    return jwt.encode(body, key or KEYS[alg], algorithm=alg, headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class StubFetch:
    """Serves whatever JWKS a test sets, counting the calls."""

    def __init__(self, body: bytes | Exception) -> None:
        self.body = body
        self.calls = 0

    async def __call__(self, url: str) -> bytes:
        assert url == JWKS_URL
        self.calls += 1
        if isinstance(self.body, Exception):
            raise self.body
        return self.body


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POLICY = JwtPolicy(issuer="partner", audience="rabbot")


def jwks_verifier(
    fetch: StubFetch, clock: Callable[[], float] = time.monotonic, policy: JwtPolicy = POLICY
) -> PartnerJwtVerifier:
    return PartnerJwtVerifier.from_jwks(
        JWKS_URL, fetch, policy, ttl=300, min_refresh_interval=30, clock=clock
    )


async def assert_rejected(
    verifier: PartnerJwtVerifier, tok: str, detail: str = "invalid token"
) -> None:
    with pytest.raises(Unauthorized) as caught:
        await verifier.verify(tok)
    assert caught.value.detail == detail


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_jwks_token_of_each_algorithm_verifies(alg: str) -> None:
    others = [jwk(other, f"not-{other}") for other in KEYS if other != alg]
    fetch = StubFetch(jwks(*others, jwk(alg, "k1")))
    claims = await jwks_verifier(fetch).verify(token(alg))
    assert claims["sub"] == "tracker-7"
    assert fetch.calls == 1


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_pem_key_of_each_algorithm_verifies(alg: str) -> None:
    verifier = PartnerJwtVerifier.from_pem([public_pem(KEYS[alg]).decode()], POLICY)
    assert (await verifier.verify(token(alg, kid=None)))["iss"] == "partner"
    other = next(a for a in KEYS if a != alg)
    await assert_rejected(verifier, token(other, kid=None))


async def test_pem_certificate_verifies() -> None:
    key = KEYS["ES256"]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "partner.example")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert (await PartnerJwtVerifier.from_pem([pem], POLICY).verify(token("ES256")))[
        "aud"
    ] == "rabbot"


async def test_hs256_keyed_with_the_public_pem_is_rejected() -> None:
    """The classic key confusion: the attacker HMACs with the public key we hold."""
    pem = public_pem(KEYS["RS256"])
    head = b64url(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}))
    now = int(time.time())
    claims = {"iss": "partner", "aud": "rabbot", "sub": "x", "iat": now, "exp": now + 60}
    body = b64url(orjson.dumps(claims))
    sig = b64url(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    forged = f"{head}.{body}.{sig}"
    await assert_rejected(PartnerJwtVerifier.from_pem([pem], POLICY), forged)
    fetch = StubFetch(jwks(jwk("RS256", "k1")))
    await assert_rejected(jwks_verifier(fetch), forged)


async def test_hmac_keys_in_a_jwks_are_ignored() -> None:
    secret = b"attacker-chosen-secret-0123456789abcdef"
    oct_key = {"kty": "oct", "kid": "k1", "alg": "HS256", "k": b64url(secret)}
    fetch = StubFetch(jwks(oct_key, jwk("ES256", "k2")))
    await assert_rejected(jwks_verifier(fetch), token("HS256", key=secret))


async def test_alg_none_is_rejected() -> None:
    head = b64url(orjson.dumps({"alg": "none", "kid": "k1"}))
    body = b64url(orjson.dumps({"iss": "partner", "aud": "rabbot", "exp": int(time.time()) + 60}))
    fetch = StubFetch(jwks(jwk("RS256", "k1")))
    await assert_rejected(jwks_verifier(fetch), f"{head}.{body}.")
    assert fetch.calls == 0  # refused before any key is looked up


async def test_token_signed_by_another_key_with_a_known_kid_is_rejected() -> None:
    intruder = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fetch = StubFetch(jwks(jwk("RS256", "k1")))
    await assert_rejected(jwks_verifier(fetch), token("RS256", key=intruder))


async def test_key_type_must_match_the_algorithm() -> None:
    # A JWKS entry claiming RS256 for an EC key is unusable; the EC key is ES256 only.
    mislabeled = {**jwk("ES256", "k1"), "alg": "RS256"}
    fetch = StubFetch(jwks(mislabeled, jwk("ES256", "k2")))
    await assert_rejected(jwks_verifier(fetch), token("ES256", kid="k1"))


async def test_weak_rsa_keys_are_refused_where_they_are_loaded() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.warns(InsecureKeyLengthWarning):  # PyJWT only warns when signing
        weak_token = token("RS256", key=weak)
    only_weak = jwks_verifier(StubFetch(jwks(jwk("RS256", "k1", weak))))
    with pytest.raises(PartnerError):  # no usable key: the partner's keys are unavailable
        await only_weak.verify(weak_token)
    beside_a_good_one = StubFetch(jwks(jwk("RS256", "k1", weak), jwk("ES256", "k2")))
    await assert_rejected(jwks_verifier(beside_a_good_one), weak_token)
    with pytest.raises(ValueError, match="1024 bits is too short"):
        StaticKeys([public_pem(weak)])


_HOUR_AGO, _IN_AN_HOUR = "an hour ago", "in an hour"


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"exp": _HOUR_AGO}, "token expired"),
        ({"exp": None}, "invalid token"),
        ({"iss": "someone-else"}, "invalid token"),
        ({"iss": None}, "invalid token"),
        ({"aud": "another-gateway"}, "invalid token"),
        ({"aud": None}, "invalid token"),
        ({"nbf": _IN_AN_HOUR}, "invalid token"),
        ({"iat": _IN_AN_HOUR}, "invalid token"),
    ],
)
async def test_required_claims_are_enforced(claims: dict[str, Any], detail: str) -> None:
    # Times are taken when the test runs: taken when the module was collected, "an hour
    # ahead" was in the past in a suite that ran longer than an hour (a loaded machine).
    at = {_HOUR_AGO: int(time.time()) - 3600, _IN_AN_HOUR: int(time.time()) + 3600}
    claims = {k: at.get(v, v) if isinstance(v, str) else v for k, v in claims.items()}
    fetch = StubFetch(jwks(jwk("EdDSA", "k1")))
    await assert_rejected(jwks_verifier(fetch), token("EdDSA", **claims), detail)


async def test_claims_not_configured_are_not_required() -> None:
    fetch = StubFetch(jwks(jwk("ES256", "k1")))
    verifier = jwks_verifier(fetch, policy=JwtPolicy(require=()))
    claims = await verifier.verify(token("ES256", exp=None, iss=None, aud="anything"))
    assert claims["sub"] == "tracker-7"


@pytest.mark.parametrize("algorithms", [(), ("HS256",), ("RS256", "HS256"), ("none",)])
def test_policy_refuses_symmetric_or_unknown_algorithms(algorithms: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="subset of RS256, ES256, EdDSA"):
        JwtPolicy(algorithms=algorithms)


def test_pem_keys_must_fit_the_policy() -> None:
    with pytest.raises(ValueError, match="RS256"):
        StaticKeys([public_pem(KEYS["RS256"])], algorithms=("ES256",))
    with pytest.raises(ValueError, match="PEM"):
        StaticKeys(["not a pem"])
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="unsupported"):
        StaticKeys([public_pem(p384)])


# --- the JWKS cache ---------------------------------------------------------------------


async def test_keys_are_cached_for_the_ttl_then_refetched() -> None:
    clock = Clock()
    fetch = StubFetch(jwks(jwk("RS256", "k1")))
    verifier = jwks_verifier(fetch, clock)
    for _ in range(3):
        await verifier.verify(token())
    assert fetch.calls == 1
    clock.now += 301
    await verifier.verify(token())
    assert fetch.calls == 2


async def test_unknown_kid_refetches_at_most_once_per_interval() -> None:
    clock = Clock()
    fetch = StubFetch(jwks(jwk("RS256", "k1")))
    verifier = jwks_verifier(fetch, clock)
    await verifier.verify(token())
    clock.now += 31
    for _ in range(20):
        await assert_rejected(verifier, token(kid="never-heard-of-it"))
    assert fetch.calls == 2


async def test_a_key_the_partner_just_added_is_picked_up() -> None:
    clock = Clock()
    fetch = StubFetch(jwks(jwk("RS256", "k1")))
    verifier = jwks_verifier(fetch, clock)
    await verifier.verify(token())
    fetch.body = jwks(jwk("RS256", "k1"), jwk("ES256", "k2"))
    clock.now += 31
    assert (await verifier.verify(token("ES256", kid="k2")))["sub"] == "tracker-7"
    assert fetch.calls == 2


async def test_stale_keys_serve_while_the_partner_is_down() -> None:
    clock = Clock()
    fetch = StubFetch(jwks(jwk("RS256", "k1")))
    verifier = jwks_verifier(fetch, clock)
    await verifier.verify(token())
    fetch.body = aiohttp.ClientConnectionError("connection refused")
    clock.now += 400
    await verifier.verify(token())
    await verifier.verify(token())
    assert fetch.calls == 2  # and no retry storm


@pytest.mark.parametrize(
    "body",
    [
        aiohttp.ClientConnectionError("down"),
        TimeoutError(),
        b"<html>not json</html>",
        b'{"keys": []}',
        b'{"keys": "nope"}',
        b"[]",
        jwks({"kty": "oct", "k": "c2VjcmV0"}),
        jwks(jwk("RS256", "k1"), {"kty": "EC"}) + b" " * 300_000,
    ],
)
async def test_no_keys_at_all_is_a_partner_error(body: bytes | Exception) -> None:
    verifier = jwks_verifier(StubFetch(body))
    with pytest.raises(PartnerError):
        await verifier.verify(token())


async def test_keys_marked_for_encryption_are_skipped() -> None:
    fetch = StubFetch(jwks(jwk("RS256", "k1", use="enc"), jwk("ES256", "k2")))
    verifier = jwks_verifier(fetch)
    await assert_rejected(verifier, token("RS256"))
    assert (await verifier.verify(token("ES256", kid="k2")))["sub"] == "tracker-7"


async def test_concurrent_requests_share_one_fetch() -> None:
    release = asyncio.Event()

    class SlowFetch(StubFetch):
        async def __call__(self, url: str) -> bytes:
            await release.wait()
            return await super().__call__(url)

    fetch = SlowFetch(jwks(jwk("EdDSA", "k1")))
    verifier = jwks_verifier(fetch)
    pending = [asyncio.ensure_future(verifier.verify(token("EdDSA"))) for _ in range(25)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*pending)
    assert len(results) == 25
    assert fetch.calls == 1


async def test_kidless_token_tries_each_key_of_its_algorithm() -> None:
    second = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fetch = StubFetch(jwks(jwk("RS256", "a"), jwk("RS256", "b", second)))
    claims = await jwks_verifier(fetch).verify(token("RS256", kid=None, key=second))
    assert claims["sub"] == "tracker-7"


async def test_jwks_from_a_real_local_server() -> None:
    served = jwks(jwk("ES256", "k1"))
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(body=served, content_type="application/json")

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", handler)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:

        async def fetch(url: str) -> bytes:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                response.raise_for_status()
                return await response.read()

        url = str(server.make_url("/.well-known/jwks.json"))
        verifier = PartnerJwtVerifier.from_jwks(url, fetch, POLICY)
        assert (await verifier.verify(token("ES256")))["sub"] == "tracker-7"
        await verifier.verify(token("ES256"))
    assert hits == 1


def test_jwks_cache_repr_shows_no_key_material() -> None:
    keys = JwksKeys(JWKS_URL, StubFetch(b""))
    assert repr(keys) == f"JwksKeys({JWKS_URL!r}, keys=0)"
