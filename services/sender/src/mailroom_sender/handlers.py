"""Thin edges: the two JetStream message handlers. They own the transactions (TX1, provider
call outside any transaction, TX2) and settle the message (return = ack, `Retry` = nak with a
delay, `Permanent` = dead letter for a message that is not what the consumer follows). Each
email's outcome (`result`: sent | duplicate | failed | retry | in_doubt | in_doubt_wait, and its
details) goes on the kit's one `message.handled` line through `note`. Never the body."""

from __future__ import annotations

from typing import Any

from mailroom_contracts.events import EmailProviderAccepted, EmailQueued, Event
from mailroom_kit.consumer import Permanent, Retry, note
from mailroom_kit.db import Pool
from nats.aio.msg import Msg

from mailroom_sender.errors import InDoubtProviderError, PermanentProviderError, TransientProviderError
from mailroom_sender.service import InDoubt, Refused, SenderService, Settled


class SenderHandlers:
    def __init__(self, pool: Pool, service: SenderService) -> None:
        self._pool = pool
        self._service = service

    async def email_queued(self, event: Event, msg: Msg | None = None) -> None:
        """SENDER_QUEUED: send one queued email exactly once."""
        if not isinstance(event, EmailQueued):
            raise Permanent(f"{event.__struct_config__.tag} on the queued consumer")
        prepared = self._service.prepare(event)
        async with self._pool.connection() as conn:
            async with conn.transaction():
                begin = await self._service.begin(conn, event, prepared)
        if isinstance(begin, Settled):
            self._summary(
                event,
                outcome="duplicate",
                state=begin.state,
                provider_message_id=begin.provider_message_id,
            )
            return
        if isinstance(begin, Refused):
            self._summary(event, outcome="failed", reason=begin.reason, error=begin.message)
            return
        if isinstance(begin, InDoubt):
            self._summary(event, outcome="in_doubt_wait", in_doubt_remaining=round(begin.remaining, 1))
            raise Retry("earlier attempt may have reached SES; waiting for its Send event", delay=begin.recheck_in)
        try:
            result = await self._service.send(event, prepared)
        except PermanentProviderError as exc:
            async with self._pool.connection() as conn, conn.transaction():
                await self._service.record_failed(conn, event, exc)
            self._summary(event, outcome="failed", attempt=begin.attempt, reason=exc.reason, error=exc.message)
            return
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

    @staticmethod
    def _summary(event: EmailQueued, *, outcome: str, **fields: Any) -> None:
        note("warning" if outcome in ("in_doubt", "failed") else None, mode=event.mode, result=outcome, **fields)
