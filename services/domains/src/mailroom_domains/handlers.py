"""The edges of the domains service: the create-domain RPC responder and the verification
poller. Each unit of work binds its log context, owns its transactions and calls the service.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import psycopg
import psycopg_pool
import structlog
from mailroom_contracts import subjects
from mailroom_contracts.rpc import (
    CreateDomainRequest,
    DeleteDomainRequest,
    DomainReply,
    UpdateDomainRequest,
    VerifyDomainRequest,
)
from mailroom_kit import rpc
from mailroom_kit.db import Pool
from mailroom_kit.logging import get_logger
from mailroom_kit.redact import describe_error
from nats.aio.client import Client

from mailroom_domains.errors import DomainsError, Unavailable
from mailroom_domains.metrics import DOMAIN_CHECKS, DOMAINS_CREATED
from mailroom_domains.service import CheckOutcome, DomainService

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
                existing = await self._service.ensure_available(conn, new)
            if existing is not None:  # the same tenant adds it again: idempotent
                return DomainReply(domain=existing)
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


class ManageDomainHandlers:
    """Issue 18: `mailroom.rpc.domains.{verify,update,delete}` on one tenant's domain. Each is one
    unit of work; another tenant's domain id answers `not_found`."""

    def __init__(self, service: DomainService, pool: Pool, wake: asyncio.Event) -> None:
        self._service = service
        self._pool = pool
        self._wake = wake

    async def _guarded(self, work: Callable[[], Awaitable[DomainReply]]) -> DomainReply:
        try:
            return await work()
        except DomainsError as exc:
            structlog.contextvars.bind_contextvars(param=exc.param, reason=exc.message)
            return DomainReply(error=exc.to_rpc())
        except _DB_DOWN:
            return DomainReply(error=Unavailable("the domains database is unavailable").to_rpc())

    async def verify(self, req: VerifyDomainRequest) -> DomainReply:
        structlog.contextvars.bind_contextvars(domain_id=req.domain_id, tenant_id=req.tenant_id)

        async def work() -> DomainReply:
            async with self._pool.connection(timeout=DB_TIMEOUT_SECONDS) as conn, conn.transaction():
                snapshot = await self._service.request_check(conn, req.tenant_id, req.domain_id)
            self._wake.set()  # this replica's poller claims it at once (or another's, if quicker)
            return DomainReply(domain=snapshot)

        return await self._guarded(work)

    async def update(self, req: UpdateDomainRequest) -> DomainReply:
        structlog.contextvars.bind_contextvars(domain_id=req.domain_id, tenant_id=req.tenant_id)

        async def work() -> DomainReply:
            async with self._pool.connection(timeout=DB_TIMEOUT_SECONDS) as conn, conn.transaction():
                snapshot, at = await self._service.update_tracking(conn, req)
            return DomainReply(domain=snapshot, event_at=at)

        return await self._guarded(work)

    async def delete(self, req: DeleteDomainRequest) -> DomainReply:
        """SES first (outside any transaction), then the row and `DomainDeleted` in one transaction.
        SES down → `unavailable` and nothing changed here; a retry finds the identity gone and goes on."""
        structlog.contextvars.bind_contextvars(domain_id=req.domain_id, tenant_id=req.tenant_id)

        async def work() -> DomainReply:
            async with self._pool.connection(timeout=DB_TIMEOUT_SECONDS) as conn, conn.transaction():
                domain, owns_identity = await self._service.find_for_delete(conn, req.tenant_id, req.domain_id)
            if owns_identity:
                try:
                    await asyncio.wait_for(
                        self._service.delete_identity(domain), timeout=self._service.settings.create_timeout_seconds
                    )
                except TimeoutError:
                    raise Unavailable("SES did not answer in time") from None
            async with self._pool.connection(timeout=DB_TIMEOUT_SECONDS) as conn, conn.transaction():
                snapshot, at = await self._service.remove(conn, req.tenant_id, req.domain_id)
            log.info("domain.deleted", domain=snapshot.name, ses_identity_deleted=owns_identity)
            return DomainReply(domain=snapshot, event_at=at)

        return await self._guarded(work)


async def serve_create_rpc(
    nc: Client, service: DomainService, pool: Pool, stop: asyncio.Event, wake: asyncio.Event | None = None
) -> None:
    """Answer create, verify, update and delete requests (queue group "domains": one replica answers
    each) until `stop`. `wake` is set when a verify request made a domain due (the poller's wake-up)."""
    manage = ManageDomainHandlers(service, pool, wake or asyncio.Event())
    subs = [
        await rpc.serve(
            nc, subjects.RPC_DOMAINS_CREATE, CreateDomainRequest, CreateDomainHandler(service, pool), queue=RPC_QUEUE
        ),
        await rpc.serve(nc, subjects.RPC_DOMAINS_VERIFY, VerifyDomainRequest, manage.verify, queue=RPC_QUEUE),
        await rpc.serve(nc, subjects.RPC_DOMAINS_UPDATE, UpdateDomainRequest, manage.update, queue=RPC_QUEUE),
        await rpc.serve(nc, subjects.RPC_DOMAINS_DELETE, DeleteDomainRequest, manage.delete, queue=RPC_QUEUE),
    ]
    try:
        await stop.wait()
    finally:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class VerificationPoller:
    """Checks due domains: claims a batch (FOR UPDATE SKIP LOCKED, so any number of replicas can
    run), asks SES and the record checker about each outside any transaction, then applies each
    result under the domain's row lock."""

    def __init__(self, service: DomainService, pool: Pool, wake: asyncio.Event | None = None) -> None:
        self._service = service
        self._pool = pool
        self._wake = wake or asyncio.Event()

    async def run_once(self) -> int:
        """Check every domain this replica could claim now; return how many were claimed."""
        async with self._pool.connection() as conn, conn.transaction():
            claimed = await self._service.claim_due(conn)
        if claimed:
            await asyncio.gather(*(self.check(domain_id) for domain_id in claimed))
        return len(claimed)

    async def check(self, domain_id: str) -> None:
        """One unit of work: check one domain and record the outcome. Never raises."""
        outcome = CheckOutcome()
        with structlog.contextvars.bound_contextvars(domain_id=domain_id):
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    begun = await self._service.begin_check(conn, domain_id)
                if begun is None or begun[0].status == "failed":
                    return
                domain, check_seq = begun
                with structlog.contextvars.bound_contextvars(tenant_id=domain.tenant_id):
                    # No connection is held while SES and the record checker answer.
                    observation = await self._service.observe(domain, check_seq)
                    async with self._pool.connection() as conn, conn.transaction():
                        outcome = await self._service.apply(conn, observation)
                    event = outcome.event
                    if outcome.superseded:
                        log.info("domain.check_superseded", domain=domain.name, check_seq=check_seq)
                    elif event is not None:
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
            if outcome.superseded:
                DOMAIN_CHECKS.labels(outcome="superseded").inc()
            else:
                DOMAIN_CHECKS.labels(outcome="changed" if outcome.event is not None else "unchanged").inc()

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
            await self._sleep(stop, tick)

    async def _sleep(self, stop: asyncio.Event, tick: float) -> None:
        """Until the next tick, `stop`, or a verify request's wake-up."""
        if self._wake.is_set():
            self._wake.clear()
            return
        waiter: asyncio.Future[bool] = asyncio.ensure_future(self._wake.wait())
        try:
            await sleep_until_stopped_or(stop, waiter, tick)
        finally:
            waiter.cancel()
        self._wake.clear()


async def sleep_until_stopped_or(stop: asyncio.Event, waiter: asyncio.Future[bool], seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set or `waiter` completes."""
    stopper: asyncio.Future[bool] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopper, waiter}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
