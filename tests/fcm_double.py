"""A local FCM HTTP v1 with its OAuth token endpoint, for push tests.

`/token` checks the JWT-bearer grant as Google does (grant type, RS256 signature by the
service account's key, audience = the token URL, scope) and issues access tokens;
`/v1/projects/{project}/messages:send` wants a token it issued, records the message, and
answers like FCM (its error bodies as firebase.google.com/docs/cloud-messaging/error-codes
shows them): UNREGISTERED (404) for tokens a test unregistered, INVALID_ARGUMENT (400) for a
token that is no FCM token, for a field of the message, or for a message over FCM's 4,096
bytes, THIRD_PARTY_AUTH_ERROR (401) for a token of an iOS device while the project's APNs key
is missing, or what a test queued (429 with Retry-After, 503, a 401 that makes the client
fetch a new token); `/token` answers what a test queued too (a busy token endpoint).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
PROJECT = "rabbot-demo"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_MAX_PAYLOAD = 4096  # bytes of a message's notification and data


@dataclass
class Fcm:
    server: TestServer | None = None
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    tokens_issued: list[str] = field(default_factory=list)
    assertions: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # of each message's request
    unregistered: set[str] = field(default_factory=set)
    # tokens answered 400 INVALID_ARGUMENT as FCM does, by the field at fault: "message.token"
    # (not a token at all: an FcmError INVALID_ARGUMENT saying so, no field violation), another
    # field (the message's fault: a google.rpc.BadRequest field violation, no FcmError)
    invalid: dict[str, str] = field(default_factory=dict)
    # tokens of iOS devices while the project's APNs auth key is missing: 401
    # THIRD_PARTY_AUTH_ERROR (our access token is fine)
    apns_key_missing: set[str] = field(default_factory=set)
    # answers quote the request's Authorization header (a proxy's debug message): the 400 for
    # those, and the message name of a success
    echo_authorization: bool = False
    queued: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    # answers of /token queued by a test (a busy token endpoint: 503 or 429 with Retry-After)
    token_queued: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    token_requests: int = 0
    expires_in: int = 3600
    # UNREGISTERED answers wait until this many are asked at once (two removals in a race)
    unregistered_together: asyncio.Barrier | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def service_account(self) -> dict[str, str]:
        """A key file as Google gives it, pointing at this double's token endpoint."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "key-1",
            "private_key": pem,
            "client_email": "gateway@rabbot-demo.iam.gserviceaccount.com",
            "client_id": "1234567890",
            "token_uri": f"{self.url}/token",
        }

    def answer_next(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.queued.append((status, headers or {}))

    def answer_token_next(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.token_queued.append((status, headers or {}))

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        if self.token_queued:
            status, headers = self.token_queued.popleft()
            body = {"error": "temporarily_unavailable", "error_description": "queued by the test"}
            return web.json_response(body, status=status, headers=headers)
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:
            claims = jwt.decode(
                str(form.get("assertion")),
                self.key.public_key(),
                algorithms=["RS256"],
                audience=f"{self.url}/token",
            )
        except jwt.InvalidTokenError as exc:
            return web.json_response(
                {"error": "invalid_grant", "error_description": str(exc)}, status=400
            )
        self.assertions.append(claims)
        if claims.get("scope") != SCOPE:
            return web.json_response({"error": "invalid_scope"}, status=400)
        token = f"ya29.token-{len(self.tokens_issued) + 1}"
        self.tokens_issued.append(token)
        return web.json_response(
            {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        )

    async def send(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not self.tokens_issued or auth != f"Bearer {self.tokens_issued[-1]}":
            return _unauthenticated()
        if self.queued:
            status, headers = self.queued.popleft()
            if status == 401:  # Google refusing the access token: no FcmError
                return _unauthenticated()
            code, google = {429: ("QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED")}.get(
                status, ("UNAVAILABLE", "UNAVAILABLE")
            )
            return _error(status, google, "queued by the test", [_fcm_error(code)], headers)
        body = await request.json()
        message = body["message"]
        token = message["token"]
        if token in self.unregistered:
            if self.unregistered_together is not None:
                await asyncio.wait_for(self.unregistered_together.wait(), timeout=5)
            said = "Requested entity was not found."
            return _error(404, "NOT_FOUND", said, [_fcm_error("UNREGISTERED")])
        if token in self.apns_key_missing:
            said = "Auth error from APNS or Web Push Service"
            return _error(401, "UNAUTHENTICATED", said, [_fcm_error("THIRD_PARTY_AUTH_ERROR")])
        payload = {k: message[k] for k in ("notification", "data") if k in message}
        if token in self.invalid or len(orjson.dumps(payload)) > _MAX_PAYLOAD:
            return self._invalid(message, auth)
        self.messages.append(message)
        self.headers.append(dict(request.headers))
        name = f"projects/{request.match_info['project']}/messages/0:{next(self._ids)}"
        return web.json_response({"name": f"{name} {auth}" if self.echo_authorization else name})

    def _invalid(self, message: dict[str, Any], auth: str) -> web.Response:
        """FCM's 400 INVALID_ARGUMENT, in the three shapes its docs and answers show."""
        at_fault = self.invalid.get(message["token"])
        if at_fault == "message.token":
            said = "The registration token is not a valid FCM registration token"
            details = [_fcm_error("INVALID_ARGUMENT")]
        elif at_fault is not None:
            said = f"Invalid value at '{at_fault}' (TYPE_STRING), 12"
            violation = {"field": at_fault, "description": said}
            details = [{"@type": _BAD_REQUEST, "fieldViolations": [violation]}]
        else:
            said = "Android message is too big"
            details = [{"@type": _BAD_REQUEST}, _fcm_error("INVALID_ARGUMENT")]
        if self.echo_authorization:
            said += f" (request authorized with {auth})"
        return _error(400, "INVALID_ARGUMENT", said, details)


def _unauthenticated() -> web.Response:
    said = "Request had invalid authentication credentials. Expected OAuth 2 access token."
    return _error(401, "UNAUTHENTICATED", said, [])


def _fcm_error(code: str) -> dict[str, str]:
    return {"@type": _FCM_ERROR, "errorCode": code}


def _error(
    code: int,
    status: str,
    message: str,
    details: list[dict[str, Any]],
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"code": code, "message": message, "status": status, "details": details}}
    return web.Response(
        status=code,
        body=orjson.dumps(body),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


@pytest.fixture
async def fcm() -> AsyncIterator[Fcm]:
    double = Fcm()
    app = web.Application()
    app.router.add_post("/token", double.token)
    app.router.add_post("/v1/projects/{project}/messages:send", double.send)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    double.server = server
    yield double
    await server.close()
