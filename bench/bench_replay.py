"""Replaying all of a trigger's rejected payloads (`POST /api/v1/rejected/replay`): the
time for 1,000 pending records, each a vehicle the pipeline writes, on an embedded database
started here. Run from the repository root:

    python bench/bench_replay.py [--items 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from pymongo import monitoring

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config import Secret, Settings
from gateway.services import open_services
from gateway.store.embedded import EmbeddedServer

TENANT = "bench"


class _Commands(monitoring.CommandListener):
    """The database commands the replay sends, by name."""

    def __init__(self) -> None:
        self.counted: dict[str, int] = {}
        self.on = False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.on:
            self.counted[event.command_name] = self.counted.get(event.command_name, 0) + 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


COMMANDS = _Commands()
monitoring.register(COMMANDS)


def _record(trigger_id: str, n: int) -> dict[str, object]:
    text = orjson.dumps({"plate": f"ABC{n % 10}D{n % 100:02d}", "make": f"make-{n}"})
    return {
        "trigger_id": trigger_id,
        "received_at": datetime.now(UTC),
        "reason": "entity",
        "detail": "refused before the schema was fixed",
        "problems": [],
        "scope": "item",
        "index": n,
        "schema_applies": True,
        "payload": text.decode(),
        "size": len(text),
        "replayable": True,
        "status": "pending",
        "attempts": 0,
    }


async def bench(items: int, data_dir: Path) -> None:
    server = EmbeddedServer(data_dir / "db")
    server.start()
    try:
        settings = Settings(
            secret_key=Secret("bench-secret-key-bench-secret-key-0123"),
            data_dir=data_dir,
            run_workers=False,
            log_json=False,
        )
        async with open_services(settings, mongodb_uri=server.uri) as services:
            trigger = await services.triggers.create(
                TENANT, name="erp", entity_type="vehicle", methods=["POST"]
            )
            trigger_id = trigger.as_dict()["id"]
            records = [_record(trigger_id, n) for n in range(items)]
            await services.store.rejected.add_many(TENANT, trigger_id, records)
            COMMANDS.on = True
            started = time.perf_counter()
            summary = await services.rejected.replay_all(TENANT, trigger_id=trigger_id)
            elapsed = time.perf_counter() - started
            COMMANDS.on = False
    finally:
        server.stop()
    print(
        f"replay all: {summary['replayed']} replayed, {summary['failed']} failed in "
        f"{elapsed:.2f} s ({elapsed / max(items, 1) * 1000:.1f} ms per record)"
    )
    sent = sum(COMMANDS.counted.values())
    print(f"database commands: {sent} ({sent / max(items, 1):.1f} per record): {COMMANDS.counted}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(args.items, Path(tmp)))


if __name__ == "__main__":
    main()
