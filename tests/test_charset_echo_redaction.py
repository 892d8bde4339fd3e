"""A partner secret sent in a body written in another charset than UTF-8 (a mapping's
`charset=ISO-8859-1`: `s3nhã-Ç-2026` goes out as `s3nh%E3-%C7-2026` in a form, as the bytes
`s3nh\\xe3-\\xc7-2026` in JSON) is masked when the partner quotes the request back, in every
form the echo gives those bytes back: percent-encoded in either case, or read as UTF-8 with
U+FFFD for the bytes that are not; and, whatever the request's charset, read back by a
partner's server in another one (a UTF-8 request echoed by a Latin-1 server under its own
label: `s3nhÃ£-Ã\\x87-2026`; answered in unlabelled Latin-1 JSON; a windows-1252 `€` read as
Latin-1's U+0080). Nowhere shown: the proxy's 502 detail, the delivery's `last_error`, its
attempt's stored response. Every case goes to a partner double over HTTP."""

from __future__ import annotations

import base64
import json
import unicodedata
from typing import Any

import pytest

from gateway.outbound.redaction import _MOST_TEXTS, MASK, Redactor, _base64_forms, _forms
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
    # A request in UTF-8 is masked in its Latin-1 bytes too: a Latin-1 server may answer in them.
    utf8 = Redactor.of(("Sença-2026-xyz",))
    assert utf8.redact("Sen%E7a-2026-xyz", cut=False) == MASK


# A partner's server in another charset than the request's: its bytes read back in another.
UTF8_SECRET_READINGS = (
    SECRET.encode().decode("latin-1"),  # a UTF-8 request echoed under `charset=ISO-8859-1`
    SECRET.encode().decode("cp1252"),  # ... under `charset=windows-1252`
    SECRET.encode("latin-1").decode("utf-8", "replace"),  # answered in unlabelled Latin-1
    SECRET.encode("latin-1").decode("utf-8", "surrogateescape"),  # its bytes kept
    "s3nh%E3-%C7-2026",  # a Latin-1 app's percent-encoding, either case
    "s3nh%e3-%c7-2026",
    "s3nh%C3%83%C2%A3-%C3%83%C2%87-2026",  # the mojibake percent-encoded in UTF-8
    base64.b64encode(SECRET.encode("latin-1")).decode(),  # the Latin-1 bytes in base64
    base64.b64encode(SECRET.encode()).decode(),
    SECRET,
)


def test_a_utf8_requests_secret_is_masked_in_every_charset_a_partner_reads_it_back_in() -> None:
    redactor = Redactor.of((SECRET,))
    for echo in UTF8_SECRET_READINGS:
        assert redactor.redact(f"erro: {echo}.", cut=False) == f"erro: {MASK}.", echo


def test_a_windows_1252_secret_read_back_as_latin1_is_masked() -> None:
    secret = "€uro-senha-9"
    for codec in (None, "cp1252"):
        redactor = Redactor.of((secret,), codec)
        for echo in (
            secret.encode("cp1252").decode("latin-1"),  # `€` as U+0080
            secret.encode("cp1252").decode("utf-8", "replace"),
            "%80uro-senha-9",
            secret.encode().decode("cp1252"),  # its UTF-8 as windows-1252 reads it
            secret.encode().decode("latin-1"),
        ):
            assert redactor.redact(f"[{echo}]", cut=False) == f"[{MASK}]", (codec, echo)


def test_an_ascii_secret_has_the_forms_it_had() -> None:
    plain, base64_forms, _ = _forms("Zr9/Qx+Lm2/Pk7w=")
    assert plain == {"Zr9/Qx+Lm2/Pk7w="}
    assert base64_forms == frozenset(_base64_forms(b"Zr9/Qx+Lm2/Pk7w=")) - plain
    assert _forms("Zr9/Qx+Lm2/Pk7w=", "iso8859-1") == _forms("Zr9/Qx+Lm2/Pk7w=")


UTF8 = "application/json"
# (request Content-Type, the partner's answer as (Content-Type, bytes)): a server in Latin-1
# or windows-1252 quoting the request.
ECHOES = {
    "utf8_echoed_under_latin1_label": (
        UTF8,
        "text/plain; charset=ISO-8859-1",
        b"requisicao invalida: SENHA=" + SECRET.encode(),
    ),
    "utf8_answered_in_unlabelled_latin1_json": (
        UTF8,
        "application/json",
        ('{"erro": "senha invalida: ' + SECRET + '"}').encode("latin-1"),
    ),
    "utf8_percent_encoded_in_latin1": (
        UTF8,
        "text/plain",
        b"redirect: /login?senha=s3nh%E3-%C7-2026&next=%2F",
    ),
    "utf8_echoed_under_windows_1252_label": (
        UTF8,
        "text/plain; charset=windows-1252",
        b"requisicao invalida: SENHA=" + SECRET.encode(),
    ),
    "windows_1252_read_as_latin1": (
        "application/json; charset=windows-1252",
        "text/plain; charset=ISO-8859-1",
        b"invalid: SENHA=" + "s3nh€-ã-2026".encode("cp1252"),
    ),
}


@pytest.mark.parametrize("case", ECHOES)
async def test_a_proxy_502_masks_the_secret_read_back_in_the_partners_charset(
    client: Client, partner: Partner, case: str
) -> None:
    request_type, answer_type, answer = ECHOES[case]
    secret = "s3nh€-ã-2026" if case.startswith("windows") else SECRET
    name = "erp-" + case.replace("_", "-")
    await upload_mapping(client, _mapping(name, request_type))
    erp = await create_partner(
        client, partner.url, auth={"type": "none"}, secrets={"erp_senha": secret}
    )
    proxy = await create_action(client, erp["id"], request_mapping=name, mode="proxy")
    partner.respond_with(400, raw=answer, headers={"Content-Type": answer_type})
    status, text = await _invoke(client, proxy)
    assert status == 502, text
    assert MASK in text and not any(part in text for part in TELLING), text
    (sent,) = partner.requests
    assert secret.encode(_charset(request_type)) in sent.body, sent.body


def _charset(content_type: str) -> str:
    return content_type.split("charset=")[1] if "charset=" in content_type else "utf-8"


async def test_a_delivery_answered_with_a_utf8_requests_mojibake_keeps_no_secret(
    client: Client, partner: Partner
) -> None:
    await upload_mapping(client, _mapping("erp-utf8", UTF8))
    erp = await create_partner(
        client, partner.url, auth={"type": "none"}, secrets={"erp_senha": SECRET}
    )
    action = await create_action(client, erp["id"], request_mapping="erp-utf8")
    await create_subscription(client, action["id"], ("entity.created",))
    # A Latin-1 server echoes the UTF-8 bytes under its own label: `s3nhÃ£-Ã\x87-2026`.
    echoed = b'invalid: {"OBS":"x","SENHA":"' + SECRET.encode() + b'"}'
    partner.respond_with(
        422, raw=echoed, headers={"Content-Type": "text/plain; charset=ISO-8859-1"}
    )
    await create_vehicle(client, "ABC1D23", attributes={"obs": "x"})
    services = client.app[services_key]
    await services.relay.run_until_idle()
    await services.delivery_worker.run_until_idle()
    response = await client.get("/api/v1/deliveries", headers=auth())
    (delivery,) = (await response.json())["items"]
    assert delivery["last_status"] == 422
    assert MASK in delivery["last_error"], delivery
    response = await client.get(f"/api/v1/deliveries/{delivery['id']}", headers=auth())
    record = await response.json()
    assert MASK in record["attempts"][0]["response"], record
    text = await response.text()
    assert not any(part in text for part in TELLING), text


# An ASCII secret of a request whose body is written in a charset that does not write ASCII
# as ASCII (a mapping's `charset=UTF-16LE` for a .NET/SOAP partner, IBM037 for a mainframe):
# the partner quoting the request unlabelled gives its bytes read as UTF-8 or Latin-1.
ASCII_SECRET = "Zr9Qx-Lm2Pk7w-4411"


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "cp037", "cp500"])
def test_an_ascii_secret_of_a_request_in_utf16_or_ebcdic_is_masked_in_its_echo(
    codec: str,
) -> None:
    redactor = Redactor.of((ASCII_SECRET,), codec)
    body = ('{"OBS":"x","SENHA":"' + ASCII_SECRET + '"}').encode(codec)
    for reading in ("utf-8", "iso8859-1"):
        echo = "recebido: " + body.decode(reading, "replace")
        assert MASK in redactor.redact(echo, cut=False), (codec, reading)
    encoded = base64.b64encode(body).decode()  # the request echoed in base64
    assert MASK in redactor.redact(f"recebido: {encoded}", cut=False), codec
    # A request in an ASCII-compatible charset: nothing more to look for.
    assert _forms(ASCII_SECRET, "iso8859-1") == _forms(ASCII_SECRET)


async def test_a_delivery_of_a_utf16_request_masks_its_ascii_secret_echoed_unlabelled(
    client: Client, partner: Partner
) -> None:
    """The partner's error page quotes the UTF-16LE request as it came, unlabelled: read as
    UTF-8, the secret stands between NULs. `last_error` and the attempt's response show it
    masked (they showed it since the mojibake change: its ASCII value had no forms)."""
    await upload_mapping(client, _mapping("erp-w", "application/json; charset=UTF-16LE"))
    erp = await create_partner(
        client, partner.url, auth={"type": "none"}, secrets={"erp_senha": ASCII_SECRET}
    )
    action = await create_action(client, erp["id"], request_mapping="erp-w")
    await create_subscription(client, action["id"], ("entity.created",))
    echoed = b"invalid: " + ('{"OBS":"x","SENHA":"' + ASCII_SECRET + '"}').encode("utf-16-le")
    partner.respond_with(422, raw=echoed, headers={"Content-Type": "text/plain"})
    await create_vehicle(client, "ABC1D23", attributes={"obs": "x"})
    services = client.app[services_key]
    await services.relay.run_until_idle()
    await services.delivery_worker.run_until_idle()
    assert ASCII_SECRET.encode("utf-16-le") in partner.requests[-1].body
    response = await client.get("/api/v1/deliveries", headers=auth())
    (delivery,) = (await response.json())["items"]
    assert delivery["last_status"] == 422, delivery
    assert MASK in delivery["last_error"], delivery
    response = await client.get(f"/api/v1/deliveries/{delivery['id']}", headers=auth())
    record = await response.json()
    assert MASK in record["attempts"][0]["response"], record
    shown = (await response.text()).replace("\\u0000", "")
    assert ASCII_SECRET not in shown, shown


ONE_HOP = SECRET.encode().decode("latin-1")  # `s3nhÃ£-Ã\x87-2026`
# Echoes of a non-ASCII secret changed twice, or written as bytes.
CHANGED_ECHOES = {
    # decomposed (Java's Normalizer, macOS, an accent-insensitive store): `a` + U+0303
    "nfd": unicodedata.normalize("NFD", SECRET),
    # the mojibake read back once more (a Latin-1 servlet storing through a latin1 connection)
    "mojibake_twice_latin1": ONE_HOP.encode().decode("latin-1"),
    "mojibake_twice_windows_1252": SECRET.encode().decode("cp1252").encode().decode("cp1252"),
    # the mojibake as a Latin-1-reading server writes it in UTF-8, in base64
    "mojibake_in_base64": base64.b64encode(ONE_HOP.encode()).decode(),
    "mojibake_in_url_safe_base64": base64.urlsafe_b64encode(ONE_HOP.encode()).decode(),
    # the decomposed text's mojibake
    "nfd_mojibake": unicodedata.normalize("NFD", SECRET).encode().decode("latin-1"),
    # the bytes as a string literal writes them: Python's repr of a raw body, Ruby's inspect
    "python_bytes_repr_utf8": repr(SECRET.encode())[2:-1],
    "python_bytes_repr_latin1": repr(SECRET.encode("latin-1"))[2:-1],
    "ruby_inspect_uppercase": "s3nh\\xC3\\xA3-\\xC3\\x87-2026",
    "bytes_repr_in_json": json.dumps(repr(SECRET.encode())[2:-1])[1:-1],
}


@pytest.mark.parametrize("case", CHANGED_ECHOES)
def test_a_non_ascii_secret_changed_twice_or_written_as_bytes_is_masked(case: str) -> None:
    echo = CHANGED_ECHOES[case]
    assert not any(part in echo for part in ("s3nhã", "Ç")) or case == "nfd", echo
    for codec in (None, "iso8859-1"):
        out = Redactor.of((SECRET,), codec).redact(f"erro: {echo}.", cut=False)
        assert out == f"erro: {MASK}.", (codec, out)


def test_a_python_repr_of_the_whole_body_masks_the_secret_and_keeps_the_rest() -> None:
    body = ('{"OBS":"x","SENHA":"' + SECRET + '"}').encode()
    out = Redactor.of((SECRET,)).redact(f"invalid body: {body!r}", cut=False)
    assert out == 'invalid body: b\'{"OBS":"x","SENHA":"' + MASK + "\"}'", out


def test_an_excerpt_cut_inside_a_bytes_escape_of_the_secret_masks_its_start() -> None:
    redactor = Redactor.of((SECRET,))
    for cut in ("s3nh\\xc3", "s3nh\\xc3\\xa", "s3nh\\xc3\\x", "s3nh\\"):
        out = redactor.redact(f"invalid body: b'{cut}", cut=True)
        assert "s3nh" not in out and out.endswith(MASK), (cut, out)


def test_a_secrets_forms_are_bounded() -> None:
    """Two changes at most, and at most `_MOST_TEXTS` texts (their `+` forms aside) however
    many letters a value has that each charset writes otherwise."""
    for value in (SECRET, "ãéíõüçÃÉÍÕÜÇ€ŠŽšžŸ-senha", "s3nh€-ã-2026" * 100):
        plain, b64, _ = _forms(value)
        assert len(plain) <= 2 * _MOST_TEXTS + 2 and len(b64) < 20 * _MOST_TEXTS, value


@pytest.mark.parametrize("case", ["nfd", "mojibake_twice_latin1", "python_bytes_repr_utf8"])
async def test_a_proxy_502_masks_the_secret_changed_twice_or_written_as_bytes(
    client: Client, partner: Partner, case: str
) -> None:
    name = "erp-" + case.replace("_", "-")
    await upload_mapping(client, _mapping(name, UTF8))
    erp = await create_partner(
        client, partner.url, auth={"type": "none"}, secrets={"erp_senha": SECRET}
    )
    proxy = await create_action(client, erp["id"], request_mapping=name, mode="proxy")
    partner.respond_with(400, {"erro": f"requisicao invalida: SENHA={CHANGED_ECHOES[case]}"})
    status, text = await _invoke(client, proxy)
    assert status == 502, text
    assert MASK in text and not any(part in text for part in TELLING), text
