"""Settings of the domains service, read once from MAILROOM_DOMAINS_* (and shared MAILROOM_*) variables."""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar, Literal

import msgspec
from mailroom_kit.settings import BaseSettings

Positive = Annotated[float, msgspec.Meta(gt=0)]
Label = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]


class DomainsSettings(BaseSettings, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "MAILROOM_DOMAINS_"

    # HTTP port of /health, /ready and /metrics.
    port: int = 8003
    # How often pending / partially verified / temporarily failing domains are checked during their
    # first FAST_PHASE_SECONDS (also the poller's tick, capped at 5 s), in seconds. Dev and tests use ~0.5.
    poll_interval_seconds: Positive = 60.0
    # How long after a domain is added it is checked every POLL_INTERVAL_SECONDS; later (until it
    # verifies or fails at VERIFICATION_TIMEOUT_HOURS) every SLOW_POLL_INTERVAL_SECONDS.
    fast_phase_seconds: Annotated[float, msgspec.Meta(ge=0)] = 3600.0
    # Check interval of unverified domains after their first FAST_PHASE_SECONDS, in seconds.
    slow_poll_interval_seconds: Positive = 900.0
    # How often an already verified domain is re-checked (its records may vanish), in seconds.
    recheck_interval_seconds: Positive = 10800.0
    # Each next check is moved by up to ± this fraction of its interval, so domains added together
    # spread out instead of being checked (and hitting the resolvers and SES) in lock-step.
    schedule_jitter: Annotated[float, msgspec.Meta(ge=0, le=0.5)] = 0.1
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
    # Public DNS: resolvers the record checks ask (comma-separated IP addresses; empty = the system's
    # resolv.conf), their port, the timeout of one lookup, and the transport (udp falls back to tcp
    # on a truncated answer). Dev and tests point them at the devstack's local DNS server.
    dns_nameservers: str = ""
    dns_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 53
    dns_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 3.0
    dns_transport: Literal["udp", "tcp"] = "udp"
    # SES regions a tenant may ask for (`region` of POST /v1/domains), comma-separated; empty = only
    # MAILROOM_AWS_REGION. The first check of a region creates its SES client.
    allowed_regions: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        for server in self.nameservers:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise ValueError(f"MAILROOM_DOMAINS_DNS_NAMESERVERS: {server!r} is not an IP address") from None
        if self.slow_poll_interval_seconds < self.poll_interval_seconds:
            raise ValueError(
                "MAILROOM_DOMAINS_SLOW_POLL_INTERVAL_SECONDS must be at least MAILROOM_DOMAINS_POLL_INTERVAL_SECONDS"
            )

    @property
    def nameservers(self) -> list[str]:
        return [s.strip() for s in self.dns_nameservers.split(",") if s.strip()]

    @property
    def regions(self) -> list[str]:
        extra = [r.strip() for r in self.allowed_regions.split(",") if r.strip()]
        return [self.aws_region, *(r for r in extra if r != self.aws_region)]
