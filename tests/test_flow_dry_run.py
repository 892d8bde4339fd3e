"""POST /api/v1/flows/test: every step of a flow rendered on a sample event (the requests the
partners would get, the messages recipients would get), with nothing sent or written."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.fcm_double import PROJECT, Fcm, fcm
from tests.flow_support import (
    ANA,
    FINE_EVENT,
    add_template,
    drain,
    email_channel,
    erp_actions,
    get,
    hr_lookup,
    push_channel,
    sample,
    sms_channel,
    upload_flow,
)
from tests.partner_double import Partner, partner, post
from tests.support import auth

__all__ = ["fcm", "partner"]  # the fixtures

Client = TestClient[Any, Any]
# She drives ABC1D23 since before the samples' events (the shipped flows ask who drove then).
SINCE = "2026-11-01T00:00:00Z"
DRIVER = "driver_lookup_response.json"


async def _test(client: Client, body: dict[str, Any], status: int = 200) -> Any:
    return await post(client, "/api/v1/flows/test", body, status=status)


async def _scenario3(client: Client, partner: Partner) -> None:
    await hr_lookup(client, partner.url)
    await email_channel(client)
    await add_template(client, "fine-received")
    await upload_flow(client, "fine-email-driver")


async def test_the_docs_example_completes_the_events_entity_from_the_stored_fine(
    client: Client, partner: Partner
) -> None:
    """docs/flows.md's dry run names the stored fine by its key, as an admin reads it, and
    gives the event's data without `kind`/`key`: the dry run completes the event as a real one
    about that fine carries it (its id, its key, its data), so the set validates and the
    e-mail's idempotency key (`entity.key`) renders."""
    await _scenario3(client, partner)
    fine = {k: v for k, v in FINE_EVENT["data"].items()}
    stored = await post(client, "/api/v1/entities/other", fine, status=201)
    data = {k: fine[k] for k in ("ait_number", "plate", "occurred_at", "amount_brl", "points")}
    event = {
        "type": "fine.received",
        "entity": {"type": "other", "key": "fine:261810:A123456789"},
        "data": {**data, "place": "Av. Paulista, 1000"},
    }
    body = {"flow": "fine-email-driver", "event": event, "samples": {"hr": sample(DRIVER)}}
    result = await _test(client, body)
    assert result["event"]["entity"] == {
        "type": "other", "key": "fine:261810:A123456789", "id": stored["id"]
    }  # fmt: skip
    hr, driver, gate, email = result["steps"]
    assert hr["outcome"] == "answered" and gate["outcome"] == "passed", result
    # the stored fine is the event's: its `expect` met
    assert driver["outcome"] == "rendered" and "note" not in driver, driver
    assert driver["changes"] == [{"field": "driver_cpf", "old": None, "new": "52998224725"}]
    assert email["outcome"] == "rendered", email
    (message,) = email["messages"]
    assert message["parts"]["subject"] == "Multa A123456789 - ABC1D23"


async def test_a_dry_run_about_a_time_the_stored_fine_no_longer_has_stops_as_the_run_would(
    client: Client, partner: Partner
) -> None:
    """`stored` is the fine as stored, `entity` the sample event's: a sample naming the stored
    fine with another time (a notice since corrected) stops at `driver` (its `expect`), why
    recorded, as a run of that event would; nothing is written nor rendered."""
    await _scenario3(client, partner)
    await post(client, "/api/v1/entities/other", dict(FINE_EVENT["data"]), status=201)
    event = {
        "type": "fine.received",
        "entity": {"type": "other", "key": "fine:261810:A123456789"},
        "data": {"occurred_at": "2026-11-17T16:45:00Z"},
    }
    body = {"flow": "fine-email-driver", "event": event, "samples": {"hr": sample(DRIVER)}}
    result = await _test(client, body)
    assert [s["outcome"] for s in result["steps"]] == [
        "answered",
        "stopped",
        "not reached",
        "not reached",
    ]
    assert "corrected" in result["steps"][1]["description"]


async def test_scenario_3_renders_the_hr_request_and_the_drivers_email(
    client: Client, partner: Partner
) -> None:
    await _scenario3(client, partner)
    result = await _test(
        client,
        {
            "flow": "fine-email-driver",
            "event": FINE_EVENT,
            "samples": {"hr": sample("driver_lookup_response.json")},
        },
    )
    assert result["starts"] is True and result["unresolved"] == []
    hr, driver, gate, email = result["steps"]
    assert hr["outcome"] == "answered"
    assert hr["assign"] == {
        "vehicle": "ABC1D23",
        "driver": "52998224725",
        "start": "2026-11-01T08:00:00-03:00",
    }
    assert driver["outcome"] == "rendered" and driver["changes"] == [
        {"field": "driver_cpf", "old": None, "new": "52998224725"}
    ]
    assert "not stored" in driver["note"]
    assert hr["request"]["method"] == "GET"
    assert hr["request"]["url"] == (
        f"{partner.url}/veiculos/ABC1D23/condutor-atual?em=2026-11-18T16%3A45%3A00Z"
    )
    assert hr["result"]["email"] == "ana.souza@example.com"
    assert gate == {
        "id": "has_email",
        "kind": "when",
        "outcome": "passed",
        "condition": "steps.hr.email || steps.hr.cpf",
    }
    assert email["outcome"] == "rendered" and email["unreachable"] == []
    (message,) = email["messages"]
    assert message["recipient"]["address"] == "ana.souza@example.com"
    assert message["locale"] == "pt-BR" and message["decision"]["action"] == "send"
    assert message["parts"]["subject"] == "Multa A123456789 - ABC1D23"
    assert "Olá Ana Souza" in message["parts"]["text"]
    assert "Valor: R$ 130,16" in message["parts"]["text"]
    assert "18/11/2026 13:45" in message["parts"]["text"]
    assert message["request"]["from"] == "Frota Acme <alertas@acme.com.br>"
    assert partner.requests == []  # nothing was sent


async def test_a_fetch_without_a_sample_is_unresolved_and_the_run_says_so(
    client: Client, partner: Partner
) -> None:
    await _scenario3(client, partner)
    result = await _test(client, {"flow": "fine-email-driver", "event": FINE_EVENT})
    hr, driver, gate, email = result["steps"]
    assert hr["outcome"] == "unresolved" and result["unresolved"] == ["hr"]
    assert driver["outcome"] == "rendered" and driver["fields"] == {"driver_cpf": None}
    assert gate["outcome"] == "stopped" and "unresolved" in gate["note"]
    assert email["outcome"] == "not reached"
    assert partner.requests == []


async def test_an_event_the_flow_does_not_start_on(client: Client, partner: Partner) -> None:
    await _scenario3(client, partner)
    result = await _test(client, {"flow": "fine-email-driver", "event": {"type": "fine.paid"}})
    assert result["starts"] is False and "fine.received" in result["reason"]
    vehicle = {**FINE_EVENT, "entity": {"type": "vehicle", "id": "x"}}
    filtered = await _test(client, {"flow": "fine-email-driver", "event": vehicle})
    assert filtered["starts"] is False and "filter" in filtered["reason"]


async def test_a_position_starts_only_a_flow_that_names_it_as_in_a_real_run(
    client: Client,
) -> None:
    for name, events in (("family", ["vehicle.*"]), ("track", ["vehicle.position"])):
        flow = {"name": name, "on": {"events": events}, "steps": [{"id": "seen", "when": "true"}]}
        await post(client, "/api/v1/flows", flow)
    fix = {"t": "2026-11-20T13:45:12Z", "lat": -23.5, "lon": -46.6}
    position = {"type": "vehicle.position", "entity": {"type": "vehicle", "id": "x"}, "detail": fix}
    family = await _test(client, {"flow": "family", "event": position})
    assert family["starts"] is False and "opt-in" in family["reason"]
    assert (await _test(client, {"flow": "track", "event": position}))["starts"] is True


async def test_on_when_reads_no_vehicle_in_a_dry_run_as_in_a_run(client: Client) -> None:
    """A flow whose `on.when` reads `vehicle` never starts (the starter reads no vehicle), but
    the dry run gave `on.when` the fine's vehicle and said it starts: a preview of a flow that
    would never run."""
    flow = {
        "name": "fleet-fine",
        "on": {
            "events": ["entity.created"],
            "filter": {"entity_type": "other", "entity": {"kind": "fine"}},
            "when": "vehicle.plate",
        },
        "steps": [{"id": "seen", "when": "`true`"}],
    }
    await post(client, "/api/v1/flows", flow)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    fine = await post(client, "/api/v1/entities/other", dict(FINE_EVENT["data"]))
    await drain(client.app[services_key])
    runs = await (await client.get("/api/v1/flows/fleet-fine/runs", headers=auth())).json()
    event = {"type": "entity.created", "entity": {"type": "other", "id": fine["id"]}}

    dry = await _test(client, {"flow": "fleet-fine", "event": event})
    assert runs["items"] == [] and dry["starts"] is False


async def test_scenario_4_renders_the_erp_requests_without_writing(
    client: Client, partner: Partner
) -> None:
    await erp_actions(client, partner.url)
    await upload_flow(client, "fine-paid-erp")
    await upload_flow(client, "checklist-mileage-erp")
    paid = await _test(
        client,
        {
            "flow": "fine-paid-erp",
            "event": {
                **FINE_EVENT,
                "type": "fine.paid",
                "data": {**FINE_EVENT["data"], "status": "paid", "driver_cpf": "52998224725"},
                "changes": [{"field": "status", "old": "open", "new": "paid"}],
                "detail": {"amount_paid_brl": 104.13, "paid_on": "2026-11-25"},
            },
        },
    )
    (erp,) = paid["steps"]
    assert erp["outcome"] == "rendered" and erp["request"]["method"] == "PUT"
    assert erp["request"]["url"] == f"{partner.url}/multas/A123456789/pagamento"
    assert erp["request"]["headers"]["Authorization"] == "Bearer <secret:erp_token>"
    assert erp["request"]["body"] == sample("erp_fine_paid.json")

    # The checklist mapping wrote the reading to the vehicle with the checklist (`also`): its
    # odometer and the reading's time, the checklist's `completed_at`.
    await post(
        client,
        "/api/v1/entities/vehicle",
        {
            "plate": "ABC1D23",
            "renavam": "86769597308",
            "odometer_km": 152340,
            "attributes": {"odometer_read_at": "2026-11-25T10:58:00Z"},
        },
    )
    checklist = {
        "type": "checklist.completed",
        "entity": {"type": "other", "id": "65f000000000000000000002"},
        "data": {
            "kind": "checklist",
            "key": "chk-20261125-0042",
            "vehicle_plate": "ABC1D23",
            "odometer_km": 152340,
            "completed_at": "2026-11-25T10:58:00Z",
        },
    }
    mileage = await _test(client, {"flow": "checklist-mileage-erp", "event": checklist})
    written, call = mileage["steps"]
    assert written["outcome"] == "rendered"
    assert written["fields"] == {"attributes.last_checklist": "chk-20261125-0042"}
    assert written["changes"] == [
        {"field": "attributes.last_checklist", "old": None, "new": "chk-20261125-0042"}
    ]
    assert call["request"]["url"] == f"{partner.url}/veiculos/quilometragem"
    assert call["request"]["body"] == sample("erp_mileage_update.json")
    vehicle = await (await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth())).json()
    assert "last_checklist" not in vehicle["attributes"]  # not written
    assert partner.requests == []


async def test_scenario_1_pushes_to_the_current_driver_of_the_vehicle(
    client: Client, fcm: Fcm
) -> None:
    await push_channel(client, fcm)
    await add_template(client, "geofence-exit")
    await upload_flow(client, "geofence-exit-push")
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    await post(client, "/api/v1/entities/driver", {**ANA, "push_tokens": ["tok-1", "tok-2"]})
    await post(
        client, "/api/v1/entities/vehicle/ABC1D23/drivers", {"driver": ANA["cpf"], "start": SINCE}
    )
    event = {
        "type": "vehicle.geofence.exited",
        "occurred_at": "2026-11-20T13:45:13Z",
        "entity": {"type": "vehicle", "id": vehicle["id"], "key": "ABC1D23"},
        "data": {"plate": "ABC1D23"},
        "detail": {"geofence": {"id": "g1", "name": "Garagem SP"}},
    }
    result = await _test(client, {"flow": "geofence-exit-push", "event": event})
    (push,) = result["steps"]
    assert [m["recipient"]["address"] for m in push["messages"]] == ["tok-1", "tok-2"]
    first = push["messages"][0]
    assert first["request"]["url"] == f"{fcm.url}/v1/projects/{PROJECT}/messages:send"
    assert first["request"]["body"]["message"]["notification"] == {
        "title": "Veículo fora da área autorizada",
        "body": "ABC1D23 saiu de Garagem SP em 20/11 às 10:45",  # not the run's day
    }
    assert first["decision"]["cooldown_key"].startswith("geofence-exit:ABC1D23:g1:driver:")
    assert fcm.messages == [] and fcm.tokens_issued == []


async def test_scenario_2_reaches_driver_and_managers_and_lists_who_it_cannot(
    client: Client, partner: Partner, fcm: Fcm
) -> None:
    await push_channel(client, fcm)
    await email_channel(client)
    await sms_channel(client, partner.url)
    for name in ("maintenance-due-push", "maintenance-due-email", "maintenance-due-sms"):
        await add_template(client, name)
    await upload_flow(client, "maintenance-due-alert")
    vehicle = await post(
        client, "/api/v1/entities/vehicle", {"plate": "ABC1D23", "odometer_km": 10012.4}
    )
    await post(client, "/api/v1/entities/driver", {**ANA, "phone": "+5511987654321"})
    await post(
        client, "/api/v1/entities/vehicle/ABC1D23/drivers", {"driver": ANA["cpf"], "start": SINCE}
    )
    await post(
        client,
        "/api/v1/entities/operator",
        {
            "name": "Bruno Lima",
            "cpf": "11144477735",
            "email": "bruno@acme.com.br",
            "role": "fleet_manager",
        },
    )
    event = {
        "type": "vehicle.maintenance.due",
        "entity": {"type": "vehicle", "id": vehicle["id"]},
        "data": {"plate": "ABC1D23", "odometer_km": 10012.4},
        "detail": {"due_km": 10000},
    }
    result = await _test(client, {"flow": "maintenance-due-alert", "event": event})
    push, email, sms = result["steps"]
    assert push["messages"] == [] and push["unreachable"] == [
        {"recipient": "driver Ana Souza", "reason": "driver Ana Souza has no push token"}
    ]
    assert [m["recipient"]["address"] for m in email["messages"]] == ["bruno@acme.com.br"]
    assert email["messages"][0]["parts"]["text"].startswith("Olá Bruno Lima,")
    assert email["unreachable"] == [
        {"recipient": "driver Ana Souza", "reason": "driver Ana Souza has no e-mail address"}
    ]
    (text,) = sms["messages"]
    assert text["request"]["body"] == sample("sms_request.json")
    assert partner.requests == []


async def test_a_draft_is_tried_before_upload_and_failures_point_at_the_step(
    client: Client, partner: Partner
) -> None:
    await hr_lookup(client, partner.url)
    draft = {
        "name": "draft",
        "on": {"events": ["fine.received"]},
        "steps": [
            {"id": "hr", "fetch": "hr-driver-lookup"},
            {"id": "bad", "when": "to_number(steps.hr.name) > `1`"},
        ],
    }
    several = {"condutorAtual": [{"nome": "Ana Souza"}, {"nome": "Bruno Lima"}]}
    result = await _test(client, {"flow": draft, "event": FINE_EVENT, "samples": {"hr": several}})
    hr, bad = result["steps"]
    assert hr["outcome"] == "failed" and hr["errors"][0]["keyword"] == "required"
    assert bad["outcome"] == "not reached"
    missing = await client.post(
        "/api/v1/flows/test", json={"flow": "nope", "event": FINE_EVENT}, headers=auth()
    )
    assert missing.status == 404
    bad_event = await client.post(
        "/api/v1/flows/test", json={"flow": draft, "event": {"kind": 1}}, headers=auth()
    )
    assert bad_event.status == 422


async def test_a_message_a_filter_cannot_render_on_the_sample_event_is_listed_not_a_500(
    client: Client,
) -> None:
    """`dictsort` given a list (a template valid on its own sample, another shape in the
    event) raised AttributeError through the dry run: a 500."""
    await email_channel(client)
    await post(
        client,
        "/api/v1/templates",
        {
            "name": "t",
            "channel_type": "email",
            "default_locale": "en",
            "sample": {"entity": {"attributes": {"extra": {"a": 1}}}},
            "locales": {"en": {"subject": "s", "text": "{{ entity.attributes.extra|dictsort }}"}},
        },
    )
    recipients = [{"address": "ana@example.com"}]
    flow = {
        "name": "f",
        "on": {"events": ["entity.created"]},
        "steps": [
            {"id": "m", "notify": {"channel": "email", "template": "t", "recipients": recipients}}
        ],
    }
    event = {
        "type": "entity.created",
        "entity": {"type": "vehicle", "id": "x"},
        "data": {"plate": "ABC1D23", "attributes": {"extra": [1]}},
    }
    result = await _test(client, {"flow": flow, "event": event})
    (step,) = result["steps"]
    (message,) = step["messages"]
    assert "'list' object has no attribute 'items'" in str(message), step


async def test_a_message_that_fails_to_render_is_not_counted_so_a_fallback_runs_as_in_a_run(
    client: Client,
) -> None:
    """The dry run counted a message that failed to render in `steps.<id>.messages` and said
    `rendered`; the run queues none, says `nobody`, and its fallback step (`when: messages
    == 0`) e-mails the backup, which the dry run showed skipped."""
    await email_channel(client)
    per_trip = "{{ entity.odometer_km / entity.attributes.trips }}"
    for name, text in (("per-trip", per_trip), ("plain", "{{ entity.plate }}")):
        template = {
            "name": name,
            "channel_type": "email",
            "default_locale": "en",
            "sample": {"entity": {"plate": "X", "odometer_km": 100, "attributes": {"trips": 4}}},
            "locales": {"en": {"subject": "s", "text": text}},
        }
        await post(client, "/api/v1/templates", template)

    def mail(to: str, template: str) -> dict[str, Any]:
        return {"channel": "email", "template": template, "recipients": [{"address": to}]}

    flow = {
        "name": "alert",
        "on": {"events": ["entity.created"]},
        "steps": [
            {"id": "mail", "notify": mail("frota@example.com", "per-trip")},
            {
                "id": "backup",
                "when": "steps.mail.messages == `0`",
                "notify": mail("backup@example.com", "plain"),
            },
        ],
    }
    data = {"plate": "ABC1D23", "odometer_km": 100, "attributes": {"trips": 0}}
    event = {"type": "entity.created", "entity": {"type": "vehicle", "id": "x"}, "data": data}
    first, backup = (await _test(client, {"flow": flow, "event": event}))["steps"]
    assert first["outcome"] == "nobody" and "division by zero" in str(first["messages"])
    assert backup["outcome"] == "rendered", backup
    assert backup["messages"][0]["recipient"]["address"] == "backup@example.com"


@pytest.mark.parametrize(
    ("email", "shown"),
    [
        ("ana@a.com.br, bia@b.com.br", "cannot build the message: 'ana@a.com.br, bia@b.com.br' is"),
        ("ana@exämple.com.br", "ana@xn--exmple-cua.com.br"),
    ],
)
async def test_an_email_preview_is_built_as_the_send_builds_it(
    client: Client, email: str, shown: str
) -> None:
    """The preview showed the address as written: one naming two people as `send` (the run
    fails it: not one address), an international domain in the form no server receives."""
    await email_channel(client)
    template = {"subject": "s", "text": "{{ entity.plate }}"}
    await post(
        client,
        "/api/v1/templates",
        {"name": "t", "channel_type": "email", "default_locale": "en", "locales": {"en": template}},
    )
    fetched = '`{"name": "Ana", "email": "' + email + '"}`'
    notify = {"channel": "email", "template": "t", "recipients": [{"driver": {"from": fetched}}]}
    flow = {
        "name": "f",
        "on": {"events": ["entity.created"]},
        "steps": [{"id": "m", "notify": notify}],
    }
    event = {
        "type": "entity.created",
        "entity": {"type": "vehicle", "id": "x"},
        "data": {"plate": "ABC1D23"},
    }
    (step,) = (await _test(client, {"flow": flow, "event": event}))["steps"]
    (message,) = step["messages"]
    request = message["request"]
    if "error" in request:
        assert request["error"].startswith(shown), request
    else:
        assert request["to"] == request["envelope"] == [shown], request
    assert ("error" in request) == ("," in email)


PLATE_FLOW = {
    "name": "plate-from-fines",
    "on": {"events": ["fine.received"]},
    "steps": [
        {
            "id": "vehicle",
            "set": {
                "entity": {"type": "vehicle", "ref": "entity.plate"},
                "fields": {"plate": "entity.plate", "attributes.last_fine": "entity.ait_number"},
            },
        }
    ],
}


async def test_a_set_naming_a_converted_vehicle_by_its_old_plate_shows_the_plate_kept(
    client: Client,
) -> None:
    """A `set` that names ABC1C34 by its old twin writes no plate (the conversion is one way,
    docs/entities.md): the dry run shows the change the write makes, not the old spelling."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1C34"}, status=201)
    event = {
        "type": "fine.received",
        "entity": {"type": "other", "key": "fine:X:1"},
        "data": {"kind": "fine", "key": "X:1", "ait_number": "A1", "plate": "ABC1234"},
    }
    answer = await _test(client, {"flow": PLATE_FLOW, "event": event})
    (step,) = answer["steps"]
    assert step["document"]["plate"] == "ABC1C34", step
    assert [c["field"] for c in step["changes"]] == ["attributes"]


async def test_a_set_of_the_driver_in_force_by_cpf_shows_no_change_as_the_write_makes_none(
    client: Client,
) -> None:
    """A `set` writing the vehicle's `current_driver` as `{cpf}` of the driver in force (or
    with the name spelled its own way) leaves the history's `{id, cpf, name}` as it is
    (`known_whole`): the dry run merged without that rule and showed the id and the name
    removed, a change the write never makes."""
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"}, status=201)
    await post(client, "/api/v1/entities/driver", ANA, status=201)
    assigned = {"driver": ANA["cpf"], "start": SINCE}
    await post(client, "/api/v1/entities/vehicle/ABC1D23/drivers", assigned, status=201)
    await drain(client.app[services_key])  # the history's write of the field relayed
    stored = await get(client, "/api/v1/entities/vehicle/ABC1D23")
    flow = {
        "name": "driver-from-fines",
        "on": {"events": ["fine.received"]},
        "steps": [
            {
                "id": "vehicle",
                "set": {
                    "entity": {"type": "vehicle", "ref": "entity.plate"},
                    "fields": {
                        "current_driver.cpf": f"'{ANA['cpf']}'",
                        "current_driver.name": "'ANA SOUZA'",
                    },
                },
            }
        ],
    }
    event = {
        "type": "fine.received",
        "entity": {"type": "other", "key": "fine:X:1"},
        "data": {"kind": "fine", "key": "X:1", "ait_number": "A1", "plate": "ABC1D23"},
    }
    answer = await _test(client, {"flow": flow, "event": event})
    (step,) = answer["steps"]
    assert step["changes"] == [], step
    assert step["document"]["current_driver"] == stored["current_driver"], step
    patch = {"current_driver": {"cpf": ANA["cpf"], "name": "ANA SOUZA"}}
    written = await client.patch("/api/v1/entities/vehicle/ABC1D23", json=patch, headers=auth())
    assert (await written.json())["changed"] == []  # the write `set` makes (`entities.patch`)


async def test_a_sets_answer_has_the_version_the_real_run_gives(client: Client) -> None:
    """The real `set` answers the entity with its `id` and `version`; the dry run's had no
    `version`, so a step reading `steps.<set>.version` (an ordering, a key) was stopped in
    the dry run and passed for real."""
    flow = {
        "name": "stamp",
        "on": {
            "events": ["entity.created"],
            "filter": {"entity_type": "vehicle", "origin": {"kind": ["admin"]}},
        },
        "steps": [
            {"id": "s", "set": {"fields": {"attributes.stamped": "'yes'"}}},
            {"id": "v", "when": "steps.s.version == `2`"},
        ],
    }
    await post(client, "/api/v1/flows", flow)
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    event = {
        "type": "entity.created",
        "entity": {"type": "vehicle", "id": vehicle["id"]},
        "data": {"plate": "ABC1D23"},
    }
    dry = await _test(client, {"flow": "stamp", "event": event})
    assert [s["outcome"] for s in dry["steps"]] == ["rendered", "passed"]


async def test_a_set_with_expect_stops_the_dry_run_as_it_would_stop_the_run(
    client: Client,
) -> None:
    """A `set` whose `expect` the stored entity does not meet is `stopped` (its reason and
    description, nothing rendered), and the steps after it are not reached; met, rendered."""
    flow = {
        "name": "stamp",
        "on": {
            "events": ["entity.updated"],
            "filter": {"entity_type": "vehicle", "origin": {"kind": ["admin"]}},
        },
        "steps": [
            {
                "id": "s",
                "description": "changed since",
                "set": {
                    "fields": {"attributes.stamped": "'yes'"},
                    "expect": {"status": "entity.status"},
                },
            },
            {"id": "v", "when": "`true`"},
        ],
    }
    await post(client, "/api/v1/flows", flow)
    vehicle = await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    ref = {"type": "vehicle", "id": vehicle["id"]}
    stale = {"type": "entity.updated", "entity": ref, "data": {"status": "inactive"}}
    dry = await _test(client, {"flow": "stamp", "event": stale})
    assert [s["outcome"] for s in dry["steps"]] == ["stopped", "not reached"]
    assert dry["steps"][0]["reason"] == (
        "expect: the vehicle is not as expected: its status is null, not 'inactive'"
    )
    assert dry["steps"][0]["description"] == "changed since"
    held = {"type": "entity.updated", "entity": ref, "data": {}}
    dry = await _test(client, {"flow": "stamp", "event": held})
    assert [s["outcome"] for s in dry["steps"]] == ["rendered", "passed"]


async def test_an_answer_without_a_body_fails_the_fetch_as_the_real_run_does(
    client: Client, partner: Partner
) -> None:
    """HR answering 200 with `null` (or nothing) fails the real fetch (nothing to map); the
    dry run given that answer mapped it and went on as if HR had named nobody."""
    await _scenario3(client, partner)
    await post(client, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    dry = await _test(
        client, {"flow": "fine-email-driver", "event": FINE_EVENT, "samples": {"hr": None}}
    )
    hr = dry["steps"][0]
    assert hr["outcome"] == "failed"
    assert "answered without a JSON or XML body to map" in hr["detail"], hr


_FINE = {
    "kind": "fine",
    "key": "261810:A1",
    "ait_number": "A1",
    "authority": "261810",
    "plate": "ABC1D23",
    "amount_brl": 10.0,
    "occurred_at": "2026-11-18T16:45:00Z",
    "status": "open",
    "place": "Av. Paulista",
}


async def _dry_and_real(
    client: Client, flow: dict[str, Any], etype: str, created: Any
) -> tuple[Any, Any]:
    """The dry run of the stored `flow` on `created`'s event, and the real run of it."""
    event = {"type": "entity.created", "entity": {"type": etype, "id": created["id"]}}
    dry = await _test(client, {"flow": flow["name"], "event": event})
    await drain(client.app[services_key])
    (run,) = (await get(client, f"/api/v1/flows/{flow['name']}/runs"))["items"]
    return dry, await get(client, f"/api/v1/flow-runs/{run['id']}")


async def test_a_set_marking_a_fine_paid_shows_the_paid_on_the_write_records(
    client: Client,
) -> None:
    """A `set` of `status: paid` on a fine: the write records the day as `paid_on`, and a
    later step reading it runs; the dry run rebuilt the write without that rule (nor the
    nulls the write takes out), so its document had no `paid_on` and the step stopped. It
    now goes through the write's own path (`EntityService.patched`), nothing written."""
    flow = {
        "name": "payer",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "other"}},
        "steps": [
            {"id": "s1", "set": {"fields": {"status": "'paid'", "place": "`null`"}}},
            {"id": "s2", "when": "steps.s1.paid_on"},
        ],
    }
    await post(client, "/api/v1/flows", flow)
    created = await post(client, "/api/v1/entities/other", _FINE)
    dry, real = await _dry_and_real(client, flow, "other", created)
    assert real["status"] == "succeeded", real["steps"]
    assert [s["outcome"] for s in real["steps"]] == ["written", "passed"]
    assert [s["outcome"] for s in dry["steps"]] == ["rendered", "passed"], dry["steps"]
    changes = {c["field"]: c["new"] for c in dry["steps"][0]["changes"]}
    assert changes == {c["field"]: c["new"] for c in real["steps"][0]["changes"]}
    assert set(changes) == {"paid_on", "place", "status"}
    assert "place" not in dry["steps"][0]["document"]
    assert (await get(client, f"/api/v1/entities/other/{created['id']}"))["status"] == "paid"


async def test_a_set_of_a_natural_key_fails_at_once_in_the_run_and_in_the_dry_run(
    client: Client,
) -> None:
    """A `set` writing a driver's `cpf` (its natural key) is refused: the run took the
    refusal for contention and retried it for ~40 s before giving up, and the dry run showed
    it rendered. Both now fail the step at once with the reason."""
    flow = {
        "name": "renamer",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "driver"}},
        "steps": [{"id": "fix", "set": {"fields": {"cpf": "'11144477735'"}}}],
    }
    await post(client, "/api/v1/flows", flow)
    created = await post(client, "/api/v1/entities/driver", ANA)
    dry, real = await _dry_and_real(client, flow, "driver", created)
    reason = "the natural key of an entity cannot change; create a new one"
    assert real["status"] == "failed", real
    assert [(s["outcome"], s["detail"]) for s in real["steps"]] == [("failed", reason)]
    assert [(s["outcome"], s["detail"]) for s in dry["steps"]] == [("failed", reason)]


@pytest.mark.parametrize(
    "entity",
    [{"type": "other", "key": "fine:261810:A1"}, {"type": "other"}],
    ids=["named-by-key", "named-by-nothing"],
)
async def test_a_set_on_a_sample_whose_entity_is_not_stored_writes_over_its_data(
    client: Client, entity: dict[str, Any]
) -> None:
    """A sample event about a fine not stored yet, named by its key (as the docs' example
    names it) or by nothing: the sample's data stands in, as documented, where the step
    failed "no entity to write" and every later one was not reached."""
    flow = {
        "name": "marker",
        "on": {"events": ["entity.created"], "filter": {"entity_type": "other"}},
        "steps": [
            {"id": "mark", "set": {"fields": {"driver_cpf": f"'{ANA['cpf']}'"}}},
            {"id": "after", "when": "steps.mark.driver_cpf"},
        ],
    }
    await post(client, "/api/v1/flows", flow)
    event = {"type": "entity.created", "entity": entity, "data": _FINE}
    dry = await _test(client, {"flow": "marker", "event": event})
    mark, after = dry["steps"]
    assert mark["outcome"] == "rendered", mark
    assert "not stored" in mark["note"]
    assert mark["document"]["driver_cpf"] == ANA["cpf"]
    assert after["outcome"] == "passed"
    assert (await get(client, "/api/v1/entities/other"))["items"] == []  # nothing written
