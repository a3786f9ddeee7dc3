"""Helpers of the domains test suite (imported by conftest and the tests)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mailroom_contracts import decode_event
from mailroom_contracts.events import DomainEvent
from mailroom_contracts.streams import DOMAIN_STREAM
from mailroom_domains.service import DomainService
from mailroom_domains.ses import SesClient
from mailroom_domains.settings import DomainsSettings
from mailroom_kit.runtime import Runtime
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

REGION = "us-east-1"


def unique_domain(prefix: str = "mail") -> str:
    return f"{prefix}.t{secrets.token_hex(5)}.example.com"


def ses_client(endpoint_url: str, *, timeout: float = 5.0) -> SesClient:
    return SesClient.create(
        region=REGION,
        endpoint_url=endpoint_url,
        timeout=timeout,
        aws_access_key_id="emulator",
        aws_secret_access_key="emulator",
    )


async def wait_for(predicate: Callable[[], Awaitable[Any]], *, timeout: float = 10.0, every: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(every)


def make_settings(database_url: str, nats_url: str, emulator_url: str, **overrides: Any) -> DomainsSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "nats_url": nats_url,
        "aws_region": REGION,
        "ses_endpoint_url": emulator_url,
        "poll_interval_seconds": 0.2,
        "recheck_interval_seconds": 3600.0,
        "schedule_jitter": 0.0,
        "ses_timeout_seconds": 5.0,
        "log_format": "console",
    }
    values.update(overrides)
    return DomainsSettings(**values)


@dataclass
class RunningDomains:
    """The service's real workers (RPC responder, verification poller, outbox relay) in-process."""

    runtime: Runtime
    service: DomainService
    tasks: list[asyncio.Task[None]]

    async def stop(self) -> None:
        self.runtime.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), timeout=15)
        await self.runtime.nc.drain()
        await self.runtime.pool.close()


Starter = Callable[..., Awaitable[RunningDomains]]


async def domain_events(js: JetStreamContext, domain_id: str | None = None) -> list[DomainEvent]:
    """Every event on the MAILROOM_DOMAIN stream (optionally of one domain), in stream order."""
    try:
        info = await js.stream_info(DOMAIN_STREAM.name)
    except NotFoundError:
        return []
    events: list[DomainEvent] = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        try:
            raw = await js.get_msg(DOMAIN_STREAM.name, seq)
        except NotFoundError:
            continue
        assert raw.data is not None
        event = decode_event(raw.data)
        assert isinstance(event, DomainEvent)
        assert raw.headers is not None and raw.headers["Nats-Msg-Id"] == event.event_id
        if domain_id is None or event.domain.domain_id == domain_id:
            events.append(event)
    return events


def event_types(events: list[DomainEvent]) -> list[str]:
    return [str(type(e).__struct_config__.tag) for e in events]
