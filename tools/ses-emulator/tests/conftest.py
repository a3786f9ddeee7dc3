"""Fixtures: the emulator on a free port (uvicorn in a thread) and a real SNS HTTP subscriber."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# appended (not inserted first) so this directory never shadows another test directory's modules
sys.path.append(str(Path(__file__).parent))

from mailroom_ses_emulator import EmulatorConfig, EmulatorServer, SnsSubscriptionConfig
from ses_emulator_testkit import TOPIC, SnsReceiver, StartEmulator


@pytest.fixture
def receiver() -> Iterator[SnsReceiver]:
    r = SnsReceiver().start()
    yield r
    r.stop()
    assert not r.errors, r.errors


@pytest.fixture
def start_emulator(receiver: SnsReceiver) -> Iterator[StartEmulator]:
    """Start an emulator (subscribed to ``receiver`` for TOPIC unless told otherwise)."""
    servers: list[EmulatorServer] = []

    def start(**overrides: Any) -> EmulatorServer:
        kwargs: dict[str, Any] = {
            "port": 0,
            "sns_subscriptions": (SnsSubscriptionConfig(TOPIC, receiver.url),),
            "sns_retry_base_delay": 0.02,
            "sns_retry_max_delay": 0.2,
        }
        kwargs.update(overrides)
        srv = EmulatorServer(EmulatorConfig(**kwargs)).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()
