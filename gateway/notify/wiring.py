"""The notify lane's components of one process, opened and closed together (app.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.assignments import AssignmentService
from gateway.entities import EntityService
from gateway.notify.templates import TemplateService
from gateway.store import Store


@dataclass(frozen=True, slots=True)
class NotifyServices:
    assignments: AssignmentService
    templates: TemplateService


@contextlib.asynccontextmanager
async def open_notify(store: Store, entities: EntityService) -> AsyncIterator[NotifyServices]:
    yield NotifyServices(
        assignments=AssignmentService(store.notify.assignments, entities),
        templates=TemplateService(store.notify.templates),
    )
