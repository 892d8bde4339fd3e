"""The demo tenant: a small fleet with drivers, a supplier, an operator and a fine.

Seeding is idempotent: running `gateway demo` twice leaves one copy of everything.
"""

from __future__ import annotations

from typing import Any

from gateway.entities import EntityService, Origin
from gateway.errors import Conflict

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
    },
]
DRIVERS: list[dict[str, Any]] = [
    {
        "name": "Maria Souza",
        "cpf": "529.982.247-25",
        "phone": "+5511999990000",
        "email": "maria.souza@example.com",
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
]
OTHERS: list[dict[str, Any]] = [
    {
        "kind": "fine",
        "key": "SP123456789",
        "ait_number": "SP123456789",
        "plate": "ABC1D23",
        "authority": "DETRAN-SP",
        "infraction_code": "74550",
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
