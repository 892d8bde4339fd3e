"""What the second round of outside fuzzing reached (the admin UI's forms, crawled with a
session; the API from its own document): each answered 500 before, each is a clear refusal
now."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gateway.services import Services
from tests.support import auth
from tests.ui_support import csrf, log_in, make_user

Client = TestClient[Any, Any]

INBOUND = (
    "name: frota\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields: {plate: placa}\n"
)


async def test_a_ui_dry_run_with_params_that_are_not_an_object_is_refused_at_the_field(
    client: Client, services: Services
) -> None:
    """The mapping page's dry run read `params` as any JSON: a number, a list or a string
    reached the binding of the mapping's parameters, a 500 page."""
    upload = await client.post(
        "/api/v1/mappings",
        data=INBOUND.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert upload.status == 201, await upload.text()
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/mappings/frota")
    for params in ("-1", "1.5", "true", '"s"', "[1]"):
        response = await client.post(
            "/admin/mappings/frota/test",
            data={"csrf": token, "payload": '{"placa": "ABC1D23"}', "params": params},
        )
        page = await response.text()
        assert response.status == 422, (params, page[:300])
        assert 'data-field="params"' in page and "params must be an object" in page, params
    fine = await client.post(
        "/admin/mappings/frota/test",
        data={"csrf": token, "payload": '{"placa": "ABC1D23"}', "params": "{}"},
    )
    assert fine.status == 200 and "ABC1D23" in await fine.text()
