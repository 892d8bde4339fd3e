"""Found by the third security round (attacks the earlier rounds did not try); one test per
finding, each refused or answered as documented, never a 500."""

from __future__ import annotations

import time
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.outbound.sender import OutboundRequest, Sender
from gateway.outbound.ssrf import OutboundPolicy
from tests.partner_double import Partner, create_partner, partner, post
from tests.support import auth
from tests.triggers_support import bearer, create_trigger, upload_mapping

Client = TestClient[Any, Any]
__all__ = ["partner"]  # the fixture


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


_FRAMING = {"Host": "169.254.169.254", "Content-Length": "0", "Transfer-Encoding": "chunked"}


async def test_a_mapping_cannot_set_the_headers_that_frame_or_route_the_request(
    client: Client,
) -> None:
    """An outbound mapping's `Content-Length: 0` and `Transfer-Encoding: chunked` reached the
    wire beside the real body (request smuggling on a connection shared by every tenant's
    calls to that host), and `Host` chose another virtual host: refused, each by name."""
    headers = "".join(f'  {name}: {{value: "{value}"}}\n' for name, value in _FRAMING.items())
    text = f"name: framed\ndirection: outbound\nheaders:\n{headers}  X-Ok: {{value: a}}\n"
    upload = await client.post(
        "/api/v1/mappings",
        data=text.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert upload.status == 422, await upload.text()
    pointers = sorted(e["pointer"] for e in (await upload.json())["errors"])
    assert pointers == ["/headers/Content-Length", "/headers/Host", "/headers/Transfer-Encoding"]
    assert (await (await client.get("/api/v1/mappings", headers=auth())).json())["items"] == []


async def test_a_partners_header_credential_cannot_be_a_framing_header(client: Client) -> None:
    for name in ("Transfer-Encoding", "content-length", "Host", "Connection"):
        response = await client.post(
            "/api/v1/partners",
            json={
                "name": "erp",
                "base_url": "http://127.0.0.1:9",
                "auth": {"type": "header", "name": name, "value": "chunked"},
            },
            headers=auth(),
        )
        assert response.status == 422, (name, await response.text())
        assert (await response.json())["errors"][0]["pointer"] == "/auth/name"


async def test_a_schedules_cursor_cannot_go_in_a_framing_header(client: Client) -> None:
    partner = await create_partner(client, "http://127.0.0.1:9")
    reader = await post(
        client,
        "/api/v1/actions",
        {
            "name": "read",
            "partner_id": partner["id"],
            "method": "GET",
            "path": "/feed",
            "mode": "proxy",
            "read_only": True,
        },
    )
    await upload_mapping(
        client,
        "name: feed\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "fields: {plate: placa}\n",
    )
    response = await client.post(
        "/api/v1/schedules",
        json={
            "name": "poll",
            "action_id": reader["id"],
            "every": "1h",
            "cursor": {"from": "next", "param": "header.Content-Length"},
            "target": {"entity_type": "vehicle", "mapping": "feed"},
        },
        headers=auth(),
    )
    assert response.status == 422, await response.text()
    assert (await response.json())["errors"][0]["pointer"] == "/cursor/param"


async def test_the_sender_never_writes_a_framing_header_it_is_given(partner: Partner) -> None:
    """Whatever was stored before these were refused: nothing reaches the partner."""
    async with Sender(OutboundPolicy.from_entries(["127.0.0.1"])) as sender:
        for name, value in _FRAMING.items():
            outcome = await sender.send(
                OutboundRequest("POST", partner.url + "/x", headers={name: value}, body=b"{}"),
                partner_id="p",
            )
            assert (outcome.error, outcome.status) == ("blocked", None), name
            assert name in (outcome.message or "")
    assert partner.requests == []


async def test_a_partner_cannot_filter_by_a_field_its_trigger_does_not_expose(
    client: Client,
) -> None:
    """A trigger exposing only `plate` still answered `?group=diretoria` and `?status=...`
    with the vehicles that matched: the hidden group and status of each vehicle, one guess
    at a time. A filter on a field outside `expose` is a 400 naming it; the natural key and
    exposed fields still filter."""
    for plate, group in (("ABC1D23", "diretoria"), ("XYZ9K87", "campo")):
        await post(client, "/api/v1/entities/vehicle", {"plate": plate, "group": group})
    trigger = await create_trigger(client, expose=["plate", "status"])
    url = f"/hooks/{trigger['id']}"
    hidden = await client.get(url, params={"group": "diretoria"}, headers=bearer(trigger))
    assert hidden.status == 400, await hidden.text()
    assert "group" in (await hidden.json())["detail"]
    by_key = await client.get(url, params={"plate": "ABC1D23"}, headers=bearer(trigger))
    assert [v["plate"] for v in (await by_key.json())["items"]] == ["ABC1D23"]
    exposed = await client.get(url, params={"status": "active"}, headers=bearer(trigger))
    assert exposed.status == 200, await exposed.text()
    everything = await create_trigger(client, name="all")
    unrestricted = await client.get(
        f"/hooks/{everything['id']}", params={"group": "campo"}, headers=bearer(everything)
    )
    assert [v["plate"] for v in (await unrestricted.json())["items"]] == ["XYZ9K87"]


async def test_no_answer_may_be_sniffed_as_a_page(client: Client) -> None:
    """Problems echo the caller's path (`"instance": "/x<script>..."`); only the admin UI's
    pages said `nosniff`, so an old or lax browser could read an API answer as HTML."""
    trigger = await create_trigger(client)
    for path, headers in (
        ("/nowhere<script>alert(1)</script>", {}),
        ("/api/v1/triggers", auth()),
        ("/api/v1/triggers?x=<script>", auth()),
        (f"/hooks/{trigger['id']}", bearer(trigger)),
        ("/hooks/x<b>", {}),
        ("/openapi.json", {}),
        ("/docs", {}),
        ("/healthz", {}),
    ):
        response = await client.get(path, headers=headers)
        assert response.headers.get("X-Content-Type-Options") == "nosniff", path


async def test_an_empty_expose_list_exposes_the_id_alone(client: Client) -> None:
    """`"expose": []` was read like no `expose` at all: every field of every entity went to a
    partner whose admin had asked for none of them."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "renavam": "00639884962"})
    trigger = await create_trigger(client, expose=[])
    one = await client.get(f"/hooks/{trigger['id']}/ABC1D23", headers=bearer(trigger))
    assert one.status == 200, await one.text()
    assert list(await one.json()) == ["id"]
    page = await client.get(f"/hooks/{trigger['id']}", headers=bearer(trigger))
    assert [list(item) for item in (await page.json())["items"]] == [["id"]]


def _amplifying(name: str, field_spec: str, fields: int) -> str:
    lines = "\n".join(f"  attributes.f{i}: '{field_spec}'" for i in range(fields))
    return (
        f"name: {name}\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        f"fields:\n  plate: placa\n{lines}\n"
    )


async def test_a_mapping_cannot_multiply_a_payload_into_gigabytes(client: Client) -> None:
    """A 200 KB payload and a mapping naming it 150 times per field (`{k0: @, k1: @, ...}`),
    20 fields, mapped to 600 MB: a viewer's dry run took 13 s and 1.7 GB, a partner's POST
    12 s before the database refused the document. What one item maps to is bounded (about
    1 MiB written as JSON): a 422 naming the limit, at once; copying the payload once is fine."""
    payload = {"placa": "ABC1D23", "pad": "x" * 200_000}
    multi = "{" + ",".join(f"k{i}:@" for i in range(150)) + "}"
    for name, spec, fields in (("multi", multi, 20), ("many", "@", 60)):
        started = time.process_time()  # the CPU spent mapping: load does not stretch it
        response = await client.post(
            "/api/v1/mappings/test",
            json={"mapping": _amplifying(name, spec, fields), "payload": payload},
            headers=auth(role="viewer"),
        )
        assert response.status == 422, (name, (await response.text())[:300])
        problem = await response.json()
        assert problem["errors"][0]["keyword"] == "limit", problem
        assert "1,048,576" in problem["errors"][0]["message"], problem
        assert time.process_time() - started < 5
    await upload_mapping(client, _amplifying("raw", "@", 1))
    trigger = await create_trigger(client, mapping="raw")
    response = await client.post(f"/hooks/{trigger['id']}", json=payload, headers=bearer(trigger))
    assert response.status == 201, (await response.text())[:300]
