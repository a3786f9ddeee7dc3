"""Helpers shared by the kit's consumer suites: sample events and `Space`, a private stream with
its own durable consumers on the session's nats-server."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from mailroom_contracts.events import DomainCreated, DomainSnapshot, EmailSent
from mailroom_contracts.streams import DLQ_STREAM, ConsumerSpec, StreamSpec
from nats.js import JetStreamContext

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def sent(n: int = 0) -> EmailSent:
    return EmailSent(
        event_id=f"evt_{secrets.token_hex(8)}",
        occurred_at=NOW,
        tenant_id="ten_1",
        email_id=f"msg_{n}",
        provider="ses",
        provider_message_id=f"pm-{n}",
    )


def domain_created() -> DomainCreated:
    snapshot = DomainSnapshot(
        domain_id="dom_1",
        tenant_id="ten_1",
        name="example.test",
        status="pending",
        region="us-east-1",
        mail_from_domain="bounce.example.test",
        created_at=NOW,
        records=[],
    )
    return DomainCreated(event_id=f"evt_{secrets.token_hex(8)}", occurred_at=NOW, tenant_id="ten_1", domain=snapshot)


class Space:
    """A private stream on `<prefix>.>` plus the contracts' DLQ stream, on the session's server."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self.prefix = f"t{secrets.token_hex(4)}"
        self.stream = StreamSpec(name=self.prefix.upper(), subjects=[f"{self.prefix}.>"], description="test")

    async def __aenter__(self) -> Space:
        from mailroom_kit.jetstream import reconcile

        await reconcile(self.js, [self.stream, DLQ_STREAM], [])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.js.delete_stream(self.stream.name)

    def consumer(self, *filters: str, max_deliveries: int = 20) -> ConsumerSpec:
        return ConsumerSpec(
            durable=f"c-{secrets.token_hex(4)}",
            stream=self.stream.name,
            filter_subjects=[f"{self.prefix}.{f}" for f in filters],
            description="test",
            ack_wait_seconds=5,
            max_deliveries=max_deliveries,
        )

    async def publish(self, subject: str, data: bytes, msg_id: str | None = None) -> None:
        await self.js.publish(f"{self.prefix}.{subject}", data, headers={"Nats-Msg-Id": msg_id} if msg_id else None)
