"""E-mail goes out over SMTP as the channel says: plain, STARTTLS or implicit TLS, with AUTH,
text and HTML parts, From and Reply-To; every refusal is an outcome, never an exception."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gc
import os
import socket
import warnings
from typing import Any

import pytest

from gateway.leased_loop import LeaseLost
from gateway.notify.email import EmailSender, helo_name
from gateway.notify.messages import EmailMessage, EmailSettings
from gateway.outbound.ssrf import OutboundPolicy
from gateway.outbound.verdict import Verdict
from tests.smtp_double import HOST, SmtpDouble, SmtpFactory, self_signed, smtp_server

__all__ = ["smtp_server"]  # the fixture

ALLOW = OutboundPolicy.from_entries([HOST])
MESSAGE = EmailMessage(
    to=("ana.souza@example.com",),
    subject="Multa A123456789 - ABC1D23",
    text="Olá Ana, multa de R$ 130,16.",
    html="<p>Olá <b>Ana</b></p>",
    message_id="<n-1@rabbot.test>",
)


def _settings(double: SmtpDouble, **overrides: object) -> EmailSettings:
    base: dict[str, object] = {
        "host": HOST,
        "port": double.port,
        "security": "none",
        "sender": "Frota Acme <alertas@acme.com.br>",
        "reply_to": "frota@acme.com.br",
        "timeout": 5.0,
    }
    return EmailSettings(**{**base, **overrides})  # type: ignore[arg-type]


async def test_a_message_arrives_with_text_html_from_and_reply_to(smtp_server: SmtpFactory) -> None:
    double = await smtp_server("plain")
    outcome = await EmailSender(ALLOW).send(_settings(double), MESSAGE)
    assert outcome.verdict is Verdict.SUCCESS, outcome.detail
    (got,) = double.received
    assert got.sender == "alertas@acme.com.br" and got.recipients == ["ana.souza@example.com"]
    assert got.message["From"] == "Frota Acme <alertas@acme.com.br>"
    assert got.message["Reply-To"] == "frota@acme.com.br"
    assert got.message["Subject"] == "Multa A123456789 - ABC1D23"
    assert got.message["Message-ID"] == "<n-1@rabbot.test>"
    assert got.part("plain").strip() == "Olá Ana, multa de R$ 130,16."
    assert got.part("html").strip() == "<p>Olá <b>Ana</b></p>"
    assert outcome.provider_id == "<n-1@rabbot.test>"


async def test_a_lease_lost_before_the_smtp_session_sends_nothing(
    smtp_server: SmtpFactory,
) -> None:
    """`before_sending` (a delivery worker's lease check) is awaited once the server is
    connected, before the SMTP session: what it raises passes, and no message goes out."""
    double = await smtp_server("plain")
    asked: list[str] = []

    async def lost() -> None:
        asked.append("lost")
        raise LeaseLost("n-1")

    with pytest.raises(LeaseLost):
        await EmailSender(ALLOW).send(_settings(double), MESSAGE, before_sending=lost)
    assert asked == ["lost"] and double.received == []

    async def ours() -> None:
        asked.append("ours")

    outcome = await EmailSender(ALLOW).send(_settings(double), MESSAGE, before_sending=ours)
    assert outcome.verdict is Verdict.SUCCESS, outcome.detail
    assert asked == ["lost", "ours"] and len(double.received) == 1


async def test_starttls_with_auth(smtp_server: SmtpFactory) -> None:
    cert = self_signed()
    double = await smtp_server("starttls", logins={"frota": "s3nha"}, cert=cert)
    settings = _settings(
        double, security="starttls", username="frota", password="s3nha", ca_certificate=cert.pem
    )
    outcome = await EmailSender(ALLOW).send(settings, MESSAGE)
    assert outcome.verdict is Verdict.SUCCESS, outcome.detail
    assert double.received[0].tls and double.received[0].login == "frota"


async def test_implicit_tls_with_auth(smtp_server: SmtpFactory) -> None:
    cert = self_signed()
    double = await smtp_server("tls", logins={"frota": "s3nha"}, cert=cert)
    settings = _settings(
        double, security="tls", username="frota", password="s3nha", ca_certificate=cert.pem
    )
    outcome = await EmailSender(ALLOW).send(settings, MESSAGE)
    assert outcome.verdict is Verdict.SUCCESS, outcome.detail
    assert double.received[0].tls and double.received[0].login == "frota"


async def test_a_wrong_password_fails_without_retry(smtp_server: SmtpFactory) -> None:
    cert = self_signed()
    double = await smtp_server("starttls", logins={"frota": "s3nha"}, cert=cert)
    settings = _settings(
        double, security="starttls", username="frota", password="wrong", ca_certificate=cert.pem
    )
    outcome = await EmailSender(ALLOW).send(settings, MESSAGE)
    assert outcome.verdict is Verdict.FAIL and outcome.code == 535
    assert "authentication failed" in outcome.detail and "wrong" not in outcome.detail
    assert double.received == []


async def test_an_untrusted_certificate_fails(smtp_server: SmtpFactory) -> None:
    double = await smtp_server("tls")
    outcome = await EmailSender(ALLOW).send(_settings(double, security="tls"), MESSAGE)
    assert outcome.verdict is Verdict.FAIL and "certificate" in outcome.detail.lower()


async def test_starttls_required_but_not_offered_fails(smtp_server: SmtpFactory) -> None:
    double = await smtp_server("plain")
    outcome = await EmailSender(ALLOW).send(_settings(double, security="starttls"), MESSAGE)
    assert outcome.verdict is Verdict.FAIL and "STARTTLS" in outcome.detail


async def test_a_refused_recipient_fails_and_a_busy_one_retries(smtp_server: SmtpFactory) -> None:
    double = await smtp_server("plain")
    double.refuse["ana.souza@example.com"] = "550 5.1.1 no such user"
    refused = await EmailSender(ALLOW).send(_settings(double), MESSAGE)
    assert refused.verdict is Verdict.FAIL and refused.code == 550
    assert "no such user" in refused.detail
    double.refuse["ana.souza@example.com"] = "452 4.2.2 mailbox full"
    busy = await EmailSender(ALLOW).send(_settings(double), MESSAGE)
    assert busy.verdict is Verdict.RETRY and busy.code == 452


async def test_an_unreachable_server_is_retried(smtp_server: SmtpFactory) -> None:
    double = await smtp_server("plain")
    settings = _settings(double, port=1)
    outcome = await EmailSender(ALLOW).send(settings, MESSAGE)
    assert outcome.verdict is Verdict.RETRY


async def test_servers_on_private_addresses_are_refused_unless_allowed(
    smtp_server: SmtpFactory,
) -> None:
    double = await smtp_server("plain")
    outcome = await EmailSender(OutboundPolicy.from_entries([])).send(_settings(double), MESSAGE)
    assert outcome.verdict is Verdict.FAIL and "127.0.0.1" in outcome.detail
    assert double.received == []


async def test_header_injection_is_refused(smtp_server: SmtpFactory) -> None:
    double = await smtp_server("plain")
    bad = EmailMessage(to=("a@b.c",), subject="x\r\nBcc: evil@x.y", text="t")
    outcome = await EmailSender(ALLOW).send(_settings(double), bad)
    assert outcome.verdict is Verdict.FAIL and double.received == []


@pytest.mark.parametrize(
    "printed",
    [
        "=?utf-8?q?Av=2E_Paulista=0D=0AReply-To:_pagamentos@golpe.example?=",
        "=?utf-8?q?=0D=0A=0D=0AMulta_com_desconto:_pague_em_https://golpe.example/pix?=",
        "Av.=?utf-8?b?DQpCY2M6IGV2aWxAeC55?=Paulista",
    ],
)
async def test_an_encoded_word_in_a_subject_arrives_as_the_text_printed(
    smtp_server: SmtpFactory, printed: str
) -> None:
    """Partner text a subject prints may look like an RFC 2047 encoded word hiding CR LF: the
    email package decoded it when the header was set and wrote the line break raw (a Reply-To,
    or a body, of the partner's choosing). The reader now gets the text as rendered."""
    double = await smtp_server("plain")
    subject = f"Novo veículo ABC1D23 {printed}"
    sent = EmailMessage(to=("frota@acme.com.br",), subject=subject, text="t", html="<p>t</p>")
    outcome = await EmailSender(ALLOW).send(_settings(double), sent)
    assert outcome.verdict is Verdict.SUCCESS, outcome.detail
    (got,) = double.received
    assert got.message["Subject"] == subject
    assert got.message.get_all("Reply-To") == ["frota@acme.com.br"]
    assert got.message.get_all("Bcc") is None
    assert got.message.is_multipart() and got.part("html").strip() == "<p>t</p>"
    assert "golpe" not in got.part("plain")


async def test_a_line_break_in_a_subject_with_an_encoded_word_is_refused(
    smtp_server: SmtpFactory,
) -> None:
    double = await smtp_server("plain")
    bad = EmailMessage(to=("a@b.c",), subject="=?utf-8?q?x?=\r\nBcc: evil@x.y", text="t")
    outcome = await EmailSender(ALLOW).send(_settings(double), bad)
    assert outcome.verdict is Verdict.FAIL and double.received == []


async def test_a_send_cancelled_while_connecting_leaves_no_socket_open() -> None:
    """A send cancelled while its socket connects (a shutdown's deadline, a flow step's):
    the socket was closed only on a connect error or timeout, so the cancelled one was left
    to the garbage collector, a ResourceWarning ("unclosed <socket ...>", no peer) in
    whichever test it came by, failing it. The server here is a listener whose queue is
    full (backlog 0, one connection waiting): a connect to it stays under way."""
    with socket.socket() as full, socket.socket() as waiting:
        full.bind((HOST, 0))
        full.listen(0)
        waiting.connect(full.getsockname())
        settings = EmailSettings(
            host=HOST, port=full.getsockname()[1], security="none", sender="a@acme.com.br"
        )
        before = _sockets()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sender = EmailSender(ALLOW)
            sending = asyncio.create_task(sender.send(settings, MESSAGE))
            async with asyncio.timeout(5):
                while not _sockets() - before:  # its socket opened: it connects
                    await asyncio.sleep(0)
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
            del sending
            gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def _sockets() -> set[str]:
    """This process's open sockets."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if (target := os.readlink(f"/proc/self/fd/{fd}")).startswith("socket:"):
                found.add(target)
    return found


LONG_SUBJECTS = [
    "Manutenção do veículo ABC1D23 vencida em 152.340 km — agende a revisão no fornecedor "
    "São João Peças",
    "Multa A123456789 — excesso de velocidade na Rodovia dos Bandeirantes, km 45, São Paulo "
    "— condutor João Conceição",
    ("Aviso: ação necessária " * 8).strip(),
    "Veículo " + "ação " * 40 + "fim",
]


@pytest.mark.parametrize("subject", LONG_SUBJECTS)
async def test_a_long_accented_subject_arrives_as_written(
    smtp_server: SmtpFactory, subject: str
) -> None:
    """'fornecedor São João Peças' arrived 'fornecedor SãoJoão Peças': the email package
    folded the header between two RFC 2047 encoded words with the space outside them, and a
    reader drops whitespace between adjacent encoded words (RFC 2047 §6.2)."""
    double = await smtp_server("plain")
    sent = EmailMessage(("ana@example.com",), subject, "Olá", None, "<n-1@rabbot.test>")
    outcome = await EmailSender(ALLOW).send(_settings(double), sent)
    assert outcome.verdict is Verdict.SUCCESS, outcome.detail
    (got,) = double.received
    assert got.message["Subject"] == subject
    assert all(len(line) <= 78 for line in got.raw_headers().splitlines())


@pytest.mark.parametrize(
    ("sender", "to"),
    [
        (
            '"Gestão de Frota — Transportadora São João Ltda, Filial Ribeirão Preto" '
            "<alertas@acme.com.br>",
            "Conceição Aparecida dos Santos Magalhães Guimarães São João <ana@example.com>",
        ),
        ("Frota São João <alertas@acme.com.br>", "João <ana@example.com>"),
        (
            '"=?utf-8?q?=0D=0ABcc:_evil@x.y?= Frota" <alertas@acme.com.br>',
            '"Ana =?utf-8?b?DQpCY2M6IGV2aWxAeC55?= Souza" <ana@example.com>',
        ),
    ],
)
async def test_accented_display_names_arrive_as_written(
    smtp_server: SmtpFactory, sender: str, to: str
) -> None:
    """'Transportadora São João Ltda' arrived 'São Jo ão Ltda' and 'Guimarães' 'Guimar ães': a
    space inside a word, where the email package folded a long encoded display name."""
    double = await smtp_server("plain")
    settings = _settings(double, sender=sender, reply_to=sender)
    sent = EmailMessage((to,), "x", "Olá", None, "<n-2@rabbot.test>")
    outcome = await EmailSender(ALLOW).send(settings, sent)
    assert outcome.verdict is Verdict.SUCCESS, outcome.detail
    (got,) = double.received
    assert got.recipients == ["ana@example.com"] and got.message.get_all("Bcc") is None
    for header, written in (("From", sender), ("Reply-To", sender), ("To", to)):
        (address,) = got.message[header].addresses
        name, spec = email.utils.parseaddr(written)
        assert (address.display_name, address.addr_spec) == (name, spec), header
    assert all(len(line) <= 78 for line in got.raw_headers().splitlines())


async def test_a_relay_that_scans_the_message_before_answering_gets_it_once(
    smtp_server: SmtpFactory,
) -> None:
    """The end of DATA is answered after the relay has scanned the message (an antivirus, a
    spam filter): past every other command's timeout, within the DATA reply's own (RFC 5321
    §4.5.3.2.6: 10 minutes). Before, the send timed out and the retry sent a second copy."""
    double = await smtp_server("plain")
    double.data_delays = [2.5]
    outcome = await EmailSender(ALLOW).send(_settings(double, timeout=1.0), MESSAGE)
    assert outcome.verdict is Verdict.SUCCESS, outcome.detail
    assert len(double.received) == 1 and not outcome.unknown


async def test_no_answer_to_the_end_of_data_is_an_unknown_outcome_retried(
    smtp_server: SmtpFactory,
) -> None:
    """The relay has the message and never answers within the DATA timeout: retried (at least
    once), and said to be unknown (the relay may have it), unlike a refusal."""
    double = await smtp_server("plain")
    double.data_delays = [3.0]
    settings = _settings(double, timeout=1.0, data_timeout=1.0)
    outcome = await EmailSender(ALLOW).send(settings, MESSAGE)
    assert outcome.verdict is Verdict.RETRY and outcome.unknown, outcome
    assert "relay may have it" in outcome.detail
    assert len(double.received) == 1
    double.refuse["ana.souza@example.com"] = "450 4.2.1 try again later"
    refused = await EmailSender(ALLOW).send(settings, MESSAGE)
    assert refused.verdict is Verdict.RETRY and not refused.unknown


async def test_ehlo_names_the_gateway_by_its_public_host_or_its_own_address(
    smtp_server: SmtpFactory,
) -> None:
    """EHLO said the machine's name (`localhost`, a container's id): relays that check HELO
    (Postfix's `reject_non_fqdn_helo_hostname`) refuse every e-mail. It says the channel's
    `helo`, else the host of the gateway's public URL, else the address literal of the
    connection's own address (RFC 5321 §4.1.4)."""
    double = await smtp_server("plain")
    await EmailSender(ALLOW).send(_settings(double), MESSAGE)
    public = EmailSender(ALLOW, helo=helo_name("https://gw.acme.com.br:8443/"))
    await public.send(_settings(double), MESSAGE)
    await public.send(_settings(double, helo="[IPv6:2001:db8::25]"), MESSAGE)
    assert [m.helo for m in double.received] == [
        "[127.0.0.1]",
        "gw.acme.com.br",
        "[IPv6:2001:db8::25]",
    ]


@pytest.mark.parametrize(
    ("public_url", "said"),
    [
        ("https://gw.acme.com.br", "gw.acme.com.br"),
        ("http://10.0.0.5:8080", "[10.0.0.5]"),
        ("http://[2001:db8::5]:8080", "[IPv6:2001:db8::5]"),
        ("https://frota.exämple.com.br", "frota.xn--exmple-cua.com.br"),
        ("http://localhost:8080", None),
        ("http://gateway:8080", None),
        (None, None),
    ],
)
def test_the_ehlo_name_of_a_public_url(public_url: str | None, said: str | None) -> None:
    assert helo_name(public_url) == said


async def _raw_relay(at_data: str) -> tuple[asyncio.AbstractServer, int, list[bytes]]:
    """A relay that at DATA closes the connection (`drop`), says nothing (`silent`), or takes
    the message, refuses it with a 554 and leaves the RSET after it unanswered (`refuse`)."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await converse(reader, writer)
        finally:
            writer.transport.abort()

    async def converse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 relay.example.com ESMTP\r\n")
        while line := await reader.readline():
            seen.append(line)
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-relay.example.com\r\n250 8BITMIME\r\n")
            elif verb in (b"MAIL", b"RCPT", b"QUIT"):
                writer.write(b"250 ok\r\n" if verb != b"QUIT" else b"221 bye\r\n")
            elif verb == b"DATA" and at_data == "refuse":
                writer.write(b"354 go ahead\r\n")
                while await reader.readline() not in (b".\r\n", b""):
                    pass
                writer.write(b"554 5.7.1 rejected: spam\r\n")
                while rest := await reader.readline():  # RSET: no answer
                    seen.append(rest)
                return
            elif verb == b"DATA":
                if at_data == "silent":
                    await asyncio.sleep(3)
                writer.close()
                return
            await writer.drain()

    server = await asyncio.start_server(handle, HOST, 0)
    return server, server.sockets[0].getsockname()[1], seen


@pytest.mark.parametrize("at_data", ["drop", "silent"])
async def test_a_relay_lost_at_the_data_command_is_a_known_failure_not_an_unknown(
    at_data: str,
) -> None:
    """The connection lost, or no 354, at the DATA command: nothing of the message left, so
    the outcome is known (not delivered, retried), not "the relay may have it" (which keeps a
    cooldown as if delivered). The 354 is awaited for the command timeout, not the DATA
    reply's 10 minutes."""
    server, port, seen = await _raw_relay(at_data)
    try:
        settings = EmailSettings(
            host=HOST, port=port, security="none", sender="a@acme.com.br",
            timeout=1.0, data_timeout=30.0,
        )  # fmt: skip
        started = asyncio.get_running_loop().time()
        outcome = await EmailSender(ALLOW).send(settings, MESSAGE)
        assert asyncio.get_running_loop().time() - started < 2.5
    finally:
        server.close()
    assert outcome.verdict is Verdict.RETRY and not outcome.unknown, outcome
    assert seen[-1].upper().startswith(b"DATA")  # the message never went out


async def test_a_refusal_of_the_message_stays_one_when_the_relay_ignores_the_rset() -> None:
    """A 554 to the message's end, then no answer to the RSET aiosmtplib sends after it: the
    554 is the outcome (failed, known), not the RSET's timeout (unknown, retried)."""
    server, port, _ = await _raw_relay("refuse")
    try:
        settings = EmailSettings(
            host=HOST, port=port, security="none", sender="a@acme.com.br",
            timeout=1.0, data_timeout=1.0,
        )  # fmt: skip
        outcome = await EmailSender(ALLOW).send(settings, MESSAGE)
    finally:
        server.close()
    assert outcome.verdict is Verdict.FAIL and not outcome.unknown, outcome
    assert "554" in outcome.detail or outcome.code == 554, outcome


async def test_a_tls_failure_after_the_message_went_out_is_an_unknown_outcome_retried(
    tmp_path: Any,
) -> None:
    """The relay (or a TLS proxy before it) breaks the TLS session while the gateway waits for
    the reply to the message's end: the relay may have the message, so the outcome is unknown
    and retried (at least once), not failed for good as a TLS setting to fix would be (which
    kept the cooldown note as delivered and never tried again)."""
    cert = self_signed()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 relay.example.com ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-relay.example.com\r\n250 8BITMIME\r\n")
            elif verb in (b"MAIL", b"RCPT"):
                writer.write(b"250 ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                while await reader.readline() not in (b".\r\n", b""):
                    pass
                raw = writer.get_extra_info("socket")
                with socket.socket(fileno=os.dup(raw.fileno())) as plain:
                    plain.send(b"\x17\x03\x03\x00\x10not a tls record")  # a broken record
                await asyncio.sleep(0.5)
                writer.transport.abort()
                return
            await writer.drain()

    server = await asyncio.start_server(handle, HOST, 0, ssl=cert.server_context(tmp_path))
    port = server.sockets[0].getsockname()[1]
    try:
        settings = EmailSettings(
            host=HOST, port=port, security="tls", sender="a@acme.com.br",
            ca_certificate=cert.pem, timeout=5.0, data_timeout=5.0,
        )  # fmt: skip
        outcome = await EmailSender(ALLOW).send(settings, MESSAGE)
    finally:
        server.close()
    assert outcome.unknown and outcome.verdict is Verdict.RETRY, outcome
