"""Settings: one frozen msgspec Struct per service, read once from environment variables.

One validation style: a field's own bounds are its type (`Annotated[int, msgspec.Meta(ge=1)]`),
checks across fields go in `__post_init__` (raise ValueError naming the variables); both surface
from `from_env` as a SettingsError, so a bad value stops the process at start.

A field `foo` of a settings class with `env_prefix = "MAILROOM_API_"` is read from
`MAILROOM_API_FOO`; fields listed in `SHARED` are read from `MAILROOM_<FIELD>` (they are the
same for every service). Values are converted and validated by msgspec; a bad value stops
the process at start with a message naming the variable. Nothing else reads os.environ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import msgspec
from mailroom_contracts.streams import DLQ_STREAM, STREAMS

SHARED = frozenset(
    {
        "database_url",
        "nats_url",
        "log_level",
        "log_format",
        "nats_replicas",
        "aws_region",
        "ses_endpoint_url",
        "db_pool_timeout_seconds",
        "retention_interval_seconds",
        "inbox_retention_days",
        "metrics_interval_seconds",
    }
)

_S = TypeVar("_S", bound="BaseSettings")

DAY = 24 * 3600
# A consumer may be redelivered anything its stream still holds.
MIN_INBOX_RETENTION_SECONDS = max(s.max_age_seconds for s in STREAMS if s.name != DLQ_STREAM.name)


class SettingsError(ValueError):
    pass


class BaseSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings every service has."""

    env_prefix: ClassVar[str] = "MAILROOM_"

    database_url: str = "postgresql://postgres@127.0.0.1:5432/mailroom"
    nats_url: str = "nats://127.0.0.1:4222"
    nats_replicas: int = 1
    log_level: str = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    db_pool_min: int = 1
    db_pool_max: int = 10
    # Longest wait for a database connection; then the unit of work fails as "unavailable" (HTTP 503,
    # message retried) instead of hanging while Postgres is down.
    db_pool_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    # The retention job (mailroom_kit.retention) runs this often in every service.
    retention_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    # How long consumers remember the events they applied (the inbox); 0 keeps them forever. At least
    # the email stream's max age (14 days), so any redelivery is still recognised as one.
    inbox_retention_days: Annotated[float, msgspec.Meta(ge=0)] = 15.0
    # How often each service reads its outbox backlog and its consumers' lag into /metrics.
    metrics_interval_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 15.0

    def __post_init__(self) -> None:
        """Checks across fields; a subclass with its own `__post_init__` calls this one first."""
        if 0 < self.inbox_retention_days * DAY < MIN_INBOX_RETENTION_SECONDS:
            raise ValueError(
                f"MAILROOM_INBOX_RETENTION_DAYS must be 0 (keep forever) or at least "
                f"{MIN_INBOX_RETENTION_SECONDS / DAY:g}, the email stream's max age"
            )

    @classmethod
    def env_name(cls, field: str) -> str:
        return f"MAILROOM_{field.upper()}" if field in SHARED else f"{cls.env_prefix}{field.upper()}"

    @classmethod
    def from_env(cls: type[_S], environ: Mapping[str, str] | None = None) -> _S:
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for field in msgspec.structs.fields(cls):
            name = cls.env_name(field.name)
            if name in env:
                raw[field.name] = env[name]
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            # A field's own error ends in "- at `$.field`"; a __post_init__ check names its variables itself.
            text = str(exc)
            path = text.rsplit("$.", 1)[-1].rstrip("`") if "$." in text else ""
            where = f" {cls.env_name(path)}" if path.isidentifier() else ""
            raise SettingsError(f"invalid configuration{where}: {text}") from None

    @classmethod
    def documented(cls) -> list[tuple[str, Any]]:
        """(env var, default) for every field, for the README table."""
        out = []
        for field in msgspec.structs.fields(cls):
            out.append((cls.env_name(field.name), field.default))
        return out
