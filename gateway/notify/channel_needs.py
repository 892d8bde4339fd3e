"""What a channel needs of what it sends through, checked by one function each both when the
channel is set up (`channels.py`, a 422 on its field) and when that partner or action is
changed while a channel uses it (`actions/`, a 409 naming the channels): a change the channel
setup would refuse is refused, instead of every message failing after it.

    push   the partner's auth is google_service_account (FCM's OAuth2 JWT grant)
    sms    the action is a POST or PUT with a request mapping (the provider's send API)

and what it needs of a fixed address a flow names (`address_problem`, at the flow's upload):
one its sender takes (an e-mail channel's one mailbox, an SMS channel's phone number).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.errors import Conflict
from gateway.notify.email import mailbox
from gateway.outbound.service_account import AUTH_TYPE
from gateway.schemas.ids import e164
from gateway.store import Store

SMS_METHODS = ("POST", "PUT")


def push_partner_problem(partner: Mapping[str, Any]) -> str | None:
    """Why a push channel cannot send through this partner (a stored partner's fields)."""
    if partner.get("auth_type") != AUTH_TYPE:
        return f"the partner's auth must be {AUTH_TYPE} (FCM's OAuth2 JWT grant)"
    return None


def sms_action_problem(action: Mapping[str, Any]) -> str | None:
    """Why an SMS channel cannot send through this action (a stored action's fields)."""
    if action.get("method") not in SMS_METHODS or not action.get("request_mapping"):
        return "an SMS action is a POST or PUT with a request_mapping"
    return None


def address_problem(channel: Mapping[str, Any], address: str) -> str | None:
    """Why a channel (a stored one's fields) cannot send to `address`: the sender's own
    check (`email.mailbox`, `ids.e164`), so that a fixed address a flow names fails at its
    upload rather than on every message."""
    try:
        if channel["type"] == "email":
            mailbox(address)
        elif channel["type"] == "sms":
            e164(address)
    except ValueError as exc:
        return f"channel {channel['name']!r} ({channel['type']}) cannot send to it: {exc}"
    return None


Check = Callable[[Mapping[str, Any]], str | None]


async def refuse_if_channels_need(
    store: Store,
    tenant: str,
    field: str,
    ref: str,
    what: str,
    check: Check,
    current: Mapping[str, Any],
    changed: Mapping[str, Any],
) -> None:
    """409 naming the channels whose `field` is `ref`, when the change (`current` →
    `changed`, the stored fields) brings `check`'s problem: one already there (data from before
    the check) does not block other changes."""
    problem = check(changed)
    if problem is None or check(current) is not None:
        return
    channels = await store.notify.channels.list(tenant, {field: ref}, after=None, limit=50)
    if channels:
        found = [{"kind": "channel", "id": str(d["_id"]), "name": d["name"]} for d in channels]
        named = ", ".join(f"channel {u['name']}" for u in found)
        raise Conflict(f"{what} is used by {named}, which needs it so: {problem}", used_by=found)
