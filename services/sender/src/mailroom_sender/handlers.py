"""Thin edges: the two JetStream message handlers. They own the transactions (TX1, provider
call outside any transaction, TX2), settle the message (return = ack, `Retry` = nak with a
delay) and write one summary log line per email. Never the body."""

from __future__ import annotations

import time
from typing import Any

from mailroom_contracts.events import EmailProviderAccepted, EmailQueued, Event
from mailroom_kit.consumer import Retry
from mailroom_kit.db import Pool
from mailroom_kit.logging import get_logger
from nats.aio.msg import Msg

from mailroom_sender.errors import InDoubtProviderError, PermanentProviderError, TransientProviderError
from mailroom_sender.service import InDoubt, Refused, SenderService, Settled

log = get_logger("mailroom_sender.email")


class SenderHandlers:
    def __init__(self, pool: Pool, service: SenderService) -> None:
        self._pool = pool
        self._service = service

    async def email_queued(self, event: Event, msg: Msg | None = None) -> None:
        """SENDER_QUEUED: send one queued email exactly once."""
        if not isinstance(event, EmailQueued):
            log.warning("unexpected event type on the queued consumer", type=type(event).__name__)
            return
        started = time.perf_counter()
        prepared = self._service.prepare(event)
        async with self._pool.connection() as conn:
            async with conn.transaction():
                begin = await self._service.begin(conn, event, prepared)
        if isinstance(begin, Settled):
            self._summary(
                event,
                started,
                outcome="duplicate",
                state=begin.state,
                provider_message_id=begin.provider_message_id,
            )
            return
        if isinstance(begin, Refused):
            self._summary(event, started, outcome="failed", reason=begin.reason, error=begin.message)
            return
        if isinstance(begin, InDoubt):
            self._summary(event, started, outcome="in_doubt_wait", in_doubt_remaining=round(begin.remaining, 1))
            raise Retry("earlier attempt may have reached SES; waiting for its Send event", delay=begin.recheck_in)
        try:
            result = await self._service.send(event, prepared)
        except PermanentProviderError as exc:
            async with self._pool.connection() as conn, conn.transaction():
                await self._service.record_failed(conn, event, exc)
            self._summary(event, started, outcome="failed", attempt=begin.attempt, reason=exc.reason, error=exc.message)
            return
        except TransientProviderError as exc:
            async with self._pool.connection() as conn, conn.transaction():
                await self._service.release(conn, event, begin.attempt, exc)
            self._summary(event, started, outcome="retry", attempt=begin.attempt, error=exc.message)
            raise Retry(exc.message) from exc
        except InDoubtProviderError as exc:
            # Leave the row `sending`: SES may have it. Its Send event or the in-doubt timeout decides.
            self._summary(event, started, outcome="in_doubt", attempt=begin.attempt, error=exc.message)
            raise Retry(exc.message) from exc
        async with self._pool.connection() as conn, conn.transaction():
            settled_here = await self._service.record_sent(conn, event, result)
        self._summary(
            event,
            started,
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
            log.warning("unexpected event type on the provider_accepted consumer", type=type(event).__name__)
            return
        async with self._pool.connection() as conn, conn.transaction():
            settled = await self._service.settle_accepted(conn, event)
        if settled:
            log.info(
                "email settled by SES send event",
                email_id=event.email_id,
                tenant_id=event.tenant_id,
                outcome="sent",
                provider="ses",
                provider_message_id=event.provider_message_id,
            )

    @staticmethod
    def _summary(event: EmailQueued, started: float, *, outcome: str, **fields: Any) -> None:
        extra = {k: v for k, v in fields.items() if v is not None}
        level = log.warning if outcome in ("in_doubt", "failed") else log.info
        level(
            "email handled",
            email_id=event.email_id,
            tenant_id=event.tenant_id,
            mode=event.mode,
            outcome=outcome,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            **extra,
        )
