"""Evaluations per second of every shipped mapping on its sample: `python bench/bench_mapping.py`.

Inbound mappings run `apply` on one item (batch samples: the first item); outbound ones run
`build_request` on a context made for them, or `map_response` on the partner's answer.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.mapping import load_mapping  # noqa: E402
from tests.test_shipped_mappings import (  # noqa: E402
    CONTEXTS,
    INBOUND,
    OUTBOUND,
    PARAMS,
    RESPONSE,
    SAMPLES,
    SECRETS,
    sample,
)

# The samples, params and contexts are the ones tests/test_shipped_mappings.py checks every
# shipped mapping against (it fails on a mapping without one): a new mapping is measured here
# as soon as it is tested there.
SECTIONS = ("fields", "event_data", "path", "query", "headers", "body", "response")


def _count(table: Any) -> int:
    """Field specs in a table, those of nested objects and lists included."""
    if not isinstance(table, dict):
        return 0
    total = 0
    for spec in table.values():
        nested = (spec.get("object") or spec.get("fields")) if isinstance(spec, dict) else None
        total += _count(nested) if nested else 1
    return total


def runner(path: Path) -> tuple[str, int, Callable[[], Any]]:
    """The call that evaluates the mapping at `path` on its sample: (its name, the field
    specs the mapping has, the call)."""
    name = path.name
    mapping = load_mapping(path.read_bytes(), filename=name).bind(PARAMS.get(name, {}))
    fields = sum(_count(mapping.source.get(section)) for section in SECTIONS)
    if name in INBOUND:
        item = mapping.items(sample(INBOUND[name]))[0]
        return "apply", fields, lambda: mapping.apply(item, secrets=SECRETS)
    if name in RESPONSE:
        answer = json.loads((SAMPLES / RESPONSE[name]).read_text())
        return "map_response", fields, lambda: mapping.map_response(answer)
    if name not in OUTBOUND:
        raise SystemExit(f"{name}: no sample in tests/test_shipped_mappings.py")
    context = CONTEXTS[name]
    return "build_request", fields, lambda: mapping.build_request(context, secrets=SECRETS)


def _measure(run: Callable[[], Any], seconds: float = 0.3) -> float:
    # CPU time of this thread: a busy machine delays the loop but does not inflate the figure.
    loops = 1
    while True:
        start = time.thread_time()
        for _ in range(loops):
            run()
        elapsed = time.thread_time() - start
        if elapsed >= seconds:
            return elapsed / loops
        loops *= 2


def main() -> None:
    print(f"{'mapping':28} {'call':14} {'fields':>6} {'evals/s':>10} {'µs/eval':>8}  (CPU time)")
    for path in sorted((ROOT / "mappings").glob("*.yaml")):
        call, fields, run = runner(path)
        per_eval = min(_measure(run) for _ in range(3))
        print(f"{path.stem:28} {call:14} {fields:>6} {1 / per_eval:>10,.0f} {per_eval * 1e6:>8.2f}")


if __name__ == "__main__":
    main()
