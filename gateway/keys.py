"""Use cases of GATEWAY_SECRET_KEY against what the database holds: stored secrets sealed again
under its current key (`gateway reseal`), the step between deploying `<new>,<old>` and
dropping the old key (docs/security.md "Rotating GATEWAY_SECRET_KEY"); and the check, at each
process's start, that its keys open what the others sealed (`check_secret_key`)."""

from __future__ import annotations

import logging

from gateway.auth.secretbox import SecretBox, SecretBoxError
from gateway.config import ConfigError
from gateway.errors import KeyRefused, SecretDamaged, StoreUnavailable
from gateway.metrics import Metrics
from gateway.store import Store
from gateway.store.sealed import Resealed, reseal, sample

log = logging.getLogger(__name__)


async def reseal_secrets(store: Store, box: SecretBox, *, dry_run: bool = False) -> Resealed:
    """Every stored secret sealed under an older key, sealed under the current one (its
    plaintext and record context unchanged); what no key opens is named, not touched."""

    def renew(token: str) -> str | None:
        try:
            return box.rotate(token) if box.needs_rotation(token) else token
        except SecretBoxError:
            return None

    return await reseal(store.db, renew, dry_run=dry_run)


KEY_CHECK_TEXT = "rabbot-gateway: every process opens this with GATEWAY_SECRET_KEY"
_KEY_CHECK_CONTEXT = "gateway:secret-key-check"


async def key_still_opens(store: Store, box: SecretBox) -> bool:
    """Whether GATEWAY_SECRET_KEY opens the key check the database holds now. Proven, a
    stored secret that does not open here is damaged (every process that starts re-seals the
    check under its current key, `check_secret_key`, and exits when none of its keys opens
    it). Not proven (another process re-sealed the check under a key this one lacks, a
    rotation it was not given; or there is none), this process's key is the wrong one."""
    sealed = await store.key_check.sealed()
    if sealed is None:
        return False
    try:
        box.open_text(sealed, context=_KEY_CHECK_CONTEXT)
    except SecretBoxError:
        return False
    return True


async def check_secret_key(store: Store, box: SecretBox) -> None:
    """GATEWAY_SECRET_KEY opens what the database holds: the key check, opened by any of its
    keys, and sealed again under the first when an older one opened it (a rotation, as
    `reseal` does). When there is none yet (a new gateway, or one upgraded from a version
    without it) the key must open one of the secrets already stored, if any, before it seals
    the check: the first process to start is not trusted for its key. A ConfigError naming
    GATEWAY_SECRET_KEY when none of its keys does: such a process would fail every stored
    secret, and seal new ones that the other processes cannot open."""
    # A check stored or sealed again by another process meanwhile is read again: the store
    # and the re-seal are compare-and-sets, so of two processes starting at once with
    # different new keys only one seals the check; the other reads it again, under a key it
    # lacks, and stops here.
    for _ in range(_KEY_CHECK_READS):
        sealed = await store.key_check.sealed()
        if sealed is None:
            # Read now, not at this start's look at the database: another process starting
            # beside this one may have sealed secrets since, its own check still pending.
            stored = await sample(store.db)
            if stored and not any(box.opens(value) for value in stored):
                raise ConfigError(
                    "GATEWAY_SECRET_KEY: none of its keys opens the secrets stored in the "
                    "database (partner credentials, signing secrets); every process of a "
                    "gateway needs the key they were sealed with (while rotating it, "
                    "`<new>,<old>`) (docs/security.md)"
                )
            if await store.key_check.store_first(
                box.seal(KEY_CHECK_TEXT, context=_KEY_CHECK_CONTEXT)
            ):
                return
            continue
        try:
            box.open_text(sealed, context=_KEY_CHECK_CONTEXT)
            older = box.needs_rotation(sealed)
        except SecretBoxError:
            raise ConfigError(
                "GATEWAY_SECRET_KEY: none of its keys opens the key check the gateway's first "
                "process sealed in the database; every process of a gateway needs the same key "
                "(while rotating it, `<new>,<old>`), or what the others sealed (partner "
                "credentials, signing secrets) cannot be opened here (docs/security.md)"
            ) from None
        if older and not await store.key_check.replace(sealed, box.rotate(sealed)):
            continue
        return
    raise StoreUnavailable(
        f"the key check changed {_KEY_CHECK_READS} times while this process read it; "
        "checked again later"
    )


_KEY_CHECK_READS = 5
"""Reads of the key check at a start before giving up for now (each a race lost to another
process starting at the same time)."""


class StoredSecrets:
    """The two rules for a stored secret that does not open when a send needs it, the same
    for every path that opens one (a delivery, a notification, a flow's step, a disabled
    partner's probe, a proxy call, a test send, a schedule's run): `judge`.

    - This process's key no longer opens the key check (another process re-sealed it under
      a key this one lacks: a rotation it was not given): the key is this process's error,
      `KeyRefused` (503 `key-refused`); what needs the secret is handed back or answered as
      a wait, never failed for good, for a process with the right key.
    - It does (`key_still_opens`): the secret is damaged, its sealed value altered or sealed
      under a key no process has; no wait mends it: `SecretDamaged` (500 `secret-damaged`),
      naming whose secret it is, never its value, logged at ERROR once per secret and
      counted in `gateway_damaged_secrets_total{secret}` at each send it stops."""

    def __init__(self, store: Store, box: SecretBox, metrics: Metrics) -> None:
        self._store = store
        self._box = box
        self._metrics = metrics
        self._logged: set[str] = set()  # the damaged secrets logged, by record

    async def judge(self, exc: SecretBoxError) -> KeyRefused | SecretDamaged:
        """What `exc` is (StoreUnavailable when the key check cannot be read: neither)."""
        if not await key_still_opens(self._store, self._box):
            return KeyRefused(
                f"{exc.detail}; this process's GATEWAY_SECRET_KEY does not open the gateway's "
                "key check: the other processes run with a key it lacks (docs/security.md)",
                retry_after=_KEY_REFUSED_RETRY,
            )
        record = exc.record or "unknown"
        if record not in self._logged:
            self._logged.add(record)
            log.error(
                "stored secret damaged: %s; GATEWAY_SECRET_KEY opens the key check, so the "
                "secret is at fault: what needs it fails until it is saved again (logged once)",
                exc.detail,
            )
        self._metrics.damaged_secrets.labels(self._metrics.label("secret", record)).inc()
        return SecretDamaged(
            f"stored secret damaged: {exc.detail}; this process's GATEWAY_SECRET_KEY opens "
            "the gateway's key check: save the secret again"
        )


_KEY_REFUSED_RETRY = 5
"""Retry-After of a call refused for this process's key: another process (with the key)
may take the call again at once; this one will not until it is restarted."""
