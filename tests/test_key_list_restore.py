"""The key check holds which keys the stored secrets need (`kids`): a backup taken during a
rotation (`<new>,<old>` deployed, `gateway reseal` not yet run) and restored once the rotation
is finished (`<new>` alone) is refused at start, naming the key list to start with, instead
of starting ready and failing every delivery whose secret is sealed under `<old>` for good
(docs/operations.md "Backups", docs/security.md "Rotating GATEWAY_SECRET_KEY")."""

from __future__ import annotations

import pytest

from gateway.auth.keyring import KeyRing
from gateway.auth.secretbox import SecretBox
from gateway.config import ConfigError, Settings
from gateway.keys import KEY_CHECK_TEXT, check_secret_key, reseal_secrets
from gateway.store import Store
from gateway.store.connection import open_store
from tests.support import SECRET_KEY

NEW_KEY = "the-new-secret-key-0123456789abcdef0123456789"
OLD = SecretBox(KeyRing([SECRET_KEY]))
ROTATING = SecretBox(KeyRing([NEW_KEY, SECRET_KEY]))  # step 2: `<new>,<old>`
NEW = SecretBox(KeyRing([NEW_KEY]))  # the rotation finished


async def _partner_sealed_under(store: Store, box: SecretBox) -> None:
    await store.db["partners"].insert_one(
        {"tenant": "default", "name": "ERP", "auth_sealed": box.seal({"token": "x"})}
    )


async def test_a_backup_taken_mid_rotation_is_refused_on_the_new_key_alone_until_resealed(
    settings: Settings, mongodb_uri: str
) -> None:
    """Step 2 sealed the check under `<new>`: it opens under `<new>` alone, the partner's
    credential sealed under `<old>` does not. The start names the key list and the reseal."""
    async with open_store(settings, mongodb_uri) as store:
        await check_secret_key(store, OLD)
        await _partner_sealed_under(store, OLD)
        await check_secret_key(store, ROTATING)  # the backup is taken after this start
        with pytest.raises(ConfigError) as refused:
            await check_secret_key(store, NEW)
        said = str(refused.value)
        assert said.startswith("GATEWAY_SECRET_KEY lacks a key the stored secrets are sealed")
        assert f"key id {OLD.kids[0]}" in said and "`<new>,<old>`" in said
        assert "`gateway reseal`" in said
        await check_secret_key(store, ROTATING)  # the list of the backup's time starts
        assert (await reseal_secrets(store, ROTATING)).unreadable == []
        await check_secret_key(store, NEW)  # resealed: the old key can go


async def test_the_old_key_dropped_without_a_reseal_starts_when_nothing_needs_it(
    settings: Settings, mongodb_uri: str
) -> None:
    """A recorded key missing from the list is checked against every stored secret: none
    sealed under it (or only a rotated-out one whose grace ended), the start passes and the
    keys recorded are narrowed."""
    async with open_store(settings, mongodb_uri) as store:
        await check_secret_key(store, OLD)
        await check_secret_key(store, ROTATING)
        await _partner_sealed_under(store, ROTATING)
        await check_secret_key(store, NEW)
        recorded = await store.key_check.read()
        assert recorded is not None and recorded.kids == NEW.kids


async def test_a_dry_run_or_an_unfinished_reseal_keeps_the_old_key_needed(
    settings: Settings, mongodb_uri: str
) -> None:
    async with open_store(settings, mongodb_uri) as store:
        await check_secret_key(store, OLD)
        await _partner_sealed_under(store, OLD)
        await check_secret_key(store, ROTATING)
        await reseal_secrets(store, ROTATING, dry_run=True)
        with pytest.raises(ConfigError, match="lacks a key"):
            await check_secret_key(store, NEW)
        stranger = SecretBox(KeyRing(["a-key-nobody-deployed-0123456789abcdef"]))
        await _partner_sealed_under(store, stranger)  # no key opens it: reseal leaves it
        assert len((await reseal_secrets(store, ROTATING)).unreadable) == 1
        with pytest.raises(ConfigError, match="lacks a key"):
            await check_secret_key(store, NEW)


async def test_a_key_check_stored_before_the_keys_were_recorded_tries_the_stored_secrets(
    settings: Settings, mongodb_uri: str
) -> None:
    """A backup of a version that recorded no keys, taken mid-rotation (its check under
    `<new>`, its secrets under `<old>`): every stored secret must open, or the start is
    refused naming where; the start that passes records its keys."""
    async with open_store(settings, mongodb_uri) as store:
        await _partner_sealed_under(store, OLD)
        check = ROTATING.seal(KEY_CHECK_TEXT, context="gateway:secret-key-check")
        await store.db["meta"].insert_one({"_id": "secret_key", "sealed": check})
        with pytest.raises(ConfigError, match=r"no key id recorded; .* none opens partners/"):
            await check_secret_key(store, NEW)
        await check_secret_key(store, ROTATING)
        recorded = await store.key_check.read()
        assert recorded is not None and recorded.kids == ROTATING.kids
