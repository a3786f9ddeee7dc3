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

import msgspec
from mailroom_contracts import decode_event
from mailroom_contracts.events import EmailProviderAccepted, EmailQueued, Event, TenantUpdated
from mailroom_kit.consumer import BatchItem, Permanent, Retry, note
from mailroom_kit.db import Pool, single_statement
from nats.aio.msg import Msg

from mailroom_sender import repository
from mailroom_sender.content import ContentLoader, ContentUnavailable
from mailroom_sender.errors import (
    InDoubtProviderError,
    MessageBuildError,
    PermanentProviderError,
    TransientProviderError,
)
from mailroom_sender.governor import GOVERNOR_HELD, SendGovernor
from mailroom_sender.mime import recipients
from mailroom_sender.service import Held, InDoubt, Prepared, Refused, SenderService, Settled

# issue 23 fairness: a stream backlog at least this long (not yet handled) goes to the sender's queue
# a fetch at a time (SenderHandlers.backlog); below it the per-message path reads it within seconds.
BACKLOG = 500


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
        wake_queue: Callable[[], None] | None = None,
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
        # issue 23 fairness: wakes the sender's queue once a backlog was handed to it.
        self._wake_queue = wake_queue

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

    # ------------------------------------------------------------ issue 23: a backlog in the stream

    def backlog(self, msgs: list[Msg], free: int) -> list[Msg]:
        """`Bulk.take` of the `sender-queued` consumer: the live emails of a fetch that go to the
        sender's queue as they are, unbuilt and unsent (`queue_backlog`), so a backlog in the stream
        reaches the round-robin queue at database speed and another tenant's email behind it is read
        within seconds. Taken when the stream holds a backlog (`BACKLOG` messages or more not yet
        handled, counting this fetch: the per-message path, ≈ 400/s, would take seconds to read
        them), or the queue already has due emails (they would only queue there one by one). A
        burst smaller than that keeps the per-message path (sent at once while tokens last). Only
        first deliveries: a redelivered message is one the per-message path must look at (its row
        may exist). Test mode never waits for a token: never taken."""
        if self._governor is None or self._queue_busy is None or not msgs:
            return []
        behind = msgs[-1].metadata.num_pending or 0
        if len(msgs) + behind < BACKLOG and not self._queue_busy():
            return []
        live: list[Msg] = []
        for msg in msgs:
            if (msg.metadata.num_delivered or 1) > 1:
                continue
            try:
                event = decode_event(msg.data)
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue  # the per-message path dead-letters it
            if isinstance(event, EmailQueued) and event.mode == "live":
                live.append(msg)
        return live

    async def queue_backlog(self, items: list[BatchItem]) -> None:
        """`Bulk.handler`: the taken emails become the sender's queue's (`held`, due now, the message
        as published kept: repository.queue_backlog), in one transaction; acked after its commit.
        Nothing is built or sent here: the queue claims them round-robin over tenants and runs each
        through the same exactly-once steps (TX1, SES, TX2), where a paused or blocked tenant, an
        invalid message or offloaded content are dealt with as on the per-message path. An email
        whose row exists already, or whose envelope is not valid, is handed back (redelivered at once
        to the per-message path, which settles it)."""
        rows: list[repository.Backlogged] = []
        for item in items:
            event = item.event
            if not isinstance(event, EmailQueued):
                item.permanent(f"{event.__struct_config__.tag} on the queued consumer")
                continue
            try:
                envelope = recipients(event)
            except MessageBuildError:
                item.note(result="handed_back")
                item.retry("not a valid envelope: the per-message path fails it", delay=0)
                continue
            rows.append(
                repository.Backlogged(
                    email_id=event.email_id,
                    tenant_id=event.tenant_id,
                    mode=event.mode,
                    recipients=envelope,
                    queued_event=item.msg.data,
                    stream=event.stream,
                )
            )
        async with self._pool.connection() as conn, conn.transaction():
            queued = await repository.queue_backlog(conn, rows)
        for item in items:
            event = item.event
            if not isinstance(event, EmailQueued) or item.decided:
                continue
            if event.email_id in queued:
                GOVERNOR_HELD.labels(stream=event.stream, reason="fair_queue").inc()
                item.note(mode=event.mode, result="held", reason="fair_queue", backlog=True)
            else:
                item.note(result="handed_back")
                item.retry("already known: the per-message path looks at it", delay=0)
        if queued and self._wake_queue is not None:
            self._wake_queue()

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
                if delay == 0.0 and self._wake_queue is not None:
                    self._wake_queue()  # due now: the queue looks at once, not at its next poll
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
        settled_here = False
        if begin.started_at is not None:  # TX2 in one statement (issue 15)
            async with self._pool.connection() as conn, single_statement(conn):
                settled_here = await self._service.record_sent_at_once(
                    conn, event, result, started_at=begin.started_at, recipients=prepared.recipients
                )
        if not settled_here:  # settled first (by the Send event, say): record_sent says how
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
        """One SES Send event (`provider_accepted_batch` of one)."""
        if not isinstance(event, EmailProviderAccepted):
            raise Permanent(f"{event.__struct_config__.tag} on the provider_accepted consumer")
        async with self._pool.connection() as conn, conn.transaction():
            settled = await self._service.settle_accepted(conn, event)
        if settled:
            note(result="sent", settled_by="send_event", provider="ses", provider_message_id=event.provider_message_id)
        else:
            note(result="nothing_to_settle")

    async def provider_accepted_batch(self, items: list[BatchItem]) -> None:
        """SENDER_PROVIDER_ACCEPTED (the kit's batch mode, issue 15): SES's Send events of one fetch
        settle the sends still in doubt among them, in one transaction, acked after its commit."""
        accepted: list[tuple[BatchItem, EmailProviderAccepted]] = []
        for item in items:
            if isinstance(item.event, EmailProviderAccepted):
                accepted.append((item, item.event))
            else:
                item.permanent(f"{item.event.__struct_config__.tag} on the provider_accepted consumer")
        if not accepted:
            return
        async with self._pool.connection() as conn, conn.transaction():
            settled = await self._service.settle_accepted_many(conn, [event for _, event in accepted])
        for item, event in accepted:
            if event.email_id in settled:
                settled.discard(event.email_id)  # its first event settled it; a later one did nothing
                item.note(
                    result="sent",
                    settled_by="send_event",
                    provider="ses",
                    provider_message_id=event.provider_message_id,
                )
            else:
                item.note(result="nothing_to_settle")

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
