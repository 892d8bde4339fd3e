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

from gateway.mapping import load_mapping, read_sample  # noqa: E402

SAMPLES = ROOT / "tests" / "data" / "partner_payloads"
VEHICLE = {
    "plate": "ABC1D23",
    "renavam": "86769597308",
    "odometer_km": 152340.0,
    "current_driver": {"name": "Ana Souza", "phone": "+5511987654321"},
}
FINE = {
    "kind": "fine",
    "key": "261810:A123456789",
    "ait_number": "A123456789",
    "authority": "261810",
    "plate": "ABC1D23",
    "amount_brl": 130.16,
    "driver_cpf": "52998224725",
}
SECRETS = {"erp_token": "t", "hr_token": "t", "fcm_access_token": "t", "sms_api_key": "t"}
CONTEXTS: dict[str, Any] = {
    "erp-fine-paid": {
        "entity": FINE,
        "event": {
            "type": "fine.paid",
            "occurred_at": "2026-11-25T14:00:00Z",
            "data": {"amount_paid_brl": 104.13},
        },
    },
    "erp-mileage": {
        "entity": VEHICLE,
        "event": {
            "type": "checklist.completed",
            "data": {
                "origin": "checklist",
                "checklist_id": "chk-20261125-0042",
                "captured_at": "2026-11-25T10:58:00Z",
            },
        },
    },
    "fcm-geofence-exit": {
        "entity": VEHICLE,
        "driver": {"push_tokens": ["tok"]},
        "event": {
            "type": "vehicle.geofence.exited",
            "occurred_at": "2026-11-20T13:45:13Z",
            "detail": {"geofence": {"id": 3, "name": "Garagem SP"}},
        },
    },
    "sms-maintenance-due": {
        "entity": VEHICLE,
        "event": {"type": "vehicle.maintenance.due", "detail": {"due_km": 10000}},
        "driver": {"phone": "+5511987654321"},
    },
}
INBOUND_SAMPLES = {
    "traccar-position": "traccar_position_forward.json",
    "traccar-event": "traccar_event_forward_geofence_exit.json",
    "osmand": "osmand_query.txt",
    "traccar-client": "traccar_client_json.json",
    "samsara-geofence": "samsara_v2_geofence_exit.json",
    "flespi": "flespi_stream.json",
    "fine-feed": "fine_feed.json",
    "checklist": "checklist_completed.json",
    "motive-vehicle-location": "motive_vehicle_location_updated.json",
    "geotab-logrecord": "geotab_getfeed_logrecord.json",
    "fleetio-meter-entry": "fleetio_meter_entry_created.json",
    "samsara-vehicle-stats-feed": "samsara_vehicle_stats_feed.json",
}
PARAMS: dict[str, dict[str, Any]] = {  # bound as a trigger binds them
    "motive-vehicle-location": {"distance_unit": "mi", "speed_unit": "mph", "volume_unit": "gal"},
    "fleetio-meter-entry": {"meter_unit": "mi"},
}


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


def _runner(path: Path) -> tuple[str, int, Callable[[], Any]]:
    mapping = load_mapping(path.read_bytes(), filename=path.name)
    mapping = mapping.bind(PARAMS.get(mapping.name, {}))
    fields = sum(_count(mapping.source.get(section)) for section in SECTIONS)
    if mapping.name in INBOUND_SAMPLES:
        item = mapping.items(read_sample((SAMPLES / INBOUND_SAMPLES[mapping.name]).read_text()))[0]
        return "apply", fields, lambda: mapping.apply(item)
    if mapping.name == "hr-current-driver":
        answer = json.loads((SAMPLES / "driver_lookup_response.json").read_text())
        return "map_response", fields, lambda: mapping.map_response(answer)
    context = CONTEXTS[mapping.name]
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
        call, fields, run = _runner(path)
        per_eval = min(_measure(run) for _ in range(3))
        print(f"{path.stem:28} {call:14} {fields:>6} {1 / per_eval:>10,.0f} {per_eval * 1e6:>8.2f}")


if __name__ == "__main__":
    main()
