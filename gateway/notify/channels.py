"""Use case: notification channels as tenant resources, and the same channels ready to send.

    email  {"smtp": {"host", "port"?, "security": "none"|"starttls"|"tls", "username"?,
            "password"?, "timeout_seconds"?, "data_timeout_seconds"?, "ca_certificate"?,
            "cleartext_auth"?: true (a login with security none), "helo"?},
            "from", "reply_to"?}
    push   {"partner_id", "project_id", "priority"?: "high"|"normal"}   the partner's auth is
           google_service_account, its base URL FCM's (https://fcm.googleapis.com)
    sms    {"action_id", "from"}   a POST/PUT action whose request mapping is the provider's

The SMTP password is write-only: sealed with the SecretBox (context `channel:<id>:smtp`),
never returned; `smtp` is replaced whole on a change, so a new server needs it again.
"""

from __future__ import annotations

import email.errors
import email.header
import email.utils
import ipaddress
import re
import ssl
from collections.abc import Mapping
from dataclasses import replace
from email.headerregistry import Address
from typing import Any, Final

from gateway.actions.body_check import BodyCheck
from gateway.audit import changed_members, log_change
from gateway.auth.secretbox import SecretBox, SecretBoxError, lost_on, shown_lost
from gateway.clock import as_stored, utcnow
from gateway.errors import Conflict, FieldProblem, InvalidPayload, NotFound, empty_keyword
from gateway.formats.json_tree import is_text
from gateway.notify.channel_needs import push_partner_problem, sms_action_problem
from gateway.notify.email import CLEARTEXT_REFUSED, is_helo_name
from gateway.notify.messages import Channel, EmailSettings, PushSettings, SmsSettings
from gateway.notify.templates import NAME, Users, _no_users, refuse_if_used
from gateway.store import Doc, Store, new_id

TYPES = ("email", "push", "sms")
SECURITY = ("none", "starttls", "tls")
DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}
_COMMON = {"name", "type", "description"}
_BY_TYPE = {
    "email": {"smtp", "from", "reply_to"},
    "push": {"partner_id", "project_id", "priority"},
    "sms": {"action_id", "from"},
}
_SMTP = {
    "host",
    "port",
    "security",
    "username",
    "password",
    "timeout_seconds",
    "data_timeout_seconds",
    "ca_certificate",
    "cleartext_auth",
    "helo",
}
# Seconds the relay has to answer the message's end (RFC 5321 §4.5.3.2.6: 10 minutes), the
# default and the most: past it, the e-mail's outcome is unknown (retried, at least once).
DATA_TIMEOUT = 600
_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_ADDRESS = re.compile(r"^[^@\s<>\"]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$")
_SENDER = re.compile(r"^(\+?[0-9]{3,15}|[A-Za-z0-9 ._-]{1,20})$")


# The members of a channel's document that hold a secret (write-only: never returned), as
# JSON Pointers: the SMTP password. A push channel names a partner, whose credentials are the
# partner's; an SMS channel an action. The admin UI neither keeps nor shows these back.
SECRET_MEMBERS: Final = ("/smtp/password",)


def smtp_context(channel_id: str) -> str:
    return f"channel:{channel_id}:smtp"


def public_channel(doc: Doc) -> dict[str, Any]:
    out = {
        "id": str(doc["_id"]),
        **{k: doc[k] for k in (*_COMMON, *_BY_TYPE[doc["type"]]) if k in doc and k != "smtp"},
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
    }
    if "smtp" in doc:
        sealed = doc.get("smtp_sealed")
        password = {"configured": bool(sealed) and lost_on(sealed) is None, **shown_lost(sealed)}
        out["smtp"] = {**doc["smtp"], "password": password}
    return out


class ChannelService:
    def __init__(self, store: Store, box: SecretBox) -> None:
        self._store = store
        self._channels = store.notify.channels
        self._box = box
        self.users: Users = _no_users

    async def create(self, tenant: str, body: Mapping[str, Any]) -> Doc:
        oid, now = new_id(), as_stored(utcnow())
        doc = await self._fields(tenant, str(oid), body, None)
        doc.update(_id=oid, tenant=tenant, rev=1, created_at=now, updated_at=now)
        await self._channels.insert(doc)
        named = {"channel_name": doc["name"], "channel_type": doc["type"]}
        log_change("channel", str(oid), "created", tenant, **named)
        return doc

    async def get(self, tenant: str, ref: str) -> Doc:
        doc = await self._channels.by_ref(tenant, ref)
        if doc is None:
            raise NotFound(f"no channel {ref!r}")
        return doc

    async def list(self, tenant: str, *, after: str | None, limit: int) -> list[Doc]:
        return await self._channels.list(tenant, after=after, limit=limit)

    async def update(self, tenant: str, ref: str, body: Mapping[str, Any]) -> Doc:
        """Merge `body` into the channel (its type stays; `smtp` is replaced whole)."""
        current = await self.get(tenant, ref)
        if body.get("type", current["type"]) != current["type"]:
            message = "a channel keeps its type; create another channel"
            raise InvalidPayload(message, [FieldProblem("/type", message, "const")])
        if "name" in body and body["name"] != current["name"]:
            users = await self.users(tenant, current["name"])
            if users:
                raise Conflict(f"channel {current['name']!r} is named by flows; keep its name")
        merged = {k: v for k, v in current.items() if k in _COMMON | _BY_TYPE[current["type"]]}
        # An unchanged `smtp` keeps its sealed password; a new one brings its own.
        kept = None if "smtp" in body else current.get("smtp_sealed")
        fields = await self._fields(tenant, str(current["_id"]), {**merged, **body}, kept)
        fields["updated_at"] = utcnow()
        unset = [k for k in ("reply_to", "description", "smtp_sealed") if k not in fields]
        doc = await self._channels.update(
            tenant, str(current["_id"]), current["rev"], fields, unset
        )
        if doc is None:
            raise Conflict("the channel was changed concurrently; retry")
        if members := changed_members(current, doc, body, secret=("smtp",)):
            log_change("channel", str(current["_id"]), "updated", tenant, members=members)
        return doc

    async def delete(self, tenant: str, ref: str) -> None:
        doc = await self.get(tenant, ref)
        await refuse_if_used(self.users, tenant, "channel", doc)
        await self._channels.delete(tenant, str(doc["_id"]))
        log_change("channel", str(doc["_id"]), "deleted", tenant, channel_name=doc["name"])

    async def ready(self, tenant: str, ref: str) -> Channel:
        """The channel with its password opened, ready for a sender."""
        return self.compile(await self.get(tenant, ref))

    def compile(self, doc: Doc) -> Channel:
        cid, kind = str(doc["_id"]), doc["type"]
        channel = Channel(cid, doc["tenant"], doc["name"], kind)
        if kind == "email":
            smtp = doc["smtp"]
            password = None
            if doc.get("smtp_sealed"):
                try:
                    password = self._box.open_text(doc["smtp_sealed"], context=smtp_context(cid))
                except SecretBoxError as exc:
                    whose = f"channel {doc['name']!r} ({cid}): its stored SMTP password"
                    raise exc.naming(whose) from None
            settings = EmailSettings(
                # as it is written now (one stored before brackets were read: as they are)
                host=_smtp_host(smtp["host"]) or smtp["host"],
                port=int(smtp["port"]),
                security=smtp["security"],
                sender=doc["from"],
                reply_to=doc.get("reply_to"),
                username=smtp.get("username"),
                password=password,
                timeout=float(smtp.get("timeout_seconds", 15)),
                data_timeout=float(smtp.get("data_timeout_seconds", DATA_TIMEOUT)),
                cleartext_auth=smtp.get("cleartext_auth") is True,
                helo=smtp.get("helo"),
                ca_certificate=smtp.get("ca_certificate"),
            )
            return replace(channel, email=settings)
        if kind == "push":
            push = PushSettings(doc["partner_id"], doc["project_id"], doc.get("priority", "high"))
            return replace(channel, push=push)
        return replace(channel, sms=SmsSettings(doc["action_id"], doc["from"]))

    # -- checks ------------------------------------------------------------------------------

    async def _fields(
        self, tenant: str, cid: str, body: Mapping[str, Any], kept_password: str | None
    ) -> Doc:
        kind = body.get("type")
        check = BodyCheck(body, _COMMON | _BY_TYPE.get(kind, set()) if kind in TYPES else _COMMON)
        name = check.text("name", max_len=100)
        if name is not None and not NAME.fullmatch(name):
            check.add("/name", "name is 1-100 letters, digits, _ . -", "pattern")
        if kind not in TYPES:
            check.add("/type", f"type is one of {', '.join(TYPES)}", "enum")
        fields: Doc = {"name": name, "type": kind}
        if body.get("description") is not None:
            fields["description"] = check.text("description", max_len=2000)
        if kind == "email":
            fields.update(self._email(check, cid, kept_password))
        elif kind == "push":
            fields.update(await self._push(check, tenant))
        elif kind == "sms":
            fields.update(await self._sms(check, tenant))
        check.done("channel")
        return fields

    def _email(self, check: BodyCheck, cid: str, kept_password: str | None) -> Doc:
        fields: Doc = {"from": _address(check, "from", required=True)}
        if check.body.get("reply_to") is not None:
            fields["reply_to"] = _address(check, "reply_to", required=False)
        smtp = check.body.get("smtp")
        if not isinstance(smtp, Mapping):
            check.add("/smtp", "smtp is {host, port?, security, username?, password?}", "type")
            return fields
        for key in smtp:
            if key not in _SMTP:
                check.add(f"/smtp/{key}", f"unknown field {key!r}", "additionalProperties")
        inner = BodyCheck(smtp, _SMTP)
        host = inner.text("host", max_len=255)
        if host is not None:
            host = _smtp_host(host)
            if host is None:
                message = "host is a server name or an IP address (in brackets or not)"
                check.add("/smtp/host", message, "format")
        security = smtp.get("security", "starttls")
        if security not in SECURITY:
            check.add("/smtp/security", f"security is one of {', '.join(SECURITY)}", "enum")
            security = "starttls"
        port = inner.number("port", 1, 65535, integer=True, default=DEFAULT_PORTS[security])
        timeout = inner.number("timeout_seconds", 1, 60, default=15)
        data_timeout = inner.number("data_timeout_seconds", 1, DATA_TIMEOUT)
        username, password = _smtp_login(check, inner, kept_password)
        cleartext = _cleartext_auth(check, smtp, security, username)
        ca = _ca_certificate(check, smtp.get("ca_certificate"))
        helo = _helo(check, inner)
        check.problems.extend(
            FieldProblem(f"/smtp{p.pointer}", p.message, p.keyword) for p in inner.problems
        )
        fields["smtp"] = {
            "host": host,
            "port": port,
            "security": security,
            "timeout_seconds": timeout,
            # kept only when given: a channel without it (all before 2026-12-07) has the default
            **({"data_timeout_seconds": data_timeout} if data_timeout is not None else {}),
            **({"username": username} if username else {}),
            **({"ca_certificate": ca} if ca else {}),
            **({"helo": helo} if helo else {}),
            **({"cleartext_auth": True} if cleartext and security == "none" else {}),
        }
        if isinstance(password, str):
            fields["smtp_sealed"] = self._box.seal(password, context=smtp_context(cid))
        elif kept_password is not None and username:
            fields["smtp_sealed"] = kept_password
        return fields

    async def _push(self, check: BodyCheck, tenant: str) -> Doc:
        partner_id = check.text("partner_id", max_len=64)
        project = check.text("project_id", max_len=64)
        if project is not None and not _PROJECT.match(project):
            check.add("/project_id", "a Firebase project id (lower case, digits, -)", "pattern")
        priority = check.body.get("priority", "high")
        if priority not in ("high", "normal"):
            check.add("/priority", "priority is high or normal", "enum")
        if partner_id is not None:
            partner = await self._store.partners.get(tenant, partner_id)
            if partner is None:
                check.add("/partner_id", f"no partner {partner_id!r} in this tenant", "reference")
            elif (problem := push_partner_problem(partner)) is not None:
                check.add("/partner_id", problem, "reference")
            else:
                partner_id = str(partner["_id"])  # as stored: a change to the partner finds it
        return {"partner_id": partner_id, "project_id": project, "priority": priority}

    async def _sms(self, check: BodyCheck, tenant: str) -> Doc:
        action_id = check.text("action_id", max_len=64)
        sender = check.text("from", max_len=20)
        if sender is not None and not _SENDER.match(sender):
            check.add("/from", "from is a sender id (letters, digits) or a number", "pattern")
        if action_id is not None:
            action = await self._store.actions.get(tenant, action_id)
            if action is None:
                check.add("/action_id", f"no action {action_id!r} in this tenant", "reference")
            elif (problem := sms_action_problem(action)) is not None:
                check.add("/action_id", problem, "reference")
            else:
                action_id = str(action["_id"])  # as stored: a change to the action finds it
        return {"action_id": action_id, "from": sender}


def _smtp_login(
    check: BodyCheck, inner: BodyCheck, kept_password: str | None
) -> tuple[str | None, str | None]:
    """The SMTP login's username and password (None: not given, or refused). Missing or
    empty, they are said by the partner credentials' rule (`errors.empty_keyword`): given
    empty is `minLength`, not a `type` problem."""
    smtp = inner.body
    if smtp.get("username") == "":
        check.add("/smtp/username", "username is a non-empty string", "minLength")
        username = None
    else:
        username = inner.text("username", required=False, max_len=320)
    password = smtp.get("password")
    if (smtp.get("username") is None) != (password is None and kept_password is None):
        check.add("/smtp/password", "username and password go together", "dependentRequired")
    if password is not None and (not is_text(password) or not password):
        check.add("/smtp/password", "password is a non-empty string", empty_keyword(password))
        password = None
    return username, password


def _cleartext_auth(
    check: BodyCheck, smtp: Mapping[str, Any], security: str, username: str | None
) -> bool:
    """Whether the channel lets its login go without TLS (`cleartext_auth: true`); a login
    with `security: none` that does not is refused, naming the security."""
    cleartext = smtp.get("cleartext_auth", False)
    if not isinstance(cleartext, bool):
        check.add("/smtp/cleartext_auth", "cleartext_auth is true or false", "type")
        return False
    if security == "none" and username and not cleartext:
        check.add("/smtp/security", CLEARTEXT_REFUSED, "cleartext")
    return cleartext is True


def _helo(check: BodyCheck, inner: BodyCheck) -> str | None:
    """The name the channel says in EHLO, when it gives one (`email.is_helo_name`)."""
    helo = inner.text("helo", required=False, max_len=253)
    if helo is None or is_helo_name(helo):
        return helo
    message = (
        "helo is a fully-qualified domain name (gw.acme.com.br) or an address literal "
        "([192.0.2.1], [IPv6:2001:db8::1])"
    )
    check.add("/smtp/helo", message, "format")
    return None


def _ca_certificate(check: BodyCheck, value: Any) -> str | None:
    if value is None:
        return None
    try:
        if isinstance(value, str) and len(value) <= 64 * 1024 and "CERTIFICATE" in value:
            ssl.create_default_context(cadata=value)
            return value
    except (ssl.SSLError, ValueError):
        pass
    check.add("/smtp/ca_certificate", "ca_certificate is a PEM CA certificate", "format")
    return None


def _smtp_host(written: str) -> str | None:
    """The server to connect to, or None when `written` names none. Brackets, as mail
    configurations write an address literal or a host used as is (`[2001:db8::25]`,
    Postfix's `[smtp.acme.com.br]`: no MX lookup, which the sender never does), are read as
    the host they enclose and not kept: the name lookup takes no brackets."""
    bare = written[1:-1] if written.startswith("[") and written.endswith("]") else written
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return bare if len(bare) <= 253 and _HOST_NAME.match(bare) else None


def _address(check: BodyCheck, name: str, *, required: bool) -> str | None:
    value = check.text(name, required=required, max_len=320)
    if value is None:
        return None
    # Exactly one: parseaddr reads the first of a list and drops the rest without a word.
    found = email.utils.getaddresses([value])
    display, address = found[0] if len(found) == 1 else ("", "")
    if not _ADDRESS.match(address) or any(c in value for c in "\r\n"):
        message = f'{name} is one address, or "Name <address>"'
        check.add(f"/{name}", message, "format")
        return None
    if not display:
        return address
    # Kept as the admin wrote it, in Unicode ("Gestão de Frota <…>"), quoted where it needs
    # to be ("Frota, Acme"): encoding a name for the header is the message's business, at
    # send time (`email.build_message`). One stored encoded by an earlier version is read back.
    try:
        shown = str(email.header.make_header(email.header.decode_header(display)))
        return str(Address(display_name=shown, addr_spec=address))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        # an encoded name that does not decode: an unknown charset, bytes that are not its
        # text, a line break inside
        message = f"{name}: the display name {display!r} does not decode to text on one line"
        check.add(f"/{name}", message, "format")
        return None
