"""Use case: partner endpoints, actions and subscriptions as admin-managed resources.

One service for the three resource families, each in its own module: `partners.py`,
`definitions.py` (actions) and `subscriptions.py`. Bodies are checked whole
(`body_check.py`) before anything is stored; credentials and secrets are sealed.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.actions.catalog import Catalog
from gateway.actions.definitions import (
    ActionUseCases,
    FlowUsers,
    ReadWithChanged,
    no_flow_users,
    no_schedules,
)
from gateway.actions.partners import PartnerUseCases
from gateway.actions.subscriptions import SubscriptionUseCases
from gateway.auth.secretbox import SecretBox
from gateway.mapping_files.source import MappingSource
from gateway.outbound.breaker import PartnerGuards
from gateway.store import Store


class ActionService(PartnerUseCases, ActionUseCases, SubscriptionUseCases):
    def __init__(
        self,
        store: Store,
        box: SecretBox,
        catalog: Catalog,
        guards: PartnerGuards,
        mappings: MappingSource | None = None,
        *,
        flow_users: FlowUsers = no_flow_users,
        on_unsendable: Callable[[int], None] = lambda count: None,
        read_with_changed: ReadWithChanged = no_schedules,
    ) -> None:
        self._store = store
        self._box = box
        self._catalog = catalog
        self._guards = guards
        self._mappings = mappings
        self._flow_users = flow_users
        self._on_unsendable = on_unsendable
        self._read_with_changed = read_with_changed
