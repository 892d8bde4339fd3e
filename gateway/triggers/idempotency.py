"""Use case: `Idempotency-Key` — a retried call with the same key and body gets the first answer.

A signed message is keyed by what its signature covers instead (`auth/signatures.py`
ReplayKey: its `webhook-id`, its signed id, or its signed timestamp and body), and answers
name that key, not an `Idempotency-Key` the partner never sent.

A pending marker is stored (unique insert) before the call is processed, so two concurrent
first calls cannot both run: the second gets a 409 until the first is answered. Only
successful answers (2xx, 207 included) are kept: a failed call releases its key, so a retry
after a fix is processed afresh (when the database failed the release too, it is tried again
in the background until it passes, one command per tenant and round for every failed call;
at shutdown, `close` stops that and tries what is left once, while the store is still open).
A call releases only its own marker, named by a random claim token. A marker left by a
crashed process is taken over after `LEASE`; a call whose entity write loses a round to a
concurrent one tries it again only while its marker is still its own, within the lease
(`write_fence.py`: a paused process's call must not land after a retry took its key over).
The same key with another body is a 422. Answers are kept 24 hours.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from gateway import write_fence
from gateway.background import cancel_and_wait
from gateway.clock import utcnow
from gateway.errors import (
    Conflict,
    FieldProblem,
    GatewayError,
    InvalidPayload,
    StillProcessing,
    StoreUnavailable,
)
from gateway.store import Store
from gateway.store.idempotency import record_id
from gateway.triggers.compiled import CompiledTrigger
from gateway.triggers.model import HookAnswer

log = logging.getLogger(__name__)

LEASE: Final = timedelta(seconds=30)
RELEASE_RETRY_SECONDS: Final = 0.1  # a failed release is tried again after this, then 2x
REPLAYED_HEADER: Final = "Idempotent-Replayed"


@dataclass(slots=True)
class _Release:
    """A failed call's marker to forget, tried again until the database answers."""

    record_id: str
    until: float  # loop time: past half the lease, a retry may have taken the key over
    settled: bool  # the claim's outcome is known (the server answered): one release is enough


class IdempotencyGuard:
    def __init__(
        self, store: Store, *, clock: Callable[[], float] = lambda: utcnow().timestamp()
    ) -> None:
        self._store = store
        self._clock = clock  # Unix seconds, the gateway's clock (the database server's)
        # Markers of failed calls still to release, by tenant and claim token: one releaser
        # task for all of them, one command per tenant and round however many calls failed.
        self._releases: dict[str, dict[str, _Release]] = {}
        self._releaser: asyncio.Task[None] | None = None
        self._closed = False

    async def run(
        self,
        trigger: CompiledTrigger,
        key: str,
        body_hash: str,
        call: Callable[[], Awaitable[HookAnswer]],
        *,
        named: str = "Idempotency-Key",
        earlier_hashes: Sequence[str] = (),
    ) -> HookAnswer:
        """`named`: what the key is to the caller, for the 409 and 422 that name it.
        `earlier_hashes`: other digests of this same call that a record an earlier version
        wrote may hold (taken as `body_hash` on a replay, never stored)."""
        records = self._store.idempotency
        claim = secrets.token_hex(8)  # names this call's marker: only this call releases it
        now = datetime.fromtimestamp(self._clock(), UTC)
        try:
            existing = await records.claim(
                trigger.tenant, trigger.id, key, body_hash, claim=claim, now=now, lease=LEASE
            )
        except StoreUnavailable as exc:
            # The marker may be stored all the same (a failed write concern, a command the
            # database ran after the deadline): released once the database is back.
            settled = exc.answered and not exc.deadline
            self._release_later(trigger, key, claim, settled=settled)
            raise
        except Conflict:
            raise StillProcessing(f"this {named} is being used concurrently; retry") from None
        if existing is not None:
            return _replay(existing, (body_hash, *earlier_hashes), named, now)
        marker = record_id(trigger.id, key)

        async def still_ours() -> bool:
            # The gateway's clock, as the lease was written by (a paused process's own
            # monotonic clock may not have counted the pause).
            now = datetime.fromtimestamp(self._clock(), UTC)
            return await records.holds(trigger.tenant, marker, claim, now)

        try:
            with write_fence.claimed(still_ours):
                answer = await call()
        except BaseException:
            try:
                await records.release(trigger.tenant, [(record_id(trigger.id, key), claim)])
            except GatewayError as exc:
                log.warning("idempotency key not released yet: %s", exc.detail)
                self._release_later(trigger, key, claim, settled=True)
            raise
        try:
            await records.complete(
                trigger.tenant, trigger.id, key, status=answer.status, body=answer.body
            )
        except StoreUnavailable as exc:  # the write is durable; a retry after LEASE re-runs it
            log.warning("idempotent answer not kept: %s", exc.detail)
        return answer

    async def answered(
        self,
        trigger: CompiledTrigger,
        keys: Sequence[str],
        *,
        body_keys: Sequence[str] = (),
        body_hashes: Sequence[str] = (),
    ) -> HookAnswer | None:
        """The first answer kept under any of `keys` (a signed message's legacy keys), or
        under any of `body_keys` for this body (one of `body_hashes`), as a replay; None when
        there is none."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        found = await self._store.idempotency.answered(
            trigger.tenant, trigger.id, keys, now, body_keys=body_keys, body_hashes=body_hashes
        )
        return None if found is None else _answer(found)

    def _release_later(
        self, trigger: CompiledTrigger, key: str, claim: str, *, settled: bool
    ) -> None:
        """The database failed the call, or the claim itself, and the marker may be left
        (a fault of a moment, a failpoint): release it in the background once the database
        is back, so that the client's retry is processed, not answered 409 until the lease
        runs out. Only this call's marker (by its claim token), and only within half the
        lease: past it, a retry may have taken the key over. When the claim's outcome was
        not known (a deadline, a lost connection), its insert may still land: released
        again each round until then."""
        if self._closed:  # a call that failed as the process stopped: its lease frees the key
            return
        until = asyncio.get_running_loop().time() + LEASE.total_seconds() / 2
        release = _Release(record_id(trigger.id, key), until, settled)
        self._releases.setdefault(trigger.tenant, {})[claim] = release
        if self._releaser is None or self._releaser.done():
            self._releaser = asyncio.create_task(self._keep_releasing())

    async def close(self) -> None:
        """At shutdown, before the store closes: stop the background releases and try each
        tenant's once more; a key the database still refuses to release is freed by its
        lease (a retry meets a 409 until then). The tenants at once: a database that is
        down holds the shutdown one deadline, not one per tenant."""
        self._closed = True
        await cancel_and_wait(self._releaser)
        self._releaser = None
        now = asyncio.get_running_loop().time()
        batches = {
            tenant: [(r.record_id, claim) for claim, r in releases.items() if r.until > now]
            for tenant, releases in self._releases.items()
        }
        self._releases.clear()
        await asyncio.gather(*(self._release_once(t, b) for t, b in batches.items() if b))

    async def _release_once(self, tenant: str, batch: list[tuple[str, str]]) -> None:
        try:
            await self._store.idempotency.release(tenant, batch)
        except GatewayError as exc:
            log.info("idempotency keys left to their lease at shutdown: %s", exc.detail)

    async def _keep_releasing(self) -> None:
        loop = asyncio.get_running_loop()
        delay = RELEASE_RETRY_SECONDS
        while self._releases:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            for tenant, releases in list(self._releases.items()):
                for claim in [c for c, r in releases.items() if r.until <= loop.time()]:
                    del releases[claim]
                batch = [(r.record_id, claim) for claim, r in releases.items()]
                try:
                    if batch:
                        await self._store.idempotency.release(tenant, batch)
                except GatewayError:
                    continue  # still failing: again, later
                except Exception:  # a bug: logged, tried again until the markers' time is up
                    log.exception("releasing idempotency keys failed")
                    continue
                for _, claim in batch:
                    if releases[claim].settled:
                        del releases[claim]
                if not releases:
                    del self._releases[tenant]


def _replay(
    record: dict[str, object], body_hashes: Sequence[str], named: str, now: datetime
) -> HookAnswer:
    if record["body_hash"] not in body_hashes:
        # An Idempotency-Key's digest covers the query string too (a signed message's not).
        what = "body or query string" if named == "Idempotency-Key" else "body"
        message = f"this {named} was already used with a different {what}"
        raise InvalidPayload(
            message, [FieldProblem("", message, "idempotency")], reason="idempotency"
        )
    if record["state"] != "done":
        # Retry-After: when the marker can be taken over, should its call never be answered.
        until = record["lease_until"]
        assert isinstance(until, datetime)
        wait = max(1, math.ceil((until - now).total_seconds()))
        raise StillProcessing(
            f"a request with this {named} is still being processed; retry", retry_after=wait
        )
    return _answer(record)


def _answer(record: dict[str, object]) -> HookAnswer:
    status, body = record["status"], record["body"]
    assert isinstance(status, int) and isinstance(body, bytes)
    return HookAnswer(status, body, headers={REPLAYED_HEADER: "true"})
