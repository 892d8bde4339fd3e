"""docs/partners.md: every `gateway mapping test` it shows gives the output it shows, every
signature example verifies, and how long it says a signed copy is refused is the code's."""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from gateway.auth.partner_hmac import scheme_from, verify
from gateway.mapping import test_file
from gateway.store.signature_memory import RETENTION_SECONDS

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "partners.md").read_text()
_BLOCK = re.compile(r"```(\w+)(?: (\w+))?\n(.*?)```", re.S)
BLOCKS = [(language, info, body) for language, info, body in _BLOCK.findall(DOC)]


def _dry_runs() -> list[tuple[str, Any]]:
    """(the command, the result block after it)."""
    pairs = []
    for (language, info, body), after in itertools.pairwise(BLOCKS):
        if (language, info) == ("sh", "test"):
            assert after[:2] == ("json", "result"), body
            pairs.append((body.strip(), json.loads(after[2])))
    return pairs


def _run(command: str) -> dict[str, Any]:
    words = shlex.split(command)
    assert words[:3] == ["gateway", "mapping", "test"], command
    args = words[3:]
    response = "--response" in args
    params = {}
    while "--param" in args:
        at = args.index("--param")
        name, _, value = args[at + 1].partition("=")
        params[name] = value
        del args[at : at + 2]
    file, sample = [a for a in args if a != "--response"]
    return test_file(ROOT / file, ROOT / sample, response=response, params=params)


def test_the_page_has_an_example_per_partner_kind() -> None:
    assert len(_dry_runs()) >= 6
    assert sum(1 for language, info, _ in BLOCKS if (language, info) == ("json", "signature")) == 9


@pytest.mark.parametrize(("command", "expected"), _dry_runs())
def test_dry_runs_answer_as_shown(
    command: str, expected: dict[str, Any] | list[dict[str, Any]]
) -> None:
    """A result block that is an object shows the first item's result; a list shows every
    item's, in order."""
    output = _run(command)
    if output["direction"] == "outbound":
        assert output["response"] == expected
        return
    shown = expected if isinstance(expected, list) else [expected]
    results = output["results"] if isinstance(expected, list) else output["results"][:1]
    assert len(results) == len(shown)
    for result, wanted in zip(results, shown, strict=True):
        assert {key: result[key] for key in wanted} == wanted


@pytest.mark.parametrize(
    "example",
    [
        json.loads(body)
        for language, info, body in BLOCKS
        if (language, info) == ("json", "signature")
    ],
)
def test_signature_examples_verify(example: dict[str, Any]) -> None:
    scheme = scheme_from(example.get("scheme") or {"preset": example["preset"]})
    body = example["body"].encode()
    now = example.get("now", 1_795_685_112)
    query = example.get("query")  # what a scheme signing query parameters reads
    assert verify(scheme, [example["secret"]], example["headers"], body, now=now, query=query)


def test_how_long_a_copy_of_a_message_signed_without_timestamp_is_refused_is_the_code_s() -> None:
    """Fleetio signs without a timestamp: the page said a captured request "is only
    recognised as a copy for 24 h", while the gateway remembers its key 30 days and answers
    a copy `401` `replayed` (store/signature_memory.py): an operator read that replays pass
    after a day, and could not explain a redelivery's 401 two days later."""
    section = DOC.split("## Verifying a partner's signature", 1)[1].split("\n## ", 1)[0]
    said = re.findall(r"cop(?:y|ies)[^.]*?\b(\d+) (h|days)\b", section)
    assert said, "the page says how long a copy is refused"
    unit = {"h": 3600, "days": 86400}
    assert {int(n) * unit[u] for n, u in said} == {RETENTION_SECONDS}, said
