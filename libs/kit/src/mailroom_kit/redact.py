"""What a log line (or a dead letter) may say about an unexpected error.

Postgres messages, DETAIL and CONTEXT echo the values that caused them (a tenant's metadata, an
address, a body), so a database error is described by its class, where it was raised and its
SQLSTATE only. Any other message is cut to its first line, quoted fragments masked, and bounded.
No traceback: its text would carry the message again.
"""

from __future__ import annotations

import re

import psycopg

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
MAX_LOGGED_MESSAGE = 200


def describe_error(exc: BaseException) -> dict[str, str]:
    fields = {"error_class": f"{type(exc).__module__}.{type(exc).__qualname__}"}
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        fields["error_at"] = f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
    if isinstance(exc, psycopg.Error):
        fields["sqlstate"] = exc.sqlstate or ""
    else:
        first_line = (str(exc).splitlines() or [""])[0]
        fields["error"] = _QUOTED.sub("'…'", first_line)[:MAX_LOGGED_MESSAGE]
    return fields


def error_text(exc: BaseException) -> str:
    """`describe_error` as one line (for a dead letter's `error`)."""
    return " ".join(f"{k}={v}" for k, v in describe_error(exc).items())
