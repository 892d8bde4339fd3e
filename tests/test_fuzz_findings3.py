"""Found by the third security round (attacks the earlier rounds did not try); one test per
finding, each refused or answered as documented, never a 500."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.partner_double import create_partner
from tests.support import auth

Client = TestClient[Any, Any]


def _draft(text: str) -> dict[str, Any]:
    return {
        "name": "t",
        "channel_type": "email",
        "default_locale": "pt-BR",
        "locales": {"pt-BR": {"subject": "s", "text": text}},
    }


async def test_a_template_jinja_itself_refuses_is_a_failed_render_not_a_500(
    client: Client,
) -> None:
    """`cycler()` without items raised RuntimeError and `truncate(-1)` AssertionError inside
    Jinja: neither was a render failure, so preview and upload answered 500."""
    for text in ("{{ cycler().next() }}", "{{ 'abc'|truncate(-1) }}"):
        preview = await client.post(
            "/api/v1/templates/preview",
            json={"template": _draft(text), "context": {}},
            headers=auth(role="viewer"),
        )
        assert preview.status == 422, (text, await preview.text())
        assert (await preview.json())["errors"][0]["pointer"] == "/locales/pt-BR/text"
        upload = await client.post(
            "/api/v1/templates", json={**_draft(text), "sample": {}}, headers=auth()
        )
        assert upload.status == 422, (text, await upload.text())
    assert (await (await client.get("/api/v1/templates", headers=auth())).json())["items"] == []


async def test_a_template_that_prints_a_surrogate_renders_text_utf8_can_carry(
    client: Client,
) -> None:
    """`{{ '\\ud800' }}` rendered a lone surrogate that no answer, e-mail or XML body can
    encode (a 500 on preview); a pair written as two escapes is the one character it names."""
    response = await client.post(
        "/api/v1/templates/preview",
        json={"template": _draft("a{{ '\\ud800' }}b {{ '\\ud83d\\ude9a' }}"), "context": {}},
        headers=auth(role="viewer"),
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["parts"]["text"] == "a\ufffdb \U0001f69a"


async def test_an_xml_body_jinja_itself_refuses_fails_the_call_naming_the_template(
    client: Client,
) -> None:
    """The same errors in an action's XML body were a 500 on every invoke (and a worker
    exception on every delivery): they are the template's failure, a 422 naming it."""
    partner = await create_partner(client, "http://127.0.0.1:9")
    for n, template in enumerate(("<a>{{ cycler().next() }}</a>", "<a>{{ 'a'|truncate(-1) }}</a>")):
        created = await client.post(
            "/api/v1/actions",
            json={
                "name": f"soap{n}",
                "partner_id": partner["id"],
                "method": "POST",
                "path": "/ws",
                "mode": "proxy",
                "xml_body": {"template": template},
            },
            headers=auth(),
        )
        assert created.status == 201, await created.text()
        action = await created.json()
        invoked = await client.post(
            f"/api/v1/actions/{action['id']}/invoke", json={"payload": {}}, headers=auth()
        )
        assert invoked.status == 422, (template, await invoked.text())
        assert (await invoked.json())["errors"][0]["pointer"] == "/xml_body/template"
