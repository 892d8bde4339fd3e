"""/api/v1/flows: flow files as versions (upload, activate, roll back, diff, delete) and the
dry run (`POST /api/v1/flows/test`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.errors import FieldProblem, InvalidPayload, PayloadTooLarge, UnsupportedMediaType
from gateway.flows.service import MAX_PAUSE_REASON
from gateway.mapping.limits import MAX_FILE_BYTES
from gateway.mapping.loader import file_text
from gateway.store.client import NAME_CURSOR
from gateway.web.admin_auth import authenticate
from gateway.web.mappings import YAML_TYPES, upload_media
from gateway.web.openapi import operation, rotated_secret, text_cursor
from gateway.web.problems import json_response
from gateway.web.requests import (
    ACTIVATE,
    VERSION_DIFF,
    VERSION_NUMBER,
    charset_of,
    check_members,
    is_json,
    page_params,
    query_flag,
    read_body,
    read_object,
    read_optional_object,
    read_version_to_activate,
    unknown_members,
    version_number,
)
from gateway.web.state import services_of

_VERSION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "integer"},
        "active": {"type": "boolean"},
        "events": {"type": "array", "items": {"type": "string"}},
        "checksum": {"type": "string"},
        "author": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "source": {"type": "string"},
        "document": {"type": "object"},
    },
}
_UPLOADED: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{k: v for k, v in _VERSION["properties"].items() if k not in ("source", "document")},
        "created": {"type": "boolean", "description": "false: the same text as a version stored"},
        "secret": {
            "type": "string",
            "pattern": "^whsec_",
            "description": "the flow's signing secret (Standard Webhooks), on the upload that "
            "gave the flow its first, shown this once: its `call` requests are signed with it",
        },
    },
}
_UPLOAD: dict[str, Any] = {
    "type": "object",
    "description": "The flow document (schemas/flow.schema.json); also as YAML "
    "(application/yaml, text/yaml).",
}
# A dry run's answer (gateway/flows/dry_run.py `FlowDryRun.run`): the sample as completed,
# whether the flow starts on it, and each step (`_steps`) with the members of its kind.
_STEP: dict[str, Any] = {
    "type": "object",
    "required": ["id", "kind", "outcome"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string"},
        "outcome": {
            "enum": [
                "passed",
                "stopped",
                "skipped",
                "not reached",
                "rendered",
                "nobody",
                "unresolved",
                "answered",
                "failed",
            ]
        },
        "note": {"type": "string"},
        "reason": {"type": "string", "description": "skipped: the guard that did not hold"},
        "condition": {"type": "string", "description": "a when step's condition"},
        "detail": {"type": "string", "description": "failed: why"},
        "errors": {"type": "array", "items": {"type": "object"}},
        "action": {"type": "string", "description": "the action a call or ask step invokes"},
        "request": {"type": "object", "description": "the request it would send"},
        "assign": {"type": "object", "description": "what the assignment history would record"},
        "answer": {"description": "the sample answer given for the step (samples)"},
        "result": {"description": "that answer through the action's response mapping"},
        "channel": {"type": "string"},
        "template": {"type": "string"},
        "messages": {
            "type": "array",
            "items": {"type": "object"},
            "description": "one per recipient: recipient, decision, locale, parts, request",
        },
        "unreachable": {"type": "array"},
        "entity": {"type": "object", "description": "the entity a set step writes"},
        "fields": {"type": "object"},
        "changes": {"type": "array", "items": {"type": "object"}},
        "document": {"type": "object"},
    },
}
_DRY_RUN: dict[str, Any] = {
    "type": "object",
    "required": ["flow", "version", "event", "starts", "reason", "steps", "unresolved"],
    "additionalProperties": False,
    "properties": {
        "flow": {"type": "string"},
        "version": {"type": ["integer", "null"], "description": "null for a draft"},
        "event": {"type": "object", "description": "the sample event, as a real one would be"},
        "starts": {"type": "boolean"},
        "reason": {"type": ["string", "null"], "description": "why the flow does not start"},
        "steps": {"type": "array", "items": _STEP},
        "unresolved": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the ask steps without a sample answer",
        },
    },
}
_TEST: dict[str, Any] = {
    "type": "object",
    "required": ["flow", "event"],
    "additionalProperties": False,
    "properties": {
        "flow": {"type": ["string", "object"], "description": "a stored flow's name, or a draft"},
        "version": {"type": "integer", "description": "a stored version instead of the active"},
        "event": {"type": "object", "description": "a sample event: type, entity, data, ..."},
        "samples": {
            "type": "object",
            "description": "fetch answers by step id (the partner's raw answer)",
        },
    },
}
_LIST = {"type": "object", "properties": {"items": {"type": "array"}}}


def _name(request: web.Request) -> str:
    return request.match_info["name"]


@operation(
    "Upload a flow (a new version)",
    tag="flows",
    request=_UPLOAD,
    request_media=upload_media("flow", form=False),
    response=_UPLOADED,
    status=201,
    also=(200,),  # an identical re-upload: the version that exists
    query=[("activate", "false to store the version without activating it (default true)")],
    schemas={"activate": {"enum": ["true", "false", "1", "0"]}},
    # 409: another upload of the flow stored its version number first (versioned.py `add`)
    errors=(409, 413, 415),
)
async def upload_flow(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    activate = query_flag(request, "activate", True)
    if request.content_type not in YAML_TYPES and not is_json(request.content_type):
        raise UnsupportedMediaType(
            f"upload a flow as application/yaml or application/json, not "
            f"{request.content_type or 'no content type'}"
        )
    raw = await read_body(request)
    if len(raw) > MAX_FILE_BYTES:
        raise PayloadTooLarge(f"a flow file is at most {MAX_FILE_BYTES // 1024} KiB")
    # As a mapping file (docs/api.md): UTF-8, a byte order mark, or the charset it names.
    text = file_text(raw, charset_of(request.headers.get("Content-Type")), "flow")
    version = await services_of(request).notify.flows.upload(
        claims.tenant, text, author=claims.subject, activate=activate
    )
    answer = {**version.as_dict(source=False), "created": version.created}
    if version.secret is not None:
        answer["secret"] = version.secret
    return json_response(
        answer,
        status=201 if version.created else 200,
        headers={"Location": f"/api/v1/flows/{version.name}/versions/{version.version}"},
    )


@operation(
    "List flows",
    tag="flows",
    response=_LIST,
    query=[("limit", "page size, 1-200"), ("cursor", "next_cursor of the previous page")],
    schemas={"cursor": text_cursor(NAME_CURSOR)},
)
async def list_flows(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    found = await services_of(request).notify.flows.find(claims.tenant, after=cursor, limit=limit)
    next_cursor = found[-1]["name"] if len(found) == limit else None
    return json_response({"items": found, "next_cursor": next_cursor})


@operation("Get a flow's active version, with its source", tag="flows", response=_VERSION)
async def get_flow(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    version = await services_of(request).notify.flows.get(claims.tenant, _name(request))
    return json_response(version.as_dict())


@operation("List a flow's versions", tag="flows", response=_LIST)
async def list_flow_versions(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    found = await services_of(request).notify.flows.versions(claims.tenant, _name(request))
    return json_response({"items": [v.as_dict(source=False) for v in found]})


@operation(
    "Get one version of a flow, with its source",
    tag="flows",
    response=_VERSION,
    schemas={"version": VERSION_NUMBER},
)
async def get_flow_version(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    number = version_number(request.match_info["version"], "/version")
    version = await services_of(request).notify.flows.get(claims.tenant, _name(request), number)
    return json_response(version.as_dict())


@operation(
    "Diff two versions of a flow",
    tag="flows",
    response=VERSION_DIFF,
    query=[("from", "the older version"), ("to", "the newer version")],
    schemas={"from": VERSION_NUMBER, "to": VERSION_NUMBER},
    required_query=("from", "to"),
)
async def diff_flow_versions(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    v1 = version_number(request.query.get("from"), "/from")
    v2 = version_number(request.query.get("to"), "/to")
    diff = await services_of(request).notify.flows.diff(claims.tenant, _name(request), v1, v2)
    return json_response(diff)


@operation(
    "Activate a version of a flow",
    tag="flows",
    request=ACTIVATE,
    response=_VERSION,
    errors=(409,),  # the flow changed meanwhile (versioned.py `activate`)
)
async def activate_flow(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    number = await read_version_to_activate(request)
    version = await services_of(request).notify.flows.activate(
        claims.tenant, _name(request), number
    )
    return json_response(version.as_dict(source=False))


@operation(
    "Roll a flow back to the version before the active one",
    tag="flows",
    response=_VERSION,
    errors=(409,),
)
async def rollback_flow(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    version = await services_of(request).notify.flows.rollback(claims.tenant, _name(request))
    return json_response(version.as_dict(source=False))


_PAUSED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "paused": {
            "type": ["object", "null"],
            "description": "{at, by, reason} while the flow is paused; null when it runs",
        },
        "held": {"type": "integer", "description": "runs held, waiting for the resume"},
        "released": {"type": "integer", "description": "held runs that go on (resume)"},
        "skipped": {"type": "integer", "description": "held runs let go (resume, held: skip)"},
    },
}
_PAUSE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"reason": {"type": ["string", "null"], "maxLength": MAX_PAUSE_REASON}},
}
_RESUME: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "held": {
            "enum": ["run", "skip"],
            "description": "what becomes of the runs held while paused: run them (default) "
            "or skip them",
        }
    },
}


@operation(
    "Pause a flow: its runs wait, held at their next step, until it is resumed",
    tag="flows",
    request=_PAUSE,
    response=_PAUSED,
    body_required=False,
)
async def pause_flow(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_optional_object(request)
    check_members(body, {"reason": (str, type(None))})
    reason = body.get("reason")  # longer than MAX_PAUSE_REASON: the use case refuses it
    state = await services_of(request).notify.flows.pause(
        claims.tenant, _name(request), by=claims.subject, reason=reason
    )
    return json_response(state)


@operation(
    "Resume a paused flow: its held runs go on (or are skipped)",
    tag="flows",
    request=_RESUME,
    response=_PAUSED,
    body_required=False,
)
async def resume_flow(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    body = await read_optional_object(request)
    check_members(body, {"held": str})
    held = body.get("held", "run")
    if held not in ("run", "skip"):
        problem = FieldProblem("/held", "held is 'run' or 'skip'", "enum")
        raise InvalidPayload("invalid resume", [problem])
    state = await services_of(request).notify.flows.resume(
        claims.tenant, _name(request), skip=held == "skip"
    )
    return json_response(state)


@operation("Whether a flow is paused, and how many runs it holds", tag="flows", response=_PAUSED)
async def get_flow_pause(request: web.Request) -> web.Response:
    claims = await authenticate(request, writes=False)
    state = await services_of(request).notify.flows.pause_state(claims.tenant, _name(request))
    return json_response(state)


@operation(
    "Rotate the signing secret of a flow's calls: both sign for 24 h; the new one is shown once",
    tag="flows",
    response=rotated_secret("name"),
    errors=(409,),
)
async def rotate_flow_secret(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    rotated = await services_of(request).notify.flows.rotate_secret(claims.tenant, _name(request))
    return json_response(rotated)


@operation("Delete a flow (every version)", tag="flows", status=204)
async def delete_flow(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    await services_of(request).notify.flows.delete(claims.tenant, _name(request))
    return web.Response(status=204)


@operation(
    "Dry-run a flow or a draft on a sample event: every step rendered, nothing sent or written",
    tag="flows",
    request=_TEST,
    response=_DRY_RUN,
)
async def dry_run_flow(request: web.Request) -> web.Response:
    claims = await authenticate(request, writes=False)
    body = await read_object(request)
    flow: Any = body.get("flow")
    samples = body.get("samples", {})
    problems = unknown_members(body, _TEST)
    if not isinstance(flow, str | dict) or not flow:
        problems.append(FieldProblem("/flow", "flow is a stored flow's name or a draft", "type"))
    if not isinstance(samples, dict):
        problems.append(FieldProblem("/samples", "samples is an object: step id → answer", "type"))
    if problems:
        raise InvalidPayload("invalid flow test", problems)
    # A name is one word; a draft is a document, or its text (YAML has lines, JSON braces).
    is_draft = isinstance(flow, dict) or "\n" in flow or flow.lstrip().startswith("{")
    version = None if body.get("version") is None else version_number(body["version"], "/version")
    result = await services_of(request).notify.flow_dry_run.run(
        claims.tenant,
        name=None if is_draft else flow,
        version=version,
        draft=flow if is_draft else None,
        event=body.get("event"),
        samples=samples,
    )
    return json_response(result)
