"""Leap seconds: RFC 3339 §5.6 allows `23:59:60` (the input schema's `date-time` format takes
it), but Python's datetime refuses second 60, so every path that reads a partner's time
refused a valid one. Such a time is read as `23:59:59.999999` of the same day: the date it
names, in order with the times around it (docs/mappings.md#date-times)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.clock import from_iso
from tests.support import auth
from tests.triggers_support import VEHICLE, Client, create_position_trigger, hook


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.999999+00:00"),
        ("2016-12-31T23:59:60.5Z", "2016-12-31T23:59:59.999999+00:00"),
        ("2016-12-31T21:59:60-02:00", "2016-12-31T21:59:59.999999-02:00"),
        ("2017-01-01T05:44:60+05:45", "2017-01-01T05:44:59.999999+05:45"),
        ("2016-12-31 21:59:60", "2016-12-31T21:59:59.999999"),  # its zone unknown here
    ],
)
def test_a_leap_second_is_read_as_the_last_instant_of_its_minute(text: str, read: str) -> None:
    assert from_iso(text).isoformat() == read


@pytest.mark.parametrize(
    "text",
    ["2016-12-31T12:00:60Z", "2016-12-31T12:59:60Z", "2016-12-31T23:59:61Z", "2016-12-31 21:58:60"],
)
def test_second_60_outside_the_last_minute_of_a_utc_day_is_still_refused(text: str) -> None:
    with pytest.raises(ValueError):
        from_iso(text)


async def test_a_fix_at_a_leap_second_is_stored_at_the_last_millisecond_of_the_day(
    client: Client,
) -> None:
    created = await client.post("/api/v1/entities/vehicle", json=VEHICLE, headers=auth())
    assert created.status == 201, await created.text()
    trigger = await create_position_trigger(client)
    sent = {"plate": "ABC1D23", "lat": -23.55, "lon": -46.63}
    status, body = await hook(client, trigger, {**sent, "time": "2016-12-31T23:59:60Z"})
    assert status == 201 and body["time"] == "2016-12-31T23:59:59.999Z", body
    status, again = await hook(client, trigger, {**sent, "time": "2016-12-31T21:59:60-02:00"})
    assert status == 200 and again["duplicate"] is True, again
    status, refused = await hook(client, trigger, {**sent, "time": "2016-12-31T12:00:60Z"})
    assert status == 422 and refused["errors"][0]["pointer"] == "/time", refused


async def _dry_run(client: Client, fields: str, payload: dict[str, Any]) -> Any:
    mapping = (
        "name: m\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        f"fields:\n  plate: p\n{fields}"
    )
    response = await client.post(
        "/api/v1/mappings/test",
        json={"mapping": mapping, "payload": {"p": "ABC1D23", **payload}},
        headers=auth(),
    )
    assert response.status == 200, await response.text()
    (result,) = (await response.json())["results"]
    return result["document"]


async def test_the_datetime_transform_reads_a_leap_second_in_iso_and_in_a_format(
    client: Client,
) -> None:
    document = await _dry_run(
        client,
        "  attributes.iso: {from: a, transforms: [{datetime: {}}]}\n"
        "  attributes.local: {from: b, transforms: [{datetime: {input_tz: America/Sao_Paulo}}]}\n"
        "  attributes.erp: {from: c, transforms: [{datetime: "
        "{parse: '%d/%m/%Y %H:%M:%S', input_tz: America/Sao_Paulo}}]}\n",
        {"a": "2016-12-31T23:59:60Z", "b": "2016-12-31T21:59:60", "c": "31/12/2016 21:59:60"},
    )
    assert document["attributes"] == {
        "iso": "2016-12-31T23:59:59.999Z",
        "local": "2016-12-31T23:59:59.999Z",
        "erp": "2016-12-31T23:59:59.999Z",
    }


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ("{input_tz: America/New_York}", "2016-12-31T23:59:60"),  # 04:59:60Z
        ("{}", "2016-12-31T10:59:60"),  # read in UTC: not its last minute
        ("{parse: '%d/%m/%Y %H:%M:%S', input_tz: America/New_York}", "31/12/2016 23:59:60"),
        ("{parse: '%d/%m/%Y %H:%M:%S%z'}", "31/12/2016 23:59:60-0500"),
    ],
)
async def test_a_wall_time_leap_second_outside_the_utc_days_last_minute_is_refused(
    client: Client, spec: str, text: str
) -> None:
    """Second 60 without an offset is checked once its zone places it: 23:59:60 in New York
    is 04:59:60Z, where no leap second was ever inserted (refused, as the same instant with
    its offset, `23:59:60-05:00`, is). Before, any hour's minute 59 was taken."""
    mapping = (
        "name: m\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields:\n  plate: p\n"
        f"  attributes.t: {{from: a, transforms: [{{datetime: {spec}}}]}}\n"
    )
    body = {"mapping": mapping, "payload": {"p": "ABC1D23", "a": text}}
    response = await client.post("/api/v1/mappings/test", json=body, headers=auth())
    problem = await response.json()
    assert response.status == 422, problem
    (error,) = problem["errors"]
    assert error["pointer"] == "/payload/a", error
    assert "last minute of a UTC day" in error["message"], error


async def test_a_wall_time_leap_second_in_the_utc_days_last_minute_is_read(
    client: Client,
) -> None:
    document = await _dry_run(
        client,
        "  attributes.ny: {from: a, transforms: [{datetime: {input_tz: America/New_York}}]}\n"
        "  attributes.erp: {from: b, transforms: [{datetime: "
        "{parse: '%d/%m/%Y %H:%M:%S%z'}}]}\n",
        {"a": "2016-12-31T18:59:60", "b": "31/12/2016 18:59:60-0500"},
    )
    assert document["attributes"] == {
        "ny": "2016-12-31T23:59:59.999Z",
        "erp": "2016-12-31T23:59:59.999Z",
    }
