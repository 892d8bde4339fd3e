"""E-mail over SMTP (aiosmtplib): STARTTLS or implicit TLS, AUTH, text and HTML parts.

The server's address passes the same SSRF policy as partner URLs: the name is resolved here,
every address is checked, and the connection goes to the checked address (no second lookup
that DNS rebinding could answer differently); TLS still verifies the certificate for the name.
Every failure becomes a `SendOutcome`: 4xx replies and network trouble are worth a retry,
5xx replies (a refused recipient, failed authentication) and TLS failures are not. What the
server said is kept without the channel's password (`_redactor`).
"""

from __future__ import annotations

import asyncio
import email.header
import email.message
import email.policy
import email.quoprimime
import email.utils
import functools
import ipaddress
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from email.headerregistry import Address
from typing import Any, Literal

import aiosmtplib
import idna
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from aiosmtplib.typing import Default, SMTPStatus

from gateway.clock import utc_timestamp
from gateway.errors import GatewayError
from gateway.notify.messages import EmailMessage, EmailSettings, SendOutcome
from gateway.outbound.redaction import Redactor
from gateway.outbound.sender import BeforeSending
from gateway.outbound.ssrf import OutboundPolicy
from gateway.outbound.verdict import Verdict

Resolve = Callable[[str, int], Awaitable[list[str]]]
_DETAIL = 500  # characters of what a send did (the server's words) that are kept


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class EmailSender:
    def __init__(
        self, policy: OutboundPolicy, *, resolve: Resolve = _resolve, helo: str | None = None
    ) -> None:
        """`helo`: the name said in EHLO for a channel that names none (`helo_name` of the
        gateway's public URL); without one, the address literal of the connection's own
        address (`[10.0.0.5]`), which RFC 5321 §4.1.4 allows a client with no name."""
        self._policy = policy
        self._resolve = resolve
        self._helo = helo

    async def send(
        self,
        settings: EmailSettings,
        message: EmailMessage,
        *,
        before_sending: BeforeSending | None = None,
    ) -> SendOutcome:
        """What one send did, in words that never hold the password: a server may quote the
        AUTH it refused (a chatty relay, a debug server) in any reply. `before_sending` is
        awaited once the server is connected, before the SMTP session: what it raises (a
        delivery's lease lost: `leased_loop.LeaseCheck`) passes, nothing sent."""
        outcome = await self._send(settings, message, before_sending)
        detail = outcome.detail
        if settings.password is not None:
            detail = _redactor(settings).redact(detail, cut=False)
        # Redacted whole, then cut: a password across the cut would keep its start.
        return replace(outcome, detail=detail[:_DETAIL])

    async def _send(
        self, settings: EmailSettings, message: EmailMessage, before_sending: BeforeSending | None
    ) -> SendOutcome:
        started = time.perf_counter()
        summary = {"to": list(message.to), "subject": message.subject, "server": settings.host}
        try:
            mime, recipients = prepare(settings, message)
        except ValueError as exc:
            return _outcome(Verdict.FAIL, f"{UNBUILDABLE}: {exc}", started, summary)
        if settings.security == "none" and settings.username and not settings.cleartext_auth:
            # A channel stored before such logins were refused (2026-12-07): never sent.
            return _outcome(Verdict.FAIL, f"not sent: {CLEARTEXT_REFUSED}", started, summary)
        try:
            sock = await self._connect(settings)
        except GatewayError as exc:  # the SSRF policy refused the server
            return _outcome(Verdict.FAIL, exc.detail, started, summary)
        except (OSError, TimeoutError, aiosmtplib.SMTPException) as exc:
            verdict, code, detail = describe_failure(exc)
            return _outcome(verdict, detail, started, summary, code=code)
        if before_sending is not None:
            try:
                await before_sending()
            except BaseException:
                sock.close()
                raise
        try:
            # Until the session is made the socket is ours; from then on it belongs to
            # aiosmtplib's transport, which closes it (closing it here too would pull it from
            # under a TLS shutdown still in progress).
            session = _Session(
                data_timeout=settings.data_timeout,
                local_hostname=settings.helo or self._helo or _own_address(sock),
                hostname=settings.host,
                sock=sock,
                port=None,
                username=settings.username,
                password=settings.password,
                use_tls=settings.security == "tls",
                start_tls=settings.security == "starttls",
                tls_context=tls_context(settings.ca_certificate),
                timeout=settings.timeout,
            )
        except ValueError as exc:  # settings aiosmtplib refused before it took the socket
            sock.close()
            return _outcome(Verdict.FAIL, f"SMTP settings: {exc}", started, summary)
        try:
            async with session:
                # the envelope: exactly these recipients, not To's
                errors, reply = await session.send_message(mime, recipients=recipients)
        except Exception as exc:  # every library failure becomes an outcome
            verdict, code, detail = describe_failure(exc)
            if session.handed_over and _unanswered(exc):
                # the relay may have it: retried (at least once), even when the connection
                # was lost to a TLS error (which before the message is a setting to fix: FAIL)
                detail = f"{UNANSWERED}: {detail}"
                return _outcome(Verdict.RETRY, detail, started, summary, code=code, unknown=True)
            return _outcome(verdict, detail, started, summary, code=code)
        detail = f"accepted: {reply.strip()}"
        if errors:
            refused = ", ".join(f"{rcpt} ({r.code})" for rcpt, r in errors.items())
            detail += f"; refused: {refused}"
        return _outcome(
            Verdict.SUCCESS, detail, started, summary, code=250, provider=mime["Message-ID"]
        )

    async def _connect(self, settings: EmailSettings) -> socket.socket:
        """A socket connected to a checked address of the server."""
        async with asyncio.timeout(settings.timeout):
            addresses = await self._resolve(settings.host, settings.port)
        if not self._policy.host_allowed(settings.host):
            for address in addresses:
                self._policy.check_address(settings.host, address)
        last: OSError | None = None
        loop = asyncio.get_running_loop()
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                async with asyncio.timeout(settings.timeout):
                    await loop.sock_connect(sock, (address, settings.port))
                return sock
            except (OSError, TimeoutError) as exc:
                sock.close()
                last = exc if isinstance(exc, OSError) else OSError(f"timed out: {exc}")
            except BaseException:  # cancelled while it connects (a deadline, a shutdown)
                sock.close()
                raise
        raise aiosmtplib.SMTPConnectError(
            f"cannot connect to {settings.host}:{settings.port}: {last or 'no address'}"
        )


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def is_helo_name(name: str) -> bool:
    """Whether `name` is what EHLO may say (RFC 5321 §4.1.1.1, §4.1.3): a fully-qualified
    domain name (two labels or more, the last not all digits: `gw.acme.com.br`), or an
    address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`). A single label (`localhost`, a
    container id) is neither, and relays checking HELO refuse it."""
    if name.startswith("[") and name.endswith("]"):
        inner = name[1:-1]
        if inner[:5].lower() == "ipv6:":
            inner = inner[5:]
            if ":" not in inner:
                return False
        elif ":" in inner:
            return False
        if "%" in inner or not inner.isascii():  # an IPv6 zone: no part of a literal
            return False
        try:
            ipaddress.ip_address(inner)
        except ValueError:
            return False
        return True
    labels = name.removesuffix(".").split(".")
    return (
        len(name) <= 253
        and len(labels) >= 2
        and all(_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()
    )


def address_literal(address: str) -> str:
    """An IP address as EHLO writes it: `[192.0.2.1]`, `[IPv6:2001:db8::1]`."""
    ip = ipaddress.ip_address(address.partition("%")[0])  # no IPv6 zone
    return f"[IPv6:{ip}]" if ip.version == 6 else f"[{ip}]"


def helo_name(public_url: str | None) -> str | None:
    """The EHLO name of a gateway served at `public_url` (GATEWAY_PUBLIC_URL): its host when
    that is a fully-qualified domain name (in ASCII), an address literal when it is an IP
    address; None for none, or a host that is neither (`localhost`)."""
    host = urllib.parse.urlsplit(public_url).hostname if public_url else None
    if not host:
        return None
    try:
        return address_literal(host)
    except ValueError:
        pass
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError:
            return None
    return host if is_helo_name(host) else None


def _own_address(sock: socket.socket) -> str | None:
    """The address literal of the connection's own end; None (aiosmtplib's default, the
    machine's name) should the socket not say."""
    try:
        return address_literal(str(sock.getsockname()[0]))
    except (OSError, ValueError, IndexError, TypeError):
        return None


class _Session(aiosmtplib.SMTP):
    """aiosmtplib's client, with the message's end given `data_timeout` rather than the
    session's timeout, and `handed_over` once the message went out. aiosmtplib's `data` sends
    the DATA command and the message under one timeout (the 354 to the command, which relays
    give at once, and the reply to the message's end, which a relay gives once it has scanned
    the message), and `send_message` passes every command the session's: so `data` is done
    here in its two steps, the command under the session's timeout, the message's end under
    `data_timeout`. Only once the 354 came and the message was written is a lost connection
    or a missing reply an unknown outcome: before, nothing of the message left.

    A definite refusal stays one: aiosmtplib resets the envelope after a refusal (RSET) and
    lets a timeout of that RSET replace the refusal; here an unanswered RSET closes the
    connection, as a lost one would, and the refusal is what is raised."""

    def __init__(self, *, data_timeout: float, **options: Any) -> None:
        super().__init__(**options)
        self.data_timeout = data_timeout
        self.handed_over = False

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,
    ) -> aiosmtplib.SMTPResponse:
        if self.protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        protocol = self.protocol
        if isinstance(message, str):
            message = message.encode("ascii")
        message = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"
        try:
            start = await protocol.execute_command(b"DATA", timeout=self.timeout)
            if start.code != SMTPStatus.start_input:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            protocol.write(message)
            self.handed_over = True
            reply = await protocol.read_response(timeout=self.data_timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()
            raise
        if reply.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return reply

    async def rset(
        self, *, timeout: float | Literal[Default.token] | None = Default.token
    ) -> aiosmtplib.SMTPResponse:
        try:
            return await super().rset(timeout=timeout)
        except aiosmtplib.SMTPTimeoutError as exc:
            self.close()
            raise aiosmtplib.SMTPServerDisconnected("no answer to RSET") from exc


UNANSWERED = "no answer after the message was handed over (the relay may have it)"


def _unanswered(exc: BaseException) -> bool:
    """A failure that leaves unknown whether the relay took the message: no reply in time,
    or the connection lost (a reply, even a refusal, is an answer)."""
    return isinstance(
        exc, aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPServerDisconnected | TimeoutError
    ) or (isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError))


def _redactor(settings: EmailSettings) -> Redactor:
    """Masks the password as sent, in base64 alone (AUTH LOGIN) and inside AUTH PLAIN's
    `\\0user\\0password` (the redactor looks for base64 forms too: redaction.py)."""
    password = settings.password or ""
    return Redactor((password, f"\0{settings.username or ''}\0{password}"))


@functools.lru_cache(maxsize=64)
def tls_context(ca_certificate: str | None) -> ssl.SSLContext:
    """The system's trusted CAs, or only the channel's own CA (a private relay's)."""
    return ssl.create_default_context(cadata=ca_certificate)


UNBUILDABLE = "cannot build the message"
CLEARTEXT_REFUSED = (
    "security none would send the SMTP password without TLS: use starttls or tls, or set "
    "cleartext_auth: true for a relay on a network you trust (loopback, a private network)"
)


def prepare(
    settings: EmailSettings, message: EmailMessage
) -> tuple[email.message.EmailMessage, list[str]]:
    """The MIME message a send sends and the envelope's recipients (`mailbox`); ValueError for
    a message that cannot be built (a recipient that is not one address, a header with a line
    break). The flows' dry run shows what it builds (`flows/dry_run.py`)."""
    recipients = [mailbox(to) for to in message.to]
    mime = build_message(settings, replace(message, to=tuple(r[0] for r in recipients)))
    return mime, [r[1] for r in recipients]


def mailbox(address: str) -> tuple[str, str]:
    """(the To header's form, the envelope's address) of exactly one address, its domain in
    ASCII (IDNA: `ana@exämple.com` → `ana@xn--exmple-cua.com`), its display name kept; a
    ValueError for anything else, such as a list that would send one person's message to
    several."""
    found = email.utils.getaddresses([address])
    if len(found) != 1 or found[0][1].count("@") != 1:
        raise ValueError(f"{address!r} is not one e-mail address")
    name, spec = found[0]
    local, _, domain = spec.rpartition("@")
    if not local or not domain:
        raise ValueError(f"{address!r} is not one e-mail address")
    if not domain.isascii():
        # IDNA 2008 as registries apply it (UTS 46 mapping first: "EXÄMPLE" → "exämple"), not
        # the stdlib codec's IDNA 2003, which maps ß to ss and sends to another domain.
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError:
            raise ValueError(f"{address!r}: its domain is not a valid name") from None
    spec = f"{local}@{domain}"
    # The name as written, quoted where it must be: encoding it is `build_message`'s.
    shown = str(Address(display_name=name, username=local, domain=domain)) if name else spec
    return shown, spec


def build_message(settings: EmailSettings, message: EmailMessage) -> email.message.EmailMessage:
    """The MIME message: text, plus HTML as an alternative; headers refuse line breaks."""
    mime = email.message.EmailMessage()
    mime["From"] = _address_header("From", settings.sender)
    mime["To"] = _address_header("To", ", ".join(message.to))
    if settings.reply_to:
        mime["Reply-To"] = _address_header("Reply-To", settings.reply_to)
    mime["Subject"] = _subject(message.subject)
    mime["Date"] = email.utils.formatdate(utc_timestamp(), localtime=False)
    domain = email.utils.parseaddr(settings.sender)[1].rpartition("@")[2] or None
    mime["Message-ID"] = message.message_id or email.utils.make_msgid(domain=domain)
    mime.set_content(message.text)
    if message.html:
        mime.add_alternative(message.html, subtype="html")
    return mime


class _EncodedHeader(str):
    """A header written as `tokens` (RFC 2047 encoded words, atoms, quoted strings, an
    address), one space between each two, folded only there. The email package's own folding
    of a header that is not ASCII is wrong twice: it breaks a line between two encoded words
    with the space outside both, which a reader drops (RFC 2047 §6.2: "São João" arrived
    "SãoJoão"), and it cuts a display name's encoded word inside a word, where Python's own
    parser shows a space ("Jo ão"). And it decodes the encoded words it finds in a value set as
    a header (`=?utf-8?q?=0D=0A?=` → CR LF) and writes what it decoded raw. A value with a
    `name` and a `fold` is stored and written as it is (`EmailPolicy.header_store_parse`,
    `_fold`); as a text it reads as written (the flows' dry run shows it)."""

    name: str
    tokens: tuple[str, ...]

    def fold(self, *, policy: email.policy.EmailPolicy) -> str:
        width = policy.max_line_length or 998
        lines, line = [], f"{self.name}:"
        for token in self.tokens:
            if len(line) + 1 + len(token) > width and line != f"{self.name}:":
                lines.append(line)
                line = ""
            line += f" {token}"
        return policy.linesep.join([*lines, line]) + policy.linesep


def _encoded(name: str, shown: str, tokens: list[str]) -> _EncodedHeader:
    header = _EncodedHeader(shown)
    header.name, header.tokens = name, tuple(tokens)
    return header


def _needs_encoding(text: str) -> bool:
    """Text the email package would encode (not ASCII) or decode (`=?`, the start of what
    reads as an encoded word): written by `_EncodedHeader` instead."""
    return not text.isascii() or "=?" in text


def _subject(subject: str) -> str:
    """The subject as the header to set, wholly encoded when it needs encoding: every space
    is inside an encoded word, where no reader drops it. Line breaks are refused."""
    if len(subject.splitlines()) > 1:
        raise ValueError("the subject holds a line break")
    if not _needs_encoding(subject):
        return subject
    words = email.header.Header(subject, "utf-8", header_name="Subject").encode(linesep="\n")
    return _encoded("Subject", subject, words.split())


def _address_header(name: str, value: str) -> str:
    """An address header (`From`, `To`, `Reply-To`: one mailbox each, `mailbox` and the
    channel's checks saw to that) as the header to set: a display name that needs encoding
    written word by word (`_display_words`) before the address."""
    found = email.utils.getaddresses([value])
    if len(found) != 1 or not _needs_encoding(found[0][0]) or not found[0][1].isascii():
        return value
    display, address = found[0]
    if any(c in display for c in "\r\n"):
        raise ValueError(f"{name}: the display name holds a line break")
    display = " ".join(display.split())
    shown = str(Address(display_name=display, addr_spec=address))
    return _encoded(name, shown, [*_display_words(display), f"<{address}>"])


_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")
_MAX_WORD = 75  # characters of an encoded word (RFC 2047 §2)


def _display_words(display: str) -> list[str]:
    """A display name as RFC 5322 words: ASCII words as atoms (or quoted strings), each run
    of other words as encoded words holding the spaces between them. A space between an
    encoded word and an atom is kept by every reader; one between two encoded words is
    dropped by readers that follow RFC 2047 and kept by Python's parser, so there is none
    unless a run is too long for one encoded word."""
    words: list[str] = []
    run: list[str] = []
    for word in display.split(" "):
        if _needs_encoding(word):
            run.append(word)
            continue
        words += _encoded_run(run)
        run = []
        words.append(word if _ATOM.fullmatch(word) else _quoted(word))
    return words + _encoded_run(run)


def _encoded_run(run: list[str]) -> list[str]:
    """Words that need encoding as few encoded words as fit (Q, RFC 2047 §5(3)'s characters
    for a phrase), the space between two of them inside the first."""
    found: list[str] = []
    text = ""
    for word in run:
        joined = f"{text} {word}" if text else word
        if text and len(_q(joined)) > _MAX_WORD:
            found.append(_q(f"{text} "))
            joined = word
        text = joined
    if text:
        found.append(_q(text))
    return found


def _q(text: str) -> str:
    return email.quoprimime.header_encode(text.encode("utf-8"), "utf-8")


def _quoted(word: str) -> str:
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def describe_failure(exc: BaseException) -> tuple[Verdict, int | None, str]:
    """(verdict, SMTP code, detail) for an aiosmtplib or network failure."""
    tls = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
    if isinstance(tls, ssl.SSLError):  # a certificate or protocol mismatch: a setting to fix
        return Verdict.FAIL, None, f"TLS failed: {getattr(tls, 'verify_message', '') or tls}"
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        temporary = any(400 <= c < 500 for c in codes)
        return (Verdict.RETRY if temporary else Verdict.FAIL), codes[0], f"refused: {detail}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        verdict = Verdict.RETRY if 400 <= exc.code < 500 else Verdict.FAIL
        what = "authentication failed" if exc.code in (530, 534, 535) else "refused"
        return verdict, exc.code, f"{what}: {exc.code} {exc.message}"
    if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected):
        return Verdict.RETRY, None, str(exc)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return Verdict.RETRY, None, f"timed out: {exc}"
    if isinstance(exc, aiosmtplib.SMTPException):  # e.g. no STARTTLS offered: a setting
        return Verdict.FAIL, None, str(exc)
    if isinstance(exc, OSError):
        return Verdict.RETRY, None, f"network: {exc}"
    return Verdict.FAIL, None, f"{type(exc).__name__}: {exc}"


def _outcome(
    verdict: Verdict,
    detail: str,
    started: float,
    request: Mapping[str, object],
    *,
    code: int | None = None,
    provider: str | None = None,
    unknown: bool = False,
) -> SendOutcome:
    latency = round((time.perf_counter() - started) * 1000, 3)
    return SendOutcome(
        verdict, detail, code, provider, None, latency, request=request, unknown=unknown
    )
