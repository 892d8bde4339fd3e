"""The demo tenant: a small fleet, its authorized area and maintenance plan, the shipped
mappings, triggers for a Traccar server, its event forward (geofences), an OsmAnd phone app, an
ERP (vehicles and drivers), a fines provider (fines and their payments) and a checklist app,
and a schedule that polls a Geotab feed (the stand-in server `web/demo_partner.py`, served by
`gateway demo`). Its partners, channels and flows: `demo_integrations.py`.

Seeding is idempotent: running `gateway demo` twice leaves one copy of everything; triggers
that exist already get a fresh token (tokens are shown once, and the demo prints them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.actions.service import ActionService
from gateway.entities import EntityService, Origin
from gateway.errors import Conflict, InvalidPayload
from gateway.fleet.rule_service import GeofenceService, PlanService
from gateway.mapping_files.service import MappingService
from gateway.schedules.service import ScheduleService
from gateway.triggers.service import TriggerService

log = logging.getLogger(__name__)

ORIGIN = Origin("admin", "demo")

VEHICLES: list[dict[str, Any]] = [
    {
        "plate": "ABC1D23",
        "renavam": "86769597308",
        "make": "Fiat",
        "model": "Strada",
        "year": 2023,
        "type": "pickup",
        "status": "active",
        "odometer_km": 18250.0,
        "group": "sao-paulo",
        "current_driver": {"cpf": "52998224725", "name": "Maria Souza"},
        "attributes": {"tracker_id": "353861053849681"},
    },
    {
        "plate": "BRA2E19",
        "make": "Volkswagen",
        "model": "Delivery 11.180",
        "year": 2021,
        "type": "truck",
        "status": "active",
        "odometer_km": 152300.0,
        "group": "campinas",
        "attributes": {"tracker_id": "b7"},  # its Geotab device
    },
    {
        "plate": "XYZ9876",
        "make": "Honda",
        "model": "CG 160",
        "year": 2020,
        "type": "bike",
        "status": "maintenance",
        "odometer_km": 40110.0,
        "group": "sao-paulo",
        "attributes": {"tracker_id": "b3A"},  # its Geotab device
    },
]
DRIVERS: list[dict[str, Any]] = [
    {
        "name": "Maria Souza",
        "cpf": "529.982.247-25",
        "phone": "+5511999990000",
        "email": "maria.souza@example.com",
        "push_tokens": ["demo-phone-of-maria"],
        "language": "pt-BR",
        "status": "active",
        "cnh": {"number": "09770304734", "category": "B", "expires_on": "2030-01-31"},
    },
    {
        "name": "João Lima",
        "cpf": "111.444.777-35",
        "phone": "+5519988887777",
        "email": "joao.lima@example.com",
        "status": "active",
        "cnh": {"number": "10433218109", "category": "D", "expires_on": "2029-06-30"},
    },
]
SUPPLIERS: list[dict[str, Any]] = [
    {
        "name": "Oficina Central Ltda",
        "cnpj": "11.222.333/0001-81",
        "contact": {"name": "Carlos", "phone": "+551133334444"},
        "services": ["maintenance"],
    },
]
OPERATORS: list[dict[str, Any]] = [
    {
        "name": "Ana Operadora",
        "email": "ana@example.com",
        "cpf": "111.444.777-35",
        "role": "dispatcher",
    },
    {
        "name": "Carla Gestora",
        "email": "carla.gestora@example.com",
        "cpf": "861.204.735-80",
        "role": "fleet_manager",
    },
]
OTHERS: list[dict[str, Any]] = [
    {
        "kind": "fine",
        "key": "DETRAN-SP:SP123456789",
        "ait_number": "SP123456789",
        "plate": "ABC1D23",
        "authority": "DETRAN-SP",
        "infraction_code": "745-50",  # with its unfolding, as fine-feed stores it
        "description": "Transitar em velocidade superior à máxima permitida em até 20%",
        "amount_brl": 130.16,
        "points": 4,
        "status": "open",
    },
]


async def seed_entities(entities: EntityService, tenant: str) -> int:
    created = 0
    for etype, docs in (
        ("vehicle", VEHICLES),
        ("driver", DRIVERS),
        ("supplier", SUPPLIERS),
        ("operator", OPERATORS),
        ("other", OTHERS),
    ):
        for doc in docs:
            try:
                await entities.create(tenant, etype, doc, ORIGIN)
                created += 1
            except Conflict:
                pass  # already seeded
    return created


# Scenario 1: the São Paulo vehicles' authorized area, 1.5 km around Avenida Paulista, where
# the Traccar sample (ABC1D23 at -23.56118, -46.65578) and the Geotab stand-in's devices start;
# the Geotab devices drift east out of it after some minutes. Scenario 2: ABC1D23 (18,250 km)
# was last serviced at 8,255 km, so its 10,000 km service falls due 5 km of driving later.
GEOFENCES: list[dict[str, Any]] = [
    {
        "name": "Região da Paulista",
        "kind": "authorized",
        "circle": {"lat": -23.5613, "lon": -46.6565, "radius_m": 1500},
        "group": "sao-paulo",
        "margin_m": 25,
        "dwell_seconds": 30,
    },
]
PLANS: list[dict[str, Any]] = [
    {
        "name": "Revisão 10.000 km",
        "every_km": 10_000,
        "due_soon_km": 500,
        "every_days": 180,
        "start_km": 8_255,
        "group": "sao-paulo",
    },
]


async def seed_fleet_rules(geofences: GeofenceService, plans: PlanService, tenant: str) -> int:
    created = 0
    for service, docs in ((geofences, GEOFENCES), (plans, PLANS)):
        for doc in docs:
            try:
                await service.create(tenant, doc)
                created += 1
            except Conflict:
                pass  # already seeded
    return created


TRIGGERS: list[dict[str, Any]] = [
    {
        "name": "traccar-positions",
        "target": "positions",
        "methods": ["POST"],
        "mapping": "traccar-position",
    },
    {
        "name": "traccar-events",
        "entity_type": "vehicle",
        "methods": ["POST"],
        "mapping": "traccar-event",
    },
    {
        "name": "osmand-phone",
        "target": "positions",
        "methods": ["GET", "POST"],
        "mapping": "osmand",
        "format": "form",
        "auth": {"token_in_query": "token"},
    },
    {"name": "erp-vehicles", "entity_type": "vehicle", "methods": ["GET", "POST"]},
    {"name": "erp-drivers", "entity_type": "driver", "methods": ["GET", "POST"]},
    {
        "name": "fines-provider",
        "entity_type": "other",
        "kind": "fine",
        "methods": ["POST"],
        "mapping": "fine-feed",
    },
    {
        "name": "fine-payments",
        "entity_type": "other",
        "kind": "fine",
        "methods": ["POST"],
        "mapping": "fine-payment",
    },
    {
        "name": "checklists",
        "entity_type": "other",
        "kind": "checklist",
        "methods": ["POST"],
        "mapping": "checklist",
    },
]


@dataclass(frozen=True, slots=True)
class DemoTrigger:
    name: str
    url: str
    token: str


async def seed_mappings(mappings: MappingService, tenant: str, directory: Path) -> int:
    uploaded = 0
    for file in sorted(directory.glob("*.yaml")):
        try:
            await mappings.upload(tenant, file.read_bytes(), author="demo", filename=file.name)
            uploaded += 1
        except InvalidPayload as exc:
            log.warning("demo mapping %s not loaded: %s", file.name, exc.detail)
    return uploaded


async def seed_triggers(triggers: TriggerService, tenant: str) -> list[DemoTrigger]:
    existing = {t["name"]: t["id"] for t in await triggers.list(tenant, after=None, limit=200)}
    issued = []
    for spec in TRIGGERS:
        if spec["name"] in existing:
            result = await triggers.rotate(tenant, existing[spec["name"]])
        else:
            result = await triggers.create(tenant, spec)
        assert result.token is not None
        issued.append(DemoTrigger(spec["name"], result.trigger["url"], result.token))
    return issued


GEOTAB_SCHEDULE = "geotab-logrecords"


async def seed_geotab(
    actions: ActionService,
    schedules: ScheduleService,
    tenant: str,
    base_url: str,
    credentials: dict[str, str],
) -> dict[str, Any]:
    """A Geotab partner (session auth), its GetFeed action and a schedule reading LogRecords
    every 30 s with the version cursor; `base_url` serves MyGeotab's /apiv1."""
    partners = await actions.list_partners(tenant, after=None, limit=200)
    partner = next((p for p in partners if p["name"] == "Geotab (demo)"), None)
    if partner is None:
        partner = await actions.create_partner(
            tenant,
            {
                "name": "Geotab (demo)",
                "base_url": base_url,
                "auth": {"type": "geotab", "url": f"{base_url}/apiv1", **credentials},
            },
        )
    listed = await actions.list_actions(tenant, {}, after=None, limit=200)
    action = next((a for a in listed if a["name"] == "geotab-getfeed"), None)
    if action is None:
        action = await actions.create_action(
            tenant,
            {
                "name": "geotab-getfeed",
                "partner_id": str(partner["_id"]),
                "method": "POST",
                "path": "/apiv1",
                "mode": "proxy",
                "read_only": True,
            },
        )
    existing = await schedules.list(tenant, after=None, limit=200)
    found = next((s for s in existing if s["name"] == GEOTAB_SCHEDULE), None)
    if found is not None:
        return found
    return await schedules.create(
        tenant,
        {
            "name": GEOTAB_SCHEDULE,
            "action_id": str(action["_id"]),
            "every": "30s",
            "request": {
                "body": {
                    "method": "GetFeed",
                    "params": {"typeName": "LogRecord", "resultsLimit": 5},
                }
            },
            "cursor": {"from": "result.toVersion", "param": "body.params.fromVersion"},
            "error": "error",
            "target": {"entity_type": "vehicle", "mapping": "geotab-logrecord"},
        },
    )
