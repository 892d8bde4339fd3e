"""Structured logs, JSON (the default) or plain text: every line carries the request id of the
request it belongs to and the fields passed in `extra=` (in plain text as `key=value`)."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

# Attributes every LogRecord has; anything else was passed in `extra=` and is emitted.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The line's request id (if any) and its `extra=` fields."""
    fields: dict[str, Any] = {}
    if (request_id := request_id_var.get()) is not None:
        fields["request_id"] = request_id
    fields.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`; a value holding a blank, a quote, an `=`
    or a control character, and any value that is not text, is written as JSON."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        pairs = (f"{key}={_text(value)}" for key, value in _fields(record).items())
        return " ".join((super().formatMessage(record), *pairs))


_PLAIN = re.compile(r'[^\s"=\\]+')


def _text(value: Any) -> str:
    if isinstance(value, str) and _PLAIN.fullmatch(value) and value.isprintable():
        return value
    return orjson.dumps(value, default=str).decode()


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log repeats what our middleware logs, without the request id.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiosmtpd (`gateway demo-partners`' SMTP server) logs every SMTP command at INFO.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    # PyMongo logs every command it sends (with the documents: names, CPFs, password
    # hashes), every connection checkout and server selection at DEBUG: thousands of lines a
    # minute on an idle gateway. GATEWAY_LOG_LEVEL=DEBUG is for the gateway's own lines.
    logging.getLogger("pymongo").setLevel(max(logging.INFO, root.level))
