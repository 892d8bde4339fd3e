"""What a mapping computes does not hang on how a value happens to be represented: a param's
`true` is not its `1` (each set of values compiles its own plan), `{round: n}` and
`format_number` round the number as it is written, text matches in either Unicode form and is
written composed (NFC), a local time in a DST gap is a time that exists, and `%s` is Unix time
in every zone. Everything goes through HTTP: the dry run, and triggers that write."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import auth
from tests.triggers_support import Client, create_trigger, hook, upload_mapping

HEAD = "direction: inbound\nentity_type: vehicle\nkey: [plate]\n"


async def _dry_run(client: Client, fields: str, payload: dict[str, Any]) -> dict[str, Any]:
    mapping = f"name: m\n{HEAD}fields:\n  plate: plate\n{fields}"
    response = await client.post(
        "/api/v1/mappings/test",
        json={"mapping": mapping, "payload": {"plate": "ABC1D23", **payload}},
        headers=auth(),
    )
    assert response.status == 200, await response.text()
    (result,) = (await response.json())["results"]
    return dict(result["document"])


async def _vehicle(client: Client, plate: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/entities/vehicle/{plate}", headers=auth())
    assert response.status == 200, await response.text()
    return dict(await response.json())


# -- params: a set of values is its JSON, types kept -----------------------------------------

FLAG = f"""name: flagged
{HEAD}params:
  flag: {{default: false}}
fields:
  plate: plate
  model:
    when: {{param: flag, equals: true}}
    then: {{value: flag-is-true}}
    else: {{value: flag-is-not-true}}
  attributes.flag: {{param: flag}}
"""


@pytest.mark.parametrize("first", [True, 1])
async def test_triggers_with_params_true_and_1_write_what_each_one_says(
    client: Client, first: bool | int
) -> None:
    await upload_mapping(client, FLAG)
    # In a list, not a dict: a dict would take True and 1 for one key, as the cache did.
    sends = [(True, "ABC1D23"), (1, "XYZ9A87")]
    for i, (value, plate) in enumerate(sends if first is True else sends[::-1]):
        trigger = await create_trigger(
            client, name=f"flag-{i}", mapping="flagged", params={"flag": value}
        )
        status, answer = await hook(client, trigger, {"plate": plate})
        assert status == 201, answer
    flagged = await _vehicle(client, "ABC1D23")
    assert flagged["model"] == "flag-is-true" and flagged["attributes"]["flag"] is True
    one = await _vehicle(client, "XYZ9A87")
    assert one["model"] == "flag-is-not-true" and type(one["attributes"]["flag"]) is int


async def test_the_dry_run_binds_2_and_2_0_apart(client: Client) -> None:
    await upload_mapping(client, FLAG.replace("flagged", "numbered"))
    written = []
    for value in (2, 2.0, True, 1):
        response = await client.post(
            "/api/v1/mappings/test",
            json={"name": "numbered", "payload": {"plate": "ABC1D23"}, "params": {"flag": value}},
            headers=auth(),
        )
        assert response.status == 200, await response.text()
        document = (await response.json())["results"][0]["document"]
        written.append((document["attributes"]["flag"], document["model"]))
    assert [(type(v), v, model) for v, model in written] == [
        (int, 2, "flag-is-not-true"),
        (float, 2.0, "flag-is-not-true"),
        (bool, True, "flag-is-true"),
        (int, 1, "flag-is-not-true"),
    ]


# -- rounding: the decimal number as written -------------------------------------------------

ROUNDED = """  attributes.r2: {from: v, transforms: [{round: 2}]}
  attributes.r0: {from: v, transforms: [{round: 0}]}
  attributes.parsed: {from: t, transforms: [parse_number, {round: 2}]}
  attributes.text: {from: v, transforms: [{format_number: {decimals: 2}}]}
"""


@pytest.mark.parametrize(
    ("value", "r2", "r0", "text"),
    [
        (1.005, 1.01, 1, "1,01"),
        (0.285, 0.29, 0, "0,29"),
        (1.015, 1.02, 1, "1,02"),
        (-1.005, -1.01, -1, "-1,01"),
        (0.125, 0.13, 0, "0,13"),
        (2.675, 2.68, 3, "2,68"),
        (8.345, 8.35, 8, "8,35"),
        (152340.555, 152340.56, 152341, "152.340,56"),
        (-2.5, -2.5, -3, "-2,50"),
        (-0.001, 0.0, 0, "0,00"),
    ],
)
async def test_round_and_format_number_round_halves_of_the_written_number_away_from_zero(
    client: Client, value: float, r2: float, r0: int, text: str
) -> None:
    written = repr(value).replace(".", ",")
    document = await _dry_run(client, ROUNDED, {"v": value, "t": written})
    assert document["attributes"] == {"r2": r2, "r0": r0, "parsed": r2, "text": text}
    assert type(document["attributes"]["r0"]) is int


# -- Unicode: either form matches, the composed one is written -------------------------------

NFC_NAO, NFD_NAO = "N\u00c3O", "NA\u0303O"
NFC_SAO_PAULO, NFD_SAO_PAULO = "S\u00e3o Paulo", "Sa\u0303o Paulo"
NFC_CONCLUIDO, NFD_CONCLUIDO = "conclu\u00eddo", "conclui\u0301do"


async def test_decomposed_text_matches_boolean_words_map_keys_conditions_and_separators(
    client: Client,
) -> None:
    fields = (
        "  attributes.active: {from: b, transforms: [boolean]}\n"
        "  attributes.state:\n"
        "    from: city\n"
        '    transforms: [{map: {values: {"São Paulo": SP, "Rio de Janeiro": RJ}, '
        "default: unknown}}]\n"
        "  attributes.done:\n"
        "    when: {from: status, in: [concluído, encerrado]}\n"
        "    then: {value: true}\n"
        "    else: {value: false}\n"
        "  attributes.cut: {from: city, transforms: [{truncate: 3}]}\n"
        "  attributes.before: {from: city, transforms: [{split: {separator: ã, index: 0}}]}\n"
    )
    for b, city, status in [
        (NFC_NAO, NFC_SAO_PAULO, NFC_CONCLUIDO),
        (NFD_NAO, NFD_SAO_PAULO, NFD_CONCLUIDO),
    ]:
        document = await _dry_run(client, fields, {"b": b, "city": city, "status": status})
        assert document["attributes"] == {
            "active": False,
            "state": "SP",
            "done": True,
            "cut": "S\u00e3o",
            "before": "S",
        }, b


async def test_a_map_key_written_decomposed_in_the_file_matches_composed_text(
    client: Client,
) -> None:
    values = f'{{"{NFD_SAO_PAULO}": SP}}'
    fields = f"  attributes.state: {{from: city, transforms: [{{map: {{values: {values}}}}}]}}\n"
    document = await _dry_run(client, fields, {"city": NFC_SAO_PAULO})
    assert document["attributes"] == {"state": "SP"}


async def test_map_keys_that_are_one_text_in_two_unicode_forms_are_refused_at_upload(
    client: Client,
) -> None:
    mapping = (
        f"name: twice\n{HEAD}fields:\n  plate: plate\n  attributes.state:\n    from: city\n"
        f'    transforms: [{{map: {{values: {{"São Paulo": SP, "{NFD_SAO_PAULO}": XX}}}}}}]\n'
    )
    response = await client.post(
        "/api/v1/mappings",
        data=mapping.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert response.status == 422, await response.text()
    (problem,) = (await response.json())["errors"]
    assert problem["keyword"] == "transform"
    assert problem["pointer"].startswith("/fields/attributes.state/transforms/0/map/values/")
    assert "two Unicode forms" in problem["message"]


async def test_a_trigger_writes_text_composed_whichever_form_it_came_in(
    client: Client,
) -> None:
    await upload_mapping(
        client,
        f"name: named\n{HEAD}fields:\n  plate: plate\n  model: model\n"
        "  attributes.places: places\n",
    )
    trigger = await create_trigger(client, mapping="named")
    sent = {"plate": "ABC1D23", "model": "Sa\u0303o", "places": {"cidade": [NFD_SAO_PAULO]}}
    status, answer = await hook(client, trigger, sent)
    assert status == 201, answer
    stored = await _vehicle(client, "ABC1D23")
    assert stored["model"] == "S\u00e3o"
    assert stored["attributes"]["places"] == {"cidade": ["S\u00e3o Paulo"]}


# -- local times: DST gaps and overlaps, %s ---------------------------------------------------

TIMES = """  attributes.utc: {from: t, transforms: [{datetime: {input_tz: America/Sao_Paulo}}]}
  attributes.local:
    from: t
    transforms: [{datetime: {input_tz: America/Sao_Paulo, output_tz: America/Sao_Paulo}}]
  attributes.clock:
    from: f
    transforms: [{datetime: {parse: "%d/%m/%Y %H:%M", input_tz: America/Sao_Paulo,
                             output_tz: America/Sao_Paulo, format: "%H:%M"}}]
"""


@pytest.mark.parametrize(
    ("sent", "utc", "local"),
    [
        # Clocks went from 00:00 to 01:00 on 2018-11-04: 00:30 never happened there.
        ("2018-11-04T00:30", "2018-11-04T03:30:00Z", "2018-11-04T01:30:00-02:00"),
        ("2018-11-04T01:30", "2018-11-04T03:30:00Z", "2018-11-04T01:30:00-02:00"),
        ("2018-11-03T23:30", "2018-11-04T02:30:00Z", "2018-11-03T23:30:00-03:00"),
        # Clocks went from 00:00 back to 23:00 on 2019-02-17: 23:30 came twice.
        ("2019-02-16T23:30", "2019-02-17T01:30:00Z", "2019-02-16T23:30:00-02:00"),
    ],
)
async def test_a_local_time_in_a_dst_gap_is_read_past_the_jump_and_an_overlap_as_the_earlier(
    client: Client, sent: str, utc: str, local: str
) -> None:
    day, clock = sent.split("T")
    year, month, mday = day.split("-")
    document = await _dry_run(client, TIMES, {"t": sent, "f": f"{mday}/{month}/{year} {clock}"})
    assert document["attributes"] == {"utc": utc, "local": local, "clock": local[11:16]}


async def test_percent_s_is_unix_time_in_any_output_zone(client: Client) -> None:
    fields = "".join(
        f"  attributes.{name}: {{from: t, transforms: [{{datetime: {{{options}}}}}]}}\n"
        for name, options in [
            ("unix", "format: unix"),
            ("sp", 'format: "%s", output_tz: America/Sao_Paulo'),
            ("tokyo", 'format: "%s", output_tz: Asia/Tokyo'),
            ("utc", 'format: "%s"'),
            ("both", 'format: "%s %%s %H:%M", output_tz: America/Sao_Paulo'),
        ]
    )
    document = await _dry_run(client, fields, {"t": "2026-11-20T13:45:22Z"})
    assert document["attributes"] == {
        "unix": 1795182322,
        "sp": "1795182322",
        "tokyo": "1795182322",
        "utc": "1795182322",
        "both": "1795182322 %s 10:45",
    }
