"""Mailroom's SES v2 emulator (a dev/test tool): SES v2 REST-JSON API + SNS-signed event publishing."""

from __future__ import annotations

from .app import create_app
from .config import EmulatorConfig, SnsSubscriptionConfig
from .server import EmulatorServer, main
from .service import Emulator

__all__ = ["Emulator", "EmulatorConfig", "EmulatorServer", "SnsSubscriptionConfig", "create_app", "main"]
__version__ = "0.1.0"
