"""Asks the sender (any replica: `mailroom.rpc.sender.status`, answered from its database) what
the sending governor holds. No sender answering in time is 503 `unavailable`."""

from __future__ import annotations

from mailroom_contracts import subjects
from mailroom_contracts.rpc import SendingStatusReply, SendingStatusRequest
from nats.aio.client import Client

from mailroom_api import rpc
from mailroom_api.sending.schemas import Sending, SendingStream, SendingTenant, SendQuota


async def get_sending(nc: Client, *, rpc_timeout: float) -> Sending:
    reply = await rpc.call(
        nc, subjects.RPC_SENDER_STATUS, SendingStatusRequest(), SendingStatusReply, timeout=rpc_timeout
    )
    return Sending(
        send_quota=SendQuota(
            max_send_rate=reply.max_send_rate,
            max_24_hour_send=reply.max_24_hour_send,
            sent_last_24_hours=reply.sent_last_24_hours,
            refreshed_at=reply.refreshed_at,
        ),
        transactional_reserve=reply.transactional_reserve,
        broadcast_hold_share=reply.broadcast_hold_share,
        streams=[
            SendingStream(stream=s.stream, held=s.held, reason=s.reason, waiting=s.waiting) for s in reply.streams
        ],
        tenants=[SendingTenant(tenant_id=t.tenant_id, held=dict(t.held)) for t in reply.tenants],
    )
