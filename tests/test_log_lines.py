"""What `configure_logging` lets through: the gateway's lines at the level asked for, one
JSON object per line, and none of the database driver's own debugging."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from gateway.logs import configure_logging, request_id_var


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging sets the root logger up for a process; the test process gets its own
    back (pytest's capture handlers included)."""
    root, driver = logging.getLogger(), logging.getLogger("pymongo")
    handlers, level, driver_level = root.handlers[:], root.level, driver.level
    yield
    root.handlers[:], root.level = handlers, level
    driver.setLevel(driver_level)


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.usefixtures("restored_logging")
def test_debug_level_shows_the_gateway_s_debug_lines_and_not_the_driver_s_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GATEWAY_LOG_LEVEL=DEBUG used to log every command PyMongo sent, with its documents
    (entities' CPFs and names, UI users' password hashes), its connection checkouts and
    server selections: 2,300 lines in 10 s of a nearly idle gateway."""
    configure_logging("DEBUG")
    logging.getLogger("gateway.access").debug("request", extra={"status": 200})
    logging.getLogger("pymongo.command").debug('{"commandName": "insert", "documents": []}')
    logging.getLogger("pymongo.connection").debug("Connection checked out")
    logging.getLogger("pymongo.serverSelection").debug("Server selection succeeded")
    logging.getLogger("pymongo.topology").warning("a server the driver could not reach")
    lines = _lines(capsys.readouterr().err)
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("gateway.access", "DEBUG"),
        ("pymongo.topology", "WARNING"),
    ]


@pytest.mark.usefixtures("restored_logging")
def test_a_level_above_info_holds_the_driver_s_info_lines_back_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("WARNING")
    logging.getLogger("pymongo.topology").info("Starting topology monitoring")
    logging.getLogger("gateway.store.health").info("database up again")
    logging.getLogger("gateway.store.health").warning("database marked down")
    lines = _lines(capsys.readouterr().err)
    assert [line["message"] for line in lines] == ["database marked down"]


@pytest.mark.usefixtures("restored_logging")
def test_plain_text_lines_carry_the_request_id_and_every_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GATEWAY_LOG_JSON=false printed `... DEBUG gateway.access: request` and nothing else:
    no request id, status or route, no port of the embedded database. The fields follow
    the message as key=value; a value that is not a plain word is written as JSON."""
    configure_logging("DEBUG", json=False)
    token = request_id_var.set("abc123")
    try:
        access = {"method": "POST", "route": "/hooks/{id}", "status": 404, "duration_ms": 1.5}
        logging.getLogger("gateway.access").debug("request", extra=access)
    finally:
        request_id_var.reset(token)
    started = {"port": 27018, "storage": "/var/my data", "note": 'a "b"=c'}
    logging.getLogger("gateway.store.embedded").info("embedded database started", extra=started)
    first, second = capsys.readouterr().err.splitlines()
    assert first.endswith(
        " DEBUG gateway.access: request request_id=abc123 method=POST route=/hooks/{id} "
        "status=404 duration_ms=1.5"
    )
    assert second.endswith(
        " INFO gateway.store.embedded: embedded database started port=27018 "
        'storage="/var/my data" note="a \\"b\\"=c"'
    )
