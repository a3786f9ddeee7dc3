"""API service settings (MAILROOM_API_*; the operator token also as MAILROOM_OPERATOR_TOKEN)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Self

import msgspec
from mailroom_kit.settings import BaseSettings


class ApiSettings(BaseSettings, frozen=True, kw_only=True):  # type: ignore[call-arg]
    env_prefix = "MAILROOM_API_"

    port: int = 8000
    # Bearer token for /admin/v1 (compared in constant time). Empty: the operator API answers 401.
    # Read from MAILROOM_API_OPERATOR_TOKEN, or MAILROOM_OPERATOR_TOKEN (the SPEC's name) when unset.
    operator_token: str = ""
    # Largest accepted request body in bytes (a bigger one is 413 payload_too_large).
    max_body_bytes: int = 10 * 1024 * 1024
    # Largest message the sender may build, in bytes, as SES counts it (headers and encoded bodies,
    # including the text generated from html); a bigger one is 413 payload_too_large at accept
    # time. SPEC: 10 MiB by default; SES accepts up to 40 MB when the account's limit is raised.
    max_message_bytes: int = 10 * 1024 * 1024
    # How long to wait for the domains/webhooks services to answer a request/reply call. Keep it
    # above MAILROOM_DOMAINS_CREATE_TIMEOUT_SECONDS (8), or a slow SES turns a stored domain into a 503.
    rpc_timeout_seconds: float = 10.0
    # How long a process may reuse an API key lookup (and its tenant's status). Revocations and
    # tenant status changes are also pushed to every process (LISTEN/NOTIFY), so this only bounds
    # staleness while that listener is down. 0 looks every key up on every request.
    # Copies of the whole service (HTTP, projectors, relay) on the one port (SO_REUSEPORT), under a
    # parent that forwards signals and exits when a copy dies. 1 on Kubernetes (scale pods); on a VM,
    # about the number of cores the API may use.
    processes: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    key_cache_seconds: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0
    # How long an Idempotency-Key of POST /v1/emails(/batch) replays its first answer (SPEC: 24 h);
    # after that it is never replayed, and the key may be used again.
    idempotency_ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=30 * 24 * 3600)] = 24 * 3600
    # How often each API process deletes expired Idempotency-Key records (1,000 rows per statement).
    idempotency_purge_interval_seconds: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 300.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = dict(os.environ if environ is None else environ)
        if "MAILROOM_API_OPERATOR_TOKEN" not in env and "MAILROOM_OPERATOR_TOKEN" in env:
            env["MAILROOM_API_OPERATOR_TOKEN"] = env["MAILROOM_OPERATOR_TOKEN"]
        return super().from_env(env)
