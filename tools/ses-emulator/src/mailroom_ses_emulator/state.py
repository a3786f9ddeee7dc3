"""The emulator's resources and their (optional) JSON persistence."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .util import write_atomic

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_VERSION = 1


@dataclass
class Identity:
    name: str
    type: str  # DOMAIN | EMAIL_ADDRESS
    created_at: float
    dkim_tokens: list[str] = field(default_factory=list)
    dkim_origin: str = "AWS_SES"
    dkim_signing_enabled: bool = True
    dkim_selector: str | None = None
    next_signing_key_length: str | None = None
    current_signing_key_length: str | None = None
    mail_from_domain: str | None = None
    mail_from_behavior: str = "USE_DEFAULT_VALUE"
    mail_from_set_at: float | None = None
    configuration_set: str | None = None
    tags: list[dict[str, str]] = field(default_factory=list)
    # Forced through the inspection API; None = follow SES_EMULATOR_VERIFY.
    status_override: str | None = None
    mail_from_status_override: str | None = None


@dataclass
class ConfigurationSet:
    name: str
    created_at: float
    # The request's option blocks as given (TrackingOptions, DeliveryOptions, ...).
    options: dict[str, Any] = field(default_factory=dict)
    tags: list[dict[str, str]] = field(default_factory=list)
    # EventDestinationName -> EventDestination (wire shape, with "Name").
    event_destinations: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def sending_enabled(self) -> bool:
        opts = self.options.get("SendingOptions") or {}
        return bool(opts.get("SendingEnabled", True))


@dataclass
class Subscription:
    topic_arn: str
    endpoint: str
    subscription_arn: str
    token: str
    confirmed: bool = False
    confirmed_at: float | None = None
    confirmation_sent_at: float | None = None


@dataclass
class State:
    identities: dict[str, Identity] = field(default_factory=dict)  # key: lower-cased name
    configuration_sets: dict[str, ConfigurationSet] = field(default_factory=dict)
    subscriptions: list[Subscription] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "saved_at": time.time(),
            "identities": [asdict(i) for i in self.identities.values()],
            "configuration_sets": [asdict(c) for c in self.configuration_sets.values()],
            "subscriptions": [asdict(s) for s in self.subscriptions],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        state = cls()
        for raw in data.get("identities", []):
            ident = Identity(**raw)
            state.identities[ident.name.lower()] = ident
        for raw in data.get("configuration_sets", []):
            cs = ConfigurationSet(**raw)
            state.configuration_sets[cs.name] = cs
        state.subscriptions = [Subscription(**raw) for raw in data.get("subscriptions", [])]
        return state


class StateStore:
    """Loads and saves :class:`State` as ``<state_dir>/state.json`` (no-op without a state dir)."""

    def __init__(self, state_dir: Path | None) -> None:
        self.state_dir = state_dir

    @property
    def path(self) -> Path | None:
        return None if self.state_dir is None else self.state_dir / STATE_FILE

    def load(self) -> State:
        path = self.path
        if path is None or not path.exists():
            return State()
        try:
            data = json.loads(path.read_text("utf-8"))
            return State.from_json(data)
        except (ValueError, TypeError, KeyError) as exc:
            backup = path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
            log.error("unreadable emulator state %s (%s); moved to %s, starting empty", path, exc, backup)
            path.replace(backup)
            return State()

    def save(self, state: State) -> None:
        path = self.path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(state.to_json(), indent=2, sort_keys=False).encode("utf-8")
        write_atomic(path, data)
