"""Which admin reads cost the database more as a tenant's history grows: every admin API GET
and the admin UI's list pages, at two sizes of history, on the embedded SecantusDB.

    python bench/bench_reads_at_scale.py [--base 1000] [--factor 10] [--rounds 5]

The gateway's app runs in this process (`create_app`, workers off) on an EmbeddedServer; the
history is written straight into the collections with the shapes the stores write: tenant
`acme` (measured) gets `base` events (two deliveries and a flow run each), `base` fixes of
one vehicle, `base / 10` vehicles and drivers, rejected payloads, driver changes and
schedule runs; tenant `bigco` three times as much. Each history is spread back in time at a
constant rate (the newest documents are the same at both sizes: only the past grows). Then
every read is called `rounds` times and the database process's CPU (/proc) per call
printed; the history is grown `factor` times and the reads measured again. A read whose
cost grows with the history (ratio near `factor`) reads what it does not show.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, CookieJar
from aiohttp.test_utils import TestServer
from bson import ObjectId
from pymongo import AsyncMongoClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import cpu_seconds  # noqa: E402
from gateway.app import create_app  # noqa: E402
from gateway.auth.keyring import KeyRing  # noqa: E402
from gateway.auth.tokens import issue_admin_token  # noqa: E402
from gateway.config import Secret, Settings  # noqa: E402
from gateway.store.assignments import change_id  # noqa: E402
from gateway.store.deliveries import shard_of as delivery_shard  # noqa: E402
from gateway.store.embedded import EmbeddedServer  # noqa: E402
from gateway.store.entities import filter_keys  # noqa: E402
from gateway.store.flow_runs import shard_of as run_shard  # noqa: E402
from gateway.store.positions import position_id  # noqa: E402
from gateway.store.rejected import MAX_PER_TRIGGER  # noqa: E402
from gateway.store.schedules import MAX_RUNS_PER_SCHEDULE  # noqa: E402

SECRET_KEY = "bench-secret-key-0123456789abcdef0123456789abcdef"
DATABASE = "scale"
TENANTS = {"acme": 1, "bigco": 3}  # tenant: its history's size, in units of `base`
SPACING = timedelta(seconds=30)  # one event every 30 s, back from now
STATUSES = ("succeeded", "succeeded", "succeeded", "failed", "dead")
RUN_STATUSES = ("succeeded", "succeeded", "failed")
TRIGGERS = [str(ObjectId()) for _ in range(3)]


def oid_at(at: datetime) -> ObjectId:
    """An ObjectId of that second, unique (from_datetime's tail is zeros)."""
    return ObjectId(ObjectId.from_datetime(at).binary[:4] + os.urandom(8))


def plate(i: int) -> str:
    return f"ABC{i % 10}{chr(65 + i // 10 % 26)}{i // 260 % 100:02d}"


def cpf(i: int) -> str:
    return f"{i:011d}"


class History:
    """One tenant's documents, written in slices [start, stop) of its unit counts: slice i is
    older than slice i - 1, so a grown history has the same newest documents."""

    def __init__(self, db: Any, tenant: str, weight: int) -> None:
        self.db, self.tenant, self.weight = db, tenant, weight
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.vehicle = oid_at(self.now - timedelta(days=3650))  # the first
        self.driver = oid_at(self.now - timedelta(days=3650, seconds=1))
        self.schedule = str(ObjectId())
        self.subs = (str(ObjectId()), str(ObjectId()))
        self.action, self.partner = str(ObjectId()), str(ObjectId())
        self.sample: dict[str, Any] = {}

    def _entity(self, oid: ObjectId, etype: str, data: dict[str, Any], nk: str) -> dict:
        at = oid.generation_time
        return {
            "_id": oid,
            "tenant": self.tenant,
            "type": etype,
            "nk": nk,
            "data": data,
            "fk": filter_keys(etype, data),
            "rev": 1,
            "created_at": at,
            "updated_at": at,
        }

    async def write(self, start: int, stop: int) -> None:
        t, w = self.tenant, self.weight
        rng = random.Random(f"{t}{start}")
        entities, events, deliveries, runs, rejected, fixes, changes, sched = (
            [] for _ in "12345678"
        )
        lo, hi = start * w, stop * w
        for i in range(lo // 10, hi // 10):
            first = i == 0
            made = self.now - SPACING * (i * 10) - timedelta(days=1)
            oid = self.vehicle if first else oid_at(made)
            data = {"plate": plate(i), "attributes": {"tracker_id": f"trk-{i}"}}
            entities.append(self._entity(oid, "vehicle", data, plate(i)))
            did = self.driver if first else oid_at(made + timedelta(seconds=1))
            driver = {"cpf": cpf(i + 1), "name": f"Motorista {i}"}
            entities.append(self._entity(did, "driver", driver, cpf(i + 1)))
            when = self.now - timedelta(hours=i + 1)
            changes.append(
                {
                    "_id": change_id(t, str(self.vehicle), when),
                    "tenant": t,
                    "vehicle_id": str(self.vehicle),
                    "plate": plate(0),
                    "driver": {"id": str(did), "cpf": driver["cpf"], "name": driver["name"]},
                    "start": when,
                    "source": "api",
                    "ref": None,
                    "author": "bench",
                    "recorded_at": when,
                }
            )
        for i in range(lo, hi):
            at = self.now - SPACING * i
            eid = oid_at(at)
            etype = ("entity.updated", "vehicle.position", "fine.created")[i % 3]
            n = i // 10
            entity = {
                "type": "vehicle",
                "id": str(self.vehicle if n == 0 else eid),
                "key": plate(n),
            }
            event = {
                "_id": eid,
                "tenant": t,
                "type": etype,
                "occurred_at": at,
                "relayed_at": at,
                "entity": entity,
                "data": {"plate": plate(n), "odometer_km": 1000.0 + i},
                "changes": [{"field": "odometer_km", "old": 999.0 + i, "new": 1000.0 + i}],
                "origin": {"kind": "trigger", "id": TRIGGERS[0]},
            }
            events.append(event)
            public = {
                "id": str(eid),
                **{k: v for k, v in event.items() if k not in ("_id", "tenant")},
            }
            for sub in self.subs:
                delivery_id = f"{eid}:{sub}"
                deliveries.append(
                    {
                        "_id": delivery_id,
                        "shard": delivery_shard(delivery_id),
                        "tenant": t,
                        "event": public,
                        "event_type": etype,
                        "subscription_id": sub,
                        "action_id": self.action,
                        "partner_id": self.partner,
                        "entity_id": entity["id"],
                        "status": STATUSES[i % len(STATUSES)],
                        "next_attempt_at": at,
                        "attempt_count": 1,
                        "attempts": [{"n": 1, "status": 200, "at": at, "response": "x" * 100}],
                        "created_at": at,
                        "updated_at": at,
                    }
                )
            run_id = f"{eid}:aviso"
            runs.append(
                {
                    "_id": run_id,
                    "tenant": t,
                    "flow": "aviso",
                    "version": 1,
                    "event": public,
                    "depth": 0,
                    "status": RUN_STATUSES[i % len(RUN_STATUSES)],
                    "next_step": 1,
                    "steps": [{"id": "moving", "kind": "when", "outcome": "passed", "at": at}],
                    "answers": {},
                    "shard": run_shard(run_id),
                    "next_attempt_at": at,
                    "claims": 1,
                    "created_at": at,
                    "updated_at": at,
                }
            )
            fix_t = self.now - timedelta(seconds=10 * i)
            fixes.append(
                {
                    "_id": position_id(str(self.vehicle), fix_t),
                    "tenant": t,
                    "vehicle": str(self.vehicle),
                    "t": fix_t,
                    "lat": -23.55 + rng.uniform(-0.1, 0.1),
                    "lon": -46.63 + rng.uniform(-0.1, 0.1),
                    "speed_kmh": 40.0,
                    "at": fix_t + timedelta(seconds=2),
                    "source": "bench",
                }
            )
            if i % 3 == 0 and i // 3 < MAX_PER_TRIGGER * len(TRIGGERS):  # kept per trigger
                text = f'{{"placa": null, "km": {i}}}'
                rejected.append(
                    {
                        "_id": eid,
                        "tenant": t,
                        "trigger_id": TRIGGERS[i % len(TRIGGERS)],
                        "received_at": at,
                        "reason": "payload",
                        "detail": "1 problem",
                        "problems": [{"pointer": "/placa", "message": "required"}],
                        "scope": "body",
                        "index": None,
                        "schema_applies": True,
                        "payload": text,
                        "size": len(text),
                        "replayable": True,
                        "status": "pending",
                        "attempts": 0,
                    }
                )
            if i % 10 == 0 and i // 10 < MAX_RUNS_PER_SCHEDULE:  # the newest kept
                sched.append(
                    {
                        "_id": eid,
                        "tenant": t,
                        "schedule_id": self.schedule,
                        "started_at": at,
                        "finished_at": at,
                        "status": "succeeded",
                        "items": 3,
                    }
                )
        for name, docs in (
            ("entities", entities),
            ("events", events),
            ("deliveries", deliveries),
            ("flow_runs", runs),
            ("rejected", rejected),
            ("positions", fixes),
            ("driver_assignments", changes),
            ("schedule_runs", sched),
        ):
            for chunk in range(0, len(docs), 2000):
                await self.db[name].insert_many(docs[chunk : chunk + 2000], ordered=False)
        if start == 0:
            self.sample = {
                "event": str(events[5]["_id"]),
                "delivery": deliveries[10]["_id"],
                "run": runs[5]["_id"],
                "rejected": str(rejected[1]["_id"]),
                "entity_event": str(events[40]["entity"]["id"]),
            }


def reads(h: History, cursor: dict[str, str]) -> list[tuple[str, str]]:
    """(label, path) of every admin GET measured; `cursor`: next_cursor values of page 1."""
    s, v = h.sample, str(h.vehicle)
    api = [
        ("events", "/api/v1/events?limit=20"),
        ("events ?type", "/api/v1/events?type=fine.created&limit=20"),
        ("events ?entity_id", f"/api/v1/events?entity_id={s['entity_event']}&limit=20"),
        ("events page 2", f"/api/v1/events?limit=20&cursor={cursor.get('events', '')}"),
        ("event by id", f"/api/v1/events/{s['event']}"),
        ("deliveries", "/api/v1/deliveries?limit=20"),
        ("deliveries page 2", f"/api/v1/deliveries?limit=20&cursor={cursor.get('deliveries', '')}"),
        ("deliveries ?status=dead", "/api/v1/deliveries?status=dead&limit=20"),
        ("deliveries ?event_id", f"/api/v1/deliveries?event_id={s['event']}"),
        ("deliveries ?subscription_id", f"/api/v1/deliveries?subscription_id={h.subs[0]}"),
        ("deliveries ?entity_id", f"/api/v1/deliveries?entity_id={v}&limit=20"),
        ("delivery by id", f"/api/v1/deliveries/{s['delivery']}"),
        ("rejected", "/api/v1/rejected?limit=20"),
        ("rejected ?trigger_id", f"/api/v1/rejected?trigger_id={TRIGGERS[1]}&limit=20"),
        ("rejected ?status", "/api/v1/rejected?status=pending&limit=20"),
        ("rejected by id", f"/api/v1/rejected/{s['rejected']}"),
        ("flow runs", "/api/v1/flows/aviso/runs?limit=20"),
        ("flow runs ?status", "/api/v1/flows/aviso/runs?status=failed&limit=20"),
        ("flow runs page 2", f"/api/v1/flows/aviso/runs?limit=20&cursor={cursor.get('runs', '')}"),
        ("flow run by id", f"/api/v1/flow-runs/{s['run']}"),
        ("schedule runs", f"/api/v1/schedules/{h.schedule}/runs?limit=20"),
        ("vehicles", "/api/v1/entities/vehicle?limit=5"),
        (
            "vehicles page 2",
            f"/api/v1/entities/vehicle?limit=5&cursor={cursor.get('vehicles', '')}",
        ),
        ("drivers", "/api/v1/entities/driver?limit=20"),
        ("vehicle by plate", f"/api/v1/entities/vehicle/{plate(3)}"),
        ("vehicle by id", f"/api/v1/entities/vehicle/{v}"),
        ("driver by cpf", f"/api/v1/entities/driver/{cpf(4)}"),
        ("vehicle positions", f"/api/v1/entities/vehicle/{v}/positions?limit=20"),
        ("vehicle drivers", f"/api/v1/entities/vehicle/{v}/drivers?limit=20"),
        ("kinds", "/api/v1/kinds"),
        ("triggers", "/api/v1/triggers"),
        ("partners", "/api/v1/partners"),
        ("actions", "/api/v1/actions"),
        ("subscriptions", "/api/v1/subscriptions"),
        ("mappings", "/api/v1/mappings"),
        ("flows", "/api/v1/flows"),
        ("schedules", "/api/v1/schedules"),
        ("channels", "/api/v1/channels"),
        ("templates", "/api/v1/templates"),
        ("geofences", "/api/v1/geofences"),
        ("maintenance plans", "/api/v1/maintenance-plans"),
        ("fleet settings", "/api/v1/fleet/settings"),
    ]
    ui = [
        ("UI dashboard", "/admin/"),
        ("UI events", "/admin/events"),
        ("UI event", f"/admin/events/{s['event']}"),
        ("UI deliveries", "/admin/deliveries"),
        ("UI deliveries ?status", "/admin/deliveries?status=failed"),
        ("UI delivery", f"/admin/deliveries/{s['delivery']}"),
        ("UI rejected", "/admin/rejected"),
        ("UI flow runs", "/admin/flows/aviso/runs"),
        ("UI flow run", f"/admin/flow-runs/{s['run']}"),
        ("UI vehicles", "/admin/entities/vehicle"),
        ("UI vehicle", f"/admin/entities/vehicle/{v}"),
        ("UI drivers", "/admin/entities/driver"),
        ("UI triggers", "/admin/triggers"),
        ("UI partners", "/admin/partners"),
        ("UI schedules", "/admin/schedules"),
    ]
    return api + ui


async def measure(
    http: ClientSession,
    base: str,
    headers: dict[str, str],
    paths: list[tuple[str, str]],
    pid: int,
    rounds: int,
) -> dict[str, float]:
    """ms of the database's CPU per call of each read."""
    costs: dict[str, float] = {}
    for label, path in paths:
        async with http.get(base + path, headers=headers) as response:  # warm, and checked
            if response.status != 200:
                text = await response.text()
                raise RuntimeError(f"{label}: GET {path} answered {response.status}: {text[:300]}")
            await response.read()
        before = cpu_seconds(pid)
        for _ in range(rounds):
            async with http.get(base + path, headers=headers) as response:
                await response.read()
        costs[label] = (cpu_seconds(pid) - before) / rounds * 1000
    return costs


async def cursors(http: ClientSession, base: str, headers: dict[str, str], h: History) -> dict:
    found = {}
    for key, path in (
        ("events", "/api/v1/events?limit=20"),
        ("deliveries", "/api/v1/deliveries?limit=20"),
        ("runs", "/api/v1/flows/aviso/runs?limit=20"),
        ("vehicles", "/api/v1/entities/vehicle?limit=5"),
    ):
        async with http.get(base + path, headers=headers) as response:
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"GET {path} answered {response.status}: {body}")
            found[key] = body["next_cursor"]
    return found


MAPPING = """\
name: frota-api
direction: inbound
entity_type: vehicle
key: [plate]
items: veiculos
fields:
  plate: {from: placa, transforms: [upper]}
  odometer_km: {from: km, transforms: [number]}
"""


async def configure(http: ClientSession, base: str, headers: dict[str, str], h: History) -> None:
    """Through the API: a flow `aviso`, a mapping, a partner, an action, a subscription, a
    schedule (the history's deliveries and schedule runs name them)."""

    async def post(path: str, body: Any, status: int = 201, **extra: str) -> Any:
        send = {"data": body} if isinstance(body, str) else {"json": body}
        async with http.post(base + path, headers={**headers, **extra}, **send) as answer:
            if answer.status != status:
                raise RuntimeError(f"POST {path}: {answer.status} {await answer.text()}")
            return await answer.json()

    flow = {
        "name": "aviso",
        "on": {"events": ["entity.updated"]},
        "steps": [{"id": "moving", "when": "event.data.plate"}],
    }
    await post("/api/v1/flows", flow)
    await post("/api/v1/mappings", MAPPING, **{"Content-Type": "application/yaml"})
    partner = await post(
        "/api/v1/partners",
        {"name": "ERP", "base_url": "https://erp.example.com", "auth": {"type": "none"}},
    )
    action = await post(
        "/api/v1/actions",
        {"name": "veiculos", "partner_id": partner["id"], "method": "GET", "path": "/v"}
        | {"mode": "proxy"},
    )
    push = await post(
        "/api/v1/actions",
        {"name": "push", "partner_id": partner["id"], "method": "POST", "path": "/hooks"}
        | {"mode": "deliver"},
    )
    sub = await post(
        "/api/v1/subscriptions", {"action_id": push["id"], "event_types": ["entity.updated"]}
    )
    schedule = await post(
        "/api/v1/schedules",
        {"name": "frota", "action_id": action["id"], "every": "1h", "status": "paused"}
        | {"target": {"entity_type": "vehicle", "mapping": "frota-api"}},
    )
    h.partner, h.action, h.schedule = partner["id"], push["id"], schedule["id"]
    h.subs = (sub["id"], h.subs[1])


async def ui_session(http: ClientSession, base: str, token: str) -> None:
    async with http.get(f"{base}/admin/login") as response:
        csrf = re.search(r'name="csrf" value="([^"]+)"', await response.text())
    assert csrf is not None
    form = {"token": token, "csrf": csrf.group(1), "next": "/admin/"}
    async with http.post(f"{base}/admin/login/token", data=form, allow_redirects=False) as answer:
        if answer.status not in (302, 303):
            raise RuntimeError(f"UI login: {answer.status} {(await answer.text())[:300]}")


async def run(base_count: int, factor: int, rounds: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    server = EmbeddedServer(tmp / "db")
    server.start()
    settings = Settings(
        secret_key=Secret(SECRET_KEY),
        data_dir=tmp,
        database=DATABASE,
        run_workers=False,
        log_json=False,
        admin_rate_limit=1_000_000,
    )
    app = create_app(replace(settings), mongodb_uri=server.uri)
    web = TestServer(app, host="127.0.0.1", port=0)
    await web.start_server()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server.uri, tz_aware=True)
    keys = KeyRing.from_secret(SECRET_KEY)
    token = issue_admin_token(
        keys, tenant="acme", role="admin", subject="bench", ttl=timedelta(hours=2)
    )
    headers = {"Authorization": f"Bearer {token}"}
    base = str(web.make_url("")).rstrip("/")
    pid = server.pid
    assert pid is not None
    try:
        histories = [History(client[DATABASE], t, w) for t, w in TENANTS.items()]
        acme = histories[0]
        results: list[dict[str, float]] = []
        sizes = [base_count, base_count * factor]
        done = 0
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
            await ui_session(http, base, token)
            await configure(http, base, headers, acme)
            for size in sizes:
                started = time.perf_counter()
                for h in histories:
                    await h.write(done, size)
                done = size
                print(f"history of {size} events for acme: {time.perf_counter() - started:.0f} s")
                paths = reads(acme, await cursors(http, base, headers, acme))
                results.append(await measure(http, base, headers, paths, pid, rounds))
        print(f"\ndatabase CPU per call (ms), acme at {sizes[0]} and {sizes[1]} events")
        print(f"{'read':32} {sizes[0]:>9} {sizes[1]:>9}  ratio")
        for label, small in results[0].items():
            large = results[1][label]
            ratio = large / small if small > 0.05 else float("nan")
            flag = "  <- grows" if large > 2 and ratio > factor / 3 else ""
            print(f"{label:32} {small:9.1f} {large:9.1f} {ratio:6.1f}{flag}")
    finally:
        await client.close()
        await web.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=1000, help="acme's events at the first size")
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.base, args.factor, args.rounds))


if __name__ == "__main__":
    main()
