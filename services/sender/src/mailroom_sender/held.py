"""The sender's own queue (issue 23): emails whose EmailQueued message was acked while their tenant
was paused, kept in `deliveries` (state `held`, the event in `queued_event`), sent once the tenant
is active again.

Why a queue of our own and not the JetStream message: holding must last as long as the pause
(days), beyond what a message can wait (its consumer's `max_deliveries` and the stream's 14-day
max age), and a held email is not a failure to be retried. So once held, the row owns the email:
a redelivered EmailQueued for it is acked as `held` (service.begin), and this worker runs it
through the very same exactly-once steps (`SenderHandlers.email_queued(from_queue=True)`: TX1,
the provider call, TX2), with its own retry schedule in `next_attempt_at` in place of the
message's nak/backoff.

Claiming is a lease: `claim_queued` moves a due row's `next_attempt_at` `lease_seconds` ahead in
the claiming transaction (SKIP LOCKED, so replicas never take the same row together). A replica
that dies holding rows leaves them to be claimed again after the lease, and the row's state says
what happened: `sending` = in doubt, handled like any in-doubt send (wait for SES's Send event).

**Fairness** (issue 23). When SES's send rate is the limit, the queue is where live emails wait,
and it is drained round-robin over tenants (`claim_queued`: each tenant's first due email, then
each one's second, …). The JetStream path (`SenderHandlers._admit`) sends a live email directly
only if a token is there at once and this queue has no due backlog (`busy`); otherwise it hands
the email to the queue (`defer`, due now; the hand-over counts as an attempt) and acks it. A backlog
in the stream is handed over in bulk, a fetch per transaction, unbuilt (`SenderHandlers.backlog` /
`queue_backlog`: ≈ 7,000 emails/s here, README). So while a tenant has 20,000 emails queued, in
the stream or here, another tenant's single email is in the queue within seconds and then in its
next batch: it waits about one batch of sends (`batch` / the send rate), not the other tenant's
backlog. Test mode never waits for a token, so it is never queued for fairness.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from mailroom_contracts import decode_event
from mailroom_kit.consumer import Retry, backoff
from mailroom_kit.db import Pool
from mailroom_kit.logging import get_logger

from mailroom_sender import repository
from mailroom_sender.handlers import SenderHandlers

log = get_logger(__name__)


class HeldQueue:
    def __init__(
        self,
        pool: Pool,
        handlers: SenderHandlers,
        *,
        batch: int = 16,
        poll_seconds: float = 1.0,
        lease_seconds: float = 120.0,
    ) -> None:
        self._pool = pool
        self.handlers = handlers
        self._batch = batch
        self._poll = poll_seconds
        # Longer than one email's TX1 + SES call + TX2 (content fetch 60 s at most, SES ≤ 35 s).
        self._lease = lease_seconds
        self._wake = asyncio.Event()
        # issue 23 fairness: when the last claim found due emails (monotonic), for `busy`.
        self._last_claimed_at = -1e9
        self._running = 0

    def busy(self) -> bool:
        """The queue had due emails at its last claim (within two polls): the JetStream path then
        sends no live email directly, it queues it behind the round-robin (fairness)."""
        return self._running > 0 or time.monotonic() - self._last_claimed_at < 2 * self._poll + 1.0

    def wake(self) -> None:
        """A tenant became active on this replica: look at once instead of at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                claimed = await self.run_once()
            except Exception as exc:  # Postgres away: try again at the next poll
                log.warning("held.claim_failed", error=repr(exc))
                claimed = 0
            if claimed:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait(stop), timeout=self._poll)

    async def _wait(self, stop: asyncio.Event) -> None:
        waits = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in waits:
                t.cancel()

    async def run_once(self) -> int:
        """Claim the due emails (at most `batch`) and run each; returns how many were claimed."""
        async with self._pool.connection() as conn, conn.transaction():
            claimed = await repository.claim_queued(conn, limit=self._batch, lease_seconds=self._lease)
        if claimed:
            self._last_claimed_at = time.monotonic()
            self._running += 1
            try:
                await asyncio.gather(*(self._one(item) for item in claimed))
            finally:
                self._running -= 1
                self._last_claimed_at = time.monotonic()
        return len(claimed)

    async def _one(self, item: repository.QueuedEmail) -> None:
        try:
            event = decode_event(item.queued_event)
            await self.handlers.email_queued(event, from_queue=True)
            log.info("held.handled", email_id=item.email_id)
        except Retry as exc:
            delay = exc.delay if exc.delay is not None else backoff(item.attempts)
            await self._reschedule(item, delay, reason=str(exc))
        except Exception as exc:
            await self._reschedule(item, backoff(item.attempts + 1), reason=repr(exc))

    async def _reschedule(self, item: repository.QueuedEmail, delay: float, *, reason: str) -> None:
        log.info("held.retry", email_id=item.email_id, delay=delay, reason=reason[:200])
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await repository.reschedule(conn, item.email_id, delay_seconds=delay)
        except Exception as exc:  # the lease expires instead
            log.warning("held.reschedule_failed", email_id=item.email_id, error=repr(exc))
