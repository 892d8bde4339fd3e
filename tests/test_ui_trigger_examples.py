"""The curl example on the page that shows a new trigger's credentials once is what the admin
hands to the partner: run as shown (bash, curl, openssl), from a directory with the payload
file it names, it is a call the trigger accepts, whatever the trigger's auth mode; a device
that cannot send headers is given the URL with its token in the query."""

from __future__ import annotations

import asyncio
import html
import re
from pathlib import Path
from typing import Any

from gateway.services import Services
from tests.support import auth
from tests.ui_support import Client, csrf, log_in, make_user

# Two lines: `curl -d @file` would drop the line end, and a signature covers it.
PAYLOAD = b'{"plate": "ABC1D23",\n "make": "Volvo"}\n'


async def _create(client: Client, *fields: tuple[str, str]) -> str:
    token = await csrf(client, "/admin/triggers/new")
    data = [("csrf", token), ("name", "parceiro"), ("entity_type", "vehicle")]
    data += [("methods", "POST"), ("format", "json"), *fields]
    created = await client.post("/admin/triggers", data=data)
    page = await created.text()
    assert created.status == 201, page
    return page


def _shown(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page, re.S)
    assert found is not None, f"no #{element_id} on the page"
    return html.unescape(found[1])


async def _run(client: Client, example: str, directory: Path) -> str:
    """The example run by bash on this test's server (its URL is on the gateway's public
    base), curl told to print the answer's status last."""
    example = re.sub(r"https?://[^\s']*?/hooks/", str(client.make_url("/hooks/")), example)
    (directory / "payload.json").write_bytes(PAYLOAD)
    script = f"set -euo pipefail\n{example} -sS -w '\\n%{{http_code}}'"
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=directory,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, (err.decode(), example)
    return out.decode()


async def _plates(client: Client) -> list[Any]:
    listed = await (await client.get("/api/v1/entities/vehicle", headers=auth())).json()
    return [item["plate"] for item in listed["items"]]


async def test_a_standard_webhooks_triggers_curl_example_signs_the_call_it_shows(
    client: Client, services: Services, tmp_path: Path
) -> None:
    await make_user(services)
    await log_in(client)
    page = await _create(client, ("auth.mode", "webhook_signature"))
    example = _shown(page, "trigger-curl")
    assert "Authorization" not in example and "webhook-signature: v1," in example
    assert _shown(page, "trigger-secret") in example  # the secret shown, keyed as is
    answer = await _run(client, example, tmp_path)
    assert answer.endswith("\n201"), answer
    assert await _plates(client) == ["ABC1D23"]


async def test_a_token_in_query_trigger_shows_the_devices_url_and_a_call_without_headers(
    client: Client, services: Services, tmp_path: Path
) -> None:
    await make_user(services)
    await log_in(client)
    page = await _create(client, ("auth.token_in_query", "token"))
    token = _shown(page, "trigger-token").strip()
    url = _shown(page, "trigger-url")
    assert _shown(page, "trigger-device-url") == f"{url}?token={token}"
    example = _shown(page, "trigger-curl")
    assert "Authorization" not in example and f"?token={token}" in example
    answer = await _run(client, example, tmp_path)
    assert answer.endswith("\n201"), answer


async def test_a_token_triggers_curl_example_sends_the_token_in_its_header(
    client: Client, services: Services, tmp_path: Path
) -> None:
    await make_user(services)
    await log_in(client)
    page = await _create(client)
    token = _shown(page, "trigger-token").strip()
    example = _shown(page, "trigger-curl")
    assert f"Authorization: Bearer {token}" in example and "trigger-device-url" not in page
    answer = await _run(client, example, tmp_path)
    assert answer.endswith("\n201"), answer
