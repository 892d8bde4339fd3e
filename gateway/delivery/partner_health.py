"""Partner health, as the delivery worker sees it: which partners are disabled, and turning
them off and on.

A partner failing (retryable failures of its deliveries, no answer to any call of it in
between: `actions/partner_calls.py` counts the answers) for longer than its
`disable_after_hours` is disabled: its deliveries wait instead of burning their retry
schedule. The worker probes it every `probe_seconds`; the first answer re-enables it: the
deliveries that went `dead` during its outage are replayed (`DeliveryStore.replay_outage`)
and its backlog is made due (`DeliveryStore.recovered`), both before it is active again, so
the replayed ones go first in their entity's order, and a recovery cut short (a crash, a
database failure) leaves it disabled, to be recovered whole by its next probe. Its probe
passes over an entity whose earlier delivery is one of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from gateway.actions.catalog import Catalog, Partner
from gateway.actions.partner_calls import PartnerCalls
from gateway.metrics import Metrics
from gateway.store import Store

log = logging.getLogger(__name__)


class PartnerHealth:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        calls: PartnerCalls,
        metrics: Metrics,
        *,
        probe_seconds: float,
        on_enabled: Callable[[], None],
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._calls = calls
        self._metrics = metrics
        self._probe_seconds = probe_seconds
        self._on_enabled = on_enabled
        self.disabled: set[str] = set()  # partner ids whose deliveries wait

    async def refresh(self) -> None:
        """Learn which partners are disabled (by any process)."""
        self.disabled = set(await self._store.partners.disabled_ids())

    @property
    def probe_seconds(self) -> float:
        return self._probe_seconds

    async def failed(
        self, partner: Partner, now: datetime, *, dying: bool = False
    ) -> datetime | None:
        """Count a delivery's retryable failure against the partner (its answers, to any call,
        are counted as they come: `PartnerCalls`); disabled once it has been failing for
        longer than its `disable_after_hours`, unless an answer ended that failing between
        the read and the disable (`PartnerStore.disable` checks the `failing_since` read).
        `dying`: the failure spent the delivery's schedule (noted before it is `dead`: the
        answer that ends the outage replays what died during it, `PartnerCalls`). The
        outage's start as noted (`failing_since`), or None."""
        partners = self._store.partners
        doc = await partners.note_failure(partner.tenant, partner.id, now, dying=dying)
        self._calls.failing(partner.id)  # its next answer clears what was just written
        since: datetime | None = doc.get("failing_since") if doc else None
        if (
            doc is None
            or since is None
            or partner.disable_after is None
            or doc.get("status", "active") != "active"
            or now - since < partner.disable_after
        ):
            return since
        probe_at = now + timedelta(seconds=self._probe_seconds)
        partners = self._store.partners
        if not await partners.disable(
            partner.tenant, partner.id, now, probe_at, failing_since=since
        ):
            # An answer ended its failing since it was read (it stays active), or another
            # process disabled it: the next `refresh` says which.
            return since
        log.warning(
            "partner %s disabled: failing since %s; probing every %g s",
            partner.id,
            since.isoformat(),
            self._probe_seconds,
        )
        self._metrics.partner_disabled.labels("disabled").inc()
        self.disabled.add(partner.id)
        self._catalog.forget(partner.id)
        return since

    async def died(self, partner: Partner, since: datetime, now: datetime) -> None:
        """A delivery to the partner was written `dead` during its outage that began at
        `since` (its last failure counted, `failed`, before). If an answer ended that outage
        in between (its replay read found the delivery not dead yet), it is replayed now, as
        that answer's replay would have (`replay_outage`, marked with the outage's start);
        else the outage is still on, and the answer that ends it replays it (`note_death`
        keeps one that read the partner before from clearing it)."""
        if await self._store.partners.note_death(partner.tenant, partner.id, since):
            return
        replayed = await self._store.deliveries.replay_outage(partner.id, since, now, active=True)
        if replayed:
            log.warning(
                "partner %s answered again as a delivery to it died: its outage since %s had "
                "ended; %d deliveries that went dead during it replayed",
                partner.id,
                since.isoformat(),
                replayed,
            )

    async def enable(self, partner: Partner, now: datetime) -> None:
        """Its probe answered: recovered in the order that survives a crash or a database
        failure between the writes. While it is still disabled, the deliveries that went
        dead during its outage are replayed (so a worker that sees it active finds them open,
        first in their entity's order) and its backlog is made due now; then it is active
        again, the last write. Cut short before that write, it is still disabled with its
        `failing_since`: its next probe (or an admin's re-enable) runs the whole recovery
        again, each step idempotent (`DeliveryStore.recover`)."""
        doc = await self._store.partners.get(partner.tenant, partner.id)
        if doc is not None and doc.get("status") == "disabled":
            replayed = await self._store.deliveries.recover(
                partner.id, doc.get("failing_since"), now
            )
            if await self._store.partners.enable(partner.tenant, partner.id) is not None:
                log.warning(
                    "partner %s answers again: re-enabled; %d deliveries that went dead while "
                    "it was failing replayed",
                    partner.id,
                    replayed,
                )
                self._metrics.partner_disabled.labels("enabled").inc()
        self.disabled.discard(partner.id)
        self._calls.recovered(partner.id)
        self._catalog.forget(partner.id)
        self._on_enabled()
