"""What a mapping computes does not hang on how a value happens to be represented: a param's
`true` is not its `1` (each set of values compiles its own plan), `{round: n}` and
`format_number` round the number as it is written, text matches in either Unicode form and is
copied as it was sent (`truncate` and `split` cut it in NFC), a condition's `equals` is JSON
equality at every depth, a local time in a DST gap is a time that exists and one at the ends of
time is read, and `%s` is Unix time in every zone. Everything goes through HTTP: the dry run,
triggers that write, actions that send."""

from __future__ import annotations

import json
import math
from decimal import ROUND_HALF_UP, Decimal
from random import Random
from typing import Any
from urllib.parse import quote

import pytest

from tests.partner_double import Partner, create_action, create_partner, create_vehicle, partner
from tests.support import auth
from tests.triggers_support import Client, create_trigger, hook, upload_mapping

__all__ = ["partner"]  # the fixture

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


def _near_halves(count: int) -> list[float]:
    """Floats whose text ends in 5 one place past the rounding (halves), a unit of the last
    place either side of them, and plain ones: where a float's product with 100 misleads."""
    random = Random(20261205)
    values: list[float] = []
    while len(values) < count:
        text = f"{random.randint(-(10**6), 10**6)}.{random.randint(0, 99):02d}5"
        half = float(text)
        values += [half, math.nextafter(half, math.inf), math.nextafter(half, -math.inf)]
        values.append(random.uniform(-1e9, 1e9))
    return values[:count]


async def test_round_and_format_number_agree_with_decimal_rounding_of_the_text_on_many_values(
    client: Client,
) -> None:
    values = _near_halves(1000)
    fields = (
        "  attributes.r2: {each: vs, item: {from: '@', transforms: [{round: 2}]}}\n"
        "  attributes.r0: {each: vs, item: {from: '@', transforms: [{round: 0}]}}\n"
        "  attributes.text:\n"
        "    each: vs\n"
        "    item: {from: '@', transforms: [{format_number: {decimals: 2, thousands: ''}}]}\n"
    )
    document = await _dry_run(client, fields, {"vs": values})

    def rounded(value: float, places: str) -> Decimal:
        return Decimal(repr(value)).quantize(Decimal(places), rounding=ROUND_HALF_UP)

    assert document["attributes"]["r2"] == [float(rounded(v, "0.01")) + 0.0 for v in values]
    assert document["attributes"]["r0"] == [int(rounded(v, "1")) for v in values]
    texts = [f"{rounded(v, '0.01'):z.2f}".replace(".", ",") for v in values]
    assert document["attributes"]["text"] == texts


# -- scale: the product of the numbers as they are written ------------------------------------

SCALED = (
    "  attributes.reais: {each: cents, item: {from: '@', transforms: [integer, {scale: 0.01}]}}\n"
    "  attributes.percent: {each: fractions, item: {from: '@', transforms: [{scale: 100}]}}\n"
    "  attributes.kmh: {each: fractions, item: {from: '@', transforms: [{scale: 3.6}]}}\n"
    "  attributes.whole: {from: big, transforms: [{scale: 1000}]}\n"
    "  attributes.huge: {from: tiny, transforms: [{scale: 1.0e+308}]}\n"
)


async def test_scale_multiplies_as_a_decimal_so_cents_become_reais_without_binary_noise(
    client: Client,
) -> None:
    """`[integer, {scale: 0.01}]` of "35" is 0.35 (a float product: 0.35000000000000003), 0.57
    with 100 is 57.0 (not 56.99999999999999): the float nearest the decimal product, as
    `convert` and `round` already are. An integer times an integer stays an exact integer."""
    cents = [str(n) for n in range(1, 100_000, 101)] + ["35", "41", "57", "13016", "-29347"]
    random = Random(20261207)
    fractions = [round(random.uniform(-1000, 1000), random.randint(0, 6)) for _ in range(500)]
    fractions += [0.57, 0.87, 1e-7, 123456789.123, -0.0]
    payload = {"cents": cents, "fractions": fractions, "big": 2**62 // 1000, "tiny": 0.5}
    document = await _dry_run(client, SCALED, payload)

    def product(value: float | str, factor: str) -> float:
        return float(Decimal(str(value)) * Decimal(factor))

    attributes = document["attributes"]
    assert attributes["reais"] == [float(Decimal(c) / 100) for c in cents]
    assert attributes["reais"][-5:] == [0.35, 0.41, 0.57, 130.16, -293.47]
    assert attributes["percent"] == [product(repr(v), "100") for v in fractions]
    assert attributes["kmh"] == [product(repr(v), "3.6") for v in fractions]
    assert attributes["whole"] == 2**62 // 1000 * 1000 and type(attributes["whole"]) is int
    assert attributes["huge"] == 5e307


async def test_scale_past_the_largest_float_is_still_a_cast_problem(client: Client) -> None:
    scaled = "  attributes.x: {from: v, transforms: [{scale: 1.0e+300}]}\n"
    mapping = f"name: m\n{HEAD}fields:\n  plate: plate\n{scaled}"
    response = await client.post(
        "/api/v1/mappings/test",
        json={"mapping": mapping, "payload": {"plate": "ABC1D23", "v": 1e300}},
        headers=auth(),
    )
    assert response.status == 422, await response.text()
    (error,) = (await response.json())["errors"]
    assert error["keyword"] == "cast" and "not a finite number" in error["message"], error


# -- Unicode: either form matches, text is copied as sent, truncate and split cut in NFC ------

NFC_NAO, NFD_NAO = "N\u00c3O", "NA\u0303O"
NFC_SAO_PAULO, NFD_SAO_PAULO = "S\u00e3o Paulo", "Sa\u0303o Paulo"
NFC_CONCLUIDO, NFD_CONCLUIDO = "conclu\u00eddo", "conclui\u0301do"
HANGUL = "\u1100\u1161\u1102\u1161\u1103\u1161\u11a8"  # three syllables as jamo (NFD)


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
        "  attributes.before: {from: city, transforms: [{split: {separator: ã, index: 0}}]}\n"
        "  attributes.after: {from: city, transforms: [{split: {separator: ã, index: 1}}]}\n"
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
            "before": "S",
            "after": "o Paulo",
        }, b


SYLLABLES = "\uac00\ub098\ub2e5"  # HANGUL in NFC


@pytest.mark.parametrize(
    ("sent", "cut", "first"),
    [
        (NFC_SAO_PAULO, "S\u00e3o", NFC_SAO_PAULO),
        (NFD_SAO_PAULO, "S\u00e3o", NFC_SAO_PAULO),  # 4 characters sent, 3 counted
        ("Sa\u0303o, Pau\u0301lo", "S\u00e3o", "S\u00e3o"),
        (HANGUL + "\u1105\u1161", SYLLABLES, SYLLABLES + "\ub77c"),  # a syllable is one
        (", ".join([NFD_SAO_PAULO] * 4), "S\u00e3o", NFC_SAO_PAULO),
        ("Sa\u0303o", "S\u00e3o", "S\u00e3o"),
        ("Sa\u0303", "S\u00e3", "S\u00e3"),
    ],
)
async def test_truncate_and_split_cut_the_text_in_nfc_and_a_copied_field_stays_as_sent(
    client: Client, sent: str, cut: str, first: str
) -> None:
    fields = (
        "  attributes.cut: {from: city, transforms: [{truncate: 3}]}\n"
        '  attributes.first: {from: city, transforms: [{split: {separator: ", ", index: 0}}]}\n'
        "  attributes.whole: city\n"
    )
    document = await _dry_run(client, fields, {"city": sent})
    assert document["attributes"] == {"cut": cut, "first": first, "whole": sent}


async def test_split_finds_a_separator_sent_in_two_forms_and_gives_the_parts_in_nfc(
    client: Client,
) -> None:
    # `;` as such and as U+037E (a Greek question mark, `;` in NFC); names decomposed.
    sent = "Sa\u0303o;Rio\u037eBe\u0301lem;Paranagua\u0301"
    fields = "".join(
        f"  attributes.p{i}: {{from: t, transforms: [{{split: {{separator: ';', index: {i}}}}}]}}\n"
        for i in range(4)
    )
    document = await _dry_run(client, fields, {"t": sent})
    assert document["attributes"] == {
        "p0": "S\u00e3o",
        "p1": "Rio",
        "p2": "B\u00e9lem",
        "p3": "Paranagu\u00e1",
    }


async def test_truncate_and_split_give_nfc_text_for_compositions_outside_the_basic_plane(
    client: Client,
) -> None:
    fields = (
        "  attributes.one: {from: k, transforms: [{truncate: 1}]}\n"
        "  attributes.cut: {from: d, transforms: [{truncate: 2}]}\n"
        "  attributes.marks: {from: m, transforms: [{truncate: 2}]}\n"
        "  attributes.p0: {from: c, transforms: [{split: {separator: ';', index: 0}}]}\n"
        "  attributes.p1: {from: c, transforms: [{split: {separator: ';', index: 1}}]}\n"
    )
    payload = {
        "k": "\U00011099\U000110ba" * 2,  # Kaithi KA and nukta, one character (U+1109A) in NFC
        "d": "\u0958\U00011099\U000110ba",  # NFC: U+0915 U+093C U+1109A
        "m": "x\U0001d165\u0f73",  # NFC: x U+0F71 U+0F72 U+1D165 (marks reordered)
        "c": "Chakma \U00011131\U00011127;b\u037ec",  # Chakma O (U+1112E) in NFC; `;` twice
    }
    document = await _dry_run(client, fields, payload)
    assert document["attributes"] == {
        "one": "\U0001109a",
        "cut": "\u0915\u093c",
        "marks": "x\u0f71",
        "p0": "Chakma \U0001112e",
        "p1": "b",
    }


async def test_split_and_truncate_cut_long_text_whose_nfc_moves_characters(
    client: Client,
) -> None:
    # A review's inputs that took the earlier "cut as sent" code tens of seconds each, with
    # the event loop blocked: `;` sent as itself and as U+037E after a U+0958 (two characters
    # in NFC), 15 KB; and Tibetan vowel signs that NFC splits and reorders, 6.3 KB.
    separated = "\u0958" + "ab;c\u037e" * 3000
    marks = "a\u0f74" + "\u0f73" * 2100  # U+0F73 is U+0F71 U+0F72; U+0F74 sorts after them
    await upload_mapping(
        client,
        f"name: long\n{HEAD}fields:\n  plate: plate\n"
        "  attributes.first: {from: t, transforms: [{split: {separator: ';', index: 0}}]}\n"
        "  attributes.second: {from: t, transforms: [{split: {separator: ';', index: 1}}]}\n"
        "  attributes.before_last: {from: t, transforms: [{split: {separator: ';', index: -2}}]}\n"
        "  attributes.last: {from: t, transforms: [{split: {separator: ';', index: -1}}]}\n"
        "  attributes.cut: {from: m, transforms: [{truncate: 4000}]}\n",
    )
    trigger = await create_trigger(client, mapping="long")
    status, answer = await hook(client, trigger, {"plate": "ABC1D23", "t": separated, "m": marks})
    assert status == 201, answer
    assert (await _vehicle(client, "ABC1D23"))["attributes"] == {
        "first": "\u0915\u093cab",
        "second": "c",
        "before_last": "c",
        "last": "",
        # Stream-safe first: a U+034F after every 30 of the 2,101 vowel signs, each 30 sorted
        # apart: 60 + 64 x 61 + 36 = 4,000 characters.
        "cut": "a"
        + "\u0f71" * 29
        + "\u0f72" * 29
        + "\u0f74"
        + ("\u034f" + "\u0f71" * 30 + "\u0f72" * 30) * 64
        + "\u034f"
        + "\u0f71" * 30
        + "\u0f72" * 5,
    }


async def test_text_with_a_run_of_100_000_combining_marks_is_compared_mapped_and_cut_at_once(
    aiohttp_client: Any, make_app: Any
) -> None:
    # CPython's NFC sorts a run of marks in quadratic time: 100,000 marks out of order took
    # 7 s, the event loop blocked. A U+034F after every 30 marks (Unicode's Stream-Safe Text
    # Format) bounds it; two texts whose every 30 marks are the same ones still compare equal.
    sent = "a" + "\u0301\u0316" * 30_000  # 60,000 marks, each out of order with the next
    written = "a" + "\u0316\u0301" * 30_000  # in the mapping file, the other way round
    longer = "a" + "\u0301\u0316" * 50_000
    fields = (
        f'  attributes.same: {{when: {{from: t, equals: "{written}"}}, '
        "then: {value: same}, else: {value: different}}\n"
        "  attributes.key:\n    from: t\n    transforms:\n      - map:\n          values:\n"
        f'            ? "{written}"\n            : found\n'  # a key past 1,024: explicit
        "          default: missing\n"
        "  attributes.accent: {when: {from: s, equals: \u00e1}, then: {value: acute}, "
        "else: {value: other}}\n"
        "  attributes.word: {from: s, transforms: [{map: {values: {\u00e1: acute}, "
        "default: other}}]}\n"
        "  attributes.cut: {from: s, transforms: [{truncate: 40}]}\n"
    )
    body = {
        "mapping": f"name: m\n{HEAD}fields:\n  plate: plate\n{fields}",
        "payload": {"plate": "ABC1D23", "t": sent, "s": longer},
    }
    client = await aiohttp_client(make_app(max_body_bytes=1024 * 1024))  # 560 KB as UTF-8
    response = await client.post(
        "/api/v1/mappings/test",
        data=json.dumps(body, ensure_ascii=False).encode(),
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert response.status == 200, (await response.text())[:2000]
    (result,) = (await response.json())["results"]
    assert result["document"]["attributes"] == {
        "same": "same",
        "key": "found",
        "accent": "other",
        "word": "other",
        # a composes with the first U+0301; U+0316 (class 220) sorts before U+0301 (230)
        "cut": "\u00e1" + "\u0316" * 15 + "\u0301" * 14 + "\u034f" + "\u0316" * 9,
    }
    boolean = "  attributes.b: {from: b, transforms: [boolean]}"
    cast = f"name: m\n{HEAD}fields:\n  plate: plate\n{boolean}"
    body = {"mapping": cast, "payload": {"plate": "ABC1D23", "b": "n\u00e3o" + sent[1:]}}
    response = await client.post(
        "/api/v1/mappings/test",
        data=json.dumps(body, ensure_ascii=False).encode(),
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert response.status == 422, (await response.text())[:2000]
    (problem,) = (await response.json())["errors"]
    assert (problem["pointer"], problem["keyword"]) == ("/payload/b", "cast")
    assert problem["message"].startswith('cannot cast string "n\u00e3o')


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


async def test_a_trigger_stores_text_as_it_was_sent_in_either_unicode_form(
    client: Client,
) -> None:
    await upload_mapping(
        client,
        f"name: named\n{HEAD}fields:\n  plate: plate\n  model: model\n"
        "  attributes.places: places\n",
    )
    trigger = await create_trigger(client, mapping="named")
    # An object whose keys are one text in two forms keeps both: they are two keys in JSON.
    places = {"cidade": [NFD_SAO_PAULO], NFC_SAO_PAULO: 1, NFD_SAO_PAULO: 2}
    sent = {"plate": "ABC1D23", "model": "Sa\u0303o", "places": places}
    status, answer = await hook(client, trigger, sent)
    assert status == 201, answer
    stored = await _vehicle(client, "ABC1D23")
    assert stored["model"] == "Sa\u0303o"
    assert stored["attributes"]["places"] == places
    assert list(stored["attributes"]["places"]) == ["cidade", NFC_SAO_PAULO, NFD_SAO_PAULO]


PLACES = """name: places
direction: inbound
entity_type: other
kind: place
key: [key]
fields:
  key: name
  label: label
"""
BY_ERP_ID = f"""name: by-erp
{HEAD.replace("[plate]", "[attributes.erp_id]")}fields:
  attributes.erp_id: erp
  model: model
"""


async def test_a_trigger_sending_a_decomposed_key_updates_the_entity_created_with_it(
    client: Client,
) -> None:
    response = await client.post(
        "/api/v1/kinds", json={"name": "place", "schema": {"type": "object"}}, headers=auth()
    )
    assert response.status == 201, await response.text()
    body = {"kind": "place", "key": NFD_SAO_PAULO, "label": "api"}
    response = await client.post("/api/v1/entities/other", json=body, headers=auth())
    assert response.status == 201, await response.text()
    await upload_mapping(client, PLACES)
    trigger = await create_trigger(client, entity_type="other", kind="place", mapping="places")

    status, answer = await hook(client, trigger, {"name": NFD_SAO_PAULO, "label": "hook"})

    assert status == 200, answer  # updated, not a second place
    response = await client.get("/api/v1/entities/other?kind=place", headers=auth())
    assert response.status == 200, await response.text()
    listed = await response.json()
    items = listed["items"] if isinstance(listed, dict) else listed
    assert [(i["key"], i["label"]) for i in items] == [(NFD_SAO_PAULO, "hook")]
    by_key = "/api/v1/entities/other/" + quote(f"place:{NFD_SAO_PAULO}")
    response = await client.get(by_key, headers=auth())
    assert response.status == 200, await response.text()


async def test_a_lookup_by_a_decomposed_partner_id_finds_the_entity_created_with_it(
    client: Client,
) -> None:
    attributes = {"erp_id": "Pa\u0301tio-7"}
    body = {"plate": "ABC1D23", "attributes": attributes}
    response = await client.post("/api/v1/entities/vehicle", json=body, headers=auth())
    assert response.status == 201, await response.text()
    await upload_mapping(client, BY_ERP_ID)
    trigger = await create_trigger(client, mapping="by-erp")

    status, answer = await hook(client, trigger, {"erp": "Pa\u0301tio-7", "model": "Strada"})

    assert status == 200, answer
    stored = await _vehicle(client, "ABC1D23")
    assert stored["model"] == "Strada" and stored["attributes"] == attributes


SECRET_BODY = """name: login
direction: outbound
entity_type: vehicle
body:
  user: entity.model
  password: {secret: pw}
"""


async def test_a_secret_goes_to_the_partner_byte_for_byte(client: Client, partner: Partner) -> None:
    password = "Sa\u0303o-\u212b-\ufa19"  # NFC would send "São-Å-神": another password
    await upload_mapping(client, SECRET_BODY)
    erp = await create_partner(client, partner.url, auth={"type": "none"}, secrets={"pw": password})
    action = await create_action(
        client, erp["id"], mode="proxy", path="/login", request_mapping="login"
    )
    await create_vehicle(client, "ABC1D23", model="Sa\u0303o")

    response = await client.post(
        f"/api/v1/actions/{action['id']}/invoke",
        headers=auth(),
        json={"entity": {"type": "vehicle", "key": "ABC1D23"}},
    )

    assert response.status == 200, await response.text()
    (sent,) = partner.requests
    assert json.loads(sent.body) == {"user": "Sa\u0303o", "password": password}


# -- conditions: JSON equality at every depth ------------------------------------------------

EQUALS = """  attributes.tags_done:
    when: {from: tags, equals: [concluído]}
    then: {value: held}
    else: {value: not}
  attributes.flags_true:
    when: {from: flags, equals: [true]}
    then: {value: held}
    else: {value: not}
  attributes.object_true:
    when: {from: state, equals: {a: true, b: [1.0, {c: concluído}]}}
    then: {value: held}
    else: {value: not}
  attributes.in_lists:
    when: {from: flags, in: [[false], [true]]}
    then: {value: held}
    else: {value: not}
"""


@pytest.mark.parametrize(
    ("tags", "flags", "state", "written"),
    [
        ([NFD_CONCLUIDO], [True], {"a": True, "b": [1, {"c": NFD_CONCLUIDO}]}, "held"),
        ([NFC_CONCLUIDO], [True], {"b": [1.0, {"c": NFC_CONCLUIDO}], "a": True}, "held"),
        (["concluido"], [1], {"a": 1, "b": [1, {"c": NFC_CONCLUIDO}]}, "not"),
        ([NFC_CONCLUIDO, "x"], [1.0], {"a": True, "b": [True, {"c": NFC_CONCLUIDO}]}, "not"),
    ],
)
async def test_equals_inside_lists_and_objects_is_json_equality_with_text_in_either_form(
    client: Client, tags: list[str], flags: list[Any], state: dict[str, Any], written: str
) -> None:
    payload = {"tags": tags, "flags": flags, "state": state}
    document = await _dry_run(client, EQUALS, payload)
    assert document["attributes"] == {
        "tags_done": written,
        "flags_true": written,
        "object_true": written,
        "in_lists": written,
    }


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


@pytest.mark.parametrize(
    ("directive", "written"),
    [
        ("%-s", "1795182322"),
        ("%10s", "1795182322"),
        ("%_s", "1795182322"),
        ("%0s", "1795182322"),
        ("%012s", "001795182322"),
        ("%_12s", "  1795182322"),
        ("%-12s|%%s", "  1795182322|%s"),
        ("%Os", "1795182322"),  # glibc's E and O modifiers change nothing in %s
        ("%Es", "1795182322"),
        ("%-Os", "1795182322"),
        ("%10Os", "1795182322"),
        ("%_12Es", "  1795182322"),
        ("%012Os|%%Es", "001795182322|%Es"),
    ],
)
async def test_percent_s_with_a_flag_or_a_width_is_unix_time_in_any_output_zone(
    client: Client, directive: str, written: str
) -> None:
    fields = "".join(
        f"  attributes.{name}:\n    from: t\n"
        f'    transforms: [{{datetime: {{format: "{directive}", output_tz: {zone}}}}}]\n'
        for name, zone in [("sp", "America/Sao_Paulo"), ("tokyo", "Asia/Tokyo"), ("utc", "UTC")]
    )
    document = await _dry_run(client, fields, {"t": "2026-11-20T13:45:22Z"})
    assert document["attributes"] == {"sp": written, "tokyo": written, "utc": written}


async def test_a_width_past_32_on_percent_s_is_refused_at_upload(client: Client) -> None:
    mapping = (
        f"name: wide\n{HEAD}fields:\n  plate: plate\n"
        '  attributes.t: {from: t, transforms: [{datetime: {format: "%99999999s"}}]}\n'
    )
    response = await client.post(
        "/api/v1/mappings",
        data=mapping.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert response.status == 422, await response.text()
    (problem,) = (await response.json())["errors"]
    assert problem["pointer"] == "/fields/attributes.t/transforms/0/datetime/format"
    assert "width of at most 32" in problem["message"]


@pytest.mark.parametrize(
    ("parse", "message"),
    [
        ('"%s"', "%s (Unix time) is no strptime directive: read Unix seconds with parse: unix"),
        ('["%d/%m/%Y", "%s"]', "%s (Unix time) is no strptime directive"),
        ('"%d/%m/%Y %Q"', "'%Q' is no strptime directive (%% is a literal %)"),
    ],
)
async def test_a_parse_format_no_value_can_match_is_refused_at_upload(
    client: Client, parse: str, message: str
) -> None:
    """strptime has no `%s` (only strftime writes Unix time): such a format refused every
    value at run time, `does not match '%s'`."""
    mapping = (
        f"name: pcts\n{HEAD}fields:\n  plate: plate\n"
        f"  attributes.t: {{from: t, transforms: [{{datetime: {{parse: {parse}}}}}]}}\n"
    )
    response = await client.post(
        "/api/v1/mappings",
        data=mapping.encode(),
        headers={**auth(), "Content-Type": "application/yaml"},
    )
    assert response.status == 422, await response.text()
    (problem,) = (await response.json())["errors"]
    assert problem["pointer"] == "/fields/attributes.t/transforms/0/datetime/parse"
    assert problem["message"].startswith(message)


# -- the ends of time: 9999-12-31 and 0001-01-01 in a local zone -----------------------------

END_OF_TIME = """  attributes.until:
    from: until
    transforms: [{datetime: {parse: "%Y-%m-%d %H:%M:%S", input_tz: America/Sao_Paulo,
                             output_tz: America/Sao_Paulo, format: "%d/%m/%Y"}}]
  attributes.listed:
    from: until
    transforms: [{datetime: {parse: ["%Y-%m-%d %H:%M:%S", "%d/%m/%Y"],
                             input_tz: America/Sao_Paulo, output_tz: America/Sao_Paulo}}]
  attributes.unix:
    from: until
    transforms: [{datetime: {parse: "%Y-%m-%d %H:%M:%S", input_tz: America/Sao_Paulo,
                             format: unix}}]
  attributes.west:
    from: until
    transforms: [{datetime: {parse: "%Y-%m-%d %H:%M:%S", input_tz: America/Sao_Paulo,
                             output_tz: America/New_York}}]
  attributes.since:
    from: since
    transforms: [{datetime: {input_tz: Asia/Tokyo, output_tz: Asia/Tokyo, format: date}}]
"""


async def test_a_local_time_at_the_ends_of_time_is_read_and_written_where_it_exists(
    client: Client,
) -> None:
    payload = {"until": "9999-12-31 23:59:59", "since": "0001-01-01T00:00"}
    document = await _dry_run(client, END_OF_TIME, payload)
    assert document["attributes"] == {
        "until": "31/12/9999",
        "listed": "9999-12-31T23:59:59-03:00",
        "unix": 253402311599,
        "west": "9999-12-31T21:59:59-05:00",
        "since": "0001-01-01",
    }


async def test_percent_s_alone_is_written_at_the_ends_of_time_in_any_output_zone(
    client: Client,
) -> None:
    # Nothing but %s needs no wall time: it is written where `unix` is, though the time is
    # past 9999 in UTC (10000-01-01T02:59:59Z) or before the year 1 there.
    fields = "".join(
        f"  attributes.{name}:\n    from: {source}\n"
        f"    transforms: [{{datetime: {{input_tz: {zone}, format: '{how}'{out}}}}}]\n"
        for name, source, zone, how, out in [
            ("unix", "until", "America/Sao_Paulo", "unix", ""),
            ("s", "until", "America/Sao_Paulo", "%s", ""),
            ("padded", "until", "America/Sao_Paulo", "%013s %%s", ", output_tz: Asia/Tokyo"),
            ("modified", "until", "America/Sao_Paulo", "%Os", ", output_tz: UTC"),
            ("first", "since", "Asia/Tokyo", "%s", ""),
            ("first_unix", "since", "Asia/Tokyo", "unix", ""),
        ]
    )
    payload = {"until": "9999-12-31T23:59:59", "since": "0001-01-01T00:00"}
    document = await _dry_run(client, fields, payload)
    assert document["attributes"] == {
        "unix": 253402311599,
        "s": "253402311599",
        "padded": "0253402311599 %s",
        "modified": "253402311599",
        "first": "-62135630339",  # 0001-01-01T00:00Z less Tokyo's mean time then, 9:18:59
        "first_unix": -62135630339,
    }


async def test_a_time_past_the_year_9999_in_the_output_zone_is_a_datetime_problem(
    client: Client,
) -> None:
    mapping = (
        f"name: m\n{HEAD}fields:\n  plate: plate\n"
        "  attributes.utc:\n    from: until\n"
        '    transforms: [{datetime: {parse: "%Y-%m-%d %H:%M:%S", input_tz: America/Sao_Paulo}}]\n'
    )
    response = await client.post(
        "/api/v1/mappings/test",
        json={"mapping": mapping, "payload": {"plate": "ABC1D23", "until": "9999-12-31 23:59:59"}},
        headers=auth(),
    )
    assert response.status == 422, await response.text()
    (problem,) = (await response.json())["errors"]
    assert problem == {
        "pointer": "/payload/until",
        "message": "9999-12-31T23:59:59-03:00 is past the year 9999 in UTC",
        "keyword": "datetime",
        "target": "attributes.utc",
        "source": "until",
    }
