"""Use case: admins create, change, rotate, revoke and delete triggers.

Credentials are shown once: `create` and `rotate` return the token (or, for signature modes,
the secret); the store keeps only token ids and sealed secrets. An hmac trigger may instead
take the partner's own secret (`auth.secret`, or in PATCH or rotate): sealed, never shown
back. Revoking, deleting or disabling takes effect at once in this process (`on_change`
makes its gate cache forget the trigger) and within 1 s in every other (`gates.py`).
"""

from __future__ import annotations

import builtins
import secrets as _random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from gateway.audit import log_change
from gateway.auth import partner_hmac
from gateway.auth.keyring import KeyRing
from gateway.auth.partner_jwt import Fetch
from gateway.auth.secretbox import SecretBox, SecretBoxError, is_lost
from gateway.auth.tokens import issue_trigger_token
from gateway.auth.webhook_signature import generate_secret
from gateway.clock import as_stored, utcnow
from gateway.entities import METADATA
from gateway.errors import Conflict, FieldProblem, NotFound
from gateway.formats.unicode_forms import nfc
from gateway.kinds import KindService
from gateway.mapping_files.needs import trigger_needs
from gateway.mapping_files.source import MappingSource
from gateway.schemas.compiled import invalid
from gateway.schemas.renamed import current_path
from gateway.store import Doc, Store
from gateway.triggers.compiled import open_secrets, partner_verifier, secret_context
from gateway.triggers.hmac_secrets import (
    check_rotated_secret,
    given_secret_problems,
    kept_secret_problems,
    rekeyed,
    unopened_secret_problem,
)
from gateway.triggers.spec import (
    changes_access,
    check_spec,
    credentials_revision,
    document,
    merge_patch,
    new_token_id,
    new_trigger_id,
    public_credentials,
    public_trigger,
    whole_numbers,
)

# Access changes, logged at INFO outside the database: a restore of an older backup undoes
# them silently, and this log is how an operator finds them to redo (docs/operations.md
# "Backups").

MAX_GRACE_SECONDS: Final = 30 * 24 * 3600
_MAX_ATTEMPTS: Final = 5
# (current document, now) -> ($set fields, whether the compiled configuration changes)
_Change = Callable[[Doc, datetime], Awaitable[tuple[Doc, bool]]]
# Fields of the stored document that come from the admin's specification.
_CONFIG: Final = (
    "name",
    "methods",
    "format",
    "answers",
    "charset",
    "mapping",
    "response_mapping",
    "params",
    "rate_limit",
    "expose",
    "max_body_bytes",
    "max_batch_items",
    "input_schema_json",
)


@dataclass(frozen=True, slots=True)
class IssuedTrigger:
    """A trigger with the credential just issued for it (shown to the admin once)."""

    trigger: dict[str, Any]
    token: str | None = None
    secret: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.trigger)
        if self.token is not None:
            out["token"] = self.token
        if self.secret is not None:
            out["secret"] = self.secret
        return out


class TriggerService:
    def __init__(
        self,
        store: Store,
        mappings: MappingSource,
        kinds: KindService,
        ring: KeyRing,
        box: SecretBox,
        *,
        base_url: str,
        max_body_bytes: int,
        max_batch_items: int,
        fetch: Fetch,
        clock: Callable[[], datetime] = utcnow,
        on_change: Callable[[str], None] = lambda trigger_id: None,
        on_delete: Callable[[str], None] = lambda trigger_id: None,
    ) -> None:
        self._store = store
        # Told the id of every trigger this process changed (the gate cache forgets it), and
        # of every one it deleted (its metric series go).
        self._on_change = on_change
        self._on_delete = on_delete
        self._mappings = mappings
        self._kinds = kinds
        self._ring = ring
        self._box = box
        self._base_url = base_url
        self._defaults = {"max_body_bytes": max_body_bytes, "max_batch_items": max_batch_items}
        self._fetch = fetch
        self._clock = clock

    async def create(
        self, tenant: str, spec: Mapping[str, Any] | None = None, **fields: Any
    ) -> IssuedTrigger:
        """`create("acme", name="gps", entity_type="vehicle", mapping="osmand")`, or a
        specification mapping as the admin API receives it."""
        spec = _composed(whole_numbers({**(spec or {}), **fields}))
        async with self._kinds.saving(tenant):  # its kind is not deleted under the save
            await self._check(tenant, spec, new=True)
            now = as_stored(self._clock())
            doc = document(
                spec, trigger_id=new_trigger_id(), tenant=tenant, defaults=self._defaults, now=now
            )
            if await self._store.triggers.kept_twin_of(tenant, doc["name"]):
                raise Conflict(f"a trigger named {doc['name']!r} already exists")
            token, secret = self._issue(doc, now, given=(spec.get("auth") or {}).get("secret"))
            await self._store.triggers.insert(doc)  # a 409 past the tenant's limit
        self._on_change(doc["_id"])  # (an id called before it existed is known as none)
        return IssuedTrigger(self._public(doc), token, secret)

    async def list(
        self, tenant: str, *, after: str | None, limit: int, name: str | None = None
    ) -> list[dict[str, Any]]:
        """A page of triggers, by id; with `name`, those whose name holds it (any case)."""
        docs = await self._store.triggers.list(tenant, after=after, limit=limit, name=name)
        return [self._public(doc) for doc in docs]

    async def get(self, tenant: str, trigger_id: str) -> dict[str, Any]:
        return self._public(await self._doc(tenant, trigger_id))

    async def update(
        self, tenant: str, trigger_id: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        audited: list[str] = []  # the access change of the last try (the one written)

        async def change(doc: Doc, now: datetime) -> tuple[Doc, bool]:
            spec = _composed(whole_numbers(merge_patch(doc, patch)))
            # A trigger stored before a rule on how it is reached keeps what it had through a
            # change of anything else (spec.py `check_spec`); so does its `expose` (the edit
            # form restating it is no change).
            await self._check(
                tenant,
                spec,
                access_rules=changes_access(doc, patch),
                expose="expose" in patch and patch["expose"] != doc.get("expose"),
            )
            new = document(
                spec, trigger_id=doc["_id"], tenant=tenant, defaults=self._defaults, now=now
            )
            changes = {name: new[name] for name in _CONFIG}
            if "name" in changes and patch.get("name") in (None, doc.get("name")):
                # Not renamed: kept as stored (a twin the one-time NFC step kept, composed,
                # would collide with its NFC twin: a 409 for a change of anything else).
                changes["name"] = doc.get("name", changes["name"])
            elif "name" in changes and await self._store.triggers.kept_twin_of(
                tenant, changes["name"], doc["_id"]
            ):
                raise Conflict(f"a trigger named {changes['name']!r} already exists")
            secrets = doc["auth"]["secrets"]
            given = (spec.get("auth") or {}).get("secret")
            if given is not None:  # the partner's new secret replaces the old ones now
                fresh = {**new, "auth": {**new["auth"], "secrets": []}}
                self._issue(fresh, now, given=given)
                secrets = fresh["auth"]["secrets"]
            elif changed := rekeyed(doc["auth"], after := spec.get("auth") or {}):
                # the secrets kept must still key the changed scheme, as a given one must
                at = f"/auth/{changed[0]}"
                try:
                    kept = [secret for secret, _ in open_secrets(doc, self._box)]
                except SecretBoxError as exc:
                    raise invalid("trigger", [unopened_secret_problem(at, exc.detail)]) from None
                if problems := kept_secret_problems(after, at, kept):
                    raise invalid("trigger", problems)
            changes["auth"] = {**new["auth"], "secrets": secrets}
            audited[:] = [_access_change(doc, patch, changes["auth"], given is not None)]
            return changes, True

        updated = await self._change(tenant, trigger_id, change)
        if audited and audited[0]:
            _logged(tenant, trigger_id, audited[0])
        return self._public(updated)

    async def set_status(self, tenant: str, trigger_id: str, status: str) -> dict[str, Any]:
        """ "active" or "disabled": a disabled trigger answers 403 to valid credentials."""

        async def change(doc: Doc, now: datetime) -> tuple[Doc, bool]:
            return {"status": status}, False

        changed = self._public(await self._change(tenant, trigger_id, change))
        _logged(tenant, trigger_id, "disabled" if status == "disabled" else "enabled")
        return changed

    async def delete(self, tenant: str, trigger_id: str) -> None:
        deleted = await self._store.triggers.delete(tenant, trigger_id)
        self._on_change(trigger_id)
        if not deleted:
            raise NotFound(f"no trigger {trigger_id!r}")
        _logged(tenant, trigger_id, "deleted")
        self._on_delete(trigger_id)
        await self._store.rejected.delete_for_trigger(tenant, trigger_id)
        # Its idempotency records and signature memory expire with their retention: no call
        # reaches them once its id is gone (never given again), and no index finds them by
        # trigger (one would cost every keyed call's write): a delete read every tenant's.

    async def rotate(
        self,
        tenant: str,
        trigger_id: str,
        *,
        grace_seconds: int = 0,
        secret: Any = None,
        shown: str | None = None,
    ) -> IssuedTrigger:
        """A new credential; the old ones stay valid for `grace_seconds` (0: end now). An
        hmac trigger may take the partner's new `secret` instead of one issued here. `shown`:
        the `credentials_revision` of the page asking; a `Conflict`, nothing changed, when
        the credentials changed since (another admin rotated or revoked them)."""
        if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
            message = f"/grace_seconds: must be between 0 and {MAX_GRACE_SECONDS}"
            keyword = "minimum" if grace_seconds < 0 else "maximum"
            raise invalid("rotation", [FieldProblem("/grace_seconds", message, keyword)])
        issued: dict[str, str | None] = {}

        async def change(doc: Doc, now: datetime) -> tuple[Doc, bool]:
            mode = _credentialed(doc)
            if shown is not None and credentials_revision(public_credentials(doc)) != shown:
                raise Conflict(
                    "the trigger's credentials changed since this page was loaded (another "
                    "admin rotated or revoked them): no credential was issued or ended; look "
                    "at the trigger again before rotating"
                )
            if secret is not None:
                check_rotated_secret(doc["auth"], secret)
            grace = now + timedelta(seconds=grace_seconds) if grace_seconds else None
            fresh = {
                **doc,
                "tokens": _graced(doc["tokens"], grace, now),
                "auth": {**doc["auth"], "secrets": _graced(doc["auth"]["secrets"], grace, now)},
            }
            issued["token"], issued["secret"] = self._issue(fresh, now, given=secret)
            if mode == "token":
                return {"tokens": fresh["tokens"]}, False
            return {"auth.secrets": fresh["auth"]["secrets"]}, True

        doc = await self._change(tenant, trigger_id, change)
        _logged(tenant, trigger_id, "rotated", grace_seconds=grace_seconds)
        return IssuedTrigger(self._public(doc), issued["token"], issued["secret"])

    async def revoke(self, tenant: str, trigger_id: str) -> dict[str, Any]:
        """Every credential of the trigger stops working now; `rotate` issues a new one."""

        async def change(doc: Doc, now: datetime) -> tuple[Doc, bool]:
            mode = _credentialed(doc)
            if mode == "token":
                return {"tokens": []}, False
            return {"auth.secrets": []}, True

        revoked = self._public(await self._change(tenant, trigger_id, change))
        _logged(tenant, trigger_id, "revoked")
        return revoked

    # -- helpers -------------------------------------------------------------------------------

    async def _check(
        self,
        tenant: str,
        spec: Mapping[str, Any],
        *,
        access_rules: bool = True,
        new: bool = False,
        expose: bool = True,
    ) -> None:
        """InvalidPayload listing the specification's problems. The kind is checked for a
        `new` trigger only: it cannot change, and one named by a trigger stored before kinds
        in use were kept from deletion (`KindService.delete`) must not freeze the trigger.
        `expose` is checked when given (`_expose_problems`)."""
        check_spec(
            spec,
            max_body_bytes=self._defaults["max_body_bytes"],
            max_batch_items=self._defaults["max_batch_items"],
            access_rules=access_rules,
        )
        problems = [
            *(await self._kind_problems(tenant, spec) if new else ()),
            *(await self._expose_problems(tenant, spec) if expose else ()),
            *await self._mapping_problems(tenant, spec),
            *self._auth_problems(spec),
        ]
        if problems:
            raise invalid("trigger", problems)

    async def _kind_problems(
        self, tenant: str, spec: Mapping[str, Any]
    ) -> builtins.list[FieldProblem]:
        """A kind that does not exist: every entity the trigger wrote would be refused,
        "unknown kind", as if the partner's payload were wrong."""
        kind = spec.get("kind")
        if not isinstance(kind, str) or await self._kinds.exists(tenant, kind):
            return []
        problem = self._kinds.unknown(kind)
        return [replace(problem, message=f"/kind: {problem.message}")]

    async def _expose_problems(
        self, tenant: str, spec: Mapping[str, Any]
    ) -> builtins.list[FieldProblem]:
        """A path of `expose` that is no field of the entity (a typo, `plaet`): every read
        would silently leave it out. Its metadata (`id`, `created_at`, ...) and a renamed
        member's old name (it exposes the new one) are fields."""
        paths, etype = spec.get("expose"), spec.get("entity_type", "vehicle")
        if not paths or spec.get("target", "entities") != "entities":
            return []
        has = await self._kinds.field_test(tenant, etype, spec.get("kind"))
        problems = []
        for i, path in enumerate(paths):
            if path.split(".", 1)[0] in METADATA or has(current_path(etype, path)):
                continue
            what = etype + (f" ({spec['kind']})" if spec.get("kind") else "")
            message = f"/expose/{i}: {path!r} is not a field of the {what} schema"
            problems.append(FieldProblem(f"/expose/{i}", message, "unknown_field"))
        return problems

    async def _mapping_problems(
        self, tenant: str, spec: Mapping[str, Any]
    ) -> builtins.list[FieldProblem]:
        problems = []
        for name in ("mapping", "response_mapping"):
            mapping_name = spec.get(name)
            if mapping_name is None:
                continue
            try:
                mapping = await self._mappings.active(tenant, mapping_name)
            except NotFound as exc:
                problems.append(FieldProblem(f"/{name}", f"/{name}: {exc.detail}", "exists"))
                continue
            problems += [
                replace(p, message=f"{p.pointer}: {p.message}")
                for p in trigger_needs(mapping, name, spec)
            ]
        if spec.get("params") and spec.get("mapping") is None:
            message = "/params: params are read by the inbound mapping, and there is none"
            problems.append(FieldProblem("/params", message, "mapping"))
        return problems

    def _auth_problems(self, spec: Mapping[str, Any]) -> builtins.list[FieldProblem]:
        auth = spec.get("auth") or {}
        if auth.get("mode") != "partner_jwt":
            return given_secret_problems(auth)
        try:
            partner_verifier(auth, self._fetch)
        except ValueError as exc:
            where = "/auth/public_key_pem" if auth.get("public_key_pem") else "/auth"
            return [FieldProblem(where, f"{where}: {exc}", "key")]
        return []

    def _issue(
        self, doc: Doc, now: datetime, *, given: str | None = None
    ) -> tuple[str | None, str | None]:
        """Add a new credential to `doc`; return it (token, secret) for showing once. A
        secret the partner `given` is sealed like ours, and never shown back."""
        mode = doc["auth"]["mode"]
        if mode == "token":
            token_id = new_token_id()
            doc["tokens"] = [*doc["tokens"], {"id": token_id, "issued_at": now, "until": None}]
            token = issue_trigger_token(
                self._ring,
                tenant=doc["tenant"],
                trigger_id=doc["_id"],
                token_id=token_id,
                now=now.timestamp(),
            )
            return token, None
        if mode in ("webhook_signature", "hmac", "shared_secret"):
            if given is not None:
                secret = given
            elif mode == "shared_secret":
                secret = _random.token_hex(32)  # 64 characters: what Asaas and GitLab take
            elif mode == "hmac":
                secret = partner_hmac.generate_secret(partner_hmac.scheme_from(doc["auth"]))
            else:
                secret = generate_secret()
            sealed = self._box.seal(secret, context=secret_context(doc["_id"]))
            entry = {
                "id": _random.token_urlsafe(8),
                "sealed": sealed,
                "issued_at": now,
                "until": None,
                "source": "partner" if given is not None else "gateway",
            }
            doc["auth"] = {**doc["auth"], "secrets": [*doc["auth"]["secrets"], entry]}
            return None, None if given is not None else secret
        return None, None

    async def _change(self, tenant: str, trigger_id: str, change: _Change) -> Doc:
        """Read-modify-write guarded by the document's revision, retried on a lost race."""
        for _ in range(_MAX_ATTEMPTS):
            doc = await self._doc(tenant, trigger_id)
            now = self._clock()
            changes, new_version = await change(doc, now)
            updated = await self._store.triggers.update(
                tenant,
                trigger_id,
                doc["rev"],
                {**changes, "updated_at": now},
                new_version=new_version,
            )
            if updated is not None:
                self._on_change(trigger_id)
                return updated
        raise Conflict("the trigger is being changed concurrently; retry")

    async def _doc(self, tenant: str, trigger_id: str) -> Doc:
        doc = await self._store.triggers.get(tenant, trigger_id)
        if doc is None:
            raise NotFound(f"no trigger {trigger_id!r}")
        return doc

    def _public(self, doc: Doc) -> dict[str, Any]:
        return public_trigger(doc, self._base_url)


def _access_change(doc: Doc, patch: Mapping[str, Any], auth: Doc, replaced: bool) -> str:
    """The `gateway.audit` change of a PATCH ("": none): `secret_replaced` (the partner's
    new secret; the old ones dropped at once, no grace), `auth_changed` (another member of
    `auth`), `access_changed` (its format or methods)."""
    if replaced:
        return "secret_replaced"
    if {**auth, "secrets": None} != {**doc["auth"], "secrets": None}:
        return "auth_changed"
    return "access_changed" if changes_access(doc, patch) and "auth" not in patch else ""


def _logged(tenant: str, trigger_id: str, change: str, **fields: Any) -> None:
    """One `gateway.audit` line per access change (never a credential: the trigger's id)."""
    log_change("trigger", trigger_id, change, tenant, label="trigger access", **fields)


def _credentialed(doc: Doc) -> str:
    mode: str = doc["auth"]["mode"]
    if mode == "partner_jwt":
        raise Conflict(
            "this trigger checks the partner's own JWTs: its keys are the partner's to rotate"
        )
    return mode


def _graced(entries: list[Doc], grace: datetime | None, now: datetime) -> list[Doc]:
    """Credentials still valid after a rotation: none without grace, else each until the end
    of the grace period (or its own earlier end)."""
    if grace is None:
        return []
    kept = []
    for entry in entries:
        until = entry.get("until")
        lost = isinstance(entry.get("sealed"), str) and is_lost(entry["sealed"])
        if (until is None or until > now) and not lost:  # a lost one would verify nothing
            kept.append({**entry, "until": grace if until is None else min(until, grace)})
    return kept


def _composed(spec: Any) -> Any:
    """The specification with its name in NFC, as it is stored: its length (at most 100)
    is checked as composed (NFC lengthens a few scripts' letters: U+0958 is two)."""
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        return {**spec, "name": nfc(spec["name"])}
    return spec
