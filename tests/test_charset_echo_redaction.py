"""A partner secret sent in a body written in another charset than UTF-8 (a mapping's
`charset=ISO-8859-1`: `s3nhã-Ç-2026` goes out as `s3nh%E3-%C7-2026` in a form, as the bytes
`s3nh\\xe3-\\xc7-2026` in JSON) is masked when the partner quotes the request back, in every
form the echo gives those bytes back: percent-encoded in either case, or read as UTF-8 with
U+FFFD for the bytes that are not. Nowhere shown: the proxy's 502 detail, the delivery's
`last_error`, its attempt's stored response. Every case goes to a partner double over HTTP."""

from __future__ import annotations

from typing import Any

from gateway.outbound.redaction import MASK, Redactor
from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
    upload_mapping,
)
from tests.support import auth
from tests.triggers_support import Client

__all__ = ["partner"]  # the fixture

SECRET = "s3nhã-Ç-2026"
FORM = "application/x-www-form-urlencoded; charset=ISO-8859-1"
# What of the secret must never be shown, whatever the echo made of its two Latin-1 letters.
TELLING = ("s3nh", "-2026")


def _mapping(name: str, content_type: str) -> str:
    return (
        f"name: {name}\ndirection: outbound\n"
        f'headers:\n  Content-Type: {{value: "{content_type}"}}\n'
        "body:\n  OBS: obs\n  SENHA: {secret: erp_senha}\n"
    )


async def _erp(client: Client, partner: Partner, content_type: str, **action: Any) -> dict:
    name = "erp-" + content_type.split(";")[0].split("/")[1].split("-")[-1]
    await upload_mapping(client, _mapping(name, content_type))
    erp = await create_partner(
        client, partner.url, auth={"type": "none"}, secrets={"erp_senha": SECRET}
    )
    return await create_action(client, erp["id"], request_mapping=name, **action)


async def _invoke(client: Client, proxy: dict) -> tuple[int, str]:
    response = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke", headers=auth(), json={"payload": {"obs": "x"}}
    )
    return response.status, await response.text()


async def test_a_proxy_502_quoting_a_latin1_form_masks_its_percent_encoded_secret(
    client: Client, partner: Partner
) -> None:
    proxy = await _erp(client, partner, FORM, mode="proxy")
    for quoted in ("SENHA=s3nh%E3-%C7-2026", "SENHA=s3nh%e3-%c7-2026"):
        partner.respond_with(400, {"erro": f"requisição inválida: OBS=x&{quoted}"})
        status, text = await _invoke(client, proxy)
        assert status == 502, text
        assert MASK in text and not any(part in text for part in TELLING), text
    assert b"SENHA=s3nh%E3-%C7-2026" in partner.requests[0].body  # the charset's escapes


async def test_a_proxy_502_echoing_latin1_json_read_as_utf8_masks_the_replaced_secret(
    client: Client, partner: Partner
) -> None:
    proxy = await _erp(client, partner, "application/json; charset=ISO-8859-1", mode="proxy")
    # The partner echoes the Latin-1 bytes under its own `application/json` (UTF-8): read
    # with U+FFFD for `ã` and `Ç`.
    echoed = '{"recebido": {"OBS": "x", "SENHA": "s3nhã-Ç-2026"}}'.encode("latin-1")
    partner.respond_with(400, raw=echoed, headers={"Content-Type": "application/json"})
    status, text = await _invoke(client, proxy)
    assert status == 502, text
    assert MASK in text and not any(part in text for part in TELLING), text
    assert SECRET.encode("latin-1") in partner.requests[0].body


async def test_a_delivery_quoting_a_latin1_form_keeps_no_secret_in_last_error_or_attempt(
    client: Client, partner: Partner
) -> None:
    action = await _erp(client, partner, FORM)
    await create_subscription(client, action["id"], ("entity.created",))
    # A plain-text answer with the escapes, then the raw Latin-1 bytes (not UTF-8, no charset).
    partner.respond_with(
        422, raw=b"invalid: OBS=x&SENHA=s3nh%E3-%C7-2026", headers={"Content-Type": "text/plain"}
    )
    await create_vehicle(client, "ABC1D23", attributes={"obs": "x"})
    services = client.app[services_key]
    await services.relay.run_until_idle()
    await services.delivery_worker.run_until_idle()
    raw = b"invalid: SENHA=" + SECRET.encode("latin-1")
    partner.respond_with(422, raw=raw, headers={"Content-Type": "text/plain"})
    await create_vehicle(client, "DEF2G34", attributes={"obs": "x"})
    await services.relay.run_until_idle()
    await services.delivery_worker.run_until_idle()
    assert len(partner.requests) == 2
    response = await client.get("/api/v1/deliveries", headers=auth())
    deliveries = (await response.json())["items"]
    assert len(deliveries) == 2
    for delivery in deliveries:
        response = await client.get(f"/api/v1/deliveries/{delivery['id']}", headers=auth())
        text = await response.text()
        assert MASK in text and not any(part in text for part in TELLING), text


def test_a_redactor_of_a_latin1_request_masks_every_reading_of_the_secrets_bytes() -> None:
    redactor = Redactor.of(("Sença-2026-xyz",), "iso8859-1")
    for echo in (
        "senha=Sen%E7a-2026-xyz",  # percent-encoded, either case
        "senha=Sen%e7a-2026-xyz",
        "senha=Sen\ufffda-2026-xyz",  # its bytes read as UTF-8, leniently
        "senha=Sen\udce7a-2026-xyz",  # kept as `surrogateescape`
        "senha=Sença-2026-xyz",  # read in the charset
        "senha=Sen%C3%A7a-2026-xyz",  # and as it would be in UTF-8
    ):
        assert redactor.redact(echo, cut=False) == f"senha={MASK}", echo
    # A request in UTF-8 carried no Latin-1 bytes: its redactor looks for none.
    utf8 = Redactor.of(("Sença-2026-xyz",))
    assert utf8.redact("Sen%E7a-2026-xyz", cut=False) == "Sen%E7a-2026-xyz"
