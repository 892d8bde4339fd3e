"""Every `web.AppKey`: the typed state an application carries (no module globals)."""

from __future__ import annotations

from aiohttp import web

from gateway.auth.keys import KeyRing
from gateway.config import Settings
from gateway.entities import EntityService
from gateway.events import EventRelay
from gateway.kinds import KindService
from gateway.mappings import MappingService
from gateway.metrics import Metrics
from gateway.schemas.registry import SchemaRegistry
from gateway.store import Store
from gateway.triggers import HookReceiver, RejectedPayloads, TriggerService

settings_key = web.AppKey("settings", Settings)
metrics_key = web.AppKey("metrics", Metrics)
keyring_key = web.AppKey("keyring", KeyRing)
schemas_key = web.AppKey("schemas", SchemaRegistry)
store_key = web.AppKey("store", Store)
entities_key = web.AppKey("entities", EntityService)
kinds_key = web.AppKey("kinds", KindService)
relay_key = web.AppKey("relay", EventRelay)
mappings_key = web.AppKey("mappings", MappingService)
triggers_key = web.AppKey("triggers", TriggerService)
hooks_key = web.AppKey("hooks", HookReceiver)
rejected_key = web.AppKey("rejected", RejectedPayloads)
