"""A Brazilian fines provider's amounts and dates as providers write them, read through the
shipped fine-feed and fine-payment mappings at their triggers over HTTP: what the partners
page (docs/partners.md) says is read is stored as meant, anything else is a 422 naming the
field, never a number 1000 times off."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError

from gateway.errors import InvalidPayload
from gateway.services import Services
from gateway.store import connection
from gateway.store.fine_keys import rekey_fines
from gateway.web.state import services_key
from tests.support import auth
from tests.triggers_support import (
    MAPPINGS,
    PAYLOADS,
    Client,
    bearer,
    create_trigger,
    hook,
    upload_mapping,
    upload_shipped,
)

FINE = json.loads((PAYLOADS / "fine_feed.json").read_text())
PAYMENT = json.loads((PAYLOADS / "fine_payment.json").read_text())


async def _triggers(client: Client) -> tuple[dict[str, Any], dict[str, Any]]:
    await upload_shipped(client, "fine-feed")
    await upload_shipped(client, "fine-payment")
    fines = await create_trigger(client, entity_type="other", kind="fine", mapping="fine-feed")
    payments = await create_trigger(
        client, name="payments", entity_type="other", kind="fine", mapping="fine-payment"
    )
    return fines, payments


async def _fine(client: Client, trigger: dict[str, Any], ait: str) -> dict[str, Any]:
    """The sample's authority's fine of this AIT number (its key: authority and AIT)."""
    key = f"{FINE['orgaoAutuador']}:{ait}"
    response = await client.get(f"/hooks/{trigger['id']}/{key}", headers=bearer(trigger))
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def _paid(client: Client) -> list[dict[str, Any]]:
    await client.app[services_key].relay.run_until_idle()
    response = await client.get("/api/v1/events?type=fine.paid", headers=auth())
    return [event["detail"] for event in (await response.json())["items"]]


async def test_an_amount_is_read_only_in_the_documented_forms_and_refused_otherwise(
    client: Client,
) -> None:
    """`"1,130.16"` (the separators the other way round) was stored as 1.13 and `"1.1.30,16"`
    (misgrouped) as 1130.16, both with a 201. A decimal comma after thousands points in
    groups of three, or text with a decimal point and no comma, is read; anything else is
    a 422 naming the field and the text, and nothing is written."""
    fines, payments = await _triggers(client)
    read = {
        "1.130,16": 1130.16,
        "130,16": 130.16,
        "1130,16": 1130.16,
        "1.234.567,8": 1234567.8,
        " 13,5 ": 13.5,
        "130.16": 130.16,
        "130": 130,
        "1.234.567": 1234567,
        "0.125": 0.13,
        "12.5": 12.5,
        1.13: 1.13,  # a JSON number is the number it is
        12.5: 12.5,
    }
    for i, (text, amount) in enumerate(read.items()):
        status, answer = await hook(client, fines, {**FINE, "ait": f"R{i}", "valor": text})
        assert status == 201, (text, answer)
        assert (await _fine(client, fines, f"R{i}"))["amount_brl"] == amount, text
    refused = ["1,130.16", "1.1.30,16", "1.13,16", "11.30,16", "1.130.16", ",", "1,", "1.130,1,6"]
    refused += ["0.125,00", "000.123,45"]  # no leading zero before a thousands point
    refused += ["1.130", "12.500"]  # a thousand and thirty, or 1.13? Not guessed
    refused += ["1,130", "12,500"]  # the same the other way round: the amounts take a point
    for i, text in enumerate(refused):
        status, problem = await hook(client, fines, {**FINE, "ait": f"X{i}", "valor": text})
        assert status == 422, (text, problem)
        [error] = problem["errors"]
        assert (error["pointer"], error["target"]) == ("/valor", "amount_brl"), error
        assert json.dumps(text) in error["message"], error  # quoted as JSON
        missing = await client.get(f"/hooks/{fines['id']}/261810:X{i}", headers=bearer(fines))
        assert missing.status == 404, text
    status, answer = await hook(client, fines, FINE)
    assert status == 201, answer
    for field in ("valorPago", "desconto"):
        for text in ("1,130.16", "12.500"):
            status, problem = await hook(client, payments, {**PAYMENT, field: text})
            assert status == 422, (field, problem)
            assert [e["pointer"] for e in problem["errors"]] == [f"/{field}"]
    status, answer = await hook(client, payments, {**PAYMENT, "valorPago": "1.104,13"})
    assert status == 200, answer
    assert [d["amount_paid_brl"] for d in await _paid(client)] == [1104.13]


async def test_a_day_field_written_dd_mm_yyyy_with_a_time_is_that_day_in_brasilia(
    client: Client,
) -> None:
    """The partners page says both mappings read `dd/mm/yyyy HH:MM` (or `HH:MM:SS`) and
    `dd/mm/yyyy`: the payment day and the indication deadline took only `dd/mm/yyyy` and
    refused a time with a 422. A time is Brasília time, and the day is its day there (22:30
    on the 25th is the 25th, though 01:30Z of the 26th)."""
    fines, payments = await _triggers(client)
    deadlines = {
        "D1": ("18/12/2026 23:59", "2026-12-18"),
        "D2": ("18/12/2026 23:59:59", "2026-12-18"),
        "D3": ("18/12/2026", "2026-12-18"),
        "D4": ("2026-12-18T23:59:00-03:00", "2026-12-18"),
        "D5": ("18/12/2026 9:30", "2026-12-18"),  # an hour of one digit
        "D6": ("18/12/2026 9:30:15", "2026-12-18"),
        "D7": ("8/12/2026 9:30:15", "2026-12-08"),  # a day of one digit too: 16 long
    }
    for key, (text, day) in deadlines.items():
        status, answer = await hook(
            client, fines, {**FINE, "ait": key, "dataLimiteIndicacao": text}
        )
        assert status == 201, (text, answer)
        assert (await _fine(client, fines, key))["indication_deadline"] == day, text
    sent = ["25/11/2026 22:30", "25/11/2026 22:30:15", "25/11/2026", "2026-11-25T22:30:00-03:00"]
    sent += ["25/11/2026 9:30", "25/11/2026 9:30:15"]
    for i, text in enumerate(sent):
        status, answer = await hook(client, fines, {**FINE, "ait": f"P{i}"})
        assert status == 201, answer
        status, answer = await hook(
            client, payments, {**PAYMENT, "ait": f"P{i}", "dataPagamento": text}
        )
        assert status == 200, (text, answer)
    assert [d["paid_on"] for d in await _paid(client)] == ["2026-11-25"] * len(sent)
    occurred = {
        "05/01/2026 9:30": "2026-01-05T12:30:00Z",
        "05/01/2026 9:30:15": "2026-01-05T12:30:15Z",
        # 16 long like "dd/mm/yyyy HH:MM", seconds and all (the formats are tried in order,
        # where the length of the text once picked one)
        "5/1/2026 9:30:00": "2026-01-05T12:30:00Z",
    }
    for i, (text, utc) in enumerate(occurred.items()):
        status, answer = await hook(client, fines, {**FINE, "ait": f"T{i}", "dataHora": text})
        assert status == 201, (text, answer)
        assert (await _fine(client, fines, f"T{i}"))["occurred_at"] == utc, text
    status, problem = await hook(client, fines, {**FINE, "ait": "H1", "dataHora": "18/11/2026"})
    assert status == 422, problem  # the infraction's time needs its hour
    assert [(e["pointer"], e["target"]) for e in problem["errors"]] == [
        ("/dataHora", "occurred_at"),
        ("/dataHora", "occurred_at_local"),  # the same time on the notice's clock
    ]
    for text in ("25/11/2026 22", "25/11/2026 25:30", "31/11/2026 10:00"):
        status, problem = await hook(client, payments, {**PAYMENT, "dataPagamento": text})
        assert status == 422, (text, problem)
        [error] = problem["errors"]
        assert error["pointer"] == "/dataPagamento", error
        assert error["target"] == "paid_on", error


async def test_a_fine_of_another_zone_keeps_its_notices_clock_and_its_deadline_day_there(
    client: Client,
) -> None:
    """Acre (UTC-5), Amazonas and Mato Grosso (UTC-4): the authority's end of day there,
    `…T23:59:59-05:00`, is 01:59:59 of the next day in Brasília, but its deadline is that day
    (one day later, the company indicates late and pays the NIC). The infraction's time keeps
    the notice's clock beside the instant; one written without an offset is Brasília's (its
    summer time then too), one in UTC says no local clock: Brasília's."""
    fines, _ = await _triggers(client)
    deadlines = {
        "Z1": ("2026-12-18T23:59:59-05:00", "2026-12-18"),
        "Z2": ("2026-12-18T23:59:59-04:00", "2026-12-18"),
        "Z3": ("2026-12-18T00:30:00-05:00", "2026-12-18"),
        "Z4": ("2026-12-18T23:59:59", "2026-12-18"),  # Brasília's
        "Z5": ("2026-12-19T02:59:59Z", "2026-12-18"),  # in UTC: its day in Brasília
    }
    for key, (text, day) in deadlines.items():
        status, answer = await hook(
            client, fines, {**FINE, "ait": key, "dataLimiteIndicacao": text}
        )
        assert status == 201, (text, answer)
        assert (await _fine(client, fines, key))["indication_deadline"] == day, text
    occurred = {
        "2026-11-18T13:45:00-05:00": ("2026-11-18T18:45:00Z", "2026-11-18T13:45:00-05:00"),
        "2026-11-18T13:45:00-04:00": ("2026-11-18T17:45:00Z", "2026-11-18T13:45:00-04:00"),
        "18/11/2026 13:45": ("2026-11-18T16:45:00Z", "2026-11-18T13:45:00-03:00"),
        "10/02/2019 13:45": ("2019-02-10T15:45:00Z", "2019-02-10T13:45:00-02:00"),
        "2026-11-18T16:45:00Z": ("2026-11-18T16:45:00Z", "2026-11-18T13:45:00-03:00"),
    }
    for i, (text, (instant, local)) in enumerate(occurred.items()):
        status, answer = await hook(client, fines, {**FINE, "ait": f"L{i}", "dataHora": text})
        assert status == 201, (text, answer)
        fine = await _fine(client, fines, f"L{i}")
        assert (fine["occurred_at"], fine["occurred_at_local"]) == (instant, local), text


async def test_a_date_sent_as_midnight_utc_is_that_date_not_the_evening_before_in_brasilia(
    client: Client,
) -> None:
    """JavaScript's and MongoDB's `new Date("2026-12-18")` (a Node fines API), a .NET
    DateTime of kind Utc, Python's isoformat: the 18th, not 21:00 of the 17th in Brasília (a
    driver told to indicate by the 17th, an ERP told the fine was paid a day early)."""
    fines, payments = await _triggers(client)
    sent = (
        "2026-12-18T00:00:00.000Z",
        "2026-12-18T00:00:00Z",
        "2026-12-18T00:00:00.0000000Z",
        "2026-12-18T00:00:00+00:00",
    )
    for i, text in enumerate(sent):
        status, answer = await hook(
            client, fines, {**FINE, "ait": f"M{i}", "dataLimiteIndicacao": text}
        )
        assert status == 201, (text, answer)
        assert (await _fine(client, fines, f"M{i}"))["indication_deadline"] == "2026-12-18"
        paid = text.replace("18T", "10T")
        status, answer = await hook(
            client, payments, {**PAYMENT, "ait": f"M{i}", "dataPagamento": paid}
        )
        assert status == 200, (paid, answer)
    assert [d["paid_on"] for d in await _paid(client)] == ["2026-12-10"] * len(sent)
    # An instant that is not midnight UTC is still its day in Brasília.
    status, answer = await hook(
        client, fines, {**FINE, "ait": "M9", "dataLimiteIndicacao": "2026-12-18T01:00:00.000Z"}
    )
    assert status == 201, answer
    assert (await _fine(client, fines, "M9"))["indication_deadline"] == "2026-12-17"


async def test_a_date_sent_as_midnight_utc_in_any_spelling_is_that_date(client: Client) -> None:
    """Jackson's `java.util.Date`, .NET's `DateTimeOffset`, Java's `OffsetDateTime` (seconds
    left out) and a basic `+0000` offset write midnight UTC too: the mappings matched four
    exact suffixes, so these were 21:00 of the day before in Brasília, a deadline and a
    payment day one day early. The instant read is tested: a millisecond past midnight UTC,
    or 21:00 written without an offset, is a time of the day before in Brasília."""
    fines, payments = await _triggers(client)
    sent = (
        "2026-12-18T00:00:00.000+00:00",
        "2026-12-18T00:00:00.0000000+00:00",
        "2026-12-18T00:00Z",
        "2026-12-18T00:00:00+0000",
    )
    for i, text in enumerate(sent):
        status, answer = await hook(
            client, fines, {**FINE, "ait": f"S{i}", "dataLimiteIndicacao": text}
        )
        assert status == 201, (text, answer)
        assert (await _fine(client, fines, f"S{i}"))["indication_deadline"] == "2026-12-18", text
        paid = text.replace("18T", "10T")
        status, answer = await hook(
            client, payments, {**PAYMENT, "ait": f"S{i}", "dataPagamento": paid}
        )
        assert status == 200, (paid, answer)
    assert [d["paid_on"] for d in await _paid(client)] == ["2026-12-10"] * len(sent)
    for key, text in (("S8", "2026-12-18T00:00:00.001+00:00"), ("S9", "17/12/2026 21:00")):
        status, answer = await hook(
            client, fines, {**FINE, "ait": key, "dataLimiteIndicacao": text}
        )
        assert status == 201, (text, answer)
        assert (await _fine(client, fines, key))["indication_deadline"] == "2026-12-17", text


async def test_only_midnight_written_in_utc_or_unix_seconds_is_a_date_a_brasilia_offset_is_its_day(
    client: Client,
) -> None:
    """`…T21:00:00-03:00` is 21:00 in Brasília, written so: the instant test read it as
    midnight UTC, the next day (a payment reported to the ERP a day late, a deadline a day
    later). Only midnight written in UTC (`-00:00`, `+00` too) is a date so; Unix seconds at
    midnight UTC (`new Date("2026-12-18") / 1000`) are one too, as the partners page says."""
    fines, payments = await _triggers(client)
    for key, sent, day in (
        ("O1", "2026-12-17T21:00:00-03:00", "2026-12-17"),
        ("O2", "2026-12-17T21:00-0300", "2026-12-17"),
        ("O3", "2026-12-18T00:00:00-00:00", "2026-12-18"),
        ("O4", "2026-12-18T00:00:00+00", "2026-12-18"),
        ("O5", 1797552000, "2026-12-18"),
        ("O6", "1797552000", "2026-12-18"),
        ("O7", 1797552001, "2026-12-17"),
    ):
        status, answer = await hook(
            client, fines, {**FINE, "ait": key, "dataLimiteIndicacao": sent}
        )
        assert status == 201, (sent, answer)
        assert (await _fine(client, fines, key))["indication_deadline"] == day, sent
    for key, sent in (("O1", "2026-12-10T21:00:00-03:00"), ("O5", 1796860800)):
        status, answer = await hook(
            client, payments, {**PAYMENT, "ait": key, "dataPagamento": sent}
        )
        assert status == 200, (sent, answer)
    assert [d["paid_on"] for d in await _paid(client)] == ["2026-12-10", "2026-12-10"]


async def test_unix_seconds_are_read_as_the_partners_page_says_and_8_digits_stay_a_date(
    client: Client,
) -> None:
    fines, payments = await _triggers(client)
    # 2025-12-18 03:00 UTC (00:00 in Brasília); 20261218 as a number is still a date.
    for key, sent, day in (
        ("U1", 1766026800, "2025-12-18"),
        ("U2", "1766026800", "2025-12-18"),
        ("U3", 20261218, "2026-12-18"),
    ):
        status, answer = await hook(
            client, fines, {**FINE, "ait": key, "dataLimiteIndicacao": sent}
        )
        assert status == 201, (sent, answer)
        assert (await _fine(client, fines, key))["indication_deadline"] == day, sent
    # 2025-11-26 03:00 UTC, the 26th in Brasília; paid at 23:00 on the 25th in Brasília.
    for key, sent in (("U1", 1764126000), ("U2", "1764126000"), ("U3", 1764122400)):
        status, answer = await hook(
            client, payments, {**PAYMENT, "ait": key, "dataPagamento": sent}
        )
        assert status == 200, (sent, answer)
    paid = sorted(d["paid_on"] for d in await _paid(client))
    assert paid == ["2025-11-25", "2025-11-26", "2025-11-26"]


async def test_compact_dates_are_read_as_detran_and_cnab_files_write_them(client: Client) -> None:
    """AAAAMMDD (DETRAN files) and DDMMAAAA (CNAB 240) are the day they name, never Unix
    seconds of 1970; a compact date with a digit missing is a 422 at its field."""
    fines, payments = await _triggers(client)
    for key, text in (("C1", "20261218"), ("C2", "18122026")):
        status, answer = await hook(
            client, fines, {**FINE, "ait": key, "dataLimiteIndicacao": text}
        )
        assert status == 201, (text, answer)
        assert (await _fine(client, fines, key))["indication_deadline"] == "2026-12-18", text
    for i, text in enumerate(("20261125", "25112026")):
        status, answer = await hook(client, fines, {**FINE, "ait": f"Q{i}"})
        assert status == 201, answer
        status, answer = await hook(
            client, payments, {**PAYMENT, "ait": f"Q{i}", "dataPagamento": text}
        )
        assert status == 200, (text, answer)
    assert [d["paid_on"] for d in await _paid(client)] == ["2026-11-25"] * 2
    for text in ("2026128", "1812026", "20261340"):
        status, problem = await hook(
            client, fines, {**FINE, "ait": "C9", "dataLimiteIndicacao": text}
        )
        assert status == 422, (text, problem)
        assert [e["pointer"] for e in problem["errors"]] == ["/dataLimiteIndicacao"], problem


async def test_a_renavam_whose_leading_zero_was_lost_is_kept_when_its_check_digit_says_so(
    client: Client,
) -> None:
    fines, _ = await _triggers(client)
    # 01234567897 (a RENAVAM issued since 2013) sent as a number or a spreadsheet's text.
    for key, renavam in (("Z1", 1234567897), ("Z2", "1234567897")):
        status, answer = await hook(client, fines, {**FINE, "ait": key, "renavam": renavam})
        assert status == 201, (renavam, answer)
        assert (await _fine(client, fines, key))["renavam"] == "01234567897"


async def test_a_renavam_is_never_padded_into_another_and_a_blank_one_is_left_out(
    client: Client,
) -> None:
    fines, _ = await _triggers(client)
    status, problem = await hook(client, fines, {**FINE, "ait": "R1", "renavam": "8676959738"})
    assert status == 422, problem  # a digit missing: "08676959738" would be checked, not it
    assert [e["pointer"] for e in problem["errors"]] == ["/renavam"], problem
    for key, blank in (("R2", ""), ("R3", "N/A")):
        status, answer = await hook(client, fines, {**FINE, "ait": key, "renavam": blank})
        assert status == 201, answer
        assert "renavam" not in await _fine(client, fines, key)


async def test_a_renavam_with_its_leading_zeros_a_digit_short_or_a_letter_is_refused(
    client: Client,
) -> None:
    """00639884962 (an old 9-digit RENAVAM written with its zeros) with its last digit lost,
    or that digit read as the letter O: the `renavam` transform put a zero in front of the
    ten digits left, 00063988496, another vehicle's valid RENAVAM, and stored the fine with
    it. A number or a spreadsheet keeps no leading zero, and a letter is no digit of it:
    both are refused at the field, nothing stored."""
    fines, _ = await _triggers(client)
    for key, renavam, message in (
        ("T0", "0063988496", "must have 11 digits"),
        ("T1", "0063988496O", "must contain only digits"),
    ):
        status, problem = await hook(client, fines, {**FINE, "ait": key, "renavam": renavam})
        assert status == 422, (renavam, problem)
        [error] = problem["errors"]
        assert error["pointer"] == "/renavam" and message in error["message"], problem
        assert "00063988496" not in str(problem)
        lookup = f"/hooks/{fines['id']}/{FINE['orgaoAutuador']}:{key}"
        assert (await client.get(lookup, headers=bearer(fines))).status == 404
    # written with its zeros and separators, it is the RENAVAM it says
    status, answer = await hook(client, fines, {**FINE, "ait": "T2", "renavam": " 006.398.849-62 "})
    assert status == 201, answer
    assert (await _fine(client, fines, "T2"))["renavam"] == "00639884962"


async def test_a_renavam_from_a_float_column_is_the_number_it_writes_never_its_decimal_digits(
    client: Client,
) -> None:
    """09031632460 in a spreadsheet's column of floats is exported as "9031632460.0": its
    decimal zero joined to its digits made 90316324600, another vehicle's valid RENAVAM. A
    whole decimal is the number it writes (its lost zero put back); one with decimals
    (1189123981.8, whose digits joined make 11891239818, valid too) is refused at the field."""
    fines, _ = await _triggers(client)
    for key, renavam in (("F1", "9031632460.0"), ("F2", 9031632460.0), ("F3", " 9031632460.00")):
        status, answer = await hook(client, fines, {**FINE, "ait": key, "renavam": renavam})
        assert status == 201, (renavam, answer)
        assert (await _fine(client, fines, key))["renavam"] == "09031632460"
    for key, renavam in (("F4", 1189123981.8), ("F5", "1189123981.8")):
        status, problem = await hook(client, fines, {**FINE, "ait": key, "renavam": renavam})
        assert status == 422, (renavam, problem)
        [error] = problem["errors"]
        assert error["pointer"] == "/renavam" and "decimals" in error["message"], problem
        lookup = f"/hooks/{fines['id']}/{FINE['orgaoAutuador']}:{key}"
        assert (await client.get(lookup, headers=bearer(fines))).status == 404


def _before_the_upgrade() -> str:
    """The shipped fine-feed as an older gateway shipped it (a tenant's stored version runs as
    it was stored): the key its AIT alone."""
    text = (MAPPINGS / "fine-feed.yaml").read_text()
    start, end = text.index("  key:\n    template:"), text.index("  ait_number:")
    old_key = "  key: {from: ait, required: true, transforms: [trim, upper]}\n"
    return text[:start].replace("name: fine-feed", "name: fine-feed-v1") + old_key + text[end:]


async def test_fines_stored_under_their_ait_alone_are_keyed_by_authority_at_the_upgrade(
    client: Client,
) -> None:
    """A fine an older gateway stored keyed by its AIT alone is keyed `<authority>:<AIT>` at
    the first start after the upgrade: its payment notice finds it, and the provider's notice
    sent again updates it rather than storing a second fine. One without an authority keeps its
    key (whose it is, nothing says). Until the tenant uploads the new mappings, its stored
    AIT-keyed one is refused (a 422 at /key, kept for replay), never a second fine."""
    fines, payments = await _triggers(client)
    await upload_mapping(client, _before_the_upgrade())
    stale = await create_trigger(
        client, name="stale", entity_type="other", kind="fine", mapping="fine-feed-v1"
    )
    old = {"kind": "fine", "plate": "ABC1D23", "amount_brl": 130.16, "status": "open"}
    created = []
    for ait in ("A123456789", "B2"):
        fine = {**old, "key": ait, "ait_number": ait}
        response = await client.post("/api/v1/entities/other", json=fine, headers=auth())
        assert response.status == 201, await response.text()
        created.append((await response.json())["id"])
    store = client.app[services_key].store
    entities = store.db["entities"]
    # As the older fine-feed stored it: with its authority, keyed by the AIT alone.
    await entities.update_one({"nk": "fine:A123456789"}, {"$set": {"data.authority": "261810"}})
    await store.db["migrations"].delete_many({"_id": "other.fine.authority_key"})
    await store.ensure_indexes()  # what every process runs at start

    rekeyed = await _fine(client, fines, "A123456789")
    assert rekeyed["id"] == created[0] and rekeyed["key"] == "261810:A123456789"
    kept = await client.get("/api/v1/entities/other/fine:B2", headers=auth())
    assert (await kept.json())["id"] == created[1]
    status, problem = await hook(client, stale, FINE)
    [error] = problem["errors"]  # at the field the key is read from
    assert (status, error["pointer"], error["keyword"]) == (422, "/ait", "key"), problem
    assert "keyed by its authority and ait_number: '261810:A123456789'" in error["message"]
    kept = await client.get(f"/api/v1/rejected?trigger_id={stale['id']}", headers=auth())
    assert len((await kept.json())["items"]) == 1  # for replay once the new one is uploaded
    status, answer = await hook(client, fines, FINE)
    assert status == 200, answer  # updated, not created
    status, answer = await hook(client, payments, PAYMENT)
    assert status == 200, answer
    assert (await _fine(client, fines, "A123456789"))["status"] == "paid"
    listed = await client.get("/api/v1/entities/other?kind=fine", headers=auth())
    assert sorted(f["id"] for f in (await listed.json())["items"]) == sorted(created)
    again = rekey_fines(entities, store.db["notify_cooldowns"], store.db["migrations"])
    assert await again == (0, 0, 0)  # once per database


async def _upgrade(client: Client) -> tuple[int, int, int]:
    """The first start after the upgrade, once more: the step run as every start runs it."""
    store = client.app[services_key].store
    await store.db["migrations"].delete_many({"_id": "other.fine.authority_key"})
    return await rekey_fines(
        store.db["entities"], store.db["notify_cooldowns"], store.db["migrations"]
    )


async def test_a_fine_keyed_by_hand_with_its_authority_keeps_its_key_and_stays_writable(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A fine an older gateway stored keyed by hand (`SP-1A2B3C4D`, not its AIT) with its
    authority keeps its key at the upgrade (counted and logged), and every write that leaves
    its authority and AIT as they are is stored under it: marked paid, given its driver. A
    write changing its authority is refused: that would choose its key again."""
    old = {"kind": "fine", "plate": "ABC1D23", "amount_brl": 130.16, "status": "open"}
    fine = {**old, "key": "SP-1A2B3C4D", "ait_number": "A7"}
    response = await client.post("/api/v1/entities/other", json=fine, headers=auth())
    assert response.status == 201, await response.text()
    entities = client.app[services_key].store.db["entities"]
    await entities.update_one({"nk": "fine:SP-1A2B3C4D"}, {"$set": {"data.authority": "261810"}})
    with caplog.at_level(logging.WARNING, logger="gateway.store.fine_keys"):
        assert await _upgrade(client) == (0, 0, 1)
    assert "1 keyed otherwise kept their key" in caplog.text
    url = "/api/v1/entities/other/fine:SP-1A2B3C4D"
    for patch in ({"status": "paid"}, {"driver_cpf": "52998224725"}):
        response = await client.patch(url, json=patch, headers=auth())
        assert response.status == 200, await response.text()
    stored = await (await client.get(url, headers=auth())).json()
    assert (stored["status"], stored["driver_cpf"]) == ("paid", "52998224725")
    response = await client.patch(url, json={"authority": "125100"}, headers=auth())
    problem = await response.json()
    assert response.status == 422, problem
    assert [e["pointer"] for e in problem["errors"]] == ["/key"], problem


async def test_a_fine_the_upgrade_left_under_its_ait_because_its_key_was_taken_stays_writable(
    client: Client,
) -> None:
    """A rolling upgrade: a new process stored the provider's notice as `261810:A9` while the
    older one's fine `A9` (authority 261810) was still there. The upgrade leaves `A9` under
    its key (never merged), and the back office can still mark it paid."""
    old = {"kind": "fine", "plate": "ABC1D23", "amount_brl": 130.16, "status": "open"}
    for key, more in (("A9", {}), ("261810:A9", {"authority": "261810"})):
        body = {**old, "key": key, "ait_number": "A9", **more}
        response = await client.post("/api/v1/entities/other", json=body, headers=auth())
        assert response.status == 201, await response.text()
    entities = client.app[services_key].store.db["entities"]
    await entities.update_one({"nk": "fine:A9"}, {"$set": {"data.authority": "261810"}})
    assert await _upgrade(client) == (0, 1, 0)
    url = "/api/v1/entities/other/fine:A9"
    response = await client.patch(url, json={"status": "paid"}, headers=auth())
    assert response.status == 200, await response.text()
    assert (await response.json())["status"] == "paid"


class _DiesReading:
    """The notes' collection of a start that dies (a kill, a step-down) as it reads them."""

    def find(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the process died here")


class _RefusesWriting:
    """The notes' collection as a server that refuses the copies for another reason than a
    note copied already (here: a document too large)."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def find(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.find(*args, **kwargs)

    async def bulk_write(self, *args: Any, **kwargs: Any) -> Any:
        error = {"index": 0, "code": 10334, "errmsg": "BSONObj size is invalid"}
        raise BulkWriteError({"writeErrors": [error], "writeConcernErrors": [], "nInserted": 0})


async def _stored_before_the_upgrade(services: Services, ait: str) -> None:
    """A fine an older gateway stored under its AIT with its authority, and the note of the
    driver's e-mail about it."""
    now = datetime.now(UTC)
    fine = {"kind": "fine", "key": ait, "ait_number": ait, "authority": "261810"}
    fine |= {"plate": "ABC1D23", "amount_brl": 1, "status": "open"}
    db = services.store.db
    await db["entities"].insert_one(
        {"tenant": "acme", "type": "other", "nk": f"fine:{ait}", "rev": 1, "data": fine}
        | {"created_at": now, "updated_at": now}
    )
    note = {"tenant": "acme", "key": f"fine-received:{ait}", "sent_at": now, "by": "f"}
    note |= {"delivered_by": "f", "expires_at": now + timedelta(days=3000)}
    await db["notify_cooldowns"].insert_one({"_id": f"acme:fine-received:{ait}", **note})
    await db["migrations"].delete_many({"_id": "other.fine.authority_key"})


async def test_a_start_that_died_during_the_rekey_still_carries_the_e_mail_notes(
    services: Services,
) -> None:
    """The first start dies as it copies the e-mail notes; the next one rekeys the fine and
    copies its note, so the provider's corrected notice does not e-mail the driver again."""
    db = services.store.db
    await _stored_before_the_upgrade(services, "A555")
    with pytest.raises(RuntimeError):
        await rekey_fines(db["entities"], _DiesReading(), db["migrations"])
    await rekey_fines(db["entities"], db["notify_cooldowns"], db["migrations"])
    assert await db["entities"].count_documents({"nk": "fine:261810:A555"}) == 1
    assert await db["notify_cooldowns"].find_one({"_id": "acme:fine-received:261810:A555"})


async def test_a_note_copy_the_server_refuses_fails_the_step_which_runs_again(
    services: Services,
) -> None:
    """Only a note copied already is passed over: any other refusal fails the step, which is
    then not recorded done and runs again at the next start, the fine still under its AIT."""
    db = services.store.db
    await _stored_before_the_upgrade(services, "A556")
    with pytest.raises(InvalidPayload):
        await rekey_fines(db["entities"], _RefusesWriting(db["notify_cooldowns"]), db["migrations"])
    assert await db["entities"].count_documents({"nk": "fine:A556"}) == 1
    assert await rekey_fines(db["entities"], db["notify_cooldowns"], db["migrations"]) == (1, 0, 0)
    assert await db["notify_cooldowns"].find_one({"_id": "acme:fine-received:261810:A556"})


async def test_a_start_whose_upgrade_steps_failed_refuses_writes_until_they_ran(
    client: Client,
    aiohttp_client: Any,
    make_app: Any,
    mongodb_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first start after the upgrade meets a database that fails a moment (here: its
    `createIndexes`, the first step of every start): the process serves, not ready, and tries
    the indexes and the one-time steps again every few seconds. It used to take writes
    meanwhile: the provider's notice of a fine stored under its AIT alone, not re-keyed yet,
    stored a second fine (and announced it, a second e-mail to the driver). Until the steps
    ran, writes are refused 503 with Retry-After, and the background jobs wait."""
    monkeypatch.setattr(connection, "INDEX_RETRY_SECONDS", 0.1)
    monkeypatch.setattr("gateway.services.INDEX_RETRY_SECONDS", 0.1)
    fines, _ = await _triggers(client)
    old = {"kind": "fine", "plate": "ABC1D23", "amount_brl": 130.16, "status": "open"}
    response = await client.post(
        "/api/v1/entities/other",
        json={**old, "key": "A123456789", "ait_number": "A123456789"},
        headers=auth(),
    )
    assert response.status == 201, await response.text()
    created = (await response.json())["id"]
    store = client.app[services_key].store
    # As the older fine-feed stored it: with its authority, keyed by the AIT alone.
    await store.db["entities"].update_one(
        {"nk": "fine:A123456789"}, {"$set": {"data.authority": "261810"}}
    )
    await store.db["migrations"].delete_many({"_id": "other.fine.authority_key"})
    admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, appname="faults")
    failing = {"failCommands": ["createIndexes"], "errorCode": 6, "appName": "rabbot-gateway"}
    await admin.admin.command("configureFailPoint", "failCommand", mode="alwaysOn", data=failing)
    try:
        upgraded = await aiohttp_client(make_app(run_workers=True, jobs=("relay",)))
        services = upgraded.app[services_key]
        notice = await upgraded.post(f"/hooks/{fines['id']}", json=FINE, headers=bearer(fines))
        problem = await notice.json()
        assert notice.status == 503 and int(notice.headers["Retry-After"]) > 0, problem
        assert "one-time upgrade steps" in problem["detail"], problem
        again = await upgraded.post(
            "/api/v1/entities/other", json={**old, "key": "B2", "ait_number": "B2"}, headers=auth()
        )
        assert again.status == 503, await again.text()
        assert (await upgraded.get("/readyz")).status == 503
        assert (await upgraded.get("/healthz")).status == 200
        page = await upgraded.get("/admin/login")  # the admin UI's pages and forms alike
        assert page.status == 503 and int(page.headers["Retry-After"]) > 0
        assert not services.background.jobs
    finally:
        await admin.admin.command("configureFailPoint", "failCommand", mode="off")
        await admin.close()
    async with asyncio.timeout(10):
        while (await upgraded.get("/readyz")).status != 200:
            await asyncio.sleep(0.05)
    assert services.background.jobs
    assert (await upgraded.get("/admin/login")).status == 200
    status, answer = await hook(upgraded, fines, FINE)
    assert status == 200 and answer["key"] == "261810:A123456789", answer  # updated
    listed = await upgraded.get("/api/v1/entities/other?kind=fine", headers=auth())
    assert [fine["id"] for fine in (await listed.json())["items"]] == [created]
