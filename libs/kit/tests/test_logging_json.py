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
