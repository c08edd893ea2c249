"""structlog set-up: JSON lines in production, console on a TTY; stdlib loggers routed too."""

from __future__ import annotations

import logging
import re
import sys

import structlog

_TOKEN = re.compile(r"(token=|Bearer\s+)[^\s&\"']+", re.IGNORECASE)


_NOISE = ("connection open", "connection closed", '%s - "WebSocket %s" [accepted]',
          '%s - "WebSocket %s" 403', '%s - "WebSocket %s" %d')


class _DropPerConnection(logging.Filter):
    """uvicorn's per-socket lines; ``ws_closed`` is the one line per connection."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in _NOISE


CLIENT_TEXT_MAX = 200  # protocol.md section 8: a logged field of client text, at most


def redact(text: str) -> str:
    return _TOKEN.sub(r"\1<redacted>", text)


def clip(text: str | None, limit: int = CLIENT_TEXT_MAX) -> str | None:
    """Client-supplied text for a log line: at most ``limit`` characters, and says so."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit - 1]}…"


def _redact_event(
    _: object, __: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact(value)
    return event_dict


def configure(level: str = "INFO") -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _redact_event,
    ]
    tty = sys.stderr.isatty()
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if tty else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("uvicorn.error").addFilter(_DropPerConnection())
