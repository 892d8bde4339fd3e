"""Bodies schemathesis reached once the OpenAPI document was exact (tests/test_schemathesis.py):
each answered 500 before; each is a clear 422 now, with nothing written."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp.test_utils import TestClient

from tests.support import auth

Client = TestClient[Any, Any]


async def test_trigger_patch_with_an_auth_that_is_not_an_object_is_refused(
    client: Client,
) -> None:
    created = await client.post(
        "/api/v1/triggers",
        json={"name": "t", "entity_type": "vehicle", "methods": ["POST"]},
        headers=auth(),
    )
    trigger = await created.json()
    for auth_value in ([], "token", 3):
        response = await client.patch(
            f"/api/v1/triggers/{trigger['id']}", json={"auth": auth_value}, headers=auth()
        )
        assert response.status == 422, await response.text()
        assert any(e["pointer"].startswith("/auth") for e in (await response.json())["errors"])
    unchanged = await client.get(f"/api/v1/triggers/{trigger['id']}", headers=auth())
    assert (await unchanged.json())["auth"]["mode"] == "token"


async def test_a_kind_schema_the_database_cannot_store_is_refused(client: Client) -> None:
    schema = {"type": "object", "properties": {"a\u0000b": {"type": "string"}}}
    created = await client.post(
        "/api/v1/kinds", json={"name": "nul", "schema": schema}, headers=auth()
    )
    assert created.status == 422, await created.text()
    assert "cannot be stored" in (await created.json())["detail"]
    assert (await client.get("/api/v1/kinds/nul", headers=auth())).status == 404
    sound = {"type": "object", "properties": {"ab": {"type": "string"}}}
    ok = await client.post("/api/v1/kinds", json={"name": "nul", "schema": sound}, headers=auth())
    assert ok.status == 201
    replaced = await client.put("/api/v1/kinds/nul", json={"schema": schema}, headers=auth())
    assert replaced.status == 422, await replaced.text()
    kept = await client.get("/api/v1/kinds/nul", headers=auth())
    assert (await kept.json())["schema"] == sound


async def test_an_upload_with_a_number_too_long_to_read_is_refused_naming_it(
    client: Client,
) -> None:
    """Python refuses to read an integer of over 4,300 digits (a ValueError deep in the YAML
    reader): a mapping or flow upload carrying one was a 500; it is a 422 at its line."""
    huge = "1" + "0" * 5000
    uploads = {
        "/api/v1/mappings": (
            "name: m\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
            f"fields: {{plate: placa, odometer_km: {{value: {huge}}}}}\n"
        ),
        "/api/v1/flows": f"name: f\non:\n  events: [fine.received]\nsteps: {huge}\n",
    }
    for path, text in uploads.items():
        for body in (text, f'{{"name": {huge}}}'):
            response = await client.post(
                path, data=body.encode(), headers={**auth(), "Content-Type": "application/yaml"}
            )
            assert response.status == 422, (path, await response.text())
            problem = await response.json()
            assert any("too long a number" in e["message"] for e in problem["errors"]), problem
        listed = await client.get(path, headers=auth())
        assert (await listed.json())["items"] == []


async def test_a_sample_nested_beyond_the_limit_is_refused_like_a_trigger_refuses_it(
    client: Client,
) -> None:
    """A dry run's pasted sample is read as a trigger reads its body: JSON nested 100,000 deep
    was a RecursionError (500); it is a 422 naming the sample, as is JSON nested past 32."""
    mapping = (
        "name: m\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields: {plate: p}\n"
    )
    for sample in ("[" * 100_000, '{"p": ' * 40 + "1" + "}" * 40, '{"p": "ABC1D23"'):
        response = await client.post(
            "/api/v1/mappings/test", json={"mapping": mapping, "payload": sample}, headers=auth()
        )
        assert response.status == 422, await response.text()
        problem = await response.json()
        assert problem["errors"][0]["pointer"] == "/payload", problem
        assert "JSON" in problem["detail"], problem
    kept = await client.post(
        "/api/v1/mappings/test",
        json={"mapping": mapping, "payload": '{"p": "ABC1D23"}'},
        headers=auth(),
    )
    assert kept.status == 200, await kept.text()


async def test_a_query_string_sample_with_an_escape_that_is_not_utf_8_is_refused_not_replaced(
    client: Client,
) -> None:
    """A trigger refuses `c=%E3` (Latin-1 escapes without a charset: a 400 asking to name it);
    the dry run read the same sample with U+FFFD in place of the byte, a result the trigger
    never gives."""
    mapping = (
        "name: m\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "fields: {plate: p, attributes.c: c}\n"
    )
    response = await client.post(
        "/api/v1/mappings/test",
        json={"mapping": mapping, "payload": "p=ABC1D23&c=S%E3o"},
        headers=auth(),
    )
    assert response.status == 422, await response.text()
    problem = await response.json()
    assert problem["errors"][0]["pointer"] == "/payload" and "UTF-8" in problem["detail"], problem
    kept = await client.post(
        "/api/v1/mappings/test",
        json={"mapping": mapping, "payload": "p=ABC1D23&c=S%C3%A3o"},
        headers=auth(),
    )
    assert kept.status == 200, await kept.text()
    (result,) = (await kept.json())["results"]
    assert result["document"]["attributes"] == {"c": "São"}


def _draft(text: str) -> dict[str, Any]:
    return {
        "name": "t",
        "channel_type": "email",
        "default_locale": "pt-BR",
        "locales": {"pt-BR": {"subject": "s", "text": text}},
    }


async def test_an_infinite_constant_in_a_template_renders_or_is_refused_never_a_500(
    client: Client,
) -> None:
    """Jinja folds `'inf'|float` and `1e999` at compile time and wrote them into the render
    code as the bare names `inf` and `nan`: a NameError, so a 500 on preview, upload or send."""
    for text, shown in (
        ("{{ 1e999 }}", "inf"),
        ("{{ 'nan'|float }}", "nan"),
        ("{{ -1e999 }}", "-inf"),
    ):
        response = await client.post(
            "/api/v1/templates/preview",
            json={"template": _draft(text), "context": {}},
            headers=auth(role="viewer"),
        )
        assert response.status == 200, await response.text()
        assert (await response.json())["parts"]["text"] == shown
    refused = await client.post(
        "/api/v1/templates", json={**_draft("{{ 'inf'|float|int }}"), "sample": {}}, headers=auth()
    )
    assert refused.status == 422, await refused.text()
    assert "infinity" in (await refused.json())["errors"][0]["message"]
    assert (await (await client.get("/api/v1/templates", headers=auth())).json())["items"] == []


async def test_a_time_zone_named_like_a_directory_or_too_long_is_unknown_not_a_500(
    client: Client,
) -> None:
    """ZoneInfo reads a zone name as a file path: "America" (a directory) or a name longer
    than a file name raised OSError, which no caller expected: a 500 on a schedule, the
    notification settings and a template's `datetime` filter. Each is an unknown zone now, as
    are the zoneinfo files that are no IANA zone (`localtime`, the host's own, would run a
    schedule at another hour on each host)."""
    for name in ("America", "x" * 300, "localtime", "posixrules", "Factory", "right/UTC"):
        settings = await client.put(
            "/api/v1/notification-settings",
            json={"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": name}},
            headers=auth(),
        )
        assert settings.status == 422, await settings.text()
        assert (await settings.json())["errors"][0]["pointer"] == "/quiet_hours/timezone"
        schedule = await client.post(
            "/api/v1/schedules",
            json={
                "name": "s",
                "action_id": "x",
                "every": "0 * * * *",
                "timezone": name,
                "target": {"entity_type": "vehicle", "mapping": "m"},
            },
            headers=auth(),
        )
        assert schedule.status == 422, await schedule.text()
        pointers = [e["pointer"] for e in (await schedule.json())["errors"]]
        assert "/timezone" in pointers, pointers
        text = "{{ '2026-12-03T10:00:00Z'|datetime(tz='" + name + "') }}"
        preview = await client.post(
            "/api/v1/templates/preview",
            json={"template": _draft(text), "context": {}},
            headers=auth(),
        )
        assert preview.status == 200, await preview.text()
        assert (await preview.json())["parts"]["text"] == "2026-12-03T10:00:00Z"
    listed = await client.get("/api/v1/schedules", headers=auth())
    assert (await listed.json())["items"] == []


async def test_a_sample_event_with_members_of_the_wrong_type_is_refused_naming_each(
    client: Client,
) -> None:
    """A dry run's sample event with `data: -1` or `entity: "x"` reached the run context,
    which called `.get` on it: a 500. Each member of the wrong JSON type is a 422 now."""
    flow = "name: f\non:\n  events: [fine.received]\nsteps:\n  - id: a\n    when: entity.x\n"
    event = {"type": "fine.received", "data": -1, "entity": "x", "changes": {}, "origin": 1}
    response = await client.post(
        "/api/v1/flows/test", json={"flow": flow, "event": event}, headers=auth(role="viewer")
    )
    assert response.status == 422, await response.text()
    pointers = sorted(e["pointer"] for e in (await response.json())["errors"])
    assert pointers == ["/event/changes", "/event/data", "/event/entity", "/event/origin"]
    sound = {"type": "fine.received", "data": {"x": 1}, "entity": {"type": "other"}}
    ran = await client.post(
        "/api/v1/flows/test", json={"flow": flow, "event": sound}, headers=auth(role="viewer")
    )
    assert ran.status == 200, await ran.text()
    assert (await ran.json())["starts"] is True


async def test_a_sample_event_of_another_shape_does_not_pass_a_flows_filter(
    client: Client,
) -> None:
    """The filter matcher took a sample event for a stored one: `changes: ["x"]` or an entity
    whose `type` is an object raised in it, a 500. Such an event passes no filter now."""
    flow = (
        "name: f\non:\n  events: ['*']\n"
        "  filter: {entity_type: vehicle, changed: [odometer_km], origin: {kind: trigger}}\n"
        "steps:\n  - id: a\n    when: entity.x\n"
    )
    for event in (
        {"type": "entity.updated", "entity": {"type": "vehicle"}, "changes": ["x", None, [1]]},
        {"type": "entity.updated", "entity": {"type": {"a": 1}}},
        {"type": "entity.updated", "entity": {"type": "vehicle"}, "changes": [{"field": [1]}]},
    ):
        response = await client.post(
            "/api/v1/flows/test", json={"flow": flow, "event": event}, headers=auth()
        )
        assert response.status == 200, await response.text()
        assert (await response.json())["starts"] is False


async def test_every_part_of_a_template_shares_one_render_deadline(client: Client) -> None:
    """Rendering runs under a 1 s deadline, but each part (subject, text, html, in each
    locale) had its own: one viewer's preview of a draft with six slow parts took six seconds
    (and held every other request meanwhile). The parts share one deadline now."""
    slow = "{% for i in range(99999) %}{% set x = ('ab' * 60000)|replace('a', 'bb') %}{% endfor %}"
    parts = {"subject": slow, "text": slow, "html": slow}
    draft = {**_draft(""), "locales": {"pt-BR": parts, "en": parts}, "sample": {}}
    # The CPU this process spent, not the wall clock: on a loaded machine one deadline can take
    # several seconds of wall time, never six seconds of rendering.
    started = time.process_time()
    response = await client.post(
        "/api/v1/templates/preview", json={"template": draft}, headers=auth(role="viewer")
    )
    elapsed = time.process_time() - started
    assert response.status == 422, await response.text()
    messages = {e["message"] for e in (await response.json())["errors"]}
    assert all("rendering took more than" in m for m in messages), messages
    assert elapsed < 3.5, f"six parts took {elapsed:.1f} s of CPU: more than one shared deadline"


async def test_other_requests_are_answered_while_a_slow_template_renders(client: Client) -> None:
    """Rendering ran on the event loop: a viewer's preview that spends its whole second held
    every other request of the process for that second. Renders run on their own threads."""
    slow = "{% for i in range(99999) %}{% set x = ('ab' * 60000)|replace('a', 'bb') %}{% endfor %}"
    draft = {**_draft(""), "locales": {"pt-BR": {"subject": slow, "text": "x"}}, "sample": {}}
    preview = asyncio.ensure_future(
        client.post(
            "/api/v1/templates/preview", json={"template": draft}, headers=auth(role="viewer")
        )
    )
    answered = 0
    while not preview.done():
        assert (await client.get("/healthz")).status == 200
        answered += 1
    response = await preview
    assert response.status == 422
    assert "rendering took more than" in await response.text()
    assert answered >= 10, f"only {answered} health checks answered during the render"


async def test_a_template_that_prints_a_function_shows_no_memory_address(client: Client) -> None:
    """`{{ 'a'.upper }}` printed `<built-in method upper of str object at 0x7f...>`: a heap
    address (what ASLR hides) for anyone who may preview, viewers included."""
    response = await client.post(
        "/api/v1/templates/preview",
        json={"template": _draft("{{ 'a'.upper }} {{ ['a']|unique }} {{ 'a'.upper() }}")},
        headers=auth(role="viewer"),
    )
    assert response.status == 200, await response.text()
    text = (await response.json())["parts"]["text"]
    assert text == "<builtin_function_or_method> <generator> A", text
