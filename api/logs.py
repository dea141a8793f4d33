"""Structured logs: one JSON object per line with the time, level, logger, message and
the id of the request being served (``X-Request-Id``, taken from the client when it is a
plain token, else made up). Nothing here logs API keys or, unless ``log_level=debug``
asks for it elsewhere, message contents: request lines carry the route and path
without the query string (filters such as ``search=`` may hold content)."""

from __future__ import annotations

import contextvars
import logging
import logging.config
import re
import time
import uuid
from typing import Any

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_TOKEN = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")


def new_request_id(given: str | None) -> str:
    if given and _TOKEN.match(given):
        return given
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            out["request_id"] = rid
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(level: str, fmt: str) -> None:
    """Logging for ``istore serve``: JSON (default) or plain text, uvicorn included."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"main": formatter},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "main",
                    "stream": "ext://sys.stderr",
                }  # fmt: skip
            },
            "root": {"handlers": ["stderr"], "level": level.upper()},
            "loggers": {
                name: {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
                for name in ("uvicorn", "uvicorn.error")
            }
            | {"uvicorn.access": {"handlers": [], "propagate": False}},
        }
    )
