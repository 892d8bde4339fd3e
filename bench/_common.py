"""Helpers shared by bench_db_upserts.py and bench_http.py: plates, position documents, and
the CPU time of a process read from /proc (Linux only)."""

from __future__ import annotations

import os
import random
import string
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED_BENCH = ROOT.parent / "shared" / "bench"
TICKS = os.sysconf("SC_CLK_TCK")


def plate(i: int) -> str:
    """The i-th of 1,000 distinct Mercosul plates, as post_position.lua makes them."""
    return f"ABC{i % 10}{string.ascii_uppercase[i % 26]}{i % 100:02d}"


PLATES = [plate(i) for i in range(1000)]


def position_doc(rng: random.Random, tenant: str = "bench") -> tuple[dict[str, Any], dict]:
    """A vehicle's last position as the gateway stores it: (natural-key filter, $set doc)."""
    nk = rng.choice(PLATES)
    fix = datetime(2026, 11, 29, 3, 40, tzinfo=UTC) + timedelta(seconds=rng.randrange(86_400))
    data = {
        "plate": nk,
        "attributes": {"tracker_id": f"tracker-{rng.randrange(10_000):04d}", "ignition": True},
        "last_position": {
            "time": fix,
            "lat": -23.55 + rng.uniform(-0.2, 0.2),
            "lon": -46.63 + rng.uniform(-0.2, 0.2),
            "speed_kmh": round(rng.uniform(0, 110), 1),
            "heading": round(rng.uniform(0, 359.9), 1),
            "altitude_m": round(rng.uniform(700, 800), 1),
        },
        "odometer_km": round(rng.uniform(1_000, 300_000), 1),
    }
    key = {"tenant": tenant, "type": "vehicle", "nk": nk}
    return key, {"data": data, "updated_at": datetime.now(UTC)}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (a server may run workers as child processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total
