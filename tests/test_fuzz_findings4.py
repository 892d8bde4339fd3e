"""Found by the fourth security round; one test per finding, each refused or answered as
documented, never a 500."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.errors import InvalidPayload
from gateway.mapping import DecodedTexts, load_mapping
from tests.partner_double import create_partner
from tests.support import auth
from tests.triggers_support import bearer, create_trigger, upload_mapping

Client = TestClient[Any, Any]


def _mapping(fields: dict[str, str]) -> str:
    lines = "\n".join(f"  {target}: '{spec}'" for target, spec in fields.items())
    return (
        "name: amplify\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        f"fields:\n  plate: placa\n{lines}\n"
    )


async def _dry_run(client: Client, fields: dict[str, str], payload: Any) -> Any:
    started = time.process_time()  # the CPU spent, which the machine's load does not stretch
    response = await client.post(
        "/api/v1/mappings/test",
        json={"mapping": _mapping(fields), "payload": payload},
        headers=auth(role="viewer"),
    )
    assert time.process_time() - started < 5
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


async def test_the_items_of_one_payload_map_to_a_bounded_total(client: Client) -> None:
    """Each item was bounded, their sum not: a viewer's dry run of 1,000 items (230 KB), each
    mapped to ~480 KB, built 476 MB in 20 s, every request waiting. The items of a payload
    now map to 16 MiB together: the items past it get a `limit` problem, at once."""
    multi = "{" + ",".join(f"k{i}:@" for i in range(100)) + "}"
    fields = {f"attributes.f{i}": multi for i in range(20)}
    payload = [{"placa": f"ABC{i:04d}", "t": "x" * 200} for i in range(1000)]
    response = await _dry_run(client, fields, payload)
    assert response.status == 200, (await response.text())[:300]
    results = (await response.json())["results"]
    assert len(results) == 1000
    mapped = [r for r in results if "document" in r]
    assert 30 < len(mapped) < 40, len(mapped)
    refused = results[len(mapped) :]
    assert all(r["errors"][0]["keyword"] == "limit" for r in refused), refused[0]
    assert "16,777,216" in refused[-1]["errors"][0]["message"], refused[-1]


async def test_a_batch_posted_to_a_hook_maps_to_a_bounded_total(client: Client) -> None:
    """An array body is a payload's items too: past 16 MiB mapped, the items are refused
    (207, a `limit` problem each), not mapped to a gigabyte."""
    multi = "{" + ",".join(f"k{i}:@" for i in range(100)) + "}"
    await upload_mapping(client, _mapping({f"attributes.f{i}": multi for i in range(20)}))
    trigger = await create_trigger(client, mapping="amplify")
    payload = [{"placa": f"ABC{i:04d}", "t": "x" * 400} for i in range(500)]
    started = time.process_time()  # the CPU spent, which the machine's load does not stretch
    response = await client.post(f"/hooks/{trigger['id']}", json=payload, headers=bearer(trigger))
    assert time.process_time() - started < 20
    assert response.status == 207, (await response.text())[:300]
    answer = await response.json()
    assert 15 < answer["summary"]["created"] < 25, answer["summary"]
    refused = [r for r in answer["results"] if r.get("status") == 422]
    assert len(refused) + answer["summary"]["created"] == 500, answer["results"][-1]
    assert "16,777,216" in json.dumps(refused[-1]), refused[-1]


def _template(text: str) -> dict[str, Any]:
    return {
        "name": "t",
        "channel_type": "email",
        "default_locale": "pt-BR",
        "locales": {"pt-BR": {"subject": "s", "text": text}},
    }


async def test_a_template_nested_too_deeply_to_compile_is_a_422_not_a_500(client: Client) -> None:
    """Jinja's parser and code generator recurse, and Python refuses code nested past its
    limits: 25 nested `for`s, 100 `if`s or 300 brackets were a RecursionError or a
    SyntaxError, a 500 on preview, upload and an action's `xml_body`. Now a `limit` problem."""
    deep = (
        "{% for a in [1] %}" * 25 + "{% endfor %}" * 25,
        "{% if 1 %}" * 100 + "{% endif %}" * 100,
        "{{ " + "(" * 300 + "1" + ")" * 300 + " }}",
        "{{ " + "[" * 300 + "]" * 300 + " }}",
        "{{ 1" + "+1" * 300 + " }}",
    )
    partner = await create_partner(client, "http://127.0.0.1:9")
    for text in deep:
        preview = await client.post(
            "/api/v1/templates/preview",
            json={"template": _template(text), "context": {}},
            headers=auth(role="viewer"),
        )
        assert preview.status == 422, (text[:40], await preview.text())
        problem = (await preview.json())["errors"][0]
        assert problem["keyword"] == "limit", problem
        assert "too deeply" in problem["message"], problem
        upload = await client.post(
            "/api/v1/templates", json={**_template(text), "sample": {}}, headers=auth()
        )
        assert upload.status == 422, (text[:40], await upload.text())
        action = await client.post(
            "/api/v1/actions",
            json={
                "name": "soap",
                "partner_id": partner["id"],
                "method": "POST",
                "path": "/ws",
                "mode": "deliver",
                "xml_body": {"template": f"<a>{text}</a>"},
            },
            headers=auth(),
        )
        assert action.status == 422, (text[:40], await action.text())
        assert "too deeply" in await action.text()


async def test_a_template_cannot_build_a_value_too_large_to_compare(client: Client) -> None:
    """`{% set ns.x = [ns.x, ns.x] %}` in a loop builds a value of 2**n parts held by n
    lists; comparing two of them runs in C, where neither the step budget nor the deadline
    reaches: at 60 levels one viewer's preview froze the whole process for good (22 levels
    here: 4 million comparisons). A list, tuple or dict a template writes is measured as it
    is built: a `limit` problem, at once."""
    for left, right in (("[", "]"), ("(", ")"), ("{'a': ", ", 'b': ns.x}")):
        grow_x = f"{left}ns.x, ns.x{right}" if left != "{'a': " else "{'a': ns.x, 'b': ns.x}"
        grow_y = grow_x.replace("ns.x", "ns.y")
        text = (
            "{% set ns = namespace(x=[], y=[]) %}{% for i in range(22) %}"
            f"{{% set ns.x = {grow_x} %}}{{% set ns.y = {grow_y} %}}"
            "{% endfor %}{{ ns.x == ns.y }}{{ ns.x is eq(ns.y) }}"
        )
        preview = await client.post(
            "/api/v1/templates/preview",
            json={"template": _template(text), "context": {}},
            headers=auth(role="viewer"),
        )
        assert preview.status == 422, (grow_x, await preview.text())
        assert (await preview.json())["errors"][0]["keyword"] == "limit"
    fine = "{% for a, b in [(1, 2)] %}{{ a }}{{ b }}{% endfor %}{{ [1, 2][0] }}{{ {'k': 3}.k }}"
    preview = await client.post(
        "/api/v1/templates/preview",
        json={"template": _template(fine), "context": {}},
        headers=auth(role="viewer"),
    )
    assert preview.status == 200, await preview.text()
    assert (await preview.json())["parts"]["text"] == "1213"


async def test_a_flow_steps_values_are_bounded_together(client: Client) -> None:
    """Each value of a flow step was its own evaluation, unbounded together: 100 `set`
    fields naming a 200 KB text of the event were 20 MB a step, and a viewer's dry run of
    five such steps answered 300 MB. A step's values now come to about 1 MiB together (as
    JSON): past it the step fails with a `limit` problem."""
    vehicle = await client.post(
        "/api/v1/entities/vehicle", json={"plate": "ABC1D23"}, headers=auth()
    )
    assert vehicle.status == 201, await vehicle.text()
    lines = ["name: amp", "on:", "  events: [fine.received]", "steps:"]
    for step in range(5):
        lines += [
            f"  - id: s{step}",
            "    set:",
            "      entity: {type: vehicle, ref: event.data.plate}",
        ]
        lines += [
            "      fields:",
            *(f"        attributes.f{i}: event.data.pad" for i in range(100)),
        ]
    event = {
        "type": "fine.received",
        "occurred_at": "2026-11-19T09:00:00Z",
        "entity": {"type": "other", "id": "65f000000000000000000001", "key": "fine:A1"},
        "data": {"kind": "fine", "key": "A1", "plate": "ABC1D23", "pad": "x" * 200_000},
    }
    response = await client.post(
        "/api/v1/flows/test",
        json={"flow": "\n".join(lines) + "\n", "event": event},
        headers=auth(role="viewer"),
    )
    text = await response.text()
    assert response.status == 200, text[:300]
    assert len(text) < 2_000_000, len(text)
    step = (await response.json())["steps"][0]
    assert step["outcome"] == "failed", step
    assert "1,048,576" in json.dumps(step), step


def test_a_trigger_with_a_larger_body_limit_has_a_larger_batch_bound() -> None:
    """The 16 MiB a payload's items map to together is 16 bodies of the default limit: a
    trigger allowed 2 MiB bodies (GATEWAY_MAX_BODY_BYTES raised) has 32 MiB, so a batch that
    copies its items a few times over is not refused for the operator's own setting."""
    multi = "{" + ",".join(f"k{i}:@" for i in range(50)) + "}"
    mapping = load_mapping(_mapping({"attributes.f": multi}))
    items = [{"placa": f"ABC{i:04d}", "t": "x" * 8_000} for i in range(50)]  # 400 KB each

    def mapped(texts: DecodedTexts) -> int:
        done = 0
        for item in mapping.items(items, texts=texts):
            try:
                mapping.apply(item, texts=texts)
            except InvalidPayload as exc:
                assert "16,777,216" in exc.problems[0].message, exc.problems
                continue
            done += 1
        return done

    assert mapped(DecodedTexts()) < 45
    assert mapped(DecodedTexts(2 * 1024 * 1024)) == 50
