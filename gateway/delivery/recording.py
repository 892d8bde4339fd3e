"""The delivery worker's record stage: an attempt's Outcome becomes the delivery's next state
(succeeded | pending at the next retry time | failed | dead), fenced by the claim's token.

Also here: what that state means around the delivery — metrics, partner health, a 410
disabling the subscription (what waits for it in an ordered action's line is woken by the
write itself, `DeliveryStore.finish`). Kinds that send themselves (notifications) are
recorded by `settle`, with the same retry schedule arithmetic and one more final status,
`suppressed`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from yarl import URL

from gateway.actions.catalog import Action, Catalog, Partner
from gateway.delivery.kinds import Dropped, Held, SendResult
from gateway.delivery.partner_health import PartnerHealth
from gateway.delivery.retry import next_attempt_at
from gateway.formats.charsets import storable
from gateway.metrics import Metrics
from gateway.models import DeliveryStatus
from gateway.outbound.bodies import body_text
from gateway.outbound.redaction import Redactor
from gateway.outbound.sender import OutboundRequest, Outcome
from gateway.outbound.verdict import Verdict, error_names
from gateway.store import Doc, Store
from gateway.store.deliveries import QUIET_HOURS, attempt_number, unsendable_attempt

log = logging.getLogger(__name__)

_EXCERPT = 1024
_BODY_READ = 4 * _EXCERPT  # bytes of a request's body read for its summary


class DeliveryRecorder:
    """Writes every end of an attempt. `clock` and `rng` are callables, so the worker's
    (which tests replace on the worker) are the ones read at each call."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        health: PartnerHealth,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime],
        rng: Callable[[], float],
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._health = health
        self._metrics = metrics
        self._clock = clock
        self._rng = rng

    async def record(
        self,
        doc: Doc,
        token: str,
        action: Action,
        partner: Partner,
        outcome: Outcome,
        probe: bool,
        *,
        request: OutboundRequest,
        again: bool = False,
    ) -> str:
        """`request`: what was sent (its summary is the attempt's `request`). `again`: the
        same call recorded a second time (`recording_failed`), already counted and noted for
        the partner's health."""
        now = self._clock()
        verdict = action.verdict(outcome)
        if not again:
            self._metrics.observe_partner_call(partner.id, "deliver", outcome, verdict)
        if (hold := outcome.hold) is not None:
            # Our own limits (rate, concurrency, open circuit, a token endpoint's wait):
            # nothing went out, no attempt.
            return await self.defer(
                doc, token, now + timedelta(seconds=hold.seconds), hold.describe()
            )
        if probe and verdict is not Verdict.RETRY and not again:
            # The answer, counted as it came (`PartnerCalls`), left a disabled partner's
            # `failing_since`: the outage's start says which dead deliveries are replayed.
            await self._health.enable(partner, now)
        outage: datetime | None = None  # the outage a delivery dies in (`failing_since`)
        if outcome.sent and verdict is Verdict.RETRY and not again:
            # An answer was counted as it came. A schedule this spends is noted first.
            spent = not probe and doc.get("attempt_count", 0) >= len(action.retry_schedule)
            since = await self._health.failed(partner, now, dying=spent)
            outage = since if spent else None
        attempt = _attempt(doc, outcome, now, probe, request_summary(request, partner))
        if probe:
            if verdict is Verdict.RETRY:
                # Still down: the probe costs the delivery no place in its schedule (it is
                # an attempt made, numbered and counted), but its turn moves two probes on,
                # so the next probe sends another (or a HEAD): one delivery the partner
                # always fails does not keep it disabled while others wait.
                turn = now + timedelta(seconds=2 * self._health.probe_seconds)
                await self._store.deliveries.finish(
                    doc["_id"],
                    token,
                    {
                        "status": DeliveryStatus.PENDING.value,
                        "updated_at": now,
                        "next_attempt_at": turn,
                        "probe_failed_at": now,
                        "attempts_made": attempt["n"],
                    },
                    attempt=attempt,
                    counted=False,
                )
                return "probe_failed"
        error = None if verdict is Verdict.SUCCESS else _error_text(outcome, action, verdict)
        retry_after = outcome.retry_after(now)
        status, fields = self._next_state(
            doc, action.retry_schedule, verdict, now, outcome.status, error, retry_after
        )
        finished = await self._store.deliveries.finish(
            doc["_id"], token, fields, attempt=attempt, unset=("probe_failed_at",)
        )
        if finished is None:
            log.warning(
                "delivery %s: lease lost before recording; another worker owns it", doc["_id"]
            )
            return "lease_lost"
        if status is DeliveryStatus.PENDING:
            await self._unless_unsubscribed(doc, now)
        if status is DeliveryStatus.DEAD and outage is not None:
            # Written dead after its failure was noted: an answer that ended the outage
            # between the two writes did not replay it, and this one does (`died`).
            await self._health.died(partner, outage, now)
        if verdict is Verdict.GONE and doc.get("subscription_id"):
            await self._store.subscriptions.disable(
                doc["tenant"],
                doc["subscription_id"],
                f"partner answered 410 at {now.isoformat()}",
                now,
            )
            self._catalog.forget(doc["subscription_id"])
            # Its other deliveries, waiting for a retry, can never be sent: failed now.
            unsendable = await self._store.deliveries.fail_unsendable(
                doc["tenant"], doc["subscription_id"], "the subscription is disabled", now
            )
            self._metrics.deliveries.labels("failed").inc(unsendable)
        result = (
            "gone"
            if verdict is Verdict.GONE
            else ("retry" if status is DeliveryStatus.PENDING else status.value)
        )
        self._metrics.deliveries.labels(result).inc()
        return result

    def _next_state(
        self,
        doc: Doc,
        schedule: Sequence[float],
        verdict: Verdict,
        now: datetime,
        code: int | None,
        error: str | None,
        retry_after: float | None,
    ) -> tuple[DeliveryStatus, Doc]:
        fields: Doc = {"updated_at": now, "last_status": code, "last_error": error}
        status = {
            Verdict.SUCCESS: DeliveryStatus.SUCCEEDED,
            Verdict.FAIL: DeliveryStatus.FAILED,
            Verdict.GONE: DeliveryStatus.FAILED,
        }.get(verdict, DeliveryStatus.PENDING)
        if status is DeliveryStatus.PENDING:
            when = next_attempt_at(
                doc.get("attempt_count", 0) + 1,
                schedule,
                now,
                retry_after=retry_after,
                rng=self._rng,
            )
            if when is None:
                status = DeliveryStatus.DEAD
            else:
                fields["next_attempt_at"] = when
        fields["status"] = status.value
        if status.final:
            fields["final_at"] = now
        return status, fields

    async def fail(
        self, doc: Doc, token: str, reason: str, errors: Sequence[dict[str, Any]] = ()
    ) -> str:
        """Unsendable (deleted, disabled, request cannot be built): failed without a send."""
        now = self._clock()
        attempt = {**unsendable_attempt(doc, now, reason), "errors": list(errors)[:20]}
        await self._store.deliveries.finish(
            doc["_id"],
            token,
            {
                "status": DeliveryStatus.FAILED.value,
                "last_error": reason,
                "final_at": now,
                "updated_at": now,
            },
            attempt=attempt,
        )
        self._metrics.deliveries.labels("failed").inc()
        return "failed"

    async def defer(
        self,
        doc: Doc,
        token: str,
        when: datetime,
        reason: str,
        partner_id: str | None = None,
        *,
        quiet_hours: bool = False,
    ) -> str:
        """Pending again at `when` without spending an attempt; with `partner_id`, the
        disabled partner it waits for (a notification's: due at once when it is enabled);
        `quiet_hours`, held by them (`held_for`: due at once when the settings are saved).
        Never before now: a hold computed to end in the past (quiet hours read in the wrong
        pass of a repeated hour) made the delivery due at once, held again, in a loop."""
        now = self._clock()
        fields: Doc = {
            "status": DeliveryStatus.PENDING.value,
            "next_attempt_at": max(when, now),
            "last_error": reason,
            "updated_at": now,
        }
        if partner_id is not None:
            fields["partner_id"] = partner_id
        if quiet_hours:
            fields["held_for"] = QUIET_HOURS
        unset = () if quiet_hours else ("held_for",)
        if await self._store.deliveries.finish(doc["_id"], token, fields, unset=unset):
            await self._unless_unsubscribed(doc, fields["updated_at"])
        self._metrics.deliveries.labels("deferred").inc()
        return "deferred"

    async def _unless_unsubscribed(self, doc: Doc, now: datetime) -> None:
        """A webhook delivery written pending again (a retry, a hold) whose subscription was
        deleted or disabled while it was in flight (the removal fails the pending ones only)
        can never be sent: failed now, waking the delivery it holds in its action's line, not
        at its retry time hours later. Read from the database after the write, not from the
        catalog: a removal this read does not see yet finds the delivery pending itself."""
        subscription_id = doc.get("subscription_id")
        if not subscription_id:
            return
        sub = await self._store.subscriptions.get(doc["tenant"], subscription_id)
        if sub is not None and sub.get("status") == "active":
            return
        reason = "the subscription was deleted" if sub is None else "the subscription is disabled"
        failed = await self._store.deliveries.fail_unsendable(
            doc["tenant"], subscription_id, reason, now
        )
        self._metrics.deliveries.labels("failed").inc(failed)

    async def settle(self, doc: Doc, token: str, result: SendResult) -> str:
        """What a kind's own sender answered (`kinds.py`) → the delivery's next state."""
        if isinstance(result, Held):
            outcome = await self.defer(
                doc,
                token,
                result.until,
                result.reason,
                result.partner_id,
                quiet_hours=result.quiet_hours,
            )
            if result.still_judged is not None and not await result.still_judged():
                # Asked after the write: a save before it is seen here, one after it
                # finds the hold written and releases it itself.
                await self._store.deliveries.release_quiet_held_one(doc["_id"], self._clock())
            return outcome
        now = self._clock()
        if isinstance(result, Dropped):
            suppressed = DeliveryStatus.SUPPRESSED.value
            fields = {"status": suppressed, "last_error": result.reason, "final_at": now}
            note = {"n": attempt_number(doc), "at": now, "status": None}
            attempt = {**note, "error": suppressed, "message": result.reason}
            if not await self._store.deliveries.finish(
                doc["_id"],
                token,
                {**fields, "updated_at": now},
                attempt=attempt,
                counted=False,
                unset=("held_for",),
            ):
                return "lease_lost"
            self._metrics.deliveries.labels(suppressed).inc()
            return suppressed
        error = None if result.verdict is Verdict.SUCCESS else result.detail
        status, fields = self._next_state(
            doc, result.schedule, result.verdict, now, result.code, error, result.retry_after
        )
        attempt = {
            "n": attempt_number(doc),
            "at": now,
            "status": result.code,
            "latency_ms": result.latency_ms,
            "error": None if result.verdict is Verdict.SUCCESS else result.verdict.value,
            "message": result.detail,
            "response": result.provider_id or "",
        }
        if not await self._store.deliveries.finish(
            doc["_id"], token, fields, attempt=attempt, unset=("held_for",)
        ):
            return "lease_lost"
        outcome = "retry" if status is DeliveryStatus.PENDING else status.value
        self._metrics.deliveries.labels(outcome).inc()
        return outcome


def recording_failed(outcome: Outcome, exc: Exception) -> Outcome:
    """The outcome reduced to what decides (its status, or the kind of failure without one)
    and the reason its whole could not be recorded: no body, no parsed answer."""
    reason = f"the answer could not be recorded: {type(exc).__name__}: {exc}"
    return Outcome(
        status=outcome.status,
        headers={k: storable(v) for k, v in outcome.headers.items()},
        latency_ms=outcome.latency_ms,
        error=outcome.error or "invalid_response",
        message=outcome.redactor.redact(storable(reason))[:500],
        retry_in=outcome.retry_in,
        redactor=outcome.redactor,
    )


def request_summary(request: OutboundRequest, partner: Partner) -> Doc:
    """What an attempt sent, as its record keeps it (SPEC §2, "attempts with request/response
    summaries"): the method, the URL with its query, the body's first _EXCERPT characters and
    its size in bytes. Every credential value of the partner and every named secret a mapping
    put in the URL or the body is masked (the credentials its auth adds, a header, a query
    parameter, a body member, go in as the request leaves, after this: never in it)."""
    redactor = Redactor.of((*partner.auth.credential_values(), *request.secrets))
    url = str(URL(request.url).extend_query(request.query)) if request.query else request.url
    summary: Doc = {"method": request.method, "url": redactor.redact(url, cut=False)}
    if request.body is not None:
        head = body_text(request.headers, request.body[:_BODY_READ])  # in its charset
        # Redacted whole, then cut, as an answer's excerpt: a credential's start where the
        # read stops is masked when the body goes on.
        cut = len(request.body) > _BODY_READ
        summary["body"] = redactor.redact(head, cut=cut)[:_EXCERPT]
        summary["body_bytes"] = len(request.body)
    return summary


def _attempt(doc: Doc, outcome: Outcome, now: datetime, probe: bool, request: Doc) -> Doc:
    attempt: Doc = {
        "n": attempt_number(doc),
        "at": now,
        "request": request,
        "status": outcome.status,
        "latency_ms": outcome.latency_ms,
        "error": outcome.error,
        "message": outcome.message or None,
        # Redacted whole, then cut: the cut must not leave half a credential behind.
        "response": outcome.redacted_excerpt(_EXCERPT),
    }
    if probe:
        attempt["probe"] = True
    return attempt


_REASON = 200  # characters of a refusal's answer quoted in last_error


def _error_text(outcome: Outcome, action: Action, verdict: Verdict) -> str:
    status = outcome.status
    if (rule := action.matched_rule(outcome)) is not None:
        # The action's own rule decided it: named, with what its body expression found, else
        # the answer's start, as a refusal's.
        said = rule.describe(outcome)
        if rule.body is None:
            excerpt = " ".join(outcome.redacted_excerpt().split())[:_REASON]
            said += f": {excerpt}" if excerpt else ""
        return f"partner answered {status}{said}"
    if verdict is Verdict.RETRY and status is not None and 200 <= status < 300:
        # A throttle answered as a success (`Action.verdict`): MyGeotab's OverLimitException
        names = ", ".join(error_names(outcome.json_body)) or "an error with Retry-After"
        return f"partner answered {status} asking to slow down: {names}"
    if (reported := action.reported_error(outcome)) is not None:
        return f"partner answered {outcome.status} reporting an error: {reported}"
    if outcome.status is not None and outcome.error is not None and 200 <= outcome.status < 300:
        # No success only for an `error` expression or an answer rule that cannot read it
        # (`Action.unchecked`)
        return f"partner answered {outcome.status} with an unusable body: {outcome.message or ''}"
    if outcome.status is not None:
        text = f"partner answered {outcome.status}"
        if outcome.message and outcome.error is None:  # what the answer says: a redirect's target
            return f"{text}: {outcome.message}"
        # A refusal (a 400 naming the field it wants) is the reason an operator reads in the
        # list of failures, not only in the attempt; a retried 5xx page is noise there.
        # Redacted before its spaces are folded: a credential holding two spaces in a row
        # would not be found in the folded text.
        said = ""
        if verdict is not Verdict.RETRY:
            said = outcome.redacted_excerpt()
            said = " ".join(said.split())[:_REASON]
        return text + (f": {said}" if said else "")
    return f"{outcome.error}: {outcome.message}"
