"""µs per trigger payload for the in-process pipeline (SPEC §8: token + validation + mapping
under 25 µs): `python bench/bench_trigger_pipeline.py [--seconds 2] [--json FILE]`.

Runs the gateway's own objects, built the way a process builds them: a trigger compiled from
its stored document (input schema tests/data/position_schema.json), the process-wide
TriggerTokenVerifier, the JSON parser of the hook, and a compiled inbound mapping, on
tests/data/position_payload.json. The database work (gate read, upsert) is not included:
bench_http.py measures the whole request.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.auth.keyring import KeyRing  # noqa: E402
from gateway.auth.secretbox import SecretBox  # noqa: E402
from gateway.auth.tokens import TriggerTokenVerifier, issue_trigger_token  # noqa: E402
from gateway.formats.bodies import parse_json  # noqa: E402
from gateway.mapping import load_mapping  # noqa: E402
from gateway.schemas import SchemaRegistry, default_schema_dir  # noqa: E402
from gateway.triggers.compiled import compile_trigger  # noqa: E402
from gateway.triggers.spec import document, new_token_id, new_trigger_id  # noqa: E402

DATA = ROOT / "tests" / "data"
MAPPING = """
name: bench-position
direction: inbound
entity_type: vehicle
key: [plate]
emit: [vehicle.position]
fields:
  plate: {from: device.plate, transforms: [trim, upper]}
  attributes.tracker_id: device.id
  last_position.lat: {from: position.latitude, required: true}
  last_position.lon: {from: position.longitude, required: true}
  last_position.speed_kmh:
    from: position.speed
    transforms: [{convert: {from: knots, to: km/h}}, {round: 1}]
  last_position.heading: position.course
  last_position.altitude_m: position.altitude
  last_position.time:
    from: position.fixTime
    required: true
    transforms: [{datetime: {parse: iso8601}}]
  odometer_km:
    from: position.attributes.odometer
    transforms: [{convert: {from: m, to: km}}, {round: 1}]
  last_position.ignition: position.attributes.ignition
"""


def _time(step: Callable[[], Any], seconds: float) -> float:
    """µs per call: the best of three runs of about `seconds`/3 each."""
    calls = 1000
    while True:  # calibrate
        started = time.perf_counter()
        for _ in range(calls):
            step()
        if (elapsed := time.perf_counter() - started) > 0.05:
            break
        calls *= 4
    calls = max(1, int(calls * (seconds / 3) / elapsed))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            step()
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    seconds = args.seconds

    ring = KeyRing.from_secret("bench-secret-key-0123456789abcdef")
    now = datetime.now(UTC)
    spec = {
        "name": "bench",
        "entity_type": "vehicle",
        "mapping": "bench-position",
        "input_schema": orjson.loads((DATA / "position_schema.json").read_bytes()),
    }
    doc = document(
        spec,
        trigger_id=new_trigger_id(),
        tenant="bench",
        defaults={"max_body_bytes": 1 << 20, "max_batch_items": 500},
        now=now,
    )
    trigger = compile_trigger(doc, box=SecretBox(ring), fetch=_no_fetch)
    mapping = load_mapping(MAPPING, catalog=SchemaRegistry.load(default_schema_dir()))
    verifier = TriggerTokenVerifier(ring)
    token = issue_trigger_token(
        ring, tenant="bench", trigger_id=trigger.id, token_id=new_token_id()
    )
    raw = (DATA / "position_payload.json").read_bytes()
    schema = trigger.schema
    assert schema is not None
    payload = parse_json("application/json", raw)
    assert not schema.validate(payload) and mapping.apply(payload).key == {"plate": "ABC1D23"}

    def pipeline() -> None:
        verifier.verify(token, trigger_id=trigger.id)
        item = parse_json("application/json", raw)
        if schema.validate(item):
            raise AssertionError("the sample must validate")
        mapping.apply(item)

    steps: dict[str, Callable[[], Any]] = {
        "token verify (cached)": lambda: verifier.verify(token, trigger_id=trigger.id),
        "JSON parse": lambda: parse_json("application/json", raw),
        "schema validate": lambda: schema.validate(payload),
        "mapping apply": lambda: mapping.apply(payload),
        "first token verify (full HS256)": lambda: TriggerTokenVerifier(ring).verify(
            token, trigger_id=trigger.id
        ),
    }
    print(f"payload {len(raw)} bytes, mapping {len(mapping.source['fields'])} fields")
    figures = {}
    for name, step in steps.items():
        figures[name] = _time(step, seconds / 4)
        print(f"  {name:<34} {figures[name]:8.2f} µs")
    total = _time(pipeline, seconds)
    verdict = "OK" if total < 25 else "OVER"
    print(
        f"token + parse + validate + map      {total:8.2f} µs per payload (budget 25 µs: {verdict})"
    )
    if args.json:
        args.json.write_text(orjson.dumps({"pipeline_us": total, "steps_us": figures}).decode())


async def _no_fetch(url: str) -> bytes:
    raise RuntimeError("no JWKS in this benchmark")


if __name__ == "__main__":
    main()
