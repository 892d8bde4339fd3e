"""Cooldowns are claimed atomically in the database: of two processes alerting for the same
(vehicle, condition) at once, one sends; the next alert waits for the cooldown to pass."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.config import Settings
from gateway.services import Services, open_services
from gateway.store import notify
from gateway.web.state import services_key

Client = TestClient[Any, Any]
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


async def test_one_of_two_concurrent_claims_wins(client: Client) -> None:
    cooldowns = client.app[services_key].store.notify.cooldowns
    now = datetime.now(UTC).replace(microsecond=0)
    results = await asyncio.gather(
        *(
            cooldowns.claim("acme", "ABC1D23:geofence", now, now - HOUR, now + HOUR)
            for _ in range(2)
        )
    )
    assert sorted(results, key=lambda r: r is not None) == [None, now]
    assert await cooldowns.last_sent("acme", "ABC1D23:geofence") == now


async def test_a_claim_after_the_cooldown_wins_again(client: Client) -> None:
    cooldowns = client.app[services_key].store.notify.cooldowns
    first = datetime.now(UTC).replace(microsecond=0)
    assert await cooldowns.claim("acme", "k", first, first - HOUR, first + HOUR) is None
    soon = first + timedelta(minutes=10)
    assert await cooldowns.claim("acme", "k", soon, soon - HOUR, soon + HOUR) == first
    later = first + timedelta(hours=2)
    assert await cooldowns.claim("acme", "k", later, later - HOUR, later + HOUR) is None
    assert await cooldowns.claim("other", "k", soon, soon - HOUR, soon + HOUR) is None


async def test_claims_of_a_conditions_time_hold_within_the_cooldown_either_side(
    client: Client,
) -> None:
    """`claim_at` judges the condition's time (a crossing's), not the send's: of two
    concurrent claims 10 minutes apart, one wins; 3 hours apart, both; the order does not
    matter; a step's own claim (a retry) passes; a failed send's note is given back, a
    delivered one is not."""
    cooldowns = client.app[services_key].store.notify.cooldowns
    now = datetime.now(UTC).replace(microsecond=0)
    wait = timedelta(minutes=30)
    crossing = now - timedelta(hours=6)
    near = crossing + timedelta(minutes=10)
    results = await asyncio.gather(
        cooldowns.claim_at("acme", "g", crossing, wait, now, by="run-1:push"),
        cooldowns.claim_at("acme", "g", near, wait, now, by="run-2:push"),
    )
    assert sorted(results, key=lambda r: r is not None) in ([None, crossing], [None, near])
    winner, loser = ("run-1:push", near) if results[0] is None else ("run-2:push", crossing)
    later = crossing + timedelta(hours=3)
    assert await cooldowns.claim_at("acme", "g", later, wait, now, by="run-3:push") is None
    before = crossing - timedelta(minutes=20)  # sent after, 20 minutes before: held
    assert await cooldowns.claim_at("acme", "g", before, wait, now, by="run-4:push") is not None
    assert await cooldowns.claim_at("acme", "g", loser, wait, now, by=winner) is None  # a retry
    await cooldowns.release_at("acme", "g", by=winner)  # its send failed
    assert await cooldowns.claim_at("acme", "g", near, wait, now, by="run-5:push") is None
    await cooldowns.claim_at("acme", "g", near, wait, now, by="run-5:push", delivered=True)
    await cooldowns.release_at("acme", "g", by="run-5:push")  # a sibling's failure
    assert await cooldowns.claim_at("acme", "g", near, wait, now, by="run-6:push") == near
    assert await cooldowns.claim_at("beta", "g", near, wait, now, by="run-6:push") is None


async def test_a_sibling_message_failing_after_a_delivered_one_keeps_the_alerts_note(
    client: Client,
) -> None:
    """A driver's two phones share the step's claim: the first is pushed (its note marked
    delivered), the second is claimed after it and fails (a stale token). The alert went
    out, so its note stays and a repeat crossing 10 minutes later is held back."""
    cooldowns = client.app[services_key].store.notify.cooldowns
    now = datetime.now(UTC).replace(microsecond=0)
    wait, crossing, by = timedelta(minutes=30), now - timedelta(minutes=20), "run-1:push"
    assert await cooldowns.claim_at("acme", "g", crossing, wait, now, by=by) is None  # phone A
    await cooldowns.claim_at("acme", "g", crossing, wait, now, by=by, delivered=True)  # pushed
    assert await cooldowns.claim_at("acme", "g", crossing, wait, now, by=by) is None  # phone B
    await cooldowns.release_at("acme", "g", by=by)  # B's push failed
    assert await cooldowns.claim_at("acme", "g", crossing, wait, now, by=by) is None  # B's retry
    await cooldowns.release_at("acme", "g", by=by)  # failed again
    repeat = crossing + timedelta(minutes=10)
    assert await cooldowns.claim_at("acme", "g", repeat, wait, now, by="run-2:push") == crossing
    # A claim that never went out is still given back by its failure.
    later = crossing + timedelta(hours=2)
    assert await cooldowns.claim_at("acme", "g", later, wait, now, by="run-3:push") is None
    await cooldowns.release_at("acme", "g", by="run-3:push")
    assert await cooldowns.claim_at("acme", "g", later, wait, now, by="run-4:push") is None


async def test_a_send_time_claim_reads_a_key_a_conditions_time_noted(client: Client) -> None:
    """A step without `at` on a key a step with `at` noted (the flow edited to drop `at`,
    two steps sharing a key): the condition's time counts as an alert sent then. Until
    2026-12-07 every such claim and `last_sent` raised KeyError: 'sent_at'."""
    cooldowns = client.app[services_key].store.notify.cooldowns
    now = datetime.now(UTC).replace(microsecond=0)
    wait, crossing = timedelta(minutes=30), now - timedelta(minutes=20)
    assert await cooldowns.claim_at("acme", "g", crossing, wait, now, by="run-1:push") is None
    assert await cooldowns.last_sent("acme", "g") == crossing
    assert await cooldowns.claim("acme", "g", now, now - wait, now + wait, by="r2") == crossing
    later = now + timedelta(minutes=15)  # 35 minutes after the crossing: it may go
    assert await cooldowns.claim("acme", "g", later, later - wait, later + wait, by="r3") is None
    assert await cooldowns.last_sent("acme", "g") == later
    # Its failure gives back its own note only: the crossing's still holds a repeat near it.
    await cooldowns.release("acme", "g", by="r3")
    assert await cooldowns.last_sent("acme", "g") == crossing
    repeat = crossing + timedelta(minutes=10)
    assert await cooldowns.claim_at("acme", "g", repeat, wait, now, by="run-4:push") == crossing
    # An old note of a condition's time holds back no send.
    old = now - timedelta(hours=3)
    assert await cooldowns.claim_at("acme", "h", old, wait, now, by="run-5:push") is None
    assert await cooldowns.claim("acme", "h", now, now - wait, now + wait, by="r6") is None


NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
QUIET = NOW - HOUR  # the claims' `quiet_until`
KEEP = NOW + HOUR  # their `keep_until`
LONG_AGO, RECENT = NOW - 3 * HOUR, NOW - timedelta(minutes=10)
LATER = NOW + 48 * HOUR  # a note kept past the claim's `keep_until`


def _note(at: datetime, by: str, **more: Any) -> dict[str, Any]:
    return {"at": at, "by": by, "keep": LATER, **more}


# (case, the key's document before, the claim's `by`, `delivered`, what the claim returns)
CLAIMS: list[tuple[str, dict[str, Any] | None, str | None, bool, datetime | None]] = [
    ("no document", None, "run-1", False, None),
    ("no document, delivered", None, "run-1", True, None),
    ("no document, no claimant", None, None, False, None),
    ("sent long ago by another", {"sent_at": LONG_AGO, "by": "run-0"}, "run-1", False, None),
    ("sent at the quiet limit", {"sent_at": QUIET, "by": "run-0"}, "run-1", False, None),
    ("sent recently by another", {"sent_at": RECENT, "by": "run-0"}, "run-1", False, RECENT),
    ("sent recently, no claimant", {"sent_at": RECENT, "by": None}, None, False, RECENT),
    ("sent recently by us", {"sent_at": RECENT, "by": "run-1"}, "run-1", False, None),
    (
        "sent recently by us, delivered",
        {"sent_at": RECENT, "by": "run-1", "delivered_by": "run-1"},
        "run-1",
        True,
        None,
    ),
    (
        "delivered by another recently",
        {"sent_at": RECENT, "by": "run-0", "delivered_by": "run-0"},
        "run-1",
        True,
        RECENT,
    ),
    ("released (notes only)", {"notes": []}, "run-1", False, None),
    ("noted inside by another", {"notes": [_note(RECENT, "run-0")]}, "run-1", False, RECENT),
    ("noted inside, no claimant", {"notes": [_note(RECENT, "run-0")]}, None, False, RECENT),
    ("noted inside by us", {"notes": [_note(RECENT, "run-1")]}, "run-1", False, None),
    ("noted outside", {"notes": [_note(LONG_AGO, "run-0")]}, "run-1", False, None),
    ("noted at the quiet limit", {"notes": [_note(QUIET, "run-0")]}, "run-1", False, None),
    (
        "noted inside and delivered",
        {"notes": [_note(RECENT, "run-0", delivered=True)]},
        "run-1",
        True,
        RECENT,
    ),
    (
        "sent long ago, noted inside",
        {"sent_at": LONG_AGO, "by": "run-0", "notes": [_note(RECENT, "run-2")]},
        "run-1",
        False,
        RECENT,
    ),
    (
        "sent recently by us, noted inside by another",
        {"sent_at": RECENT, "by": "run-1", "notes": [_note(NOW, "run-2")]},
        "run-1",
        False,
        NOW,
    ),
    (
        "sent recently by another, noted outside",
        {"sent_at": RECENT, "by": "run-0", "notes": [_note(LONG_AGO, "run-2")]},
        "run-1",
        False,
        RECENT,
    ),
    (
        "sent long ago, noted outside and by us inside",
        {
            "sent_at": LONG_AGO,
            "by": "run-0",
            "notes": [_note(LONG_AGO, "run-2"), _note(RECENT, "run-1")],
        },
        "run-1",
        False,
        None,
    ),
]


@pytest.mark.parametrize("tries", [notify.CLAIM_TRIES, 0], ids=["read, then write", "contended"])
@pytest.mark.parametrize(
    ("before", "by", "delivered", "returns"),
    [case[1:] for case in CLAIMS],
    ids=[case[0] for case in CLAIMS],
)
async def test_a_send_time_claim_judges_each_kind_of_earlier_note(
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    tries: int,
    before: dict[str, Any] | None,
    by: str | None,
    delivered: bool,
    returns: datetime | None,
) -> None:
    """`claim` passes a key never noted, one last sent before `quiet_until` (or then) or by
    the same claimant, unless another claimant noted a condition's time after it; a winner
    notes its send (and that it went out, `delivered`) and keeps the key's notes, a loser
    leaves the key as it was and learns the latest time that held it. The same whether the
    claim reads the key and writes on what it read, or (contended past its tries) takes the
    one write that judges the key in the database."""
    monkeypatch.setattr(notify, "CLAIM_TRIES", tries)
    cooldowns = services.store.notify.cooldowns
    collection = cooldowns._c
    doc_id = "acme:g"
    if before is not None:
        await collection.insert_one(
            {"_id": doc_id, "tenant": "acme", "key": "g", "expires_at": KEEP} | before
        )
    assert await cooldowns.claim("acme", "g", NOW, QUIET, KEEP, by=by, delivered=delivered) == (
        returns
    )
    after = await collection.find_one({"_id": doc_id})
    assert after is not None
    if returns is not None:
        assert after == {"_id": doc_id, "tenant": "acme", "key": "g", "expires_at": KEEP} | (
            before or {}
        )
        return
    expected = {"_id": doc_id, "tenant": "acme", "key": "g", "expires_at": KEEP} | (before or {})
    expected |= {"sent_at": NOW, "by": by} | ({"delivered_by": by} if delivered else {})
    assert after == expected


async def test_of_many_concurrent_claims_of_a_key_one_wins_in_any_process(
    services: Services, settings: Settings, mongodb_uri: str
) -> None:
    """Claims of one key by many claimants at once, through two gateway processes' stores:
    exactly one may send, every other learns the winner's time; a claimant's own second
    claim (a retry) still passes."""
    async with open_services(settings, mongodb_uri=mongodb_uri) as other:
        stores = (services.store.notify.cooldowns, other.store.notify.cooldowns)
        for round_ in range(3):
            key = f"g{round_}"
            if round_ == 2:  # a key already noted, its cooldown over
                assert await stores[0].claim("acme", key, LONG_AGO, QUIET, KEEP) is None
            results = await asyncio.gather(
                *(
                    stores[n % 2].claim("acme", key, NOW, QUIET, KEEP, by=f"run-{n}")
                    for n in range(12)
                )
            )
            winners = [n for n, result in enumerate(results) if result is None]
            assert len(winners) == 1, results
            assert [r for r in results if r is not None] == [NOW] * 11
            [winner] = winners
            assert await stores[1].claim("acme", key, NOW, QUIET, KEEP, by=f"run-{winner}") is None


WAIT = timedelta(minutes=30)
AT = NOW - 6 * HOUR  # the condition's time a `claim_at` notes
ODD = AT + timedelta(microseconds=500)  # a time between two the database can store


# (case, the key's document before, the claim's condition time, `delivered`, what it returns)
CLAIMS_AT: list[tuple[str, dict[str, Any] | None, datetime, bool, datetime | None]] = [
    ("no document", None, AT, False, None),
    ("no document, delivered", None, AT, True, None),
    (
        "noted inside by another",
        {"notes": [_note(AT + 10 * MINUTE, "run-0")]},
        AT,
        False,
        AT + 10 * MINUTE,
    ),
    (
        "noted inside before",
        {"notes": [_note(AT - 10 * MINUTE, "run-0")]},
        AT,
        True,
        AT - 10 * MINUTE,
    ),
    ("noted at the cooldown's start", {"notes": [_note(AT - WAIT, "run-0")]}, AT, False, None),
    ("noted at the cooldown's end", {"notes": [_note(AT + WAIT, "run-0")]}, AT, False, None),
    (
        "noted at the end, to the microsecond",
        {"notes": [_note(AT + WAIT, "run-0")]},
        ODD,
        False,
        None,
    ),
    (
        "noted at the start, to the microsecond",
        {"notes": [_note(AT - WAIT, "run-0")]},
        ODD,
        False,
        None,
    ),
    ("noted outside", {"notes": [_note(AT + 2 * HOUR, "run-0")]}, AT, False, None),
    ("noted inside by us", {"notes": [_note(AT + MINUTE, "run-1")]}, AT, False, None),
    (
        "noted inside by us, delivered",
        {"notes": [_note(AT + MINUTE, "run-1", delivered=True)]},
        AT,
        False,
        None,
    ),
    (
        "a note past its keeping",
        {"notes": [{"at": AT - 3 * HOUR, "by": "run-0", "keep": NOW - MINUTE}]},
        AT,
        False,
        None,
    ),
    (
        "sent inside by another",
        {"sent_at": AT + 5 * MINUTE, "by": "run-0"},
        AT,
        False,
        AT + 5 * MINUTE,
    ),
    ("sent inside by us", {"sent_at": AT + 5 * MINUTE, "by": "run-1"}, AT, False, None),
    ("sent at the start", {"sent_at": AT - WAIT, "by": "run-0"}, AT, False, None),
    ("sent at the end", {"sent_at": AT + WAIT, "by": "run-0"}, AT, False, None),
    (
        "sent at the end, to the microsecond",
        {"sent_at": AT + WAIT, "by": "run-0"},
        ODD,
        False,
        None,
    ),
    ("sent long after", {"sent_at": NOW, "by": "run-0"}, AT, False, None),
    (
        "sent outside, noted inside",
        {"sent_at": NOW, "by": "run-0", "notes": [_note(AT, "run-2")]},
        AT,
        False,
        AT,
    ),
    (
        "sent inside by us, noted outside",
        {"sent_at": AT, "by": "run-1", "notes": [_note(AT - HOUR, "run-2")]},
        AT,
        True,
        None,
    ),
]


@pytest.mark.parametrize(
    ("before", "at", "delivered", "returns"),
    [case[1:] for case in CLAIMS_AT],
    ids=[case[0] for case in CLAIMS_AT],
)
async def test_a_conditions_time_claim_judges_each_kind_of_earlier_note(
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    before: dict[str, Any] | None,
    at: datetime,
    delivered: bool,
    returns: datetime | None,
) -> None:
    """`claim_at` answers, and leaves the key, the same whether it reads the key and writes on
    what it read or (contended past its tries) takes the one write that judges the key in the
    database, in every case: no document, notes and sends of others and of the claimant's
    inside the cooldown, at either end of it (at the database's millisecond), outside."""
    cooldowns = services.store.notify.cooldowns
    collection = cooldowns._c
    after: dict[int, dict[str, Any] | None] = {}
    for tries in (notify.CLAIM_TRIES, 0):
        monkeypatch.setattr(notify, "CLAIM_TRIES", tries)
        key = f"g{tries}"
        if before is not None:
            doc = {"_id": f"acme:{key}", "tenant": "acme", "key": key, "expires_at": KEEP}
            await collection.insert_one(doc | before)
        claimed = await cooldowns.claim_at(
            "acme", key, at, WAIT, NOW, by="run-1", delivered=delivered
        )
        assert claimed == returns, tries
        found = await collection.find_one({"_id": f"acme:{key}"})
        assert found is not None
        after[tries] = {k: v for k, v in found.items() if k not in ("_id", "key")}
    assert after[notify.CLAIM_TRIES] == after[0]


async def test_of_many_concurrent_claims_of_a_conditions_time_one_wins_in_any_process(
    services: Services, settings: Settings, mongodb_uri: str
) -> None:
    """Claims of conditions' times less than the cooldown apart by many claimants at once,
    through two gateway processes' stores: exactly one may send, each other learns a time
    that held it back."""
    async with open_services(settings, mongodb_uri=mongodb_uri) as other:
        stores = (services.store.notify.cooldowns, other.store.notify.cooldowns)
        for round_ in range(2):
            key = f"g{round_}"
            if round_ == 1:  # a key already noted, far from these
                assert (
                    await stores[0].claim_at("acme", key, AT - 5 * HOUR, WAIT, NOW, by="x") is None
                )
            times = [AT + n * MINUTE for n in range(12)]
            results = await asyncio.gather(
                *(
                    stores[n % 2].claim_at("acme", key, times[n], WAIT, NOW, by=f"run-{n}")
                    for n in range(12)
                )
            )
            winners = [n for n, result in enumerate(results) if result is None]
            assert len(winners) == 1, results
            [winner] = winners
            assert [r for r in results if r is not None] == [times[winner]] * 11
