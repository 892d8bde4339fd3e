"""Use case: the admin dashboard — what came in, what went out and what needs attention over
the last hours, for one tenant, from what the store can tell cheaply.

"Requests" are what the store keeps of them: the events accepted writes produced and the
payloads refused with a 422. Deliveries are counted by the hour they were created in and the
status they have now. A partner needs attention when the workers recorded it failing or
disabled it, or when this process's circuit breaker for it is open.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from gateway.clock import utcnow
from gateway.models import DeliveryStatus
from gateway.store import Store

HOURS: Final = 12
READ_LIMIT: Final = 20_000  # per collection and view: beyond it the counts say "at least"
ATTENTION: Final = [DeliveryStatus.FAILED.value, DeliveryStatus.DEAD.value]


@dataclass(frozen=True, slots=True)
class HourBucket:
    start: datetime
    events: int
    rejected: int
    deliveries: Mapping[str, int]

    @property
    def delivered(self) -> int:
        return sum(self.deliveries.values())


@dataclass(frozen=True, slots=True)
class PartnerAlert:
    id: str
    name: str
    status: str  # "disabled" | "failing" | "circuit_open"
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class DashboardView:
    since: datetime
    hours: list[HourBucket]
    failed_deliveries: int
    dead_deliveries: int
    pending_rejected: int
    partners: list[PartnerAlert] = field(default_factory=list)
    truncated: bool = False

    @property
    def peak(self) -> int:
        """The tallest bar, so charts share one scale."""
        return max([1, *(max(b.events + b.rejected, b.delivered) for b in self.hours)])


class Dashboard:
    def __init__(
        self,
        store: Store,
        breaker_states: Callable[[], Mapping[str, str]],
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._breaker_states = breaker_states
        self._clock = clock

    async def view(self, tenant: str, hours: int = HOURS) -> DashboardView:
        now = self._clock()
        since = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
        activity = self._store.activity
        events = await activity.event_times(tenant, since, READ_LIMIT)
        rejected = await activity.rejected_times(tenant, since, READ_LIMIT)
        deliveries = await activity.delivery_states(tenant, since, READ_LIMIT)
        buckets = _buckets(since, hours, events, rejected, deliveries)
        return DashboardView(
            since=since,
            hours=buckets,
            failed_deliveries=await activity.count_deliveries(tenant, ATTENTION[:1]),
            dead_deliveries=await activity.count_deliveries(tenant, ATTENTION[1:]),
            pending_rejected=await activity.count_pending_rejected(tenant),
            partners=await self._partners(tenant),
            truncated=READ_LIMIT in (len(events), len(rejected), len(deliveries)),
        )

    async def _partners(self, tenant: str) -> list[PartnerAlert]:
        alerts = {
            str(doc["_id"]): PartnerAlert(
                str(doc["_id"]),
                doc["name"],
                "disabled" if doc.get("status") == "disabled" else "failing",
                doc.get("failing_since"),
            )
            for doc in await self._store.activity.unhealthy_partners(tenant)
        }
        open_ids = [pid for pid, state in self._breaker_states().items() if state == "open"]
        # The breakers are the process's, across tenants: only this tenant's partners show.
        for pid, name in (await self._store.activity.partner_names(tenant, open_ids)).items():
            alerts.setdefault(pid, PartnerAlert(pid, name, "circuit_open"))
        return sorted(alerts.values(), key=lambda a: a.name)


def _hour(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def _buckets(
    since: datetime,
    hours: int,
    events: list[datetime],
    rejected: list[datetime],
    deliveries: list[tuple[datetime, str]],
) -> list[HourBucket]:
    event_counts = Counter(_hour(t) for t in events)
    rejected_counts = Counter(_hour(t) for t in rejected)
    by_hour: dict[datetime, Counter[str]] = {}
    for created, status in deliveries:
        by_hour.setdefault(_hour(created), Counter())[status] += 1
    starts = [since + timedelta(hours=i) for i in range(hours)]
    empty: dict[str, Any] = {}
    return [
        HourBucket(s, event_counts[s], rejected_counts[s], dict(by_hour.get(s, empty)))
        for s in starts
    ]
