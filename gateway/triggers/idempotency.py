"""Use case: `Idempotency-Key` — a retried call with the same key and body gets the first answer.

A pending marker is stored (unique insert) before the call is processed, so two concurrent
first calls cannot both run: the second gets a 409 until the first is answered. Only
successful answers (2xx, 207 included) are kept: a failed call releases its key, so a retry
after a fix is processed afresh. A marker left by a crashed process is taken over after
`LEASE`. The same key with another body is a 422. Answers are kept 24 hours.
"""

from __future__ import annotations

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
REPLAYED_HEADER: Final = "Idempotent-Replayed"


class IdempotencyGuard:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock  # Unix seconds, the receiver's clock

    async def run(
        self,
        trigger: CompiledTrigger,
        key: str,
        body_hash: str,
        call: Callable[[], Awaitable[HookAnswer]],
    ) -> HookAnswer:
        records = self._store.idempotency
        existing = await records.claim(
            trigger.tenant,
            trigger.id,
            key,
            body_hash,
            now=datetime.fromtimestamp(self._clock(), UTC),
            lease=LEASE,
        )
        if existing is not None:
            return _replay(existing, body_hash)
        try:
            answer = await call()
        except BaseException:
            try:
                await records.release(trigger.tenant, trigger.id, key)
            except GatewayError as exc:  # the lease frees the key later anyway
                log.warning("idempotency key not released: %s", exc.detail)
            raise
        try:
            await records.complete(
                trigger.tenant, trigger.id, key, status=answer.status, body=answer.body
            )
        except StoreUnavailable as exc:  # the write is durable; a retry after LEASE re-runs it
            log.warning("idempotent answer not kept: %s", exc.detail)
        return answer


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
