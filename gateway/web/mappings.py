"""/api/v1/mappings: thin adapters over the mapping use case (upload, versions, activation,
diff, delete, dry run)."""

from __future__ import annotations

from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.hdrs import CONTENT_TYPE

from gateway.errors import (
    BadRequest,
    FieldProblem,
    InvalidPayload,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from gateway.formats.json_tree import is_text
from gateway.mapping import file_text
from gateway.mapping.limits import MAX_FILE_BYTES
from gateway.store.client import NAME_CURSOR
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import operation, text_cursor
from gateway.web.problems import json_response
from gateway.web.requests import (
    ACTIVATE,
    VERSION_DIFF,
    VERSION_NUMBER,
    body_deadline,
    charset_of,
    content_coding,
    is_json,
    multipart_reader,
    next_part,
    page_params,
    query_flag,
    read_body,
    read_object,
    read_version_to_activate,
    version_number,
)
from gateway.web.state import services_of

YAML_TYPES = frozenset(
    {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"}
)

# mapping_files/service.py `_keeps_its_users`; versioned.py `activate`.
_REFUSED_BY_USERS = (
    "A trigger, action or schedule naming the mapping would refuse this version as active "
    "(`used_by` names them; docs/mapping-lifecycle.md), or the mapping changed meanwhile"
)


def upload_media(what: str, *, form: bool) -> dict[str, dict[str, Any]]:
    """The bodies an upload of a `what` file takes besides JSON, as the document declares
    them: its text in each of `YAML_TYPES`, and with `form` a multipart form's `file`."""
    text = {"type": "string", "description": f"the {what} file (YAML, or JSON)"}
    media: dict[str, dict[str, Any]] = {ctype: text for ctype in sorted(YAML_TYPES)}
    if form:
        media["multipart/form-data"] = {
            "type": "object",
            "required": ["file"],
            "properties": {"file": {**text, "contentMediaType": "application/yaml"}},
        }
    return media


_CHUNK = 64 * 1024
# What a multipart form adds around its file (boundaries, part headers, other small fields).
_FORM_FRAME = 16 * 1024

_VERSION_MEMBERS: dict[str, Any] = {
    "name": {"type": "string"},
    "version": {"type": "integer"},
    "active": {"type": "boolean"},
    "format": {"enum": ["yaml", "json"]},
    "checksum": {"type": "string", "description": "sha256 of the source text"},
    "author": {"type": "string"},
    "created_at": {"type": "string", "format": "date-time"},
    "direction": {"enum": ["inbound", "outbound"]},
    "entity_type": {"type": ["string", "null"]},
    "source": {"type": "string"},
    "document": {"type": "object"},
}
_VERSION = {"type": "object", "properties": _VERSION_MEMBERS}
_UPLOADED = {
    "type": "object",
    "properties": {
        **_VERSION_MEMBERS,
        "created": {"type": "boolean", "description": "false: an identical re-upload"},
        "warnings": {
            "type": "array",
            "items": {"type": "string"},
            "description": "deprecated names the mapping uses (docs/entities.md)",
        },
    },
}
_LIST = {
    "type": "object",
    "properties": {"items": {"type": "array"}, "next_cursor": {"type": ["string", "null"]}},
}
_UPLOAD = {
    "type": "object",
    "description": "The mapping document. Also accepted as YAML (application/yaml, text/yaml, "
    "application/x-yaml) or as multipart/form-data with a `file` field. The file is read in "
    "the encoding its byte order mark says, else as UTF-8, else in the charset its "
    "Content-Type (or the part's) names.",
}
_TEST: dict[str, Any] = {
    "type": "object",
    "oneOf": [{"required": ["name"]}, {"required": ["mapping"]}],
    "additionalProperties": False,
    "properties": {
        "name": {
            "type": "string",
            "minLength": 1,
            "description": "a stored mapping (its active version)",
        },
        "version": {
            "type": "integer",
            "minimum": 1,
            "description": "a stored version instead of the active",
        },
        "mapping": {
            "type": ["string", "object"],
            "minLength": 1,
            "description": "a draft: text or document",
        },
        "payload": {"description": "inbound: a sample partner payload"},
        "context": {"description": 'outbound: e.g. {"entity": {...}, "event": {...}}'},
        "response": {"description": "outbound: a sample partner answer"},
        "params": {"type": "object", "description": "inbound: a trigger's params"},
    },
}


def _name(request: web.Request) -> str:
    return request.match_info["name"]


def _too_large(size: int | None) -> None:
    if size is not None and size > MAX_FILE_BYTES:
        raise PayloadTooLarge(
            f"a mapping file is at most {MAX_FILE_BYTES // 1024} KiB ({MAX_FILE_BYTES:,} bytes); "
            f"this one is {size:,} bytes"
        )


async def _read_upload(request: web.Request) -> tuple[bytes, str | None, str | None]:
    """The mapping file in the body (YAML or JSON), or in the `file` field of a form: its
    bytes, its file name and the charset its Content-Type (or the part's) names."""
    content_coding(request)
    ctype = request.content_type
    if ctype == "multipart/form-data":
        async with body_deadline():
            return await _read_file_field(request)
    if ctype not in YAML_TYPES and not is_json(ctype):
        raise UnsupportedMediaType(
            f"upload a mapping as application/yaml, application/json or multipart/form-data, "
            f"not {ctype or 'no content type'}"
        )
    _too_large(request.content_length)
    body = await read_body(request, MAX_FILE_BYTES)  # a coded body: inflated to that only
    _too_large(len(body))
    return body, None, request.charset


async def _read_file_field(request: web.Request) -> tuple[bytes, str | None, str | None]:
    try:
        # A coded form is inflated whole first: to no more than a file and its form's frame.
        reader = await multipart_reader(request, MAX_FILE_BYTES + _FORM_FRAME)
        while (part := await next_part(reader)) is not None:
            if isinstance(part, BodyPartReader) and part.name == "file":
                data = bytearray()
                while chunk := await part.read_chunk(_CHUNK):
                    data += chunk
                    _too_large(len(data))
                return bytes(data), part.filename, charset_of(part.headers.get(CONTENT_TYPE))
            await part.release()
    except (ValueError, AssertionError) as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    message = "a multipart upload carries the mapping file in a field named `file`"
    raise InvalidPayload(message, [FieldProblem("/file", message, "required")])


@operation(
    "Upload a mapping (a new version)",
    tag="mappings",
    request=_UPLOAD,
    request_media=upload_media("mapping", form=True),
    response=_UPLOADED,
    status=201,
    also=(200,),  # an identical re-upload: the version that exists
    query=[("activate", "false to store the version without activating it (default true)")],
    schemas={"activate": {"enum": ["true", "false", "1", "0"]}},
    errors=(409, 413, 415),
    error_texts={409: _REFUSED_BY_USERS},
)
async def upload_mapping(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    activate = query_flag(request, "activate", True)
    raw, filename, charset = await _read_upload(request)
    text = file_text(raw, charset)  # docs/api.md: UTF-8, a byte order mark, or its charset
    version = await services_of(request).mappings.upload(
        claims.tenant, text, author=claims.subject, activate=activate, filename=filename
    )
    location = f"/api/v1/mappings/{version.name}/versions/{version.version}"
    return json_response(
        {
            **version.as_dict(source=False),
            "created": version.created,
            "warnings": list(version.warnings),
        },
        status=201 if version.created else 200,
        headers={"Location": location},
    )


@operation(
    "List mappings",
    tag="mappings",
    response=_LIST,
    query=[("limit", "page size, 1-200"), ("cursor", "next_cursor of the previous page")],
    schemas={"cursor": text_cursor(NAME_CURSOR)},
)
async def list_mappings(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    found = await services_of(request).mappings.find(claims.tenant, after=cursor, limit=limit)
    next_cursor = found[-1].name if len(found) == limit else None
    return json_response({"items": [m.as_dict() for m in found], "next_cursor": next_cursor})


@operation("Get a mapping's active version, with its source", tag="mappings", response=_VERSION)
async def get_mapping(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    service = services_of(request).mappings
    version = await service.get(claims.tenant, _name(request))
    used_by = await service.used_by(claims.tenant, _name(request))
    return json_response({**version.as_dict(), "used_by": used_by})


@operation("List a mapping's versions", tag="mappings", response=_LIST)
async def list_versions(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    found = await services_of(request).mappings.versions(claims.tenant, _name(request))
    return json_response({"items": [v.as_dict(source=False) for v in found]})


@operation(
    "Get one version of a mapping, with its source",
    tag="mappings",
    response=_VERSION,
    schemas={"version": VERSION_NUMBER},
)
async def get_version(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    number = version_number(request.match_info["version"], "/version")
    version = await services_of(request).mappings.get(claims.tenant, _name(request), number)
    return json_response(version.as_dict())


@operation(
    "Diff two versions of a mapping",
    tag="mappings",
    response=VERSION_DIFF,
    query=[("from", "the older version"), ("to", "the newer version")],
    schemas={"from": VERSION_NUMBER, "to": VERSION_NUMBER},
    required_query=("from", "to"),
)
async def diff_versions(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    v1 = version_number(request.query.get("from"), "/from")
    v2 = version_number(request.query.get("to"), "/to")
    return json_response(
        await services_of(request).mappings.diff(claims.tenant, _name(request), v1, v2)
    )


@operation(
    "Activate a version of a mapping",
    tag="mappings",
    request=ACTIVATE,
    response=_VERSION,
    errors=(409,),
    error_texts={409: _REFUSED_BY_USERS},
)
async def activate_version(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    number = await read_version_to_activate(request)
    version = await services_of(request).mappings.activate(claims.tenant, _name(request), number)
    return json_response(version.as_dict(source=False))


@operation(
    "Roll a mapping back to the version before the active one",
    tag="mappings",
    response=_VERSION,
    errors=(409,),
)
async def rollback_mapping(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    version = await services_of(request).mappings.rollback(claims.tenant, _name(request))
    return json_response(version.as_dict(source=False))


@operation("Delete a mapping (every version)", tag="mappings", status=204, errors=(409,))
async def delete_mapping(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    await services_of(request).mappings.delete(claims.tenant, _name(request))
    return web.Response(status=204)


# A dry run's answer (gateway/mapping_files/dry_run.py `MappingDryRun.run`): the mapping, and
# what it makes of the sample: an inbound one's `results` (or the trigger's `probe` answer),
# an outbound one's `request` built from `context` and `response` mapped.
_DRY_RUN: dict[str, Any] = {
    "type": "object",
    "required": ["name", "direction", "entity_type", "target"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "direction": {"enum": ["inbound", "outbound"]},
        "entity_type": {"type": ["string", "null"]},
        "target": {"type": ["string", "null"], "description": "an inbound mapping's target"},
        "probe": {"description": "what the trigger answers this sample (nothing is mapped)"},
        "answer": {
            "type": "object",
            "description": "the mapping's `answer`: members the trigger adds to a 2xx answer",
        },
        "results": {
            "type": "array",
            "description": "one per item of the sample: its index in the partner's list, "
            "the document, key and events a write would make, or the item's problems",
            "items": {"type": "object", "required": ["index"]},
        },
        "request": {
            "type": "object",
            "required": ["path_params", "query", "headers", "body"],
            "additionalProperties": False,
            "properties": {
                "path_params": {"type": "object"},
                "query": {"type": "object"},
                "headers": {"type": "object"},
                "body": {"description": "the body as built (secrets masked)"},
            },
        },
        "response": {"description": "the sample `response` as the mapping maps it"},
    },
}


@operation(
    "Dry-run a mapping or a draft on a sample (nothing is written)",
    tag="mappings",
    request=_TEST,
    response=_DRY_RUN,
)
async def dry_run_mapping(request: web.Request) -> web.Response:
    claims = await authenticate(request, writes=False)
    body = await read_object(request)
    unknown = sorted(set(body) - set(_TEST["properties"]))
    if unknown:
        problems = [
            FieldProblem(f"/{k}", f"{k} is not a member of this body", "additionalProperties")
            for k in unknown
        ]
        raise InvalidPayload("the body does not fit this route", problems)
    draft = body.get("mapping")
    if draft is not None and body.get("name") is not None:
        raise _invalid(
            "/mapping", "a dry run tests a stored mapping (name) or a draft (mapping), not both"
        )
    if draft is not None and not isinstance(draft, str | dict):
        raise _invalid("/mapping", "mapping must be the text of a mapping file or its document")
    name = body.get("name")
    if name is not None and not is_text(name):
        raise _invalid("/name", "name must be a string")
    version = None if body.get("version") is None else version_number(body["version"], "/version")
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise _invalid("/params", "params must be an object of name: value")
    result = await services_of(request).mappings.dry_run.run(
        claims.tenant,
        name=name,
        version=version,
        draft_text=draft,
        payload=body.get("payload"),
        context=body.get("context"),
        response=body.get("response"),
        params=params,
    )
    return json_response(result)


def _invalid(pointer: str, message: str) -> InvalidPayload:
    return InvalidPayload(message, [FieldProblem(pointer, message, "type")])
