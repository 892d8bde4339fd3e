"""docs/mappings.md "The file": "A field whose value is null (a missing source) is left out,
and so is an object all of whose fields are left out." An `object` spec whose every member is
missing, and a `list` spec whose every element is missing, must leave the field out, not
write `{}` / `[]` over what the entity holds."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidPayload
from gateway.mapping import load_mapping
from tests.support import auth
from tests.triggers_support import Client, create_trigger, upload_mapping

GROUPS = """
name: groups-list
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: placa
  odometer_km: km
  groups: {list: [grupo, regiao]}
"""

DRIVER = """
name: driver-object
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: placa
  odometer_km: km
  current_driver: {object: {cpf: motorista.cpf, name: motorista.nome}}
"""


async def _run(client: Client, mapping: str, vehicle: dict) -> tuple[int, dict, dict]:
    made = await client.post("/api/v1/entities/vehicle", json=vehicle, headers=auth())
    assert made.status == 201, await made.text()
    await upload_mapping(client, mapping)
    name = mapping.split("name: ", 1)[1].split("\n", 1)[0]
    trigger = await create_trigger(client, mapping=name, name=name)
    response = await client.post(
        f"/hooks/{trigger['id']}",
        json={"placa": vehicle["plate"], "km": 5000},
        headers={"Authorization": f"Bearer {trigger['token']}"},
    )
    answer = await response.json()
    got = await client.get(f"/api/v1/entities/vehicle/{vehicle['plate']}", headers=auth())
    return response.status, answer, await got.json()


async def test_a_list_spec_with_every_source_missing_leaves_the_stored_list(
    client: Client,
) -> None:
    status, answer, vehicle = await _run(
        client, GROUPS, {"plate": "GRP1A11", "groups": ["norte", "frota-a"]}
    )
    assert status == 200, answer
    assert vehicle["groups"] == ["norte", "frota-a"], (answer, vehicle)  # observed: []


async def test_an_object_spec_with_every_source_missing_is_left_out(client: Client) -> None:
    status, answer, vehicle = await _run(
        client,
        DRIVER,
        {"plate": "CDR1A11", "current_driver": {"cpf": "52998224725", "name": "Ana Souza"}},
    )
    # a mileage report without the driver: observed 422 minProperties at /current_driver
    assert status == 200, answer
    assert vehicle["odometer_km"] == 5000, vehicle


SHAPES = """
name: shapes
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: placa
  groups: {list: [grupo, regiao]}
  current_driver: {object: {cpf: motorista.cpf, name: motorista.nome}}
  attributes.tags: {list: [{value: fixed}, grupo]}
"""


def test_an_empty_object_or_list_spec_maps_to_no_field_and_a_partial_one_keeps_its_values() -> None:
    mapping = load_mapping(SHAPES)
    assert mapping.apply({"placa": "ABC1D23"}).document == {
        "plate": "ABC1D23",
        "attributes": {"tags": ["fixed"]},
    }
    full = mapping.apply({"placa": "ABC1D23", "grupo": "norte", "motorista": {"nome": "Ana"}})
    assert full.document["groups"] == ["norte"]
    assert full.document["current_driver"] == {"name": "Ana"}


@pytest.mark.parametrize(
    "spec", ["{list: [grupo, regiao], required: true}", "{object: {a: x.a}, required: true}"]
)
def test_required_refuses_an_object_or_list_spec_whose_sources_are_all_missing(spec: str) -> None:
    mapping = load_mapping(
        "name: req\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        f"fields:\n  plate: placa\n  attributes.x: {spec}\n"
    )
    with pytest.raises(InvalidPayload) as caught:
        mapping.apply({"placa": "ABC1D23"})
    assert [(p.keyword, p.extra["target"]) for p in caught.value.problems] == [
        ("required", "attributes.x")
    ]
