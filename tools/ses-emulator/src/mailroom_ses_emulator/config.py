"""Configuration of the SES emulator (environment variables or explicit values)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_PORT = 4566
VERIFY_MODES = ("immediate", "never", "failed", "dns")


class ConfigError(ValueError):
    """Raised for an invalid configuration value."""


@dataclass(frozen=True)
class SnsSubscriptionConfig:
    """One HTTP(S) subscriber of an SNS topic."""

    topic_arn: str
    endpoint: str


def parse_subscriptions(value: str) -> tuple[SnsSubscriptionConfig, ...]:
    """Parse ``topicArn=url,topicArn=url`` (whitespace around items is ignored)."""
    subs: list[SnsSubscriptionConfig] = []
    for raw_item in value.split(","):
        item = raw_item.strip()
        if not item:
            continue
        topic, sep, url = item.partition("=")
        topic, url = topic.strip(), url.strip()
        if not sep or not topic or not url:
            raise ConfigError(f"invalid SNS subscription {item!r}: expected topicArn=url")
        if not topic.startswith("arn:") or len(topic.split(":")) != 6:
            raise ConfigError(f"invalid SNS topic ARN {topic!r}")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"invalid SNS subscriber URL {url!r}: must be http(s)")
        subs.append(SnsSubscriptionConfig(topic, url))
    return tuple(subs)


def parse_verify(value: str) -> str | float:
    """``immediate`` | ``never`` | ``failed`` | ``dns`` (DKIM CNAMEs must resolve in
    SES_EMULATOR_DNS_SERVER) | a number of seconds after creation."""
    v = value.strip().lower()
    if v in VERIFY_MODES:
        return v
    try:
        seconds = float(v)
    except ValueError:
        raise ConfigError(
            f"invalid SES_EMULATOR_VERIFY {value!r}: use immediate, never, failed, dns or a number of seconds"
        ) from None
    if seconds < 0:
        raise ConfigError("SES_EMULATOR_VERIFY seconds must be >= 0")
    return seconds


def _parse_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"invalid boolean for {name}: {value!r}")


def _parse_number(name: str, value: str, kind: type[int] | type[float]) -> float:
    try:
        n = kind(value.strip())
    except ValueError:
        raise ConfigError(f"invalid number for {name}: {value!r}") from None
    if n < 0:
        raise ConfigError(f"{name} must be >= 0")
    return n


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the emulator needs; build it directly in tests or with :meth:`from_env`."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    region: str = "us-east-1"
    account_id: str = "000000000000"
    verify: str | float = "immediate"
    # verify=dns: the DNS server (host:port) whose answers decide DKIM and MAIL FROM verification,
    # and how long one answer is reused.
    dns_server: str | None = None
    dns_cache_seconds: float = 0.5
    sns_subscriptions: tuple[SnsSubscriptionConfig, ...] = ()
    public_url: str | None = None
    state_dir: Path | None = None
    max_send_rate: float = 200.0
    max_24_hour_send: float = 50000.0
    enforce_send_rate: bool = False
    require_confirmation: bool = True
    # SNS delivery tuning
    sns_workers: int = 16
    sns_max_attempts: int = 8
    sns_confirmation_max_attempts: int = 30
    sns_retry_base_delay: float = 0.25
    sns_retry_max_delay: float = 4.0
    sns_timeout: float = 10.0
    # in-memory inspection buffers
    max_sent_kept: int = 10000
    max_notifications_kept: int = 20000
    log_level: str = "info"

    def __post_init__(self) -> None:
        if isinstance(self.verify, str):
            object.__setattr__(self, "verify", parse_verify(self.verify))
        if self.state_dir is not None and not isinstance(self.state_dir, Path):
            object.__setattr__(self, "state_dir", Path(self.state_dir))
        if self.verify == "dns" and not self.dns_server:
            raise ConfigError("SES_EMULATOR_VERIFY=dns needs SES_EMULATOR_DNS_SERVER (host:port)")
        if self.sns_workers < 1:
            raise ConfigError("sns_workers must be >= 1")
        if self.sns_max_attempts < 1 or self.sns_confirmation_max_attempts < 1:
            raise ConfigError("SNS max attempts must be >= 1")

    @property
    def base_url(self) -> str:
        """Public base URL (no trailing slash) used in SigningCertURL, SubscribeURL, UnsubscribeURL."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "", "::"):  # noqa: S104 - only used to build a URL
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def with_port(self, port: int) -> EmulatorConfig:
        return replace(self, port=port)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EmulatorConfig:
        e = os.environ if env is None else env

        def get(name: str) -> str | None:
            v = e.get(name)
            return v if v is not None and v.strip() != "" else None

        kwargs: dict[str, object] = {}
        if (v := get("SES_EMULATOR_HOST")) is not None:
            kwargs["host"] = v.strip()
        if (v := get("SES_EMULATOR_PORT")) is not None:
            kwargs["port"] = int(_parse_number("SES_EMULATOR_PORT", v, int))
        if (v := get("SES_EMULATOR_REGION")) is not None:
            kwargs["region"] = v.strip()
        if (v := get("SES_EMULATOR_ACCOUNT_ID")) is not None:
            if not (v.strip().isdigit() and len(v.strip()) == 12):
                raise ConfigError("SES_EMULATOR_ACCOUNT_ID must be 12 digits")
            kwargs["account_id"] = v.strip()
        if (v := get("SES_EMULATOR_VERIFY")) is not None:
            kwargs["verify"] = parse_verify(v)
        if (v := get("SES_EMULATOR_DNS_SERVER")) is not None:
            kwargs["dns_server"] = v.strip()
        if (v := get("SES_EMULATOR_DNS_CACHE_SECONDS")) is not None:
            kwargs["dns_cache_seconds"] = _parse_number("SES_EMULATOR_DNS_CACHE_SECONDS", v, float)
        if (v := get("SES_EMULATOR_SNS_SUBSCRIPTIONS")) is not None:
            kwargs["sns_subscriptions"] = parse_subscriptions(v)
        if (v := get("SES_EMULATOR_PUBLIC_URL")) is not None:
            kwargs["public_url"] = v.strip()
        if (v := get("SES_EMULATOR_STATE_DIR")) is not None:
            kwargs["state_dir"] = Path(v.strip())
        if (v := get("SES_EMULATOR_MAX_SEND_RATE")) is not None:
            kwargs["max_send_rate"] = _parse_number("SES_EMULATOR_MAX_SEND_RATE", v, float)
        if (v := get("SES_EMULATOR_MAX_24_HOUR_SEND")) is not None:
            kwargs["max_24_hour_send"] = _parse_number("SES_EMULATOR_MAX_24_HOUR_SEND", v, float)
        if (v := get("SES_EMULATOR_ENFORCE_SEND_RATE")) is not None:
            kwargs["enforce_send_rate"] = _parse_bool("SES_EMULATOR_ENFORCE_SEND_RATE", v)
        if (v := get("SES_EMULATOR_REQUIRE_CONFIRMATION")) is not None:
            kwargs["require_confirmation"] = _parse_bool("SES_EMULATOR_REQUIRE_CONFIRMATION", v)
        if (v := get("SES_EMULATOR_SNS_WORKERS")) is not None:
            kwargs["sns_workers"] = int(_parse_number("SES_EMULATOR_SNS_WORKERS", v, int))
        if (v := get("SES_EMULATOR_SNS_MAX_ATTEMPTS")) is not None:
            kwargs["sns_max_attempts"] = int(_parse_number("SES_EMULATOR_SNS_MAX_ATTEMPTS", v, int))
        if (v := get("SES_EMULATOR_MAX_SENT_KEPT")) is not None:
            kwargs["max_sent_kept"] = int(_parse_number("SES_EMULATOR_MAX_SENT_KEPT", v, int))
        if (v := get("SES_EMULATOR_LOG_LEVEL")) is not None:
            kwargs["log_level"] = v.strip().lower()
        return cls(**kwargs)  # type: ignore[arg-type]
