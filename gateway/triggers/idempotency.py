"""Use case: `Idempotency-Key` — a retried call with the same key and body gets the first answer.

A pending marker is stored (unique insert) before the call is processed, so two concurrent
first calls cannot both run: the second gets a 409 until the first is answered. Only
successful answers (2xx, 207 included) are kept: a failed call releases its key, so a retry
after a fix is processed afresh (when the database failed the release too, it is tried again
in the background until it passes). A marker left by a crashed process is taken over after
`LEASE`. The same key with another body is a 422. Answers are kept 24 hours.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from gateway.errors import Conflict, FieldProblem, GatewayError, InvalidPayload, StoreUnavailable
from gateway.store import Store
from gateway.triggers.compiled import CompiledTrigger
from gateway.triggers.model import HookAnswer

log = logging.getLogger(__name__)

LEASE: Final = timedelta(seconds=30)
RELEASE_RETRY_SECONDS: Final = 0.1  # a failed release is tried again after this, then 2x
REPLAYED_HEADER: Final = "Idempotent-Replayed"


class IdempotencyGuard:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock  # Unix seconds, the receiver's clock
        self._releasing: set[asyncio.Task[None]] = set()

    async def run(
        self,
        trigger: CompiledTrigger,
        key: str,
        body_hash: str,
        call: Callable[[], Awaitable[HookAnswer]],
    ) -> HookAnswer:
        records = self._store.idempotency
        # Milliseconds, as the database keeps it: the release names this marker by it.
        ms = int(self._clock() * 1000)
        now = datetime.fromtimestamp(ms // 1000, UTC) + timedelta(milliseconds=ms % 1000)
        try:
            existing = await records.claim(
                trigger.tenant, trigger.id, key, body_hash, now=now, lease=LEASE
            )
        except StoreUnavailable:
            # The marker may be stored all the same (a failed write concern, a command the
            # database ran after the deadline): released once the database is back.
            self._release_later(trigger, key, now)
            raise
        if existing is not None:
            return _replay(existing, body_hash)
        try:
            answer = await call()
        except BaseException:
            try:
                await records.release(trigger.tenant, trigger.id, key, created_at=now)
            except GatewayError as exc:
                log.warning("idempotency key not released yet: %s", exc.detail)
                self._release_later(trigger, key, now)
            raise
        try:
            await records.complete(
                trigger.tenant, trigger.id, key, status=answer.status, body=answer.body
            )
        except StoreUnavailable as exc:  # the write is durable; a retry after LEASE re-runs it
            log.warning("idempotent answer not kept: %s", exc.detail)
        return answer

    def _release_later(self, trigger: CompiledTrigger, key: str, created_at: datetime) -> None:
        """The database failed the call, or the claim itself, and the marker may be left
        (a fault of a moment, a failpoint): release it in the background once the database
        is back, so that the client's retry is processed, not answered 409 until the lease
        runs out. Only this call's marker (by its `created_at`), and only within half the
        lease: past it, a retry may have taken the key over."""
        task = asyncio.create_task(
            self._keep_releasing(trigger.tenant, trigger.id, key, created_at)
        )
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _keep_releasing(
        self, tenant: str, trigger_id: str, key: str, created_at: datetime
    ) -> None:
        loop = asyncio.get_running_loop()
        ends = loop.time() + LEASE.total_seconds() / 2
        delay = RELEASE_RETRY_SECONDS
        while loop.time() + delay < ends:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                if await self._store.idempotency.release(
                    tenant, trigger_id, key, created_at=created_at
                ):
                    return
            except GatewayError:
                continue  # still failing: again, later
            except Exception:  # the store was closed (the process is stopping): the lease
                return  # frees the key


def _replay(record: dict[str, object], body_hash: str) -> HookAnswer:
    if record["body_hash"] != body_hash:
        message = "this Idempotency-Key was already used with a different body"
        raise InvalidPayload(
            message, [FieldProblem("", message, "idempotency")], reason="idempotency"
        )
    if record["state"] != "done":
        raise Conflict("a request with this Idempotency-Key is still being processed; retry")
    status, body = record["status"], record["body"]
    assert isinstance(status, int) and isinstance(body, bytes)
    return HookAnswer(status, body, headers={REPLAYED_HEADER: "true"})
