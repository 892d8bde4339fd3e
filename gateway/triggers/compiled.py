"""A trigger's configuration as ready objects, built once per (trigger id, config version).

Building one compiles the input schema, binds the partner-JWT verifier to its keys, builds
the partner's HMAC scheme and opens the sealed webhook secrets; a request then only reads
attributes. Compiled triggers are
immutable and shared by every request of the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson

from gateway.auth.partner_hmac import HmacScheme, scheme_from
from gateway.auth.partner_jwt import Fetch, JwtPolicy, PartnerJwtVerifier, UnusableKeys
from gateway.auth.secretbox import SecretBox, is_lost
from gateway.background import cancel_and_wait
from gateway.clock import utc_timestamp
from gateway.schemas import CompiledSchema, compile_schema
from gateway.schemas.renamed import current_path
from gateway.store import Doc, Store
from gateway.triggers.spec import SIGNED_MODES, rate_of

POLLED: Final = "schedule"
"""The `auth_mode` of a schedule's target compiled as a trigger (gateway/schedules/sinks.py):
its pages are polled, no partner calls in; its `id` is the schedule's."""


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
    answers: str  # json | as_called (SOAP or XML to a caller that speaks it)
    mapping: str | None
    response_mapping: str | None
    schema: CompiledSchema | None
    expose: tuple[str, ...] | None
    max_body_bytes: int
    max_batch_items: int
    rate: tuple[float, int] | None  # (per second, burst)
    auth_mode: str
    token_param: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    partner_jwt: PartnerJwtVerifier | None = None
    hmac: HmacScheme | None = None
    # `shared_secret`: the header the partner sends its secret in (one of `webhook_secrets`).
    secret_header: str | None = None
    # (secret, valid until as a Unix time or None): several while a secret rotates.
    webhook_secrets: tuple[tuple[str, float | None], ...] = field(default=(), repr=False)
    target: str = "entities"  # or "positions": fixes appended to vehicles' tracks (SPEC §6)
    # The charset of JSON and form bodies and query strings whose request names none.
    charset: str | None = None

    @property
    def polled(self) -> bool:
        """A schedule's target: its pages come from a poll, not a partner's call."""
        return self.auth_mode == POLLED

    @property
    def reads(self) -> bool:
        """Whether its GET (and HEAD) reads. A `form` trigger's GET is a write (OsmAnd
        devices write with GET): it is in `methods` for the devices, whose URL, token in the
        query, is shared by the whole fleet, so it reads nothing. A trigger authenticated by
        a body signature reads nothing either: a GET's signature is the empty body's, which
        covers neither the URL nor its query (docs/triggers.md#reading-get)."""
        signed = self.auth_mode in SIGNED_MODES
        return "GET" in self.methods and self.format != "form" and not signed

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
        target=doc.get("target", "entities"),
        entity_type=doc["entity_type"],
        kind=doc.get("kind"),
        methods=frozenset(doc["methods"]),
        format=doc["format"],
        answers=doc.get("answers", "json"),
        charset=doc.get("charset"),
        mapping=doc.get("mapping"),
        response_mapping=doc.get("response_mapping"),
        params=doc.get("params") or {},
        schema=compile_schema(orjson.loads(schema_text), stored=True) if schema_text else None,
        # `[]` exposes the id alone; only a missing or null `expose` exposes every field. A
        # renamed member's old name exposes it under its new name, the one entities hold.
        expose=(
            tuple(current_path(doc["entity_type"], path) for path in doc["expose"])
            if doc.get("expose") is not None
            else None
        ),
        max_body_bytes=doc["max_body_bytes"],
        max_batch_items=doc["max_batch_items"],
        rate=rate_of(rate) if rate else None,
        auth_mode=auth["mode"],
        token_param=auth.get("token_in_query"),
        partner_jwt=_stored_verifier(auth, fetch) if auth["mode"] == "partner_jwt" else None,
        hmac=scheme_from(auth) if auth["mode"] == "hmac" else None,
        secret_header=auth.get("header") if auth["mode"] == "shared_secret" else None,
        webhook_secrets=open_secrets(doc, box),
    )


def open_secrets(doc: Doc, box: SecretBox) -> tuple[tuple[str, float | None], ...]:
    """The signing secrets still valid. One rotated out and past its grace stays stored until
    the next rotation; it verifies nothing, so it is not opened (its key may be gone:
    docs/security.md, key rotation). A lost rotated-out one (`gateway reseal
    --forget-unreadable`) is skipped too: calls signed with the current secret pass; only a
    lost current secret refuses them."""
    now = utc_timestamp()
    context = secret_context(doc["_id"])
    valid = [(s, _epoch(s.get("until"))) for s in doc["auth"].get("secrets", ())]
    return tuple(
        (box.open_text(s["sealed"], context=context), until)
        for s, until in valid
        if until is None or (until > now and not is_lost(s["sealed"]))
    )


class TriggerConfigs:
    """This process's compiled triggers, one per trigger at its current config version
    (bounded; the oldest goes). The receiver and the replay of rejected payloads share it."""

    def __init__(
        self, store: Store, box: SecretBox, fetch: Fetch, *, max_cached: int = 10_000
    ) -> None:
        self._store = store
        self._box = box
        self._fetch = fetch
        self._max = max_cached
        self._configs: dict[str, CompiledTrigger] = {}
        # The read under way of each (trigger id, version) that missed.
        self._reading: dict[tuple[str, int], asyncio.Task[CompiledTrigger | None]] = {}

    async def for_gate(self, gate: Doc) -> CompiledTrigger | None:
        """The compiled trigger at the gate's version; None if it was deleted meanwhile."""
        cached = self._configs.get(gate["_id"])
        if cached is not None and cached.version == gate["version"]:
            return cached
        # Calls that miss together (a burst at a trigger this process has not compiled yet,
        # or at its new version) share one read and one compile, not one each.
        key = (gate["_id"], gate["version"])
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._read(gate["tenant"], gate["_id"]))
            self._reading[key] = reading
            reading.add_done_callback(lambda done: self._read_done(key, done))
        # Shielded: a caller that goes away (its client hung up) leaves the read to the others.
        return await asyncio.shield(reading)

    async def _read(self, tenant: str, trigger_id: str) -> CompiledTrigger | None:
        doc = await self._store.triggers.get(tenant, trigger_id)
        return None if doc is None else self.compiled(doc)

    def _read_done(self, key: tuple[str, int], task: asyncio.Task[CompiledTrigger | None]) -> None:
        if self._reading.get(key) is task:
            del self._reading[key]
        if not task.cancelled():
            task.exception()  # a failed read every caller left is not logged as unretrieved

    async def close(self) -> None:
        """At shutdown: the reads under way of calls that went away."""
        await cancel_and_wait(*self._reading.values())

    def compiled(self, doc: Doc) -> CompiledTrigger:
        """The trigger document compiled (once per version)."""
        cached = self._configs.get(doc["_id"])
        if cached is not None and cached.version == doc["version"]:
            return cached
        compiled = compile_trigger(doc, box=self._box, fetch=self._fetch)
        if len(self._configs) >= self._max:
            self._configs.pop(next(iter(self._configs)))
        self._configs[compiled.id] = compiled
        return compiled


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


def _stored_verifier(auth: Doc, fetch: Fetch) -> PartnerJwtVerifier:
    """A trigger saved before a rule refused its key still compiles: its tokens find no
    usable key (503, the partner's keys unavailable), and none is let in."""
    try:
        return partner_verifier(auth, fetch)
    except ValueError as exc:
        return PartnerJwtVerifier(UnusableKeys(str(exc)))


def _epoch(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None
