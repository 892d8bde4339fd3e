"""The delivery worker's sender for notification deliveries (`delivery/kinds.py`): at send
time, the tenant's quiet hours and the step's cooldown decide, then the notifier sends.

A notification delivery stores what a flow's `notify` step rendered for one recipient:

    {"kind": "notification", "notification": {"channel", "channel_id", "channel_type",
     "template", "locale", "recipient": {address, name, driver_id, language}, "parts",
     "data", "message_id", "cooldown": {"key", "seconds", "also"?, "at"?} | null, "claim",
     "urgent"}}

- quiet hours that `delay` → Held until they end (no attempt spent); that `suppress` →
  Dropped (status `suppressed`);
- a cooldown key another alert noted within its cooldown (or one of the keys in `also`, which
  hold it back without being noted: the key a flow used before for the same condition) →
  Dropped (with `at`, the condition's time: another alert of a condition less than the
  cooldown from it, before or after, `CooldownStore.claim_at`); else the send is noted
  (atomically, `CooldownStore.claim`) under the step's `claim` (`<run id>:<step id>`), which
  every message of that step and every retry share: two phones of one driver both get the
  alert, a retried e-mail is not suppressed by its own first try;
- then `Notifier.send`; its outcome is the attempt (retries on the actions' schedule), but
  for a send our own guard held back before anything left (an open circuit, the partner's rate
  limit, a token endpoint that asked us to wait: `outbound.sender.Hold`, as for an action's
  delivery) → Held for the time the hold names, no attempt spent. A send
  that went out notes the cooldown again from now, as delivered, and so does one whose outcome
  is unknown (handed over, no answer: `SendOutcome.unknown`; retried, at least once, but the
  driver may have it, and its retry is the same alert, not a new one); one that failed (or
  waits for a retry after a known failure) releases it unless another message of the step
  went out: the cooldown counts from an alert the driver got, and the next alert is not
  silenced by one that never arrived.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.actions.catalog import DEFAULT_SCHEDULE
from gateway.auth.secretbox import SecretBoxError
from gateway.clock import from_iso
from gateway.delivery.kinds import Attempted, Dropped, Held, SendResult
from gateway.leased_loop import LeaseLost
from gateway.notify.notifier import Notification, Notifier, Recipient
from gateway.notify.policy import decide
from gateway.notify.settings import SettingsService
from gateway.outbound.sender import BeforeSending
from gateway.outbound.verdict import Verdict
from gateway.store import Doc
from gateway.store.notify import CooldownStore, last_noted, noted_near

# A delivery held for a disabled partner is tried again this soon: its channel may have been
# given another partner since (then it goes through that one), and the partner enabled again
# makes it due at once (its `partner_id`: `DeliveryStore.recovered`). The claims do not pass
# it over as they do an action's deliveries to a disabled partner: which partner it needs is
# its channel's at the time of sending.
_RECHECK = timedelta(seconds=60)


class NotificationSender:
    def __init__(
        self,
        notifier: Notifier,
        settings: SettingsService,
        cooldowns: CooldownStore,
        *,
        schedule: Sequence[float] = DEFAULT_SCHEDULE,
    ) -> None:
        self._notifier = notifier
        self._settings = settings
        self._cooldowns = cooldowns
        self._schedule = tuple(schedule)

    async def send(self, doc: Doc, now: datetime, before_sending: BeforeSending) -> SendResult:
        """A lease lost before anything went out (`before_sending` raises LeaseLost) touches
        no cooldown note another worker may hold: the lease is checked before the note is
        written, and a lease lost later (while the send waited for its partner's rate or
        capacity) gives back the note this send wrote, as a failed send does. The worker that
        took the delivery over notes and settles its own send."""
        tenant, message = doc["tenant"], doc["notification"]
        await before_sending()
        held = await self._policy(tenant, message, now)
        if held is not None:
            return held
        cooldown = message.get("cooldown")
        notification = _notification(message, str(doc["_id"]), before_sending)
        try:
            outcome = await self._notifier.send(tenant, notification)
        except (SecretBoxError, LeaseLost):  # nothing sent (a secret is judged by the worker)
            if cooldown is not None:
                await self._settle(tenant, cooldown, message["claim"], now, False)
            raise
        if cooldown is not None:
            went_out = outcome.verdict is Verdict.SUCCESS or outcome.unknown
            await self._settle(tenant, cooldown, message["claim"], now, went_out)
        if outcome.waits_for is not None:  # a disabled partner: waits as its deliveries do
            reason = f"not sent: {outcome.hold.message}" if outcome.hold else outcome.detail
            return Held(now + _RECHECK, reason, partner_id=outcome.waits_for)
        if (hold := outcome.hold) is not None:  # not sent: the same wait as an action's
            return Held(now + timedelta(seconds=hold.seconds), hold.describe())
        return Attempted(
            outcome.verdict,
            outcome.detail,
            self._schedule,
            outcome.code,
            outcome.retry_after,
            outcome.latency_ms,
            outcome.provider_id,
        )

    async def _policy(self, tenant: str, message: Doc, now: datetime) -> Held | Dropped | None:
        """None: send now (the cooldown, if any, is noted)."""
        settings, revision = await self._settings.read(tenant)
        cooldown = message.get("cooldown")
        wait, last = _wait(settings.cooldown, cooldown), None
        at = _condition_time(cooldown)
        if cooldown is not None:  # its key's note, or one of the keys it also heeds (`also`)
            for key in (cooldown["key"], *cooldown.get("also", ())):
                holder = await self._cooldowns.holder(tenant, key)
                if at is not None:  # judged on the condition's time: an alert near it
                    near = noted_near(holder, at, wait, message["claim"])
                    if near is not None:
                        return Dropped(_near(near, at))
                elif (noted := last_noted(holder, message["claim"])) is not None:
                    last = noted if last is None else max(last, noted)
        decision = decide(
            now,
            message["channel_type"],
            last_sent=last,
            settings=settings,
            cooldown=wait,
            urgent=bool(message.get("urgent")),
        )
        until = decision.until.isoformat() if decision.until else ""
        if decision.action == "delay":
            assert decision.until is not None

            async def still_judged() -> bool:
                return await self._settings.revision(tenant) == revision

            reason = f"held: {decision.reason} until {until}"
            return Held(decision.until, reason, quiet_hours=True, still_judged=still_judged)
        if decision.action == "suppress":
            return Dropped(f"suppressed: {decision.reason} (until {until})")
        if cooldown is None:
            return None
        if at is not None:
            near = await self._cooldowns.claim_at(
                tenant, cooldown["key"], at, wait, now, by=message["claim"]
            )
            return None if near is None else Dropped(_near(near, at))  # noted first elsewhere
        earlier = await self._cooldowns.claim(
            tenant, cooldown["key"], now, now - wait, now + wait, by=message["claim"]
        )
        if earlier is not None:  # another process noted one first
            return Dropped(f"suppressed: cooldown: sent at {earlier.isoformat()}")
        return None

    async def _settle(
        self, tenant: str, cooldown: Doc, claim: str, now: datetime, went_out: bool
    ) -> None:
        """After the send: an alert that went out (or may have: handed over with no answer,
        `SendOutcome.unknown`) keeps the note, as delivered; a failed one gives it back."""
        at = _condition_time(cooldown)
        if not went_out:
            if at is not None:
                await self._cooldowns.release_at(tenant, cooldown["key"], by=claim)
            else:
                await self._cooldowns.release(tenant, cooldown["key"], by=claim)
            return
        wait = _wait((await self._settings.get(tenant)).cooldown, cooldown)
        if at is not None:
            await self._cooldowns.claim_at(
                tenant, cooldown["key"], at, wait, now, by=claim, delivered=True
            )
            return
        # Re-noted rather than marked: a sibling message's failure may have released it.
        await self._cooldowns.claim(
            tenant, cooldown["key"], now, now - wait, now + wait, by=claim, delivered=True
        )


def _wait(default: timedelta, cooldown: Doc | None) -> timedelta:
    """The step's cooldown, or the tenant's when the step gives none."""
    if cooldown is None or cooldown.get("seconds") is None:
        return default
    return timedelta(seconds=cooldown["seconds"])


def _condition_time(cooldown: Doc | None) -> datetime | None:
    """The condition's time the step noted (`cooldown.at`), or None: judged on the send's."""
    at = None if cooldown is None else cooldown.get("at")
    if isinstance(at, str):  # as JSON carries it
        return from_iso(at)
    if isinstance(at, datetime):
        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return None


def _near(noted: datetime, at: datetime) -> str:
    return (
        f"suppressed: cooldown: an alert for {noted.isoformat()} went out, "
        f"within the cooldown of this one's time {at.isoformat()}"
    )


def _notification(message: Doc, key: str, before_sending: BeforeSending) -> Notification:
    recipient: dict[str, Any] = message["recipient"]
    return Notification(
        channel=message["channel_id"],
        recipient=Recipient(
            recipient["address"],
            recipient.get("name"),
            recipient.get("driver_id"),
            recipient.get("language"),
        ),
        parts=message["parts"],
        data=message.get("data") or {},
        message_id=message.get("message_id"),
        key=key,
        before_sending=before_sending,
        chain=message.get("chain") or {},
    )
