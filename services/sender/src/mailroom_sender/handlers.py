"""Thin edges: the two JetStream message handlers. They own the transactions (TX1, provider
call outside any transaction, TX2) and settle the message (return = ack, `Retry` = nak with a
delay, `Permanent` = dead letter for a message that is not what the consumer follows). Each
email's outcome (`result`: sent | duplicate | failed | retry | in_doubt | in_doubt_wait, and its
details) goes on the kit's one `message.handled` line through `note`. Never the body.

An email whose content is in the object store (issue 16, sender/content.py) is looked up first:
already settled → nothing is fetched (a redelivery never needs the object); otherwise the content
is fetched and checked before anything else, and the object is deleted once the email is settled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mailroom_contracts.events import EmailProviderAccepted, EmailQueued, Event, TenantUpdated
from mailroom_kit.consumer import Permanent, Retry, note
from mailroom_kit.db import Pool
from nats.aio.msg import Msg

from mailroom_sender import repository
from mailroom_sender.content import ContentLoader, ContentUnavailable
from mailroom_sender.errors import (
    InDoubtProviderError,
    MessageBuildError,
    PermanentProviderError,
    TransientProviderError,
)
from mailroom_sender.governor import SendGovernor
from mailroom_sender.service import Held, InDoubt, Prepared, Refused, SenderService, Settled


class SenderHandlers:
    def __init__(
        self,
        pool: Pool,
        service: SenderService,
        content: ContentLoader | None = None,
        *,
        on_resume: Callable[[], None] | None = None,
        governor: SendGovernor | None = None,
        daily_hold_recheck_seconds: float = 60.0,
        admission: SendGovernor | None = None,
        queue_busy: Callable[[], bool] | None = None,
    ) -> None:
        self._pool = pool
        self._service = service
        self._content = content
        # issue 23: called when a tenant becomes active (wakes the sender's queue).
        self._on_resume = on_resume
        # issue 23: the shared send-rate governor (None = no limit, e.g. unit tests).
        self._governor = governor
        self._daily_recheck = daily_hold_recheck_seconds
        # issue 23 fairness (held.py): on the JetStream path a live email takes a token only
        # without waiting (`admission`: the same bucket, no wait) and only while the sender's queue
        # has no due backlog (`queue_busy`); otherwise it goes to the queue, claimed round-robin.
        self._admission = admission
        self._queue_busy = queue_busy

    async def email_queued(self, event: Event, msg: Msg | None = None, *, from_queue: bool = False) -> None:
        """SENDER_QUEUED: send one queued email exactly once. `from_queue`: run by the sender's own
        queue (held.py: a held email after its tenant's resume), not by its JetStream message."""
        if not isinstance(event, EmailQueued):
            raise Permanent(f"{event.__struct_config__.tag} on the queued consumer")
        ref = event.content
        if ref is None:
            await self._send(event, self._service.prepare(event), from_queue=from_queue)
            return
        # issue 16: the content is in the object store.
        if self._content is None:
            raise Retry("this sender has no content store")
        async with self._pool.connection() as conn:
            state = await repository.state_of(conn, event.email_id)
        if state in ("sent", "failed"):
            self._summary(event, outcome="duplicate", state=state, offloaded=True)
        else:
            try:
                full = await self._content.load(event)
            except ContentUnavailable as exc:
                self._summary(event, outcome="retry", error=exc.message, offloaded=True)
                raise Retry(exc.message) from exc
            except MessageBuildError as exc:
                settled = await self._send(
                    event, Prepared(raw=b"", recipients=[], error=exc), from_queue=from_queue, stored=event
                )
            else:
                # A large message is built off the event loop.
                prepared = await asyncio.to_thread(self._service.prepare, full)
                settled = await self._send(full, prepared, from_queue=from_queue, stored=event)
            if not settled:  # held (issue 23): the content is needed after the resume
                return
        # Settled (a Retry would have left above): the object is not needed any more.
        await self._content.discard(ref)

    async def _send(
        self, event: EmailQueued, prepared: Prepared, *, from_queue: bool = False, stored: EmailQueued | None = None
    ) -> bool:
        """TX1, the provider call, TX2. Returns once the email is settled (True) or held (False, issue
        23: its tenant is paused, or the sender's own queue owns it); raises Retry otherwise."""
        async with self._pool.connection() as conn:
            async with conn.transaction():
                begin = await self._service.begin(conn, event, prepared, from_queue=from_queue, stored=stored)
        if isinstance(begin, Held):
            self._summary(event, outcome="held", state=begin.state)
            return False
        if isinstance(begin, Settled):
            self._summary(
                event,
                outcome="duplicate",
                state=begin.state,
                provider_message_id=begin.provider_message_id,
            )
            return True
        if isinstance(begin, Refused):
            self._summary(event, outcome="failed", reason=begin.reason, error=begin.message)
            return True
        if isinstance(begin, InDoubt):
            self._summary(event, outcome="in_doubt_wait", in_doubt_remaining=round(begin.remaining, 1))
            raise Retry("earlier attempt may have reached SES; waiting for its Send event", delay=begin.recheck_in)
        if self._governor is not None and event.mode == "live":
            verdict = await self._admit(event, from_queue=from_queue)
            if verdict != "granted":
                # Not sent, certainly: the sender's queue owns the email until the governor lets it go.
                delay = {"daily_quota": self._daily_recheck, "fair_queue": 0.0}.get(verdict, 1.0)
                async with self._pool.connection() as conn, conn.transaction():
                    await self._service.defer(conn, event, begin.attempt, stored=stored, delay_seconds=delay)
                self._summary(event, outcome="held", reason=verdict, attempt=begin.attempt)
                return False
        try:
            result = await self._service.send(event, prepared)
        except PermanentProviderError as exc:
            async with self._pool.connection() as conn, conn.transaction():
                await self._service.record_failed(conn, event, exc)
            self._summary(event, outcome="failed", attempt=begin.attempt, reason=exc.reason, error=exc.message)
            return True
        except TransientProviderError as exc:
            async with self._pool.connection() as conn, conn.transaction():
                await self._service.release(conn, event, begin.attempt, exc)
            self._summary(event, outcome="retry", attempt=begin.attempt, error=exc.message)
            raise Retry(exc.message) from exc
        except InDoubtProviderError as exc:
            # Leave the row `sending`: SES may have it. Its Send event or the in-doubt timeout decides.
            self._summary(event, outcome="in_doubt", attempt=begin.attempt, error=exc.message)
            raise Retry(exc.message) from exc
        async with self._pool.connection() as conn, conn.transaction():
            settled_here = await self._service.record_sent(conn, event, result)
        self._summary(
            event,
            outcome="sent",
            attempt=begin.attempt,
            provider=result.provider,
            provider_message_id=result.message_id,
            settled_by="send" if settled_here else "send_event",
            resent_after_doubt=begin.resent_after_doubt or None,
        )
        return True

    async def _admit(self, event: EmailQueued, *, from_queue: bool) -> str:
        """A send-rate token for a live email: `granted`, or why not (`daily_quota`, `no_token`,
        `fair_queue` = go to the sender's queue and wait there for a round-robin turn)."""
        assert self._governor is not None
        if from_queue or self._admission is None:
            return await self._governor.acquire(event.stream)
        if self._queue_busy is not None and self._queue_busy():
            return "fair_queue"
        verdict = await self._admission.acquire(event.stream)
        return "fair_queue" if verdict == "no_token" else verdict

    async def provider_accepted(self, event: Event, msg: Msg | None = None) -> None:
        """SENDER_PROVIDER_ACCEPTED: SES's Send event settles a send that is still in doubt."""
        if not isinstance(event, EmailProviderAccepted):
            raise Permanent(f"{event.__struct_config__.tag} on the provider_accepted consumer")
        async with self._pool.connection() as conn, conn.transaction():
            settled = await self._service.settle_accepted(conn, event)
        if settled:
            note(result="sent", settled_by="send_event", provider="ses", provider_message_id=event.provider_message_id)
        else:
            note(result="nothing_to_settle")

    async def tenant_updated(self, event: Event, msg: Msg | None = None) -> None:
        """SENDER_TENANTS (issue 23): keep the sender's tenant read model; `blocked` fails the
        tenant's held emails, `active` lets the sender's queue send them (woken here, at once on
        this replica; the others poll)."""
        if not isinstance(event, TenantUpdated):
            raise Permanent(f"{event.__struct_config__.tag} on the tenants consumer")
        async with self._pool.connection() as conn, conn.transaction():
            failed = await self._service.apply_tenant(conn, event)
        note(status=event.status, result="stale" if failed is None else "applied", held_failed=failed or None)
        if failed is not None and event.status == "active" and self._on_resume is not None:
            self._on_resume()

    @staticmethod
    def _summary(event: EmailQueued, *, outcome: str, **fields: Any) -> None:
        note("warning" if outcome in ("in_doubt", "failed") else None, mode=event.mode, result=outcome, **fields)
