"""What an admin may say about a trigger: the request schema, defaults, and the public view."""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import orjson

from gateway.auth.partner_hmac import (
    ALGORITHMS,
    ENCODINGS,
    MAX_TOLERANCE,
    PRESETS,
    SECRET_ENCODINGS,
)
from gateway.errors import FieldProblem, InvalidPayload
from gateway.formats.charsets import is_windows_1252, text_codec
from gateway.formats.json_tree import whole_number
from gateway.formats.unicode_forms import nfc
from gateway.outbound.breaker import SLOWEST_RATE
from gateway.paging import PAGE_PARAMS
from gateway.schemas import ENTITY_TYPES, compile_schema
from gateway.schemas.compiled import invalid
from gateway.schemas.registry import reference_field
from gateway.store import Doc
from gateway.store.entities import FILTERABLE

AUTH_MODES: Final = ("token", "partner_jwt", "webhook_signature", "hmac", "shared_secret")
# Headers that say something else to the gateway or its proxies: no shared secret goes there.
_NOT_SECRET_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "idempotency-key",
        "user-agent",
        "referer",
        "forwarded",
        "x-forwarded-for",
        "x-request-id",
    }
)
# The modes whose credential is a signature of the body.
SIGNED_MODES: Final = frozenset({"webhook_signature", "hmac"})
TARGETS: Final = ("entities", "positions")
METHODS: Final = ("GET", "POST")
_FIELD_PATH = r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$"
_MAPPING_NAME = {"type": ["string", "null"], "minLength": 1, "maxLength": 100}

_HEADER = {"type": "string", "pattern": "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$"}
_PAIR_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,32}$"}
# hmac mode: a preset, any member overridden (checked further by partner_hmac.scheme_from).
HMAC_PROPERTIES: Final[dict[str, Any]] = {
    "preset": {"enum": list(PRESETS)},
    "secret": {"type": "string", "minLength": 1, "maxLength": 1024, "writeOnly": True},
    "algorithm": {"enum": list(ALGORITHMS)},
    "header": _HEADER,
    "encoding": {"enum": list(ENCODINGS)},
    "prefix": {"type": "string", "maxLength": 32},
    "signed_content": {"type": "string", "minLength": 6, "maxLength": 200},
    "timestamp_header": _HEADER,
    "id_header": _HEADER,
    "tolerance_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_TOLERANCE},
    "secret_encoding": {"enum": list(SECRET_ENCODINGS)},
    # A header of name=value pairs (`t=…,v1=…`): the pair(s) holding the signature, the
    # timestamp's pair.
    "signature_field": _PAIR_NAME,
    "timestamp_field": _PAIR_NAME,
}
HMAC_FIELDS: Final = tuple(name for name in HMAC_PROPERTIES if name != "secret")

TRIGGER_SCHEMA: Final[dict[str, Any]] = {
    "title": "trigger",
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        # entities: upsert entities by natural key; positions: append fixes to vehicles'
        # tracks (SPEC §6), canonical fixes or a position mapping's output.
        "target": {"enum": list(TARGETS)},
        "entity_type": {"enum": list(ENTITY_TYPES)},
        "kind": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
        "methods": {
            "description": "GET reads entities (or is a `form` trigger's write); a trigger "
            "whose auth mode signs the body (`webhook_signature`, `hmac`) takes POST only",
            "type": "array",
            "items": {"enum": list(METHODS)},
            "minItems": 1,
            "uniqueItems": True,
        },
        "mapping": _MAPPING_NAME,
        "response_mapping": _MAPPING_NAME,
        "input_schema": {"type": ["object", "null"]},
        # Values for the params the inbound mapping declares (checked against it on save).
        "params": {
            "type": ["object", "null"],
            "maxProperties": 50,
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]{0,99}$"},
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "rate_limit": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "required": ["per_second"],
            "properties": {
                "per_second": {
                    "description": "requests per second, per process; at least one every 10,000 s",
                    "type": "number",
                    "minimum": SLOWEST_RATE,
                    "maximum": 100_000,
                },
                "burst": {
                    "description": "calls taken at once; by default a second's worth, "
                    "`per_second` rounded up (at least 1)",
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 100_000,
                },
            },
        },
        "max_body_bytes": {"type": "integer", "minimum": 64},
        "max_batch_items": {"type": "integer", "minimum": 1, "maximum": 10_000},
        "format": {"enum": ["json", "form", "xml"]},
        # The charset a partner sends when its requests name none (a Delphi ERP's bare
        # `application/json`, a device's GET with no body to label): docs/triggers.md#encodings.
        "charset": {"type": ["string", "null"], "minLength": 1, "maxLength": 40},
        # How POST answers are written: JSON always (SPEC §3), or in the form the caller
        # speaks once it is authenticated (SOAP envelopes and Faults, or XML when its Accept
        # prefers it): docs/triggers.md#answers-to-xml-and-soap-calls.
        "answers": {"enum": ["json", "as_called"]},
        "expose": {
            "type": ["array", "null"],
            "maxItems": 100,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": _FIELD_PATH, "maxLength": 200},
        },
        "auth": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "mode": {"enum": list(AUTH_MODES)},
                "token_in_query": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
                "jwks_url": {"type": "string", "pattern": "^https?://", "maxLength": 2000},
                "public_key_pem": {"type": "string", "maxLength": 20_000},
                "algorithms": {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"enum": ["RS256", "ES256", "EdDSA"]},
                },
                "issuer": {"type": "string", "minLength": 1, "maxLength": 500},
                "audience": {"type": "string", "minLength": 1, "maxLength": 500},
                **HMAC_PROPERTIES,
            },
            "if": {"required": ["mode"], "properties": {"mode": {"const": "partner_jwt"}}},
            # The audience ties a partner's token to us: without it, any token the partner
            # signs for anyone else would open this trigger.
            "then": {
                "required": ["audience"],
                "oneOf": [{"required": ["jwks_url"]}, {"required": ["public_key_pem"]}],
            },
        },
    },
    "allOf": [
        {
            "if": {"properties": {"entity_type": {"const": "other"}}, "required": ["entity_type"]},
            "then": {"required": ["kind"]},
            "else": {"not": {"required": ["kind"]}},
        },
        {
            # A position trigger appends vehicles' fixes: entity_type is vehicle or absent.
            "if": {"properties": {"target": {"const": "positions"}}, "required": ["target"]},
            "then": {"properties": {"entity_type": {"const": "vehicle"}}},
            "else": {"required": ["entity_type"]},
        },
    ],
}
_VALIDATOR = compile_schema(TRIGGER_SCHEMA)


def _integer_paths(schema: Mapping[str, Any], at: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Where the schema's integer settings sit (max_batch_items, rate_limit.burst, ...)."""
    found: list[tuple[str, ...]] = []
    for name, sub in schema.get("properties", {}).items():
        if sub.get("type") == "integer":
            found.append((*at, name))
        elif isinstance(sub.get("properties"), dict):
            found += _integer_paths(sub, (*at, name))
    return found


_INTEGER_PATHS: Final = _integer_paths(TRIGGER_SCHEMA)
# What PATCH may change; target, entity_type, kind and the auth mode are fixed at creation.
PATCHABLE: Final = frozenset(TRIGGER_SCHEMA["properties"]) - {"entity_type", "kind", "target"}
_PARTNER_JWT_FIELDS: Final = ("jwks_url", "public_key_pem", "algorithms", "issuer", "audience")


def new_trigger_id() -> str:
    """Unguessable: 120 random bits, URL-safe."""
    return "trg_" + secrets.token_urlsafe(15)


def new_token_id() -> str:
    return secrets.token_urlsafe(12)


def whole_numbers(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The specification with its integer settings given as `600.0` read as 600 (JSON
    Schema's integers), so they meet the same caps and are stored as integers."""
    out = dict(spec)
    for path in _INTEGER_PATHS:
        holder: Any = out
        for name in path[:-1]:
            inner = holder.get(name)
            if not isinstance(inner, Mapping):
                break
            holder[name] = holder = dict(inner)
        else:
            value = holder.get(path[-1])
            if isinstance(value, float) and (number := whole_number(value)) is not None:
                holder[path[-1]] = number
    return out


def check_spec(
    spec: Mapping[str, Any],
    *,
    max_body_bytes: int,
    max_batch_items: int,
    access_rules: bool = True,
) -> None:
    """InvalidPayload listing every problem of a trigger specification. A trigger's limits
    may be lower than the operator's (GATEWAY_MAX_*), never higher. `access_rules=False`
    leaves out the rules on how a trigger is reached that came after triggers were stored
    (a body-signed trigger takes no GET, `_signed_get_problems`; a token parameter is no read
    parameter, `_token_param_problems`): for a change that changes neither its methods, its
    auth nor its format (`changes_access`), so that such a trigger stays editable."""
    problems = [
        *_partner_keys_worded(_VALIDATOR.validate(_without_secret(spec)), spec),
        *_secret_problems(spec),
        *_charset_problems(spec),
        *_shared_secret_problems(spec),
        *((*_signed_get_problems(spec), *_token_param_problems(spec)) if access_rules else ()),
    ]
    for name, ceiling, setting in (
        ("max_body_bytes", max_body_bytes, "GATEWAY_MAX_BODY_BYTES"),
        ("max_batch_items", max_batch_items, "GATEWAY_MAX_BATCH_ITEMS"),
    ):
        value = whole_number(spec.get(name))
        if value is not None and value > ceiling:
            message = f"/{name}: at most {ceiling} ({setting})"
            problems.append(FieldProblem(f"/{name}", message, "maximum"))
    if problems:
        raise invalid("trigger", problems)
    schema = spec.get("input_schema")
    if schema is not None:
        compile_schema(schema, at="/input_schema")


def _charset_problems(spec: Mapping[str, Any]) -> list[FieldProblem]:
    """A `charset` no reader knows (`text_codec`: also `hex`, `rot13`, `unicode-escape`) is
    refused on save, not at every call."""
    charset = spec.get("charset")
    if not isinstance(charset, str) or not charset or is_windows_1252(charset):
        return []
    if text_codec(charset) is not None:
        return []
    message = f"/charset: unknown charset {charset!r} (e.g. windows-1252, ISO-8859-1, utf-16)"
    return [FieldProblem("/charset", message, "enum")]


def _without_secret(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """The specification without `auth.secret`, which is checked apart: a schema error
    quotes the value it refuses, and a secret must never be quoted back."""
    auth = spec.get("auth")
    if not isinstance(auth, Mapping) or "secret" not in auth:
        return spec
    return {**spec, "auth": {k: v for k, v in auth.items() if k != "secret"}}


def _signed_get_problems(spec: Mapping[str, Any]) -> list[FieldProblem]:
    """A trigger whose auth mode signs the body takes no GET: a GET has no body, so its
    signature would cover nothing of what it asks (docs/triggers.md#reading-get). Triggers
    stored before this rule still load; the receiver refuses their GETs (403). A change of
    such a trigger is held to the rule only when it changes its `methods` or its `auth`
    (`changes_access`): a rename, a new mapping or limits leave its GET as it was, refused
    at the door, and must be savable (they were a 422 until the change also dropped GET)."""
    auth, methods = spec.get("auth"), spec.get("methods")
    mode = auth.get("mode") if isinstance(auth, Mapping) else None
    signed = isinstance(mode, str) and mode in SIGNED_MODES  # the schema refuses other modes
    if not signed or not isinstance(methods, list) or "GET" not in methods:
        return []
    message = (
        f"/methods: a trigger authenticated by a body signature ({mode}) takes POST only: "
        "a GET has no body to sign, and is refused at the door; leave GET out"
    )
    return [FieldProblem("/methods", message, "signed")]


def rate_of(rate_limit: Mapping[str, Any]) -> tuple[float, int]:
    """(per second, burst) of a stored `rate_limit`: without a burst, a second's worth of
    calls, so a partner's pool sending a few at once well under the rate is not refused."""
    per_second = float(rate_limit["per_second"])
    burst = rate_limit.get("burst")
    return per_second, int(burst) if burst else max(1, math.ceil(per_second))


POSITION_READ_PARAMS: Final = ("plate", "tracker_id")
"""How a position trigger's GET names its vehicle (`receiver._recent_track`)."""


def read_params(spec: Mapping[str, Any]) -> frozenset[str]:
    """The query parameters the trigger's GET reads take (docs/triggers.md#reading-get):
    paging, the type's filters and its natural key; a position trigger's recent track, the
    vehicle's plate or tracker id (`receiver._recent_track`); none for a trigger without reads
    (POST only, a form trigger whose GET is a write)."""
    etype, methods = spec.get("entity_type"), spec.get("methods")
    if (
        spec.get("format", "json") == "form"
        or not isinstance(methods, list)
        or "GET" not in methods
    ):
        return frozenset()
    if spec.get("target", "entities") == "positions":
        return frozenset(POSITION_READ_PARAMS)
    if not isinstance(etype, str) or etype not in FILTERABLE:  # (the schema refuses `{}`)
        return frozenset()
    return frozenset({*PAGE_PARAMS, *FILTERABLE[etype], reference_field(etype)})


def _shared_secret_problems(spec: Mapping[str, Any]) -> list[FieldProblem]:
    """A `shared_secret` trigger names the header its partner sends the secret in (Asaas's
    `asaas-access-token`, GitLab's `X-Gitlab-Token`), not one that means something else."""
    auth = spec.get("auth")
    if not isinstance(auth, Mapping) or auth.get("mode") != "shared_secret":
        return []
    header = auth.get("header")
    if header is None:
        message = "/auth/header: the header the partner sends its secret in, e.g. X-Gitlab-Token"
        return [FieldProblem("/auth/header", message, "required")]
    if isinstance(header, str) and header.lower() in _NOT_SECRET_HEADERS:
        message = f"/auth/header: {header!r} is not for a secret; name the partner's own header"
        return [FieldProblem("/auth/header", message, "not")]
    return []


def _token_param_problems(spec: Mapping[str, Any]) -> list[FieldProblem]:
    """A token parameter named like a parameter the reads take would hide it: the filter
    dropped (every entity answered) or paging broken (`?limit=<token>`)."""
    auth = spec.get("auth")
    name = auth.get("token_in_query") if isinstance(auth, Mapping) else None
    if not isinstance(name, str) or name not in read_params(spec):
        return []
    message = (
        f"/auth/token_in_query: {name!r} is a query parameter of this trigger's GET reads "
        f"(a filter or paging); name the token parameter otherwise, e.g. 'token'"
    )
    return [FieldProblem("/auth/token_in_query", message, "not")]


def _partner_keys_worded(
    problems: list[FieldProblem], spec: Mapping[str, Any]
) -> list[FieldProblem]:
    """The schema's `oneOf` of a partner_jwt trigger's keys said at the members to give, in
    words: a JWKS URL or a public key, neither given (both are where the admin gives one), or
    both given (the key given beside the URL). The validator's text names `oneOf` at `/auth`."""
    auth = spec.get("auth")
    if not isinstance(auth, Mapping):
        return problems
    worded = [p for p in problems if not (p.pointer == "/auth" and p.keyword == "oneOf")]
    if len(worded) == len(problems):
        return problems
    if "jwks_url" in auth and "public_key_pem" in auth:
        message = "/auth/public_key_pem: give the partner's JWKS URL or its public key, not both"
        return [*worded, FieldProblem("/auth/public_key_pem", message, "oneOf")]
    needed = "the partner's JWKS URL (jwks_url) or its public key (public_key_pem) is required"
    return [
        *worded,
        *(
            FieldProblem(f"/auth/{name}", f"/auth/{name}: {needed}", "required")
            for name in ("jwks_url", "public_key_pem")
        ),
    ]


def _secret_problems(spec: Mapping[str, Any]) -> list[FieldProblem]:
    auth = spec.get("auth")
    if not isinstance(auth, Mapping) or "secret" not in auth:
        return []
    secret, limit = auth["secret"], HMAC_PROPERTIES["secret"]["maxLength"]
    if isinstance(secret, str) and 1 <= len(secret) <= limit:
        return []
    message = f"/auth/secret: a secret is text of 1 to {limit} characters"
    return [FieldProblem("/auth/secret", message, "type")]


def document(
    spec: Mapping[str, Any],
    *,
    trigger_id: str,
    tenant: str,
    defaults: Mapping[str, Any],
    now: datetime,
) -> Doc:
    """The stored document for a new trigger (credentials are added by the caller)."""
    auth = dict(spec.get("auth") or {})
    mode = auth.get("mode", "token")
    stored_auth: Doc = {"mode": mode, "token_in_query": auth.get("token_in_query"), "secrets": []}
    if mode == "partner_jwt":
        stored_auth.update({k: auth.get(k) for k in _PARTNER_JWT_FIELDS})
        stored_auth["algorithms"] = auth.get("algorithms") or ["RS256", "ES256", "EdDSA"]
    if mode == "shared_secret":  # the header; its secret is sealed by the caller
        stored_auth["header"] = auth.get("header")
    if mode == "hmac":  # never `secret`: a partner's secret is sealed by the caller
        stored_auth.update({k: auth.get(k) for k in HMAC_FIELDS})
    doc: Doc = {
        "_id": trigger_id,
        "tenant": tenant,
        "name": nfc(spec["name"]),  # one name in either Unicode form (unique per tenant)
        "target": spec.get("target", "entities"),
        "entity_type": spec.get("entity_type", "vehicle"),
        "kind": spec.get("kind"),
        "methods": sorted(spec.get("methods") or ["POST"]),
        "format": spec.get("format", "json"),
        "answers": spec.get("answers", "json"),
        "charset": spec.get("charset"),
        "mapping": spec.get("mapping"),
        "response_mapping": spec.get("response_mapping"),
        "params": spec.get("params"),
        "rate_limit": spec.get("rate_limit"),
        "expose": spec.get("expose"),
        "max_body_bytes": spec.get("max_body_bytes", defaults["max_body_bytes"]),
        "max_batch_items": spec.get("max_batch_items", defaults["max_batch_items"]),
        "auth": stored_auth,
        "tokens": [],
        "status": "active",
        "version": 1,
        "rev": 1,
        "created_at": now,
        "updated_at": now,
    }
    doc.update(schema_fields(spec.get("input_schema")))
    return doc


def schema_fields(schema: Mapping[str, Any] | None) -> Doc:
    # Kept as JSON text: a schema's "$schema"/"$ref" keys are not welcome as BSON field names.
    return {"input_schema_json": None if schema is None else orjson.dumps(schema).decode()}


def as_spec(doc: Doc) -> dict[str, Any]:
    """A stored trigger as the specification that would create it (for PATCH merging)."""
    auth = doc["auth"]
    spec: dict[str, Any] = {
        "name": doc["name"],
        "target": doc.get("target", "entities"),
        "entity_type": doc["entity_type"],
        "methods": doc["methods"],
        "format": doc["format"],
        "answers": doc.get("answers", "json"),
        "max_body_bytes": doc["max_body_bytes"],
        "max_batch_items": doc["max_batch_items"],
        "auth": {k: v for k, v in auth.items() if k != "secrets" and v is not None},
    }
    if doc.get("kind") is not None:
        spec["kind"] = doc["kind"]
    for name in ("charset", "mapping", "response_mapping", "params", "rate_limit", "expose"):
        if doc.get(name) is not None:
            spec[name] = doc[name]
    if doc.get("input_schema_json"):
        spec["input_schema"] = orjson.loads(doc["input_schema_json"])
    return spec


def changes_access(doc: Doc, patch: Mapping[str, Any]) -> bool:
    """Whether a PATCH changes how the trigger is reached: its auth (replaced whole, so any
    given), its format, or its methods (the same ones restated, in any order, as the admin
    UI's edit form does, are no change). Only such a PATCH is held to the access rules that
    came after triggers were stored (`check_spec`)."""
    if "auth" in patch or ("format" in patch and patch["format"] != doc.get("format")):
        return True
    if "methods" not in patch:
        return False
    given, stored = patch["methods"], doc.get("methods")
    if isinstance(given, list) and isinstance(stored, list):
        return sorted(map(str, given)) != sorted(map(str, stored))
    return True


def merge_patch(doc: Doc, patch: Mapping[str, Any]) -> dict[str, Any]:
    """The specification after a PATCH: top-level members replace, null clears."""
    fixed = sorted(set(patch) - PATCHABLE)
    if fixed:
        problems = [
            FieldProblem(f"/{name}", f"/{name}: cannot change; create another trigger", "readOnly")
            for name in fixed
        ]
        raise invalid("trigger", problems)
    spec = as_spec(doc)
    for name, value in patch.items():
        if value is None:
            spec.pop(name, None)
        else:
            spec[name] = value
    old_mode = doc["auth"]["mode"]
    auth = spec.get("auth")
    if auth is not None and not isinstance(auth, dict):
        return spec  # the validation that follows reports it
    new_mode = (auth or {}).get("mode", "token")
    if new_mode != old_mode:
        message = f"/auth/mode: cannot change from {old_mode!r}; create another trigger"
        raise InvalidPayload(message, [FieldProblem("/auth/mode", message, "readOnly")])
    return spec


def public_trigger(doc: Doc, base_url: str) -> dict[str, Any]:
    """The admin's view of a trigger: never a token, a secret or a token id."""
    auth = {k: v for k, v in doc["auth"].items() if k != "secrets" and v is not None}
    credentials = public_credentials(doc)
    schema = doc.get("input_schema_json")
    return {
        "id": doc["_id"],
        "url": hook_url(base_url, doc["_id"]),
        "name": doc["name"],
        "target": doc.get("target", "entities"),
        "entity_type": doc["entity_type"],
        "kind": doc.get("kind"),
        "methods": doc["methods"],
        "format": doc["format"],
        "answers": doc.get("answers", "json"),
        "charset": doc.get("charset"),
        "mapping": doc.get("mapping"),
        "response_mapping": doc.get("response_mapping"),
        "params": doc.get("params"),
        "input_schema": orjson.loads(schema) if schema else None,
        "rate_limit": doc.get("rate_limit"),
        "expose": doc.get("expose"),
        "max_body_bytes": doc["max_body_bytes"],
        "max_batch_items": doc["max_batch_items"],
        "auth": auth,
        "status": doc["status"],
        "version": doc["version"],
        "credentials": credentials,
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
    }


def public_credentials(doc: Doc) -> list[dict[str, Any]]:
    """A trigger's credentials as its admin view lists them: when each was issued, until when
    it is valid (and a secret's source), never the credential."""
    return [
        {"issued_at": c["issued_at"], "valid_until": c.get("until")}
        | ({"source": c["source"]} if "source" in c else {})  # a secret's: gateway | partner
        for c in [*doc.get("tokens", ()), *doc["auth"].get("secrets", ())]
    ]


def credentials_revision(credentials: list[dict[str, Any]]) -> str:
    """A digest of `public_credentials`: every rotation and revocation moves it. A rotation
    asked from a page that showed another one is refused (`TriggerService.rotate`): it would
    revoke, unseen, the token another admin was just shown."""
    shown = orjson.dumps(credentials, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(shown).hexdigest()[:32]


def hook_url(base_url: str, trigger_id: str) -> str:
    return f"{base_url.rstrip('/')}/hooks/{trigger_id}"
