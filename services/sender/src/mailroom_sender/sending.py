"""`mailroom.rpc.sender.status` (issue 23): the operator API's `GET /admin/v1/sending`.

Every replica serves it in one queue group ("sender"), so whichever replica NATS picks answers,
and it answers from the sender's database (the shared governor row and the shared queue), never
from its own memory: any replica gives the whole truth, once. No addresses or content: the quota,
counts, and tenant ids (the operator's own view).
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict

from mailroom_contracts import subjects
from mailroom_contracts.rpc import SendingStatusReply, SendingStatusRequest, SendingStream, SendingTenant
from mailroom_kit import rpc
from mailroom_kit.runtime import Runtime

from mailroom_sender import repository
from mailroom_sender.ops import holding
from mailroom_sender.settings import SenderSettings

RPC_QUEUE = "sender"
STREAMS = ("transactional", "broadcast")
TENANTS_MAX = 100


async def sending_status(rt: Runtime[SenderSettings]) -> SendingStatusReply:
    async with rt.pool.connection() as conn:
        q = await repository.quota(conn)
        rows = await repository.queue_by_stream_and_tenant(conn)
    waiting: Counter[str] = Counter()
    by_tenant: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        reason = "tenant_paused" if r["paused"] else "queued"
        by_tenant[r["tenant_id"]][reason] += r["n"]
        if not r["paused"]:
            waiting[r["stream"]] += r["n"]
    shares = {"transactional": 1.0, "broadcast": rt.settings.daily_quota_hold_share}
    streams = []
    for name in STREAMS:
        held = holding(q, shares[name])
        streams.append(
            SendingStream(stream=name, held=held, reason="daily_quota" if held else None, waiting=waiting[name])
        )
    tenants = sorted(by_tenant.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:TENANTS_MAX]
    return SendingStatusReply(
        max_send_rate=q.max_send_rate,
        max_24_hour_send=q.max_24_hour_send,
        sent_last_24_hours=q.sent_24h,
        refreshed_at=q.refreshed_at,
        transactional_reserve=rt.settings.transactional_reserve,
        broadcast_hold_share=rt.settings.daily_quota_hold_share,
        streams=streams,
        tenants=[SendingTenant(tenant_id=t, held=dict(c)) for t, c in tenants],
    )


async def serve_sending_rpc(rt: Runtime[SenderSettings]) -> None:
    """Worker: answer `mailroom.rpc.sender.status` until stop."""

    async def handle(_: SendingStatusRequest) -> SendingStatusReply:
        return await sending_status(rt)

    sub = await rpc.serve(rt.nc, subjects.RPC_SENDER_STATUS, SendingStatusRequest, handle, queue=RPC_QUEUE)
    try:
        await rt.stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
