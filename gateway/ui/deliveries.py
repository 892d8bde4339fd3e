"""Delivery pages: filter by status, partner, action, entity or flow run; one delivery's
kind (webhook, a flow's call, a notification with its channel, recipient and rendered
message) and attempt timeline; replay one, or every failed one matching the filter."""

from __future__ import annotations

from aiohttp import web

from gateway import paging
from gateway.delivery.deliveries import STATUSES, parse_filters, public_delivery
from gateway.errors import NotFound
from gateway.schemas.registry import ENTITY_TYPES
from gateway.ui import choices
from gateway.ui.i18n import LANGUAGES, Catalog
from gateway.ui.rendering import redirect, render
from gateway.ui.state import catalog_of, form_of, tenant_of
from gateway.web.state import services_of

_FILTERS = ("status", "partner_id", "action_id", "entity_id", "run_id")


async def _matching(request: web.Request, filters: dict[str, str]) -> dict[str, str]:
    """The filters as the store reads them: the entity one, typed as the list shows an entity
    (its type's word in either language, or the type, and its key: "Veículo ABC1D23",
    "vehicle ABC1D23"), as its key alone in any written form (`abc-1d23`, a CPF with its
    punctuation) or as its id, is the entity's id (an entity deleted since is found only by
    the id its deliveries keep). A key alone is looked for in each entity type in turn."""
    typed = filters.get("entity_id", "").strip()
    if not typed:
        return filters
    word, _, key = typed.partition(" ")
    etype = _type_words(catalog_of(request)).get(word.casefold())
    candidates = [(etype, key.strip())] if etype and key.strip() else []
    candidates += [(t, typed) for t in ENTITY_TYPES]
    tenant, entities = tenant_of(request), services_of(request).entities
    for etype, ref in candidates:
        try:
            doc = await entities.get(tenant, etype, ref)
        except NotFound:
            continue
        return {**filters, "entity_id": str(doc["_id"])}
    return {**filters, "entity_id": typed}


def _type_words(catalog: Catalog) -> dict[str, str]:
    """Each entity type by the words an entity's type is written in before its key: the type
    itself and its word in each language (templates `entity_ref`), in any case."""
    return {
        word.casefold(): etype
        for etype in ENTITY_TYPES
        for word in (etype, *(catalog.text(lang, f"entity_one.{etype}") for lang in LANGUAGES))
    }


async def list_deliveries(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    services = services_of(request)
    limit, cursor = paging.page_params(request.query)
    filters = parse_filters({k: v for k, v in request.query.items() if k in _FILTERS})
    matching = await _matching(request, filters)
    docs = await services.deliveries.list(tenant, matching, before=cursor, limit=limit)
    actions = choices.named(await choices.actions(request))
    context = {
        "items": [public_delivery(d) for d in docs],
        "next_cursor": docs[-1]["_id"] if len(docs) == limit else None,
        "filters": filters,
        "statuses": STATUSES,
        "partners": choices.named(await choices.partners(request)),
        "actions": actions,
        "actions_by_id": dict(actions),
    }
    return render(request, "deliveries/list.html", context)


async def delivery_page(request: web.Request) -> web.Response:
    doc = await services_of(request).deliveries.get(tenant_of(request), request.match_info["id"])
    context = {
        "d": public_delivery(doc, full=True),
        "actions_by_id": choices.by_id(await choices.actions(request)),
        "partners_by_id": choices.by_id(await choices.partners(request)),
    }
    return render(request, "deliveries/detail.html", context)


async def replay_delivery(request: web.Request) -> web.Response:
    delivery_id = request.match_info["id"]
    await services_of(request).deliveries.replay(tenant_of(request), delivery_id)
    return redirect(f"/admin/deliveries/{delivery_id}", flash="deliveries.replayed")


async def replay_deliveries(request: web.Request) -> web.Response:
    data = form_of(request)
    filters = parse_filters({k: v for k in _FILTERS if isinstance(v := data.get(k), str) and v})
    matching = await _matching(request, filters)
    count = await services_of(request).deliveries.replay_matching(tenant_of(request), matching)
    flash = "deliveries.replayed_many" if count else "deliveries.replayed_none"
    return redirect("/admin/deliveries?status=pending", flash=flash)
