"""Partners' HMAC schemes: each preset against a signature computed here from the partner's
published recipe (with hmac/hashlib, not with the gateway's code), the published example
vectors, and every way a signature can be wrong."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest

from gateway.auth import partner_hmac
from gateway.auth.partner_hmac import SchemeError, scheme_from, verify
from gateway.auth.signatures import SignatureRejected

NOW = 1_795_685_112
BODY = b'{"action":"vehicle_location_updated","vehicle_id":1984895,"lat":-23.56118}'
TEXT_SECRET = "d3b07384d113edec49eaa6238ad5ff00"
B64_SECRET = base64.b64encode(b"samsara secret key bytes").decode()


def _hex(key: bytes, message: bytes, algorithm: str) -> str:
    return hmac.new(key, message, getattr(hashlib, algorithm)).hexdigest()


# preset → (secret, headers a partner sends for BODY at NOW), computed from its docs' recipe.
def _motive() -> tuple[str, dict[str, str]]:
    # "take the HMAC-SHA1 hex digest of the JSON payload using the shared secret"
    return TEXT_SECRET, {"X-KT-Webhook-Signature": _hex(TEXT_SECRET.encode(), BODY, "sha1")}


def _samsara() -> tuple[str, dict[str, str]]:
    # v1=<hex HMAC-SHA256 over "v1:" + X-Samsara-Timestamp + ":" + body>, keyed by the
    # base64-decoded secret key of the webhook.
    message = b"v1:" + str(NOW).encode() + b":" + BODY
    signature = "v1=" + _hex(base64.b64decode(B64_SECRET), message, "sha256")
    return B64_SECRET, {"X-Samsara-Signature": signature, "X-Samsara-Timestamp": str(NOW)}


def _fleetio() -> tuple[str, dict[str, str]]:
    # "compute the HMAC SHA-256 digest of the raw HTTP body using the webhook secret as the
    # key, and compare it with the X-Fleetio-Webhook-Signature HTTP header"
    signature = _hex(TEXT_SECRET.encode(), BODY, "sha256")
    return TEXT_SECRET, {"X-Fleetio-Webhook-Signature": signature}


def _github() -> tuple[str, dict[str, str]]:
    # X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the payload>
    signature = "sha256=" + _hex(TEXT_SECRET.encode(), BODY, "sha256")
    return TEXT_SECRET, {"X-Hub-Signature-256": signature}


PRESETS = {"motive": _motive, "samsara": _samsara, "fleetio": _fleetio, "github": _github}


def rejected(scheme: Any, secrets: list[str], headers: dict[str, str], body: bytes = BODY) -> str:
    with pytest.raises(SignatureRejected) as caught:
        verify(scheme, secrets, headers, body, now=NOW)
    return caught.value.reason


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_verifies_the_partners_own_signature(preset: str) -> None:
    secret, headers = PRESETS[preset]()
    scheme = scheme_from({"preset": preset})
    assert verify(scheme, [secret], headers, BODY, now=NOW)
    signature_header = scheme.header
    timestamp = headers.get(scheme.timestamp_header or "", "")
    signed = scheme.sign(scheme.key(secret), BODY, timestamp=timestamp)
    assert signed == headers[signature_header]
    lower = {name.lower(): value for name, value in headers.items()}
    assert verify(scheme, [secret], lower, BODY, now=NOW)  # header names ignore case


def test_motives_published_example() -> None:
    # developer.gomotive.com, "Verifying Authenticity": body ["fault_code_closed"] with the
    # shared secret below has X-KT-Webhook-Signature f04a8386...bb72.
    scheme = scheme_from({"preset": "motive"})
    headers = {"X-KT-Webhook-Signature": "f04a8386a21a6cba0447024e83b3f0983352bb72"}
    secret = "d9d36bea41c44ae49d1bfc4a48ba2abe"
    assert verify(scheme, [secret], headers, b'["fault_code_closed"]', now=NOW)


def test_githubs_published_example() -> None:
    # docs.github.com, "Validating webhook deliveries", testing the validation.
    scheme = scheme_from({"preset": "github"})
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    headers = {"X-Hub-Signature-256": signature}
    assert verify(scheme, ["It's a Secret to Everybody"], headers, b"Hello, World!", now=NOW)


def test_a_scheme_of_ones_own_sha512_base64_over_id_timestamp_and_body() -> None:
    auth = {
        "algorithm": "sha512",
        "header": "X-Signature",
        "encoding": "base64",
        "prefix": "s=",
        "signed_content": "{id}.{timestamp}.{body}",
        "timestamp_header": "X-Timestamp",
        "id_header": "X-Message-Id",
        "tolerance_seconds": 60,
    }
    scheme = scheme_from(auth)
    mac = hmac.new(TEXT_SECRET.encode(), b"msg_7." + str(NOW).encode() + b"." + BODY, "sha512")
    headers = {
        "X-Signature": "s=" + base64.b64encode(mac.digest()).decode(),
        "X-Timestamp": str(NOW),
        "X-Message-Id": "msg_7",
    }
    assert verify(scheme, [TEXT_SECRET], headers, BODY, now=NOW + 60).key == "id:msg_7"
    assert rejected(scheme, [TEXT_SECRET], {**headers, "X-Message-Id": "msg_8"}) == "mismatch"
    assert rejected(scheme, [TEXT_SECRET], {**headers, "X-Timestamp": str(NOW - 61)}) == "stale"


def test_presets_can_be_overridden() -> None:
    scheme = scheme_from(
        {"preset": "github", "header": "X-Hub-Signature", "algorithm": "sha1", "prefix": "sha1="}
    )
    signature = "sha1=" + _hex(TEXT_SECRET.encode(), BODY, "sha1")
    assert verify(scheme, [TEXT_SECRET], {"X-Hub-Signature": signature}, BODY, now=NOW)


@pytest.mark.parametrize(
    ("preset", "change", "reason"),
    [
        ("github", lambda h: {}, "missing"),
        ("samsara", lambda h: {"X-Samsara-Signature": h["X-Samsara-Signature"]}, "missing"),
        ("github", lambda h: {"X-Hub-Signature-256": "sha256="}, "malformed"),
        # a truncated hex
        ("github", lambda h: {"X-Hub-Signature-256": h["X-Hub-Signature-256"][:-2]}, "malformed"),
        (
            "motive",
            lambda h: {"X-KT-Webhook-Signature": h["X-KT-Webhook-Signature"] + "0"},
            "malformed",
        ),
        ("motive", lambda h: {"X-KT-Webhook-Signature": "zz" * 20}, "malformed"),
        # the wrong algorithm: a SHA-1 signature where SHA-256 is expected, or its prefix
        (
            "fleetio",
            lambda h: {"X-Fleetio-Webhook-Signature": _hex(b"k", BODY, "sha1")},
            "malformed",
        ),
        (
            "github",
            lambda h: {"X-Hub-Signature-256": "sha1=" + _hex(b"k", BODY, "sha1")},
            "malformed",
        ),
        ("github", lambda h: {"X-Hub-Signature-256": h["X-Hub-Signature-256"][7:]}, "malformed"),
        # a replayed or stale timestamp, a timestamp from the future, one that is not a number
        ("samsara", lambda h: {**h, "X-Samsara-Timestamp": str(NOW - 301)}, "stale"),
        ("samsara", lambda h: {**h, "X-Samsara-Timestamp": str(NOW + 301)}, "stale"),
        ("samsara", lambda h: {**h, "X-Samsara-Timestamp": "1.7e9"}, "malformed"),
        ("samsara", lambda h: {**h, "X-Samsara-Timestamp": str(NOW - 1)}, "mismatch"),
        ("motive", lambda h: {"X-KT-Webhook-Signature": _hex(b"other", BODY, "sha1")}, "mismatch"),
    ],
)
def test_bad_signatures_are_refused_with_a_reason(preset: str, change: Any, reason: str) -> None:
    secret, headers = PRESETS[preset]()
    scheme = scheme_from({"preset": preset})
    assert rejected(scheme, [secret], change(headers)) == reason


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_changed_body_or_another_secret_is_a_mismatch(preset: str) -> None:
    secret, headers = PRESETS[preset]()
    scheme = scheme_from({"preset": preset})
    assert rejected(scheme, [secret], headers, BODY + b" ") == "mismatch"
    other = base64.b64encode(b"another key").decode()
    assert rejected(scheme, [other], headers) == "mismatch"
    assert rejected(scheme, [], headers) == "mismatch"


def test_any_of_several_secrets_verifies_during_a_rotation() -> None:
    secret, headers = _samsara()
    scheme = scheme_from({"preset": "samsara"})
    old = base64.b64encode(b"the old key").decode()
    assert verify(scheme, [old, secret], headers, BODY, now=NOW)
    assert verify(scheme, [secret, old], headers, BODY, now=NOW)
    # A secret kept from before the scheme changed (not base64) cannot match, nor break it.
    assert verify(scheme, ["not base64!", secret], headers, BODY, now=NOW)


def test_a_list_takes_the_signatures_with_the_prefix_and_thousands_are_refused_unread() -> None:
    """Standard Webhooks' layout under a partner's names: signatures separated by blanks, any
    with the prefix may match, others are of versions not checked; past 16 parts the header is
    `malformed` before any signature is decoded, whatever they are."""
    scheme = scheme_from(
        {"algorithm": "sha256", "header": "X-Sig", "encoding": "base64", "prefix": "v1,"}
    )
    good = "v1," + base64.b64encode(hmac.digest(TEXT_SECRET.encode(), BODY, "sha256")).decode()
    other = "v1," + base64.b64encode(hmac.digest(b"the new one", BODY, "sha256")).decode()
    for header in (good, f"{other} {good}", f"v1a,AAAA  {good}\tv2,xyz", f"{good} {other}"):
        assert verify(scheme, [TEXT_SECRET], {"X-Sig": header}, BODY, now=NOW), header
    assert rejected(scheme, [TEXT_SECRET], {"X-Sig": other}) == "mismatch"
    assert rejected(scheme, [TEXT_SECRET], {"X-Sig": "v1a,AAAA v2,xyz"}) == "malformed"
    assert rejected(scheme, [TEXT_SECRET], {"X-Sig": f"v1,!! {good}"}) == "malformed"
    crowded = " ".join([good] * 5000)
    with pytest.raises(SignatureRejected, match="more than 16 parts"):
        verify(scheme, [TEXT_SECRET], {"X-Sig": crowded}, BODY, now=NOW)
    # A prefix with a blank in it: the header is that one signature, not a list.
    spaced = scheme_from({"algorithm": "sha256", "header": "X-Sig", "prefix": "HMAC "})
    signed = {"X-Sig": "HMAC " + _hex(TEXT_SECRET.encode(), BODY, "sha256")}
    assert verify(spaced, [TEXT_SECRET], signed, BODY, now=NOW)


def test_the_replay_key_is_the_same_for_the_same_request_only() -> None:
    secret, headers = _samsara()
    scheme = scheme_from({"preset": "samsara"})
    replay = verify(scheme, [secret], headers, BODY, now=NOW)
    assert replay == verify(scheme, [secret], headers, BODY, now=NOW + 100)
    signed = b"v1:" + str(NOW).encode() + b":" + BODY
    assert replay.key == "signed:" + hashlib.sha256(signed).hexdigest()
    assert replay.named == "signed timestamp and body"
    _, other = _github()
    github = scheme_from({"preset": "github"})
    assert verify(github, [TEXT_SECRET], other, BODY, now=NOW).key != replay.key
    later = {**headers, "X-Samsara-Timestamp": str(NOW + 1)}
    message = b"v1:" + str(NOW + 1).encode() + b":" + BODY
    later["X-Samsara-Signature"] = "v1=" + _hex(base64.b64decode(secret), message, "sha256")
    assert verify(scheme, [secret], later, BODY, now=NOW).key != replay.key


def test_the_replay_key_is_the_signed_content_however_the_signatures_are_offered() -> None:
    """Not the first signature offered: reordered, after a junk one, in upper case, or made
    with another secret of a rotation, a copy has the key of the message it copies."""
    scheme = scheme_from(
        {
            "algorithm": "sha256",
            "header": "X-Sig",
            "signature_field": "v1",
            "timestamp_field": "t",
            "signed_content": "{timestamp}.{body}",
        }
    )
    old, new = "the old secret", "the new secret"
    content = str(NOW).encode() + b"." + BODY
    good, other = _hex(old.encode(), content, "sha256"), _hex(new.encode(), content, "sha256")
    junk = "00" * 32
    keys = {
        verify(scheme, [new, old], {"X-Sig": header}, BODY, now=NOW).key
        for header in (
            f"t={NOW},v1={good}",
            f"t={NOW},v1={junk},v1={good}",
            f"v1={good},t={NOW},v1={junk}",
            f"t={NOW},v1={good.upper()}",
            f"t={NOW},v1={other},v1={good}",
            f"t={NOW},v1={other}",
        )
    }
    assert keys == {"signed:" + hashlib.sha256(content).hexdigest()}
    # The key an earlier version kept the message under: its matching signature's.
    both = verify(scheme, [new, old], {"X-Sig": f"t={NOW},v1={junk},v1={good}"}, BODY, now=NOW)
    assert both.legacy == (f"sig:{NOW}:{good}",)


@pytest.mark.parametrize(
    ("auth", "field"),
    [
        ({"preset": "acme"}, "preset"),
        ({"header": "X-Sig"}, "algorithm"),
        ({"algorithm": "sha256"}, "header"),
        ({"algorithm": "md5", "header": "X-Sig"}, "algorithm"),
        ({"preset": "github", "encoding": "base32"}, "encoding"),
        ({"preset": "github", "secret_encoding": "hex"}, "secret_encoding"),
        ({"preset": "github", "signed_content": "{timestamp}"}, "signed_content"),
        ({"preset": "github", "signed_content": "{body}{body}"}, "signed_content"),
        ({"preset": "github", "signed_content": "{body}.{secret}"}, "signed_content"),
        ({"preset": "github", "signed_content": "{body!r}"}, "signed_content"),
        ({"preset": "github", "signed_content": "{body"}, "signed_content"),
        ({"preset": "github", "signed_content": "{timestamp}.{body}"}, "timestamp_header"),
        ({"preset": "github", "signed_content": "{id}.{body}"}, "id_header"),
        ({"preset": "github", "timestamp_header": "X-Ts"}, "signed_content"),
        ({"preset": "samsara", "tolerance_seconds": 0}, "tolerance_seconds"),
        ({"preset": "samsara", "tolerance_seconds": True}, "tolerance_seconds"),
    ],
)
def test_schemes_that_cannot_work_name_the_member(auth: dict[str, Any], field: str) -> None:
    with pytest.raises(SchemeError) as caught:
        scheme_from(auth)
    assert caught.value.field == field


def test_secrets_fit_the_scheme() -> None:
    samsara = scheme_from({"preset": "samsara"})
    assert samsara.key(B64_SECRET) == b"samsara secret key bytes"
    with pytest.raises(ValueError, match="base64"):
        samsara.key("not base64!")
    # Its `=` padding is optional, as Standard Webhooks' libraries take a secret; URL-safe
    # base64 and a whsec_ secret are refused saying what to give instead.
    unpadded = base64.b64encode(b"a 25 byte key for samsara").decode().rstrip("=")
    assert samsara.key(unpadded) == b"a 25 byte key for samsara"
    with pytest.raises(ValueError, match="URL-safe"):
        samsara.key(base64.urlsafe_b64encode(b"\xfb\xff" * 8).decode())
    with pytest.raises(ValueError, match="what follows whsec_"):
        samsara.key("whsec_" + B64_SECRET)
    motive = scheme_from({"preset": "motive"})
    assert motive.key("any text") == b"any text"
    issued = partner_hmac.generate_secret(motive)
    assert len(bytes.fromhex(issued)) == 32
    assert len(base64.b64decode(partner_hmac.generate_secret(samsara), validate=True)) == 32
