"""The key ring and the gateway's own tokens: trigger tokens and admin tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import timedelta
from typing import Any

import jwt
import orjson
import pytest
import time_machine
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth.keyring import KeyRing, Purpose
from gateway.auth.partner_jwt import JwtPolicy, PartnerJwtVerifier
from gateway.auth.tokens import (
    AdminTokenVerifier,
    ExternalAdminVerifier,
    TriggerTokenVerifier,
    issue_admin_token,
    issue_trigger_token,
    parse_ttl,
    verify_admin_token,
    verify_trigger_token,
)
from gateway.errors import Forbidden, Unauthorized
from tests.support import set_offset

NEW_KEY = "new-root-key-0123456789abcdefghij"
OLD_KEY = "old-root-key-0123456789abcdefghij"
TRIGGER = "665f1c2e9b1e8a3d4c5b6a79"


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.from_secret(NEW_KEY)


def trigger_token(ring: KeyRing, **overrides: Any) -> str:
    args: dict[str, Any] = {"tenant": "acme", "trigger_id": TRIGGER, "token_id": "tok_1"}
    return issue_trigger_token(ring, **{**args, **overrides})


def forge(ring: KeyRing, purpose: Purpose = Purpose.TRIGGER_TOKEN, **changes: Any) -> str:
    """A token signed with the real key, whose claims/headers a test bends."""
    key = ring.signing_key(purpose)
    claims: dict[str, Any] = {
        "iss": "rabbot-gateway",
        "aud": "hooks",
        "sub": TRIGGER,
        "tenant": "acme",
        "jti": "tok_1",
        "iat": int(time.time()),
    }
    headers = {"kid": key.kid, **changes.pop("headers", {})}
    headers = {name: value for name, value in headers.items() if value is not None}
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jwt.encode(claims, key.key, algorithm="HS256", headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assert_rejected(ring: KeyRing, token: str, detail: str = "invalid token") -> None:
    with pytest.raises(Unauthorized) as caught:
        verify_trigger_token(ring, token, trigger_id=TRIGGER)
    assert caught.value.detail == detail


# --- key ring ---------------------------------------------------------------------------


def test_each_purpose_gets_its_own_key_and_kid(ring: KeyRing) -> None:
    keys = [ring.signing_key(purpose) for purpose in Purpose]
    assert len({k.key for k in keys}) == len(keys)
    assert len({k.kid for k in keys}) == len(keys)
    assert all(len(k.key) == 32 and len(k.kid) == 11 for k in keys)


def test_kid_is_stable_across_processes_and_rotation() -> None:
    alone = KeyRing.from_secret(OLD_KEY).signing_key(Purpose.TRIGGER_TOKEN)
    rotated = KeyRing.from_secret(f"{NEW_KEY},{OLD_KEY}").verification_keys(Purpose.TRIGGER_TOKEN)
    assert rotated[1] == alone
    expected = b64url(hashlib.sha256(alone.key).digest()[:8])
    assert alone.kid == expected


def test_secret_material_never_appears_in_repr(ring: KeyRing) -> None:
    key = ring.signing_key(Purpose.SECRETBOX)
    for text in (
        repr(ring),
        str(ring),
        repr(key),
        str(key),
        repr(ring.keys_by_kid(Purpose.SESSION)),
    ):
        assert NEW_KEY not in text
        assert key.key.hex() not in text and repr(key.key) not in text


def test_secret_value_is_split_on_commas_newest_first() -> None:
    ring = KeyRing.from_secret(f" {NEW_KEY} , {OLD_KEY},,{NEW_KEY}")
    keys = ring.verification_keys(Purpose.ADMIN_TOKEN)
    assert len(keys) == 2
    assert keys[0] == ring.signing_key(Purpose.ADMIN_TOKEN)
    assert set(ring.keys_by_kid(Purpose.ADMIN_TOKEN)) == {k.kid for k in keys}


@pytest.mark.parametrize("value", ["", " , ", "short", f"{NEW_KEY},tooshort"])
def test_weak_or_empty_secret_keys_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="GATEWAY_SECRET_KEY"):
        KeyRing.from_secret(value)


# --- trigger tokens ---------------------------------------------------------------------


def test_trigger_token_round_trip(ring: KeyRing) -> None:
    before = int(time.time())
    claims = verify_trigger_token(ring, trigger_token(ring), trigger_id=TRIGGER)
    assert (claims.tenant, claims.trigger_id, claims.token_id) == ("acme", TRIGGER, "tok_1")
    assert claims.issued_at.timestamp() >= before
    assert claims.expires_at is None


def test_trigger_token_with_ttl_expires(ring: KeyRing) -> None:
    token = trigger_token(ring, ttl=timedelta(hours=1), now=1_800_000_000)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["exp"] - payload["iat"] == 3600
    past = trigger_token(ring, ttl=timedelta(minutes=5), now=time.time() - 3600)
    assert_rejected(ring, past, "token expired")


def test_token_for_another_trigger_is_the_same_401(ring: KeyRing) -> None:
    with pytest.raises(Unauthorized, match=r"^invalid token$"):
        verify_trigger_token(ring, trigger_token(ring), trigger_id="665f1c2e9b1e8a3d4c5b6a7a")


def test_tokens_issued_before_a_key_rotation_keep_working() -> None:
    old_ring = KeyRing.from_secret(OLD_KEY)
    token = trigger_token(old_ring)
    rotated = KeyRing.from_secret(f"{NEW_KEY},{OLD_KEY}")
    assert verify_trigger_token(rotated, token, trigger_id=TRIGGER).token_id == "tok_1"
    new_header = jwt.get_unverified_header(trigger_token(rotated))
    assert new_header["kid"] == rotated.signing_key(Purpose.TRIGGER_TOKEN).kid
    assert_rejected(KeyRing.from_secret(NEW_KEY), token)  # old key retired: token dead


def test_alg_none_is_rejected(ring: KeyRing) -> None:
    kid = ring.signing_key(Purpose.TRIGGER_TOKEN).kid
    claims = jwt.decode(trigger_token(ring), options={"verify_signature": False})
    head = b64url(orjson.dumps({"alg": "none", "typ": "JWT", "kid": kid}))
    assert_rejected(ring, f"{head}.{b64url(orjson.dumps(claims))}.")


def test_asymmetric_token_with_our_kid_is_rejected(ring: KeyRing) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = jwt.decode(trigger_token(ring), options={"verify_signature": False})
    kid = ring.signing_key(Purpose.TRIGGER_TOKEN).kid
    assert_rejected(ring, jwt.encode(claims, private, algorithm="RS256", headers={"kid": kid}))


def test_other_hmac_algorithms_are_rejected(ring: KeyRing) -> None:
    key = ring.signing_key(Purpose.TRIGGER_TOKEN)
    claims = jwt.decode(trigger_token(ring), options={"verify_signature": False})
    token = jwt.encode(claims, key.key + key.key, algorithm="HS512", headers={"kid": key.kid})
    assert_rejected(ring, token)


def test_tampered_payload_is_rejected(ring: KeyRing) -> None:
    head, _, sig = trigger_token(ring).split(".")
    claims = {**jwt.decode(trigger_token(ring), options={"verify_signature": False})}
    claims["tenant"] = "someone-else"
    assert_rejected(ring, f"{head}.{b64url(orjson.dumps(claims))}.{sig}")


def test_tampered_signature_is_rejected(ring: KeyRing) -> None:
    head, body, sig = trigger_token(ring).split(".")
    flipped = "A" if sig[0] != "A" else "B"
    assert_rejected(ring, f"{head}.{body}.{flipped}{sig[1:]}")


def test_signature_by_hand_with_unknown_kid_is_rejected(ring: KeyRing) -> None:
    head = b64url(orjson.dumps({"alg": "HS256", "kid": "AAAAAAAAAAA"}))
    body = b64url(orjson.dumps({"sub": TRIGGER}))
    sig = hmac.new(b"guess", f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert_rejected(ring, f"{head}.{body}.{b64url(sig)}")


_IN_AN_HOUR = object()


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"aud": "admin"}, id="wrong-aud"),
        pytest.param({"aud": ["hooks", "admin"]}, id="aud-list"),
        pytest.param({"iss": "someone-else"}, id="wrong-iss"),
        pytest.param({"iat": _IN_AN_HOUR}, id="iat-in-future"),
        pytest.param({"nbf": _IN_AN_HOUR}, id="nbf-in-future"),
        pytest.param({"jti": None}, id="no-jti"),
        pytest.param({"iat": None}, id="no-iat"),
        pytest.param({"sub": None}, id="no-sub"),
        pytest.param({"tenant": None}, id="no-tenant"),
        pytest.param({"tenant": ""}, id="empty-tenant"),
        pytest.param({"jti": 7}, id="jti-not-a-string"),
        pytest.param({"headers": {"kid": "AAAAAAAAAAA"}}, id="unknown-kid"),
        pytest.param({"headers": {"kid": None}}, id="no-kid"),
        pytest.param({"headers": {"crit": ["exp"]}}, id="unknown-crit"),
    ],
)
def test_bent_claims_are_rejected_as_invalid_token(ring: KeyRing, changes: dict[str, Any]) -> None:
    # "An hour ahead" taken when the test runs: taken at collection, it was in the past in a
    # suite that ran longer than an hour (a loaded machine).
    changes = {k: int(time.time()) + 3600 if v is _IN_AN_HOUR else v for k, v in changes.items()}
    assert_rejected(ring, forge(ring, **changes))


def test_clock_skew_within_leeway_is_tolerated(ring: KeyRing) -> None:
    token = forge(ring, iat=int(time.time()) + 10, nbf=int(time.time()) + 10)
    assert verify_trigger_token(ring, token, trigger_id=TRIGGER).tenant == "acme"


def test_a_process_on_a_host_whose_clock_is_behind_reads_tokens_on_the_servers_clock(
    ring: KeyRing,
) -> None:
    """A token's `exp`, `nbf` and `iat` were checked on the host's own clock: a process on a
    host 2 minutes behind the database server's refused a token another process had just
    issued (its `iat` ahead), and took a token expired a minute before for valid. They are
    read on the gateway's clock: the host's, corrected by the offset it measured."""
    issued = trigger_token(ring)
    expired = forge(ring, exp=int(time.time()) - 60)
    try:
        with time_machine.travel(time.time() - 120):
            set_offset(timedelta(minutes=2))  # as the process measures it
            assert verify_trigger_token(ring, issued, trigger_id=TRIGGER).tenant == "acme"
            assert_rejected(ring, expired, "token expired")
    finally:
        set_offset(timedelta())


def test_a_token_of_another_purpose_is_rejected(ring: KeyRing) -> None:
    assert_rejected(ring, forge(ring, Purpose.ADMIN_TOKEN))
    admin = issue_admin_token(ring, tenant="acme", role="admin", subject=TRIGGER, ttl=timedelta(1))
    assert_rejected(ring, admin)


@pytest.mark.parametrize("junk", ["", "Bearer", "a.b.c", "...", "é.é.é", "x" * 5000])
def test_junk_is_rejected(ring: KeyRing, junk: str) -> None:
    assert_rejected(ring, junk)


def test_issue_refuses_empty_names_and_non_positive_ttl(ring: KeyRing) -> None:
    with pytest.raises(ValueError):
        trigger_token(ring, tenant="")
    with pytest.raises(ValueError):
        trigger_token(ring, ttl=timedelta(0))


# --- the remembering verifier -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_verifier_remembers_a_valid_token(ring: KeyRing) -> None:
    verifier = TriggerTokenVerifier(ring)
    token = trigger_token(ring)
    first = verifier.verify(token, trigger_id=TRIGGER)
    assert verifier.verify(token, trigger_id=TRIGGER) is first


def test_remembered_token_still_checks_the_trigger(ring: KeyRing) -> None:
    verifier = TriggerTokenVerifier(ring)
    token = trigger_token(ring)
    verifier.verify(token, trigger_id=TRIGGER)
    with pytest.raises(Unauthorized, match=r"^invalid token$"):
        verifier.verify(token, trigger_id="another")


def test_remembered_token_expires(ring: KeyRing) -> None:
    clock = Clock()
    verifier = TriggerTokenVerifier(ring, clock=clock)
    token = trigger_token(ring, ttl=timedelta(minutes=10))
    verifier.verify(token, trigger_id=TRIGGER)
    clock.now += 10 * 60 + 31
    with pytest.raises(Unauthorized, match=r"^token expired$"):
        verifier.verify(token, trigger_id=TRIGGER)


def test_verifier_rejects_what_the_function_rejects_and_stays_bounded(ring: KeyRing) -> None:
    verifier = TriggerTokenVerifier(ring, cache_size=2)
    with pytest.raises(Unauthorized):
        verifier.verify(forge(ring, aud="admin"), trigger_id=TRIGGER)
    tokens = [trigger_token(ring, token_id=f"tok_{i}") for i in range(5)]
    for token in tokens:
        verifier.verify(token, trigger_id=TRIGGER)
    assert len(verifier._cache) == 2
    assert verifier.verify(tokens[0], trigger_id=TRIGGER).token_id == "tok_0"


# --- admin tokens -----------------------------------------------------------------------


def test_admin_token_round_trip(ring: KeyRing) -> None:
    token = issue_admin_token(
        ring, tenant="acme", role="viewer", subject="ana", ttl=parse_ttl("30d")
    )
    claims = verify_admin_token(ring, token)
    assert (claims.tenant, claims.role, claims.subject) == ("acme", "viewer", "ana")
    assert claims.token_id and claims.expires_at is not None
    assert claims.expires_at.timestamp() == pytest.approx(time.time() + 30 * 86400, abs=5)


def test_expired_admin_token_says_so(ring: KeyRing) -> None:
    token = issue_admin_token(
        ring, tenant="acme", role="admin", subject="ana", ttl=timedelta(hours=1), now=1_000_000
    )
    with pytest.raises(Unauthorized, match=r"^token expired$"):
        verify_admin_token(ring, token)


def test_admin_token_needs_exp_and_a_known_role(ring: KeyRing) -> None:
    base = {"aud": "admin", "sub": "ana"}
    for changes in ({"role": "admin"}, {"role": "root", "exp": int(time.time()) + 60}):
        with pytest.raises(Unauthorized, match=r"^invalid token$"):
            verify_admin_token(ring, forge(ring, Purpose.ADMIN_TOKEN, **base, **changes))


def test_trigger_token_is_not_an_admin_token(ring: KeyRing) -> None:
    with pytest.raises(Unauthorized):
        verify_admin_token(ring, trigger_token(ring, ttl=timedelta(hours=1)))


def test_issue_admin_token_refuses_unknown_roles(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="role"):
        issue_admin_token(ring, tenant="a", role="root", subject="s", ttl=timedelta(1))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("15m", timedelta(minutes=15)),
        ("3600s", timedelta(seconds=3600)),
        (" 2w ", timedelta(weeks=2)),
    ],
)
def test_parse_ttl(text: str, expected: timedelta) -> None:
    assert parse_ttl(text) == expected


@pytest.mark.parametrize(
    "text", ["", "30", "d", "30x", "-5m", "1.5h", "0d", "30 days", "999999999w"]
)
def test_parse_ttl_explains_bad_values(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid TTL .*e\.g\. 30d, 12h, 15m, 3600s"):
        parse_ttl(text)


# --- external identity provider ---------------------------------------------------------


IDP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def idp_fetch(url: str) -> bytes:
    jwk = jwt.get_algorithm_by_name("RS256").to_jwk(IDP_KEY.public_key(), as_dict=True)
    return orjson.dumps({"keys": [{**jwk, "kid": "idp-1", "use": "sig"}]})


def idp_token(**claims: Any) -> str:
    now = int(time.time())
    base = {
        "iss": "https://idp.example",
        "aud": "gateway",
        "sub": "ana",
        "iat": now,
        "exp": now + 60,
    }
    return jwt.encode({**base, **claims}, IDP_KEY, algorithm="RS256", headers={"kid": "idp-1"})


def idp_verifier(**options: Any) -> ExternalAdminVerifier:
    policy = JwtPolicy(issuer="https://idp.example", audience="gateway")
    jwks = PartnerJwtVerifier.from_jwks("https://idp.example/jwks", idp_fetch, policy)
    return ExternalAdminVerifier(jwks, **options)


async def test_idp_token_maps_to_admin_claims() -> None:
    verifier = idp_verifier(
        tenant_claim="https://rabbot.dev/tenant",
        role_claim="realm_access.roles",
        role_values={"fleet-admin": "admin", "fleet-reader": "viewer"},
    )
    token = idp_token(
        **{"https://rabbot.dev/tenant": "acme"},
        realm_access={"roles": ["offline_access", "fleet-reader", "fleet-admin"]},
    )
    claims = await verifier.verify(token)
    assert (claims.tenant, claims.role, claims.subject) == ("acme", "admin", "ana")


async def test_idp_token_without_tenant_or_role_is_forbidden() -> None:
    verifier = idp_verifier()
    with pytest.raises(Forbidden, match="tenant"):
        await verifier.verify(idp_token(role="admin"))
    with pytest.raises(Forbidden, match="role"):
        await verifier.verify(idp_token(tenant="acme", role="superuser"))


async def test_admin_verifier_accepts_ours_and_the_idps(ring: KeyRing) -> None:
    verifier = AdminTokenVerifier(ring, idp_verifier())
    ours = issue_admin_token(ring, tenant="acme", role="admin", subject="cli", ttl=timedelta(1))
    assert (await verifier.verify(ours)).subject == "cli"
    assert (await verifier.verify(idp_token(tenant="acme", role="viewer"))).role == "viewer"
    with pytest.raises(Unauthorized):
        await verifier.verify(idp_token(tenant="acme", role="viewer", aud="elsewhere"))


async def test_an_idp_token_within_its_leeway_is_taken_again_from_the_cache(ring: KeyRing) -> None:
    """Past its `exp` by 45 s, within the identity provider's 60 s: the second call, read
    from the cache, takes it as the first did (it was re-checked with our own 30 s)."""
    verifier = AdminTokenVerifier(ring, idp_verifier())
    token = idp_token(tenant="acme", role="admin", exp=int(time.time()) - 45)
    assert (await verifier.verify(token)).subject == "ana"
    assert (await verifier.verify(token)).subject == "ana"


def test_a_token_not_valid_yet_is_invalid_whatever_its_expiry(ring: KeyRing) -> None:
    """ "token expired" is for a token that was good once."""
    key = ring.signing_key(Purpose.TRIGGER_TOKEN)
    now = int(time.time())
    claims = {"iss": "rabbot-gateway", "aud": "hooks", "sub": TRIGGER, "tenant": "acme"}
    claims |= {"jti": "tok_1", "iat": now, "nbf": now + 3600, "exp": now - 3600}
    token = jwt.encode(claims, key.key, algorithm="HS256", headers={"kid": key.kid})
    with pytest.raises(Unauthorized) as refused:
        verify_trigger_token(ring, token, trigger_id=TRIGGER)
    assert refused.value.detail == "invalid token"


async def test_admin_verifier_without_idp_refuses_asymmetric_tokens(ring: KeyRing) -> None:
    with pytest.raises(Unauthorized, match=r"^invalid token$"):
        await AdminTokenVerifier(ring).verify(idp_token(tenant="acme", role="admin"))
