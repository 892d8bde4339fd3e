"""A partner deleted through one process is forgotten by every other process serving the same
database (the other children of `serve --workers N`, a `gateway worker`, which serves no
admin API, a second instance): its guard, its opened credentials and its metric place go at
their next housekeeping pass. Before, they stayed until the process ended, one of each per
partner ever called and deleted elsewhere, and once the deleted ones had taken every metric
place a new partner had no series of its own there (soak K1). The per-process registries are
bounded as a backstop all the same."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from gateway import metrics as metrics_module
from gateway.actions import catalog as catalog_module
from gateway.config import Settings
from gateway.metrics import OTHER
from gateway.outbound.breaker import GuardSettings, PartnerGuards
from gateway.services import Services, open_services
from gateway.store import connection
from tests.partner_double import Partner, partner
from tests.test_ops_metrics import metric_files

__all__ = ["metric_files", "partner"]  # the fixtures

PLACES = 3  # GATEWAY_METRICS_MAX_PARTNERS, small


async def _partner_with_action(a: Services, url: str, n: int) -> tuple[str, str]:
    body = {"name": f"p{n}", "base_url": url, "auth": {"type": "none"}}
    pid = str((await a.actions.create_partner("acme", body))["_id"])
    action = {"name": f"a{n}", "partner_id": pid, "method": "POST", "path": "/x", "mode": "proxy"}
    return pid, str((await a.actions.create_action("acme", action))["_id"])


@pytest.mark.timeout(120)
async def test_a_partner_deleted_through_another_process_is_forgotten_at_the_next_pass(
    settings: Settings, mongodb_uri: str, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    partner.respond_with(200, {"ok": True})
    monkeypatch.setattr(connection, "EXPIRE_SECONDS", 0.05)  # the housekeeping pass, 60 s
    quiet = replace(settings, run_workers=False, metrics_max_partners=PLACES)
    async with (
        open_services(quiet, mongodb_uri=mongodb_uri) as a,  # serves the admin API
        open_services(quiet, mongodb_uri=mongodb_uri) as b,  # calls the partners
    ):
        made = [await _partner_with_action(a, partner.url, n) for n in range(5)]
        for _, action_id in made:
            await b.proxy.invoke("acme", action_id, payload={})
        pids = [pid for pid, _ in made]
        assert set(b.guards._guards) == set(pids)
        assert b.metrics.label("partner", pids[4]) == OTHER  # every place taken
        for pid, action_id in made[:4]:
            await a.actions.delete_action("acme", action_id)
            await a.actions.delete_partner("acme", pid)
        assert set(a.guards._guards) == set()  # (A never called them)

        async with asyncio.timeout(10):
            while set(b.guards._guards) != {pids[4]}:
                await asyncio.sleep(0.05)
        assert set(b.catalog._auth) == {pids[4]}  # the opened credentials went with it
        assert b.metrics.kept("partner") == set()  # the deleted ones' places given back
        scraped = b.metrics.render().decode()
        assert not any(pid in scraped for pid in pids[:4])  # and their series removed
        # the live partner, counted under "other" while they held the places, has its own now
        assert b.metrics.label("partner", pids[4]) == pids[4]
        await b.proxy.invoke("acme", made[4][1], payload={})
        await asyncio.sleep(0)  # (counted once the answer is on its way)
        assert f'partner="{pids[4]}"' in b.metrics.render().decode()


@pytest.mark.usefixtures("metric_files")  # this process one of `serve --workers N`
async def test_under_workers_a_forgotten_partner_stays_forgotten_past_the_ids_remembered(
    settings: Settings, mongodb_uri: str, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under `--workers` a deleted partner keeps its metric place (its series live on in the
    process's file): only the latest GONE_KEPT deleted ids hid it from the pass. Once as many
    ids were deleted after it, it was taken for a partner held again and forgotten again,
    each such forget pushing another id out (read50 L9). The place itself remembers it."""
    monkeypatch.setattr(metrics_module, "GONE_KEPT", PLACES)  # 100,000
    partner.respond_with(200, {"ok": True})
    workers = replace(settings, run_workers=False, metrics_max_partners=PLACES)
    async with open_services(workers, mongodb_uri=mongodb_uri) as b:
        made = [await _partner_with_action(b, partner.url, n) for n in range(PLACES)]
        for _, action_id in made:
            await b.proxy.invoke("acme", action_id, payload={})
        await b.store.db["partners"].delete_many({})  # deleted through another process
        assert await b.actions.forget_deleted_partners() == PLACES
        for n in range(PLACES):  # as many ids deleted since (triggers, schedules, partners)
            b.metrics.forget("trigger", f"trg_{n}")

        assert [await b.actions.forget_deleted_partners() for _ in range(3)] == [0, 0, 0]
        assert b.metrics.kept("partner") == set()
        assert {b.metrics.label("partner", pid) for pid, _ in made} == {OTHER}


async def test_partner_guards_past_their_bound_drop_the_least_recently_used_idle_one() -> None:
    guards = PartnerGuards(most=2)
    settings = GuardSettings(max_concurrency=1)
    busy = guards.get("busy", settings)
    assert await busy.gate.acquire()  # a call in flight: its gate is held
    guards.get("old", settings)
    guards.get("new", settings)
    assert guards.partner_ids() == {"busy", "new"}  # "old" was idle: it went, not "busy"
    guards.get("busy", settings)  # used again: the most recent
    busy.gate.release()
    guards.get("newer", settings)
    assert guards.partner_ids() == {"busy", "newer"}


async def test_the_catalogs_opened_credentials_are_bounded(
    services: Services, monkeypatch: pytest.MonkeyPatch, partner: Partner
) -> None:
    monkeypatch.setattr(catalog_module, "_MAX_CACHED", 2)
    pids: list[str] = []
    for n in range(3):
        body: dict[str, Any] = {"name": f"p{n}", "base_url": partner.url, "auth": {"type": "none"}}
        pids.append(str((await services.actions.create_partner("acme", body))["_id"]))
        await services.catalog.partner("acme", pids[-1])
    assert list(services.catalog._auth) == pids[1:]  # the least recently used went
