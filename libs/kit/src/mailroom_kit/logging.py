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
import os
import sys
import time
from typing import Any

import msgspec
import structlog
import structlog.contextvars
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


# --- issue 15: every request and every message writes a line, so the line's cost is on every hot
# path (in the webhooks service, 7 % of its CPU, most of it structlog's copy of the whole context).

# structlog keeps one ContextVar per bound key, named `structlog_<key>`, in this dict (checked
# against structlog's own merge_contextvars by the kit's tests, so an upgrade that moves it fails
# them, not the logs).
_STRUCTLOG_VARS = structlog.contextvars._CONTEXT_VARS
_PREFIX_LEN = len(structlog.contextvars.STRUCTLOG_KEY_PREFIX)


def merge_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog's `merge_contextvars` reading only structlog's own variables (a few) instead of
    copying the whole context (every library's variables) for each line."""
    for name, var in tuple(_STRUCTLOG_VARS.items()):  # a copy: another thread may bind a new key
        value = var.get()
        if value is not Ellipsis:  # unbound (structlog sets Ellipsis)
            event_dict.setdefault(name[_PREFIX_LEN:], value)
    return event_dict


class _Clock:
    __slots__ = ("prefix", "second")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""


_clock = _Clock()


def add_timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """`timestamp`: UTC, RFC 3339 with microseconds and `Z` (as TimeStamper(fmt="iso", utc=True)
    writes it), the date and time of day formatted once per second."""
    now = time.time()
    second = int(now)
    clock = _clock
    if second != clock.second:
        clock.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        clock.second = second
    event_dict["timestamp"] = f"{clock.prefix}.{int((now - second) * 1_000_000):06d}Z"
    return event_dict


def _line(_: WrappedLogger, __: str, event_dict: EventDict) -> bytes:
    """The JSON line itself, as bytes (no str round trip)."""
    return _ENCODER.encode(event_dict) + b"\n"


class LineWriter:
    """structlog's logger in JSON mode: each line is one `os.write` on the stream's file descriptor
    (PrintLogger's print took a lock, went through the text and buffer layers and flushed)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def msg(self, line: bytes) -> None:
        view = memoryview(line)
        while view:  # a pipe may take less than the whole line
            view = view[os.write(self._fd, view) :]

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _stream_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a descriptor
        return None


def configure_logging(service: str, level: str = "info", fmt: str = "auto") -> None:
    renderer: Processor
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    if use_json:
        renderer = structlog.processors.JSONRenderer(serializer=dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Processor] = [
        merge_context,
        structlog.processors.add_log_level,
        _add_service(service),
        add_timestamp,
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

    fd = _stream_fd() if use_json else None
    factory: Any
    if fd is not None:
        writer = LineWriter(fd)
        processors, factory = [*shared, _line], lambda *_: writer
    else:
        processors, factory = [*shared, renderer], structlog.PrintLoggerFactory(file=sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
