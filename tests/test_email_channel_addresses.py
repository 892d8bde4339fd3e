"""An e-mail channel's `from` and `reply_to` are one address each: a list is refused (422 with
the pointer), never cut to its first address; one address, with a display name even if it
holds a comma or accents, is kept as written and sent."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.partner_double import post
from tests.smtp_double import HOST, SmtpFactory, smtp_server
from tests.support import auth

__all__ = ["smtp_server"]  # the fixture

Client = TestClient[Any, Any]


def _channel(port: int, **addresses: str) -> dict[str, Any]:
    smtp = {"host": HOST, "port": port, "security": "none"}
    return {"name": "email", "type": "email", "smtp": smtp, **addresses}


@pytest.mark.parametrize("field", ["from", "reply_to"])
@pytest.mark.parametrize(
    "addresses",
    [
        "Frota <alertas@acme.com.br>, evil@x.com",
        "alertas@acme.com.br; evil@x.com",
        "Frota <alertas@acme.com.br> evil@x.com",
    ],
)
async def test_a_from_or_reply_to_naming_two_addresses_is_refused(
    client: Client, smtp_server: SmtpFactory, field: str, addresses: str
) -> None:
    """The second address used to be dropped without a word (201)."""
    smtp = await smtp_server()
    body = _channel(smtp.port, **{"from": "alertas@acme.com.br", field: addresses})
    response = await client.post("/api/v1/channels", json=body, headers=auth())
    assert response.status == 422, await response.text()
    assert response.content_type == "application/problem+json"
    (problem,) = (await response.json())["errors"]
    assert problem["pointer"] == f"/{field}"
    assert "one address" in problem["message"]
    created = await post(
        client, "/api/v1/channels", _channel(smtp.port, **{"from": "a@acme.com.br"})
    )
    patched = await client.patch(
        f"/api/v1/channels/{created['id']}", json={field: addresses}, headers=auth()
    )
    assert patched.status == 422
    assert (await patched.json())["errors"][0]["pointer"] == f"/{field}"


@pytest.mark.parametrize("field", ["from", "reply_to"])
@pytest.mark.parametrize(
    "written",
    [
        "=?x-unknown?q?abc?= <alertas@acme.com.br>",  # a charset nobody knows
        "=?utf-8?b?/w==?= <alertas@acme.com.br>",  # bytes that are not UTF-8
        "=?utf-8?q?a=0D=0Ab?= <alertas@acme.com.br>",  # a line break, once decoded
    ],
)
async def test_an_encoded_display_name_that_does_not_decode_is_refused(
    client: Client, smtp_server: SmtpFactory, field: str, written: str
) -> None:
    """A 422 at the field, not a 500."""
    smtp = await smtp_server()
    body = _channel(smtp.port, **{"from": "alertas@acme.com.br", field: written})
    response = await client.post("/api/v1/channels", json=body, headers=auth())
    assert response.status == 422, await response.text()
    (problem,) = (await response.json())["errors"]
    assert problem["pointer"] == f"/{field}" and problem["keyword"] == "format"


async def test_one_address_with_a_comma_in_its_display_name_is_kept_whole(
    client: Client, smtp_server: SmtpFactory
) -> None:
    smtp = await smtp_server()
    sender = '"Frota, Acme" <alertas@acme.com.br>'
    await post(
        client, "/api/v1/channels", _channel(smtp.port, **{"from": sender, "reply_to": sender})
    )
    result = await post(client, "/api/v1/channels/email/test", {"to": "ana@x.com"}, status=200)
    assert result["result"] == "success", result
    (mail,) = smtp.received
    assert mail.message["From"] == sender and mail.message["Reply-To"] == sender


async def test_a_display_name_with_accents_is_kept_as_written_and_encoded_in_the_message(
    client: Client, smtp_server: SmtpFactory
) -> None:
    """`from` and `reply_to` were answered as RFC 2047 encoded-words
    (`=?utf-8?q?Gest=C3=A3o_de_Frota?= <…>`), on the API and in the admin UI's form; one
    stored so by that version reads back as written."""
    smtp = await smtp_server()
    sender, reply_to = "Gestão de Frota <alertas@acme.com.br>", "Coordenação <frota@acme.com.br>"
    addresses = {"from": sender, "reply_to": reply_to}
    created = await post(client, "/api/v1/channels", _channel(smtp.port, **addresses))
    assert (created["from"], created["reply_to"]) == (sender, reply_to)
    encoded = {"reply_to": "=?utf-8?b?Q29vcmRlbmHDp8Ojbw==?= <frota@acme.com.br>"}
    patched = await client.patch("/api/v1/channels/email", json=encoded, headers=auth())
    assert (await patched.json())["reply_to"] == reply_to
    result = await post(client, "/api/v1/channels/email/test", {"to": "ana@x.com"}, status=200)
    assert result["result"] == "success", result
    (mail,) = smtp.received
    assert mail.message["From"].addresses[0].display_name == "Gestão de Frota"
    assert mail.message["Reply-To"] == reply_to
    assert mail.sender == "alertas@acme.com.br"
