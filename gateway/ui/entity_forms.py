"""Entity forms: create, edit and delete a vehicle, driver, supplier, operator or `other`
document of a kind, with a field per property of its JSON Schema (the entity type's, or for
an `other` its kind's, built in or the tenant's own).

A scalar property is one field (an enumeration or a yes/no a select); an object of scalar
properties (a driver's `cnh`) a field per property; anything else (a list, a free-form object)
a JSON textarea. A property's control is named by the property's JSON Pointer in the document
(`/cnh/number`, `/a~1b` for a property named `a/b`): the use case's problem at that pointer
finds it, any property name round-trips, and none can collide with the form's own fields
(`csrf`, `once`, `revision`, `kind`, `loaded.*`), which never start with `/`.
An edit sends the properties the admin changed (from what the form showed) as a merge patch,
the difference between the document the form showed and the one it posts, at any depth: an
emptied field removes the value (an object's property alone, a member deleted from a JSON
field's object too), an untouched one (or one not posted) is not sent, and what
the form does not show (a vehicle's position and current driver, which telemetry and the
driver assignment keep) is left as it is. An object that is one value (`x-whole`: a
supplier's `contact`, a vehicle's `last_service`), which a write replaces whole, is sent
whole when any of its members changed: the stored object with the form's changes applied,
so its untouched members are kept and an emptied one removed; the save is written only over
the revision it read (`update_entity`), so a member a partner changed meanwhile is never put
back. The natural key (plate, CPF,
CNPJ, an `other`'s kind and key) is given at creation and never changes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

from gateway.entities import Origin, merge, public
from gateway.errors import (
    Conflict,
    FieldProblem,
    GatewayError,
    InvalidPayload,
    NotFound,
    PreconditionFailed,
)
from gateway.events import public_event
from gateway.formats.json_tree import loads_sent
from gateway.kinds import public_kind
from gateway.schemas.registry import ENVELOPE_FIELDS, NATURAL_KEYS, reference_field
from gateway.ui.forms import (
    LOADED,
    Form,
    changes,
    editing,
    number_field,
    number_text,
    read_values,
    stale_edit,
    typed_values,
)
from gateway.ui.i18n import DEFAULT, Catalog
from gateway.ui.rendering import redirect, render
from gateway.ui.state import catalog_of, form_lang, form_of, session_of, tenant_of, visitor_of
from gateway.ui.templating import tojson_pretty
from gateway.web.state import services_of

# Fields other forms or feeds keep: the position (telemetry) and the driver (assignments).
KEPT_ELSEWHERE: Final = {"vehicle": frozenset({"last_position", "current_driver"})}
# Fields the telemetry moves while an admin edits (the odometer): they move no revision, and
# an edit sends one only when the admin changed it from the value the form was loaded with
# (`loaded.<name>`, hidden), so a stale value never sets the odometer back.
LIVE: Final = {"vehicle": ("odometer_km",)}
# An entity's newest events, where its page looks for its deletion: the last of them, unless
# the relay announced events of its last writes after it (a handful at most).
_LAST_EVENTS: Final = 5
# Reads of the entity a save makes while writes land between its read and its write.
_SAVE_ROUNDS: Final = 3
SCALARS: Final = {"string", "integer", "number", "boolean"}
LABEL_KEYS: Final = "field_label."  # + scope and dotted path: messages/fields.yaml


def escape(part: str) -> str:
    """A property name as a JSON Pointer reference token (RFC 6901)."""
    return part.replace("~", "~0").replace("/", "~1")


def pointer(path: tuple[str, ...]) -> str:
    """A property's JSON Pointer in the document: `("cnh", "number")` is `/cnh/number`."""
    return "".join("/" + escape(part) for part in path)


def _id_part(part: str) -> str:
    # Letters, digits and `_` as they are; any other character as `-` and 6 hex digits, so
    # that `--` (between an object's name and its property's) is never inside a part.
    kept = (c if c.isascii() and (c.isalnum() or c == "_") else f"-{ord(c):06x}" for c in part)
    return "".join(kept)


@dataclass(frozen=True, slots=True)
class Field:
    """One control of an entity form."""

    path: tuple[str, ...]  # the property's names from the document's root: ("cnh", "number")
    kind: str  # text, date, datetime, integer, number, boolean, choice, json
    required: bool = False
    options: tuple[str, ...] = ()
    help: str = ""  # the schema's description (English)
    enum: tuple[Any, ...] = ()  # a choice's values, as the document holds them
    label: str = ""  # `Labels.of`: the UI's words for a shipped schema, else its title

    def option_of(self, value: Any) -> str | None:
        """The option of a stored value: the one of the same JSON value (1 is not true)."""
        return next(
            (o for o, v in zip(self.options, self.enum, strict=True) if _same(v, value)), None
        )

    @property
    def name(self) -> str:
        """The control's name: the property's JSON Pointer (`/cnh/number`)."""
        return pointer(self.path)

    @property
    def dotted(self) -> str:
        """The property's path as the mappings write it (`cnh.number`), shown under its label."""
        return ".".join(self.path)

    @property
    def key(self) -> str:
        """The control's id suffix: `cnh--number`; a character other than a letter, digit or
        `_` escaped (a dot would read as a class in a CSS selector, a space ends an id)."""
        return "--".join(_id_part(part) for part in self.path)


def readable(name: str) -> str:
    """A property's name as a label: `odometer_km` is "Odometer km"."""
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else name


def _title(name: str, prop: Mapping[str, Any]) -> str:
    title = prop.get("title")
    return title.strip() if isinstance(title, str) and title.strip() else readable(name)


@dataclass(frozen=True, slots=True)
class Labels:
    """How a schema's properties are labelled. A shipped schema's (`scope`: its entity type or
    built-in kind) by the UI's own words in the visitor's language (`field_label.<scope>.
    <dotted path>`, messages/fields.yaml), since its `title`s are English; a tenant's uploaded
    kind (no scope) by its schema's `title`, else the name made readable, as it wrote them."""

    scope: str | None = None
    catalog: Catalog | None = None
    lang: str = DEFAULT

    def of(self, path: tuple[str, ...], prop: Mapping[str, Any]) -> str:
        if self.scope is not None and self.catalog is not None:
            key = f"{LABEL_KEYS}{self.scope}.{'.'.join(path)}"
            if key in self.catalog:
                return self.catalog.text(self.lang, key)
        return _title(path[-1], prop)


def labels_for(request: web.Request, scope: str | None) -> Labels:
    return Labels(scope, catalog_of(request), visitor_of(request).lang)


def label_of(schema: Mapping[str, Any], name: str, labels: Labels) -> str:
    """A (dotted) property's label: each part's, joined by ›."""
    parts = []
    path = tuple(name.split("."))
    for n, part in enumerate(path):
        props = schema.get("properties")
        prop = props.get(part) if isinstance(props, Mapping) else None
        schema = prop if isinstance(prop, Mapping) else {}
        parts.append(labels.of(path[: n + 1], schema))
    return " › ".join(parts)


def _scalar(
    path: tuple[str, ...],
    prop: Mapping[str, Any],
    required: bool,
    labels: Labels,
    parent: str = "",
) -> Field | None:
    help_ = str(prop.get("description") or "")
    label = parent + labels.of(path, prop)
    if isinstance(prop.get("enum"), list):
        enum = tuple(prop["enum"])
        return Field(path, "choice", required, _options(enum), help_, enum, label)
    kind = prop.get("type")
    if not isinstance(kind, str) or kind not in SCALARS:
        return None
    if kind == "boolean":
        return Field(path, "boolean", required, ("true", "false"), help_, label=label)
    if kind == "string":
        kind = {"date": "date", "date-time": "datetime"}.get(str(prop.get("format")), "text")
    return Field(path, kind, required, (), help_, label=label)


def fields_of(
    schema: Mapping[str, Any], labels: Labels, skip: frozenset[str] = frozenset()
) -> list[Field]:
    """The controls of a schema's properties, in the schema's order."""
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return []
    required = set(schema.get("required") or ())
    fields: list[Field] = []
    for name, prop in props.items():
        if name in skip or not isinstance(prop, Mapping):
            continue
        if (one := _scalar((name,), prop, name in required, labels)) is not None:
            fields.append(one)
            continue
        inner = prop.get("properties") if prop.get("type") == "object" else None
        parent = labels.of((name,), prop) + " › "
        parts = [
            _scalar((name, sub), sp, False, labels, parent)
            for sub, sp in (inner or {}).items()
            if isinstance(sp, Mapping)
        ]
        if inner and all(p is not None for p in parts):
            fields.extend(p for p in parts if p is not None)
        else:
            help_ = str(prop.get("description") or "")
            label = labels.of((name,), prop)
            fields.append(Field((name,), "json", name in required, (), help_, label=label))
    return fields


def _typed(field: Field, raw: str, lang: str) -> Any:
    """A typed value as the document holds it (a number read in the page's language); text
    that is not of the field's type stays text, for the schema to refuse at the field."""
    if field.kind in ("integer", "number"):
        return number_field({"v": raw}, "v", lang=lang, integer=field.kind == "integer")
    if field.kind == "boolean":
        return {"true": True, "false": False}.get(raw, raw)
    if field.kind == "json":
        try:
            return loads_sent(raw)
        except ValueError as exc:  # malformed, or a member named twice
            message = f"malformed JSON: {exc}"
            raise InvalidPayload(message, [FieldProblem(field.name, message, "format")]) from None
    if field.kind == "choice":  # an enumeration of numbers holds numbers
        return next((v for v, o in zip(field.enum, field.options, strict=True) if o == raw), raw)
    return raw


def _text(value: Any) -> str:
    """A value as a form shows it (a JSON boolean as true/false, null as null)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _options(enum: tuple[Any, ...]) -> tuple[str, ...]:
    """An enumeration's options, the values the select posts and shows: as text (`active`,
    `3`, `true`) while that tells them apart; else (`1` beside `"1"`, `true` beside `"true"`)
    each as its JSON (`"1"` quoted, `null`), so each is chosen for itself and stored as the
    very value."""
    texts = tuple(_text(v) for v in enum)
    if len(set(texts)) == len(texts):
        return texts
    return tuple(orjson.dumps(v).decode() for v in enum)


def _same(a: Any, b: Any) -> bool:
    """The same JSON value: 1 and true differ (Python holds them equal), 1 and 1.0 do not."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def document_of(fields: list[Field], values: Mapping[str, Any], lang: str) -> dict[str, Any]:
    """The document the form's non-empty fields make; every malformed JSON field at once."""
    doc: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for field in fields:
        raw = values.get(field.name)
        if not isinstance(raw, str) or raw == "":
            continue
        try:
            value = _typed(field, raw, lang)
        except InvalidPayload as exc:
            problems.extend(exc.problems)
            continue
        *parents, leaf = field.path
        target = doc
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    if problems:
        raise InvalidPayload("malformed JSON", problems)
    return doc


_ABSENT: Final = object()


def _at(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at a property's path, or _ABSENT (a stored null is a value)."""
    value: Any = data
    for part in path:
        value = value.get(part, _ABSENT) if isinstance(value, Mapping) else _ABSENT
    return value


def values_of(fields: list[Field], data: Mapping[str, Any], lang: str) -> dict[str, str]:
    """What the form shows of a stored document (a number in the page's language, read back
    as the same number)."""
    values: dict[str, str] = {}
    for field in fields:
        value = _at(data, field.path)
        if field.kind == "choice" and (option := field.option_of(value)) is not None:
            values[field.name] = option  # null too, when it is an option
        elif value is None or value is _ABSENT:
            values[field.name] = ""
        elif field.kind == "json":
            values[field.name] = tojson_pretty(value)
        elif field.kind in ("integer", "number") and not isinstance(value, bool):
            values[field.name] = number_text(value, lang)
        else:
            values[field.name] = _text(value)
    return values


async def _schema(
    request: web.Request, etype: str, kind: str | None
) -> tuple[dict[str, Any], Labels]:
    """The schema whose properties the form shows (the type's, or an `other`'s kind's), and
    how they are labelled (shipped: the UI's words; a tenant's kind: its own titles)."""
    schemas = services_of(request).schemas
    if etype != "other":
        return schemas.entity_schema(etype), labels_for(request, etype)
    if kind is None:  # not chosen: the kind's problem is the use case's to name
        return {}, Labels()
    if kind in schemas.builtin_kinds:
        return schemas.kind_schema(kind), labels_for(request, kind)
    doc = public_kind(await services_of(request).kinds.get(tenant_of(request), kind))
    schema: dict[str, Any] = doc["schema"]
    return schema, Labels()


async def _kinds(request: web.Request) -> list[str]:
    custom = await services_of(request).kinds.find(tenant_of(request))
    return [*services_of(request).schemas.builtin_kinds, *(d["name"] for d in custom)]


async def _creation_fields(request: web.Request, etype: str, kind: str | None) -> list[Field]:
    own = labels_for(request, etype)
    key_fields = [
        Field((k,), "text", True, label=own.of((k,), {}))
        for k in NATURAL_KEYS[etype]
        if k != "kind"
    ]
    schema, labels = await _schema(request, etype, kind)
    skip = frozenset({*NATURAL_KEYS[etype], *KEPT_ELSEWHERE.get(etype, ())})
    if etype == "other":
        return [*key_fields, *fields_of(schema, labels, skip)]
    return [
        *(f for f in fields_of(schema, labels) if f.dotted in NATURAL_KEYS[etype]),
        *fields_of(schema, labels, skip),
    ]


async def _edit_fields(request: web.Request, etype: str, data: Mapping[str, Any]) -> list[Field]:
    kind = data.get("kind") if etype == "other" else None
    schema, labels = await _schema(request, etype, str(kind) if kind is not None else None)
    skip = frozenset({*NATURAL_KEYS[etype], *ENVELOPE_FIELDS, *KEPT_ELSEWHERE.get(etype, ())})
    return fields_of(schema, labels, skip)


async def new_entity(
    request: web.Request, form: Form | None = None, *, status: int = 200
) -> web.Response:
    """The creation form; an `other` first chooses its kind (`?kind=`)."""
    etype = request.match_info["type"]
    services_of(request).schemas.require_type(etype)
    kind = (request.query.get("kind") or (form.value("kind") if form else "")) or None
    context: dict[str, Any] = {"etype": etype, "kind": kind, "fields": [], "kinds": []}
    if etype == "other" and kind is None:
        context["kinds"] = await _kinds(request)
    else:
        context["fields"] = await _creation_fields(request, etype, kind)
    context["form"] = form or Form()
    return render(request, "entities/new.html", context, status=status)


async def create_entity(request: web.Request) -> web.Response:
    etype = request.match_info["type"]
    services = services_of(request)
    services.schemas.require_type(etype)
    values = read_values(form_of(request))
    kind = values.get("kind") or None
    fields = await _creation_fields(request, etype, kind)
    try:
        doc = document_of(fields, values, form_lang(request))
        if etype == "other":
            doc["kind"] = kind or ""
        origin = Origin("admin", session_of(request).subject)
        result = await services.entities.create(tenant_of(request), etype, doc, origin)
    except GatewayError as exc:
        refused = Form(values).refuse(exc, [f.name for f in fields])
        return await new_entity(request, refused, status=exc.status)
    ref = str(result.entity["_id"])
    return redirect(f"/admin/entities/{etype}/{ref}", flash="entities.created")


async def edit_entity(
    request: web.Request, form: Form | None = None, *, status: int = 200
) -> web.Response:
    etype, ref = request.match_info["type"], request.match_info["ref"]
    doc = await services_of(request).entities.get(tenant_of(request), etype, ref)
    entity = public(doc)
    fields = await _edit_fields(request, etype, doc["data"])
    context = {
        "etype": etype,
        "entity": entity,
        "key": entity.get(reference_field(etype)) or entity["id"],
        "fields": fields,
        "form": form or _editing(etype, values_of(fields, doc["data"], form_lang(request))),
        "live": LIVE.get(etype, ()),
    }
    return render(request, "entities/edit.html", context, status=status)


def _live(etype: str) -> dict[str, str]:
    """The live properties of a type, by their control's name."""
    return {pointer((n,)): n for n in LIVE.get(etype, ())}


def _stable(etype: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The values a revision covers: all but the live ones."""
    live = _live(etype)
    return {k: v for k, v in values.items() if k not in live}


def _editing(etype: str, values: dict[str, str]) -> Form:
    loaded = {LOADED + n: values.get(name, "") for name, n in _live(etype).items()}
    form = editing(_stable(etype, values))
    form.values.update(values)
    form.values.update(loaded)
    return form


async def deleted_page(
    request: web.Request, etype: str, ref: str, typed: list[tuple[str, str]] | None = None
) -> web.Response:
    """The page of an entity deleted (410): when, by whom, its deletion's event; with `typed`,
    an edit posted after it, nothing saved and what was typed shown to copy. A NotFound for
    an entity with no deletion known (never there, or its event gone from the log)."""
    event = await services_of(request).events.deletion(
        tenant_of(request), etype, ref, recent=_LAST_EVENTS
    )
    if event is None:
        raise NotFound(f"no {etype} {ref!r}")
    context = {"etype": etype, "ref": ref, "event": public_event(event), "typed": typed}
    return render(request, "entities/deleted.html", context, status=410)


def _whole_values(
    patch: Mapping[str, Any], stored: Mapping[str, Any], whole: Collection[str]
) -> dict[str, Any]:
    """The patch with each changed object that is one value (`whole`: a supplier's
    `contact`), which the write replaces whole, as that value after the edit: the stored
    object with the patch's members applied (an untouched member kept, an emptied one
    removed), not the changed members alone, which would be all the write kept."""
    sent = dict(patch)
    for name in whole:
        value, old = sent.get(name), stored.get(name)
        if isinstance(value, Mapping):
            sent[name] = merge(old if isinstance(old, Mapping) else {}, value)
    return sent


async def update_entity(request: web.Request) -> web.Response:
    """The properties the admin changed, as a merge patch; refused (409, what was typed kept)
    when the entity changed since the form was loaded; when it was deleted meanwhile, its
    deleted page says so and shows what was typed (410). The patch is made from the entity
    as read and written only over that revision of it: a write landing in between (a
    partner's change of another member of a whole `contact`, which the patch holds as read)
    makes the save read it again and check the form against it, so a change the form shows
    is refused as any stale edit (409, the current values listed), never put back; a live
    value's (the odometer's) is made into the patch again."""
    etype, ref = request.match_info["type"], request.match_info["ref"]
    tenant, entities = tenant_of(request), services_of(request).entities
    posted = form_of(request)
    lang = form_lang(request)
    for _ in range(_SAVE_ROUNDS):
        try:
            current = await entities.get(tenant, etype, ref)
        except NotFound:
            return await deleted_page(request, etype, ref, typed_values(posted))
        fields = await _edit_fields(request, etype, current["data"])
        now = values_of(fields, current["data"], lang)
        # What the form showed: the stored values, a live one's as the form was loaded with
        # it (`loaded.<name>`: the telemetry may have moved it since, which is no change of
        # the admin's, and an unchanged field never sets it back).
        shown = {**now, **{name: posted.get(LOADED + n, "") for name, n in _live(etype).items()}}
        values = read_values(posted, shown=shown)
        if (stale := stale_edit(values, _stable(etype, now))) is not None:
            return await edit_entity(request, stale, status=409)
        try:
            # The document the form makes of what it showed, and of what was posted (a field
            # not posted as it showed it): their difference, removals at any depth included
            # (an emptied `cnh.category`, a member deleted from `attributes`' JSON), is the
            # patch.
            posted_values = {f.name: values.get(f.name, shown.get(f.name, "")) for f in fields}
            patch = changes(
                document_of(fields, posted_values, lang),
                document_of(fields, shown, lang),
                deep=True,
            )
            patch = _whole_values(
                patch, current["data"], services_of(request).schemas.whole_members(etype)
            )
            if patch:
                origin = Origin("admin", session_of(request).subject)
                await entities.patch(
                    tenant, etype, str(current["_id"]), patch, origin, at_rev=current["rev"]
                )
        except PreconditionFailed:
            continue  # written meanwhile: the form is checked against what it is now
        except GatewayError as exc:
            refused = Form(values).refuse(exc, [f.name for f in fields])
            return await edit_entity(request, refused, status=exc.status)
        return redirect(f"/admin/entities/{etype}/{current['_id']}", flash="entities.saved")
    # Written again and again while the save was made (a live value moving each moment):
    # nothing saved, what was typed kept, as for a form loaded before another admin's save.
    busy = Conflict("the item kept changing while it was being saved; nothing was changed")
    refused = Form(values).refuse(busy, [f.name for f in fields])
    return await edit_entity(request, refused, status=409)


async def delete_entity(request: web.Request) -> web.Response:
    etype, ref = request.match_info["type"], request.match_info["ref"]
    origin = Origin("admin", session_of(request).subject)
    await services_of(request).entities.delete(tenant_of(request), etype, ref, origin)
    return redirect(f"/admin/entities/{etype}", flash="entities.deleted")
