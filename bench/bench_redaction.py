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
`%2F`, 262k one-character texts, 110k keys, texts dense with escapes (`a&amp;b%20c\\/`).
Last, how long the event loop stands still while the sender reads such an answer of 1 MiB
from a partner on 127.0.0.1 (the longest gap between ticks of 1 ms), each tree in a process
of its own. With `--latin1`: the same excerpts (and two echoing a Latin-1 form) redacted of a
request written in ISO-8859-1 whose named secret is not ASCII (`Redactor(values, codec)`: its
bytes' readings looked for too; a tree before it is given the values only), and the cost of
building that redactor with its forms not yet cached.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import time
import timeit
from pathlib import Path
from types import ModuleType
from typing import Any
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
    parser.add_argument("--stall", action="store_true", help=argparse.SUPPRESS)  # one tree's
    parser.add_argument("--latin1", action="store_true", help="a Latin-1 request's secret")
    args = parser.parse_args()
    if args.stall:
        print(json.dumps(asyncio.run(stalls())))
        return
    trees = {"this": load(ROOT, "redaction_this")}
    if args.base is not None:
        trees = {"base": load(args.base, "redaction_base"), **trees}
    if args.latin1:
        latin1(trees)
        return
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
    on_the_loop({"base": args.base, "this": ROOT} if args.base is not None else {"this": ROOT})


LATIN1_SECRET = "s3nhã-Ç-2026"
LATIN1_VALUES = (*VALUES, LATIN1_SECRET)


def latin1_redactor(module: ModuleType, values: tuple[str, ...] = LATIN1_VALUES) -> Any:
    """The redactor of a request written in ISO-8859-1 (a tree before the codec: values only)."""
    if "codec" in inspect.signature(module.Redactor).parameters:
        return module.Redactor(values, "iso8859-1")
    return module.Redactor(values)


def latin1_answers() -> dict[str, str]:
    quoted = json.dumps([ROW] * 40)[:4000]
    return {
        **{name: answers()[name] for name in ("short JSON", "4 KiB JSON", "4 KiB all %xx")},
        "4 KiB form echo": quoted + "OBS=x&SENHA=s3nh%E3-%C7-2026",
        "4 KiB U+FFFD echo": quoted + '"SENHA": "s3nh\ufffd-\ufffd-2026"',
        # The secret's UTF-8 bytes echoed by a Latin-1 server under its own label.
        "4 KiB mojibake": quoted + '"SENHA": "' + LATIN1_SECRET.encode().decode("latin-1") + '"',
    }


def best_of(trees: dict[str, ModuleType], make: Any, text: str, number: int = 300) -> str:
    """Microseconds per `redact(text)` of the redactor `make(module)` builds, best of 3×3."""
    best = dict.fromkeys(trees, float("inf"))
    for _ in range(3):
        for label, module in trees.items():
            redactor = make(module)
            runs = timeit.repeat(lambda r=redactor: r.redact(text), number=number, repeat=3)
            best[label] = min(best[label], min(runs) / number)
    figures = "".join(f"{best[label] * 1e6:9.1f} µs" for label in trees)
    return figures + (f"   {best['this'] / best['base']:.2f}" if "base" in best else "")


def latin1(trees: dict[str, ModuleType]) -> None:
    print(f"{'Latin-1 request':18}" + "".join(f"{name:>12}" for name in trees) + "   ratio")
    for name, text in latin1_answers().items():
        best = dict.fromkeys(trees, float("inf"))
        for _ in range(3):
            for label, module in trees.items():
                redactor = latin1_redactor(module)
                runs = timeit.repeat(lambda r=redactor, t=text: r.redact(t), number=300, repeat=3)
                best[label] = min(best[label], min(runs) / 300)
        figures = "".join(f"{best[label] * 1e6:9.1f} µs" for label in trees)
        ratio = f"   {best['this'] / best['base']:.2f}" if "base" in best else ""
        print(f"{name:18}{figures}{ratio}")
    best = dict.fromkeys(trees, float("inf"))
    for _ in range(3):
        for label, module in trees.items():

            def build(module: ModuleType = module) -> None:
                module._forms.cache_clear()
                latin1_redactor(module)

            best[label] = min(best[label], min(timeit.repeat(build, number=50, repeat=3)) / 50)
    figures = "".join(f"{best[label] * 1e6:9.1f} µs" for label in trees)
    ratio = f"   {best['this'] / best['base']:.2f}" if "base" in best else ""
    print(f"{'built, uncached':18}{figures}{ratio}")
    # The same secret sent in a UTF-8 request (the default: no codec).
    print(f"\n{'UTF-8 request':18}" + "".join(f"{name:>12}" for name in trees) + "   ratio")
    for name, text in latin1_answers().items():
        print(f"{name:18}{best_of(trees, lambda m: m.Redactor(LATIN1_VALUES), text)}")
    # Linear in the values: n non-ASCII secrets of 12 characters, then 1 of 12×n.
    text = latin1_answers()["4 KiB mojibake"]
    for n in (1, 10, 100):
        many = tuple(f"s3nhã-Ç-{i:04d}" for i in range(n))
        long = ("s3nhã-Ç-2026" * n,)
        for label, values in ((f"{n} secrets", many), (f"1 of {12 * n} chars", long)):
            print(f"{label:18}{best_of(trees, lambda m, v=values: m.Redactor(v), text, 30)}")


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
    dense = dense_texts(False)
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
        "escapes, none": (json.dumps(dense).encode(), False),
        "escapes, one": (json.dumps(dense_texts(True)).encode(), True),
    }


DENSE = "a&amp;b%20c\\/"  # an entity, a percent escape and a JSON escape every 13 characters


def dense_texts(quotes: bool) -> list[str]:
    """About 1 MiB written out of texts dense with escapes; the token once in one of them."""
    texts = [DENSE * 100 for _ in range(780)]
    if quotes:
        texts[400] = f"{DENSE} called with Bearer {TOKEN} {DENSE}"
    return texts


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


async def stalls() -> dict[str, list[float]]:
    """In this process (the tree on `sys.path`): the sender reading a 1 MiB answer dense with
    escapes from a partner on 127.0.0.1, 5 times each way; per answer the longest the event
    loop stood still (ms), the best and worst of 5, and the whole call (ms), the best."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from gateway.outbound.sender import OutboundRequest, Sender
    from gateway.outbound.ssrf import OutboundPolicy

    found: dict[str, list[float]] = {}
    for name, quotes in (("escapes, none", False), ("escapes, one", True)):
        answer = json.dumps(dense_texts(quotes)).encode()

        async def handle(_: web.Request, answer: bytes = answer) -> web.Response:
            return web.Response(body=answer, content_type="application/json")

        app = web.Application()
        app.router.add_get("/", handle)
        gaps: list[float] = []
        calls: list[float] = []
        async with (
            TestServer(app, host="127.0.0.1") as server,
            Sender(
                OutboundPolicy.from_entries(["127.0.0.1"]), max_body=2 << 20, excerpt_bytes=4096
            ) as sender,
        ):
            url = str(server.make_url("/"))
            for _ in range(5):
                ticks: list[float] = []
                stop = asyncio.Event()

                async def ticking(stop: asyncio.Event = stop, ticks: list[float] = ticks) -> None:
                    last = time.perf_counter()
                    while not stop.is_set():
                        await asyncio.sleep(0.001)
                        ticks.append(time.perf_counter() - last)
                        last = time.perf_counter()

                ticker = asyncio.create_task(ticking())
                started = time.perf_counter()
                request = OutboundRequest("GET", url, timeout=30, secrets=VALUES)
                await sender.send(request, partner_id="bench")
                calls.append(time.perf_counter() - started)
                stop.set()
                await ticker
                gaps.append(max(ticks))
        found[name] = [min(gaps) * 1e3, max(gaps) * 1e3, min(calls) * 1e3]
    return found


def on_the_loop(trees: dict[str, Path]) -> None:
    heads = "".join(f"{name + ' gap':>24}{name + ' call':>12}" for name in trees)
    print(f"\n{'on the event loop':18}{heads}")
    figures: dict[str, dict[str, list[float]]] = {}
    for label, tree in trees.items():
        env = {**os.environ, "PYTHONPATH": str(tree)}
        done = subprocess.run(
            [sys.executable, __file__, "--stall"], env=env, capture_output=True, text=True
        )
        figures[label] = json.loads(done.stdout.strip().splitlines()[-1])
    for name in next(iter(figures.values())):
        row = "".join(
            f"{figures[t][name][0]:9.1f}–{figures[t][name][1]:6.1f} ms{figures[t][name][2]:9.1f} ms"
            for t in trees
        )
        print(f"{name:18}{row}")


if __name__ == "__main__":
    sys.exit(main())
