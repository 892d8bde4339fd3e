"""A local SMTP server (aiosmtpd) for e-mail tests: plain, STARTTLS or implicit TLS with a
self-signed certificate made for the test, optional AUTH, recipients it refuses; it keeps
every message it accepted, parsed."""

from __future__ import annotations

import asyncio
import base64
import datetime
import email
import email.policy
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage
    tls: bool
    login: str | None
    raw: bytes = b""  # the message as the server received it
    helo: str | None = None  # the name the client gave in EHLO (or HELO)

    def raw_headers(self) -> str:
        """The header block as it went over the wire (folded lines and all)."""
        return self.raw.partition(b"\r\n\r\n")[0].decode("ascii")

    def part(self, subtype: str) -> str:
        found = self.message.get_body(preferencelist=(subtype,))
        assert found is not None, f"no text/{subtype} part"
        content: str = found.get_content()  # type: ignore[attr-defined]
        return content


@dataclass
class Certificate:
    cert_pem: bytes
    key_pem: bytes

    def server_context(self, tmp: Any) -> ssl.SSLContext:
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context

    @property
    def pem(self) -> str:
        return self.cert_pem.decode()


def self_signed(host: str = HOST) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Certificate(cert.public_bytes(serialization.Encoding.PEM), key_pem)


@dataclass
class SmtpDouble:
    port: int = 0
    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # recipient → reply
    logins: dict[str, str] = field(default_factory=dict)  # username → password
    # A refused AUTH quotes what it got (a debug server, a chatty relay): decoded, as AUTH
    # PLAIN's base64 and as AUTH LOGIN's base64 of the password.
    quote_auth: bool = False
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    # Seconds the reply to the end of DATA waits, one per message in turn (then at once), the
    # message kept as received meanwhile: a relay's content filter or virus scan.
    data_delays: list[float] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login.decode() if session.auth_data else None
        async with self.arrived:
            self.received.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    message,
                    server.transport is not None
                    and server.transport.get_extra_info("ssl_object") is not None,
                    login,
                    envelope.content,
                    session.host_name,
                )
            )
            self.arrived.notify_all()
        if self.data_delays:
            await asyncio.sleep(self.data_delays.pop(0))
        return "250 Message accepted"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.logins.get(data.login.decode()) == (
            data.password.decode()
        )
        if not ok and self.quote_auth and isinstance(data, LoginPassword):
            plain = base64.b64encode(b"\0" + data.login + b"\0" + data.password).decode()
            login = base64.b64encode(data.password).decode()
            said = f"{data.login.decode()} {data.password.decode()}; {plain}; {login}"
            message = f"535 5.7.8 Authentication failed for [{said}]"
            return AuthResult(success=False, handled=False, message=message)
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


SmtpFactory = Callable[..., Awaitable[SmtpDouble]]


@pytest.fixture
async def smtp_server(tmp_path: Any) -> AsyncIterator[SmtpFactory]:
    """`await smtp_server(mode="plain"|"starttls"|"tls", logins={...}, cert=..., quote_auth=)`."""
    servers: list[asyncio.Server] = []

    async def start(
        mode: str = "plain",
        logins: dict[str, str] | None = None,
        cert: Certificate | None = None,
        quote_auth: bool = False,
    ) -> SmtpDouble:
        double = SmtpDouble(logins=dict(logins or {}), quote_auth=quote_auth)
        context = (cert or self_signed()).server_context(tmp_path) if mode != "plain" else None
        loop = asyncio.get_running_loop()

        def protocol() -> SMTP:
            return SMTP(
                double,
                hostname="smtp.test",
                tls_context=context if mode == "starttls" else None,
                require_starttls=mode == "starttls",
                authenticator=double.authenticate if logins else None,
                auth_required=bool(logins) and mode == "starttls",
                auth_require_tls=mode == "starttls",
                loop=loop,
            )

        server = await loop.create_server(protocol, HOST, 0, ssl=context if mode == "tls" else None)
        servers.append(server)
        double.port = server.sockets[0].getsockname()[1]
        return double

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
