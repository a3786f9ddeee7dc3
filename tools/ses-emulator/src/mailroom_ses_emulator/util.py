"""Small helpers shared by the emulator's modules."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from pathlib import Path

_REGION_PREFIX = {"us-west-2": "0101", "eu-west-1": "0102"}


def iso_ms(ts: float | None = None) -> str:
    """``2022-03-28T23:59:32.804Z`` (UTC, milliseconds), as SES and SNS write timestamps."""
    t = time.time() if ts is None else ts
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def ses_message_id(ts: float | None = None, region: str = "us-east-1") -> str:
    """An SES-shaped id: ``0100`` + 12 hex digits of epoch ms + ``-<uuid>-000000``."""
    t = time.time() if ts is None else ts
    prefix = _REGION_PREFIX.get(region, "0100")
    return f"{prefix}{int(t * 1000):012x}-{uuid.uuid4()}-000000"


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
