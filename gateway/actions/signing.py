"""Standard Webhooks signing secrets as stored: a list of sealed entries, newest first,
`[{sealed, created_at, expires_at?}]`. The first is the current secret; each rotated out keeps
signing for ROTATION_GRACE after its own rotation, the newest ROTATED_KEPT of them. The same
rules for a subscription's secrets, a flow's (its `call` deliveries and `fetch` requests,
`flow_secrets.py`) and an action's (its proxy calls and schedules' pages, `action_secrets.py`).

`signer` makes the sender's `sign` hook (`OutboundRequest.sign`): every outbound request is
signed so, by its owner's secrets, over the exact bytes sent (a GET's: none), stamped with the
attempt's time. `with_signature` hangs it on a request: the one way every owner signs (a
delivery, a flow's fetch, a proxy call, a schedule's page, an SMS through its channel's action).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from gateway.auth.secretbox import SecretBox, is_lost
from gateway.auth.webhook_signature import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    generate_secret,
    signed_headers,
)
from gateway.clock import utc_timestamp
from gateway.errors import Conflict
from gateway.outbound.sender import OutboundRequest
from gateway.store import Doc

ROTATION_GRACE = timedelta(hours=24)
ROTATED_KEPT = 5
"""Secrets rotated out that still sign, each for ROTATION_GRACE after its own rotation: a
delivery carries at most this many signatures besides the current secret's."""


@dataclass(frozen=True, slots=True)
class SigningSecrets:
    """Opened secrets, newest first, each with the end of its grace (None: the current)."""

    secrets: tuple[tuple[str, datetime | None], ...] = field(repr=False)

    def signing_secrets(self, now: datetime) -> list[str]:
        """The current secret, plus those rotated out still in their grace period."""
        return [s for s, expires in self.secrets if expires is None or expires > now]


class SecretsOwner(Protocol):
    """Whose secrets sign a request: a subscription, a flow, an action (`SigningSecrets`)."""

    def signing_secrets(self, now: datetime) -> list[str]: ...


def with_signature(
    request: OutboundRequest, owner: SecretsOwner, msg_id: str, now: datetime
) -> OutboundRequest:
    """`request` signed as it goes (`signer`) with `owner`'s secrets live at `now` (the
    current one, and those rotated out within their grace), `msg_id` its `webhook-id`. Headers
    only: the body is sent as built."""
    return replace(request, sign=signer(owner.signing_secrets(now), msg_id))


def signer(secrets: Sequence[str], msg_id: str) -> Callable[[bytes], Mapping[str, str]]:
    """The `sign` hook of a request: Standard Webhooks headers over the bytes sent, `msg_id`
    the request's stable id (the same on each of its attempts), the timestamp the attempt's
    real time (receivers check it against theirs)."""

    def sign(sent: bytes) -> Mapping[str, str]:
        return signed_headers(secrets, msg_id, int(utc_timestamp()), sent)

    return sign


def unsigned_headers(msg_id: str, owner: str) -> dict[str, str]:
    """The Standard Webhooks headers `signer(..., msg_id)` adds, as a dry run shows them: the
    id as sent; the timestamp and the signature marked as made when sent (each attempt's
    time; over its exact bytes), no secret opened and nothing computed (`owner`: whose
    secrets sign, "the flow")."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: "<set when sent: the attempt's Unix time>",
        SIGNATURE_HEADER: (
            f"<computed when sent: an HMAC-SHA256 signature with each live secret of {owner},"
            " over the id, the timestamp and the exact body bytes>"
        ),
    }


def new_entry(box: SecretBox, context: str, now: datetime) -> tuple[Doc, str]:
    """A new secret sealed to `context`: the stored entry and the secret (shown once)."""
    secret = generate_secret()
    return {"sealed": box.seal(secret, context=context), "created_at": now}, secret


def rotated(entries: Sequence[Doc], entry: Doc, now: datetime) -> list[Doc]:
    """The entries after a rotation to `entry`: a second rotation within the day does not cut
    the first one's grace, which a receiver still on the first secret was promised. A lost
    one (`gateway reseal --forget-unreadable`) is dropped: it signs nothing, and kept for the
    grace it would fail every send meanwhile."""
    previous = [
        {**e, "expires_at": e.get("expires_at") or now + ROTATION_GRACE}
        for e in entries
        if (e.get("expires_at") is None or e["expires_at"] > now) and not _lost(e)
    ][:ROTATED_KEPT]
    return [entry, *previous]


def _lost(entry: Doc) -> bool:
    return isinstance(entry.get("sealed"), str) and is_lost(entry["sealed"])


def first_signing(box: SecretBox, context: str, now: datetime) -> tuple[Doc, str]:
    """An owner's first `signing` state (a flow's, an action's), its secret sealed to
    `context`, and the secret (shown once)."""
    entry, secret = new_entry(box, context, now)
    return {"secrets": [entry], "rev": 1}, secret


def rotated_signing(
    box: SecretBox, context: str, current: Doc | None, now: datetime
) -> tuple[Doc, str]:
    """An owner's `signing` state (a flow's, an action's) after a rotation to a new secret
    sealed to `context`: its secrets `rotated`, its revision counted on (what the next
    rotation's write compares), or the first state of an owner that had none; and the new
    secret (shown once)."""
    entry, secret = new_entry(box, context, now)
    state = {
        "secrets": rotated(current["secrets"], entry, now) if current else [entry],
        "rev": (current["rev"] + 1) if current else 1,
        "rotated_at": now,
    }
    return state, secret


def rotation_revision(rotated_at: datetime | None) -> str:
    """When an owner's signing secret was last rotated, as text ("": never): what a page that
    offers *Rotate* shows, and its rotation carries back (`refuse_unseen_rotation`)."""
    return "" if rotated_at is None else rotated_at.isoformat()


def signing_revision(owner: Doc) -> str:
    """The `rotation_revision` of a flow's head or an action, by their `signing` state."""
    return rotation_revision((owner.get("signing") or {}).get("rotated_at"))


def refuse_unseen_rotation(shown: str | None, current: str, owner: str) -> None:
    """A `Conflict`, before anything is made, when a rotation is asked from a page that showed
    another revision than the `current` one (`shown`; None: a client of its own, not
    checked): from a second tab, another admin's, or a page sent again, it would replace,
    unseen, the secret just shown once."""
    if shown is not None and current != shown:
        raise Conflict(
            f"the {owner}'s secret was rotated since this page was loaded (by another admin, "
            "or this page sent again): no new secret was made. A new secret is shown only "
            f"once: look at the {owner} again and rotate from there to get a new one"
        )


def open_live(
    box: SecretBox, entries: Sequence[Doc], context: str, now: datetime
) -> SigningSecrets:
    """The entries that still sign, opened. A rotated-out secret past its grace stays stored
    until the next rotation; it signs nothing, so it is not opened (its key may be gone:
    docs/security.md, key rotation). A lost rotated-out one (`gateway reseal
    --forget-unreadable`) is skipped too: the current secret signs alone; only a lost current
    one fails. Raises SecretBoxError."""
    return SigningSecrets(
        tuple(
            (box.open_text(e["sealed"], context=context), e.get("expires_at"))
            for e in entries
            if e.get("expires_at") is None or (e["expires_at"] > now and not _lost(e))
        )
    )
