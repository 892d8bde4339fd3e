"""Structured JSON logs; every line carries the request id of the request it belongs to."""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

# Attributes every LogRecord has; anything else was passed in `extra=` and is emitted.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (request_id := request_id_var.get()) is not None:
            entry["request_id"] = request_id
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
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
