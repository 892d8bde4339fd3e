"""What a `datetime` `parse` strptime format costs on a partner's text: linear in the text.

The full-width check of a compact run (`"%H%M"`, `"%Y%m%d"`) once ran a second pattern of
`.*?` and `\\s+` pairs, which tried every split of a value's blank runs: the values here
took minutes each (a 48-character one 102 s, measured), all of it on the event loop. Each test
would outlast the suite's 60 s timeout before; none asserts on wall time."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.mapping.model import EvalError
from gateway.mapping.timefmt import compile_datetime
from tests.support import auth
from tests.triggers_support import Client, bearer, create_trigger, upload_mapping

# Blank runs between the fields and a compact run one digit short: strptime reads the
# value (a one-digit field), the full-width check refuses it.
SIX_FIELDS = "%d %H %M %S %y %j %Y%m"
SIX_FIELDS_SHORT = (" " * 7).join(["1", "1", "1", "1", "26", "1", "20261"])
FOUR_FIELDS = "%a %d %b %Y %H%M"
FOUR_FIELDS_SHORT = (" " * 12).join(["Mon", "1", "Jan", "2026", "930"])
ALL_DIGITS = "%f%j%d%m%H%M%S%U%W%V%I%u%w%y%Y%Gx"
MAPPING = f"""
name: seen
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {{from: placa, required: true}}
  attributes.seen: {{from: quando, transforms: [{{datetime: {{parse: "{FOUR_FIELDS}"}}}}]}}
"""


def _parser(how: str) -> Any:
    parse = compile_datetime({"parse": how}, pytest.fail)
    assert parse is not None
    return parse


@pytest.mark.parametrize(
    ("how", "text"),
    [
        (SIX_FIELDS, SIX_FIELDS_SHORT),
        (FOUR_FIELDS, FOUR_FIELDS_SHORT),
        ("%d %b %Y %H%M", (" " * 17).join(["7", "Dec", "2026", "130"])),
        # every digit directive once, each of several widths, and a tail that never comes:
        # strptime's own pattern tries its splits, a bound of the format (a few ms)
        (ALL_DIGITS, "1" * 64),
        (
            "%B%b%A%a%p%Z%z %f%j%d%m%H%M%S%U%W%V%I%u%w%y%Y%Gx",
            "MayMayMondayMonAMUTC+0000 " + "1" * 38,
        ),
    ],
)
def test_a_64_character_value_that_took_minutes_is_refused_at_once(how: str, text: str) -> None:
    assert len(text) <= 64
    with pytest.raises(EvalError, match="does not match"):
        _parser(how)(text)


def test_blank_runs_before_a_compact_run_read_as_strptime_reads_them() -> None:
    """The same formats, the compact run at its full width: read, whatever the blanks."""
    text = (" " * 7).join(["1", "1", "1", "1", "26", "336", "202612"])
    assert _parser(SIX_FIELDS)(text) == "2026-12-02T01:01:01Z"
    text = (" " * 12).join(["Wed", "2", "Dec", "2026", "0930"])
    assert _parser(FOUR_FIELDS)(text) == "2026-12-02T09:30:00Z"


def test_a_compact_run_is_checked_where_strptime_read_it() -> None:
    """`%z` then `%m%S`: strptime reads "-0000737" as -00:00, month 7 (one digit), second
    37: a digit lost, though "-000" and "07" "37" would be a split of two-digit fields."""
    with pytest.raises(EvalError, match="does not match"):
        _parser("%z%m%S")("-0000737")


def _draft(how: str) -> dict[str, Any]:
    return {
        "name": "seen",
        "direction": "inbound",
        "entity_type": "vehicle",
        "key": ["plate"],
        "fields": {
            "plate": {"from": "placa", "required": True},
            "attributes.seen": {"from": "quando", "transforms": [{"datetime": {"parse": how}}]},
        },
    }


async def test_a_viewers_dry_run_of_a_hostile_value_is_a_datetime_problem(client: Client) -> None:
    response = await client.post(
        "/api/v1/mappings/test",
        json={"mapping": _draft(SIX_FIELDS), "payload": {"placa": "A", "quando": SIX_FIELDS_SHORT}},
        headers=auth(role="viewer"),
    )
    assert response.status == 422, await response.text()
    (problem,) = (await response.json())["errors"]
    assert (problem["pointer"], problem["keyword"]) == ("/payload/quando", "datetime")


async def test_a_batch_of_hostile_values_is_answered_item_by_item(client: Client) -> None:
    """100 items of a 62-character value (7-15 s each before) to a hook: every item refused
    as a `datetime` problem, the call answered."""
    await upload_mapping(client, MAPPING)
    trigger = await create_trigger(client, mapping="seen")
    items = [{"placa": f"ABC1D{i:02d}", "quando": FOUR_FIELDS_SHORT} for i in range(100)]
    response = await client.post(f"/hooks/{trigger['id']}", json=items, headers=bearer(trigger))
    body = await response.json()
    assert response.status == 207, body
    assert body["summary"] == {"items": 100, "created": 0, "updated": 0, "failed": 100}
    keywords = {error["keyword"] for item in body["results"] for error in item["problem"]["errors"]}
    assert keywords == {"datetime"}
