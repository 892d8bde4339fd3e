"""/hooks/{trigger_id}: the partner-facing edge of triggers. Plain values in, JSON bytes out,
answered in JSON, or in the XML or SOAP a POST speaks (replies.py)."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from gateway import write_fence
from gateway.errors import PayloadTooLarge
from gateway.formats.bodies import FORM, MULTIPART, NDJSON_TYPES
from gateway.formats.xml_tree import XML_CONTENT_TYPES
from gateway.triggers import HookCall
from gateway.web import replies
from gateway.web.client_address import client_key
from gateway.web.openapi import ID_CURSOR, operation
from gateway.web.requests import read_body
from gateway.web.state import services_of

_WRITTEN: Final[dict[str, Any]] = {
    "type": "object",
    "description": "One write (200 updated, 201 created; a position trigger: 201 stored, 200 "
    "a duplicate); a batch answers 200, or 207 when an item failed, with `results` (one per "
    "item) and a `summary`",
    "properties": {
        "id": {"type": "string"},
        "key": {"type": ["string", "null"]},
        "created": {"type": "boolean"},
        "changed": {"type": "array", "items": {"type": "string"}},
        "events": {"type": "array", "items": {"type": "string"}},
        "vehicle": {"type": "object", "description": "a position trigger's fix: its vehicle"},
        "time": {"type": "string", "description": "a position trigger's fix: its device time"},
        "duplicate": {
            "type": "boolean",
            "description": "a position trigger's fix: stored before (answered 200, kept once)",
        },
        "results": {"type": "array", "items": {"type": "object"}},
        "summary": {"type": "object"},
    },
}
_PAGE: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"items": {"type": "array"}, "next_cursor": {"type": ["string", "null"]}},
}
_READ: Final[dict[str, Any]] = {
    "description": "a page of entities (200); a `form` trigger's GET writes from its query, "
    "answered as a POST is (200 updated, 201 created)",
    "anyOf": [_PAGE, _WRITTEN],
}
_ENTITY: Final[dict[str, Any]] = {
    "type": "object",
    "description": "The entity as the trigger shows it (gateway/triggers/reading.py): without "
    "a `response_mapping`, as `GET /api/v1/entities/{type}/{id}` answers it (only `id` and "
    "the `expose` fields when the trigger lists them); with one, the object that mapping "
    "builds from `{entity, trigger}`, whose members the mapping decides",
}
_BODY: Final[dict[str, Any]] = {
    "description": "One object, or an array (a batch) whose items are validated one by one: "
    "an item that is not a valid object fails alone, in `results` (207). A `form` trigger "
    "takes a urlencoded body, the text fields of a multipart/form-data one or a query string "
    "instead (or JSON), an `xml` trigger an XML or "
    "SOAP body (application/xml, text/xml, application/soap+xml). JSON Lines "
    "(application/x-ndjson) is a batch; a body that starts as JSON (or XML) is read as such "
    "whatever its Content-Type",
    "oneOf": [{"type": "object"}, {"type": "array"}],
}

# What a trigger reads besides JSON (gateway/formats/bodies.py, by its `format`): a `form`
# trigger's fields, an `xml` trigger's XML or SOAP, JSON Lines as a batch.
_FORM_FIELDS: Final[dict[str, Any]] = {
    "type": "object",
    "description": "a `form` trigger's fields (text)",
    "additionalProperties": {"type": "string"},
}
_OTHER_BODIES: Final[dict[str, dict[str, Any]]] = {
    FORM: _FORM_FIELDS,
    MULTIPART: _FORM_FIELDS,
    **{
        ctype: {"type": "string", "description": "an `xml` trigger's XML or SOAP body"}
        for ctype in XML_CONTENT_TYPES
    },
    **{
        ctype: {"type": "string", "description": "JSON Lines: a batch, an object a line"}
        for ctype in sorted(NDJSON_TYPES)
    },
}


class _Body:
    """Reads the body only when the use case asks, with the trigger's own size limit."""

    __slots__ = ("_request",)

    def __init__(self, request: web.Request) -> None:
        self._request = request

    async def read(self, limit: int) -> bytes:
        length = self._request.content_length
        if length is not None and length > limit:
            raise _too_large(limit)
        try:
            body = await read_body(self._request, limit)
        except web.HTTPRequestEntityTooLarge:
            raise _too_large(limit) from None
        if len(body) > limit:
            raise _too_large(limit)
        if (reply := self._request.get(replies.reply_key)) is not None:
            reply.saw_body(body)
        # What the partner sent is here: it is written within the fence or not at all (a body
        # that trickled in over a slow link is not held against it).
        write_fence.begin()
        return body


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body is over this trigger's limit of {limit} bytes")


def _hook_call(request: web.Request, ref: str | None) -> HookCall:
    reply = request.get(replies.reply_key)
    return HookCall(
        trigger_id=request.match_info["trigger_id"],
        method=request.method,
        headers=request.headers,
        query=request.query,
        query_string=request.query_string,
        content_type=request.content_type if "Content-Type" in request.headers else "",
        body=_Body(request),
        ref=ref,
        charset=request.charset,
        as_called=None if reply is None else reply.as_called,
        client=client_key(request),
    )


async def _answer(request: web.Request, ref: str | None = None) -> web.Response:
    answer = await services_of(request).hooks.handle(_hook_call(request, ref))
    return replies.answer(request, answer.status, answer.body, answer.headers)


@operation(
    "Send data through a trigger: one object, or an array (batch)",
    tag="hooks",
    auth="trigger",
    request=_BODY,
    request_media=_OTHER_BODIES,
    response=_WRITTEN,
    errors=(409,),
    idempotency_key=True,
    also=(201, 207),
    xml_answers=True,
)
async def post_hook(request: web.Request) -> web.Response:
    return await _answer(request)


@operation(
    "Read through a trigger (a filtered page by natural key or indexed fields, e.g. "
    "?plate=ABC1D23); form triggers write from the query",
    tag="hooks",
    auth="trigger",
    response=_READ,
    query=[
        ("limit", "page size, 1-200"),
        ("cursor", "next_cursor of the previous page"),
    ],
    schemas={"cursor": ID_CURSOR},
    # A form trigger's GET writes as its POST does (201 created, 409 its Idempotency-Key
    # still in use); a positions trigger's read names a vehicle that may not exist (404).
    errors=(404, 409),
    idempotency_key=True,
    also=(201,),
)
async def get_hooks(request: web.Request) -> web.Response:
    return await _answer(request)


@operation(
    "Read one entity through a trigger, by id or natural key",
    tag="hooks",
    auth="trigger",
    response=_ENTITY,
    errors=(404,),
)
async def get_hook_entity(request: web.Request) -> web.Response:
    return await _answer(request, request.match_info["key"])


@operation(
    "Ask what a trigger takes (Allow); the CloudEvents webhook validation handshake",
    tag="hooks",
    auth="trigger",
    status=204,
)
async def options_hook(request: web.Request) -> web.Response:
    """With `WebHook-Request-Origin` (and `WebHook-Request-Rate`), a trigger that takes POST
    answers `WebHook-Allowed-Origin` and `WebHook-Allowed-Rate` (requests per minute, or *);
    authenticated as the trigger's other calls are (docs/triggers.md)."""
    return await _options(request, None)


@operation(
    "Ask what a trigger's entity URL takes (Allow)",
    tag="hooks",
    auth="trigger",
    status=204,
)
async def options_hook_entity(request: web.Request) -> web.Response:
    return await _options(request, request.match_info["key"])


async def _options(request: web.Request, ref: str | None) -> web.Response:
    answer = await services_of(request).hooks.handle(_hook_call(request, ref))
    return web.Response(status=answer.status, headers=answer.headers)
