"""What a flow step names, found as it is now: an action (by name or id) with its partner and
request mapping. Shared by the dry run and the runner; a step that names something deleted
since the upload fails with `StepFailed`."""

from __future__ import annotations

from typing import Any

from gateway.actions.catalog import Action, Catalog, Partner
from gateway.errors import NotFound
from gateway.mapping import CompiledMapping
from gateway.notify.notifier import MappingSource
from gateway.store import Store


class StepFailed(Exception):
    """A step that cannot go on: its outcome is `failed` with this detail (and problems)."""

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail, self.errors = detail, errors or []


async def resolve_action(
    store: Store, catalog: Catalog, mappings: MappingSource, tenant: str, ref: str
) -> tuple[Action, Partner, CompiledMapping | None]:
    doc = await store.actions.get(tenant, ref)
    if doc is None:
        named = await store.actions.list(tenant, {"name": ref}, after=None, limit=1)
        if not named:
            raise StepFailed(f"no action {ref!r}")
        doc = named[0]
    try:
        action = await catalog.action(tenant, str(doc["_id"]))
        partner = await catalog.partner(tenant, action.partner_id)
        mapping = None
        if action.request_mapping:
            mapping = await mappings.active(tenant, action.request_mapping)
    except NotFound as exc:
        raise StepFailed(exc.detail) from None
    return action, partner, mapping
