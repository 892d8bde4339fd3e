"""What a mapping makes the trigger answer a partner beyond its own fields.

Probes: the test calls a partner sends to see that an endpoint is alive (Samsara's `Ping`,
`{"action": "test"}`), recognised by a condition and answered without a write.

    probe:
      when: {from: eventType, equals: Ping}
      answer: {ok: true}          # the body of the 200 answer (default {"ok": true})

The acknowledgement some partners wait for before they drop what they sent (Overland keeps
and resends a batch until an answer holds `"result": "ok"`): the mapping's `answer`, added to
every 2xx answer of a call it maps, beside the gateway's own members (which it may not name).

    answer: {result: ok}
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Final

from .conditions import Condition
from .expressions import Run
from .model import EvalError
from .paths import pointer
from .problems import suggest
from .specs import SpecCompiler

PROBE_KEYS = ("when", "answer")
DEFAULT_ANSWER: dict[str, Any] = {"ok": True}
# The members of the gateway's own answers to a call that wrote (gateway/triggers/ingest.py):
# one entity's (`pipeline.written`), one fix's (`fleet/append.py`), a batch's.
GATEWAY_ANSWER_KEYS: Final = frozenset(
    {"id", "key", "created", "changed", "events", "skipped", "also"}
    | {"vehicle", "time", "duplicate"}
    | {"results", "summary"}
    | {"status"}  # an answer given again by a replay (`triggers/replay.py`) carries it
)


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


def compile_answer(raw: Any, specs: SpecCompiler) -> dict[str, Any] | None:
    """`answer`: the members added to a 2xx answer; none of the gateway's own."""
    if not isinstance(raw, dict):
        specs.problems.add("/answer", "answer is the JSON object of members to add", "type")
        return None
    taken = sorted(GATEWAY_ANSWER_KEYS.intersection(raw))
    for key in taken:
        message = f"{key!r} is a member of the gateway's own answer"
        specs.problems.add(f"/answer{pointer(key)}", message, "reserved")
    return None if taken else raw
