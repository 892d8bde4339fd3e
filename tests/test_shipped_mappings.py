"""Every file in mappings/ compiles and maps its partner sample to the right values."""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.entities import Change
from gateway.errors import InvalidPayload
from gateway.fleet.fix import parse_fix
from gateway.mapping import CompiledMapping, load_mapping, read_sample

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
SAMPLES = ROOT / "tests" / "data" / "partner_payloads"

# mapping file → the partner sample it is written for
INBOUND = {
    "traccar-position.yaml": "traccar_position_forward.json",
    "traccar-api-positions.yaml": "traccar_api_positions.json",
    "traccar-event.yaml": "traccar_event_forward_geofence_exit.json",
    "osmand.yaml": "osmand_query.txt",
    "traccar-client.yaml": "traccar_client_json.json",
    "overland.yaml": "overland_locations.json",
    "samsara-geofence.yaml": "samsara_v2_geofence_exit.json",
    "samsara-alert.yaml": "samsara_v1_alert_geofence.json",
    "samsara-engine-fault.yaml": "samsara_engine_fault_on.json",
    "samsara-speeding.yaml": "samsara_speeding_event_started.json",
    "flespi.yaml": "flespi_stream.json",
    "fine-feed.yaml": "fine_feed.json",
    "fine-payment.yaml": "fine_payment.json",
    "checklist.yaml": "checklist_completed.json",
    "motive-vehicle-location.yaml": "motive_vehicle_location_updated.json",
    "geotab-logrecord.yaml": "geotab_getfeed_logrecord.json",
    "geotab-positions.yaml": "geotab_getfeed_logrecord.json",
    "geotab-statusdata.yaml": "geotab_getfeed_statusdata.json",
    "geotab-faultdata.yaml": "geotab_getfeed_faultdata.json",
    "geotab-exceptionevent.yaml": "geotab_getfeed_exceptionevent.json",
    "geotab-driverchange.yaml": "geotab_getfeed_driverchange.json",
    "fleetio-meter-entry.yaml": "fleetio_meter_entry_created.json",
    "samsara-vehicle-stats-feed.yaml": "samsara_vehicle_stats_feed.json",
    "samsara-vehicle-stats-positions.yaml": "samsara_vehicle_stats_feed.json",
    "wialon-units-positions.yaml": "wialon_search_items_units.json",
    "sascar-pacote-posicoes.yaml": "sascar_pacote_posicoes.xml",
}
# the params a trigger sets for the mappings that declare some (a US account's units)
PARAMS: dict[str, dict[str, Any]] = {
    "motive-vehicle-location.yaml": {
        "distance_unit": "mi",
        "speed_unit": "mph",
        "volume_unit": "gal",
    },
    "fleetio-meter-entry.yaml": {"meter_unit": "mi"},
}
RESPONSE = {
    "hr-current-driver.yaml": "driver_lookup_response.json",
    "hr-driver-lookup.yaml": "driver_lookup_response.json",
}
OUTBOUND = {
    "erp-fine-paid.yaml": "erp_fine_paid.json",
    "erp-mileage.yaml": "erp_mileage_update.json",
    "fcm-geofence-exit.yaml": "fcm_v1_message.json",
    "sms-maintenance-due.yaml": "sms_request.json",
    "sms-zenvia.yaml": "sms_request.json",
    "sms-twilio.yaml": "twilio_sms_request.json",
}

VEHICLE = {
    "plate": "ABC1D23",
    "renavam": "86769597308",
    "odometer_km": 152340.0,
    "current_driver": {"name": "Ana Souza", "cpf": "52998224725"},
}
DRIVER = {
    "name": "Ana Souza",
    "cpf": "52998224725",
    "phone": "+5511987654321",
    "push_tokens": ["fcm-device-token-of-the-driver"],
}
FINE = {
    "kind": "fine",
    "key": "261810:A123456789",
    "ait_number": "A123456789",
    "authority": "261810",
    "plate": "ABC1D23",
    "amount_brl": 130.16,
    "driver_cpf": "52998224725",
    "status": "paid",
}
CONTEXTS: dict[str, dict[str, Any]] = {
    "erp-fine-paid.yaml": {
        "entity": FINE,
        "event": {
            "type": "fine.paid",
            "occurred_at": "2026-11-25T14:00:00Z",
            "data": {"amount_paid_brl": 104.13},
        },
    },
    "erp-mileage.yaml": {
        "entity": VEHICLE,
        "event": {
            "type": "entity.updated",
            "occurred_at": "2026-11-25T10:58:02Z",
            "data": {
                "origin": "checklist",
                "checklist_id": "chk-20261125-0042",
                "captured_at": "2026-11-25T10:58:00Z",
            },
        },
    },
    "fcm-geofence-exit.yaml": {
        "entity": VEHICLE,
        "driver": DRIVER,
        "event": {
            "type": "vehicle.geofence.exited",
            "occurred_at": "2026-11-20T13:45:13Z",
            "data": VEHICLE,
            "detail": {"geofence": {"id": 3, "name": "Garagem SP"}},
        },
    },
    "sms-maintenance-due.yaml": {
        "entity": VEHICLE,
        "event": {
            "type": "vehicle.maintenance.due",
            "data": VEHICLE,
            "detail": {"plan": {"id": "p1", "name": "Revisão"}, "due_km": 10000},
        },
        "driver": DRIVER,
    },
    # An SMS channel's message (gateway/notify/sms.py), as Zenvia and Twilio want it.
    "sms-zenvia.yaml": {
        "message": {
            "to": "+55 11 98765-4321",
            "text": "Rabbot: ABC1D23 atingiu 10.000 km. Agende a revisao.",
            "from": "RABBOT",
        }
    },
    "sms-twilio.yaml": {
        "message": {
            "to": "+55 11 98765-4321",
            "text": "Rabbot: ABC1D23 atingiu 10.000 km. Agende a revisao.",
            "from": "+15005550006",
        }
    },
}
SECRETS = {
    "erp_token": "erp-t",
    "hr_token": "hr-t",
    "fcm_access_token": "fcm-t",
    "sms_api_key": "k",
}


def load(name: str) -> CompiledMapping:
    return load_mapping((MAPPINGS / name).read_bytes(), filename=name)


def sample(name: str) -> Any:
    return read_sample((SAMPLES / name).read_text())


def mapped(name: str) -> list[dict[str, Any]]:
    """The documents of every item of the mapping's sample."""
    mapping = load(name).bind(PARAMS.get(name, {}), strict=True)
    results = [
        mapping.apply(item, secrets=SECRETS) for item in mapping.items(sample(INBOUND[name]))
    ]
    return [
        {"document": r.document, "key": r.key, "events": r.event_types, "event_data": r.event_data}
        for r in results
    ]


def test_every_shipped_mapping_has_a_sample() -> None:
    shipped = {path.name for path in MAPPINGS.glob("*")}
    assert shipped == {*INBOUND, *RESPONSE, *OUTBOUND}


@pytest.mark.parametrize("name", sorted({*INBOUND, *RESPONSE, *OUTBOUND}))
def test_shipped_mapping_compiles(name: str) -> None:
    mapping = load(name)
    assert mapping.name == Path(name).stem
    assert mapping.direction == ("inbound" if name in INBOUND else "outbound")


def test_the_mapping_bench_evaluates_every_shipped_mapping_on_its_sample() -> None:
    # bench/bench_mapping.py takes its samples from the tables above: a mapping shipped
    # without one stopped it with a KeyError, unnoticed, until someone ran it.
    from bench.bench_mapping import runner

    for path in sorted(MAPPINGS.glob("*.yaml")):
        call, fields, run = runner(path)
        assert fields > 0 and call in {"apply", "map_response", "build_request"}, path.name
        run()


def test_traccar_position() -> None:
    (result,) = mapped("traccar-position.yaml")
    assert result["key"] == {} and result["events"] == ()
    assert result["document"] == {
        "plate": "ABC1D23",
        "tracker_id": "353861053849681",
        "time": "2026-11-20T13:45:22Z",
        "lat": -23.56118,
        "lon": -46.65578,
        "speed_kmh": 24.3,  # 13.1 knots
        "heading": 88.0,
        "accuracy_m": 6.0,
        "ignition": True,
        "attributes": {
            "altitude_m": 761.0,
            "traccar_total_distance_km": 1523.413,  # 1,523,412.9 m
            "traccar_distance_km": 0.0124,  # 12.4 m
            "battery_percent": 87,
        },
    }  # no device odometer in this fix


def test_traccar_api_positions_page_gives_a_fix_per_position() -> None:
    """GET /api/positions: a list of Position objects, each found by Traccar's device id,
    Traccar 4's `+0000` and a local `-0300` fix time read with their offsets, the device
    odometer in metres, an unknown accuracy (0) left out and a fix without lock kept."""
    first, second = mapped("traccar-api-positions.yaml")
    assert first["key"] == {} and first["events"] == ()
    assert first["document"] == {
        "tracker_id": "7",
        "time": "2026-11-20T13:45:22Z",
        "lat": -23.56118,
        "lon": -46.65578,
        "speed_kmh": 24.3,  # 13.1 knots
        "heading": 88.0,
        "accuracy_m": 6.0,
        "ignition": True,
        "attributes": {
            "altitude_m": 761.0,
            "traccar_protocol": "osmand",
            "traccar_total_distance_km": 1523.413,
            "battery_percent": 87,
        },
    }
    assert second["document"] == {
        "tracker_id": "12",
        "time": "2026-11-20T13:45:30Z",  # 10:45:30-0300
        "lat": -22.90685,
        "lon": -43.1729,
        "speed_kmh": 0.0,
        "heading": 0.0,
        "odometer_km": 152340.4,  # 152,340,400 m
        "ignition": False,
        "valid": False,  # no GPS lock: the fold refuses it (no_fix)
        "attributes": {
            "altitude_m": 12.0,
            "traccar_protocol": "teltonika",
            "traccar_total_distance_km": 987.654,
        },
    }
    for result in (first, second):
        parse_fix(result["document"])  # each is a canonical fix the append takes


def test_traccar_event_geofence_exit() -> None:
    (result,) = mapped("traccar-event.yaml")
    document = result["document"]
    assert result["key"] == {"attributes.tracker_id": "353861053849681"}  # the device id first
    assert result["events"] == ("vehicle.geofence.exited",)
    assert document["odometer_km"] == 98765.0  # 98,765,000 m
    assert document["last_position"]["speed_kmh"] == 12.4  # 6.7 knots
    assert document["last_position"]["time"] == "2026-11-20T13:45:12Z"
    assert document["attributes"]["traccar_total_distance_km"] == 1523.401  # 1,523,400.5 m
    assert result["event_data"] == {
        "traccar_event": "geofenceExit",
        "occurred_at": "2026-11-20T13:45:13Z",
        "geofence": {"id": 3, "name": "Garagem SP"},
    }


def test_traccar_event_geofence_enter_and_other_events() -> None:
    mapping = load("traccar-event.yaml")
    payload = sample("traccar_event_forward_geofence_exit.json")
    payload["event"]["type"] = "geofenceEnter"
    assert mapping.apply(payload).event_types == ("vehicle.geofence.entered",)
    payload["event"]["type"] = "ignitionOn"
    assert mapping.apply(payload).event_types == ("vehicle.ignition.on",)
    payload["event"]["type"] = "deviceMoving"  # a type no fleet rule reads: no event
    assert mapping.apply(payload).event_types == ()


def test_osmand_query_string() -> None:
    (result,) = mapped("osmand.yaml")
    assert result["document"] == {
        "tracker_id": "353861053849681",
        "time": "2026-11-26T09:25:12Z",  # Unix 1795685112
        "lat": -23.56118,
        "lon": -46.65578,
        "speed_kmh": 24.3,  # "13.1" knots
        "heading": 88.0,
        "accuracy_m": 6.0,
        "ignition": True,
        "attributes": {
            "altitude_m": 761.0,
            "battery_percent": 87.0,
            "traccar_driver_unique_id": "52998224725",
        },
    }


def test_traccar_client_json() -> None:
    (result,) = mapped("traccar-client.yaml")
    document = result["document"]
    assert document["tracker_id"] == "353861053849681"
    assert document["speed_kmh"] == 24.3  # 6.74 m/s = 24.264 km/h
    assert document["time"] == "2026-11-20T13:45:22.862Z"
    assert document["accuracy_m"] == 6
    assert document["attributes"] == {
        "altitude_m": 761.0,
        "app_odometer_km": 152.34,  # 152,340 m
        "battery_percent": 87,  # level 0.87
        "moving": True,
    }


def test_overland_batch_gives_a_fix_per_point_and_acknowledges_it() -> None:
    """[lon, lat] coordinates, m/s, `-0300` times; the -1 a phone reports for what it does
    not know is left out; the answer Overland waits for before it drops the batch."""
    first, second = mapped("overland.yaml")
    assert first["document"] == {
        "tracker_id": "353861053849681",
        "time": "2026-12-06T06:48:07Z",
        "lat": -23.56118,
        "lon": -46.65578,
        "accuracy_m": 10,
        "attributes": {"altitude_m": 761, "battery_percent": 89, "motion": ["driving"]},
    }  # speed and course -1: unknown
    assert (second["document"]["speed_kmh"], second["document"]["heading"]) == (45.0, 135.2)
    assert load("overland.yaml").acknowledgement == {"result": "ok"}


def test_samsara_geofence_exit() -> None:
    (result,) = mapped("samsara-geofence.yaml")
    assert result["document"] == {
        "plate": "ABC1D23",
        "vin": "9BWZZZ377VT004251",
        "attributes": {"samsara_vehicle_id": "281474982859091", "samsara_name": "Caminhao 12"},
    }
    assert result["events"] == ("vehicle.geofence.exited",)
    assert result["event_data"]["occurred_at"] == "2026-11-20T13:45:13Z"
    assert result["event_data"]["geofence"] == {
        "id": "1234",
        "name": "Garagem SP",
        "address": "Av. Paulista, 1000, Sao Paulo - SP",
        "center": {"latitude": -23.5505, "longitude": -46.6333},
        "radius_m": 300,
    }
    mapping = load("samsara-geofence.yaml")
    assert mapping.probe(sample(INBOUND["samsara-geofence.yaml"])) is None
    ping = {"eventId": "bf72239c", "eventMs": 1795685112000, "eventType": "Ping"}
    assert mapping.probe(ping) == {"ok": True}


def test_flespi_dotted_keys_and_batches() -> None:
    first, second = mapped("flespi.yaml")
    assert first["document"] == {
        "plate": "ABC1D23",
        "tracker_id": "353861053849681",
        "time": "2026-11-26T09:25:12Z",
        "lat": -23.56118,
        "lon": -46.65578,
        "speed_kmh": 47,
        "heading": 88,
        "odometer_km": 152340.4,
        "ignition": True,
        "attributes": {"altitude_m": 761, "satellites": 11},
    }
    assert second["document"]["time"] == "2026-11-26T09:25:22Z"
    assert second["document"]["odometer_km"] == 152340.6  # 152340.55, halves up


def test_fine_feed() -> None:
    (result,) = mapped("fine-feed.yaml")
    assert result["document"] == {
        "kind": "fine",
        "key": "261810:A123456789",
        "ait_number": "A123456789",
        "authority": "261810",
        "plate": "ABC1D23",
        "renavam": "86769597308",
        # with its unfolding (desdobramento "0"), as the fine schema writes it
        "infraction_code": "745-50",
        "description": "Transitar em velocidade superior a maxima permitida em ate 20%",
        "occurred_at": "2026-11-18T16:45:00Z",  # 13:45 in São Paulo
        "occurred_at_local": "2026-11-18T13:45:00-03:00",  # on the notice's clock
        "place": "Av. Paulista, 1000",
        "amount_brl": 130.16,
        "points": 4,
        "indication_deadline": "2026-12-18",
        "status": "open",
    }
    assert result["key"] == {"key": "261810:A123456789"}  # its authority's AIT
    # fine.received is the fine's own event, derived from the write (gateway/entities.py
    # KIND_EVENTS), whoever writes it: the mapping announces none of its own.
    assert result["events"] == ()


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ({"codigoInfracao": "6050", "desdobramento": "1"}, "605-01"),  # a red light
        ({"codigoInfracao": "6050", "desdobramento": "2"}, "605-02"),  # a stop sign
        ({"codigoInfracao": 5010, "desdobramento": 0}, "501-00"),  # numbers, as a sheet's
        ({"codigoInfracao": " 7455 ", "desdobramento": " 0 "}, "745-50"),
        ({"codigoInfracao": "7455", "desdobramento": None}, "7455"),  # none: as sent
        ({"codigoInfracao": "745-50", "desdobramento": "0"}, "745-50"),  # joined already
        ({"codigoInfracao": "", "desdobramento": "0"}, None),  # blank: left out
    ],
)
def test_the_fine_feed_keeps_the_infraction_codes_unfolding(
    sent: dict[str, Any], stored: str | None
) -> None:
    """`desdobramento` was dropped: 605-01 and 605-02 were both stored as "6050", one code
    for two infractions, though the fine schema's code is "with its unfolding, e.g. 745-50"."""
    payload = {**sample("fine_feed.json"), **sent}
    document = load("fine-feed.yaml").bind({}, strict=True).apply(payload).document
    assert document.get("infraction_code") == stored


def test_the_fine_feed_keeps_the_infraction_description() -> None:
    """`descricao` was dropped: nobody (the driver's e-mail, the admin UI) could tell what the
    infraction was. Blank, it is left out; longer than the schema's 500 characters, cut."""
    mapping = load("fine-feed.yaml").bind({}, strict=True)
    for sent, stored in (("  Estacionar na calçada ", "Estacionar na calçada"), ("  ", None)):
        document = mapping.apply({**sample("fine_feed.json"), "descricao": sent}).document
        assert document.get("description") == stored
    long = mapping.apply({**sample("fine_feed.json"), "descricao": "x" * 600}).document
    assert long["description"] == "x" * 500


def test_fine_payment_marks_the_fine_paid_and_says_what_was_paid() -> None:
    (result,) = mapped("fine-payment.yaml")
    assert result["document"] == {
        "kind": "fine",
        "key": "261810:A123456789",
        "status": "paid",
        "amount_paid_brl": 104.13,
        "paid_on": "2026-11-25",
    }
    assert result["key"] == {"key": "261810:A123456789"}
    assert result["events"] == ("fine.paid",)
    assert result["event_data"] == {
        "amount_paid_brl": 104.13,  # 20% off for paying through the SNE
        "paid_on": "2026-11-25",
        "discount_brl": 26.03,
        "method": "boleto",
    }


def test_checklist() -> None:
    (result,) = mapped("checklist.yaml")
    assert result["document"] == {
        "kind": "checklist",
        "key": "chk-20261125-0042",
        "vehicle_plate": "ABC1D23",
        "driver_cpf": "52998224725",
        "odometer_km": 152340,
        "answers": [
            {"question": "pneus", "answer": True},
            {"question": "luzes", "answer": True},
            {"question": "nivel_oleo", "answer": False, "comment": "abaixo do minimo"},
        ],
        "photos": [
            {
                "ref": "https://storage.example.com/chk-20261125-0042/painel.jpg",
                "content_type": "image/jpeg",
                "sha256": "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b",
            }
        ],
        "completed_at": "2026-11-25T10:58:00Z",
    }
    assert result["events"] == ("checklist.completed",)


def test_driver_lookup_for_flows_answers_a_driver_with_contacts() -> None:
    mapping = load("hr-driver-lookup.yaml")
    fine = {**FINE, "occurred_at": "2026-11-18T16:45:00Z"}
    request = mapping.build_request({"entity": fine})
    assert request.path_params == {"plate": "ABC1D23"}
    assert request.query == {"em": "2026-11-18T16:45:00Z"}
    assert mapping.map_response(sample(RESPONSE["hr-driver-lookup.yaml"])) == {
        "name": "Ana Souza",
        "cpf": "52998224725",
        "email": "ana.souza@example.com",
        "phone": "+5511987654321",
        "since": "2026-11-01T08:00:00-03:00",
    }


def test_current_driver_lookup() -> None:
    mapping = load("hr-current-driver.yaml")
    request = mapping.build_request({"entity": VEHICLE}, secrets=SECRETS)
    assert request.path_params == {"plate": "ABC1D23"}
    assert request.headers == {"Authorization": "Bearer hr-t", "Accept": "application/json"}
    assert request.body is None
    answer = sample(RESPONSE["hr-current-driver.yaml"])
    assert mapping.map_response(answer) == {
        "current_driver": {
            "name": "Ana Souza",
            "cpf": "52998224725",
        }
    }


@pytest.mark.parametrize("name", sorted(OUTBOUND))
def test_outbound_body_is_what_the_partner_expects(name: str) -> None:
    request = load(name).build_request(CONTEXTS[name], secrets=SECRETS)
    assert request.body == sample(OUTBOUND[name])
    assert json.dumps(request.body)  # serialisable as it is


def test_outbound_headers_carry_the_secrets() -> None:
    fine = load("erp-fine-paid.yaml").build_request(CONTEXTS["erp-fine-paid.yaml"], secrets=SECRETS)
    assert fine.headers == {"Authorization": "Bearer erp-t"}
    assert fine.path_params == {"ait": "A123456789"}
    sms = load("sms-maintenance-due.yaml")
    assert sms.build_request(CONTEXTS["sms-maintenance-due.yaml"], secrets=SECRETS).headers == {
        "X-Api-Key": "k"
    }


def test_fine_paid_falls_back_to_the_fine_amount_and_event_day() -> None:
    context = {
        "entity": FINE,
        "event": {"type": "fine.paid", "occurred_at": "2026-11-26T01:30:00Z"},
    }
    body = load("erp-fine-paid.yaml").build_request(context, secrets=SECRETS).body
    assert body["valorPago"] == 130.16
    assert body["dataPagamento"] == "2026-11-25"  # still the 25th in São Paulo


def test_fine_paid_names_the_fine_by_its_authority_and_ait_or_its_ait_alone_without_one() -> None:
    """An AIT number is unique only within its authority: the ERP is told both, the AIT where
    it always was (path and `ait`); a fine keyed in without its authority has none to tell."""
    mapping = load("erp-fine-paid.yaml")
    request = mapping.build_request(CONTEXTS["erp-fine-paid.yaml"], secrets=SECRETS)
    assert request.path_params == {"ait": "A123456789"}
    assert (request.body["ait"], request.body["orgaoAutuador"]) == ("A123456789", "261810")
    keyed_in = {k: v for k, v in FINE.items() if k != "authority"} | {"key": "A123456789"}
    context = {**CONTEXTS["erp-fine-paid.yaml"], "entity": keyed_in}
    body = mapping.build_request(context, secrets=SECRETS).body
    assert body["ait"] == "A123456789" and "orgaoAutuador" not in body


# -- against the real entity schemas ---------------------------------------------------------------


@functools.cache
def registry() -> Any:
    from gateway.schemas.registry import SchemaRegistry, default_schema_dir

    return SchemaRegistry.load(default_schema_dir())


@pytest.mark.parametrize("name", sorted({*INBOUND, *RESPONSE, *OUTBOUND}))
def test_shipped_mapping_targets_are_entity_fields(name: str) -> None:
    load_mapping((MAPPINGS / name).read_bytes(), catalog=registry())


# mappings that only change an entity another mapping brought (a payment: the fine)
UPDATES = {"fine-payment.yaml": "fine-feed.yaml"}


@pytest.mark.parametrize("name", sorted(INBOUND))
def test_mapped_documents_are_valid_entities_or_fixes(name: str) -> None:
    schemas = registry()
    mapping = load(name)
    if mapping.target == "positions":  # canonical fixes, as the append checks them
        for result in mapped(name):
            assert parse_fix(result["document"]).lat == result["document"]["lat"]
        return
    for result in mapped(name):
        # Trackers that know only their own id update a vehicle found by it: no plate.
        document = {"plate": "ABC1D23", **result["document"]}
        if mapping.entity_type != "vehicle":
            document = result["document"]
        if name in UPDATES:
            document = {**mapped(UPDATES[name])[0]["document"], **document}
        assert schemas.validate(mapping.entity_type, document) == []


def test_motive_vehicle_location_in_a_us_accounts_units() -> None:
    (result,) = mapped("motive-vehicle-location.yaml")
    assert result["document"] == {
        "tracker_id": 1984895,
        "time": "2026-11-20T13:45:22Z",
        "lat": -23.56118,
        "lon": -46.65578,
        "heading": 236.2,
        "speed_kmh": 24.5,  # 15.2 mph
        "odometer_km": 151476.9,  # 94,123.4 mi
        "attributes": {
            "motive_vehicle_number": "T55",
            "engine_hours": 5801.6,
            "fuel_used_l": 31652.7,  # 8,361.77 US gallons
            "motive_location": "Av. Paulista, Sao Paulo, SP",
        },
    }


def test_motive_in_a_metric_account_and_without_its_units() -> None:
    metric = load("motive-vehicle-location.yaml").bind(
        {"distance_unit": "km", "speed_unit": "km/h", "volume_unit": "l"}
    )
    document = metric.apply(sample(INBOUND["motive-vehicle-location.yaml"])).document
    assert document["odometer_km"] == 94123.4
    assert document["speed_kmh"] == 15.2
    problems = load("motive-vehicle-location.yaml").param_problems({})
    assert [(p.pointer, p.keyword) for p in problems] == [
        (f"/params/{name}", "required") for name in ("distance_unit", "speed_unit", "volume_unit")
    ]


def test_geotab_positions_page_gives_a_fix_per_record() -> None:
    results = mapped("geotab-positions.yaml")
    fixes = [parse_fix(r["document"]) for r in results]
    assert [f.tracker_id for f in fixes] == ["b3A", "b7", "b3A"]
    assert results[2]["document"] == {
        "tracker_id": "b3A",
        "time": "2026-11-20T13:45:35Z",
        "lat": -23.56118,
        "lon": -46.65578,
        "speed_kmh": 24,
        "attributes": {"geotab_log_id": "b2F9C3"},
    }


def test_geotab_logrecord_page() -> None:
    results = mapped("geotab-logrecord.yaml")
    assert [r["key"] for r in results] == [
        {"attributes.tracker_id": "b3A"},
        {"attributes.tracker_id": "b7"},
        {"attributes.tracker_id": "b3A"},
    ]
    assert results[2]["document"] == {
        "attributes": {"tracker_id": "b3A", "geotab_log_id": "b2F9C3"},
        "last_position": {
            "time": "2026-11-20T13:45:35Z",
            "lat": -23.56118,
            "lon": -46.65578,
            "speed_kmh": 24,
        },
    }
    assert all(r["events"] == ("vehicle.position",) for r in results)


def test_fleetio_meter_entry() -> None:
    (result,) = mapped("fleetio-meter-entry.yaml")
    assert result["key"] == {"attributes.fleetio_vehicle_id": 987}
    assert result["document"] == {
        "attributes": {
            "fleetio_vehicle_id": 987,
            "odometer_read_at": "2026-11-25T10:55:00Z",
            "fleetio_meter_entry_id": 5550123,
        },
        "odometer_km": 151476.9,  # "94123.4" mi
    }
    mapping = load("fleetio-meter-entry.yaml").bind({"meter_unit": "km"})
    entry = sample(INBOUND["fleetio-meter-entry.yaml"])
    for change in ({"void": True}, {"meter_type": "secondary"}):
        other = {**entry, "payload": {**entry["payload"], **change}}
        assert "odometer_km" not in mapping.apply(other).document


def test_samsara_vehicle_stats_feed_page() -> None:
    first, second = mapped("samsara-vehicle-stats-feed.yaml")
    assert first["key"] == {"attributes.samsara_vehicle_id": "281474982859091"}
    assert first["document"]["last_position"] == {  # the newest of the two points
        "time": "2026-11-20T13:45:32Z",
        "lat": -23.56118,
        "lon": -46.65578,
        "heading": 88,
        "speed_kmh": 24.5,  # 15.2 mph
    }
    assert first["document"]["odometer_km"] == 151476.9  # 151,476,930 m
    assert second["document"]["last_position"]["speed_kmh"] == 0
    assert "odometer_km" not in second["document"]


@pytest.mark.parametrize(
    ("timestamp", "time"),
    [
        ("1795685112", "2026-11-26T09:25:12Z"),  # Unix seconds (Traccar Client)
        ("1795685112.5", "2026-11-26T09:25:12.500Z"),
        ("1795685112250", "2026-11-26T09:25:12.250Z"),  # Unix milliseconds (OsmAnd's own app)
        ("2026-11-26T09:25:12Z", "2026-11-26T09:25:12Z"),
        ("2026-11-26T06:25:12-03:00", "2026-11-26T09:25:12Z"),
        ("2026-11-26 09:25:12", "2026-11-26T09:25:12Z"),  # Traccar's other text form, as UTC
    ],
)
def test_osmand_reads_the_timestamp_in_every_form_traccar_accepts(
    timestamp: str, time: str
) -> None:
    mapping = load("osmand.yaml").bind({}, strict=True)
    query = {"id": "353861053849681", "lat": "-23.5", "lon": "-46.6", "timestamp": timestamp}
    assert mapping.apply(query).document["time"] == time


def test_osmand_takes_heading_for_bearing_and_refuses_a_fix_with_a_time_it_cannot_read() -> None:
    mapping = load("osmand.yaml").bind({}, strict=True)
    query = {"id": "T1", "lat": "-23.5", "lon": "-46.6", "timestamp": "1795685112"}
    assert mapping.apply({**query, "heading": "271"}).document["heading"] == 271
    assert "attributes" not in mapping.apply(query).document  # not marked as received
    with pytest.raises(InvalidPayload) as refused:
        mapping.apply({**query, "timestamp": "yesterday"})
    [problem] = refused.value.problems
    assert problem.extra.get("target") == "time", problem


def test_osmand_without_a_timestamp_takes_the_received_time_and_says_so() -> None:
    """Traccar's OsmAnd decoder stamps a fix without `timestamp` with the time it came."""
    mapping = load("osmand.yaml").bind({}, strict=True)
    received = datetime(2026, 12, 3, 22, 30, 5, tzinfo=UTC)
    for query in (
        {"id": "T1", "lat": "-23.5", "lon": "-46.6"},
        {"id": "T1", "location": "-23.5,-46.6", "timestamp": ""},
    ):
        document = mapping.apply(query, received=received).document
        assert document["time"] == "2026-12-03T22:30:05Z"
        assert document["attributes"] == {"time_received": True}
    body = json.loads((SAMPLES / INBOUND["traccar-client.yaml"]).read_text())
    del body["location"]["timestamp"]  # the JSON form: Traccar needs its timestamp too
    with pytest.raises(InvalidPayload) as refused:
        mapping.apply(body, received=received)
    [problem] = refused.value.problems
    assert problem.extra.get("target") == "time", problem


def test_osmand_reads_the_position_from_location_when_lat_and_lon_are_absent() -> None:
    mapping = load("osmand.yaml").bind({}, strict=True)
    query = {"id": "T1", "timestamp": "1795685112", "location": "-23.5613,-46.6565"}
    document = mapping.apply(query).document
    assert (document["lat"], document["lon"]) == (-23.5613, -46.6565)
    both = mapping.apply({**query, "lat": "-23.5", "lon": "-46.6"}).document
    assert (both["lat"], both["lon"]) == (-23.5, -46.6)  # lat and lon first
    with pytest.raises(InvalidPayload) as refused:
        mapping.apply({**query, "location": "-23.5613"})  # no longitude
    assert [p.extra.get("target") for p in refused.value.problems] == ["lon"]


def test_traccar_client_leaves_out_the_speed_and_heading_a_phone_does_not_know() -> None:
    mapping = load("traccar-client.yaml").bind({}, strict=True)
    body = json.loads((SAMPLES / INBOUND["traccar-client.yaml"]).read_text())
    body["location"]["coords"].update(speed=-1, heading=-1)
    document = mapping.apply(body).document
    assert "speed_kmh" not in document and "heading" not in document
    assert parse_fix(document).lat == -23.56118  # a valid fix, not a refused one


def traccar_forward(**position: Any) -> dict[str, Any]:
    """The Traccar position forward sample with some of the position's fields changed."""
    body = json.loads((SAMPLES / INBOUND["traccar-position.yaml"]).read_text())
    body["position"].update(position)
    return body


@pytest.mark.parametrize(
    ("name", "vehicle"),
    [
        ("abc-1d23", {"plate": "ABC1D23", "tracker_id": "353861053849681"}),
        ("ABC 1234", {"plate": "ABC1234", "tracker_id": "353861053849681"}),
        ("Company Car 01", {"tracker_id": "353861053849681"}),  # a free name: found by its id
        ("868618052108909", {"tracker_id": "353861053849681"}),  # named by its IMEI
    ],
)
def test_traccar_position_finds_a_device_not_named_by_a_plate_by_its_tracker_id(
    name: str, vehicle: dict[str, str]
) -> None:
    body = traccar_forward()
    body["device"]["name"] = name
    document = load("traccar-position.yaml").bind({}).apply(body).document
    assert {k: document[k] for k in ("plate", "tracker_id") if k in document} == vehicle
    parse_fix(document)


def test_traccar_position_leaves_out_an_unknown_accuracy_and_flags_a_fix_without_gps_lock() -> None:
    mapping = load("traccar-position.yaml").bind({})
    document = mapping.apply(traccar_forward(accuracy=0.0, valid=False)).document
    assert "accuracy_m" not in document  # 0: the protocol reports none, not an exact fix
    assert document["valid"] is False  # the canonical member: the fold refuses it (no_fix)
    assert parse_fix(document).extra["valid"] is False  # stored (and judged by the fold)
    assert "valid" not in mapping.apply(traccar_forward()).document
    # outdated with no earlier fix: Traccar sends fixTime 1970 at (0, 0); stored for the
    # fold's gates to refuse (too_old, null_island), not refused at the door.
    outdated = traccar_forward(
        outdated=True, valid=False, fixTime="1970-01-01T00:00:00.000+00:00", latitude=0.0,
        longitude=0.0,
    )  # fmt: skip
    assert parse_fix(mapping.apply(outdated).document).time.year == 1970


def test_traccar_position_reads_traccar_4_offsets_without_a_colon() -> None:
    mapping = load("traccar-position.yaml").bind({})
    body = traccar_forward(fixTime="2026-11-20T10:45:22.000-0300")
    assert mapping.apply(body).document["time"] == "2026-11-20T13:45:22Z"


def test_traccar_event_without_a_fix_and_from_traccar_4() -> None:
    mapping = load("traccar-event.yaml").bind({})
    forwarded = json.loads((SAMPLES / INBOUND["traccar-event.yaml"]).read_text())
    # deviceOffline: no position, and Traccar 4 names the event's time serverTime.
    offline = {
        "event": {
            "id": 43334,
            "attributes": {},
            "deviceId": 7,
            "type": "deviceOffline",
            "serverTime": "2026-11-20T13:50:34.984+0000",
            "positionId": 0,
            "geofenceId": 0,
            "maintenanceId": 0,
        },
        "device": forwarded["device"],
    }
    result = mapping.apply(offline)
    assert result.document == {"plate": "ABC1D23", "attributes": {"tracker_id": "353861053849681"}}
    assert result.event_data["occurred_at"] == "2026-11-20T13:50:34.984Z"
    forwarded["position"]["accuracy"] = 0.0
    assert "accuracy_m" not in mapping.apply(forwarded).document["last_position"]


def test_flespi_finds_a_device_by_ident_and_leaves_a_message_without_position_out() -> None:
    mapping = load("flespi.yaml").bind({})
    message = sample(INBOUND["flespi.yaml"])[0]
    unregistered = {k: v for k, v in message.items() if not k.startswith("device.")}
    free_name = {**message, "device.name": "Truck 12", "position.valid": False}
    for item in (unregistered, free_name):
        document = mapping.apply(item).document
        assert "plate" not in document and document["tracker_id"] == "353861053849681"
        parse_fix(document)
    assert mapping.apply(free_name).document["valid"] is False
    assert "valid" not in mapping.apply(message).document
    telemetry = {"ident": "353861053849681", "timestamp": 1795685130.5, "battery.voltage": 4.1}
    assert mapping.items([message, telemetry, free_name]) == [message, free_name]
    with pytest.raises(InvalidPayload) as refused:  # were it an item, it would be refused
        mapping.apply(telemetry)
    assert {p.extra.get("target") for p in refused.value.problems} == {"lat", "lon"}


def test_samsara_stats_feed_takes_the_gps_odometer_when_the_engine_reports_none() -> None:
    mapping = load("samsara-vehicle-stats-feed.yaml").bind({})
    page = {
        "data": [
            {
                "id": "1",
                "gps": [],
                "gpsOdometerMeters": [{"time": "2026-11-20T13:45:32Z", "value": 1500}],
            },
            {"id": "2", "name": "Van 3"},  # nothing new since the last page
        ],
        "pagination": {"endCursor": "x", "hasNextPage": False},
    }
    first, second = (mapping.apply(item).document for item in mapping.items(page))
    assert first == {"attributes": {"samsara_vehicle_id": "1"}, "odometer_km": 1.5}
    assert second == {"attributes": {"samsara_vehicle_id": "2", "samsara_name": "Van 3"}}


def test_motive_and_geotab_leave_out_what_the_vehicle_did_not_report() -> None:
    motive = load("motive-vehicle-location.yaml").bind(PARAMS["motive-vehicle-location.yaml"])
    body = sample(INBOUND["motive-vehicle-location.yaml"])
    unknown = dict.fromkeys(("bearing", "speed", "odometer", "engine_hours", "fuel", "description"))
    document = motive.apply({**body, **unknown}).document
    assert document == {
        "tracker_id": 1984895,
        "time": "2026-11-20T13:45:22Z",
        "lat": -23.56118,
        "lon": -46.65578,
        "attributes": {"motive_vehicle_number": "T55"},
    }
    parse_fix(document)
    geotab = load("geotab-logrecord.yaml").bind({})
    record = {"id": "b1", "device": {"id": "b3A"}, "dateTime": "2026-11-20T13:45:05Z",
              "latitude": -23.5, "longitude": -46.6}  # fmt: skip
    position = geotab.apply(record).document["last_position"]
    assert position == {"lat": -23.5, "lon": -46.6, "time": "2026-11-20T13:45:05Z"}


def test_motive_webhook_check_is_answered_without_a_write() -> None:
    mapping = load("motive-vehicle-location.yaml").bind(PARAMS["motive-vehicle-location.yaml"])
    assert mapping.probe(["vehicle_location_updated"]) == {"ok": True}
    assert mapping.probe(["vehicle_location_updated", "fault_code_opened"]) == {"ok": True}
    # KeepTruckin's API reference: "The test request payload is always the same"
    assert mapping.probe({"action": "test"}) == {"ok": True}
    body = sample(INBOUND["motive-vehicle-location.yaml"])
    assert mapping.probe(body) is None  # a location is mapped as usual
    assert mapping.probe([body]) is None


def test_motive_documented_location_payload_for_either_location_action() -> None:
    """The example payload of KeepTruckin's webhook reference, verbatim (source cited in
    tests/data/partner_payloads/README.md); vehicle_location_received is "the same except the
    action"."""
    mapping = load("motive-vehicle-location.yaml").bind(PARAMS["motive-vehicle-location.yaml"])
    documented = sample("motive_vehicle_location_documented.json")
    expected = {
        "tracker_id": 123,
        "time": "2017-01-01T12:00:00Z",
        "lat": 34.123,
        "lon": -84.123,
        "heading": 90.0,
        "speed_kmh": 198.8,  # 123.5 mph
        "odometer_km": 3771066.7,  # 2,343,232.23 mi
        "attributes": {
            "engine_hours": 123.6,
            "fuel_used_l": 88666.6,  # 23,423.23 US gallons
            "motive_location": "3.2 mi SE of San Francisco, CA",
        },
    }
    for action in ("vehicle_location_updated", "vehicle_location_received"):
        assert mapping.probe({**documented, "action": action}) is None
        assert mapping.apply({**documented, "action": action}).document == expected


def test_samsara_geofence_reads_the_vin_under_either_name_and_a_polygon_geofence() -> None:
    mapping = load("samsara-geofence.yaml").bind({})
    event = sample(INBOUND["samsara-geofence.yaml"])
    vehicle = {k: v for k, v in event["data"]["vehicle"].items() if k != "vin"}
    vehicle["vehicleVin"] = "9bwzzz377vt004251"
    polygon = {"polygon": {"vertices": [{"latitude": -23.55, "longitude": -46.63}] * 3}}
    address = {**event["data"]["address"], "geofence": polygon}
    result = mapping.apply({**event, "data": {"vehicle": vehicle, "address": address}})
    assert result.document["vin"] == "9BWZZZ377VT004251"
    assert result.event_data["geofence"] == {
        "id": "1234",
        "name": "Garagem SP",
        "address": "Av. Paulista, 1000, Sao Paulo - SP",
    }  # a polygon has no center nor radius: left out
    assert result.event_types == ("vehicle.geofence.exited",)


def test_sascar_soap_packets_are_one_fix_each_with_text_cast_and_offsets_kept() -> None:
    first, second, third = mapped("sascar-pacote-posicoes.yaml")
    assert first["document"] == {
        "tracker_id": "1231226",
        "time": "2026-11-20T13:45:22Z",  # 10:45:22-03:00
        "lat": -23.56118,
        "lon": -46.65578,
        "speed_kmh": 24,
        "heading": 236,
        "ignition": True,
        "attributes": {
            "sascar_packet_id": "98113204417",
            "satellites": 9,
            "gps_valid": True,
            "sascar_odometer": 151477,
            "address": "Avenida Paulista, São Paulo, SP",
        },
    }
    assert second["document"]["time"] == "2026-11-20T13:45:52Z"
    assert (third["document"]["plate"], third["document"]["ignition"]) == ("XYZ9A87", False)
    assert "address" not in third["document"]["attributes"]  # no <rua>: the template is null


def test_sascar_answer_with_one_packet_is_still_a_list_of_one() -> None:
    text = (SAMPLES / "sascar_pacote_posicoes.xml").read_text()
    start, end = text.index("<return>"), text.index("</return>") + len("</return>")
    body = text.replace(text[end : text.rindex("</return>") + len("</return>")], "")
    assert body.count("<return>") == 1 and start < end
    mapping = load("sascar-pacote-posicoes.yaml").bind({})
    (item,) = mapping.items(read_sample(body))
    assert mapping.apply(item).document["tracker_id"] == "1231226"
    empty = text[: text.index("<return>")] + text[text.rindex("</return>") + len("</return>") :]
    assert mapping.items(read_sample(empty)) == []  # no packets: no items, not one empty item


def test_the_maintenance_sms_reaches_a_driver_written_in_local_format_with_the_country_code() -> (
    None
):
    """`(11) 98765-4321` went to Zenvia as `11987654321`, without Brazil's 55."""
    context = {
        **CONTEXTS["sms-maintenance-due.yaml"],
        "driver": {**DRIVER, "phone": "(11) 98765-4321"},
    }
    request = load("sms-maintenance-due.yaml").build_request(context, secrets=SECRETS)
    assert request.body["to"] == "5511987654321"


def test_engine_hours_in_traccars_milliseconds_and_samsaras_seconds_are_hours() -> None:
    """Traccar's `hours` attribute counts milliseconds; Samsara's `obdEngineSeconds` seconds."""
    forward = sample("traccar_position_forward.json")
    forward["position"]["attributes"]["hours"] = 20885760000
    mapping = load("traccar-position.yaml").bind({})
    assert mapping.apply(forward).document["attributes"]["engine_hours"] == 5801.6
    api = load("traccar-api-positions.yaml").bind({})
    [fix] = (api.apply(item).document for item in api.items([forward["position"]]))
    assert fix["attributes"]["engine_hours"] == 5801.6
    del forward["position"]["attributes"]["hours"]
    assert "engine_hours" not in mapping.apply(forward).document["attributes"]

    feed = load("samsara-vehicle-stats-feed.yaml").bind({})
    page = {
        "data": [
            {
                "id": "1",
                "obdEngineSeconds": [
                    {"time": "2026-11-20T13:45:02Z", "value": 20885724},
                    {"time": "2026-11-20T13:45:32Z", "value": 20885760},
                ],
            }
        ]
    }
    [vehicle] = (feed.apply(item).document for item in feed.items(page))
    assert vehicle["attributes"]["engine_hours"] == 5801.6


def test_traccar_positions_keep_the_devices_alarm() -> None:
    """Traccar marks a position with the alarm the device raised (sos, powerCut, ...)."""
    forward = sample("traccar_position_forward.json")
    forward["position"]["attributes"]["alarm"] = "sos"
    mapping = load("traccar-position.yaml").bind({})
    assert mapping.apply(forward).document["attributes"]["alarm"] == "sos"
    api = load("traccar-api-positions.yaml").bind({})
    [fix] = (api.apply(item).document for item in api.items([forward["position"]]))
    assert fix["attributes"]["alarm"] == "sos"


def test_samsara_vehicle_stats_feed_announces_a_position_only_when_the_position_moved() -> None:
    """A vehicle listed with its odometer only (no `gps` list, or an empty one) writes no
    position: its write (the odometer changed) must not announce vehicle.position; a point
    does, on a new vehicle or one whose last position it moves."""
    mapping = load("samsara-vehicle-stats-feed.yaml")
    odometer = {"obdOdometerMeters": [{"time": "2026-11-20T13:45:00Z", "value": 151476930}]}
    for gps in ({}, {"gps": []}, {"gps": None}):
        vehicle = {"id": "281474982859091", "name": "Caminhao 12", **odometer, **gps}
        result = mapping.apply(vehicle)
        assert "last_position" not in result.document
        [emit] = result.events
        assert not emit.announced(False, [Change("odometer_km", 1.0, 2.0)], result.document)
        assert not emit.announced(True, [], result.document)
    point = {"time": "2026-11-20T13:45:32Z", "latitude": 0.0, "longitude": -46.6}
    located = mapping.apply({"id": "281474982859091", "gps": [point]})
    [emit] = located.events
    assert emit.announced(True, [], located.document)
    assert emit.announced(False, [Change("last_position.lat", 0.1, 0.0)], located.document)


def test_mapping_test_shows_a_partners_test_call_as_the_probe_answer(tmp_path: Path) -> None:
    from gateway.mapping.files import test_file

    check = tmp_path / "motive_test_request.json"
    check.write_text('{"action":"test"}')
    result = test_file(
        MAPPINGS / "motive-vehicle-location.yaml",
        check,
        params=PARAMS["motive-vehicle-location.yaml"],
    )
    assert result == {
        "name": "motive-vehicle-location",
        "direction": "inbound",
        "probe": {"ok": True},
    }


def traccar_event(name: str) -> dict[str, Any]:
    mapping = load("traccar-event.yaml").bind({})
    result = mapping.apply(sample(name))
    return {
        "document": result.document,
        "events": list(result.event_types),
        "data": result.event_data,
    }


def test_traccar_ignition_maintenance_and_driver_events_with_the_devices_meters() -> None:
    """The event types of Traccar's model a fleet acts on, each forwarded with its fix: the
    device's engine hours (milliseconds) and ignition go to the vehicle with the odometer."""
    off = traccar_event("traccar_event_forward_ignition_off.json")
    assert off["events"] == ["vehicle.ignition.off"]
    assert off["document"]["odometer_km"] == 100122.5
    assert off["document"]["attributes"]["engine_hours"] == 13.2  # 47,520,000 ms
    assert off["document"]["attributes"]["ignition"] is False  # false is a value, kept
    due = traccar_event("traccar_event_forward_maintenance.json")
    assert due["events"] == ["vehicle.maintenance.reminder"]
    assert due["data"]["maintenance"] == {
        "name": "Troca de oleo",
        "counts": "odometer",
        "start_km": 0.0,
        "period_km": 10000.0,  # 10,000,000 m
    }
    hours = sample("traccar_event_forward_maintenance.json")
    hours["maintenance"].update(type="hours", start=0.0, period=900_000_000.0)
    data = load("traccar-event.yaml").bind({}).apply(hours).event_data
    assert data["maintenance"] == {
        "name": "Troca de oleo",
        "counts": "hours",
        "start_hours": 0.0,
        "period_hours": 250.0,
    }
    driver = traccar_event("traccar_event_forward_driver_changed.json")
    assert driver["events"] == ["vehicle.driver.identified"]
    assert driver["data"]["driver_unique_id"] == "01A2B3C4D5E6"
    assert driver["data"]["driver"] == {"attributes": {"traccar_driver_unique_id": "01A2B3C4D5E6"}}
    removed = sample("traccar_event_forward_driver_changed.json")
    for empty in ("", None):  # a decoder's empty id, or none at all
        removed["event"]["attributes"]["driverUniqueId"] = empty
        result = load("traccar-event.yaml").bind({}).apply(removed)
        assert result.event_types == ("vehicle.driver.unidentified",)
        assert "driver" not in result.event_data and "driver_unique_id" not in result.event_data
    assert driver["document"]["attributes"]["traccar_driver_unique_id"] == "01A2B3C4D5E6"
    assert "current_driver" not in driver["document"]  # Traccar's id is not our driver's id


def test_geotab_statusdata_takes_the_meters_the_trigger_chose_in_either_reference_form() -> None:
    """A StatusData page carries every diagnostic; only the readings of the odometer (metres)
    and engine hours (seconds) the trigger chose are items (its params read by `items: {from,
    when}`), the diagnostic written as {"id": ...} or as its id alone."""
    page = sample("geotab_getfeed_statusdata.json")
    mapping = load("geotab-statusdata.yaml")
    adjusted = mapping.bind({})
    items = adjusted.items(page)
    assert [item["id"] for item in items] == ["b21568D7", "b21568D9"]
    documents = [adjusted.apply(item).document for item in items]
    assert documents[0]["odometer_km"] == 99621.3 and "engine_hours" not in documents[0]
    assert documents[1]["attributes"]["engine_hours"] == 4688.8  # 16,879,647.575 s
    assert "odometer_km" not in documents[1]
    engine = mapping.bind(
        {
            "odometer_diagnostic": "DiagnosticOdometerId",
            "engine_hours_diagnostic": "DiagnosticEngineHoursId",
        }
    )
    items = engine.items(page)
    assert [item["id"] for item in items] == ["b21568D6", "b21568DA"]
    documents = [engine.apply(item).document for item in items]
    assert documents[0]["odometer_km"] == 99620.7
    assert documents[1]["attributes"]["engine_hours"] == 4688.6
    assert all(d["attributes"]["tracker_id"] == "b2A" for d in documents)
    [reading] = mapping.bind({}).items({"result": [page["result"]["data"][1]]})  # Get's answer
    assert reading["id"] == "b21568D7"
    assert engine.items({"result": [page["result"]["data"][1]]}) == []  # the other source


def test_geotab_faults_exceptions_and_driver_changes_are_events_of_the_vehicle() -> None:
    faults = mapped("geotab-faultdata.yaml")
    assert [r["events"] for r in faults] == [("vehicle.fault.opened",), ("vehicle.fault.closed",)]
    assert faults[0]["document"] == {"attributes": {"tracker_id": "b6"}}  # the fault is detail
    assert faults[0]["event_data"]["fault"] == {
        "code": "DiagnosticDeviceHasBeenUnpluggedId",
        "state": "Active",
        "controller": "ControllerGoDeviceId",
        "failure_mode": "NoFailureModeId",
        "count": 1,
        "malfunction_lamp": False,
        "amber_warning_lamp": False,
        "red_stop_lamp": False,
        "protect_warning_lamp": False,
    }
    exceptions = mapped("geotab-exceptionevent.yaml")
    assert [r["events"] for r in exceptions] == [("vehicle.alert",), ("vehicle.speeding",), ()]
    cornering, speeding, _invalidated = (r["event_data"] for r in exceptions)
    assert cornering["duration_s"] == 0.3 and cornering["driver"] == {"geotab_id": "b3A"}
    assert cornering["alert"]["condition"] == "RuleHarshCorneringId"
    assert (speeding["speed_kmh"], speeding["speed_limit_kmh"]) == (97, 80)
    assert speeding["duration_s"] == 75.5 and "driver" not in speeding  # UnknownDriverId
    changes = mapped("geotab-driverchange.yaml")
    assert [r["events"] for r in changes] == [
        ("vehicle.driver.identified",),
        ("vehicle.driver.unidentified",),  # UnknownDriverId: the identification ended
    ]
    assert changes[0]["document"]["attributes"]["geotab_driver_id"] == "b3A"
    assert changes[1]["document"]["attributes"]["geotab_driver_id"] == "UnknownDriverId"
    assert "driver" not in changes[1]["event_data"]  # it names nobody to assign
    reset = {**sample("geotab_getfeed_driverchange.json")["result"]["data"][0]}
    reset["type"] = "ResetDriver"  # "System-detected Driver reset (to UnknownDriver)"
    result = load("geotab-driverchange.yaml").bind({}).apply(reset)
    assert result.event_types == ("vehicle.driver.unidentified",)


def test_samsara_engine_fault_documented_example_and_a_heavy_vehicles_j1939_fault() -> None:
    """Samsara's documented EngineFaultOn example, verbatim (developers.samsara.com/docs/
    enginefaulton); EngineFaultOff has the same shape."""
    mapping = load("samsara-engine-fault.yaml").bind({})
    documented = sample("samsara_engine_fault_on.json")
    result = mapping.apply(documented)
    assert result.event_types == ("vehicle.fault.opened",)
    # "6SAM123" is no Brazilian plate: the vehicle is the one with Samsara's id
    assert result.key == {"attributes.samsara_vehicle_id": "494123"}
    assert result.event_data["fault"]["code"] == "Short Code"
    assert result.event_data["fault"]["samsara"] == documented["data"]["fault"]
    assert mapping.apply({**documented, "eventType": "EngineFaultOff"}).event_types == (
        "vehicle.fault.closed",
    )
    heavy = json.loads(json.dumps(documented))
    del heavy["data"]["fault"]["passenger"], heavy["data"]["fault"]["oem"]
    fault = mapping.apply(heavy).event_data["fault"]
    assert (fault["code"], fault["description"]) == ("SPN 1 FMI 1", "Description")
    assert mapping.probe({"eventType": "Ping", "event": {"text": "Ping"}}) == {"ok": True}


def test_the_partners_page_lists_every_shipped_mapping() -> None:
    page = (ROOT / "docs" / "partners.md").read_text()
    index = page[page.index("## Shipped mappings") :]
    index = index[: index.index("\n## ")]
    listed = set(re.findall(r"`([a-z0-9-]+)`", index))
    assert {path.stem for path in MAPPINGS.glob("*.yaml")} <= listed


def test_samsara_speeding_reads_the_vehicle_where_each_documented_example_puts_it() -> None:
    """Samsara documents SpeedingEventStarted with data.vehicle and SevereSpeedingStarted with
    data.data.vehicle (both examples verbatim): the same vehicle and event either way."""
    mapping = load("samsara-speeding.yaml").bind({})
    any_severity = mapping.apply(sample("samsara_speeding_event_started.json"))
    severe = mapping.apply(sample("samsara_severe_speeding_started.json"))
    for result in (any_severity, severe):
        assert result.event_types == ("vehicle.speeding",)
        assert result.key == {"attributes.samsara_vehicle_id": "494123"}
        assert result.document["vin"] == "1GBJ6P1B2HV112765"
        assert result.event_data["severity"] == "Severe"
        assert result.event_data["occurred_at"] == "2019-06-13T19:08:25Z"
    light = sample("samsara_speeding_event_started.json")
    light["data"]["severityLevel"] = "Light"
    light["eventType"] = "SpeedingEventEnded"
    ended = mapping.apply(light)
    assert ended.event_types == ("vehicle.speeding.ended",)
    assert ended.event_data["severity"] == "Light"
