"""Sender settings, read once from MAILROOM_SENDER_* (and the shared MAILROOM_*) variables."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from mailroom_kit.settings import DAY, MIN_INBOX_RETENTION_SECONDS, BaseSettings

# SES names are at most 64 characters; "-opens-clicks" (13) is appended for tracking variants.
_MAX_BASE = 64 - len("-opens-clicks")
_SET_NAME = re.compile(rf"[A-Za-z0-9_-]{{1,{_MAX_BASE}}}")


class SenderSettings(BaseSettings, frozen=True, kw_only=True):
    env_prefix = "MAILROOM_SENDER_"

    # HTTP port of /health, /ready and /metrics.
    port: int = 8002
    # SES configuration set of the transactional stream (event publishing hangs off it). Emails
    # with open/click tracking use `<name>-opens`, `<name>-clicks` or `<name>-opens-clicks`.
    configuration_set: str = "mailroom-transactional"
    # The same for the broadcast stream (its own set, so its reputation and events stay apart).
    broadcast_configuration_set: str = "mailroom-broadcast"
    # SNS topic for SES events. When set, the configuration set and its SNS event destination
    # are created/updated at start; empty = leave SES configuration to the operator.
    ses_events_topic_arn: str = ""
    # Name of the event destination created on the configuration set.
    ses_event_destination_name: str = "mailroom-events"
    # Emails handled at once per replica (consumer concurrency, SES connections).
    concurrency: int = 16
    # How long a send that may have reached SES waits for SES's Send event before it is
    # sent again (at-least-once fallback). The SES read timeout is capped at half of it, so an
    # attempt can never still be waiting for SES when its doubt expires.
    in_doubt_seconds: float = 600.0
    # While a send is in doubt, its queued message is re-checked this often (acked soon after
    # the Send event settles it).
    in_doubt_recheck_seconds: float = 15.0
    # Re-send an in-doubt email sooner (once) when SES Send events keep arriving and its own
    # does not: SES accepted a message more than connect + read timeout after this attempt
    # started, that message's Send event arrived this many seconds ago, and this one's has not.
    # 0 = off (always wait in_doubt_seconds); at most 3600 (no use at or above in_doubt_seconds).
    in_doubt_grace_seconds: float = 30.0
    # SES HTTP timeouts. A read timeout leaves the send in doubt; a connect failure is retried.
    ses_connect_timeout_seconds: float = 5.0
    ses_read_timeout_seconds: float = 30.0
    # A pooled SES connection idle for longer is not reused but replaced: it must stay below the
    # server's keep-alive timeout (the emulator's uvicorn: 5 s; SES: longer), or a request can
    # race the server closing the connection and end in doubt. 0.1 .. 60.
    ses_max_idle_seconds: float = 2.0
    # AWS region (shared MAILROOM_AWS_REGION).
    aws_region: str = "us-east-1"
    # SES v2 endpoint override (shared MAILROOM_SES_ENDPOINT_URL); empty = the real AWS endpoint.
    ses_endpoint_url: str = ""
    # Settled (sent or failed) deliveries are deleted this many days after the email was accepted;
    # 0 keeps them. A delivery row is what makes a redelivered EmailQueued a no-op, so at least the
    # email stream's max age (14 days).
    delivery_retention_days: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    # issue 23: how often the sender's queue (held emails of paused tenants) looks for emails to send
    # when nothing woke it (a resume seen by another replica, a retry coming due). 0.05 .. 60.
    held_poll_seconds: float = 1.0
    # issue 23, the SES send-rate governor (governor.py). The share of SES's MaxSendRate all
    # replicas together use (the rest is room for jitter between our clock and SES's); 0.1 .. 0.99.
    send_rate_share: float = 0.8
    # The part of the token bucket broadcast mail must leave to transactional mail; 0 .. 0.9.
    transactional_reserve: float = 0.5
    # Broadcast mail is held (not failed) from this share of Max24HourSend, transactional at 100%;
    # 0.5 .. 1.
    daily_quota_hold_share: float = 0.95
    # A held-for-the-daily-quota email is looked at again this often; 1 .. 3600.
    daily_quota_recheck_seconds: float = 60.0
    # How often GetAccount's SendQuota is read; 1 .. 3600.
    send_quota_refresh_seconds: float = 60.0

    def __post_init__(self) -> None:
        super().__post_init__()
        # Checks a field type cannot express; a failure stops the process at start (SettingsError).
        if self.concurrency < 1:
            raise ValueError("MAILROOM_SENDER_CONCURRENCY must be >= 1")
        if self.in_doubt_seconds <= 0 or self.ses_read_timeout_seconds <= 0:
            raise ValueError(
                "MAILROOM_SENDER_IN_DOUBT_SECONDS and MAILROOM_SENDER_SES_READ_TIMEOUT_SECONDS must be > 0"
            )
        if not 0 <= self.in_doubt_grace_seconds <= 3600:
            raise ValueError("MAILROOM_SENDER_IN_DOUBT_GRACE_SECONDS must be between 0 (off) and 3600")
        if not 0.1 <= self.ses_max_idle_seconds <= 60:
            raise ValueError("MAILROOM_SENDER_SES_MAX_IDLE_SECONDS must be between 0.1 and 60")
        if not 0.05 <= self.held_poll_seconds <= 60:
            raise ValueError("MAILROOM_SENDER_HELD_POLL_SECONDS must be between 0.05 and 60")
        for limit, share, low, high in (
            ("MAILROOM_SENDER_SEND_RATE_SHARE", self.send_rate_share, 0.1, 0.99),
            ("MAILROOM_SENDER_TRANSACTIONAL_RESERVE", self.transactional_reserve, 0.0, 0.9),
            ("MAILROOM_SENDER_DAILY_QUOTA_HOLD_SHARE", self.daily_quota_hold_share, 0.5, 1.0),
            ("MAILROOM_SENDER_DAILY_QUOTA_RECHECK_SECONDS", self.daily_quota_recheck_seconds, 1.0, 3600.0),
            ("MAILROOM_SENDER_SEND_QUOTA_REFRESH_SECONDS", self.send_quota_refresh_seconds, 1.0, 3600.0),
        ):
            if not low <= share <= high:
                raise ValueError(f"{limit} must be between {low:g} and {high:g}")
        if 0 < self.delivery_retention_days * DAY < MIN_INBOX_RETENTION_SECONDS:
            raise ValueError(
                "MAILROOM_SENDER_DELIVERY_RETENTION_DAYS must be 0 (keep) or at least "
                f"{MIN_INBOX_RETENTION_SECONDS / DAY:g}, the email stream's max age"
            )
        if not self.configuration_set:
            raise ValueError("MAILROOM_SENDER_CONFIGURATION_SET must not be empty")
        for name, value in (
            ("MAILROOM_SENDER_CONFIGURATION_SET", self.configuration_set),
            ("MAILROOM_SENDER_BROADCAST_CONFIGURATION_SET", self.broadcast_configuration_set),
        ):
            # SES: 1..64 of [A-Za-z0-9_-], and the longest tracking suffix must still fit.
            if not _SET_NAME.fullmatch(value):
                raise ValueError(f"{name} must be 1..{_MAX_BASE} characters of A-Z, a-z, 0-9, _ and -")
        if self.configuration_set == self.broadcast_configuration_set:
            raise ValueError(
                "MAILROOM_SENDER_CONFIGURATION_SET and MAILROOM_SENDER_BROADCAST_CONFIGURATION_SET must differ"
            )

    @property
    def attempt_max_seconds(self) -> float:
        """The longest one SES call can take: SES cannot accept a request later than this after it started."""
        return self.ses_connect_timeout_seconds + self.effective_read_timeout

    @property
    def effective_read_timeout(self) -> float:
        """The SES read timeout actually used: never more than half the in-doubt window."""
        return min(self.ses_read_timeout_seconds, self.in_doubt_seconds / 2)
