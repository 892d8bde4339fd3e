"""Standard Webhooks signatures: the known answer, rotation, replay window, tampering."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.auth import webhook_signature as ws
from gateway.errors import Unauthorized

VECTORS = Path(__file__).parent / "data" / "standard_webhooks.json"
NOW = 1_700_000_000
BODY = b'{"type":"vehicle.position","data":{"plate":"ABC1D23","speed_kmh":42}}'


def load_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(VECTORS.read_text())["cases"]
    return cases


@pytest.mark.parametrize("case", load_cases())
def test_known_answer_from_the_specification(case: dict[str, Any]) -> None:
    msg_id, stamp = case["webhook-id"], int(case["webhook-timestamp"])
    body = case["body"].encode()
    assert ws.sign(case["secret"], msg_id, stamp, body) == case["webhook-signature"]
    headers = {
        name: case[name] for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    assert ws.verify([case["secret"]], headers, body, now=stamp + 10) == msg_id


def test_generated_secrets_have_the_standard_shape() -> None:
    secret = ws.generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24
    assert ws.generate_secret() != secret


def test_outbound_headers_verify_inbound() -> None:
    secret = ws.generate_secret()
    headers = ws.signed_headers([secret], "msg_1", NOW, BODY)
    assert headers["webhook-timestamp"] == str(NOW)
    assert ws.verify([secret], headers, BODY, now=NOW) == "msg_1"


def test_rotation_signs_with_both_and_either_verifies() -> None:
    old, new = ws.generate_secret(), ws.generate_secret()
    header = ws.signature_header([new, old], "msg_1", NOW, BODY)
    assert header.count("v1,") == 2 and " " in header
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": header}
    assert ws.verify([old], headers, BODY, now=NOW) == "msg_1"
    assert ws.verify([new], headers, BODY, now=NOW) == "msg_1"
    single = ws.signed_headers([old], "msg_1", NOW, BODY)
    assert ws.verify([new, old], single, BODY, now=NOW) == "msg_1"


def test_header_names_are_matched_without_regard_to_case() -> None:
    secret = ws.generate_secret()
    headers = {k.title(): v for k, v in ws.signed_headers([secret], "m", NOW, BODY).items()}
    assert ws.verify([secret], headers, BODY, now=NOW) == "m"


def test_unknown_signature_versions_are_ignored() -> None:
    secret = ws.generate_secret()
    headers = ws.signed_headers([secret], "m", NOW, BODY)
    headers["webhook-signature"] = "v1a,AAAA " + headers["webhook-signature"] + " junk"
    assert ws.verify([secret], headers, BODY, now=NOW) == "m"


def test_a_header_of_thousands_of_signatures_is_refused_before_they_are_compared() -> None:
    secret = ws.generate_secret()
    headers = ws.signed_headers([secret], "m", NOW, BODY)
    crowded = {**headers, "webhook-signature": " ".join([headers["webhook-signature"]] * 5000)}
    with pytest.raises(Unauthorized, match="more than 16 parts"):
        ws.verify([secret], crowded, BODY, now=NOW)
    sixteen = {**headers, "webhook-signature": " ".join([headers["webhook-signature"]] * 16)}
    assert ws.verify([secret], sixteen, BODY, now=NOW) == "m"


def test_svix_header_names_are_read_when_the_standard_ones_are_not_all_there() -> None:
    secret = ws.generate_secret()
    headers = ws.signed_headers([secret], "m", NOW, BODY)
    svix = {name.replace("webhook-", "svix-"): value for name, value in headers.items()}
    assert ws.verify([secret], svix, BODY, now=NOW) == "m"
    mixed = {"svix-id": "m", **{k: v for k, v in headers.items() if k != "webhook-id"}}
    with pytest.raises(Unauthorized, match="missing"):
        ws.verify([secret], mixed, BODY, now=NOW)


def reject(headers: dict[str, str], body: bytes = BODY, secrets: list[str] | None = None) -> str:
    with pytest.raises(Unauthorized) as caught:
        ws.verify(secrets or [SECRET], headers, body, now=NOW)
    return caught.value.detail


SECRET = ws.generate_secret()
GOOD = ws.signed_headers([SECRET], "msg_1", NOW, BODY)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers_are_rejected(missing: str) -> None:
    headers = {k: v for k, v in GOOD.items() if k != missing}
    assert reject(headers) == "missing webhook signature headers"


@pytest.mark.parametrize("offset", [-301, 301, -86400, 10**6])
def test_timestamps_outside_five_minutes_are_rejected(offset: int) -> None:
    stamp = NOW + offset
    headers = ws.signed_headers([SECRET], "msg_1", stamp, BODY)
    assert reject(headers) == "webhook timestamp outside the tolerance"


@pytest.mark.parametrize("offset", [-300, 300])
def test_timestamps_at_the_edge_of_the_window_pass(offset: int) -> None:
    headers = ws.signed_headers([SECRET], "msg_1", NOW + offset, BODY)
    assert ws.verify([SECRET], headers, BODY, now=NOW) == "msg_1"


@pytest.mark.parametrize("stamp", ["abc", "-5", "1.5e9", "١٧٠٠٠٠٠٠٠٠", "9" * 40])
def test_malformed_timestamps_are_rejected(stamp: str) -> None:
    assert reject({**GOOD, "webhook-timestamp": stamp}) == "invalid webhook timestamp"


@pytest.mark.parametrize(
    ("headers", "body", "secrets"),
    [
        pytest.param(GOOD, BODY + b" ", None, id="body-changed"),
        pytest.param({**GOOD, "webhook-id": "msg_2"}, BODY, None, id="id-changed"),
        pytest.param({**GOOD, "webhook-timestamp": str(NOW + 1)}, BODY, None, id="stamp-changed"),
        pytest.param(GOOD, BODY, [ws.generate_secret()], id="other-secret"),
        pytest.param({**GOOD, "webhook-signature": "v1,"}, BODY, None, id="empty-signature"),
        pytest.param({**GOOD, "webhook-signature": "v1,é"}, BODY, None, id="non-ascii"),
        pytest.param(
            {**GOOD, "webhook-signature": GOOD["webhook-signature"].replace("v1,", "v2,")},
            BODY,
            None,
            id="other-version",
        ),
    ],
)
def test_no_matching_signature_is_rejected(
    headers: dict[str, str], body: bytes, secrets: list[str] | None
) -> None:
    assert reject(headers, body, secrets) == "no matching webhook signature"


def test_secrets_work_with_or_without_the_prefix() -> None:
    bare = SECRET.removeprefix("whsec_")
    assert ws.sign(bare, "m", NOW, BODY) == ws.sign(SECRET, "m", NOW, BODY)


def test_unpadded_secrets_are_the_padded_ones_as_the_official_libraries_read_them() -> None:
    """Python's pads ("add padding in case whsecret is unpadded base64"): 32 bytes are 43
    characters without their `=`, 16 bytes 22 without `==`."""
    for size in (32, 16, 24):
        padded = "whsec_" + base64.b64encode(bytes(range(size))).decode()
        unpadded = padded.rstrip("=")
        assert ws.secret_key(unpadded) == bytes(range(size))
        assert ws.sign(unpadded, "m", NOW, BODY) == ws.sign(padded, "m", NOW, BODY)


@pytest.mark.parametrize(
    ("secret", "said"),
    [
        ("whsec_", "must not be empty"),
        ("whsec_not base64!", "not base64"),
        ("whsec_abcde", "not base64"),  # 5 characters: no base64 is that long
        ("whsec_ab=cd", "not base64"),
        ("whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(), "URL-safe"),
    ],
)
def test_malformed_secrets_are_a_value_error_saying_why(secret: str, said: str) -> None:
    with pytest.raises(ValueError, match="webhook secret") as caught:
        ws.sign(secret, "m", NOW, BODY)
    assert said in str(caught.value)
