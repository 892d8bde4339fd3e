"""An outbound mapping writes a CPF, a CNPJ (the alphanumeric one too) and a plate in the masked
form Brazilian ERPs and DETRAN-facing services take (`529.982.247-25`, `11.222.333/0001-81`,
`ABC-1234`): the `mask` transform, and JMESPath slices that cut text (`entity.cpf[0:3]`, which
standard JMESPath reads as null, so the field vanished from the body). Through the admin API
(upload, dry run) and a delivery to a local partner double."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    create_subscription,
    create_vehicle,
    partner,
    upload_mapping,
)
from tests.support import auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]

MASKED = """
name: erp-masked
direction: outbound
entity_type: vehicle
body:
  placa: {from: entity.plate, transforms: [plate, {mask: "###-####"}]}
  cpf: {from: entity.attributes.cpf, transforms: [cpf, {mask: "###.###.###-##"}]}
  cnpj: {from: entity.attributes.cnpj, transforms: [cnpj, {mask: "##.###.###/####-##"}]}
  cpf_by_slices:
    template: "{a}.{b}.{c}-{d}"
    vars: {a: "entity.attributes.cpf[0:3]", b: "entity.attributes.cpf[3:6]",
           c: "entity.attributes.cpf[6:9]", d: "entity.attributes.cpf[9:]"}
"""
ATTRIBUTES = {"cpf": "01234567890", "cnpj": "12abc34501de35"}
CONTEXT = {"entity": {"plate": "ABC1D23", "attributes": ATTRIBUTES}}
EXPECTED = {
    "placa": "ABC-1D23",
    "cpf": "012.345.678-90",  # the leading zero kept
    "cnpj": "12.ABC.345/01DE-35",
    "cpf_by_slices": "012.345.678-90",
}


async def _dry_run(client: Client, mapping: str, context: Any) -> tuple[int, Any]:
    response = await client.post(
        "/api/v1/mappings/test", json={"mapping": mapping, "context": context}, headers=auth()
    )
    return response.status, await response.json()


async def test_an_outbound_mapping_writes_masked_ids_in_a_dry_run(client: Client) -> None:
    status, answer = await _dry_run(client, MASKED, CONTEXT)

    assert status == 200, answer
    assert answer["request"]["body"] == EXPECTED


async def test_a_delivery_sends_the_masked_ids_to_the_partner(
    client: Client, partner: Partner
) -> None:
    await upload_mapping(client, MASKED)
    erp = await create_partner(client, partner.url)
    action = await create_action(client, erp["id"], request_mapping="erp-masked")
    await create_subscription(client, action["id"], ("entity.created",))
    await create_vehicle(client, "ABC1D23", attributes=ATTRIBUTES)

    services = client.app[services_key]
    await services.relay.run_until_idle()
    assert await services.delivery_worker.run_until_idle() == {"succeeded": 1}

    (sent,) = partner.requests
    assert sent.json() == EXPECTED


async def test_a_value_of_another_length_than_its_mask_is_a_problem_naming_both(
    client: Client,
) -> None:
    mapping = MASKED.replace("transforms: [cpf, {mask", "transforms: [{mask")
    context = {"entity": {"plate": "ABC1D23", "attributes": {**ATTRIBUTES, "cpf": "123456789"}}}

    status, answer = await _dry_run(client, mapping, context)

    assert status == 422, answer
    (problem,) = [p for p in answer["errors"] if p["target"] == "body.cpf"]
    assert problem["keyword"] == "transform"
    assert problem["message"] == 'mask "###.###.###-##" takes 11 characters; "123456789" has 9'


async def test_a_mask_without_a_slot_is_refused_at_upload(client: Client) -> None:
    text = MASKED.replace('{mask: "###-####"}', '{mask: "ABC-1234"}')
    headers = {**auth(), "Content-Type": "application/yaml"}

    response = await client.post("/api/v1/mappings", data=text.encode(), headers=headers)

    assert response.status == 422, await response.text()
    (problem,) = (await response.json())["errors"]
    assert problem["pointer"] == "/body/placa/transforms/1/mask"
    assert problem["keyword"] == "transform"


async def test_a_slice_of_text_reads_the_characters_it_names(client: Client) -> None:
    mapping = "name: s\ndirection: outbound\nbody:\n  cpf3: entity.attributes.cpf[0:3]\n"

    status, answer = await _dry_run(client, mapping, CONTEXT)

    assert status == 200, answer
    assert answer["request"]["body"] == {"cpf3": "012"}
