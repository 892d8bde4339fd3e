"""Problem documents echo the input they refuse (an unknown key, a bad value) cut short: a
20,000-character key came back three times (pointer, message, detail)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.errors import clipped
from tests.support import auth

Client = TestClient[Any, Any]
KEY = "k" * 20_000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/entities/vehicle", {"plate": "ABC1D23", KEY: 1}),
        ("/api/v1/entities/vehicle", {"plate": KEY}),
        (
            "/api/v1/partners",
            {"name": "x", "base_url": "https://erp.example", "auth": {"type": KEY}},
        ),
        ("/api/v1/subscriptions", {KEY: 1}),
        ("/api/v1/schedules", {KEY: 1}),
        ("/api/v1/triggers", {KEY: 1}),
        (f"/api/v1/entities/{'v' * 3000}", {"plate": "ABC1D23"}),
    ],
)
async def test_a_huge_key_or_value_is_echoed_cut_short(
    client: Client, path: str, body: Any
) -> None:
    response = await client.post(path, json=body, headers=auth())
    problem = await response.json()

    assert response.status in (404, 422), problem
    assert len(await response.read()) < 4_000  # was 20,000-60,000
    texts = [problem["detail"]]
    for error in problem.get("errors", []):
        texts += [error["pointer"], error["message"]]
    assert any("…" in text for text in texts)  # the echo is there, marked as cut
    assert all(len(text) <= 1_025 for text in texts)


async def test_an_unknown_key_still_names_where_it_is(client: Client) -> None:
    response = await client.post(
        "/api/v1/entities/vehicle", json={"plate": "ABC1D23", KEY: 1}, headers=auth()
    )
    [error] = (await response.json())["errors"]
    assert error["pointer"] == "/" + "k" * 63 + "…"  # the first 64 characters
    assert error["keyword"] == "additionalProperties"


def test_clipped_keeps_ordinary_texts_and_cuts_runs_and_length() -> None:
    ordinary = "base_url must be an absolute http(s) URL; /steps/0/then/2/actions/1: unknown"
    assert clipped(ordinary) == ordinary
    assert clipped(f"unknown field '{'x' * 200}' here") == f"unknown field '{'x' * 63}… here"
    spaced = "word " * 1000
    assert clipped(spaced) == spaced[:1024] + "…"
