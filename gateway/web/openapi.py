"""The OpenAPI 3.1 document, generated from the URL table and the JSON Schemas.

Handlers declare what the router cannot know with `@operation(...)`; paths, methods and path
parameters come from the routes themselves, so the document cannot drift from the table.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import aiohttp_jinja2
from aiohttp import web

from gateway import __version__
from gateway.config import Settings
from gateway.errors import PROBLEM_BASE
from gateway.formats.xml_writer import GATEWAY_NS, PROBLEM_NS, SOAP_ENVELOPES
from gateway.schemas.registry import ENTITY_TYPES, SchemaRegistry
from gateway.web import conditional
from gateway.web.problems import dumps
from gateway.web.state import services_key

H = TypeVar("H", bound=Callable[..., Any])
_ATTR = "__openapi_operation__"
_PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {
            "type": "string",
            "description": PROBLEM_BASE + "<slug>; every slug, its status and when "
            'it is answered: docs/api.md "Problem types"',
        },
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {
            "type": "string",
            "description": "The request's path, or urn:rabbot:request:<X-Request-ID> for a "
            "request refused before its path was read",
        },
        "errors": {
            "type": "array",
            "description": "The first 100 problems",
            "maxItems": 100,
            "items": {
                "type": "object",
                "required": ["pointer", "message", "keyword"],
                "properties": {
                    "pointer": {"type": "string"},
                    "message": {"type": "string"},
                    "keyword": {"type": "string"},
                },
            },
        },
        "errors_omitted": {
            "type": "integer",
            "minimum": 1,
            "description": "How many problems past the first 100 `errors` does not list",
        },
    },
}
_DEFAULT_ERRORS = {
    "admin": (400, 401, 403, 404, 422, 429),
    "trigger": (400, 401, 403, 405, 413, 415, 422, 429, 503),
    "none": (),
}
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No content",
    207: "Batch with at least one failed item (see `results`)",
    400: "Malformed request",
    401: "Missing or invalid credentials",
    403: "Not allowed for these credentials",
    404: "Not found",
    405: "Method not allowed",
    408: "The body took too long to arrive",
    409: "Conflict",
    413: "Body too large",
    415: "Unsupported media type",
    417: "An Expect other than 100-continue",
    422: "Validation failed",
    429: "Rate limited (see Retry-After)",
    500: "A SOAP 1.1 Fault (every refusal but 401, 408, 413, 415, 429 and 503), or an "
    "internal error",
    501: "A transfer coding before the final chunked (gzip, chunked)",
    502: "Partner error",
    503: "Database unavailable (see Retry-After)",
    504: "Partner timeout",
}

_SECRET_DAMAGED = (
    "A stored secret the call needs is damaged (secret-damaged): save it again; or an "
    "internal error"
)


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    tag: str
    auth: str = "admin"  # "admin" | "trigger" | "none"
    # A JSON Schema, or "entity" for the entity schema selected by the {type} path parameter
    # ("entity_patch": what a merge patch of one may hold).
    request: Mapping[str, Any] | str | None = None
    response: Mapping[str, Any] | str | None = None
    status: int = 200
    query: Sequence[tuple[str, str]] = ()
    errors: Sequence[int] = field(default_factory=tuple)
    # False for the few routes that never touch the database (health, metrics, the docs):
    # they keep answering while it is down.
    database: bool = True
    # Whether a retry with the same `Idempotency-Key` header is answered from the first call.
    idempotency_key: bool = False
    # Optional request headers the handler reads: (name, description, JSON Schema).
    headers: Sequence[tuple[str, str, Mapping[str, Any]]] = ()
    # False when the body may be left out (the server then takes `{}`).
    body_required: bool = True
    # Other success statuses answered with the same schema (e.g. 201 and 207 for /hooks).
    also: Sequence[int] = ()
    # JSON Schemas of path and query parameters by name (default: any string), and the
    # query parameters that must be given.
    schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    required_query: Sequence[str] = ()
    # Answers (results and problems) in plain XML or SOAP when the request speaks them
    # (gateway/web/replies.py), else JSON.
    xml_answers: bool = False
    # Whether the call opens a stored secret to reach a partner (an action's invoke, a channel's
    # test send): a damaged one is a 500 `secret-damaged`, a key that does not open the key
    # check a 503 `key-refused` (docs/api.md, gateway/web/middlewares.py).
    opens_secrets: bool = False
    # Body members whose ceiling is an operator setting (member: `Settings` attribute, e.g.
    # a trigger's max_body_bytes, at most GATEWAY_MAX_BODY_BYTES): the document built by a
    # process says its `maximum`.
    ceilings: Mapping[str, str] = field(default_factory=dict)
    # The media type of the success answer's `response` (the metrics' text format).
    media: str = "application/json"
    # The bodies the handler reads besides JSON (a YAML upload, a form, XML): media type →
    # its schema (`request` is the JSON one's).
    request_media: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # What an error status means here, when the generic text (`_STATUS_TEXT`) says less.
    error_texts: Mapping[int, str] = field(default_factory=dict)
    # Query parameters beyond `query` are the handler's to check (an entity list's filters);
    # otherwise an admin route refuses any other (gateway/web/admin_auth.py).
    open_query: bool = False


def operation_of(handler: Any) -> Operation | None:
    """What `@operation` declared on a route's handler (None for aiohttp's own)."""
    op = getattr(handler, _ATTR, None)
    return op if isinstance(op, Operation) else None


def operation(summary: str, *, tag: str, **details: Any) -> Callable[[H], H]:
    def mark(handler: H) -> H:
        setattr(handler, _ATTR, Operation(summary, tag, **details))
        return handler

    return mark


def build_document(app: web.Application) -> dict[str, Any]:
    schemas = app[services_key].schemas
    settings = app[services_key].settings
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        op = getattr(route.handler, _ATTR, None)
        if route.method == "HEAD" or op is None or route.resource is None:
            continue
        path = _PARAM.sub(r"{\1}", route.resource.canonical)
        paths.setdefault(path, {})[route.method.lower()] = _operation(path, op, settings)
    for path, operations in paths.items():
        if path.startswith(conditional.API):
            _conditional(operations)
    _typed_lists(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Rabbot webhook gateway",
            "version": __version__,
            "description": "Triggers (inbound webhooks), actions (outbound webhooks) and "
            "the admin API. Errors are RFC 9457 problem details.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {
                "Problem": PROBLEM_SCHEMA,
                "Entity": ENTITY_ANSWER,
                **_entity_schemas(schemas),
            },
            "securitySchemes": {
                "admin": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Admin token: `gateway admin-token --tenant T`",
                },
                "trigger": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The token returned when the trigger was created",
                },
            },
        },
    }


def _answer_schema(operations: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a GET answers with 200 (None when it declares none)."""
    content = operations.get("get", {}).get("responses", {}).get("200", {}).get("content", {})
    schema: dict[str, Any] | None = content.get("application/json", {}).get("schema")
    return schema


def _typed_lists(paths: dict[str, dict[str, Any]]) -> None:
    """A list whose route declares its `items` untyped lists what the read of one of them
    answers (`GET /x` lists the `GET /x/{id}` of each): its items take that schema."""
    for path, operations in paths.items():
        page = _answer_schema(operations)
        items = (page or {}).get("properties", {}).get("items")
        if items != {"type": "array"}:
            continue
        one = next(
            (
                schema
                for child, child_ops in paths.items()
                if _PARAM.fullmatch(child.removeprefix(path + "/"))
                and (schema := _answer_schema(child_ops)) is not None
            ),
            None,
        )
        if one is not None and one != {"type": "object"}:
            assert page is not None
            page["properties"] = {**page["properties"], "items": {"type": "array", "items": one}}


def _capped(schema: dict[str, Any], op: Operation, settings: Settings) -> dict[str, Any]:
    """The request schema with each of `op.ceilings` as its member's `maximum` (the lower of
    the schema's own and the setting's)."""
    if not op.ceilings:
        return schema
    properties = dict(schema["properties"])
    for member, setting in op.ceilings.items():
        ceiling = getattr(settings, setting)
        own = properties[member].get("maximum")
        properties[member] = {**properties[member], "maximum": min(own or ceiling, ceiling)}
    return {**schema, "properties": properties}


# An entity as the API answers it (`gateway.entities.public`): the written fields, which the
# schemas named after each type describe, plus the envelope; a change adds `changed`.
ENTITY_ANSWER: Final[dict[str, Any]] = {
    "type": "object",
    "description": "an entity: its fields (see Vehicle, Driver, Supplier, Operator, Other) "
    "with its id and metadata; a change also lists the fields it changed",
    "required": ["id", "entity_type", "version", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string"},
        "entity_type": {"enum": list(ENTITY_TYPES)},
        "version": {"type": "integer", "minimum": 1},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "changed": {"type": "array", "items": {"type": "string"}},
    },
}


def _entity_schemas(schemas: SchemaRegistry) -> dict[str, Any]:
    """Each type's schema (`Vehicle`, what a POST writes) and what a PATCH of one may hold
    (`VehiclePatch`: `merged_into`)."""
    out = {}
    for etype in ENTITY_TYPES:
        name = etype.capitalize()
        schema = schemas.entity_schema(etype)
        schema.pop("$schema", None)
        schema.pop("$id", None)
        out[name] = _rebase(schema, f"#/components/schemas/{name}")
        patch = _rebase(
            merged_into(schema, schema.get("$defs", {})), f"#/components/schemas/{name}"
        )
        out[f"{name}Patch"] = {**patch, "title": f"{schema.get('title', name)} (merge patch)"}
    return out


def _rebase(node: Any, base: str) -> Any:
    """Point a schema's local `$ref`s at where it now sits inside the document."""
    if isinstance(node, dict):
        return {
            k: (
                base + v[1:]
                if k == "$ref" and isinstance(v, str) and v.startswith("#")
                else _rebase(v, base)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rebase(v, base) for v in node]
    return node


def _schema(value: Mapping[str, Any] | str, *, answer: bool = False) -> dict[str, Any]:
    """`"entity"`: what may be written of one (a request), or an entity as stored (an answer:
    its fields with its id and metadata, which the written schemas do not allow)."""
    if value == "entity" and answer:
        return {"$ref": "#/components/schemas/Entity"}
    # `anyOf`, not `oneOf`: the {type} path parameter names the type the server checks the
    # body against, and one path item cannot give each of its values a schema; no member of
    # the body names the type (an `other`'s `kind` names its kind), so no discriminator can.
    # The types' schemas overlap (a driver with an e-mail is a valid operator too): `oneOf`
    # refused such valid bodies as "valid under each of Operator, Driver".
    if value in ("entity", "entity_patch"):
        suffix = "Patch" if value == "entity_patch" else ""
        names = [f"{t.capitalize()}{suffix}" for t in ENTITY_TYPES]
        return {"anyOf": [{"$ref": f"#/components/schemas/{name}"} for name in names]}
    assert not isinstance(value, str)
    return dict(value)


def _operation(path: str, op: Operation, settings: Settings) -> dict[str, Any]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": _param_schema(op, name)}
        for name in _PARAM.findall(path)
    ]
    params += [
        {
            "name": name,
            "in": "query",
            "required": name in op.required_query,
            "description": text,
            "schema": _param_schema(op, name),
        }
        for name, text in op.query
    ]
    if op.idempotency_key:
        params.append(_IDEMPOTENCY_KEY)
    params += [
        {"name": name, "in": "header", "required": False, "description": text, "schema": schema}
        for name, text, schema in op.headers
    ]
    responses: dict[str, Any] = {}
    for status in (op.status, *op.also):
        ok: dict[str, Any] = {"description": _STATUS_TEXT.get(status, "OK")}
        if op.response is not None:
            ok["content"] = {op.media: {"schema": _schema(op.response, answer=True)}}
            if op.xml_answers:
                ok["content"] |= _XML_RESULTS
        responses[str(status)] = ok
    for status in sorted(_errors(op)):
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        responses[str(status)] = {
            "description": op.error_texts.get(status)
            or (
                _SECRET_DAMAGED
                if status == 500 and op.opens_secrets
                else _STATUS_TEXT.get(status, "Error")
            ),
            "content": problem | _XML_PROBLEMS if op.xml_answers else problem,
        }
        if status in (429, 503) or (status == 409 and op.idempotency_key):
            responses[str(status)]["headers"] = {"Retry-After": _RETRY_AFTER}
    if op.idempotency_key and "409" in responses:
        responses["409"]["description"] = _STILL_PROCESSING
    result: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": _operation_id(path, op.summary),
        "parameters": params,
        "responses": responses,
    }
    if op.auth != "none":
        result["security"] = [{op.auth: []}]
    if op.request is not None:
        result["requestBody"] = {
            "required": op.body_required,
            "content": {
                "application/json": {"schema": _capped(_schema(op.request), op, settings)},
                **{media: {"schema": dict(schema)} for media, schema in op.request_media.items()},
            },
        }
    return result


# The `cursor` of lists paged by document id: the last id of the previous page, or empty for
# the first page; any other is a 400 (gateway/store/client.py, cursor_id).
ID_CURSOR: dict[str, Any] = {"type": "string", "pattern": "^([0-9a-fA-F]{24})?$"}


TEXT_NAME: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"}
"""A resource's name as the server takes it: 1-200 characters, not only spaces."""
FILE_NAME: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"}
"""A template's or a channel's name: 1-100 letters, digits, `_ . -`."""


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A request body's schema that refuses the members it does not declare, as the server
    does (a `422` naming each): `additionalProperties: false`."""
    return {**schema, "additionalProperties": False}


def cleared(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A member a PATCH may set to null, which clears it (back to its default: merge patch)."""
    kinds = schema.get("type", ())
    if "null" in (kinds if isinstance(kinds, list) else (kinds,)):
        return dict(schema)
    return {"anyOf": [dict(schema), {"type": "null", "description": "cleared"}]}


def merge_patch(
    create: Mapping[str, Any],
    description: str,
    *,
    nullable: Sequence[str] = (),
    without: Sequence[str] = (),
    more: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The request schema of a PATCH that merges its body into what `create` made (RFC 7396,
    objects replaced whole): the create's members but `without`, none required, of the same
    types, those in `nullable` also null (it clears them), and `more` (a `status` the create
    does not take). Any other member is a `422` naming it, as for the create:
    `additionalProperties: false`."""
    properties = {
        name: cleared(member) if name in nullable else member
        for name, member in create["properties"].items()
        if name not in without
    }
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "properties": {**properties, **(more or {})},
    }


def merged_into(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """What a JSON merge patch (RFC 7396) of documents `schema` describes may hold: objects
    merge member by member into the stored ones, so none is required, and each member but a
    required one may be null (removed); a member the schema marks `x-whole` (one value,
    replaced whole: a driver's identity) keeps its own schema. `defs`: the schema's `$defs`,
    which its `$ref`s name."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        schema = defs[ref.removeprefix("#/$defs/")]
    if "properties" not in schema or schema.get("x-whole"):
        return dict(schema)
    kept = {
        k: v
        for k, v in schema.items()
        if k not in ("required", "properties", "$defs", "$schema", "$id", "title")
    }
    required = set(schema.get("required", ()))
    members = {
        name: merged_into(member, defs) if name in required else cleared(merged_into(member, defs))
        for name, member in schema["properties"].items()
    }
    return {**kept, "properties": members}


def text_cursor(shape: re.Pattern[str]) -> dict[str, Any]:
    """The `cursor` of lists paged by a text id or name: one of the `shape` the store checks
    (gateway/store/client.py, cursor_text), or empty for the first page; any other is a 400."""
    return {"type": "string", "pattern": f"^({shape.pattern})?$"}


def rotated_secret(owner_key: str) -> dict[str, Any]:
    """The answer of a rotation of a flow's or an action's signing secret: the owner's
    `owner_key` (`name`, `id`), the new secret (shown once) and when it was rotated."""
    return {
        "type": "object",
        "required": [owner_key, "secret", "secret_rotated_at"],
        "properties": {
            owner_key: {"type": "string"},
            "secret": {"type": "string", "pattern": "^whsec_", "description": "shown this once"},
            "secret_rotated_at": {"type": "string", "format": "date-time"},
        },
    }


_PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 200},
}


def _param_schema(op: Operation, name: str) -> dict[str, Any]:
    return dict(op.schemas.get(name) or _PARAM_SCHEMAS.get(name) or {"type": "string"})


def _xml_schema(name: str, namespace: str, prefix: str, description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "xml": {"name": name, "namespace": namespace, "prefix": prefix},
    }


# Answers of routes with `xml_answers` (docs/triggers.md#answers-to-xml-and-soap-calls).
_SOAP_DOC = "docs/triggers.md#answers-to-xml-and-soap-calls"
_XML_RESULTS: dict[str, Any] = {
    "application/xml": {
        "schema": _xml_schema(
            "Response",
            GATEWAY_NS,
            "rabbot",
            "to a plain XML call whose Accept prefers XML: the JSON answer's members as "
            "elements, arrays as `i` items, the status as an attribute",
        )
    },
    "text/xml": {
        "schema": _xml_schema(
            "Envelope",
            SOAP_ENVELOPES["1.1"],
            "soap",
            f"to a SOAP 1.1 call: always 200, the rabbot:Response in the Body ({_SOAP_DOC})",
        )
    },
    "application/soap+xml": {
        "schema": _xml_schema(
            "Envelope",
            SOAP_ENVELOPES["1.2"],
            "env",
            f"to a SOAP 1.2 call: always 200, the rabbot:Response in the Body ({_SOAP_DOC})",
        )
    },
}
_XML_PROBLEMS: dict[str, Any] = {
    "application/problem+xml": {
        "schema": _xml_schema(
            "problem", PROBLEM_NS, "", "to a plain XML call whose Accept prefers XML (RFC 9457)"
        )
    },
    "text/xml": {
        "schema": _xml_schema(
            "Envelope",
            SOAP_ENVELOPES["1.1"],
            "soap",
            f"to a SOAP 1.1 call: a Fault whose detail is the problem ({_SOAP_DOC})",
        )
    },
    "application/soap+xml": {
        "schema": _xml_schema(
            "Envelope",
            SOAP_ENVELOPES["1.2"],
            "env",
            f"to a SOAP 1.2 call: a Fault whose Detail is the problem ({_SOAP_DOC})",
        )
    },
}

IDEMPOTENCY_KEY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": "^[\\x21-\\x7e]([\\x20-\\x7e]{0,253}[\\x21-\\x7e])?$",
}
_IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "a retry with the same key and body gets the first answer again (24 h)",
    "schema": IDEMPOTENCY_KEY_SCHEMA,
}


_RETRY_AFTER: dict[str, Any] = {
    "description": "seconds to wait before retrying",
    "schema": {"type": "integer", "minimum": 1},
}
_STILL_PROCESSING = (
    "Conflict; or a call with the same `Idempotency-Key` is still being processed: retry "
    "after `Retry-After` seconds"
)


def _precondition(name: str, description: str) -> dict[str, Any]:
    """A conditional request header (RFC 9110 §13.1) as an OpenAPI parameter."""
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


_IF_MATCH = _precondition(
    "If-Match",
    "the document's `ETag` as its GET gave it (or `*`): the change applies only if the "
    "document is still that version, else a 412 and nothing changes",
)
_IF_NONE_MATCH_READ = _precondition(
    "If-None-Match",
    "`ETag`s the client holds (or `*`): a 304 without a body when one of them is the "
    "document's current version",
)
_IF_NONE_MATCH_CHANGE = _precondition(
    "If-None-Match",
    "`ETag`s (or `*`: any version): the change applies only if the document is none of "
    "them, else a 412 and nothing changes",
)
_ETAG = {
    "description": "the version of this document, for `If-Match` and `If-None-Match`",
    "schema": {"type": "string"},
}


def _conditional(operations: dict[str, Any]) -> None:
    """A document of the admin API that PATCH, PUT or DELETE change
    (gateway/web/conditional.py): its GET answers an `ETag` (304 for an `If-None-Match`
    naming it), and a change may send `If-Match` or `If-None-Match` (412 when not met)."""
    changes = [operations[m] for m in ("patch", "put", "delete") if m in operations]
    read = operations.get("get")
    if read is None or not changes:
        return
    for answer in (r for status, r in read["responses"].items() if status.startswith("2")):
        answer["headers"] = {"ETag": _ETAG}
    read["parameters"].append(_IF_NONE_MATCH_READ)
    read["responses"]["304"] = {
        "description": "Not Modified: `If-None-Match` names the current version",
        "headers": {"ETag": _ETAG},
    }
    for change in changes:
        change["parameters"] += [_IF_MATCH, _IF_NONE_MATCH_CHANGE]
        change["responses"]["412"] = {
            "description": "`If-Match` names another version of the document, or "
            "`If-None-Match` names its current one",
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }


def _errors(op: Operation) -> set[int]:
    """Every error status the route can answer: its own, its auth's, and the edge's."""
    errors = {*_DEFAULT_ERRORS[op.auth], *op.errors}
    if op.xml_answers or op.opens_secrets:
        errors.add(500)  # a SOAP 1.1 Fault; a stored secret damaged
    if op.request is not None:
        # malformed, too slow, too large, not JSON; an Expect or a transfer coding the edge
        # does not take (web/requests.py check_refused_early)
        errors |= {400, 408, 413, 415, 417, 501}
    if op.database and op.auth != "none":
        errors.add(503)
    return errors


def _operation_id(path: str, summary: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "_", summary).strip("_").lower()


class Reference:
    """The process's OpenAPI document and its HTML page, built once, off the event loop, at
    the first call of either: both follow from the URL table, the settings and the entity
    schemas, fixed when the app starts. Built per call, a document took 30–300 ms of the loop
    every request waited on, for anyone (the two routes take no token)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._json: bytes | None = None
        self._html: str | None = None

    async def json(self, app: web.Application) -> bytes:
        await self._build(app)
        assert self._json is not None
        return self._json

    async def html(self, request: web.Request) -> str:
        await self._build(request.app)
        assert self._html is not None
        return self._html

    async def _build(self, app: web.Application) -> None:
        async with self._lock:
            if self._json is None:
                self._json, self._html = await asyncio.to_thread(_built, app)


def _built(app: web.Application) -> tuple[bytes, str]:
    doc = build_document(app)
    page = aiohttp_jinja2.get_env(app).get_template("api_docs.html").render(doc=doc)
    return dumps(doc), page


reference_key = web.AppKey("api_reference", Reference)


@operation("The OpenAPI document", tag="meta", auth="none", database=False)
async def openapi_json(request: web.Request) -> web.Response:
    body = await request.app[reference_key].json(request.app)
    return web.Response(body=body, content_type="application/json")


@operation("Human-readable API reference (works offline)", tag="meta", auth="none", database=False)
async def api_docs(request: web.Request) -> web.Response:
    page = await request.app[reference_key].html(request)
    return web.Response(text=page, content_type="text/html")
