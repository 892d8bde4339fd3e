"""What reading a partner's JSON answer exactly costs on the sender's path: `orjson.loads` (how
`outbound/sender.py` read answers before 2026-12-05) against `json_tree.loads_exact` (how it
reads them now, as a trigger reads a pushed body: integers past 64 bits kept as their text).

    python bench/bench_answer_parse.py

Answers: a short proxy answer, a Samsara stats page, a Geotab GetFeed page of 1,000
LogRecords, a 4 KiB ERP list; the same ERP list with one 19-digit integer (inside 64 bits:
the scan finds a long run of digits and the standard library reads the answer again) and
with 25-digit ids (past 64 bits: what the exact reader is for). Best of 5 repeats per round,
the two readers alternated over 3 rounds; the ratio is exact ÷ orjson.
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable
from typing import Any

import orjson

from gateway.formats.json_tree import loads_exact


def _geotab_page(count: int) -> bytes:
    records = [
        {
            "id": f"b{n:04X}",
            "device": {"id": "b3A"},
            "dateTime": f"2026-11-20T13:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
            "latitude": -23.5 - n / 10000,
            "longitude": -46.6 - n / 10000,
            "speed": n % 90,
        }
        for n in range(count)
    ]
    return orjson.dumps({"jsonrpc": "2.0", "result": {"data": records, "toVersion": "03e8"}})


def _samsara_page() -> bytes:
    stats = [
        {
            "id": f"28{n:02d}",
            "name": f"Truck {n}",
            "gps": [{"time": "2026-11-20T14:00:00Z", "latitude": -23.56, "longitude": -46.65}],
            "obdOdometerMeters": [{"time": "2026-11-20T14:00:00Z", "value": 1000 * n}],
        }
        for n in range(20)
    ]
    return orjson.dumps({"data": stats, "pagination": {"endCursor": "c20", "hasNextPage": True}})


def _erp_list(code: Callable[[int], str]) -> bytes:
    rows = ",".join(
        f'{{"placa": "ABC{n:04d}", "codigo": {code(n)}, "modelo": "Cargo 2429", "ano": 2022}}'
        for n in range(60)
    )
    return f'{{"items": [{rows}], "next": "c2", "more": true}}'.encode()


def answers() -> dict[str, bytes]:
    return {
        "short proxy answer": b'{"ok": true, "id": "6b13a2e9a2315c770d1c97dd", "status": 201}',
        "Samsara page (20 vehicles)": _samsara_page(),
        "Geotab page (1,000 records)": _geotab_page(1000),
        "4 KiB ERP list": _erp_list(lambda n: str(100000 + n)),
        "ERP list, one 19-digit int": _erp_list(
            lambda n: "1733380000000000000" if n == 0 else str(100000 + n)
        ),
        "ERP list, 25-digit ids": _erp_list(lambda n: str(10**24 + n)),
    }


def best(reader: Callable[[bytes], Any], body: bytes, repeats: int) -> float:
    number = max(1, 200_000 // max(len(body), 1))
    times = timeit.repeat(lambda: reader(body), number=number, repeat=repeats)
    return min(times) / number * 1e6  # µs per answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for name, body in answers().items():
        assert json.loads(body) is not None
        plain: list[float] = []
        exact: list[float] = []
        for _ in range(args.rounds):  # alternated: the machine's noise hits both
            plain.append(best(orjson.loads, body, args.repeats))
            exact.append(best(loads_exact, body, args.repeats))
        a, b = min(plain), min(exact)
        print(
            f"{name:30} {len(body):>8,} B   orjson {a:9.2f} µs   exact {b:9.2f} µs   "
            f"ratio {b / a:5.2f}"
        )


if __name__ == "__main__":
    main()
