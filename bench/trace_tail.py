"""Where a p99 at half of peak comes from: bench_http.py with its gateways and its embedded
SecantusDB instrumented (bench/_tail_trace/instrument.py), then the slow requests of each
half window lined up with what both did while they waited.

    python bench/trace_tail.py run DIR -- --servers gateway-positions --duration 10
    python bench/trace_tail.py analyze DIR

`run` passes everything after `--` to bench_http.py (its `--trace DIR` included: each server's
half-of-peak requests, `<n>-<server>.csv`), and writes beside them `gw-<pid>.log` (every
database command of the gateway, GC passes, event-loop lag, the fold's and the appender's
spans) and `db-<pid>.log` (every command the database ran with its thread's CPU, collection
locks held over 2 ms, journal commits). Servers from another tree (`gateway-positions@DIR`)
are instrumented too. The instrumentation costs some CPU: compare runs of it with each other,
not with plain bench_http.py runs.

`analyze` prints per server: p50/p99, the p99 of each second of the window, then which
activities overlapped the slow requests (the slowest 5%) against the fast ones (below the
median): milliseconds of overlap per request and the share of requests touched; and the
database's command CPU in the window by command and collection.
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HOOK = HERE / "_tail_trace"
sys.path.insert(0, str(HERE.parent))


def run(directory: Path, bench_args: list[str]) -> None:
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "secantusd-py-traced"  # "secantusd-py" in the name: the launcher's
    wrapper.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(HOOK)!r})\n"
        "import instrument\ninstrument.install(database=True)\n"
        "from secantus.cli import main\nsys.exit(main())\n"
    )
    wrapper.chmod(0o755)
    os.environ["TAIL_TRACE_DIR"] = os.environ["SECANTUS_TAIL_TRACE"] = str(directory)
    import gateway.store.embedded as embedded
    from bench import bench_http

    embedded._find_executable = lambda: str(wrapper)
    spawn = bench_http.spawn

    def spawn_traced(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Any = None):
        env = dict(env or {})
        path = env.get("PYTHONPATH") or os.environ.get("PYTHONPATH", "")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HOOK), path) if p)
        return spawn(cmd, log, env, cwd)

    bench_http.spawn = spawn_traced
    sys.argv = ["bench_http.py", *bench_args, "--trace", str(directory)]
    bench_http.main()


def _events(directory: Path) -> list[tuple[str, float, float, list[str]]]:
    found = []
    for log in [*directory.glob("gw-*.log"), *directory.glob("db-*.log")]:
        side = "db" if log.name.startswith("db-") else "gw"
        for line in log.read_text().splitlines():
            parts = line.split(",")
            try:
                found.append((f"{side}:{parts[0]}", float(parts[1]), float(parts[2]), parts[3:]))
            except (IndexError, ValueError):
                continue
    return found


def _activity(kind: str, details: list[str]) -> str | None:
    """An event's label in the overlap table; None for the request path's own work."""
    name = details[0] if details else ""
    if kind in ("gw:span",) and name in ("append", "round", "resolve"):
        return None
    if kind == "gw:cmd":
        return None  # the database's side says what ran, and for how long
    if kind == "db:dcmd":
        own = {("insert", "positions"), ("findAndModify", "fleet_marks"), ("insert", "fleet_inbox")}
        return None if (name, details[1]) in own else f"db {name} {details[1]}".strip()
    if kind in ("db:lockhold", "db:lockwait"):
        return f"{kind[3:]} {name}"
    if kind == "db:commit":
        return "db journal commit" if name == "1" else "db commit"
    return f"{kind[3:]} {name}".strip()


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def analyze(directory: Path) -> None:
    events = _events(directory)
    for trace in sorted(directory.glob("*.csv")):
        with trace.open() as f:
            requests = [(float(r["due_s"]), float(r["latency_ms"])) for r in csv.DictReader(f)]
        if not requests:
            continue
        start, end = requests[0][0], requests[-1][0]
        latencies = sorted(latency for _, latency in requests)
        print(f"\n{trace.name}: {len(requests)} requests, p50 {_pct(latencies, 0.5):.1f} ms, "
              f"p99 {_pct(latencies, 0.99):.1f} ms, max {latencies[-1]:.1f} ms")  # fmt: skip
        seconds: dict[int, list[float]] = collections.defaultdict(list)
        for due, latency in requests:
            seconds[int(due - start)].append(latency)
        each = " ".join(f"{_pct(sorted(v), 0.99):.0f}" for _, v in sorted(seconds.items()))
        print(f"  p99 of each second (ms): {each}")
        _overlaps(events, requests, latencies)
        _database_cpu(events, start, end)


def _overlaps(
    events: list[tuple[str, float, float, list[str]]],
    requests: list[tuple[float, float]],
    latencies: list[float],
) -> None:
    slow_from, fast_below = _pct(latencies, 0.95), _pct(latencies, 0.5)
    groups = {
        "slow": [r for r in requests if r[1] >= slow_from],
        "fast": [r for r in requests if r[1] < fast_below],
    }
    spans: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for kind, t0, ms, details in events:
        if (label := _activity(kind, details)) is not None:
            spans[label].append((t0, t0 + ms / 1e3))
    rows = []
    for label, intervals in spans.items():
        intervals.sort()
        starts = [a for a, _ in intervals]
        figures = []
        for group in groups.values():
            total, touched = 0.0, 0
            for due, latency in group:
                a, b = due, due + latency / 1e3
                overlap = 0.0
                # Intervals that start before b; those that end before a overlap nothing.
                for x, y in intervals[: _bisect(starts, b)]:
                    overlap += max(0.0, min(b, y) - max(a, x))
                total, touched = total + overlap * 1e3, touched + (overlap > 0)
            figures += [total / max(len(group), 1), touched / max(len(group), 1)]
        rows.append((figures[0], label, figures))
    print(
        f"  overlap with the slowest 5% (>= {slow_from:.1f} ms, {len(groups['slow'])}) and the "
        f"fast half (< {fast_below:.1f} ms): ms per request, share of requests touched"
    )
    for _, label, (slow_ms, slow_hit, fast_ms, fast_hit) in sorted(rows, reverse=True)[:15]:
        print(
            f"    {label:<40}{slow_ms:8.1f} ms {slow_hit:5.0%} | {fast_ms:8.1f} ms {fast_hit:5.0%}"
        )


def _bisect(starts: list[float], value: float) -> int:
    import bisect

    return bisect.bisect_left(starts, value)


def _database_cpu(
    events: list[tuple[str, float, float, list[str]]], start: float, end: float
) -> None:
    cpu: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for kind, t0, _, details in events:
        if kind == "db:dcmd" and start <= t0 <= end:
            label = f"{details[0]} {details[1]}".strip()
            cpu[label] += float(details[3])
            count[label] += 1
    total = sum(cpu.values())
    if not total:
        return
    print(f"  database command CPU in the window: {total / 1e3:.2f} s "
          f"({total / 1e3 / max(end - start, 1e-9):.2f} of a core)")  # fmt: skip
    for label, ms in cpu.most_common(8):
        print(f"    {label:<32}{count[label]:>6} commands {ms / count[label]:6.2f} ms CPU each, "
              f"{ms / total:5.1%}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run", "analyze"])
    parser.add_argument("directory", type=Path)
    args, rest = parser.parse_known_args()
    if args.action == "run":
        run(args.directory, [a for a in rest if a != "--"])
    else:
        analyze(args.directory)


if __name__ == "__main__":
    main()
