"""What redacting a partner's answer costs, as recording a delivery attempt does it: a
`Redactor` built from a bearer partner's credentials, one answer redacted.

    python bench/bench_redaction.py                  # this tree
    python bench/bench_redaction.py --base DIR       # A/B: DIR's redaction.py against this one

Answers: a short JSON answer, 4 KiB excerpts (the sender's cap) of JSON with a few escapes,
written by PHP (`\\/`), with every character `\\uXXXX`-escaped or percent-encoded, quoted in a
JSON string (read twice), indented (line breaks) and in MIME base64 (lines of 76); and 1 MB
of JSON, which no excerpt reaches. Best of 3 repeats per round, the two trees alternated over
3 rounds. Then `redact_tree` on parsed answers of about 1 MiB (the sender's read cap), with
nothing to mask or the token once: rows without escapes, rows whose texts hold `&` and
`%2F`, 262k one-character texts, 110k keys.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import sys
import timeit
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent

TOKEN = "Zr9/Qx+Lm2/Pk7w="
VALUES = (f"Bearer {TOKEN}", TOKEN, "mapping-pin-2")
ROW = {
    "plate": "ABC1D23",
    "lat": -23.55,
    "lon": -46.63,
    "note": "Sao Paulo / centro & <x>",
    "url": "https://x/?a=1&b=%2F",
}


def answers() -> dict[str, str]:
    plain = json.dumps([ROW] * 40)[:4096]
    return {
        "short JSON": '{"ok": true, "id": "6b13a2e9a2315c770d1c97dd"}',
        "4 KiB JSON": plain,
        "4 KiB PHP \\/": json.dumps([ROW] * 40).replace("/", "\\/")[:4096],
        "4 KiB all \\uXXXX": "".join(f"\\u{ord(c):04x}" for c in plain)[:4096],
        "4 KiB all %xx": quote(plain, safe="").lower()[:4096],
        "4 KiB in a string": json.dumps({"echo": json.dumps([ROW] * 40)})[:4096],
        "4 KiB indented": json.dumps([ROW] * 40, indent=2)[:4096],
        "4 KiB MIME base64": base64.encodebytes(json.dumps([ROW] * 40).encode()).decode()[:4096],
        "1 MB JSON": json.dumps([ROW] * 10000),
    }


def load(tree: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, tree / "gateway/outbound/redaction.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cost(module: ModuleType, text: str) -> float:
    """Seconds per answer, best of 3 repeats."""
    number = 3 if len(text) > 100_000 else 300
    runs = timeit.repeat(lambda: module.Redactor(VALUES).redact(text), number=number, repeat=3)
    return min(runs) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="a tree to compare with (A/B)")
    args = parser.parse_args()
    trees = {"this": load(ROOT, "redaction_this")}
    if args.base is not None:
        trees = {"base": load(args.base, "redaction_base"), **trees}
    print(f"{'answer':18}" + "".join(f"{name:>12}" for name in trees) + "   ratio")
    for name, text in answers().items():
        best = dict.fromkeys(trees, float("inf"))
        for _ in range(3):
            for label, module in trees.items():
                best[label] = min(best[label], cost(module, text))
        figures = "".join(f"{best[label] * 1e6:9.1f} µs" for label in trees)
        ratio = f"   {best['this'] / best['base']:.2f}" if "base" in best else ""
        print(f"{name:18}{figures}{ratio}")
    parsed(trees)


PLAIN_ROW = {"plate": "ABC1D23", "lat": -23.55, "lon": -46.63, "note": "Sao Paulo centro"}


def parsed_answers() -> dict[str, tuple[bytes, bool]]:
    """Answers of about 1 MiB (the sender's cap) as a partner sends them: (JSON, whether it
    quotes the token once, in one of its texts)."""
    one = [dict(PLAIN_ROW) for _ in range(11_000)]
    one[5_000]["note"] = f"called with Bearer {TOKEN}"
    escaped = [dict(ROW) for _ in range(9_000)]
    quoting = [dict(ROW) for _ in range(9_000)]
    quoting[4_000]["note"] = f"called with Bearer {TOKEN}"
    tiny = ["a"] * 262_000
    return {
        "rows, none": (json.dumps([PLAIN_ROW] * 11_000).encode(), False),
        "rows, one": (json.dumps(one).encode(), True),
        "rows & %2F, none": (json.dumps(escaped).encode(), False),
        "rows & %2F, one": (json.dumps(quoting).encode(), True),
        "262k texts, none": (json.dumps(tiny).encode(), False),
        "262k texts, one": (json.dumps([TOKEN, *tiny[1:]]).encode(), True),
        "110k keys, one": (
            json.dumps({f"{i:x}": TOKEN if i == 9 else 0 for i in range(110_000)}).encode(),
            True,
        ),
    }


def tree_cost(module: ModuleType, raw: bytes) -> float:
    """Seconds for `redact_tree` of a freshly parsed answer (it masks in place), best of 3."""
    redactor = module.Redactor(VALUES)
    runs = []
    for _ in range(3):
        tree = json.loads(raw)
        started = timeit.default_timer()
        redactor.redact_tree(tree)
        runs.append(timeit.default_timer() - started)
    return min(runs)


def parsed(trees: dict[str, ModuleType]) -> None:
    print(f"\n{'parsed, ~1 MiB':18}" + "".join(f"{name:>12}" for name in trees) + "   ratio")
    for name, (raw, quotes) in parsed_answers().items():
        best = dict.fromkeys(trees, float("inf"))
        for _ in range(3):
            for label, module in trees.items():
                best[label] = min(best[label], tree_cost(module, raw))
        masked = trees["this"].Redactor(VALUES).redact_tree(json.loads(raw))
        assert (TOKEN not in json.dumps(masked)) and (quotes == (MASK_TEXT in json.dumps(masked)))
        figures = "".join(f"{best[label] * 1e3:9.2f} ms" for label in trees)
        ratio = f"   {best['this'] / best['base']:.3f}" if "base" in best else ""
        print(f"{name:18}{figures}{ratio}")


MASK_TEXT = "[redacted]"


if __name__ == "__main__":
    sys.exit(main())
