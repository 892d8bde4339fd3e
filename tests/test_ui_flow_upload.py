"""A flow upload (the UI's Flows page and `POST /api/v1/flows`) lists every problem in one
answer: unknown members, the rules a schema cannot say, and what the flow names that the
tenant lacks, together; a document whose shape the compiler cannot read (a member missing)
stops at the schema."""

from __future__ import annotations

import copy
from typing import Any

from gateway.services import Services
from tests.flow_support import email_channel
from tests.partner_double import post
from tests.support import auth
from tests.ui_support import ALERT_TEMPLATE, Client, csrf, form_fields, log_in, make_user

BAD = """\
name: fluxo-ruim
on:
  events: [entity.created]
  filter: {entity_type: vehicle}
steps:
  - id: a
    call: nonexistent-action
  - id: b
    notify:
      channel: nochannel
      template: notemplate
      recipients: [{address: "x@example.com"}]
  - id: a
    when: "steps.zzz.x >"
  - id: d
    bogus: 1
"""
EVERY_PROBLEM = [
    ("/steps/0/call", "reference", 7),  # no such action
    ("/steps/1/notify/channel", "reference", 10),
    ("/steps/1/notify/template", "reference", 11),
    ("/steps/2/id", "unique", 13),  # `a` twice
    ("/steps/2/when", "expression", 14),
    ("/steps/3", "required", 15),  # no kind
    ("/steps/3/bogus", "additionalProperties", 16),
]


async def test_a_flow_upload_lists_every_problem_of_every_stage_at_once(
    client: Client, services: Services
) -> None:
    response = await client.post(
        "/api/v1/flows", data=BAD.encode(), headers={**auth(), "Content-Type": "application/yaml"}
    )
    body = await response.json()
    assert response.status == 422, body
    found = sorted((e["pointer"], e["keyword"], e.get("line")) for e in body["errors"])
    assert found == EVERY_PROBLEM
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/flows")
    page = await client.post("/admin/flows", data={"csrf": token, "source": BAD})
    html = await page.text()
    assert page.status == 422, html
    assert html.count('<span class="problem">') == len(EVERY_PROBLEM)
    assert "nonexistent-action" in html and "used twice" in html and "/steps/3/bogus" in html


async def test_a_flow_missing_a_member_stops_at_the_schema(client: Client) -> None:
    text = BAD.replace("  events: [entity.created]\n", "")
    response = await client.post(
        "/api/v1/flows", data=text.encode(), headers={**auth(), "Content-Type": "application/yaml"}
    )
    body = await response.json()
    assert response.status == 422, body
    keywords = {e["keyword"] for e in body["errors"]}
    assert "reference" not in keywords and "unique" not in keywords  # the compiler did not run
    assert any(e["pointer"].startswith("/on") for e in body["errors"])


async def _upload(client: Client, text: str) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        "/api/v1/flows", data=text.encode(), headers={**auth(), "Content-Type": "application/yaml"}
    )
    return response.status, await response.json()


async def test_a_recipient_of_an_unknown_member_only_is_refused_naming_it_and_its_emptiness(
    client: Client,
) -> None:
    """`{foo: 1}` passes the schema but for its unknown member; without it, it is a recipient
    of no kind, which the compiler cannot read: a 422 naming the member and the recipient
    left empty, not a crash."""
    text = (
        "name: f\non: {events: [fine.received]}\nsteps:\n"
        "  - {id: a, notify: {channel: c, template: t, recipients: [{foo: 1}]}}\n"
    )
    status, body = await _upload(client, text)
    assert status == 422, body
    found = [(e["pointer"], e["keyword"]) for e in body["errors"]]
    assert found == [
        ("/steps/0/notify/recipients/0/foo", "additionalProperties"),
        ("/steps/0/notify/recipients/0", "minProperties"),
    ]


async def test_an_origin_filter_that_is_not_an_object_is_refused_naming_it(
    client: Client,
) -> None:
    text = (
        "name: f\non: {events: ['*'], filter: {origin: [1]}}\nsteps:\n"
        "  - {id: a, set: {fields: {x: entity.x}}}\n"
    )
    status, body = await _upload(client, text)
    assert status == 422, body
    assert [e["pointer"] for e in body["errors"]] == ["/on/filter/origin"]


async def test_activating_a_version_naming_a_deleted_template_shows_what_it_lacks(
    client: Client, services: Services
) -> None:
    await email_channel(client)
    first = await post(client, "/api/v1/templates", ALERT_TEMPLATE)
    await post(client, "/api/v1/templates", {**ALERT_TEMPLATE, "name": "alerta2"})
    notify = {"channel": "email", "template": "alerta", "recipients": [{"address": "a@b.com"}]}
    flow: dict[str, Any] = {
        "name": "avisa",
        "on": {"events": ["entity.created"]},
        "steps": [{"id": "n", "notify": notify}],
    }
    await post(client, "/api/v1/flows", flow)
    newer = copy.deepcopy(flow)
    newer["steps"][0]["notify"]["template"] = "alerta2"
    await post(client, "/api/v1/flows", newer)
    gone = await client.delete(f"/api/v1/templates/{first['id']}", headers=auth())
    assert gone.status == 204
    await make_user(services)
    await log_in(client)
    page = await (await client.get("/admin/flows/avisa")).text()
    for action in ("/admin/flows/avisa/activate", "/admin/flows/avisa/rollback"):
        refused = await client.post(action, data=form_fields(page, action))
        html = await refused.text()
        assert refused.status == 422, html
        listed = html[html.index('data-testid="error-problems"') :]
        assert "<li><code>/steps/0/notify/template</code>: no template &#39;alerta&#39;" in listed
    stored = await (await client.get("/api/v1/flows/avisa", headers=auth())).json()
    assert stored["version"] == 2
