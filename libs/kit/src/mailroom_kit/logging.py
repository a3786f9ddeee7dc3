"""structlog set up once per process: JSON lines unless stderr is a TTY (or forced), and the
standard library's `logging` (uvicorn, botocore, nats, asyncio, warnings) routed through the same
renderer, so a JSON-mode process writes nothing but JSON lines.

Every line carries `event`, `level`, `timestamp` and `service`; lines from stdlib loggers add
`logger` (the stdlib logger's name). Event names are short and dotted (`email.accepted`,
`http.request`). Third-party stdlib loggers are chatty at INFO, so the stdlib side logs WARNING and
above unless `MAILROOM_LOG_LEVEL=debug`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# Marks the root handler this module installed, so a second configure_logging replaces it.
_HANDLER_NAME = "mailroom"


def _add_service(service: str) -> Processor:
    # A processor, not only a context variable: records logged from threads (botocore in an
    # executor) or from contexts that cleared their variables still name their service.
    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def _fallback(value: Any) -> str:
    """What msgspec cannot encode is written as its repr, as structlog's own JSON fallback does."""
    return repr(value)


_ENCODER = msgspec.json.Encoder(enc_hook=_fallback)


def dumps(event_dict: Any, **_: Any) -> str:
    """structlog's JSON serializer: msgspec, not the stdlib `json` (whose encoder was the larger part of
    the cost of the one line every request and message writes). Same output for JSON-native values;
    datetimes come out as RFC 3339 strings, NaN as null (valid JSON either way)."""
    return _ENCODER.encode(event_dict).decode()


def configure_logging(service: str, level: str = "info", fmt: str = "auto") -> None:
    renderer: Processor
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    if use_json:
        renderer = structlog.processors.JSONRenderer(serializer=dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_service(service),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]

    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        # Ours from an earlier call, or a plain console handler (basicConfig) that would write
        # unformatted lines into the same stream; handlers elsewhere (files, pytest) stay.
        if old.get_name() == _HANDLER_NAME or (
            type(old) is logging.StreamHandler and old.stream in (sys.stderr, sys.stdout)
        ):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    logging.captureWarnings(True)

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
