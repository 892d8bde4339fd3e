"""`make bench`: every SPEC §8 benchmark, one after the other, and ONE table of the figures.

    python bench/figures.py [--only http,scale,ingest,pipeline,proxy,fanout,fanout_slow,events]
                            [--duration 10]
                            [--keep DIR] [--from DIR] [--markdown]

Runs bench_http.py (bare aiohttp, Node-RED and the gateway side by side on one embedded
database, plus the gateway with 2 processes), bench_http.py again for 1 against 2 processes
where the database is not the limit (a probe the mapping answers), bench_positions_ingest.py
(batched position ingest against the database's raw insert_many), bench_trigger_pipeline.py,
bench_proxy.py, bench_fanout.py (twice: a partner answering at once, and in 200 ms) and
bench_event_designs.py, each writing its figures as JSON,
then prints for each SPEC §8 figure its target, the measured value or ratio, pass or fail, and
the command that reproduces it.
`--keep DIR` keeps the JSON files; `--from DIR` prints the table from kept files without
measuring again; `--markdown` prints it as a Markdown table (docs/benchmarks.md keeps one).

The position-trigger server of bench_http.py (`gateway-positions`, a SERVERS key with
"position" in it) is measured in the same run as Node-RED and fills the position rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_http import SERVERS

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
HTTP_SERVERS = "bare,nodered,gateway,gateway-web,gateway-x2"
# 1 and 2 processes where the database is not the limit, three times each in turn: the machine
# is shared, and another job's burst only ever takes throughput away, so the best run of each
# is compared (alternating keeps both sides exposed to the same moments).
SCALE_SERVERS = ",".join(["gateway-probe,gateway-probe-x2"] * 3)
Results = dict[str, Any]


@dataclass(frozen=True)
class Row:
    figure: str
    target: str
    measured: str
    verdict: str  # pass | FAIL | info | not measured
    command: str


def run(name: str, cmd: list[str], out: Path) -> None:
    print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    subprocess.run([PYTHON, *cmd, "--json", str(out)], check=False)
    print(f"=== {name} done in {time.monotonic() - started:.0f} s", flush=True)


def position_keys() -> list[str]:
    return [key for key in SERVERS if "position" in key]


def load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def http_rows(http: Results | None, command: str) -> list[Row]:
    if not http:
        return [
            Row(
                "entity trigger POST figures",
                "",
                "no figures (not run, or failed)",
                "FAIL",
                command,
            )
        ]
    by = best(http["servers"])
    bare, red, gw = by.get("bare"), by.get("nodered"), by.get("gateway")
    rows: list[Row] = []
    if gw and red:
        ratio = gw["rps"] / red["rps"]
        rows.append(Row(
            "entity POST throughput ÷ Node-RED (events + deliveries stored)", "≥ 1.5",
            f"{ratio:.2f} ({gw['rps']:,.0f} vs {red['rps']:,.0f} req/s)", verdict(ratio >= 1.5),
            command,
        ))  # fmt: skip
        ratio = gw["cpu_us"] / red["cpu_us"]
        rows.append(Row(
            "gateway CPU/request ÷ Node-RED", "≤ 0.5",
            f"{ratio:.2f} ({gw['cpu_us']:,.0f} vs {red['cpu_us']:,.0f} µs)", verdict(ratio <= 0.5),
            command,
        ))  # fmt: skip
        ratio = gw["db_us"] / red["db_us"]
        rows.append(Row(
            "database CPU/request ÷ Node-RED's", "≤ 1",
            f"{ratio:.2f} ({gw['db_us']:,.0f} vs {red['db_us']:,.0f} µs)", verdict(ratio <= 1),
            command,
        ))  # fmt: skip
    if gw and bare:
        ratio = gw["cpu_us"] / bare["cpu_us"]
        rows.append(Row(
            "gateway CPU/request ÷ bare aiohttp", "≤ 3",
            f"{ratio:.1f} ({gw['cpu_us']:,.0f} vs {bare['cpu_us']:,.0f} µs)", verdict(ratio <= 3),
            command,
        ))  # fmt: skip
    if gw:
        p99 = gw["half_p99_us"] / 1e3
        rows.append(Row(
            "entity POST p99 at half of peak", "< 20 ms",
            f"{p99:.1f} ms at {gw['half_rate']:,.0f} req/s", verdict(p99 < 20), command,
        ))  # fmt: skip
        rows.append(Row(
            "database operations per request (serverStatus opcounters)", "fewer",
            f"{gw['db_ops']:.1f} (Node-RED {red['db_ops']:.1f})" if red else f"{gw['db_ops']:.1f}",
            "info", command,
        ))  # fmt: skip
        rows += relay_rows(gw, command)
    rows += scale_rows({k: v for k, v in by.items() if k in ("gateway", "gateway-x2")}, command)
    return rows


def relay_rows(gw: Results, command: str) -> list[Row]:
    if "half_lag_p99_s" not in gw:
        return [Row("event relay lag p99 at half of peak", "< 1 s", "not stamped", "FAIL", command)]
    half = gw["half_lag_p99_s"]
    rate = gw["backlog"] / gw["drain_s"] if gw.get("drain_s") else float("inf")
    return [
        Row(
            "event relay lag p99 at half of peak", "< 1 s", f"{half:.2f} s", verdict(half < 1),
            command,
        ),
        Row(
            "event relay at peak: lag bounded, drained at a measured rate", "bounded",
            f"p99 {gw.get('peak_lag_p99_s', 0):.1f} s; {gw['backlog']:,.0f} waiting at the end, "
            f"drained in {gw['drain_s']:.1f} s ({rate:,.0f}/s)",
            verdict(gw["drain_s"] < 120), command,
        ),
    ]  # fmt: skip


def best(servers: list[Results]) -> dict[str, Results]:
    """Each server key's run with the most requests/s (a key may have run several times)."""
    runs: dict[str, Results] = {}
    for server in servers:
        if "rps" in server and server["rps"] > runs.get(server["key"], {}).get("rps", -1):
            runs[server["key"]] = server
    return runs


def scale_rows(by: dict[str, Results], command: str) -> list[Row]:
    """2 processes against 1: in `by` (entity POST, from the main run) or the probe run."""
    rows = []
    for one, two, what in (
        ("gateway-probe", "gateway-probe-x2", "probe, no database (best of 3 runs each)"),
        ("gateway", "gateway-x2", "entity POST"),
    ):
        if one in by and two in by:
            a, b = by[one], by[two]
            ratio = b["rps"] / a["rps"]
            where = (
                f"{ratio:.2f} ({b['rps']:,.0f} vs {a['rps']:,.0f} req/s; busy cores: gateway "
                f"{a['server_cores']:.2f}→{b['server_cores']:.2f}, database "
                f"{a['db_cores']:.2f}→{b['db_cores']:.2f})"
            )
            entity = what == "entity POST"
            target = "(database-bound: where it is)" if entity else "≥ 1.6"
            rows.append(Row(f"2 processes ÷ 1, {what}", target, where,
                            "info" if entity else verdict(ratio >= 1.6), command))  # fmt: skip
    return rows


def position_rows(http: Results | None, command: str) -> list[Row]:
    keys = position_keys()
    by = {s["key"]: s for s in (http or {}).get("servers", []) if "rps" in s}
    red = by.get("nodered")
    pos = next((by[k] for k in keys if k in by), None)
    if not keys or pos is None or red is None:
        why = "no position server in bench_http.py" if not keys else "not measured"
        return [
            Row("position POST throughput ÷ Node-RED", "≥ 3", why, "not measured", command),
            Row("position gateway+DB CPU per fix ÷ Node-RED", "≤ ⅓", why, "not measured", command),
        ]
    ratio = pos["rps"] / red["rps"]
    cpu = (pos["cpu_us"] + pos["db_us"]) / (red["cpu_us"] + red["db_us"])
    p99_ms, lag = pos["half_p99_us"] / 1000, pos.get("half_fold_lag_p99_s")
    rows = [
        Row("position POST throughput ÷ Node-RED", "≥ 3",
            f"{ratio:.2f} ({pos['rps']:,.0f} vs {red['rps']:,.0f} req/s)", verdict(ratio >= 3),
            command),
        Row("position gateway+DB CPU per request ÷ Node-RED", "≤ ⅓",
            f"{cpu:.2f} ({pos['cpu_us']:,.0f} + {pos['db_us']:,.0f} vs {red['cpu_us']:,.0f} +"
            f" {red['db_us']:,.0f} µs)", verdict(cpu <= 1 / 3), command),
        Row("position POST p99 at half of peak", "< 20 ms",
            f"{p99_ms:.1f} ms at {pos['half_rate']:,.0f} req/s", verdict(p99_ms < 20), command),
    ]  # fmt: skip
    if lag is not None:
        rows.append(Row("fold lag p99 at half of peak", "< 1 s", f"≤ {lag:g} s",
                        verdict(lag < 1), command))  # fmt: skip
    return rows


def ingest_rows(ingest: Any) -> list[Row]:
    command = "python bench/bench_positions_ingest.py"
    if not ingest:
        return [Row("batched position ingest ÷ raw insert_many", "≥ 0.7", "no figures", "FAIL",
                    command)]  # fmt: skip
    gw, raw, floor = ingest["gateway"], ingest["raw"], ingest["raw_id_only"]
    ratio, ratio_floor = ingest["ratio"], ingest["ratio_id_only"]
    return [
        Row(
            "batched position ingest ÷ raw insert_many (same documents, same indexes)", "≥ 0.7",
            f"{ratio:.2f} ({gw['rate']:,.0f} vs {raw['rate']:,.0f} fixes/s; DB {gw['db_us']:,.0f}"
            f" vs {raw['db_us']:,.0f} µs/fix)", verdict(ratio >= 0.7), command,
        ),
        Row(
            "batched position ingest ÷ raw insert_many (same documents, `_id` alone)", "info",
            f"{ratio_floor:.2f} ({floor['rate']:,.0f} fixes/s; DB {floor['db_us']:,.0f} µs/fix)",
            "info", command,
        ),
    ]  # fmt: skip


FANOUT_SLOW_PARTNER = ["--deliveries", "1200", "--concurrency", "8", "--partner-ms", "200"]


def other_rows(pipeline: Any, proxy: Any, fanout: Any, slow_fanout: Any) -> list[Row]:
    rows = []
    command = "python bench/bench_trigger_pipeline.py"
    if pipeline:
        us = pipeline["pipeline_us"]
        rows.append(Row("token + validation + mapping per payload", "< 25 µs", f"{us:.1f} µs",
                        verdict(us < 25), command))  # fmt: skip
    else:
        rows.append(Row("token + validation + mapping per payload", "< 25 µs", "no figures", "FAIL",
                        command))  # fmt: skip
    command = "python bench/bench_proxy.py"
    if proxy:
        median = proxy["median_ms"]
        added = median["proxy"] - median["direct"]
        rows.append(Row(
            "proxy action overhead, median", "< 0.5 ms",
            f"{added:.2f} ms ({median['proxy']:.2f} vs {median['direct']:.2f} ms direct)",
            verdict(added < 0.5), command,
        ))  # fmt: skip
    else:
        rows.append(Row("proxy action overhead, median", "< 0.5 ms", "no figures", "FAIL", command))
    command = "python bench/bench_fanout.py"
    if fanout and len(fanout) > 1:
        one, two = fanout[0], fanout[1]
        rows.append(Row(
            "durable fan-out deliveries/s, 2 worker processes ÷ 1", "scales (DB not the limit)",
            f"{two['rate'] / one['rate']:.2f} ({two['rate']:,.0f} vs {one['rate']:,.0f}/s; "
            f"DB {one['db_us']:,.0f} µs per delivery)", "info", command,
        ))  # fmt: skip
    command = "python bench/bench_fanout.py " + " ".join(FANOUT_SLOW_PARTNER)
    figure = "durable fan-out, 2 processes ÷ 1, partner answering in 200 ms (DB not the limit)"
    if slow_fanout and len(slow_fanout) > 1:
        one, two = slow_fanout[0], slow_fanout[1]
        ratio = two["rate"] / one["rate"]
        rows.append(Row(
            figure, "scales",
            f"{ratio:.2f} ({two['rate']:,.0f} vs {one['rate']:,.0f}/s; "
            f"DB {two['db_us'] * two['rate'] / 1e6:.2f} of a core at 2)",
            verdict(ratio >= 1.6), command,
        ))  # fmt: skip
    else:
        rows.append(Row(figure, "scales", "no figures", "FAIL", command))
    return rows


def event_rows(events: Any) -> list[Row]:
    """What an entity write and its event cost the database, outbox (today) and a transaction
    per round (the events beside the entity), against Node-RED's one upsert."""
    figure = "entity write + event, database CPU ÷ Node-RED's upsert: outbox / transaction"
    command = "python bench/bench_event_designs.py"
    if not events or "C" not in events:
        return [Row(figure, "≤ 1", "no figures", "not measured", command)]
    a, c, d = (events[k]["db_us"] for k in ("A", "C", "D"))
    measured = f"{a / d:.2f} / {c / d:.2f} ({a:,.0f} / {c:,.0f} vs {d:,.0f} µs)"
    return [Row(figure, "≤ 1", measured, "info", command)]


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return (
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}, gateway at {head.stdout.strip() or '?'}"
    )


def print_table(rows: list[Row], markdown: bool) -> None:
    if markdown:
        print("| figure | target | measured | result | command |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r.figure} | {r.target} | {r.measured} | {r.verdict} | `{r.command}` |")
        return
    widths = [max(len(getattr(r, f)) for r in rows) for f in ("figure", "target", "measured")]
    widths = [max(w, 6) for w in widths]
    head = f"{'figure':<{widths[0]}}  {'target':<{widths[1]}}  {'measured':<{widths[2]}}  result"
    print("\n" + head + "\n" + "-" * (len(head) + 8))
    for r in rows:
        print(
            f"{r.figure:<{widths[0]}}  {r.target:<{widths[1]}}  {r.measured:<{widths[2]}}  "
            f"{r.verdict:<12} {r.command}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="http,scale,ingest,pipeline,proxy,fanout,fanout_slow,events"
    )
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--keep", type=Path, help="keep the JSON figures in this directory")
    parser.add_argument("--from", dest="source", type=Path, help="print kept figures")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    servers = ",".join([HTTP_SERVERS, *position_keys()])
    http_cmd = ["bench/bench_http.py", "--servers", servers, "--duration", f"{args.duration:g}"]
    scale_cmd = ["bench/bench_http.py", "--servers", SCALE_SERVERS, "--connections", "32"]
    scale_cmd += ["--duration", f"{args.duration:g}"]
    steps: dict[str, list[str]] = {
        "http": http_cmd,
        "scale": scale_cmd,
        "ingest": ["bench/bench_positions_ingest.py"],
        "pipeline": ["bench/bench_trigger_pipeline.py"],
        "proxy": ["bench/bench_proxy.py"],
        "fanout": ["bench/bench_fanout.py"],
        "fanout_slow": ["bench/bench_fanout.py", *FANOUT_SLOW_PARTNER],
        "events": ["bench/bench_event_designs.py"],
    }
    with tempfile.TemporaryDirectory(prefix="bench-figures-") as tmp:
        folder = args.source or args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        loads = [os.getloadavg()]
        if args.source is None:
            for name in args.only.split(","):
                run(name, steps[name], folder / f"{name}.json")
                loads.append(os.getloadavg())
        results: dict[str, Callable[[], Any]] = {
            name: (lambda n=name: load(folder / f"{n}.json")) for name in steps
        }
        http = results["http"]()
        command = "python " + " ".join(http_cmd)
        rows = http_rows(http, command)
        scale = results["scale"]()
        if scale:
            rows += scale_rows(best(scale["servers"]), "python " + " ".join(scale_cmd))
        rows += position_rows(http, command)
        rows += ingest_rows(results["ingest"]())
        rows += other_rows(
            results["pipeline"](), results["proxy"](), results["fanout"](), results["fanout_slow"]()
        )
        rows += event_rows(results["events"]())
        print(f"\nSPEC §8 figures, {machine()}")
        print("load average (1 min) before and after each benchmark: "
              + ", ".join(f"{load[0]:.1f}" for load in loads))  # fmt: skip
        print_table(rows, args.markdown)


if __name__ == "__main__":
    main()
