"""The edges of the domains service: the create-domain RPC responder and the verification
poller. Each unit of work binds its log context, owns its transactions and calls the service.
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import psycopg_pool
import structlog
from mailroom_contracts import subjects
from mailroom_contracts.rpc import CreateDomainRequest, DomainReply
from mailroom_kit import rpc
from mailroom_kit.db import Pool
from mailroom_kit.logging import get_logger
from mailroom_kit.redact import describe_error
from mailroom_kit.wake import sleep_until_stopped
from nats.aio.client import Client

from mailroom_domains.errors import DomainsError, Unavailable
from mailroom_domains.metrics import DOMAIN_CHECKS, DOMAINS_CREATED
from mailroom_domains.service import DomainService

log = get_logger(__name__)

RPC_QUEUE = "domains"

DB_TIMEOUT_SECONDS = 5.0  # waiting longer for a pooled connection than the caller waits for us is pointless
_DB_DOWN = (psycopg.OperationalError, psycopg_pool.PoolTimeout)


class CreateDomainHandler:
    """`mailroom.rpc.domains.create`: validate, check the name is free, create the SES identity,
    then store the domain and queue `DomainCreated` in one transaction."""

    def __init__(self, service: DomainService, pool: Pool) -> None:
        self._service = service
        self._pool = pool

    async def __call__(self, req: CreateDomainRequest) -> DomainReply:
        # The kit's `rpc.handled` line is the summary; what is bound here rides on it (each request
        # runs in its own task, so the fields end with it).
        try:
            reply = await self._create(req)
        except DomainsError as exc:
            DOMAINS_CREATED.labels(outcome=exc.code).inc()
            structlog.contextvars.bind_contextvars(param=exc.param, reason=exc.message)
            return DomainReply(error=exc.to_rpc())
        assert reply.domain is not None
        DOMAINS_CREATED.labels(outcome="created").inc()
        structlog.contextvars.bind_contextvars(domain_id=reply.domain.domain_id, domain=reply.domain.name)
        return reply

    async def _create(self, req: CreateDomainRequest) -> DomainReply:
        new = self._service.validate(req)
        try:
            async with self._pool.connection(timeout=DB_TIMEOUT_SECONDS) as conn, conn.transaction():
                await self._service.ensure_available(conn, new)
            # SES is called holding no connection and no transaction.
            try:
                tokens = await asyncio.wait_for(
                    self._service.provision(new), timeout=self._service.settings.create_timeout_seconds
                )
            except TimeoutError:
                raise Unavailable("SES did not answer in time") from None
            async with self._pool.connection(timeout=DB_TIMEOUT_SECONDS) as conn, conn.transaction():
                snapshot = await self._service.register(conn, new, tokens)
        except _DB_DOWN as exc:
            raise Unavailable("the domains database is unavailable") from exc
        return DomainReply(domain=snapshot)


async def serve_create_rpc(nc: Client, service: DomainService, pool: Pool, stop: asyncio.Event) -> None:
    """Answer create requests (queue group "domains": one replica answers each) until `stop`."""
    sub = await rpc.serve(
        nc, subjects.RPC_DOMAINS_CREATE, CreateDomainRequest, CreateDomainHandler(service, pool), queue=RPC_QUEUE
    )
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


class VerificationPoller:
    """Checks due domains: claims a batch (FOR UPDATE SKIP LOCKED, so any number of replicas can
    run), asks SES and the record checker about each outside any transaction, then applies each
    result under the domain's row lock."""

    def __init__(self, service: DomainService, pool: Pool) -> None:
        self._service = service
        self._pool = pool

    async def run_once(self) -> int:
        """Check every domain this replica could claim now; return how many were claimed."""
        async with self._pool.connection() as conn, conn.transaction():
            claimed = await self._service.claim_due(conn)
        if claimed:
            await asyncio.gather(*(self.check(domain_id) for domain_id in claimed))
        return len(claimed)

    async def check(self, domain_id: str) -> None:
        """One unit of work: check one domain and record the outcome. Never raises."""
        event = None
        with structlog.contextvars.bound_contextvars(domain_id=domain_id):
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    domain = await self._service.load(conn, domain_id)
                if domain is None or domain.status == "failed":
                    return
                with structlog.contextvars.bound_contextvars(tenant_id=domain.tenant_id):
                    # No connection is held while SES and the record checker answer.
                    observation = await self._service.observe(domain)
                    async with self._pool.connection() as conn, conn.transaction():
                        event = await self._service.apply(conn, observation)
                    if event is not None:
                        log.info(
                            "domain.status_changed",
                            domain=domain.name,
                            previous=domain.status,
                            status=event.domain.status,
                            event_type=type(event).__name__,
                        )
            except Unavailable as exc:
                DOMAIN_CHECKS.labels(outcome="unavailable").inc()
                log.warning("domain.check_postponed", reason=exc.message)
                await self._postpone(domain_id)
                return
            except Exception as exc:
                DOMAIN_CHECKS.labels(outcome="error").inc()
                log.error("domain.check_failed", **describe_error(exc))
                await self._postpone(domain_id)
                return
            DOMAIN_CHECKS.labels(outcome="changed" if event is not None else "unchanged").inc()

    async def _postpone(self, domain_id: str) -> None:
        with contextlib.suppress(Exception):
            async with self._pool.connection() as conn, conn.transaction():
                await self._service.postpone(conn, domain_id)

    async def run(self, stop: asyncio.Event, *, tick: float) -> None:
        """Poll until `stop`; a full batch is followed at once by the next one."""
        batch = self._service.settings.check_batch_size
        while not stop.is_set():
            try:
                claimed = await self.run_once()
            except Exception as exc:  # Postgres down: try again next tick
                log.warning("domain.poll_failed", error=repr(exc))
                claimed = 0
            if claimed >= batch:
                continue
            await sleep_until_stopped(stop, tick)
