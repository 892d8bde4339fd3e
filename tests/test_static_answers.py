"""The admin UI's static files: counted and logged with the status actually sent, and a
missing one is the UI's 404 page (not an empty download setting a cookie)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.triggers_support import Client

ROUTE = 'route="/admin/static"'


async def _static_counts(client: Client) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    return {
        line.split("status_class=")[1].split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_http_requests_total{") and ROUTE in line
    }


async def _counted(client: Client, wanted: dict[str, float]) -> dict[str, float]:
    """The static route's counts once they reach `wanted` (counted just after the answer)."""
    deadline = asyncio.get_running_loop().time() + 5
    while (counts := await _static_counts(client)) != wanted:
        if asyncio.get_running_loop().time() > deadline:
            return counts
        await asyncio.sleep(0.01)
    return counts


async def test_a_static_files_404_304_and_416_are_counted_and_logged_as_sent(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[tuple[str, dict[str, str]]] = [
        ("/admin/static/nothere.css", {}),
        ("/admin/static/ui.css", {"If-Modified-Since": "Sat, 05 Dec 2099 00:00:00 GMT"}),
        ("/admin/static/ui.css", {"Range": "bytes=99999999-"}),
        ("/admin/static/ui.css", {}),
    ]
    sent: list[int] = []
    with caplog.at_level(logging.DEBUG, logger="gateway.access"):
        for path, headers in asked:
            response = await client.get(path, headers=headers)
            await response.read()
            sent.append(response.status)
        counted = await _counted(client, {"2xx": 1, "3xx": 1, "4xx": 2})
    assert sent == [404, 304, 416, 200]
    assert counted == {"2xx": 1, "3xx": 1, "4xx": 2}
    logged = [
        r.__dict__["status"]
        for r in caplog.records
        if r.getMessage() == "request" and r.__dict__.get("route") == "/admin/static"
    ]
    assert logged == [404, 304, 416, 200]


async def test_a_missing_static_file_is_the_ui_s_404_page_without_a_cookie(
    client: Client,
) -> None:
    missing = await client.get("/admin/static/nothere.css")
    assert missing.status == 404
    assert missing.content_type == "text/html"
    assert "<html" in await missing.text()
    assert "Set-Cookie" not in missing.headers
    assert missing.headers["X-Content-Type-Options"] == "nosniff"
    found = await client.get("/admin/static/ui.css")
    assert found.status == 200 and found.content_type == "text/css"
    assert "Set-Cookie" not in found.headers  # an asset a cache may keep carries no cookie


async def test_a_static_path_with_a_nul_is_the_ui_s_404_not_a_500(client: Client) -> None:
    for path in ("/admin/static/a%00b.css", "/admin/static/ui.css%00"):
        missing = await client.get(path)
        assert missing.status == 404, (path, await missing.text())
