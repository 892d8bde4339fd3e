"""Secrets at rest: the secret box (encryption under the key ring) and password hashes."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from gateway.auth.keyring import KeyRing
from gateway.auth.secretbox import SecretBox, SecretBoxError

NEW_KEY = "new-root-key-0123456789abcdefghij"
OLD_KEY = "old-root-key-0123456789abcdefghij"
CREDENTIALS = {"type": "oauth2_client_credentials", "client_id": "frota", "client_secret": "s3cr3t"}


def box(secret: str = NEW_KEY) -> SecretBox:
    return SecretBox(KeyRing.from_secret(secret))


def test_text_and_objects_round_trip() -> None:
    sealed_text, sealed_object = box().seal("whsec_abc"), box().seal(CREDENTIALS)
    assert box().open(sealed_text) == "whsec_abc"
    assert box().open(sealed_object) == CREDENTIALS
    assert box().open_text(sealed_text) == "whsec_abc"
    assert box().open_json(sealed_object) == CREDENTIALS


def test_ciphertext_reveals_nothing_and_is_never_repeated() -> None:
    first, second = box().seal("s3cr3t"), box().seal("s3cr3t")
    assert first != second
    assert "s3cr3t" not in first
    assert repr(box()) == "SecretBox()"


def test_wrong_kind_is_a_clear_error() -> None:
    with pytest.raises(SecretBoxError, match="not text"):
        box().open_text(box().seal(CREDENTIALS))
    with pytest.raises(SecretBoxError, match="not an object"):
        box().open_json(box().seal("plain"))


def test_context_binds_a_ciphertext_to_its_record() -> None:
    sealed = box().seal(CREDENTIALS, context="partner:1:auth")
    assert box().open(sealed, context="partner:1:auth") == CREDENTIALS
    with pytest.raises(SecretBoxError, match="another record"):
        box().open(sealed, context="partner:2:auth")
    with pytest.raises(SecretBoxError):
        box().open(sealed)


def test_rotation_old_key_opens_and_rotate_reseals_under_the_new_one() -> None:
    sealed_old = box(OLD_KEY).seal(CREDENTIALS, context="c")
    rotated_box = box(f"{NEW_KEY},{OLD_KEY}")
    assert rotated_box.open(sealed_old, context="c") == CREDENTIALS
    assert rotated_box.needs_rotation(sealed_old)
    resealed = rotated_box.rotate(sealed_old)
    assert not rotated_box.needs_rotation(resealed)
    assert box(NEW_KEY).open(resealed, context="c") == CREDENTIALS
    with pytest.raises(SecretBoxError):
        box(NEW_KEY).open(sealed_old, context="c")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not a token",
        "gAAAAA",
        "é",
        Fernet(Fernet.generate_key()).encrypt(b'{"c":"","s":"x"}').decode(),
    ],
)
def test_invalid_tokens_fail_without_showing_content(token: str) -> None:
    for attempt in (box().open, box().rotate, box().needs_rotation):
        with pytest.raises(SecretBoxError, match="cannot be decrypted") as caught:
            attempt(token)
        assert token not in caught.value.detail or token == ""
        assert caught.value.status == 500


def test_tampered_ciphertext_is_refused() -> None:
    sealed = box().seal("s3cr3t")
    middle = len(sealed) // 2
    tampered = sealed[:middle] + ("A" if sealed[middle] != "A" else "B") + sealed[middle + 1 :]
    with pytest.raises(SecretBoxError):
        box().open(tampered)
