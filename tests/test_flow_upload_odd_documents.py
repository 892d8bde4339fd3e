"""Odd flow documents are refused, never a crash: every shipped flow (flows/*.yaml), and the
same started by every event (`*`, which the self-trigger rule reads), mutated one node at a
time (a value replaced by a null, a list, a map, a number, a string, an unknown member or a
list of them; an unknown member added to every map; each member removed) and uploaded through
`POST /api/v1/flows`: each answer is a 201 or a 422 problem, none a 500."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path as Path_
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.mapping.loader import parse_document
from gateway.mapping.problems import Problems
from tests.flow_support import FLOWS
from tests.support import auth

Client = TestClient[Any, Any]
ODD: list[Any] = [None, [], {}, 1, "x", True, {"zz": 1}, [{"zz": 1}], [1], {"origin": [1]}]

Path = tuple[str | int, ...]


def _nodes(node: Any, at: Path = ()) -> Iterator[tuple[Path, Any]]:
    yield at, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _nodes(value, (*at, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nodes(value, (*at, i))


def _changed(doc: Any, at: Path, change: Any) -> Any:
    out = copy.deepcopy(doc)
    if not at:
        return change(out)
    parent = out
    for part in at[:-1]:
        parent = parent[part]
    parent[at[-1]] = change(parent[at[-1]])
    return out


def _with(key: str, value: Any) -> Any:
    return lambda node: {**node, key: value}


def _without(key: str) -> Any:
    return lambda node: {k: v for k, v in node.items() if k != key}


def mutations(doc: Any) -> Iterator[Any]:
    for at, node in list(_nodes(doc)):
        for odd in ODD:
            yield _changed(doc, at, lambda _node, odd=odd: copy.deepcopy(odd))
        if isinstance(node, dict):
            yield _changed(doc, at, _with("zz", 1))
            yield _changed(doc, at, _with("zz", [{"zz": None}]))
            for key in node:
                yield _changed(doc, at, _without(key))


def shipped(path: Path_) -> Iterator[Any]:
    doc = parse_document(path.read_text(), Problems())
    yield doc
    yield {**doc, "on": {**doc["on"], "events": ["*"]}}


@pytest.mark.parametrize("path", sorted(FLOWS.glob("*.yaml")), ids=lambda path: path.stem)
async def test_odd_flow_documents_are_refused_never_a_crash(client: Client, path: Path_) -> None:
    """One shipped flow's mutations a test (a few hundred uploads each: all of them in one
    test outlasted its minute on a loaded machine)."""
    answers: dict[int, int] = {}
    count = 0
    for doc in shipped(path):
        for odd in mutations(doc):
            count += 1
            response = await client.post(
                "/api/v1/flows",
                data=json.dumps(odd).encode(),
                headers={**auth(), "Content-Type": "application/json"},
            )
            body = await response.json()
            assert response.status in (201, 422), (response.status, body, odd)
            if response.status == 422:
                assert body["errors"], body
            answers[response.status] = answers.get(response.status, 0) + 1
    assert count > 100 and answers[422] > 100, answers


def test_every_shipped_flow_is_mutated() -> None:
    assert len(sorted(FLOWS.glob("*.yaml"))) >= 4
