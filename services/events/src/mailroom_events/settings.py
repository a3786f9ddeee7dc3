"""Events service settings (MAILROOM_EVENTS_*, plus the shared MAILROOM_* ones)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

import msgspec
from mailroom_kit.settings import DAY, BaseSettings

AWS_CERT_HOSTS = r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"


# msgspec inherits `frozen` from BaseSettings but `kw_only` applies only to the fields a class
# declares itself, so both are repeated here (as every contract Struct does); mypy also requires
# `frozen=True` on a subclass of a frozen (dataclass_transform) Struct.
class EventsSettings(BaseSettings, frozen=True, kw_only=True):
    env_prefix = "MAILROOM_EVENTS_"

    # HTTP port of POST /ses/sns and /health, /ready, /metrics.
    port: int = 8001
    # Comma-separated SNS TopicArns whose messages are accepted; anything else is refused (403).
    # Empty refuses everything.
    sns_topic_arns: str = ""
    # Regex matched in full against the host (or host:port) of SigningCertURL and SubscribeURL.
    # AWS's SNS hosts by default; tests and the local SES emulator use e.g. ^127\.0\.0\.1:\d+$.
    sns_cert_host_pattern: str = AWS_CERT_HOSTS
    # Allow http:// certificate and subscribe URLs (the local SES emulator only; never in production).
    sns_allow_http: bool = False
    # Oldest signed SNS Timestamp accepted, in seconds; older messages are refused as replays (403).
    # SNS's HTTP/S retries never span more than 3600 s. Timestamps over 5 min ahead are refused too.
    sns_max_age_seconds: int = 3600
    # SNS message records (the de-duplication of SNS deliveries) are deleted after this many days;
    # 0 keeps them. Longer than MAILROOM_EVENTS_SNS_MAX_AGE_SECONDS: an older message is refused as a
    # replay before its record would be needed.
    sns_message_retention_days: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    # SES events that match no Mailroom email (no Mailroom tags) or could not be read are kept this
    # many days for the operator (`mailroom-events unmatched`), then deleted; 0 keeps them.
    unmatched_retention_days: Annotated[float, msgspec.Meta(ge=0, le=3650)] = 7.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sns_max_age_seconds <= 0:
            raise ValueError("MAILROOM_EVENTS_SNS_MAX_AGE_SECONDS must be a positive number of seconds")
        if 0 < self.sns_message_retention_days * DAY <= self.sns_max_age_seconds:
            raise ValueError(
                "MAILROOM_EVENTS_SNS_MESSAGE_RETENTION_DAYS must be 0 (keep) or longer than "
                "MAILROOM_EVENTS_SNS_MAX_AGE_SECONDS"
            )
        try:
            re.compile(self.sns_cert_host_pattern)
        except re.error as exc:
            raise ValueError(f"MAILROOM_EVENTS_SNS_CERT_HOST_PATTERN is not a valid regex: {exc}") from None

    @property
    def sns_max_age(self) -> timedelta:
        return timedelta(seconds=self.sns_max_age_seconds)

    @property
    def topic_arns(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.sns_topic_arns.split(",") if t.strip())
