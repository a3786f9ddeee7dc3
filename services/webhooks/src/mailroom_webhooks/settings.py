"""Settings of the webhooks service, read once from MAILROOM_WEBHOOKS_* (and the shared MAILROOM_*)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar

import msgspec
from cryptography.fernet import Fernet
from mailroom_kit.settings import BaseSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhooksSettings(BaseSettings, frozen=True, kw_only=True):  # type: ignore[call-arg]
    env_prefix: ClassVar[str] = "MAILROOM_WEBHOOKS_"

    # HTTP port of the ops endpoints (/health, /ready, /metrics).
    port: int = 8004
    # Fernet key(s) encrypting endpoint signing secrets at rest. Required. A comma-separated list
    # rotates keys: the first encrypts, every one decrypts. Generate one with
    # `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`.
    secret_key: str = ""
    # Accept http:// endpoint URLs (development only); https is always accepted.
    allow_http: bool = False
    # Comma-separated CIDRs that webhook deliveries may reach although they are private, loopback,
    # link-local, CGNAT, ... (SSRF guard). Empty: only public addresses. A cloud-metadata address is
    # only reachable when listed exactly (/32 or /128), never through a wider range.
    allowed_cidrs: str = ""
    # Total time one delivery attempt may take (connect, TLS, request, response headers).
    timeout_seconds: float = 15.0
    # Attempts per delivery (the first one included) before it is marked failed. SPEC: 8 (the
    # first and seven retries, about 38 hours in all).
    max_attempts: int = 8
    # Comma-separated delays before the 2nd, 3rd, ... attempt; the last repeats. ±10 % jitter;
    # a longer Retry-After from the endpoint wins (capped at max_retry_after_seconds).
    # SPEC: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    retry_delays_seconds: str = "5,300,1800,7200,18000,36000,36000"
    # The longest Retry-After honoured; a longer one waits this long.
    max_retry_after_seconds: Annotated[float, msgspec.Meta(ge=0)] = 86400.0
    # An endpoint whose attempts all failed for this long (no success in between) is disabled
    # (disabled_reason `failing`, a `webhook.disabled` notice); its pending deliveries wait
    # until the tenant enables it again.
    disable_after_failing_days: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    # After rotate-secret, how long the previous secret still signs beside the new one.
    secret_rotation_overlap_hours: Annotated[float, msgspec.Meta(ge=0)] = 24.0
    # Deliveries in flight at once in this process.
    concurrency: int = 64
    # Deliveries in flight at once to one endpoint, across every replica.
    per_endpoint_concurrency: int = 4
    # How often the dispatcher looks for due deliveries when nothing woke it (NOTIFY wakes it at once).
    poll_interval_seconds: float = 1.0
    # Delay before a lifecycle event whose EmailQueued has not been seen yet is tried again
    # (doubled on each later try, at most 60 s).
    summary_retry_seconds: float = 0.25
    # After this many tries without the EmailQueued (e.g. it predates this service), the event is
    # delivered anyway with from/to/subject unknown (null) rather than retried forever.
    summary_wait_attempts: int = 30
    # Retention, in days (0 keeps forever): email summaries (an event of an email whose summary is
    # gone is delivered with from/to/subject null), and finished deliveries with their attempts
    # (pending ones are kept whatever their age).
    summary_retention_days: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    delivery_retention_days: Annotated[float, msgspec.Meta(ge=0)] = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.secret_key.strip():
            raise ValueError(
                "MAILROOM_WEBHOOKS_SECRET_KEY is required: a Fernet key (32 url-safe base64 bytes) "
                "that encrypts webhook signing secrets"
            )
        for key in self.fernet_keys():
            try:
                Fernet(key)
            except (ValueError, TypeError):
                raise ValueError(
                    "MAILROOM_WEBHOOKS_SECRET_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes)"
                ) from None
        self.allowed_networks()
        delays = self.retry_delays()
        if not delays or any(d < 0 for d in delays):
            raise ValueError("MAILROOM_WEBHOOKS_RETRY_DELAYS_SECONDS must be a comma-separated list of seconds ≥ 0")
        if self.max_attempts < 1:
            raise ValueError("MAILROOM_WEBHOOKS_MAX_ATTEMPTS must be ≥ 1")
        if self.concurrency < 1 or self.per_endpoint_concurrency < 1:
            raise ValueError("MAILROOM_WEBHOOKS_CONCURRENCY and _PER_ENDPOINT_CONCURRENCY must be ≥ 1")
        if self.timeout_seconds <= 0:
            raise ValueError("MAILROOM_WEBHOOKS_TIMEOUT_SECONDS must be > 0")

    def __repr__(self) -> str:  # the Fernet key never reaches a log line
        fields = ", ".join(
            f"{f}={'***' if f == 'secret_key' else repr(getattr(self, f))}" for f in self.__struct_fields__
        )
        return f"{type(self).__name__}({fields})"

    def fernet_keys(self) -> list[str]:
        return [k.strip() for k in self.secret_key.split(",") if k.strip()]

    def allowed_networks(self) -> tuple[Network, ...]:
        networks: list[Network] = []
        for item in self.allowed_cidrs.split(","):
            if not item.strip():
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ValueError(f"MAILROOM_WEBHOOKS_ALLOWED_CIDRS: {item.strip()!r} is not a CIDR") from None
        return tuple(networks)

    def retry_delays(self) -> list[float]:
        try:
            return [float(x) for x in self.retry_delays_seconds.split(",") if x.strip()]
        except ValueError:
            raise ValueError(
                "MAILROOM_WEBHOOKS_RETRY_DELAYS_SECONDS must be a comma-separated list of seconds"
            ) from None

    @property
    def lease_seconds(self) -> float:
        """How long a claimed delivery stays ours; after that another worker re-delivers it."""
        return self.timeout_seconds + 30.0
