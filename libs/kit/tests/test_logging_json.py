"""The JSON renderer's serializer (msgspec): JSON-native values as the stdlib would write them, the
rest as their repr, and never invalid JSON."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

from mailroom_kit.logging import dumps


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def test_json_native_values_as_the_stdlib_writes_them() -> None:
    line = {"event": "http.request", "status": 202, "duration_ms": 3.5, "ok": True, "none": None, "ids": ["a", "b"]}
    assert json.loads(dumps(line)) == line
    assert list(json.loads(dumps(line))) == list(line)  # field order kept


def test_other_values_are_their_repr_and_the_line_stays_valid_json() -> None:
    when = datetime(2026, 12, 2, 0, 5, 58, 987041, tzinfo=UTC)
    decoded = json.loads(dumps({"obj": Opaque(), "when": when, "nan": math.nan, "error": ValueError("x")}))
    assert decoded == {
        "obj": "<opaque>",
        "when": "2026-12-02T00:05:58.987041Z",
        "nan": None,
        "error": "ValueError('x')",
    }


# --- the JSON line's own processors (issue 15): the same fields structlog's processors wrote


def test_merge_context_reads_what_structlog_bound() -> None:
    import structlog
    from mailroom_kit.logging import merge_context

    structlog.contextvars.clear_contextvars()
    try:
        structlog.contextvars.bind_contextvars(request_id="req_1", tenant_id="ten_1", gone="x")
        structlog.contextvars.unbind_contextvars("gone")
        with structlog.contextvars.bound_contextvars(batch=3):
            ours = merge_context(None, "info", {"event": "e", "tenant_id": "explicit"})
            theirs = structlog.contextvars.merge_contextvars(None, "info", {"event": "e", "tenant_id": "explicit"})
        assert ours == theirs == {"event": "e", "tenant_id": "explicit", "request_id": "req_1", "batch": 3}
        after = merge_context(None, "info", {})
        assert (
            after
            == structlog.contextvars.merge_contextvars(None, "info", {})
            == {"request_id": "req_1", "tenant_id": "ten_1"}
        )
    finally:
        structlog.contextvars.clear_contextvars()


def test_the_timestamp_is_rfc3339_utc_with_microseconds() -> None:
    import re
    import time

    from mailroom_kit.logging import add_timestamp

    for _ in range(3):
        before = datetime.now(UTC)
        stamp = add_timestamp(None, "info", {})["timestamp"]
        after = datetime.now(UTC)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
        assert before <= datetime.fromisoformat(stamp.replace("Z", "+00:00")) <= after
        time.sleep(0.6)  # across a second: the cached date and time of day move on


def test_a_line_longer_than_a_pipe_holds_is_written_whole() -> None:
    import os
    import threading

    from mailroom_kit.logging import LineWriter

    read, write = os.pipe()
    line = b'{"event":"big","data":"' + b"x" * 300_000 + b'"}\n'  # a pipe holds 64 KiB
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    LineWriter(write).msg(line)
    os.close(write)
    reader.join(10)
    os.close(read)
    assert bytes(received) == line
