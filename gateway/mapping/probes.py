"""Probes: the test calls a partner sends to see that an endpoint is alive (Samsara's `Ping`,
`{"action": "test"}`), recognised by a condition and answered without a write.

    probe:
      when: {from: eventType, equals: Ping}
      answer: {ok: true}          # the body of the 200 answer (default {"ok": true})
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from .conditions import Condition
from .expressions import Run
from .model import EvalError
from .paths import pointer
from .problems import suggest
from .specs import SpecCompiler

PROBE_KEYS = ("when", "answer")
DEFAULT_ANSWER: dict[str, Any] = {"ok": True}


@dataclass(frozen=True, slots=True)
class Probe:
    condition: Condition
    answer: dict[str, Any]

    def answer_for(self, payload: Any) -> dict[str, Any] | None:
        """The answer when `payload` is a probe, else None. A condition that fails on the
        payload (a function given the wrong type) means "not a probe": the payload is then
        mapped, and its problems reported, as any other."""
        try:
            matched = self.condition(payload, Run())
        except EvalError:
            return None
        return copy.deepcopy(self.answer) if matched else None


def compile_probe(raw: Any, specs: SpecCompiler) -> Probe | None:
    problems = specs.problems
    if not isinstance(raw, dict) or "when" not in raw:
        problems.add("/probe", "probe is {when: condition, answer: {...}}", "type")
        return None
    for key in raw:
        if key not in PROBE_KEYS:
            message = f"unknown key {key!r}{suggest(key, PROBE_KEYS)}"
            problems.add(f"/probe{pointer(key)}", message, "unknown")
    answer = raw.get("answer", DEFAULT_ANSWER)
    if not isinstance(answer, dict):
        problems.add("/probe/answer", "answer is the JSON object to answer with", "type")
    condition = specs.condition(raw["when"], "/probe/when")
    if condition is None or not isinstance(answer, dict) or set(raw) - set(PROBE_KEYS):
        return None
    return Probe(condition, answer)
