"""Every flow in flows/ and every template in flows/templates/ compiles and renders its sample
(the four seed scenarios, run end to end in phase B)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.flows.compiler import load_flow
from gateway.flows.context import cooldown_key
from gateway.notify.templates import checked_template
from gateway.notify.templating import compile_template

FLOWS = Path(__file__).resolve().parents[1] / "flows"


@pytest.mark.parametrize("path", sorted(FLOWS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_flow_compiles(path: Path) -> None:
    flow = load_flow(path.read_bytes(), filename=path.name)
    assert flow.name == path.stem


@pytest.mark.parametrize("path", sorted((FLOWS / "templates").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_template_renders_its_sample_in_both_languages(path: Path) -> None:
    doc = checked_template(yaml.safe_load(path.read_text()))
    template = compile_template(doc)
    assert template.name == path.stem and set(template.locales) == {"pt-BR", "en"}
    for locale in ("pt-BR", "en"):
        rendered = template.render(doc["sample"], locale)
        assert rendered.undefined == [] and all(rendered.parts.values())


def test_the_shipped_flows_name_only_shipped_templates() -> None:
    templates = {p.stem for p in (FLOWS / "templates").glob("*.yaml")}
    named = {
        r.name
        for path in FLOWS.glob("*.yaml")
        for r in load_flow(path.read_bytes()).references
        if r.kind == "template"
    }
    assert named == templates


def test_scenario_texts_match_the_partner_samples() -> None:
    sms = compile_template(
        checked_template(yaml.safe_load((FLOWS / "templates/maintenance-due-sms.yaml").read_text()))
    )
    context = {"entity": {"plate": "ABC1D23"}, "event": {"detail": {"due_km": 10000}}}
    # tests/data/partner_payloads/sms_request.json
    assert sms.render(context, "pt-BR").parts["text"] == (
        "Rabbot: ABC1D23 atingiu 10.000 km. Agende a revisao."
    )
    push = compile_template(
        checked_template(yaml.safe_load((FLOWS / "templates/geofence-exit.yaml").read_text()))
    )
    context = {
        "entity": {"plate": "ABC1D23"},
        "event": {
            "occurred_at": "2026-11-20T13:45:13Z",
            "detail": {"geofence": {"name": "Garagem SP"}},
        },
        "now": "2026-11-20T13:45:20+00:00",  # the run's start: the exit is today's
    }
    # tests/data/partner_payloads/fcm_v1_message.json, with its accents
    assert push.render(context, "pt-BR").parts == {
        "title": "Veículo fora da área autorizada",
        "body": "ABC1D23 saiu de Garagem SP às 10:45",
    }


def test_the_shipped_geofence_push_says_the_day_of_an_exit_of_another_day() -> None:
    """A late upload (a tracker back after two days out of coverage) is pushed as it comes:
    "às 01:07" alone read on the 7th names a time of that day that never happened. The day is
    São Paulo's, as the hour: 02:30Z on the 21st is still the 20th there."""
    push = compile_template(
        checked_template(yaml.safe_load((FLOWS / "templates/geofence-exit.yaml").read_text()))
    )
    event = {"occurred_at": "2026-12-05T04:07:00Z", "detail": {"geofence": {"name": "Garagem SP"}}}
    late = {"entity": {"plate": "ABC1D23"}, "event": event, "now": "2026-12-07T13:00:00+00:00"}
    assert push.render(late, "pt-BR").parts["body"] == (
        "ABC1D23 saiu de Garagem SP em 05/12 às 01:07"
    )
    assert push.render(late, "en").parts["body"] == "ABC1D23 left Garagem SP on Dec 05 at 01:07"
    entered = {**event, "type": "vehicle.geofence.entered", "occurred_at": "2026-11-21T02:30:00Z"}
    night = {**late, "event": entered, "now": "2026-11-21T02:40:00+00:00"}
    assert push.render(night, "pt-BR").parts["body"] == ("ABC1D23 entrou em Garagem SP às 23:30")
    assert push.render({**night, "now": "2026-11-21T03:10:00Z"}, "en").parts["body"] == (
        "ABC1D23 entered Garagem SP on Nov 20 at 23:30"
    )
    without_now = {k: v for k, v in late.items() if k != "now"}  # a step's own `context`
    assert push.render(without_now, "pt-BR").parts["body"].endswith("em 05/12 às 01:07")


@pytest.mark.parametrize("name", ["maintenance-due-sms", "maintenance-due-push"])
def test_a_due_by_time_alone_names_its_plan_not_a_km(name: str) -> None:
    """A plan by time alone (an annual inspection) announces `due` with `due_km` null: the
    scenario's texts name the plan instead of saying the vehicle reached " km"."""
    template = compile_template(
        checked_template(yaml.safe_load((FLOWS / f"templates/{name}.yaml").read_text()))
    )
    detail = {"due_km": None, "plan": {"id": "p1", "name": "Vistoria anual"}, "reason": "time"}
    context = {"entity": {"plate": "ABC1D23"}, "event": {"detail": detail}}
    texts = {
        locale: " ".join(template.render(context, locale).parts.values())
        for locale in ("pt-BR", "en")
    }
    assert all("Vistoria anual" in t and " km" not in t for t in texts.values()), texts


def test_the_due_by_time_alone_email_names_its_plan_not_a_km() -> None:
    template = compile_template(
        checked_template(
            yaml.safe_load((FLOWS / "templates/maintenance-due-email.yaml").read_text())
        )
    )
    detail = {"due_km": None, "plan": {"id": "p1", "name": "Vistoria anual"}, "reason": "time"}
    context = {"entity": {"plate": "ABC1D23", "odometer_km": 5}, "event": {"detail": detail}}
    for locale in ("pt-BR", "en"):
        parts = template.render(context, locale).parts
        assert "Vistoria anual" in parts["subject"] and " km" not in parts["subject"], parts
        assert "atingiu" not in parts["text"] and "reached" not in parts["text"], parts


def test_the_service_alerts_cooldown_tells_plans_and_years_apart() -> None:
    """Two plans by time alone (an annual inspection, the yearly licensing) due the same
    month for one vehicle, and one of them a year later: each alert has its own cooldown
    key (before, all three were `maintenance-due:ABC1D23:null`, the later ones silenced)."""
    flow = load_flow((FLOWS / "maintenance-due-alert.yaml").read_bytes())

    def key(plan: str, due_at: str) -> str | None:
        detail = {"plan": {"id": plan}, "due_km": None, "due_at": due_at, "reason": "time"}
        context = {"entity": {"plate": "ABC1D23"}, "event": {"detail": detail}}
        spec = flow.steps[0].notify
        assert spec is not None and spec.cooldown_key is not None
        return cooldown_key(spec.cooldown_key, context)

    keys = {key("p1", "2027-12-01"), key("p2", "2027-12-10"), key("p1", "2028-12-01")}
    assert len(keys) == 3 and None not in keys
