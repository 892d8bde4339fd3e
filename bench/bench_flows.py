"""Flow runs (issue 11): scenario 3 end to end per second with 1 and 2 `gateway worker`
processes, and what a flow whose `on.when` filters the event out costs the relay.

    python bench/bench_flows.py [--runs 600] [--workers 1,2] [--relay-events 2000] [--rounds 3]

1. **Runs per second.** On a fresh database per worker count: the demo tenant with its
   integrations (`gateway/demo_integrations.py`) pointed at the demo's partner doubles and
   SMTP server, served by this process (`gateway/web/demo_partners.py`). N fines are written
   with their `fine.received` events left in the outboxes; then K worker processes relay them,
   start a run each (fine-email-driver: fetch the driver from HR and record it, read the fine
   as stored to check it still says what HR was asked about, set the fine's driver, when,
   notify) and send the e-mails. The rate is from the HR double's first request
   to the N-th e-mail the SMTP server accepted; every run must end `succeeded`. Printed: runs/s,
   CPU per run of the workers and of the database, and the K-vs-1 ratio.
2. **A `when` that filters out.** In this process, on one database: M vehicles with an
   `entity.updated` event each, relayed (`EventRelay.run_until_idle`, fan-out and flow starter
   included) with no flow at all, and with an active flow on `entity.updated` whose `on.when`
   is false for every event; alternated `--rounds` times. Printed: events relayed per second of
   each, the ratio, and the starter's own CPU per event for both (timed on the same events).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import cpu_seconds  # noqa: E402
from gateway.config import Secret, Settings  # noqa: E402
from gateway.demo import seed_entities, seed_mappings  # noqa: E402
from gateway.demo_integrations import seed_automations  # noqa: E402
from gateway.entities import Origin  # noqa: E402
from gateway.services import Services, open_services  # noqa: E402
from gateway.store.embedded import EmbeddedServer  # noqa: E402
from gateway.web.demo_partners import DemoPartners, start_smtp  # noqa: E402

SECRET_KEY = "bench-secret-key-0123456789abcdef0123456789abcdef"
TENANT = "demo"
ORIGIN = Origin("trigger", "bench")
FILTERED_OUT = """
name: big-odometers
on:
  events: [entity.updated]
  when: "entity.odometer_km > `10000000`"
steps:
  - id: stop
    when: "`false`"
"""


@dataclass
class RunsResult:
    workers: int
    rate: float
    worker_cpu_us: float
    db_cpu_us: float


def _settings(tmp: Path, database: str) -> Settings:
    return Settings(
        secret_key=Secret(SECRET_KEY),
        data_dir=tmp,
        database=database,
        run_workers=False,
        outbound_allow=("127.0.0.1",),
        log_json=False,
    )


def _fine(n: int) -> dict[str, object]:
    return {
        "kind": "fine",
        "key": f"261810:B{n:09d}",
        "ait_number": f"B{n:09d}",
        "authority": "261810",
        "plate": "ABC1D23",
        "occurred_at": f"2026-11-18T{10 + n % 10:02d}:{n % 60:02d}:00Z",
        "place": "Av. Paulista, 1000",
        "amount_brl": 130.16,
        "points": 4,
        "status": "open",
    }


class Mailbox:
    """Counts what the SMTP double accepted; `done` once `expected` e-mails arrived."""

    def __init__(self, partners: DemoPartners, expected: int) -> None:
        self.partners, self.expected = partners, expected
        self.done = asyncio.Event()
        self.first = self.last = 0.0
        partners.out = self._noted

    def _noted(self, line: str) -> None:
        now = time.perf_counter()
        self.first = self.first or now
        mails = sum(1 for r in self.partners.received if r["partner"] == "smtp")
        if mails >= self.expected and not self.done.is_set():
            self.last = now
            self.done.set()


async def runs_per_second(db: EmbeddedServer, tmp: Path, workers: int, runs: int) -> RunsResult:
    partners = DemoPartners()
    mailbox = Mailbox(partners, runs)
    runner = web.AppRunner(partners.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    smtp = await start_smtp(partners, "127.0.0.1", 0)
    assert smtp is not None, "the SMTP double needs aiosmtpd"
    smtp_port = smtp.sockets[0].getsockname()[1]
    database = f"bench_flows_{workers}_{os.getpid()}"
    settings = _settings(tmp, database)
    async with open_services(settings, mongodb_uri=db.uri) as services:
        await seed_entities(services.entities, TENANT)
        await seed_mappings(services.mappings, TENANT, ROOT / "mappings")
        await seed_automations(
            services.actions,
            services.notify,
            TENANT,
            ROOT / "flows",
            partners_url=f"http://127.0.0.1:{port}",
            smtp_port=smtp_port,
        )
        await services.relay.run_until_idle()  # the seeding's own events, before the clock
        for n in range(runs):
            # Its fine.received is the write's own (the fine's time): one event, one run.
            await services.entities.create(TENANT, "other", _fine(n), ORIGIN)
    env = {
        **os.environ,
        "MONGODB_URI": db.uri,
        "GATEWAY_DATABASE": database,
        "GATEWAY_SECRET_KEY": SECRET_KEY,
        "GATEWAY_ADMIN_RATE_LIMIT": "100000",  # throughput, not the admin limit
        "GATEWAY_OUTBOUND_ALLOW": "127.0.0.1",
        "GATEWAY_DATA_DIR": str(tmp),
        "GATEWAY_LOG_LEVEL": "WARNING",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway", "worker"], env=env, stderr=subprocess.DEVNULL
        )
        for _ in range(workers)
    ]
    try:
        while not partners.received:  # the workers' start-up is not part of the rate
            await asyncio.sleep(0.01)
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        db0 = cpu_seconds(db.pid) if db.pid else 0.0
        await asyncio.wait_for(mailbox.done.wait(), 900)
        cpu1 = sum(cpu_seconds(p.pid) for p in procs)
        db1 = cpu_seconds(db.pid) if db.pid else 0.0
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
        smtp.close()
        await runner.cleanup()
    async with open_services(settings, mongodb_uri=db.uri) as services:
        runs_done = services.store.db["flow_runs"]
        succeeded = await runs_done.count_documents({"status": "succeeded"})
    assert succeeded == runs, f"{succeeded} of {runs} runs succeeded"
    elapsed = mailbox.last - mailbox.first
    rate = runs / elapsed
    result = RunsResult(workers, rate, (cpu1 - cpu0) / runs * 1e6, (db1 - db0) / runs * 1e6)
    print(
        f"{workers} worker process(es): {rate:6.1f} scenario-3 runs/s ({runs} in {elapsed:.1f} s; "
        f"CPU per run: workers {result.worker_cpu_us:,.0f} µs, "
        f"database {result.db_cpu_us:,.0f} µs)",
        flush=True,
    )
    return result


async def _relay_rate(services: Services, events: int, offset: int) -> tuple[float, float]:
    """(events relayed per second, starter CPU µs per event): M vehicles updated, relayed."""
    for n in range(events):
        plate = f"RBT{n % 10}A{n % 100:02d}"
        await services.entities.upsert(
            TENANT, "vehicle", {"plate": plate, "odometer_km": float(offset + n)}, ORIGIN
        )
    batch = (
        await services.store.db["entities"]
        .find({"outbox.0": {"$exists": True}}, {"_id": 1})
        .to_list(None)
    )
    assert batch, "nothing to relay"
    started = time.perf_counter()
    relayed = await services.relay.run_until_idle()
    elapsed = time.perf_counter() - started
    stored = await services.store.db["events"].find({}).sort("_id", -1).to_list(events)
    cpu0 = time.process_time()
    for _ in range(20):
        assert await services.flow_starter(stored) == 0
    starter_us = (time.process_time() - cpu0) / (20 * len(stored)) * 1e6
    return relayed / elapsed, starter_us


async def when_cost(db: EmbeddedServer, tmp: Path, events: int, rounds: int) -> None:
    rates: dict[str, list[float]] = {"no flow": [], "when false": []}
    starter: dict[str, list[float]] = {"no flow": [], "when false": []}
    for round_no in range(rounds):
        for case in ("no flow", "when false"):
            database = f"bench_when_{round_no}_{case.replace(' ', '_')}_{os.getpid()}"
            async with open_services(_settings(tmp, database), mongodb_uri=db.uri) as services:
                if case == "when false":
                    await services.notify.flows.upload(TENANT, FILTERED_OUT, author="bench")
                rate, cost = await _relay_rate(services, events, round_no * events)
                runs = await services.store.db["flow_runs"].count_documents({})
                assert runs == 0, "the filtered-out flow started runs"
            rates[case].append(rate)
            starter[case].append(cost)
    base, filtered = (statistics.median(rates[c]) for c in ("no flow", "when false"))
    for case in rates:
        print(
            f"relay, {case:<10}: {statistics.median(rates[case]):7.0f} events/s "
            f"(rounds: {', '.join(f'{r:.0f}' for r in rates[case])}); "
            f"flow starter {statistics.median(starter[case]):.1f} µs CPU per event"
        )
    print(f"a flow whose on.when filters every event out: {filtered / base:.2f}x the relay rate")


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = EmbeddedServer(Path(tmp) / "db")
        db.start()
        try:
            results = [await runs_per_second(db, Path(tmp), k, args.runs) for k in args.workers]
            await when_cost(db, Path(tmp), args.relay_events, args.rounds)
        finally:
            db.stop()
    for result in results[1:]:
        base = results[0]
        print(
            f"{result.workers} vs {base.workers} worker process(es): "
            f"{result.rate / base.rate:.2f}x the runs/s"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument(
        "--workers",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1, 2],
        help="worker process counts to measure runs/s with ('' skips that part)",
    )
    parser.add_argument("--relay-events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
