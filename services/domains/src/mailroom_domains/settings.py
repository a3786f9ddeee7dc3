"""Settings of the domains service, read once from MAILROOM_DOMAINS_* (and shared MAILROOM_*) variables."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec
from mailroom_kit.settings import BaseSettings

Positive = Annotated[float, msgspec.Meta(gt=0)]
Label = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]


class DomainsSettings(BaseSettings, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "MAILROOM_DOMAINS_"

    # HTTP port of /health, /ready and /metrics.
    port: int = 8003
    # How often pending / partially verified / temporarily failing domains are checked, in seconds
    # (also the poller's tick). Dev and tests use ~0.5.
    poll_interval_seconds: Positive = 60.0
    # How often an already verified domain is re-checked, in seconds.
    recheck_interval_seconds: Positive = 3600.0
    # A domain not verified this many hours after it was added becomes `failed` (SPEC: 72 h).
    verification_timeout_hours: Positive = 72.0
    # MAIL FROM subdomain used when a create request leaves it empty (`bounce` → bounce.<domain>).
    default_mail_from_subdomain: Label = "bounce"
    # How many due domains one poller replica claims per round (they are checked concurrently).
    check_batch_size: Annotated[int, msgspec.Meta(ge=1, le=500)] = 20
    # A claimed domain is not handed to another replica for this long, in seconds (covers a slow SES call;
    # a late second check is harmless: transitions are decided under a row lock).
    claim_lease_seconds: Positive = 120.0
    # Per-call timeout of the SES API (connect and read), in seconds.
    ses_timeout_seconds: Positive = 5.0
    # A create request gives up (answering `unavailable`, storing nothing) if SES has not answered within
    # this many seconds; keep it below the API's RPC timeout (10 s) so no domain is stored after the caller
    # gave up. A retry reuses the SES identity.
    create_timeout_seconds: Positive = 8.0
    # AWS region of the SES account (MAILROOM_AWS_REGION, shared); also names the MAIL FROM MX host.
    aws_region: str = "us-east-1"
    # SES v2 endpoint override (MAILROOM_SES_ENDPOINT_URL, shared), e.g. the local SES emulator; unset = AWS.
    ses_endpoint_url: str | None = None
