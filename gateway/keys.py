"""Use cases of GATEWAY_SECRET_KEY against what the database holds: stored secrets sealed again
under its current key (`gateway reseal`), the step between deploying `<new>,<old>` and
dropping the old key (docs/security.md "Rotating GATEWAY_SECRET_KEY"); and the check, at each
process's start, that its keys open what the others sealed (`check_secret_key`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway import clock
from gateway.auth.secretbox import SecretBox, SecretBoxError, is_lost, lost_secret
from gateway.config import ConfigError
from gateway.errors import KeyRefused, SecretDamaged, StoreUnavailable
from gateway.metrics import Metrics
from gateway.store import Store, sealed
from gateway.store.sealed import Forgotten, Resealed, forget, reseal, sample

log = logging.getLogger(__name__)


async def reseal_secrets(store: Store, box: SecretBox, *, dry_run: bool = False) -> Resealed:
    """Every stored secret sealed under an older key, sealed under the current one (its
    plaintext and record context unchanged); what no key opens is named, not touched."""

    def renew(token: str) -> str | None:
        if is_lost(token):  # forgotten (`forget_unreadable`): sealed under no key
            return token
        try:
            return box.rotate(token) if box.needs_rotation(token) else token
        except SecretBoxError:
            return None

    # Read before the scan: a process that starts meanwhile with another sealing key adds it,
    # and the narrowing below then does not land (its secrets may be under that key).
    check = await store.key_check.read()
    done = await reseal(store.db, renew, dry_run=dry_run)
    if check is not None and not dry_run and not done.unreadable and not done.changed:
        await store.key_check.narrow(check.kids, box.kids[:1])
    return done


async def forget_unreadable(
    store: Store, box: SecretBox, *, dry_run: bool, given_up: tuple[str, ...] = ()
) -> Forgotten:
    """The last resort once a key the stored secrets are sealed under is lost for good: every
    stored secret none of `box`'s keys opens, cleared (unless `dry_run`) to read as lost (a
    send that needs one fails, naming it, until it is saved again), then the keys recorded in
    the key check narrowed to `box`'s, so that a start with them is no longer refused.

    Refused (ConfigError) when `box` does not open the key check: a wrong GATEWAY_SECRET_KEY
    opens no secret, and would forget them all. Runs without `check_secret_key`, which is
    what refuses every start here.

    Also refused, unless `dry_run`, when the key ids the key check records and `box` lacks
    (`Forgotten.missing`) are not exactly `given_up`: the secrets sealed under them are not
    damaged but keyless here, and a list that still has those keys (`<new>,<old>` mid-rotation)
    opens them; forgetting them gives those keys up for good, which the operator must name."""
    check = await store.key_check.read()
    if check is None:  # nothing recorded: a start with a key that opens a secret passes
        raise ConfigError(
            "GATEWAY_SECRET_KEY: the database holds no key check to prove these keys are the "
            "gateway's; nothing forgotten: start `gateway serve` once with them (docs/security.md)"
        )
    try:
        box.open_text(check.sealed, context=_KEY_CHECK_CONTEXT)
    except SecretBoxError:
        raise ConfigError(
            "GATEWAY_SECRET_KEY: none of its keys opens the gateway's key check: it is not "
            "this gateway's key list, and would forget every stored secret; nothing forgotten"
        ) from None
    missing = tuple(kid for kid in check.kids or () if kid not in box.kids)
    if not dry_run and set(given_up) != set(missing):
        raise _not_given_up(missing, given_up)
    lost = lost_secret(clock.utcnow().date().isoformat())
    done = await forget(store.db, _opens_or_lost(box), lost, clock.utcnow(), dry_run=dry_run)
    done.missing = missing
    # A process started meanwhile with another sealing key added it: not narrowed (run again).
    if not dry_run and not done.changed:
        done.narrowed = await store.key_check.narrow(check.kids, box.kids)
    return done


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
    `reseal` does); and it holds every key the stored secrets may be sealed under (the
    check's `kids`). When there is no check yet (a new gateway) the key must open one of the
    secrets already stored, if any, before it seals the check: the first process to start is
    not trusted for its key. A ConfigError naming GATEWAY_SECRET_KEY when it falls short:
    such a process would fail stored secrets, and seal new ones the others cannot open."""
    # A check stored or sealed again by another process meanwhile is read again: the store
    # and the re-seal are compare-and-sets, so of two processes starting at once with
    # different new keys only one seals the check; the other reads it again, under a key it
    # lacks, and stops here.
    for _ in range(_KEY_CHECK_READS):
        check = await store.key_check.read()
        if check is None:
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
            # Secrets stored before the check: any of this process's keys may have sealed them.
            kids = box.kids if stored else box.kids[:1]
            if await store.key_check.store_first(
                box.seal(KEY_CHECK_TEXT, context=_KEY_CHECK_CONTEXT), kids
            ):
                return
            continue
        try:
            box.open_text(check.sealed, context=_KEY_CHECK_CONTEXT)
            older = box.needs_rotation(check.sealed)
        except SecretBoxError:
            raise ConfigError(
                "GATEWAY_SECRET_KEY: none of its keys opens the key check the gateway's first "
                "process sealed in the database; every process of a gateway needs the same key "
                "(while rotating it, `<new>,<old>`), or what the others sealed (partner "
                "credentials, signing secrets) cannot be opened here (docs/security.md)"
            ) from None
        kids = await _kids_needed(store, box, check.kids)
        sealed = box.rotate(check.sealed) if older else check.sealed
        if (sealed, kids) != (check.sealed, check.kids) and not await store.key_check.update(
            check, sealed, kids
        ):
            continue
        return
    raise StoreUnavailable(
        f"the key check changed {_KEY_CHECK_READS} times while this process read it; "
        "checked again later"
    )


async def _kids_needed(
    store: Store, box: SecretBox, recorded: tuple[str, ...] | None
) -> tuple[str, ...]:
    """The keys the stored secrets may be sealed under once this process runs: those
    recorded and its sealing key. When one recorded is not among its keys (the old key
    dropped; or a backup taken mid-rotation, under `<new>,<old>`, restored on `<new>`
    alone: the check opens, the secrets sealed under `<old>` would not), or none is
    recorded (a check stored by a version before), every stored secret is read: one that
    none of its keys opens refuses the start (a ConfigError naming where), else its keys
    are recorded."""
    if recorded is not None and all(kid in box.kids for kid in recorded):
        return recorded if box.kids[0] in recorded else (*recorded, box.kids[0])
    if unopened := await sealed.unopened(store.db, _opens_or_lost(box), clock.utcnow()):
        missing = [kid for kid in recorded or () if kid not in box.kids]
        raise _lacking(missing, unopened, box)
    return box.kids  # which of them sealed what is not known: `gateway reseal` narrows them


def _opens_or_lost(box: SecretBox) -> Callable[[str], bool]:
    """`box.opens`, a forgotten secret (`forget_unreadable`) counted as read: it is sealed
    under no key, and what needs it fails on its own (saved again, it opens)."""
    return lambda token: is_lost(token) or box.opens(token)


def _lacking(missing: list[str], unopened: list[str], box: SecretBox) -> ConfigError:
    where = ", ".join(unopened[:3]) + (f" and {len(unopened) - 3} more" if unopened[3:] else "")
    under = f"key id {', '.join(missing)}" if missing else "no key id recorded"
    return ConfigError(
        f"GATEWAY_SECRET_KEY lacks a key the stored secrets are sealed under ({under}; its "
        f"keys' ids: {', '.join(box.kids)}; none opens {where}): start with the key list in "
        "use when they were sealed (a restored backup: the list of the backup's time, e.g. "
        "`<new>,<old>`), then run `gateway reseal` (docs/operations.md)"
    )


def _not_given_up(missing: tuple[str, ...], given_up: tuple[str, ...]) -> ConfigError:
    if not missing:
        return ConfigError(
            f"--forget-key {' '.join(given_up)}: the key check records no key id that "
            "GATEWAY_SECRET_KEY lacks; nothing forgotten: run it again without --forget-key"
        )
    named = " ".join(f"--forget-key {kid}" for kid in missing)
    return ConfigError(
        f"GATEWAY_SECRET_KEY lacks key id(s) {', '.join(missing)}, recorded in the key check: "
        "the secrets listed may be sealed under them, and a key list that has them (mid-"
        "rotation, `<new>,<old>`) still opens them. Nothing forgotten: if those keys are lost "
        f'for good, run it again with {named} (docs/operations.md "A lost key")'
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
                "secret is at fault: what needs it fails until it opens (logged once)",
                exc.detail,
            )
        self._metrics.damaged_secrets.labels(self._metrics.label("secret", record)).inc()
        return SecretDamaged(f"stored secret damaged: {exc.detail}; {self._advice(exc)}")

    def _advice(self, exc: SecretBoxError) -> str:
        if exc.lost:
            return (
                "save the secret again (a subscription's is a new signing secret: give it to "
                "its partner) (docs/operations.md, a lost key)"
            )
        if not exc.keyless:  # it opened, for another record: copied there, not sealed for it
            return (
                "this process's GATEWAY_SECRET_KEY opens the gateway's key check: save the "
                "secret again"
            )
        # Saving it again is the last resort: a subscription's signing secret saved again is
        # a new one its partner does not have; the key it was sealed under mends it.
        return (
            "this process's GATEWAY_SECRET_KEY opens the gateway's key check but none of its "
            f"keys (ids {', '.join(self._box.kids)}) opens this secret: it is sealed under a "
            "key the gateway does not have (a backup restored without the key list in use "
            "when it was taken: start with that list, e.g. `<new>,<old>`, then run `gateway "
            "reseal`), or altered; only if no key opens it (saved again, a subscription's is a "
            "new secret its partner must be given), save the secret again"
        )


_KEY_REFUSED_RETRY = 5
"""Retry-After of a call refused for this process's key: another process (with the key)
may take the call again at once; this one will not until it is restarted."""
