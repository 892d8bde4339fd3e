"""A strptime `parse` format naming a field twice (`"%d/%m/%Y %H:%m"`, the minutes typed `%m`;
`"%c %Y"`, as `%c` holds `%Y`) cannot be read by strptime (its pattern would define a group
twice: `re.error` on every value, a 500): refused at upload, naming the field; a version
stored before refuses every value as a `datetime` problem, the next format of a list tried."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.mapping.model import EvalError
from gateway.mapping.timefmt import _strptime_pattern, compile_datetime
from tests.support import auth
from tests.triggers_support import YAML, Client

POINTER = "/fields/attributes.seen/transforms/0/datetime/parse"


def _mapping(how: str) -> str:
    return (
        "name: slip\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields:\n"
        "  plate: {from: placa, required: true}\n"
        f"  attributes.seen: {{from: quando, transforms: [{{datetime: {{parse: '{how}'}}}}]}}\n"
    )


@pytest.mark.parametrize(
    ("how", "told"),
    [
        ("%d/%m/%Y %H:%m", "'%m' is named twice: strptime reads each field once (minutes are %M"),
        ("%Y-%m-%d %H:%M:%M", "'%M' is named twice"),
        ("%c %Y", "'%Y' is named twice (%c holds it)"),
        ("%x %c", "'%d' is named twice (%c and %x hold it)"),
    ],
)
async def test_the_upload_refuses_a_format_naming_a_field_twice(
    client: Client, how: str, told: str
) -> None:
    response = await client.post(
        "/api/v1/mappings", data=_mapping(how).encode(), headers={**auth(), **YAML}
    )
    body = await response.json()
    assert response.status == 422, body
    (problem,) = body["errors"]
    assert problem["pointer"] == POINTER
    assert told in problem["message"]


async def test_a_format_naming_a_field_once_in_each_of_x_and_x_uploads(client: Client) -> None:
    """`%x` (`%m/%d/%y`) and `%X` (`%H:%M:%S`) name different fields: read together."""
    response = await client.post(
        "/api/v1/mappings", data=_mapping("%x %X").encode(), headers={**auth(), **YAML}
    )
    assert response.status == 201, await response.text()


def test_a_stored_format_naming_a_field_twice_is_a_datetime_problem_then_the_next_format() -> None:
    """A version stored before such formats were refused (compiled without `strict`): each
    value a `datetime` problem, never strptime's `re.error`; a list goes on to its next."""
    one = compile_datetime({"parse": "%d/%m/%Y %H:%m"}, pytest.fail, strict=False)
    assert one is not None
    with pytest.raises(EvalError, match="'%m' is named twice"):
        one("07/12/2026 13:12")
    listed = compile_datetime(
        {"parse": ["%Y-%m-%d %H:%m:%S", "iso8601"]}, pytest.fail, strict=False
    )
    assert listed is not None
    assert listed("2026-12-07T13:12:00Z") == "2026-12-07T13:12:00Z"


_DIRECTIVES = [*"aAbBcdfGHIjmMpSuUVwWxXyYzZ%", "s", "Q", ""]
_SEPARATORS = [" ", "/", ":", "-", "T", ".", "", ",", "  ", "às "]


def _runs(how: str) -> bool:
    try:
        _strptime_pattern(how)
    except (re.error, KeyError, ValueError, IndexError):
        return False
    return True


def _values(rng: random.Random, how: str) -> list[Any]:
    moment = datetime(
        rng.randint(1, 9999),
        rng.randint(1, 12),
        rng.randint(1, 28),
        rng.randint(0, 23),
        rng.randint(0, 59),
        rng.randint(0, 59),
        rng.choice([0, 123000, 123456]),
        tzinfo=rng.choice([UTC, timezone(timedelta(hours=-3))]),
    )
    try:
        written = moment.strftime(how)
    except ValueError:
        written = "1"
    return [written, written[:-1], written + "9", " " * 40 + written, "", "x", 12]


def test_formats_the_upload_accepts_are_those_strptime_runs() -> None:
    """A few thousand random formats (fixed seed): the upload accepts a format exactly when
    strptime can compile it, and the parser of an accepted one raises nothing but a
    `datetime` problem, on what strftime writes with it and on other values."""
    rng = random.Random(20261207)
    accepted = 0
    for _ in range(3000):
        parts = rng.randint(1, 5)
        how = "".join(f"%{rng.choice(_DIRECTIVES)}{rng.choice(_SEPARATORS)}" for _ in range(parts))
        problems: list[str] = []
        parse = compile_datetime({"parse": how}, lambda why, *at, told=problems: told.append(why))
        assert (parse is not None) == _runs(how), (how, problems)
        if parse is None:
            continue
        accepted += 1
        for value in _values(rng, how):
            try:
                parse(value)
            except EvalError:
                pass
    assert accepted > 300  # the draw reaches the parsers, not only the refusals
