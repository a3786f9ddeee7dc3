"""API service settings (MAILROOM_API_*; the operator token also as MAILROOM_OPERATOR_TOKEN)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Literal, Self

import msgspec
from mailroom_kit.settings import BaseSettings

from mailroom_api.reputation.policy import ReputationDefaults
from mailroom_api.unsubscribe.tokens import UnsubscribeLinks

MAX_SES_MESSAGE_BYTES = 40_000_000  # SES: "40 MB" total message size, attachments included

_PUBLIC_URL = re.compile(
    r"(?:https://[A-Za-z0-9.-]+|http://(?:127\.0\.0\.1|localhost|\[::1\]))(?::\d{1,5})?(?:/[A-Za-z0-9._~/-]*)?"
)
_MAILTO = re.compile(r"[A-Za-z0-9.!#$%&'*+/=^_`{|}~-]+@[A-Za-z0-9.-]+")


class ApiSettings(BaseSettings, frozen=True, kw_only=True):  # type: ignore[call-arg]
    env_prefix = "MAILROOM_API_"

    port: int = 8000
    # Bearer token for /admin/v1 (compared in constant time). Empty: the operator API answers 401.
    # Read from MAILROOM_API_OPERATOR_TOKEN, or MAILROOM_OPERATOR_TOKEN (the SPEC's name) when unset.
    operator_token: str = ""
    # Largest accepted request body in bytes (a bigger one is 413 payload_too_large). Attachments
    # arrive base64 in JSON (4/3 of their size): to accept a message of MAX_MESSAGE_BYTES, keep this
    # at least 4/3 of it plus a little (the default: 14 MiB for the 10 MiB message).
    max_body_bytes: int = 14 * 1024 * 1024
    # Largest message the sender may build, in bytes, as SES counts it (headers and encoded bodies,
    # including the text generated from html and base64 attachments); a bigger one is 413
    # payload_too_large at accept time. SPEC: 10 MiB by default; SES accepts up to 40 MB when the
    # account's limit is raised, so at most 40,000,000.
    max_message_bytes: Annotated[int, msgspec.Meta(ge=1024, le=MAX_SES_MESSAGE_BYTES)] = 10 * 1024 * 1024
    # An EmailQueued whose JSON is over this many bytes carries a reference instead of its content,
    # which goes to the JetStream Object Store bucket `mailroom-content` (mailroom_contracts.content).
    # Below NATS's max_payload (1 MiB by default) with room for the rest of the event.
    offload_threshold_bytes: Annotated[int, msgspec.Meta(ge=1024, le=768 * 1024)] = 256 * 1024
    # How long to wait for the domains/webhooks services to answer a request/reply call. Keep it
    # above MAILROOM_DOMAINS_CREATE_TIMEOUT_SECONDS (8), or a slow SES turns a stored domain into a 503.
    rpc_timeout_seconds: float = 10.0
    # Stored content (html, text, custom headers, the attachments' names) is removed this many days
    # after an email was accepted (the log entry, its recipients and timeline stay); 0 keeps it.
    content_retention_days: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    # Copies of the whole service (HTTP, projectors, relay) on the one port (SO_REUSEPORT), under a
    # parent that forwards signals and exits when a copy dies. 1 on Kubernetes (scale pods); on a VM,
    # about the number of cores the API may use.
    processes: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # How long a process may reuse an API key lookup (and its tenant's status). Revocations and
    # tenant status changes are also pushed to every process (LISTEN/NOTIFY), so this only bounds
    # staleness while that listener is down. 0 looks every key up on every request.
    key_cache_seconds: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0
    # How long an Idempotency-Key of POST /v1/emails(/batch) replays its first answer (SPEC: 24 h);
    # after that it is never replayed, and the key may be used again.
    idempotency_ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=30 * 24 * 3600)] = 24 * 3600
    # How often each API process deletes expired Idempotency-Key records (1,000 rows per statement).
    idempotency_purge_interval_seconds: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 300.0
    # issue 23: how often each API process re-publishes the paused/blocked tenants' state to
    # MAILROOM_TENANT (and at start), so the 14-day stream always holds it (tenants/republish.py).
    tenant_republish_interval_seconds: Annotated[float, msgspec.Meta(ge=1, le=7 * 86400)] = 86400.0
    # --- rate limits (issue 23): requests per second of a tenant without its own `rate_limit` (a
    # batch counts its items), shared by every replica; and the burst of such tenants (the token
    # bucket's size; 0: the rate, one second's worth).
    default_rate_limit: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] = 1000
    default_rate_burst: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 0
    # --- broadcast stream (RFC 8058 one-click unsubscribe). Both must be set for broadcast sends
    # (else they are refused): the HMAC key of the unsubscribe tokens (at least 32 characters;
    # every API replica needs the same one; changing it voids the links already sent) ...
    unsubscribe_secret: str = ""
    # ... and the API's public base URL the links point at (https://; http:// only for a loopback
    # host, for local runs), e.g. https://mail-api.example.com.
    public_url: str = ""
    # An address that takes unsubscribe requests by email, added to List-Unsubscribe as a mailto
    # (subject "unsubscribe <token>"); empty: the https link only (what RFC 8058 requires).
    unsubscribe_mailto: str = ""
    # --- templates (issue 17). Templates render in worker processes (templates/pool.py), started
    # on the first render: how many per API process (renders at once; more wait) ...
    template_workers: Annotated[int, msgspec.Meta(ge=1, le=32)] = 2
    # ... the longest a render may take before its worker is killed (422 invalid_template_data) ...
    template_render_timeout_seconds: Annotated[float, msgspec.Meta(ge=0.05, le=30)] = 1.0
    # ... each worker's address-space cap in MiB (RLIMIT_AS; a render allocating more fails) ...
    template_worker_memory_mb: Annotated[int, msgspec.Meta(ge=128, le=16384)] = 512
    # ... and what a send's data key that the template does not declare gets: `error` (422
    # invalid_template_data naming it) or `ignore`. A template declaring no variables takes any data.
    template_extra_variables: Literal["error", "ignore"] = "error"
    # --- delivery truth (issue 22)
    # Suppress an address (reason `bounce`) once this many transient (soft) bounces in a row were
    # recorded for it (per tenant and mode); a delivery to it resets the count. 0: soft bounces
    # never suppress (SES retries them itself; only a hard bounce says the address is gone).
    soft_bounce_suppress_after: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    # --- the reputation guard (issue 22, reputation/): a tenant whose hard-bounce rate or complaint
    # rate over its last `reputation_window_sends` live sends (recipients handed to SES) within
    # `reputation_window_days` is over the threshold (strictly) is paused, once the window holds at
    # least `reputation_min_sends` sends. Rates are fractions (0.05 = 5 %); an operator can set a
    # tenant's own thresholds and minimum (PATCH /admin/v1/tenants/{id}). Off: never pauses (the
    # operator API still shows the figures).
    reputation_guard: bool = True
    reputation_bounce_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.05
    reputation_complaint_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.001
    reputation_window_sends: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    reputation_window_days: Annotated[float, msgspec.Meta(gt=0, le=90)] = 7.0
    reputation_min_sends: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 200
    # The operator API's `warn` flag: a rate over this share of its threshold (0.5: half of it).
    reputation_warn_ratio: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        # Checks a field type cannot express; a failure stops the process at start (SettingsError).
        if self.reputation_min_sends > self.reputation_window_sends:
            raise ValueError(
                "MAILROOM_API_REPUTATION_MIN_SENDS must not exceed MAILROOM_API_REPUTATION_WINDOW_SENDS"
                " (the window could never hold enough sends to trip)"
            )
        if self.unsubscribe_secret and len(self.unsubscribe_secret) < 32:
            raise ValueError("MAILROOM_API_UNSUBSCRIBE_SECRET must be at least 32 characters")
        if self.public_url and (len(self.public_url) > 200 or not _PUBLIC_URL.fullmatch(self.public_url)):
            raise ValueError(
                "MAILROOM_API_PUBLIC_URL must be https://host[:port][/path] (http:// only for 127.0.0.1 or localhost),"
                " at most 200 characters"
            )
        if self.unsubscribe_mailto and (
            len(self.unsubscribe_mailto) > 254 or not _MAILTO.fullmatch(self.unsubscribe_mailto)
        ):
            raise ValueError("MAILROOM_API_UNSUBSCRIBE_MAILTO must be a bare email address")

    @property
    def reputation(self) -> ReputationDefaults:
        """The reputation guard's server-wide settings (a tenant's own thresholds override them)."""
        return ReputationDefaults(
            enabled=self.reputation_guard,
            bounce_rate=self.reputation_bounce_rate,
            complaint_rate=self.reputation_complaint_rate,
            window_sends=self.reputation_window_sends,
            window_days=self.reputation_window_days,
            min_sends=self.reputation_min_sends,
            warn_ratio=self.reputation_warn_ratio,
        )

    @property
    def unsubscribe_links(self) -> UnsubscribeLinks | None:
        """How broadcast emails' unsubscribe links are made; None when the broadcast stream is off."""
        if not (self.unsubscribe_secret and self.public_url):
            return None
        return UnsubscribeLinks(
            secret=self.unsubscribe_secret.encode(),
            public_url=self.public_url.rstrip("/"),
            mailto=self.unsubscribe_mailto or None,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = dict(os.environ if environ is None else environ)
        if "MAILROOM_API_OPERATOR_TOKEN" not in env and "MAILROOM_OPERATOR_TOKEN" in env:
            env["MAILROOM_API_OPERATOR_TOKEN"] = env["MAILROOM_OPERATOR_TOKEN"]
        return super().from_env(env)
