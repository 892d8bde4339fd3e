"""What a form's selects offer: every one of a tenant's partners, actions, drivers, a channel
type's templates (each in one query, only the members a select shows) or mappings (read page
by page: a list page holds at most paging.MAX_PAGE), so whatever is stored can be chosen and
a stored choice is always an option (the `select` macro offers the form's value even when
nothing holds it, say a mapping deleted since): a save never turns a choice the select could
not show into another, or into none. The same lists name the partners and actions a page
refers to by id (the deliveries' "To" column). (The pages that look at a whole fleet read it
in one query: FleetOverview.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from aiohttp import web

from gateway.mapping_files.service import MappingSummary
from gateway.paging import MAX_PAGE
from gateway.store import Doc
from gateway.ui.state import tenant_of
from gateway.web.state import services_of

T = TypeVar("T")


async def every(
    page: Callable[[str | None], Awaitable[list[T]]], cursor: Callable[[T], str]
) -> list[T]:
    """Every item of a list read a page at a time: `page(after)` gives the items after the
    cursor `after` (None: the first), `cursor(item)` an item's."""
    items: list[T] = []
    after: str | None = None
    while True:
        found = await page(after)
        items.extend(found)
        if len(found) < MAX_PAGE:
            return items
        after = cursor(found[-1])


async def mappings(request: web.Request, direction: str) -> list[tuple[str, str]]:
    """The tenant's mappings of a direction (inbound, outbound), as (name, name) options."""
    tenant, service = tenant_of(request), services_of(request).mappings

    async def page(after: str | None) -> list[MappingSummary]:
        return await service.find(tenant, after=after, limit=MAX_PAGE)

    found = await every(page, lambda m: m.name)
    return [(m.name, m.name) for m in found if m.direction == direction]


async def partners(request: web.Request) -> list[Doc]:
    """The tenant's partners (id and name), in one query."""
    return await services_of(request).actions.partner_names(tenant_of(request))


async def actions(request: web.Request, filters: Mapping[str, str] | None = None) -> list[Doc]:
    """The tenant's actions (those matching `filters`: a partner's): id, name, partner,
    method, path and read_only, in one query."""
    return await services_of(request).actions.action_names(tenant_of(request), filters or {})


async def entities(request: web.Request, etype: str, fields: tuple[str, ...]) -> list[Doc]:
    """The tenant's entities of a type (its drivers), only the `data` members `fields`, in
    one query."""
    return await services_of(request).entities.every(tenant_of(request), etype, fields)


async def templates(request: web.Request, channel_type: str) -> list[tuple[str, str]]:
    """The tenant's templates of a channel type, as (name, name) options, in one query."""
    found = await services_of(request).notify.templates.names(tenant_of(request), channel_type)
    return [(str(t["name"]), str(t["name"])) for t in found]


def by_id(docs: list[Doc]) -> dict[str, Doc]:
    """Partners or actions by id: a page names the ones it refers to by id."""
    return {str(d["_id"]): d for d in docs}


def named(docs: list[Doc]) -> list[tuple[str, str]]:
    """Partners or actions as (id, name) options."""
    return [(str(d["_id"]), str(d["name"])) for d in docs]
