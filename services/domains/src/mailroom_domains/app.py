"""Builds the domains service from its settings: the create-domain RPC responder, the verification
poller and the outbox relay as workers, and the kit's ops HTTP app (/health, /ready, /metrics)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from mailroom_kit.runtime import Runtime, Worker, ops_app, serve

from mailroom_domains.checks import RecordChecker
from mailroom_domains.dns_checks import DnsRecordChecker
from mailroom_domains.handlers import VerificationPoller, serve_create_rpc
from mailroom_domains.service import SCHEMA, DomainService
from mailroom_domains.ses import SesClient
from mailroom_domains.settings import DomainsSettings

NAME = "domains"
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def poll_tick(settings: DomainsSettings) -> float:
    """How often the poller looks for due domains (at most every 5 s even with long intervals)."""
    return min(settings.poll_interval_seconds, 5.0)


def build_workers(service: DomainService) -> list[Worker]:
    # A verify request answered by this replica wakes its poller (a check within a second).
    wake = asyncio.Event()

    async def create_domain_rpc(rt: Runtime) -> None:
        await serve_create_rpc(rt.nc, service, rt.pool, rt.stop, wake)

    async def verification_poller(rt: Runtime) -> None:
        await VerificationPoller(service, rt.pool, wake).run(rt.stop, tick=poll_tick(service.settings))

    async def outbox_relay(rt: Runtime) -> None:
        await rt.relay().run(rt.stop)

    return [create_domain_rpc, verification_poller, outbox_relay]


def build_service(
    settings: DomainsSettings,
    *,
    ses: SesClient | None = None,
    checker: RecordChecker | None = None,
    clock: Callable[[], datetime] | None = None,
    rng: random.Random | None = None,
) -> DomainService:
    """The service with its SES client and record checker: public DNS (dnspython, the configured
    resolvers) unless a test passes another. `clock` None = the database's clock."""

    def regional(region: str) -> SesClient:  # another allowed region, on first use
        return SesClient.create(
            region=region, endpoint_url=settings.ses_endpoint_url, timeout=settings.ses_timeout_seconds
        )

    return DomainService(
        settings,
        ses or SesClient.from_settings(settings),
        checker or DnsRecordChecker.from_settings(settings),
        clock=clock,
        rng=rng,
        ses_for_region=regional,
    )


async def run(settings: DomainsSettings) -> None:
    await serve(
        name=NAME,
        schema=SCHEMA,
        settings=settings,
        migrations_dir=MIGRATIONS,
        build_app=ops_app,
        workers=build_workers(build_service(settings)),
    )
