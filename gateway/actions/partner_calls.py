"""Every call of a partner, whichever use case makes it: a proxy call, a delivery (a webhook, a
flow's `call`), a flow's `fetch`, a schedule's page, an SMS or a push, a disabled partner's
`HEAD` probe. `PartnerCalls.send` sends it through the partner's guard (`PartnerGuards`:
circuit breaker, rate limit, concurrency) with its credentials, and counts its answer for the
partner's health: an answer that is no retryable failure (`Verdict.RETRY`: no answer, 408,
425, 429, 5xx) ends the partner's failing, its `failing_since` cleared. So a partner is
failing only while no call of any kind gets an answer from it (docs/actions.md "Partner
protection"), as its circuit breaker already counted them. Until 2026-12-06 only the delivery
worker's answers counted: a partner whose webhook route failed was disabled while its API
answered every proxy call, and then its API was refused (`503`) to every proxy call, flow
fetch and schedule for as long as the webhook route stayed broken.

Failures are counted where a partner is disabled for them, by the delivery worker
(`delivery/partner_health.py`), which tells this one (`failing`): the next answer then clears
`failing_since` though the catalog's copy of the partner (kept up to 2 s) does not show it
yet. An answer writes only when the partner is failing as far as this process knows: once
per failure, not once per call.

The answer that ends an active partner's outage replays the deliveries to it that went
`dead` during it (`DeliveryStore.replay_outage`, as a disabled partner's recovery does),
then clears `failing_since`, the last write: a crash or a database failure between leaves it
set, and the next answer (of any process) replays again, each delivery once per outage. Two
processes answered at once replay them once (each reopens only what is still dead). A
delivery written `dead` after its last failure was counted is counted again on the partner
(`PartnerStore.note_death`) if the outage is still on, which keeps an answer that read the
partner before from clearing it; else its recording replays it (`PartnerHealth.died`). Until
2026-12-07 only a recovery from being disabled replayed: a partner back within its
`disable_after_hours` (an ERP down over a long weekend, 28 to 72 h: the default schedule is
spent after ~27.6 h) kept the outage's dead deliveries dead until someone replayed them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from gateway.actions.catalog import Action, Partner
from gateway.clock import utcnow
from gateway.errors import StoreUnavailable
from gateway.outbound.breaker import PartnerGuards
from gateway.outbound.sender import OutboundRequest, Outcome, Sender
from gateway.outbound.verdict import Verdict
from gateway.store import Store

log = logging.getLogger(__name__)


class PartnerCalls:
    def __init__(self, sender: Sender, guards: PartnerGuards, store: Store) -> None:
        self._sender = sender
        self.guards = guards
        self._store = store
        self._failed: set[str] = set()  # partners this process saw fail since their answer
        # partner → the `failing_since` an answer cleared: the catalog's copy still shows it
        # for up to its ttl, and the calls then answered write nothing more.
        self._cleared: dict[str, datetime] = {}
        self.clock: Callable[[], datetime] = utcnow

    async def send(
        self, partner: Partner, request: OutboundRequest, *, action: Action | None = None
    ) -> Outcome:
        """The request sent to the partner through its guard, with its credentials; its answer
        counted for the partner (`action`: whose idea of success judges it, else the answer's
        status)."""
        outcome = await self._sender.send(
            request,
            partner_id=partner.id,
            guard=self.guards.get(partner.id, partner.guard),
            auth=partner.auth,
        )
        if outcome.sent:
            verdict = outcome.verdict if action is None else action.verdict(outcome)
            if verdict is not Verdict.RETRY:
                await self._answered(partner)
        return outcome

    def failing(self, partner_id: str) -> None:
        """A retryable failure of the partner was counted (`failing_since` set)."""
        self._failed.add(partner_id)

    def recovered(self, partner_id: str) -> None:
        """The partner was enabled again: its `failing_since` is gone with its outage."""
        self._failed.discard(partner_id)

    async def _answered(self, partner: Partner) -> None:
        """The partner answered: no longer failing. A disabled one is not enabled by it
        (its probe's answer does that, `delivery/partner_health.py`: its `failing_since`
        says which dead deliveries its recovery replays), nor its `failing_since` cleared.
        A database failure here is logged, not the call's: the next answer clears it."""
        since = partner.failing_since
        if since is None:
            self._cleared.pop(partner.id, None)
        failing = partner.id in self._failed
        if since is not None and self._cleared.get(partner.id) != since:
            failing = True
        if partner.disabled or not failing:
            return
        self._failed.discard(partner.id)
        if since is not None:
            self._cleared[partner.id] = since
        try:
            ended = await self._end_outage(partner)
        except StoreUnavailable as exc:
            ended = False
            log.warning("partner %s answered; not noted: %s", partner.id, exc.detail)
        if not ended:  # still failing as stored: the next answer ends it
            self._failed.add(partner.id)
            self._cleared.pop(partner.id, None)

    async def _end_outage(self, partner: Partner) -> bool:
        """Its outage as stored (the catalog's copy may not show it yet) over: its dead
        deliveries replayed (read only if one died during it, `dead_at`, the partner's mark
        written before a delivery is `dead`: a partner whose webhook route fails while its
        API answers ends an outage at each answer), then its `failing_since` cleared, that
        one alone (a new outage another process saw begin since is left), and only if no
        delivery was written dead since the partner was read (`deaths`, `note_death`: the
        replay may have missed it; the outage is then left for the next answer). Not a
        disabled one's (its probe recovers it). Whether the outage is over as stored."""
        stored = await self._store.partners.get(partner.tenant, partner.id)
        since = stored.get("failing_since") if stored is not None else None
        if stored is None or not isinstance(since, datetime) or stored.get("status") == "disabled":
            return True
        deaths = stored.get("deaths", 0)
        replayed = 0
        dead_at = stored.get("dead_at")
        if isinstance(dead_at, datetime) and dead_at >= since:  # else none died: no read
            deliveries = self._store.deliveries
            replayed = await deliveries.replay_outage(partner.id, since, self.clock(), active=True)
        ended = await self._store.partners.note_success(
            partner.tenant, partner.id, failing_since=since, deaths=deaths
        )
        if replayed:
            log.warning(
                "partner %s answers again: its outage since %s ended; %d deliveries that went "
                "dead during it replayed",
                partner.id,
                since.isoformat(),
                replayed,
            )
        return ended
