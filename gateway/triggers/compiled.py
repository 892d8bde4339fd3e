"""A trigger's configuration as ready objects, built once per (trigger id, config version).

Building one compiles the input schema, binds the partner-JWT verifier to its keys and opens
the sealed webhook secrets; a request then only reads attributes. Compiled triggers are
immutable and shared by every request of the process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from gateway.auth.partner_jwt import Fetch, JwtPolicy, PartnerJwtVerifier
from gateway.auth.secretbox import SecretBox
from gateway.schemas import CompiledSchema, compile_schema
from gateway.store import Doc


def secret_context(trigger_id: str) -> str:
    """What a webhook secret is sealed to: it opens on this trigger only."""
    return f"trigger:{trigger_id}:webhook-secret"


@dataclass(frozen=True, slots=True, eq=False)
class CompiledTrigger:
    id: str
    tenant: str
    version: int
    entity_type: str
    kind: str | None
    methods: frozenset[str]
    format: str
    mapping: str | None
    response_mapping: str | None
    schema: CompiledSchema | None
    expose: tuple[str, ...] | None
    max_body_bytes: int
    max_batch_items: int
    rate: tuple[float, int] | None  # (per second, burst)
    auth_mode: str
    token_param: str | None
    partner_jwt: PartnerJwtVerifier | None = None
    # (secret, valid until as a Unix time or None): several while a secret rotates.
    webhook_secrets: tuple[tuple[str, float | None], ...] = field(default=(), repr=False)

    @property
    def allow(self) -> tuple[str, ...]:
        """The Allow header of a 405 (HEAD comes with GET)."""
        return tuple(sorted(self.methods | ({"HEAD"} if "GET" in self.methods else set())))

    def secrets_at(self, now: float) -> list[str]:
        return [s for s, until in self.webhook_secrets if until is None or until > now]


def compile_trigger(doc: Doc, *, box: SecretBox, fetch: Fetch) -> CompiledTrigger:
    auth = doc["auth"]
    schema_text = doc.get("input_schema_json")
    rate = doc.get("rate_limit")
    return CompiledTrigger(
        id=doc["_id"],
        tenant=doc["tenant"],
        version=doc["version"],
        entity_type=doc["entity_type"],
        kind=doc.get("kind"),
        methods=frozenset(doc["methods"]),
        format=doc["format"],
        mapping=doc.get("mapping"),
        response_mapping=doc.get("response_mapping"),
        schema=compile_schema(orjson.loads(schema_text)) if schema_text else None,
        expose=tuple(doc["expose"]) if doc.get("expose") else None,
        max_body_bytes=doc["max_body_bytes"],
        max_batch_items=doc["max_batch_items"],
        rate=(float(rate["per_second"]), int(rate.get("burst") or 1)) if rate else None,
        auth_mode=auth["mode"],
        token_param=auth.get("token_in_query"),
        partner_jwt=partner_verifier(auth, fetch) if auth["mode"] == "partner_jwt" else None,
        webhook_secrets=tuple(
            (box.open_text(s["sealed"], context=secret_context(doc["_id"])), _epoch(s.get("until")))
            for s in auth.get("secrets", ())
        ),
    )


def partner_verifier(auth: Doc, fetch: Fetch) -> PartnerJwtVerifier:
    """Raises ValueError for a policy or key that cannot work (checked when an admin saves)."""
    policy = JwtPolicy(
        algorithms=tuple(auth.get("algorithms") or ("RS256", "ES256", "EdDSA")),
        issuer=auth.get("issuer"),
        audience=auth.get("audience"),
    )
    if auth.get("public_key_pem"):
        return PartnerJwtVerifier.from_pem([auth["public_key_pem"]], policy)
    if not auth.get("jwks_url"):
        raise ValueError("give a jwks_url or a public_key_pem")
    return PartnerJwtVerifier.from_jwks(auth["jwks_url"], fetch, policy)


def _epoch(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None
