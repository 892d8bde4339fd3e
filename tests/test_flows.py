"""Flows as versioned documents: uploads are checked whole (schema, step rules, cycles,
expressions, what they name in the tenant), versions activate, roll back and diff."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.errors import InvalidPayload
from gateway.flows.compiler import load_flow
from tests.flow_support import FLOWS, add_template, email_channel, hr_lookup, upload_flow
from tests.partner_double import Partner, partner, post
from tests.support import auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]
# Scenario 3 starts on the fine's own event: the write that gives it its time, whoever writes it.
SCENARIO_3_EVENTS = ["fine.received"]

BASE = """\
name: f
on:
  events: [fine.received]
steps:
"""


def _problems(text: str) -> list[tuple[str, str, int | None]]:
    with pytest.raises(InvalidPayload) as caught:
        load_flow(text)
    return [(p.pointer, p.keyword, p.extra.get("line")) for p in caught.value.problems]


def test_each_step_is_one_kind_with_a_unique_id() -> None:
    text = BASE + (
        "  - {id: a, when: 'entity.plate'}\n"
        "  - {id: a, when: 'entity.plate'}\n"
        "  - {id: b, fetch: x, call: y}\n"
        "  - {id: c}\n"
        "  - {id: d, with: {}, notify: {channel: e, template: t, recipients: [{address: x}]}}\n"
    )
    assert _problems(text) == [
        ("/steps/1/id", "unique", 6),
        ("/steps/2", "oneOf", 7),
        ("/steps/3", "required", 8),
        ("/steps/4/with", "dependentRequired", 9),
    ]


def test_a_step_reads_only_earlier_steps() -> None:
    text = BASE + (
        "  - {id: a, when: 'steps.b.ok'}\n"
        "  - {id: b, fetch: x, when: 'steps.b'}\n"
        "  - {id: c, when: 'steps.a || steps.zzz'}\n"
    )
    assert _problems(text) == [
        ("/steps/0/when", "cycle", 5),
        ("/steps/1/when", "cycle", 6),
        ("/steps/2/when", "cycle", 7),
    ]


def test_invalid_expressions_and_schema_errors_have_pointers_and_lines() -> None:
    text = BASE + (
        "  - {id: a, when: 'entity.[plate'}\n"
        "  - id: b\n"
        "    notify: {channel: e, template: t, recipients: [{driver: nobody}], colour: red}\n"
    )
    problems = _problems(text)
    assert {(p, line) for p, _, line in problems} == {
        ("/steps/1/notify/recipients/0/driver", 7),
        ("/steps/1/notify/colour", 7),
    }
    expression = _problems(BASE + "  - {id: a, when: 'entity.[plate'}\n")
    assert expression == [("/steps/0/when", "expression", 5)]


def test_a_flow_that_writes_what_starts_it_is_a_cycle() -> None:
    cycle = (
        "name: f\non:\n  events: [entity.updated]\nsteps:\n"
        "  - id: s\n    set: {fields: {status: \"'active'\"}}\n"
    )
    assert _problems(cycle) == [("/steps/0/set", "cycle", 6)]
    kept_out = cycle.replace(
        "events: [entity.updated]", "events: [entity.updated]\n  filter: {origin: {kind: trigger}}"
    )
    load_flow(kept_out)


async def test_a_set_on_a_created_entity_or_another_type_than_starts_it_is_no_cycle(
    client: Client,
) -> None:
    """A `set` changes an entity that exists (its `entity.updated`, never an `entity.created`),
    and writes the type it names: "when a vehicle is registered, fill in X" was refused as a
    cycle, and so was a flow on checklists' updates that writes their vehicle."""
    onboard = {
        "name": "onboard",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "vehicle"}},
        "steps": [{"id": "s", "set": {"fields": {"status": "'active'"}}}],
    }
    await post(client, "/api/v1/flows", onboard)
    stamp = {
        "name": "stamp",
        "on": {"events": ["entity.updated"], "filter": {"entity_type": "other"}},
        "steps": [
            {
                "id": "s",
                "set": {
                    "entity": {"type": "vehicle", "ref": "entity.vehicle_plate"},
                    "fields": {"attributes.stamped": "'yes'"},
                },
            }
        ],
    }
    await post(client, "/api/v1/flows", stamp)
    # Its own type's updates still start it again: a cycle.
    stamp["on"]["filter"] = {"entity_type": ["other", "vehicle"]}
    problem = await post(client, "/api/v1/flows", {**stamp, "name": "stamp2"}, status=422)
    assert [(e["pointer"], e["keyword"]) for e in problem["errors"]] == [("/steps/0/set", "cycle")]


def test_a_flow_that_records_a_driver_on_the_vehicle_updates_it_causes_is_a_cycle() -> None:
    """A fetch's `assign` changes the vehicle's `current_driver`: its entity.updated (origin
    kind the assignment's source) would start the flow again, as a `set`'s would."""
    cycle = (
        "name: f\non:\n  events: [entity.updated]\n  filter: {entity_type: vehicle}\nsteps:\n"
        "  - id: w\n    fetch: who\n    assign: {vehicle: entity.plate, driver: steps.w.cpf}\n"
    )
    assert _problems(cycle) == [("/steps/0/assign", "cycle", 8)]
    everything = cycle.replace("[entity.updated]", "['*']").replace("{entity_type: vehicle}", "{}")
    assert _problems(everything) == [("/steps/0/assign", "cycle", 8)]
    erp = cycle.replace("steps.w.cpf}", "steps.w.cpf, source: erp}")
    assert _problems(erp.replace("vehicle}", "vehicle, origin: {kind: [erp, admin]}}")) == [
        ("/steps/0/assign", "cycle", 8)
    ]
    for kept_out in (
        "{entity_type: vehicle, origin: {kind: [trigger, admin]}}",  # not an assignment's
        "{entity_type: vehicle, origin: {kind: [erp, admin]}}",  # not HR's (the source)
        "{entity_type: driver}",  # not a vehicle's
        "{entity_type: vehicle, changed: [status]}",  # not current_driver's
    ):
        load_flow(cycle.replace("{entity_type: vehicle}", kept_out))
    load_flow(cycle.replace("[entity.updated]", "[entity.created]"))  # it updates, never creates
    its_field = cycle.replace("vehicle}", "vehicle, changed: [status, current_driver.cpf]}")
    assert _problems(its_field) == [("/steps/0/assign", "cycle", 8)]


async def test_an_upload_that_records_drivers_on_the_updates_it_causes_is_refused(
    client: Client, partner: Partner
) -> None:
    await hr_lookup(client, partner.url)
    text = (
        "name: loop\non:\n  events: [entity.updated]\n  filter: {entity_type: vehicle}\n"
        "steps:\n  - id: hr\n    fetch: hr-driver-lookup\n"
        "    assign: {vehicle: entity.plate, driver: steps.hr.cpf}\n"
    )
    headers = {**auth(), "Content-Type": "application/yaml"}
    response = await client.post("/api/v1/flows", data=text.encode(), headers=headers)
    body = await response.json()
    assert response.status == 422, body
    assert response.content_type == "application/problem+json"
    (error,) = body["errors"]
    assert (error["pointer"], error["line"]) == ("/steps/0/assign", 8)
    assert "current_driver" in error["message"] and "origin kind hr" in error["message"]
    kept_out = text.replace("vehicle}", "vehicle, origin: {kind: [trigger, admin]}}")
    response = await client.post("/api/v1/flows", data=kept_out.encode(), headers=headers)
    assert response.status == 201, await response.text()


def test_set_fields_cannot_overlap() -> None:
    text = BASE + "  - id: s\n    set: {fields: {attributes: '`{}`', attributes.x: '`1`'}}\n"
    assert _problems(text) == [("/steps/0/set/fields/attributes.x", "overlap", 6)]


async def test_an_upload_names_only_what_the_tenant_has(client: Client) -> None:
    text = (FLOWS / "fine-email-driver.yaml").read_text()
    response = await client.post(
        "/api/v1/flows",
        data=text.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    body = await response.json()
    assert response.status == 422
    lines = text.splitlines()

    def line(of: str) -> int:
        return next(n for n, seen in enumerate(lines, 1) if seen.strip() == of)

    assert [(e["pointer"], e["line"]) for e in body["errors"]] == [
        ("/steps/0/fetch", line("fetch: hr-driver-lookup")),
        ("/steps/3/notify/channel", line("channel: email")),
        ("/steps/3/notify/template", line("template: fine-received")),
    ]


async def test_fetch_needs_a_get_and_templates_match_their_channel(
    client: Client, partner: Partner
) -> None:
    action = await hr_lookup(client, partner.url)
    await client.patch(f"/api/v1/actions/{action['id']}", json={"method": "POST"}, headers=auth())
    await email_channel(client)
    await add_template(client, "geofence-exit")  # a push template
    text = (FLOWS / "fine-email-driver.yaml").read_text().replace("fine-received", "geofence-exit")
    response = await client.post(
        "/api/v1/flows", data=text.encode(), headers={**auth(), "Content-Type": "application/yaml"}
    )
    errors = (await response.json())["errors"]
    assert [e["pointer"] for e in errors] == ["/steps/0/fetch", "/steps/3/notify/template"]
    assert "GET" in errors[0]["message"] and "push" in errors[1]["message"]


async def test_a_fixed_address_its_channel_cannot_send_to_is_refused_at_upload(
    client: Client,
) -> None:
    """A fixed address was kept as any text: every run's message to it then failed ("is not
    one e-mail address"). It is checked with the sender's own rules, as the channel is."""
    await email_channel(client)
    template = {"subject": "s", "text": "t"}
    await post(
        client,
        "/api/v1/templates",
        {"name": "t", "channel_type": "email", "default_locale": "en", "locales": {"en": template}},
    )
    recipients: list[Any] = [
        {"address": ["ops@acme.com.br", "ana@a.com.br, bia@b.com.br"]},
        {"address": "+5511987654321"},
        {"address": "Frota <frota@acme.com.br>"},
    ]
    notify = {"channel": "email", "template": "t", "recipients": recipients}
    flow = {
        "name": "f",
        "on": {"events": ["entity.created"]},
        "steps": [{"id": "m", "notify": notify}],
    }
    response = await client.post("/api/v1/flows", json=flow, headers=auth())
    body = await response.json()
    assert response.status == 422, body
    at = "/steps/0/notify/recipients"
    assert [(e["pointer"], e["keyword"]) for e in body["errors"]] == [
        (f"{at}/0/address/1", "reference"),
        (f"{at}/1/address", "reference"),
    ]
    assert "'+5511987654321' is not one e-mail address" in body["errors"][1]["message"]
    del recipients[:2]
    await post(client, "/api/v1/flows", flow)


async def _scenario3(client: Client, partner: Partner) -> None:
    await hr_lookup(client, partner.url)
    await email_channel(client)
    await add_template(client, "fine-received")


async def test_versions_activate_roll_back_and_diff(client: Client, partner: Partner) -> None:
    await _scenario3(client, partner)
    first = await upload_flow(client, "fine-email-driver")
    assert first["version"] == 1 and first["active"] and first["events"] == SCENARIO_3_EVENTS
    again = await upload_flow(client, "fine-email-driver", status=200)
    assert again["created"] is False and again["version"] == 1
    text = (FLOWS / "fine-email-driver.yaml").read_text().replace("has_email", "reachable")
    headers = {**auth(), "Content-Type": "application/yaml"}
    second = await client.post("/api/v1/flows?activate=false", data=text.encode(), headers=headers)
    assert (await second.json())["active"] is False
    listed = await (await client.get("/api/v1/flows", headers=auth())).json()
    assert listed["items"][0]["active_version"] == 1 and listed["items"][0]["latest_version"] == 2
    await post(client, "/api/v1/flows/fine-email-driver/activate", {"version": 2}, status=200)
    diff = await (
        await client.get("/api/v1/flows/fine-email-driver/diff?from=1&to=2", headers=auth())
    ).json()
    assert diff["changed"] == [{"path": "/steps/2/id", "old": "has_email", "new": "reachable"}]
    rolled = await post(client, "/api/v1/flows/fine-email-driver/rollback", {}, status=200)
    assert rolled["version"] == 1
    first_again = await post(client, "/api/v1/flows/fine-email-driver/rollback", {}, status=409)
    assert first_again["detail"].endswith(
        "first version of 'fine-email-driver'; nothing to roll back to"
    )
    versions = await (
        await client.get("/api/v1/flows/fine-email-driver/versions", headers=auth())
    ).json()
    assert [(v["version"], v["active"]) for v in versions["items"]] == [(1, True), (2, False)]
    current = await (await client.get("/api/v1/flows/fine-email-driver", headers=auth())).json()
    assert "source" in current and current["document"]["name"] == "fine-email-driver"


async def test_channels_and_templates_in_use_cannot_be_deleted(
    client: Client, partner: Partner
) -> None:
    await _scenario3(client, partner)
    await upload_flow(client, "fine-email-driver")
    template = await client.delete("/api/v1/templates/fine-received", headers=auth())
    assert template.status == 409
    assert (await template.json())["used_by"] == [
        {"kind": "flow", "name": "fine-email-driver", "version": 1}
    ]
    assert (await client.delete("/api/v1/channels/email", headers=auth())).status == 409
    assert (await client.delete("/api/v1/flows/fine-email-driver", headers=auth())).status == 204
    assert (await client.delete("/api/v1/templates/fine-received", headers=auth())).status == 204
    gone = await client.get("/api/v1/flows/fine-email-driver", headers=auth())
    assert gone.status == 404


async def test_an_action_an_active_flow_names_keeps_its_name(
    client: Client, partner: Partner
) -> None:
    """Renaming an action a flow fetches by name was allowed: the flow then called whatever
    action took the old name (another path, another partner), or failed on every run."""
    action = await hr_lookup(client, partner.url)
    flow = {"name": "f", "on": {"events": ["fine.received"]}}
    await post(client, "/api/v1/flows", {**flow, "steps": [{"id": "hr", "fetch": action["name"]}]})
    renamed = await client.patch(
        f"/api/v1/actions/{action['id']}", json={"name": "renamed"}, headers=auth()
    )
    assert renamed.status == 409, await renamed.text()
    problem = await renamed.json()
    assert problem["used_by"] == [{"kind": "flow", "name": "f", "version": 1}]
    assert problem["detail"] == "action 'hr-driver-lookup' is named by flow f; it keeps its name"
    kept = await client.patch(
        f"/api/v1/actions/{action['id']}", json={"path": "/v2/{plate}"}, headers=auth()
    )
    assert kept.status == 200, await kept.text()  # anything but its name changes

    # Named by its id, the flow follows the action whatever its name.
    steps = [{"id": "hr", "fetch": action["id"]}]
    await post(client, "/api/v1/flows", {**flow, "steps": steps}, status=201)
    renamed = await client.patch(
        f"/api/v1/actions/{action['id']}", json={"name": "renamed"}, headers=auth()
    )
    assert renamed.status == 200, await renamed.text()


async def test_flows_belong_to_their_tenant_and_viewers_only_read(
    client: Client, partner: Partner
) -> None:
    await _scenario3(client, partner)
    await upload_flow(client, "fine-email-driver")
    other = await client.get("/api/v1/flows/fine-email-driver", headers=auth("other"))
    assert other.status == 404
    viewer = await client.post(
        "/api/v1/flows/fine-email-driver/rollback", headers=auth(role="viewer")
    )
    assert viewer.status == 403
    wrong_type = await client.post(
        "/api/v1/flows", data=b"name: x", headers={**auth(), "Content-Type": "text/csv"}
    )
    assert wrong_type.status == 415


@pytest.mark.parametrize(
    "encoded",
    [
        ("application/yaml; charset=windows-1252", "cp1252"),
        ("application/yaml", "utf-16"),  # Notepad's "Unicode", its byte order mark
    ],
)
async def test_a_flow_upload_is_read_in_the_charset_it_names_or_its_byte_order_mark(
    client: Client, encoded: tuple[str, str]
) -> None:
    """As a mapping upload (docs/api.md): a Windows editor's file with pt-BR words."""
    content_type, codec = encoded
    text = (
        BASE.replace("name: f", "name: acentos") + "  - {id: a, when: \"entity.plate == 'São'\"}\n"
    )
    response = await client.post(
        "/api/v1/flows",
        data=text.encode(codec),
        headers={**auth(), "Content-Type": content_type},
    )
    assert response.status == 201, await response.text()
    shown = await (await client.get("/api/v1/flows/acentos", headers=auth())).json()
    assert shown["source"] == text
    refused = await client.post(
        "/api/v1/flows",
        data=text.replace("acentos", "outro").encode("cp1252"),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    problem = await refused.json()
    assert refused.status == 422 and problem["detail"] == "flow is not valid: 1 problem", problem
    assert "name its charset" in problem["errors"][0]["message"], problem


async def test_copies_of_one_flow_uploaded_at_once_are_one_version(client: Client) -> None:
    """Flows share the mappings' versioning: a deploy job run twice at once stores its text
    once (201 once, 200 for the others), and no upload answers a 500 or a 404."""
    import asyncio

    text = (BASE + "  - {id: a, when: 'entity.plate'}\n").encode()

    async def upload() -> tuple[int, Any]:
        response = await client.post(
            "/api/v1/flows", data=text, headers={**auth(), "Content-Type": "application/yaml"}
        )
        return response.status, await response.json()

    answers = await asyncio.gather(*(upload() for _ in range(10)))
    assert sorted(status for status, _ in answers) == [200] * 9 + [201], answers
    assert {body["version"] for _, body in answers} == {1}


async def test_activating_a_flow_with_a_member_it_does_not_know_is_a_422_and_changes_nothing(
    client: Client, partner: Partner
) -> None:
    await _scenario3(client, partner)
    await upload_flow(client, "fine-email-driver")
    text = (FLOWS / "fine-email-driver.yaml").read_text().replace("has_email", "reachable")
    headers = {**auth(), "Content-Type": "application/yaml"}
    await client.post("/api/v1/flows?activate=false", data=text.encode(), headers=headers)
    problem = await post(
        client, "/api/v1/flows/fine-email-driver/activate", {"version": 2, "bogus": 1}, status=422
    )
    assert [e["pointer"] for e in problem["errors"]] == ["/bogus"]
    current = await (await client.get("/api/v1/flows/fine-email-driver", headers=auth())).json()
    assert current["version"] == 1


async def test_the_version_list_says_which_events_each_version_starts_on(
    client: Client, partner: Partner
) -> None:
    await _scenario3(client, partner)
    await upload_flow(client, "fine-email-driver")
    versions = await (
        await client.get("/api/v1/flows/fine-email-driver/versions", headers=auth())
    ).json()
    assert [v["events"] for v in versions["items"]] == [SCENARIO_3_EVENTS]
