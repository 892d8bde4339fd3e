"""The ops surface and the request edge, through HTTP against the running app."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support import auth

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[1]


async def test_healthz_answers_without_the_database(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json()) == {"status": "ok"}


async def test_readyz_pings_the_database(client: Client) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["database"] == "ok"


async def test_request_id_is_echoed_when_given_and_generated_otherwise(client: Client) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"
    generated = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith tabs"})
    assert len(generated.headers["X-Request-ID"]) == 32


async def test_unknown_route_is_a_problem_document(client: Client) -> None:
    response = await client.get("/nope")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["status"] == 404 and body["title"] and body["instance"] == "/nope"


async def test_metrics_count_requests_by_route_template(client: Client) -> None:
    await client.get("/api/v1/entities/vehicle", headers=auth())
    response = await client.get("/metrics")
    text = await response.text()
    assert response.status == 200
    assert (
        'gateway_http_requests_total{method="GET",route="/api/v1/entities/{type}",'
        'status_class="2xx"} 1.0'
    ) in text
    assert "gateway_http_request_duration_seconds_bucket" in text
    assert 'gateway_build_info{event_loop="asyncio",version="0.1.0"} 1.0' in text


async def test_a_method_a_route_does_not_take_is_counted_under_that_route(
    client: Client,
) -> None:
    """A 405 reached a route (its path has one): its count names the route's template, not
    `unmatched`, which is for paths no route has."""
    assert (await client.put("/api/v1/triggers", headers=auth())).status == 405
    assert (await client.delete("/healthz")).status == 405
    assert (await client.delete("/api/v1/entities/vehicle/ABC1D23/drivers")).status == 405
    assert (await client.get("/no/such/route")).status == 404
    text = await (await client.get("/metrics")).text()
    for method, route in (
        ("PUT", "/api/v1/triggers"),
        ("DELETE", "/healthz"),
        ("DELETE", "/api/v1/entities/vehicle/{ref}/drivers"),
        ("GET", "unmatched"),
    ):
        labels = f'method="{method}",route="{route}",status_class="4xx"'
        line = f"gateway_http_requests_total{{{labels}}} 1.0"
        assert line in text, (line, [t for t in text.splitlines() if "requests_total{" in t])


async def test_body_over_the_limit_is_413(client: Client) -> None:
    big = b'{"plate": "' + b"A" * (300 * 1024) + b'"}'
    response = await client.post(
        "/api/v1/entities/vehicle", data=big, headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status == 413
    assert response.content_type == "application/problem+json"


async def test_readyz_reports_running_workers(aiohttp_client: Any, make_app: Any) -> None:
    client = await aiohttp_client(make_app(run_workers=True))
    body = await (await client.get("/readyz")).json()
    assert body == {"status": "ready", "database": "ok", "workers": "running"}


async def test_database_down_is_503_with_retry_after(aiohttp_client: Any, settings: Any) -> None:
    from dataclasses import replace

    from gateway.app import create_app

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"mongodb://127.0.0.1:{sock.getsockname()[1]}/"
    app = create_app(replace(settings, db_timeout_ms=300), mongodb_uri=dead)
    client = await aiohttp_client(app)
    response = await client.get("/readyz")
    assert response.status == 503
    assert response.headers["Retry-After"] and response.content_type == "application/problem+json"


async def test_readiness_polled_while_the_database_is_down_says_why_once(
    aiohttp_client: Any, settings: Any
) -> None:
    """Each /readyz refused from the known state reported that refusal as a new failure,
    whose reason held the previous one: the reason nested one level deeper per poll."""
    from dataclasses import replace

    from gateway.app import create_app

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"mongodb://127.0.0.1:{sock.getsockname()[1]}/"
    client = await aiohttp_client(
        create_app(replace(settings, db_timeout_ms=300), mongodb_uri=dead)
    )
    for _ in range(5):
        response = await client.get("/readyz")
        assert response.status == 503
        detail = (await response.json())["detail"]
        assert detail.count("unavailable") == 1 + detail.startswith("the database is"), detail


async def test_grafana_dashboard_only_queries_metrics_the_gateway_exports(client: Client) -> None:
    def base(name: str) -> str:
        return re.sub(r"_(total|bucket|sum|count)$", "", name)

    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    text = await (await client.get("/metrics")).text()
    exported = {base(name) for name in re.findall(r"^# TYPE (\w+)", text, re.M)}
    queried = {
        base(name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bgateway_\w+", target["expr"])
    }
    assert queried and queried <= exported, queried - exported


async def test_a_body_sent_too_slowly_is_408(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.web import requests

    monkeypatch.setattr(requests, "BODY_TIMEOUT_SECONDS", 0.2)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    token = auth()["Authorization"]
    writer.write(
        b"POST /api/v1/entities/vehicle HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\nAuthorization: " + token.encode() + b'\r\n\r\n{"plate": '
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    await writer.wait_closed()
    assert status_line.split()[1] == b"408"


async def test_metrics_can_require_a_token(aiohttp_client: Any, make_app: Any) -> None:
    from gateway.config import Secret

    client = await aiohttp_client(make_app(metrics_token=Secret("scrape-me")))
    assert (await client.get("/metrics")).status == 401
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    ok = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert ok.status == 200 and "gateway_build_info" in await ok.text()


async def test_a_metrics_token_that_is_no_utf_8_is_refused_not_a_500(
    aiohttp_client: Any, make_app: Any
) -> None:
    """A header's bytes that are no UTF-8 come as surrogates, which encoding it raised on."""
    from gateway.config import Secret

    client = await aiohttp_client(make_app(metrics_token=Secret("scrape-me")))
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n")
    writer.write(b"Connection: close\r\n\r\n")
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    assert status_line.split()[1] == b"401", status_line


async def test_wrong_metrics_tokens_count_in_the_client_s_budget_of_refused_calls(
    aiohttp_client: Any, make_app: Any, services: Any
) -> None:
    """Guesses of GATEWAY_METRICS_TOKEN (an operator's text, any length) were never limited:
    over a thousand a second from one client, each a 401. They count per client, in one
    budget with junk admin tokens (`GATEWAY_ADMIN_RATE_LIMIT` a second, bursts of twice
    that), on `gateway serve` and on `gateway worker`'s listener; the right token is never
    refused for a stranger's guesses."""
    from dataclasses import replace

    from gateway.config import Secret
    from gateway.web.worker_listener import create_worker_app

    limited = {"metrics_token": Secret("scrape-me"), "admin_rate_limit": 2}
    client = await aiohttp_client(make_app(**limited))

    async def scrape(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return (await client.get("/metrics", headers=headers)).status

    guesses = [await scrape(f"guess-{n}") for n in range(8)]
    assert guesses[:4] == [401] * 4 and guesses[-1] == 429, guesses
    refused = await client.get("/metrics", headers={"Authorization": "Bearer guess"})
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "over the admin limit" in (await refused.json())["detail"]
    assert await scrape("scrape-me") == 200
    # One budget with junk admin tokens: spent by the ones, it refuses the others.
    other = await aiohttp_client(make_app(**limited))
    junk = {"Authorization": "Bearer junk"}
    assert [(await other.get("/api/v1/triggers", headers=junk)).status for _ in "abcd"] == [401] * 4
    assert (await other.get("/metrics", headers={"Authorization": "Bearer guess"})).status == 429

    worker_services = replace(services, settings=replace(services.settings, **limited))
    worker = await aiohttp_client(create_worker_app(worker_services))
    headers = {"Authorization": "Bearer guess"}
    statuses = [(await worker.get("/metrics", headers=headers)).status for _ in range(8)]
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    scraped = await worker.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert scraped.status == 200


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


async def test_readiness_probed_while_the_database_is_down_logs_one_line_not_two_per_probe(
    aiohttp_client: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Each refused /readyz logged two WARNING lines (`request failed: ...`, then `request`):
    a probe every second filled the log with them. The change to not ready is logged once."""
    from dataclasses import replace

    from gateway.app import create_app

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"mongodb://127.0.0.1:{sock.getsockname()[1]}/"
    client = await aiohttp_client(
        create_app(replace(settings, db_timeout_ms=300), mongodb_uri=dead)
    )
    caplog.clear()
    for _ in range(5):
        assert (await client.get("/readyz")).status == 503
    said = [m for m in _warnings(caplog) if "request" in m or "ready" in m]
    assert len(said) == 1 and said[0].startswith("not ready: "), said


async def test_every_5xx_while_the_database_is_down_says_why_before_its_access_line(
    aiohttp_client: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/operations.md "Logs": a 5xx's access line comes after a `request failed: <detail>`
    line. Once the database was known down, the 503s answered at once (no attempt) logged the
    access line alone: during an outage, no line said why."""
    from dataclasses import replace

    from gateway.app import create_app

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"mongodb://127.0.0.1:{sock.getsockname()[1]}/"
    client = await aiohttp_client(
        create_app(replace(settings, db_timeout_ms=300), mongodb_uri=dead)
    )
    caplog.set_level(logging.INFO)
    caplog.clear()
    for _ in range(3):
        assert (await client.get("/api/v1/partners", headers=auth())).status == 503
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.access"]
    assert [said.split(":")[0] for said in lines] == ["request failed", "request"] * 3, lines
    assert all("database" in said for said in lines[::2]), lines


async def test_readiness_logs_when_it_changes_and_only_then(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.web.state import services_key

    store = client.app[services_key].store
    caplog.set_level(logging.INFO, logger="gateway.web.health")
    caplog.clear()
    assert (await client.get("/readyz")).status == 200
    store.indexes_missing = "an index was refused"
    for _ in range(3):
        assert (await client.get("/readyz")).status == 503
    store.indexes_missing = None
    for _ in range(3):
        assert (await client.get("/readyz")).status == 200
    said = [r.getMessage() for r in caplog.records if r.name == "gateway.web.health"]
    assert len(said) == 2, said
    assert said[0].startswith("not ready: the database's indexes") and said[1] == "ready again"
    assert not [m for m in _warnings(caplog) if m.startswith("request")]
