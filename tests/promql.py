"""A small evaluator of the PromQL the shipped alert rules (docs/operations.md "Alerts") use,
over scrapes of a real gateway's /metrics: selectors with label matchers, rate/increase over a
[range] (counter resets, the window's extrapolation), sum/max/min [by (...)], absent,
histogram_quantile, comparisons (filtering), `or`, `unless`, and `for:` over the scrape
times. Enough to tell which rules a real incident sets off, not a PromQL implementation."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]
Series = dict[Labels, list[tuple[float, float]]]
OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
_TOKEN = re.compile(
    r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z_:][A-Za-z0-9_:]*)|(==|!=|>=|<=|=~|[><=(){}\[\],])"
    r"|(\"[^\"]*\"))"
)
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": float.__gt__,
    "<": float.__lt__,
    "==": float.__eq__,
    ">=": float.__ge__,
    "<=": float.__le__,
    "!=": float.__ne__,
}
_AGGREGATE: dict[str, Callable[[list[float]], float]] = {"sum": sum, "max": max, "min": min}


@dataclass
class Scrape:
    t: float
    samples: dict[tuple[str, Labels], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]


def parse_scrape(t: float, text: str) -> Scrape:
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return Scrape(t, samples)


def shipped_rules() -> list[dict[str, Any]]:
    text = OPERATIONS.read_text()
    block = text.split("## Alerts", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    return list(yaml.safe_load(block)["groups"][0]["rules"])


def _tokens(expr: str) -> list[str]:
    out, pos, expr = [], 0, expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot parse at {expr[pos:]!r}")
        out.append(m.group(0).strip())
        pos = m.end()
    return [t for t in out if t]


def _seconds(text: str) -> float:
    return float(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]


class _Eval:
    def __init__(self, scrapes: list[Scrape], at: int, expr: str) -> None:
        self.scrapes, self.at = scrapes, at
        self.toks, self.i = _tokens(expr), 0

    def run(self) -> Vector:
        v = self.binary()
        assert self.i == len(self.toks), self.toks[self.i :]
        return v

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        t = self.toks[self.i]
        if want is not None and t != want:
            raise ValueError(f"expected {want}, got {t}")
        self.i += 1
        return t

    def binary(self) -> Vector:
        left = self.compare()
        while self.peek() in ("or", "unless"):
            op, right = self.take(), self.compare()
            if op == "or":
                left = {**right, **left}
            else:
                left = {k: v for k, v in left.items() if k not in right}
        return left

    def compare(self) -> Vector:
        left = self.term()
        if (op := self.peek()) in _COMPARE:
            self.take()
            num = float(self.take())
            left = {k: v for k, v in left.items() if _COMPARE[str(op)](float(v), num)}
        return left

    def term(self) -> Vector:
        t = self.peek()
        if t in _AGGREGATE:
            return self.aggregate(self.take())
        if t == "absent":
            self.take()
            inner = self.parenthesized(self.term)
            return {} if inner else {frozenset(): 1.0}
        if t in ("rate", "increase"):
            return self.counter(self.take())
        if t == "histogram_quantile":
            return self.quantile()
        if t is not None and t[0].isdigit():
            return {frozenset(): float(self.take())}
        return self.instant()

    def parenthesized(self, inner: Callable[[], Vector]) -> Vector:
        self.take("(")
        v = inner()
        self.take(")")
        return v

    def aggregate(self, how: str) -> Vector:
        by: list[str] = []
        if self.peek() == "by":
            self.take()
            self.take("(")
            while (t := self.take()) != ")":
                if t != ",":
                    by.append(t)
        groups: dict[Labels, list[float]] = {}
        for k, v in self.parenthesized(self.binary).items():
            groups.setdefault(frozenset((n, val) for n, val in k if n in by), []).append(v)
        return {k: _AGGREGATE[how](vs) for k, vs in groups.items()}

    def counter(self, how: str) -> Vector:
        self.take("(")
        series, window = self.ranged()
        self.take(")")
        out = {}
        for k, pts in series.items():
            if len(pts) < 2:
                continue
            inc, prev = 0.0, pts[0][1]
            for _, v in pts[1:]:
                inc += v - prev if v >= prev else v
                prev = v
            span = pts[-1][0] - pts[0][0]
            inc = inc * (window / span) if span > 0 else inc  # extrapolated to the window
            out[k] = inc / window if how == "rate" else inc
        return out

    def quantile(self) -> Vector:
        self.take()
        self.take("(")
        q = float(self.take())
        self.take(",")
        inner = self.binary()
        self.take(")")
        groups: dict[Labels, list[tuple[float, float]]] = {}
        for k, v in inner.items():
            rest = frozenset((n, val) for n, val in k if n != "le")
            groups.setdefault(rest, []).append((float(dict(k)["le"]), v))
        return {k: _bucket_quantile(q, sorted(buckets)) for k, buckets in groups.items()}

    def matcher(self) -> Callable[[str, Labels], bool]:
        name, matchers = self.take(), []
        if self.peek() == "{":
            self.take("{")
            while self.peek() != "}":
                matchers.append((self.take(), self.take(), self.take().strip('"')))
                if self.peek() == ",":
                    self.take()
            self.take("}")

        def ok(metric: str, labels: Labels) -> bool:
            have = dict(labels)
            return metric == name and all(
                _matches(op, have.get(label, ""), value) for label, op, value in matchers
            )

        return ok

    def instant(self) -> Vector:
        ok = self.matcher()
        return {k: v for (n, k), v in self.scrapes[self.at].samples.items() if ok(n, k)}

    def ranged(self) -> tuple[Series, float]:
        ok = self.matcher()
        self.take("[")
        window = _seconds(self.take() + self.take())
        self.take("]")
        now = self.scrapes[self.at].t
        series: Series = {}
        for s in self.scrapes[: self.at + 1]:
            if s.t >= now - window:
                for (n, k), v in s.samples.items():
                    if ok(n, k):
                        series.setdefault(k, []).append((s.t, v))
        return series, window


def _matches(op: str, have: str, value: str) -> bool:
    if op == "=":
        return have == value
    if op == "!=":
        return have != value
    return re.fullmatch(value, have) is not None


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank, prev_le, prev_c = q * total, 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c or 1)
        prev_le, prev_c = le, c
    return math.nan


def evaluate(expr: str, scrapes: list[Scrape], at: int = -1) -> Vector:
    """`expr`'s vector at the scrape `at` (the last by default), `scrapes` before it its past."""
    return _Eval(scrapes, at % len(scrapes), expr).run()


def pending(rule: dict[str, Any], scrapes: list[Scrape]) -> list[bool]:
    """For each scrape: does the rule's condition hold then (pending or firing)?"""
    return [bool(_Eval(scrapes, i, rule["expr"]).run()) for i in range(len(scrapes))]


def firing(rule: dict[str, Any], scrapes: list[Scrape]) -> list[bool]:
    """For each scrape: has the rule's condition held for its `for:` then?"""
    hold = _seconds(rule["for"]) if "for" in rule else 0.0
    since: float | None = None
    out = []
    for s, active in zip(scrapes, pending(rule, scrapes), strict=True):
        since = (s.t if since is None else since) if active else None
        out.append(since is not None and s.t - since >= hold)
    return out
