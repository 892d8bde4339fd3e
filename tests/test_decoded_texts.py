"""A text that `from_json()`/`from_xml()` read is parsed once per payload, whatever the number
of items that read it: a SOAP answer listing 500 points in one escaped XML `<return>` is
one parse, at a trigger and at a schedule alike, with every item mapped as before and each
item still charged the document's size (an item over its work still fails)."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

import pytest

from gateway.formats import load_json_text, parse_xml
from gateway.mapping import DecodedTexts, load_mapping
from gateway.mapping import expressions as mapping_expressions
from tests.partner_double import Partner, create_action, create_partner, create_vehicle, partner
from tests.schedule_support import runner, runs
from tests.support import auth
from tests.triggers_support import (
    Client,
    bearer,
    create_position_trigger,
    create_trigger,
    upload_mapping,
    vehicle_track,
)

__all__ = ["partner"]  # the fixture

POINTS = """
name: soap-points
direction: inbound
target: positions
items: {from: Envelope.Body.obterPontosResponse, each: from_xml(return).pacote.ponto, as: p}
fields:
  tracker_id: from_xml(return).pacote."@veiculo"
  time: {from: p.dataHora, transforms: [{datetime: {parse: iso8601}}]}
  lat: {from: p.lat, transforms: [number]}
  lon: {from: p.lon, transforms: [number]}
"""
START = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)


def _envelope(count: int, inner: str | None = None) -> bytes:
    """A SOAP answer whose one `<return>` holds `count` points as escaped XML."""
    points = "".join(
        f"<ponto><dataHora>{(START + timedelta(seconds=i)).isoformat()}</dataHora>"
        f"<lat>-23.{i:05d}</lat><lon>-46.{i:05d}</lon></ponto>"
        for i in range(count)
    )
    text = inner if inner is not None else f'<pacote veiculo="1231226">{points}</pacote>'
    return (
        '<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body>'
        f'<ns2:obterPontosResponse xmlns:ns2="urn:x"><return>{escape(text)}</return>'
        "</ns2:obterPontosResponse></S:Body></S:Envelope>"
    ).encode()


def _count(monkeypatch: pytest.MonkeyPatch, name: str, parse: Callable[[str], Any]) -> list[int]:
    """The length of each text the mapping functions parse (a spy on the parser they call)."""
    parsed: list[int] = []

    def counting(text: str) -> Any:
        parsed.append(len(text))
        return parse(text)

    monkeypatch.setattr(mapping_expressions, name, counting)
    return parsed


async def _points_trigger(client: Client) -> dict[str, Any]:
    await create_vehicle(client, "ABC1D23", attributes={"tracker_id": "1231226"})
    await upload_mapping(client, POINTS)
    return await create_position_trigger(client, mapping="soap-points", format="xml")


async def test_one_escaped_xml_text_is_parsed_once_for_its_500_points(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = await _points_trigger(client)
    parsed = _count(monkeypatch, "parse_xml", parse_xml)
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=_envelope(500),
        headers={**bearer(trigger), "Content-Type": "text/xml", "Accept": "application/json"},
    )
    body = await response.json()
    assert response.status == 200, body
    assert body["summary"] == {"items": 500, "stored": 500, "duplicates": 0, "failed": 0}
    assert len(parsed) == 1  # the `each` of the items, then 500 items reading the same text
    track = (await vehicle_track(client, query="?limit=200"))["items"]
    assert [(f["lat"], f["lon"]) for f in track[:2]] == [(-23.0, -46.0), (-23.00001, -46.00001)]
    assert track[0]["time"] == "2026-11-20T13:00:00Z"


async def test_a_text_that_is_not_xml_fails_every_item_that_reads_it_after_one_parse(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `each` finds the points in one text; every item reads another one, broken."""
    await create_vehicle(client, "ABC1D23", attributes={"tracker_id": "1231226"})
    await upload_mapping(
        client,
        POINTS.replace('from_xml(return).pacote."@veiculo"', 'from_xml(broken).pacote."@veiculo"'),
    )
    trigger = await create_position_trigger(client, mapping="soap-points", format="xml")
    envelope = _envelope(3).replace(b"<return>", b"<broken>&lt;pacote&gt;</broken><return>")
    parsed = _count(monkeypatch, "parse_xml", parse_xml)
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=envelope,
        headers={**bearer(trigger), "Content-Type": "text/xml", "Accept": "application/json"},
    )
    body = await response.json()
    assert response.status == 207, body
    assert body["summary"]["failed"] == 3
    for result in body["results"]:
        (error,) = result["problem"]["errors"]
        assert (error["keyword"], error["target"]) == ("decode", "tracker_id")
        assert error["message"] == "the text is not XML: line 1, column 9: no element found"
    assert len(parsed) == 2  # the points' text, and the broken one once for all three items


TWO_DOCUMENTS = """
name: two-documents-each
direction: inbound
entity_type: vehicle
key: [plate]
items: {from: "[@]", each: placas, as: placa}
fields:
  plate: placa
  attributes.a: length(from_json(a))
  attributes.b: length(from_json(b))
"""


async def test_every_item_is_charged_the_documents_it_reads_though_each_is_parsed_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two texts of 60,000 values each are more than one item's work (100,000): parsed once
    for the payload, each of its items is refused as it would be on its own."""
    await upload_mapping(client, TWO_DOCUMENTS)
    trigger = await create_trigger(client, mapping="two-documents-each")
    parsed = _count(monkeypatch, "load_json_text", load_json_text)
    one = "[" + ",".join(["0"] * 60_000) + "]"
    plates = ["ABC1D23", "BRA2E19", "XYZ9A87"]
    response = await client.post(
        f"/hooks/{trigger['id']}",
        json={"placas": plates, "a": one, "b": one.replace("0", "1")},
        headers=bearer(trigger),
    )
    body = await response.json()
    assert response.status == 207, body
    assert body["summary"]["failed"] == 3
    for result in body["results"]:
        (error,) = result["problem"]["errors"]
        assert (error["keyword"], error["target"]) == ("limit", "attributes.b")
        assert "the work to evaluate this item exceeds the limit of 100,000" in error["message"]
    assert len(parsed) == 2
    response = await client.post(
        f"/hooks/{trigger['id']}",
        json={"placas": plates, "a": one, "b": "[1]"},
        headers=bearer(trigger),
    )
    body = await response.json()
    assert response.status == 200, body
    assert body["summary"]["created"] == 3


async def test_a_schedule_parses_the_text_of_its_page_once_for_all_its_points(
    client: Client, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_vehicle(client, "ABC1D23", attributes={"tracker_id": "1231226"})
    await upload_mapping(client, POINTS)
    feed = await create_partner(client, partner.url, name="Pontos", timeout_seconds=1)
    action = await create_action(
        client, feed["id"], name="pontos", mode="proxy", method="GET", path="/pontos"
    )
    partner.respond_with(raw=_envelope(500), headers={"Content-Type": "text/xml"})
    response = await client.post(
        "/api/v1/schedules",
        headers=auth(),
        json={
            "name": "pontos",
            "action_id": action["id"],
            "every": "1m",
            "target": {"type": "positions", "mapping": "soap-points"},
        },
    )
    schedule = await response.json()
    assert response.status == 201, schedule
    parsed = _count(monkeypatch, "parse_xml", parse_xml)
    assert await runner(client).run_until_idle() == {"ok": 1}
    (run,) = await runs(client, schedule["id"])
    assert (run["items_read"], run["written"], run["rejected"]) == (500, 500, 0)
    assert len(parsed) == 1
    track = (await vehicle_track(client, query="?limit=1"))["items"]
    assert [(f["time"], f["lat"]) for f in track] == [("2026-11-20T13:00:00Z", -23.0)]


def test_a_mapping_given_one_payload_s_texts_parses_each_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The mapping layer on its own: without DecodedTexts each item parses the text again
    (an item's own, as a lone item's mapping does); with them, once for the payload."""
    mapping = load_mapping(POINTS)
    payload = parse_xml(_envelope(50))
    parsed = _count(monkeypatch, "parse_xml", parse_xml)
    texts = DecodedTexts()
    shared = [mapping.apply(item, texts=texts) for item in mapping.items(payload, texts=texts)]
    assert len(parsed) == 1
    alone = [mapping.apply(item) for item in mapping.items(payload)]
    assert len(parsed) == 1 + 1 + 50
    assert [m.document for m in shared] == [m.document for m in alone]
    assert len(shared) == 50 and shared[-1].document["tracker_id"] == "1231226"


OWN_TEXTS = """
name: own-texts
direction: inbound
entity_type: vehicle
key: [plate]
items: vehicles
fields:
  plate: plate
  attributes.model: from_json(detail).model
  attributes.fleet: from_json(header).fleet
"""


def _own_texts_payload(count: int) -> dict[str, Any]:
    """`count` vehicles, each with a JSON text of its own (~120 values) and one text they
    all share (`header`)."""
    header = json.dumps({"fleet": "Sul", "depots": list(range(20))}, separators=(",", ":"))
    return {
        "vehicles": [
            {
                "plate": f"ABC1D{i % 100:02d}",
                "header": header,
                "detail": json.dumps(
                    {"model": f"m{i}", "parts": [{"p": p} for p in range(60)]},
                    separators=(",", ":"),
                ),
            }
            for i in range(count)
        ]
    }


def test_the_documents_of_texts_each_item_has_for_itself_are_not_all_kept_for_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1,000 items of a 1 MiB body, each with its own JSON text: what the payload's
    DecodedTexts keeps stays bounded (a few documents, not all 1,000, ~13 MB, for as long as
    the batch is written), while the text every item reads is still parsed once."""
    mapping = load_mapping(OWN_TEXTS)
    payload = _own_texts_payload(1_000)
    assert len(json.dumps(payload)) < 1024 * 1024  # within a trigger's default body limit
    parsed = _count(monkeypatch, "load_json_text", load_json_text)
    gc.collect()
    tracemalloc.start()
    try:
        texts = DecodedTexts()
        models = [
            mapping.apply(item, texts=texts).document["attributes"]["model"]
            for item in mapping.items(payload, texts=texts)
        ]
        gc.collect()
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert models[:2] == ["m0", "m1"] and len(models) == 1_000
    assert kept < 4_000_000, f"{kept:,} bytes kept while the batch is written"
    assert len(parsed) == 1 + 1_000  # the shared header once, each item's own text once
