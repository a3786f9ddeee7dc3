"""The delivery worker: claims due deliveries, POSTs them, settles each attempt.

Safe with any number of replicas: claims take rows with `FOR UPDATE SKIP LOCKED` and mark them
in flight under a lease; a worker that dies mid-attempt leaves a lease that expires, and the
delivery is claimed again (at-least-once; receivers de-duplicate by `webhook-id`). Claims never
take an endpoint above `per_endpoint_concurrency` live leases, so one slow endpoint holds at most
that many of this process's `concurrency` slots and never delays the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from cryptography.fernet import InvalidToken
from mailroom_kit import tracing
from mailroom_kit.db import Pool
from mailroom_kit.group_commit import Alone, GroupWriter
from mailroom_kit.logging import get_logger
from mailroom_kit.wake import LINGER_SECONDS, STREAM_GAP_SECONDS, PgWaker, StreamLinger

from mailroom_webhooks import delivery, service
from mailroom_webhooks import repository as repo
from mailroom_webhooks.metrics import ATTEMPT_SECONDS, ATTEMPTS
from mailroom_webhooks.service import AttemptResult, Claim, RetryRules
from mailroom_webhooks.settings import WebhooksSettings
from mailroom_webhooks.signing import SecretBox

log = get_logger(__name__)
_POST_SPAN = {"http.request.method": "POST"}

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    """`clock` decides what is due and when retries and disabling happen (tests inject one that
    jumps hours ahead); the database stores the times it gives."""

    def __init__(
        self,
        pool: Pool,
        settings: WebhooksSettings,
        client: httpx.AsyncClient,
        box: SecretBox,
        *,
        clock: Clock = system_clock,
        linger_seconds: float = LINGER_SECONDS,
        stream_gap_seconds: float = STREAM_GAP_SECONDS,
    ) -> None:
        self._pool = pool
        self._linger = linger_seconds
        self._stream_gap = stream_gap_seconds
        self._settings = settings
        self._client = client
        self._box = box
        self._clock = clock
        self._rules = RetryRules(
            max_attempts=settings.max_attempts,
            schedule=settings.retry_delays(),
            max_retry_after=settings.max_retry_after_seconds,
            disable_after_failing_seconds=settings.disable_after_failing_days * 86400.0,
        )
        self._running: set[asyncio.Task[None]] = set()
        self._waker: PgWaker | None = None
        # issue 15: successful attempts that finish together are settled by one statement.
        self.successes: GroupWriter[repo.Succeeded, bool] = GroupWriter(
            pool, repo.settle_succeeded, name="webhook-settle"
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` (returns at once when idle); woken by the fan-out's NOTIFY and by
        finished attempts, polling as the fallback."""
        async with PgWaker(self._settings.database_url, repo.DELIVERIES_CHANNEL, stop=stop) as waker:
            self._waker = waker
            linger = StreamLinger(self._linger, self._stream_gap)  # busy: a claim that took some
            try:
                while not stop.is_set():
                    waker.clear()
                    free = self._settings.concurrency - len(self._running)
                    claimed = 0
                    if free > 0:
                        try:
                            claimed = await self.dispatch_once(free)
                        except Exception as exc:  # Postgres down: try again shortly
                            log.warning("webhook.claim_failed", error=repr(exc))
                    if claimed:
                        linger.busy()
                    if free > 0 and claimed == free:
                        continue  # there may be more due right now
                    # issue 15: inside a stream of fan-outs, one claim (a transaction) for several.
                    if await waker.wait(self._settings.poll_interval_seconds) and await linger.pause(stop):
                        break
            finally:
                self._waker = None
                await self.drain(grace=min(self._settings.timeout_seconds, 10.0))

    async def dispatch_once(self, limit: int) -> int:
        """Claim up to `limit` due deliveries and start an attempt for each; return how many."""
        async with self._pool.connection() as conn, conn.transaction():
            claims = await service.claim_due(
                conn,
                limit=limit,
                per_endpoint=self._settings.per_endpoint_concurrency,
                lease_seconds=self._settings.lease_seconds,
                now=self._clock(),
            )
        for claim in claims:
            task = asyncio.create_task(self._deliver(claim), name=f"deliver-{claim.delivery_id}")
            self._running.add(task)
            task.add_done_callback(self._finished)
        return len(claims)

    async def drain(self, grace: float) -> None:
        """Let in-flight attempts finish; unfinished ones are re-delivered when their lease expires."""
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=grace)
            for task in pending:
                task.cancel()
        await self.successes.close()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._waker is not None:
            self._waker.set()  # a slot is free

    async def _settle(self, claim: Claim, result: AttemptResult) -> str:
        """`service.settle_attempt`'s outcome; a success through the group commit (the same writes)."""
        now = self._clock()
        if result.succeeded and result.status_code is not None:
            kept = await self.successes.submit(
                repo.Succeeded(
                    delivery_id=claim.delivery_id,
                    endpoint_id=claim.endpoint_id,
                    attempt=claim.attempt,
                    started_at=result.started_at,
                    status_code=result.status_code,
                    latency_ms=result.latency_ms,
                    response_body=result.response_body,
                    manual=claim.manual,
                    completed_at=now,
                )
            )
            if not isinstance(kept, Alone):
                return "succeeded" if kept else "lost"
        async with self._pool.connection() as conn, conn.transaction():
            return await service.settle_attempt(conn, claim, result, rules=self._rules, now=now)

    async def _deliver(self, claim: Claim) -> None:
        try:
            secret = self._box.decrypt(claim.secret_encrypted)
            previous = self._box.decrypt(claim.previous_secret_encrypted) if claim.previous_secret_encrypted else None
        except InvalidToken:
            log.error(
                "webhook.secret_undecryptable",
                webhook_id=claim.endpoint_id,
                detail="the secret cannot be decrypted with MAILROOM_WEBHOOKS_SECRET_KEY",
            )
            result = AttemptResult(started_at=datetime.now(UTC), latency_ms=0, error="secret_undecryptable")
        else:
            # Traced under the span that fanned the event out, from the context stored with the
            # delivery (so a retry hours later, by any replica, continues the email's trace); a
            # no-op when tracing is off.
            with tracing.client_span(
                "webhook POST", parent_context=claim.trace_context, parent_event_id=claim.event_id, **_POST_SPAN
            ) as span:
                result = await delivery.attempt(
                    self._client,
                    claim,
                    secret,
                    time_limit=self._settings.timeout_seconds,
                    previous_secret=previous,
                )
                tracing.annotate(span, error=result.error, **{"http.response.status_code": result.status_code})
        ATTEMPT_SECONDS.observe(result.latency_ms / 1000)
        for pause in (0.0, 0.5, 2.0):
            await asyncio.sleep(pause)
            try:
                outcome = await self._settle(claim, result)
                break
            except Exception as exc:
                log.warning("webhook.record_failed", delivery_id=claim.delivery_id, error=repr(exc))
        else:
            outcome = "unrecorded"  # the lease expires and the delivery is attempted again
        ATTEMPTS.labels(outcome=outcome).inc()
        log.info(
            "webhook.attempt",
            webhook_id=claim.endpoint_id,
            delivery_id=claim.delivery_id,
            event_id=claim.event_id,
            tenant_id=claim.tenant_id,
            event_type=claim.event_type,
            attempt=claim.attempt,
            status_code=result.status_code,
            error=result.error,
            latency_ms=result.latency_ms,
            outcome=outcome,
        )
