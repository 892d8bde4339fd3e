"""`gateway demo-partners`: local stand-ins for the demo tenant's partners, so the four seed
scenarios run on one machine. Each prints what it receives (and keeps it: `GET /` lists it):

    /hr       the HR system: GET /veiculos/{plate}/condutor-atual → the demo driver of the
              plate (Bearer demo-hr-token)
    /erp      the ERP: PUT /multas/{ait}/pagamento, POST /veiculos/quilometragem → 200
    /zenvia   the SMS provider: POST /v2/channels/sms/messages → 200 with a message id
    /fcm      FCM HTTP v1 with its token endpoint (it takes any signed assertion: a stand-in,
              not a check) → POST /v1/projects/{project}/messages:send → 200
    SMTP      a server on its own port that takes every message (needs aiosmtpd, which
              `pip install -e '.[dev]'` brings)

Doubles for a demo, never for production: they check next to nothing.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import orjson
from aiohttp import web

from gateway.demo import DRIVERS
from gateway.demo_integrations import ASSIGNMENTS, SINCE

Printer = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


@dataclass
class DemoPartners:
    """What the partners received, in order: {partner, method, path, body} each."""

    received: list[dict[str, Any]] = field(default_factory=list)
    out: Printer = _print
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get("/hr/veiculos/{plate}/condutor-atual", self.hr_driver)
        app.router.add_route("*", "/erp/{tail:.*}", self.erp)
        app.router.add_post("/zenvia/v2/channels/sms/messages", self.sms)
        app.router.add_post("/fcm/token", self.fcm_token)
        app.router.add_post("/fcm/v1/projects/{project}/messages:send", self.fcm_send)
        return app

    def note(self, partner: str, method: str, path: str, body: Any, summary: str) -> None:
        self.received.append({"partner": partner, "method": method, "path": path, "body": body})
        self.out(f"{partner:<7} {summary}")

    async def index(self, request: web.Request) -> web.Response:
        return web.json_response({"received": self.received})

    async def hr_driver(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer demo-hr-token":
            return web.json_response({"erro": "não autorizado"}, status=401)
        plate = request.match_info["plate"].upper()
        cpf = ASSIGNMENTS.get(plate)
        driver = next((d for d in DRIVERS if "".join(filter(str.isdigit, d["cpf"])) == cpf), None)
        where = f"GET {request.path_qs}"
        if driver is None:
            self.note("hr", "GET", request.path_qs, None, f"{where} → nobody")
            return web.json_response({"erro": "veículo sem condutor"}, status=404)
        answer = {
            "veiculo": {"placa": plate},
            "condutorAtual": {
                "nome": driver["name"],
                "cpf": driver["cpf"],
                "email": driver.get("email"),
                "celular": driver.get("phone"),
                "desde": SINCE.isoformat(),
            },
        }
        self.note("hr", "GET", request.path_qs, None, f"{where} → {driver['name']}")
        return web.json_response(answer)

    async def erp(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        path = request.path.removeprefix("/erp")
        self.note("erp", request.method, path, body, f"{request.method} {path} {_json(body)}")
        return web.json_response({"ok": True})

    async def sms(self, request: web.Request) -> web.Response:
        body = await request.json()
        text = " ".join(c.get("text", "") for c in body.get("contents", []))
        self.note("sms", "POST", request.path, body, f"to {body.get('to')}: {text}")
        return web.json_response({"id": f"demo-sms-{next(self._ids)}"})

    async def fcm_token(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"access_token": "demo-fcm-access-token", "expires_in": 3600, "token_type": "Bearer"}
        )

    async def fcm_send(self, request: web.Request) -> web.Response:
        message = (await request.json())["message"]
        note = message.get("notification", {})
        summary = f"push to {message.get('token')}: {note.get('title')} — {note.get('body')}"
        self.note("fcm", "POST", request.path, message, summary)
        project = request.match_info["project"]
        return web.json_response({"name": f"projects/{project}/messages/{next(self._ids)}"})

    def mail(self, recipients: list[str], content: bytes) -> None:
        """What the SMTP server accepted."""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        part = message.get_body(preferencelist=("plain",))
        text = part.get_content() if part is not None else ""
        body = {"to": recipients, "subject": message["Subject"], "text": text}
        indented = "\n".join(f"          {line}" for line in str(text).strip().splitlines())
        summary = f"e-mail to {', '.join(recipients)}: {message['Subject']}\n{indented}"
        self.note("smtp", "DATA", "", body, summary)


def _json(body: Any) -> str:
    return orjson.dumps(body).decode() if body is not None else ""


async def serve_demo_partners(host: str, port: int, smtp_port: int) -> None:
    """Serve the partners and the SMTP server until cancelled."""
    partners = DemoPartners()
    runner = web.AppRunner(partners.app(), access_log=None)
    await runner.setup()
    smtp = None
    try:
        await web.TCPSite(runner, host, port).start()
        smtp = await start_smtp(partners, host, smtp_port)
        print(f"demo partners on http://{host}:{port} (hr, erp, zenvia, fcm)", file=sys.stderr)
        if smtp is not None:
            print(f"demo SMTP server on {host}:{smtp_port}", file=sys.stderr)
        await asyncio.Event().wait()
    finally:
        if smtp is not None:
            smtp.close()
        await runner.cleanup()


async def start_smtp(partners: DemoPartners, host: str, port: int) -> asyncio.Server | None:
    """An SMTP server handing every accepted message to `partners.mail`; the asyncio server
    (close it), or None without aiosmtpd."""
    try:
        from aiosmtpd.smtp import SMTP, Envelope, Session
    except ImportError:
        print("no SMTP server: install aiosmtpd (pip install -e '.[dev]')", file=sys.stderr)
        return None

    class Handler:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            content = envelope.content
            data = content.encode() if isinstance(content, str) else bytes(content or b"")
            partners.mail([str(r) for r in envelope.rcpt_tos], data)
            return "250 Message accepted"

    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: SMTP(Handler(), hostname="demo-smtp"), host, port)
