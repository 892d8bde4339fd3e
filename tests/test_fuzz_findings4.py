"""Found by the fourth security round; one test per finding, each refused or answered as
documented, never a 500."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.mapping import load_mapping
from tests.support import auth

Client = TestClient[Any, Any]


def _mapping(fields: dict[str, str]) -> str:
    lines = "\n".join(f"  {target}: '{spec}'" for target, spec in fields.items())
    return (
        "name: amplify\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        f"fields:\n  plate: placa\n{lines}\n"
    )


async def _dry_run(client: Client, fields: dict[str, str], payload: Any) -> Any:
    started = time.monotonic()
    response = await client.post(
        "/api/v1/mappings/test",
        json={"mapping": _mapping(fields), "payload": payload},
        headers=auth(role="viewer"),
    )
    assert time.monotonic() - started < 5
    return response


async def test_a_text_named_by_many_fields_or_shared_in_a_list_counts_each_time(
    client: Client,
) -> None:
    """The output bound (~1 MiB as JSON per item) did not count a text a field maps to, and
    counted a multi-select named again inside another one once: a 200 KB text named by 50
    fields mapped to 10 MB, and `{x: {a: pad}} | [x, x, ... 150] | [@, @, ... 100]` to 3 GB
    in 20 ms (a viewer's dry run, a partner's POST), written out only when stored or
    answered. Each is now a 422 naming the limit, at once."""
    payload = {"placa": "ABC1D23", "pad": "x" * 200_000}
    x150 = ",".join(["x"] * 150)
    at100 = ",".join(["@"] * 100)
    for fields in (
        {f"attributes.f{i}": "pad" for i in range(50)},
        {"attributes.f": f"{{x: {{a: pad}}}} | [{x150}]"},
        {"attributes.f": f"{{x: {{a: pad}}}} | [{x150}] | [{at100}]"},
        {"attributes.f": "{x: [pad, pad]} | [x, x, x, x, x, x]"},
    ):
        response = await _dry_run(client, fields, payload)
        assert response.status == 422, (fields, (await response.text())[:300])
        problem = (await response.json())["errors"][0]
        assert problem["keyword"] == "limit", problem
        assert "1,048,576" in problem["message"], problem


def test_what_an_item_maps_to_once_is_counted_once() -> None:
    """Large texts copied once, in a multi-select or through `each`, fit the bound (700 KB of
    1 MiB): the value a multi-select or `each` built is not counted again where a field
    names it (`each` counted its items twice: 700 KB of texts was over the bound)."""
    payload = {"placa": "ABC1D23", "parts": ["x" * 350_000, "y" * 350_000]}
    for fields in (
        {"attributes.both": "{a: parts[0], b: parts[1]}"},
        {"attributes.list": "[parts[0], parts[1]]"},
        {"attributes.a": "parts[0]", "attributes.b": "parts[1]"},
        {"attributes.copies": "parts"},
    ):
        mapped = load_mapping(_mapping(fields)).apply(payload)
        assert len(json.dumps(mapped.document)) > 700_000, fields
    each = _mapping({}) + "  attributes.copies: {each: parts, item: '@'}\n"
    mapped = load_mapping(each).apply(payload)
    assert mapped.document["attributes"]["copies"] == payload["parts"]
