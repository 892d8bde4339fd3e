"""How long the embedded SecantusDB stops answering while its TTL sweep runs.

    python bench/ttl_sweep_stall.py [--sizes 20000,80000] [--control 80000]

SecantusDB sweeps expired documents every 60 s (its `ttl_sweep_seconds`) by scanning and
decoding every document of each collection with a TTL index, holding its storage lock: every
other command waits. The gateway's `positions` have one (the retention index), so the pause
grows with the fleet's stored fixes. For each size, on a fresh embedded server: a `positions`
collection with a TTL index (30 days: nothing expires) and that many fix-sized documents, then
one small insert into another collection every 10 ms until the first sweep is over (65 s after
the server started); prints the slowest insert and when it was. `--control` does the same
without the TTL index (no pause expected). Takes about 70 s a size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pymongo import ASCENDING, MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.store.embedded import EmbeddedServer

SWEEP_DONE_S = 65.0  # the first sweep starts 60 s after the server did


def measure(size: int, ttl: bool) -> tuple[float, float]:
    """(slowest insert in ms, seconds after the server started)."""
    with tempfile.TemporaryDirectory(prefix="ttl-stall-") as tmp:
        db = EmbeddedServer(Path(tmp) / "db")
        db.start()
        started = time.monotonic()
        try:
            with MongoClient(db.uri) as client:
                positions = client["bench"]["positions"]
                if ttl:
                    positions.create_index([("at", ASCENDING)], expireAfterSeconds=30 * 86_400)
                now = datetime.now(UTC)
                for first in range(0, size, 1000):
                    positions.insert_many(
                        [
                            {"_id": f"v{n:07d}", "at": now, "t": now, "vehicle": "v",
                             "lat": -23.55, "lon": -46.63, "speed_kmh": 40.0}
                            for n in range(first, min(size, first + 1000))
                        ]
                    )  # fmt: skip
                other = client["bench"]["other"]
                slowest, when = 0.0, 0.0
                while time.monotonic() - started < SWEEP_DONE_S:
                    sent = time.perf_counter()
                    other.insert_one({"n": 1})
                    took = time.perf_counter() - sent
                    if took > slowest:
                        slowest, when = took, time.monotonic() - started
                    time.sleep(0.01)
        finally:
            db.stop()
    return slowest * 1e3, when


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,80000")
    parser.add_argument("--control", type=int, default=80_000, help="0: no control run")
    args = parser.parse_args()
    runs = [(int(size), True) for size in args.sizes.split(",")]
    runs += [(args.control, False)] if args.control else []
    print(f"{'documents':>10} {'TTL index':>10} {'slowest insert':>15} {'at':>8}")
    for size, ttl in runs:
        slowest, when = measure(size, ttl)
        print(f"{size:>10,} {'yes' if ttl else 'no':>10} {slowest:>12,.0f} ms {when:>6.1f} s")


if __name__ == "__main__":
    main()
