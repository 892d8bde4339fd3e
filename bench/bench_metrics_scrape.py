"""What a /metrics scrape costs with many triggers: series, bytes, render time, and the longest
the event loop waits meanwhile (rendered on the loop, as before 2026-12-07, or in a thread, as
`/metrics` does now).

    python bench/bench_metrics_scrape.py [--triggers 300 3000] [--bound 500]

Each trigger gets what two partner calls give it (one created, one refused as malformed, as
the sec2 probe made them): its series in `gateway_trigger_requests_total` and the latency
histogram. `unbounded` keeps every trigger's series (before); `bounded` keeps `--bound`
triggers' series by id and counts the rest under trigger="other" (GATEWAY_METRICS_MAX_TRIGGERS).
Best of 3 renders; the loop's wait is the longest gap a 1 ms ticker saw during one scrape.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from gateway.metrics import Metrics


def _metrics(triggers: int, bound: int) -> Metrics:
    metrics = Metrics("bench", "asyncio", max_triggers=bound)
    for n in range(triggers):
        label = metrics.trigger_label(f"trg_{n:020d}")
        for outcome in ("created", "rejected_malformed"):
            metrics.trigger_requests.labels(label, "POST", outcome).inc()
            metrics.trigger_latency.labels(label).observe(0.004)
    return metrics


def _best(render: Callable[[], bytes]) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(3):
        started = time.perf_counter()
        size = len(render())
        best = min(best, time.perf_counter() - started)
    return best, size


async def _loop_wait(metrics: Metrics, threaded: bool) -> float:
    """The longest gap between the ticks of a 1 ms ticker while one scrape renders."""
    longest, done = 0.0, asyncio.Event()

    async def tick() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    if threaded:
        await asyncio.to_thread(metrics.rendered)
    else:
        metrics.render()
    await asyncio.sleep(0.01)
    done.set()
    await ticker
    return longest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--triggers", type=int, nargs="+", default=[300, 3000])
    parser.add_argument("--bound", type=int, default=500)
    args = parser.parse_args()
    print("triggers  design     series   bytes      render ms  loop wait ms")
    for triggers in args.triggers:
        for design, bound, threaded in (
            ("unbounded", 10**9, False),
            ("bounded", args.bound, True),
        ):
            metrics = _metrics(triggers, bound)
            took, size = _best(metrics.render)
            series = sum(
                1 for line in metrics.render().decode().splitlines() if not line.startswith("#")
            )
            wait = asyncio.run(_loop_wait(metrics, threaded))
            print(
                f"{triggers:>8}  {design:<9} {series:>7} {size:>10,} {took * 1000:>9.0f}"
                f"  {wait * 1000:>11.0f}"
            )


if __name__ == "__main__":
    main()
