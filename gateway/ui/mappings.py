"""Mapping pages: upload (a file or pasted text; every problem at its line), a preview of the
file before it is stored (on a pasted sample), versions, diff, activate, roll back, delete,
and the dry run beside the stored entity."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiMapping

from gateway import paging
from gateway.entities import public
from gateway.errors import (
    Conflict,
    FieldProblem,
    GatewayError,
    InvalidPayload,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from gateway.formats.json_tree import loads_sent
from gateway.mapping.limits import MAX_FILE_BYTES
from gateway.mapping.loader import file_text
from gateway.ui.forms import Form, read_values, shown_active, version_field
from gateway.ui.rendering import redirect, render
from gateway.ui.state import form_lang, form_of, session_of, tenant_of, visitor_of
from gateway.web.requests import charset_of
from gateway.web.state import services_of

UPLOAD_FIELDS: Final = ("source", "file")
DRAFT_TEST_FIELDS: Final = ("payload", "context", "response", "params")
TEST_FIELDS: Final = ("version", *DRAFT_TEST_FIELDS)  # a stored version: any, chosen
PREVIEW_FIELDS: Final = (*UPLOAD_FIELDS, *DRAFT_TEST_FIELDS)


def _name(request: web.Request) -> str:
    return request.match_info["name"]


async def list_mappings(request: web.Request) -> web.Response:
    return await _list(request, Form({"activate": "on"}))


async def upload_mapping(request: web.Request) -> web.Response:
    data = form_of(request)
    values = read_values(data)
    form = Form(values)
    try:
        text, filename = _source(data)
        form.values["source"] = text  # a file's text lands in the box, to fix it in place
        version = await services_of(request).mappings.upload(
            tenant_of(request),
            text,
            author=session_of(request).subject,
            activate=values.get("activate") == "on",
            filename=filename,
        )
    except (InvalidPayload, PayloadTooLarge) as exc:
        return await _list(request, form.refuse(exc, UPLOAD_FIELDS), status=422)
    except (Conflict, Unavailable) as exc:  # a change its users cannot take, a busy database
        return await _list(request, form.refuse(exc, UPLOAD_FIELDS), status=409)
    flash = "mappings.uploaded" if version.created else "mappings.unchanged"
    return redirect(f"/admin/mappings/{version.name}", flash=flash)


async def preview_mapping(request: web.Request) -> web.Response:
    """The upload form's Preview: the typed (or chosen) file run on the pasted sample, as the
    dry run runs a stored mapping; nothing is stored, and the form keeps all it holds."""
    data = form_of(request)
    form = Form(read_values(data))
    services = services_of(request)
    try:
        text, _ = _source(data)
        form.values["source"] = text
        result = await services.mappings.dry_run.run(
            tenant_of(request),
            draft_text=text,
            payload=form.values.get("payload") or None,
            context=_json(form.values, "context"),
            response=_json(form.values, "response"),
            params=_json(form.values, "params") or {},
        )
    except GatewayError as exc:
        form.refuse(_unprefixed(exc), PREVIEW_FIELDS)
        return await _list(request, form, status=422, previewed=True)
    stored = [await _stored(request, result, item) for item in result.get("results", [])]
    return await _list(request, form, result=result, stored=stored, previewed=True)


def _unprefixed(error: GatewayError) -> GatewayError:
    """A draft's problems point into the file (as an upload's do), not into `/mapping`."""
    if not isinstance(error, InvalidPayload):
        return error
    problems = [
        replace(p, pointer=p.pointer.removeprefix("/mapping"))
        if p.pointer.startswith("/mapping/")
        else p
        for p in error.problems
    ]
    return error.restated(problems=problems)


async def mapping_page(request: web.Request) -> web.Response:
    return await _detail(request, Form())


async def version_page(request: web.Request) -> web.Response:
    number = version_field(request.match_info["version"], visitor_of(request).lang)
    version = await services_of(request).mappings.get(tenant_of(request), _name(request), number)
    return render(request, "mappings/version.html", {"version": version})


async def diff_page(request: web.Request) -> web.Response:
    lang = visitor_of(request).lang
    old = version_field(request.query.get("from"), lang)
    new = version_field(request.query.get("to"), lang)
    diff = await services_of(request).mappings.diff(tenant_of(request), _name(request), old, new)
    return render(request, "mappings/diff.html", {"diff": diff, "name": _name(request)})


async def activate_mapping(request: web.Request) -> web.Response:
    form, lang = form_of(request), form_lang(request)
    number = version_field(form.get("version"), lang)
    await services_of(request).mappings.activate(
        tenant_of(request), _name(request), number, shown=shown_active(form, lang)
    )
    return redirect(f"/admin/mappings/{_name(request)}", flash="mappings.activated")


async def rollback_mapping(request: web.Request) -> web.Response:
    shown = shown_active(form_of(request), form_lang(request))
    await services_of(request).mappings.rollback(tenant_of(request), _name(request), shown=shown)
    return redirect(f"/admin/mappings/{_name(request)}", flash="mappings.rolled_back")


async def delete_mapping(request: web.Request) -> web.Response:
    await services_of(request).mappings.delete(tenant_of(request), _name(request))
    return redirect("/admin/mappings", flash="mappings.deleted")


async def dry_run_mapping(request: web.Request) -> web.Response:
    """The dry run: what the mapping makes of a pasted sample, beside the entity stored now."""
    values = read_values(form_of(request))
    form = Form(values)
    tenant = tenant_of(request)
    services = services_of(request)
    try:
        version = values.get("version") or None
        result = await services.mappings.dry_run.run(
            tenant,
            name=_name(request),
            version=None if version is None else version_field(version, form_lang(request)),
            payload=values.get("payload") or None,
            context=_json(values, "context"),
            response=_json(values, "response"),
            params=_json(values, "params") or {},
        )
    except GatewayError as exc:
        return await _detail(request, form.refuse(exc, TEST_FIELDS), status=422)
    stored = [await _stored(request, result, item) for item in result.get("results", [])]
    return await _detail(request, form, result=result, stored=stored)


async def _stored(
    request: web.Request, result: dict[str, Any], item: dict[str, Any]
) -> dict[str, Any] | None:
    entity_id = (item.get("entity") or {}).get("id")
    if entity_id is None or result.get("entity_type") is None:
        return None
    try:
        doc = await services_of(request).entities.get(
            tenant_of(request), result["entity_type"], entity_id
        )
    except NotFound:
        return None
    return public(doc)


async def _list(
    request: web.Request,
    form: Form,
    *,
    status: int = 200,
    previewed: bool = False,
    result: dict[str, Any] | None = None,
    stored: list[dict[str, Any] | None] | None = None,
) -> web.Response:
    limit, cursor = paging.page_params(request.query)
    items = await services_of(request).mappings.find(tenant_of(request), after=cursor, limit=limit)
    next_cursor = items[-1].name if len(items) == limit else None
    bad_lines = {p.line for problems in form.errors.values() for p in problems if p.line}
    bad_lines |= {p.line for p in form.general if p.line}
    context = {
        "items": items,
        "next_cursor": next_cursor,
        "form": form,
        "bad_lines": bad_lines,
        "previewed": previewed,
        "result": result,
        "stored": stored or [],
    }
    return render(request, "mappings/list.html", context, status=status)


async def _detail(
    request: web.Request,
    form: Form,
    *,
    result: dict[str, Any] | None = None,
    stored: list[dict[str, Any] | None] | None = None,
    status: int = 200,
) -> web.Response:
    tenant, name = tenant_of(request), _name(request)
    service = services_of(request).mappings
    versions = await service.versions(tenant, name)
    active = next((v for v in versions if v.active), None)
    shown = await service.get(tenant, name, (active or versions[-1]).version)
    try:  # the old names it uses, as its upload's warnings named them
        deprecated = (await service.compiled(tenant, name, shown.version)).deprecated
    except InvalidPayload:  # stored before today's rules: it says so where it runs
        deprecated = ()
    form.values.setdefault("version", str(shown.version))  # the dry run's, at first
    context = {
        "mapping": shown,
        "deprecated": deprecated,
        "versions": versions,
        # posted by the activate and roll back buttons (forms.shown_active)
        "shown_active": "" if active is None else active.version,
        "used_by": await service.used_by(tenant, name),
        "form": form,
        "result": result,
        "stored": stored or [],
    }
    return render(request, "mappings/detail.html", context, status=status)


def _source(data: MultiMapping[Any]) -> tuple[str, str | None]:
    """The uploaded file when one was chosen, else the pasted text."""
    upload = data.get("file")
    if isinstance(upload, FileField) and upload.filename:
        raw = upload.file.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise PayloadTooLarge(f"a mapping file is at most {MAX_FILE_BYTES // 1024} KiB")
        # Read by the API upload's own function (docs/api.md): a byte order mark's encoding
        # (Notepad's "Unicode" is UTF-16), UTF-8, or the charset the part names; refused in
        # its words, at the file (labelled by its format: bytes given but unreadable).
        try:
            return file_text(raw, charset_of(upload.content_type)), upload.filename
        except InvalidPayload as exc:
            problems = [replace(p, pointer="/file", keyword="format") for p in exc.problems]
            raise exc.restated(problems=problems) from None
    text = data.get("source")
    if not isinstance(text, str) or not text.strip():
        raise _invalid("/source", "choose a mapping file or paste its text", "required")
    return text, None


def _json(values: dict[str, Any], name: str) -> Any:
    raw = values.get(name)
    if not raw:
        return None
    try:
        return loads_sent(raw)
    except ValueError as exc:  # malformed, or a member named twice
        raise _invalid(f"/{name}", f"malformed JSON: {exc}", "format") from None


def _invalid(pointer: str, message: str, keyword: str) -> InvalidPayload:
    """A problem of a form's field, with the keyword that labels it (forms.KEYWORDS): a value
    missing is `required`, one that is there but unreadable `format` or `type`."""
    return InvalidPayload(message, [FieldProblem(pointer, message, keyword)])
