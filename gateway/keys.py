"""Every `web.AppKey`: the typed state an application carries (no module globals)."""

from __future__ import annotations

from aiohttp import web

from gateway.actions.deliveries import DeliveryService
from gateway.actions.fanout import FanOut
from gateway.actions.proxy import Proxy
from gateway.actions.service import ActionService
from gateway.actions.worker import DeliveryWorker
from gateway.auth.keys import KeyRing
from gateway.auth.tokens import AdminTokenVerifier
from gateway.config import Settings
from gateway.entities import EntityService
from gateway.events import EventRelay
from gateway.kinds import KindService
from gateway.mappings import MappingService
from gateway.metrics import Metrics
from gateway.schemas.registry import SchemaRegistry
from gateway.store import Store
from gateway.store.health import DatabaseHealth
from gateway.triggers import HookReceiver, RejectedPayloads, TriggerService

settings_key = web.AppKey("settings", Settings)
metrics_key = web.AppKey("metrics", Metrics)
keyring_key = web.AppKey("keyring", KeyRing)
admin_verifier_key = web.AppKey("admin_verifier", AdminTokenVerifier)
schemas_key = web.AppKey("schemas", SchemaRegistry)
store_key = web.AppKey("store", Store)
db_health_key = web.AppKey("db_health", DatabaseHealth)
entities_key = web.AppKey("entities", EntityService)
kinds_key = web.AppKey("kinds", KindService)
relay_key = web.AppKey("relay", EventRelay)
mappings_key = web.AppKey("mappings", MappingService)
triggers_key = web.AppKey("triggers", TriggerService)
hooks_key = web.AppKey("hooks", HookReceiver)
rejected_key = web.AppKey("rejected", RejectedPayloads)
actions_key = web.AppKey("actions", ActionService)
proxy_key = web.AppKey("proxy", Proxy)
fanout_key = web.AppKey("fanout", FanOut)
delivery_worker_key = web.AppKey("delivery_worker", DeliveryWorker)
deliveries_key = web.AppKey("deliveries", DeliveryService)
