"""The `Idempotency-Key` header of `POST /v1/emails` and `POST /v1/emails/batch`.

A key is 1..256 visible ASCII characters (`!` to `~`: no space, no control character), scoped to
the tenant and the key's mode (a test key's record never answers a live key, which would leave a
real email unsent). The request's fingerprint is the endpoint and the SHA-256 of its body as
received (bytes, not the parsed JSON). The record, with the answer given, is written by the very
statement that writes the email(s) (emails/repository.py), kept `MAILROOM_API_IDEMPOTENCY_TTL_SECONDS`,
never replayed after that, and deleted by `purge_worker`. A refused request (any 4xx) records none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.openapi.spec import OpenAPIResponse, Operation, Parameter, Schema
from litestar.openapi.spec.enums import OpenAPIType
from mailroom_kit.logging import get_logger
from mailroom_kit.runtime import Runtime
from mailroom_kit.wake import sleep_until_stopped

from mailroom_api.emails import repository as repo
from mailroom_api.errors import validation
from mailroom_api.settings import ApiSettings

HEADER = "idempotency-key"
KEY_PARAM = "Idempotency-Key"  # `param` of the errors about it
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 256
KEY_PATTERN = r"^[\x21-\x7e]{1,256}$"
PURGE_BATCH = 1000

log = get_logger("mailroom_api.idempotency")


@dataclass(frozen=True)
class IdempotencyKey:
    key: str
    endpoint: str  # e.g. "POST /v1/emails"
    body_sha256: bytes


def _problem(value: str) -> str | None:
    if not value:
        return "Idempotency-Key must not be empty"
    if len(value) > MAX_KEY_LENGTH:
        return f"Idempotency-Key is longer than {MAX_KEY_LENGTH} characters"
    if not all("\x21" <= c <= "\x7e" for c in value):
        return "Idempotency-Key may hold only visible ASCII characters (no spaces or control characters)"
    return None


async def read_key(request: Request[Any, Any, Any], endpoint: str) -> IdempotencyKey | None:
    """The request's key and fingerprint, None without the header; 422 (param `Idempotency-Key`)
    for a malformed one or one given twice. The body was read by the guard: this is its cache."""
    values = request.headers.getall(HEADER, [])
    if not values:
        return None
    if len(values) > 1:
        raise validation("Idempotency-Key given more than once", KEY_PARAM)
    value = values[0]
    problem = _problem(value)
    if problem is not None:
        raise validation(problem, KEY_PARAM)
    body = await request.body()
    return IdempotencyKey(key=value, endpoint=endpoint, body_sha256=hashlib.sha256(body).digest())


async def purge_expired(rt: Runtime[ApiSettings], *, batch: int = PURGE_BATCH) -> int:
    """Delete every expired record, `batch` rows per statement; how many."""
    total = 0
    while True:
        async with rt.pool.connection() as conn, conn.transaction():
            deleted = await repo.purge_expired_idempotency_keys(conn, batch)
        total += deleted
        if deleted < batch or rt.stop.is_set():
            return total


async def purge_worker(rt: Runtime[ApiSettings]) -> None:
    """Every `idempotency_purge_interval_seconds`, delete the expired records (every API process
    runs it; concurrent purgers skip each other's rows)."""
    interval = rt.settings.idempotency_purge_interval_seconds
    while not rt.stop.is_set():
        try:
            deleted = await purge_expired(rt)
            if deleted:
                log.info("idempotency.purged", deleted=deleted)
        except Exception as exc:  # the database is down: try again at the next interval
            log.warning("idempotency.purge_failed", error=type(exc).__name__)
        if await sleep_until_stopped(rt.stop, interval):
            return


@dataclass
class IdempotentOperation(Operation):
    """OpenAPI of an operation taking the header (the handler reads it itself, off Litestar's
    parameter parsing, so a send without it costs nothing more)."""

    def __post_init__(self) -> None:
        header = Parameter(
            name="Idempotency-Key",
            param_in="header",
            required=False,
            description="Up to 256 visible ASCII characters, kept 24 h per tenant and mode: the same key "
            "and body replay the first answer (`Idempotent-Replayed: true`); another body or endpoint is "
            "409 `idempotency_conflict`.",
            schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=MAX_KEY_LENGTH, pattern=KEY_PATTERN),
        )
        self.parameters = [*(self.parameters or []), header]
        conflict = (self.responses or {}).get("409")
        if isinstance(conflict, OpenAPIResponse):
            conflict.description = (
                "idempotency_conflict: the Idempotency-Key was used with another body or endpoint; "
                "idempotency_in_progress: a request with that key could not be settled, retry"
            )
