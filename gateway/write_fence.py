"""A request's write fence: when an entity write that lost an optimistic round to a concurrent
one may still be tried again.

A write that loses a round (the entity changed since it was read) reads it again and writes
its data over what it finds (`entities.py` `_Rounds`). Right for a request in time; wrong for
one whose process was paused past its partner's patience (a VM paused or migrated, a cgroup
frozen, a long swap stall): the partner has since retried it through another process, or
sent a newer value, and the old request, resuming, wrote its old data over the newer one, and
the same `Idempotency-Key`'s write landed twice. So a lost round is tried again only

- within `WRITE_SECONDS` of the request's arrival (`begin`, by the web edge; measured on
  `clock.ticks()`, which counts a suspended host's or a paused VM's pause too), which is half
  the `Idempotency-Key` lease (30 s, `triggers/idempotency.py`): before another process may
  take the key over; and
- while the request's `Idempotency-Key` marker is still its own and within its lease
  (`claimed`, by the idempotency guard; read from the database, on the gateway's time).

Otherwise nothing more is sent: `WriteAbandoned`, a 503 whose outcome is unknown (what an
earlier round sent may have landed; the partner retries with the same key and gets the
first answer or the write applied once).

No round's write is sent past `WRITE_SECONDS` either, the first included (`check_deadline`,
a clock read before each write): a process held up before it read the entity would read the
newer value and write its old one over it under the revision it just read. A write sent in
time lands only over what it was computed from: its revision guards it against whatever
changed after its read, however long the write itself then takes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

from gateway import clock
from gateway.errors import StoreUnavailable

WRITE_SECONDS: Final = 15.0

Claim = Callable[[], Awaitable[bool]]

_deadline: ContextVar[float | None] = ContextVar("write_deadline", default=None)
_claim: ContextVar[Claim | None] = ContextVar("write_claim", default=None)


class WriteAbandoned(StoreUnavailable):
    """A lost round not tried again: the request is past its fence."""


def begin() -> None:
    """A partner's call has arrived whole, its body read (`web/hooks.py`): its writes are
    sent, and their lost rounds tried again, until `WRITE_SECONDS` from now (the rest of the
    request's task sees it). Other writes (the admin API's, background jobs') have none."""
    _deadline.set(clock.ticks() + WRITE_SECONDS)


def clear() -> None:
    """No deadline (a request starts without one, whatever ran before it in its task)."""
    _deadline.set(None)


@contextmanager
def claimed(still_ours: Claim) -> Iterator[None]:
    """Within: a lost round is tried again only while `still_ours()` (the request's
    idempotency marker is its own, within its lease)."""
    token = _claim.set(still_ours)
    try:
        yield
    finally:
        _claim.reset(token)


def check_deadline() -> None:
    """Before each write of an entity: WriteAbandoned past `WRITE_SECONDS` from the
    request's arrival (a request's only; background writes have no deadline)."""
    deadline = _deadline.get()
    if deadline is not None and clock.ticks() > deadline:
        raise WriteAbandoned(
            f"the write would be sent more than {WRITE_SECONDS:g} s after the request arrived "
            "(this process was held up); not sent, since a newer write may have come "
            "meanwhile",
            deadline=True,
        )


async def check() -> None:
    """Before a lost round is tried again: WriteAbandoned past the request's fence."""
    check_deadline()
    still_ours = _claim.get()
    if still_ours is not None and not await still_ours():
        raise WriteAbandoned(
            "the write lost a round to a concurrent one after its Idempotency-Key's lease ran "
            "out (this process was held up, and a retry may have taken the key over); not "
            "tried again",
            deadline=True,
        )
