"""Use case: notification templates as tenant resources: checked, compiled and test-rendered
on upload, cached compiled per process, previewed on a sample (`templating.py` renders)."""

from __future__ import annotations

import builtins
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.clock import as_stored, utcnow
from gateway.errors import Conflict, FieldProblem, InvalidPayload, NotFound
from gateway.formats.json_tree import is_text, text_refused
from gateway.notify.sandbox import off_loop, previewing
from gateway.notify.templating import (
    CHANNEL_TYPES,
    LOCALES,
    PARTS,
    REQUIRED,
    CompiledTemplate,
    compile_template,
)
from gateway.store import Doc, new_id
from gateway.store.notify import NamedResources

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# A template's document, as `create` and `replace` take it.
TEMPLATE_FIELDS = ("name", "channel_type", "description", "default_locale", "locales", "sample")
_MAX_CACHED = 2048
# Who uses a template (flows name them): (tenant, name) → [{kind, name, ...}].
Users = Callable[[str, str], Awaitable[list[dict[str, Any]]]]


async def _no_users(tenant: str, name: str) -> list[dict[str, Any]]:
    return []


async def refuse_if_used(users: Users, tenant: str, what: str, doc: Doc, because: str = "") -> None:
    """409 naming the flows that still use a channel or template (`because`: what it refuses
    while they do, else the deletion); a flow may name it by its name or by its id."""
    name, by_flow = doc["name"], {}
    for ref in (str(doc["_id"]), name):
        by_flow.update({u["name"]: u for u in await users(tenant, ref)})
    found = list(by_flow.values())
    if found:
        named = ", ".join(f"{u['kind']} {u['name']}" for u in found)
        raise Conflict(f"{what} {name!r} is used by {named}{because}", used_by=found)


def public_template(doc: Doc) -> dict[str, Any]:
    return {
        "id": str(doc["_id"]),
        **{k: doc.get(k) for k in TEMPLATE_FIELDS},
        "version": doc["rev"],
        "author": doc.get("author"),
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
    }


class TemplateService:
    def __init__(self, templates: NamedResources) -> None:
        self._store = templates
        self._compiled: OrderedDict[tuple[str, str, int], CompiledTemplate] = OrderedDict()
        self.users: Users = _no_users

    async def create(self, tenant: str, body: Mapping[str, Any], author: str) -> Doc:
        fields = checked_template(body)
        with previewing(tenant):  # its test render on the sample: an author's try
            await off_loop(compile_template, fields)
        now = as_stored(utcnow())
        doc = {
            "_id": new_id(),
            "tenant": tenant,
            **fields,
            "author": author,
            "rev": 1,
            "created_at": now,
            "updated_at": now,
        }
        await self._store.insert(doc)
        return doc

    async def get(self, tenant: str, ref: str) -> Doc:
        doc = await self._store.by_ref(tenant, ref)
        if doc is None:
            raise NotFound(f"no template {ref!r}")
        return doc

    async def list(self, tenant: str, *, after: str | None, limit: int) -> list[Doc]:
        return await self._store.list(tenant, after=after, limit=limit)

    async def names(self, tenant: str, channel_type: str) -> builtins.list[Doc]:
        """Every template of a channel type (its id and name), in one query: what a
        channel's test send offers, however many."""
        return await self._store.every(tenant, {"channel_type": channel_type}, ("name",))

    async def replace(self, tenant: str, ref: str, body: Mapping[str, Any], author: str) -> Doc:
        current = await self.get(tenant, ref)
        fields = checked_template(body)
        if fields["name"] != current["name"]:
            message = "a template keeps its name (flows use it); create a new one instead"
            raise InvalidPayload(message, [FieldProblem("/name", message, "const")])
        if fields["channel_type"] != current["channel_type"]:
            # Their channels are of the type it has: another would not fit them (an SMS text
            # where an e-mail needs a subject). Activation refuses that; so does this.
            because = (
                f": its channel_type stays {current['channel_type']} while they do "
                "(create a new template for the other channel type)"
            )
            await refuse_if_used(self.users, tenant, "template", current, because)
        with previewing(tenant):
            await off_loop(compile_template, fields)
        unset = [k for k in TEMPLATE_FIELDS if k not in fields]
        update = {**fields, "author": author, "updated_at": utcnow()}
        doc = await self._store.update(tenant, str(current["_id"]), current["rev"], update, unset)
        if doc is None:
            raise Conflict("the template was changed concurrently; retry")
        return doc

    async def delete(self, tenant: str, ref: str) -> None:
        doc = await self.get(tenant, ref)
        await refuse_if_used(self.users, tenant, "template", doc)
        await self._store.delete(tenant, str(doc["_id"]))

    async def compiled(self, tenant: str, name: str) -> CompiledTemplate:
        """The template as it is now, compiled once per version and process."""
        doc = await self.get(tenant, name)
        key = (tenant, str(doc["_id"]), int(doc["rev"]))
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = await off_loop(compile_template, doc)
            if len(self._compiled) > _MAX_CACHED:
                self._compiled.popitem(last=False)
        return found

    async def preview(
        self,
        tenant: str,
        *,
        ref: str | None,
        draft: Mapping[str, Any] | None,
        context: Mapping[str, Any] | None,
        locale: str | None,
    ) -> dict[str, Any]:
        """Render a stored template or a draft on a sample context; nothing is stored."""
        if context is not None and not isinstance(context, Mapping):
            message = "context is an object: the names the template reads"
            raise InvalidPayload(message, [FieldProblem("/context", message, "type")])
        if draft is not None:
            fields = checked_template(draft)
            with previewing(tenant):
                template = await off_loop(compile_template, fields)
            sample = context if context is not None else fields.get("sample")
        elif ref is not None:
            doc = await self.get(tenant, ref)
            template = await self.compiled(tenant, doc["name"])
            sample = context if context is not None else doc.get("sample")
        else:
            message = "give a stored template's name or a draft"
            raise InvalidPayload(message, [FieldProblem("/template", message, "required")])
        with previewing(tenant):
            rendered = await off_loop(template.render, sample or {}, locale)
        return {
            "name": template.name,
            "channel_type": template.channel_type,
            "locale": rendered.locale,
            "parts": rendered.parts,
            "undefined": rendered.undefined,
        }


def checked_template(body: Mapping[str, Any]) -> dict[str, Any]:
    """The template document's shape, every problem listed; the text is compiled later."""
    problems = [
        FieldProblem(f"/{k}", f"unknown field {k!r}", "additionalProperties")
        for k in body
        if k not in TEMPLATE_FIELDS
    ]
    name = body.get("name")
    if not is_text(name) or not NAME.fullmatch(name):
        problems.append(FieldProblem("/name", "name is 1-100 letters, digits, _ . -", "pattern"))
    channel_type = body.get("channel_type")
    if not is_text(channel_type):
        channel_type = repr(channel_type)  # refused below; a str keeps the lookups hashable
    if channel_type not in CHANNEL_TYPES:
        message = f"channel_type is one of {', '.join(CHANNEL_TYPES)}"
        problems.append(FieldProblem("/channel_type", message, "enum"))
    description = body.get("description", "")
    if refused := text_refused(description, 2000):
        problems.append(FieldProblem("/description", "text of at most 2000", refused))
    locales = _locales(body.get("locales"), channel_type, problems)
    default = body.get(
        "default_locale", "pt-BR" if "pt-BR" in locales else next(iter(locales), None)
    )
    if locales and (not is_text(default) or default not in locales):
        message = f"default_locale must be one of the template's locales ({', '.join(locales)})"
        problems.append(FieldProblem("/default_locale", message, "enum"))
    sample = body.get("sample")
    if sample is not None and not isinstance(sample, Mapping):
        problems.append(FieldProblem("/sample", "sample is an object (a context)", "type"))
    if problems:
        raise InvalidPayload("invalid template", problems)
    fields = {
        "name": name,
        "channel_type": channel_type,
        "description": description,
        "default_locale": default,
        "locales": locales,
    }
    if sample is not None:
        fields["sample"] = dict(sample)
    return fields


def _locales(
    raw: Any, channel_type: Any, problems: list[FieldProblem]
) -> dict[str, dict[str, str]]:
    if not isinstance(raw, Mapping) or not raw:
        problems.append(
            FieldProblem("/locales", f"locales is an object of {' and/or '.join(LOCALES)}", "type")
        )
        return {}
    parts = PARTS.get(channel_type, ())
    found: dict[str, dict[str, str]] = {}
    for locale, texts in raw.items():
        at = f"/locales/{locale}"
        if locale not in LOCALES:
            problems.append(FieldProblem(at, f"a locale is one of {', '.join(LOCALES)}", "enum"))
            continue
        if not isinstance(texts, Mapping):
            problems.append(FieldProblem(at, f"an object of {', '.join(parts)}", "type"))
            continue
        for part, text in texts.items():
            if part not in parts:
                message = f"a {channel_type} template has {', '.join(parts)}, not {part!r}"
                problems.append(FieldProblem(f"{at}/{part}", message, "additionalProperties"))
            elif not is_text(text):
                problems.append(FieldProblem(f"{at}/{part}", "a template is text", "type"))
        for part in REQUIRED.get(channel_type, ()):
            if part not in texts:
                problems.append(FieldProblem(f"{at}/{part}", f"{part} is required", "required"))
        found[locale] = {k: v for k, v in texts.items() if k in parts and isinstance(v, str)}
    return found
