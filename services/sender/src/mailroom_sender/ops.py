"""The operator's view of what the sender is holding (issue 23): `GET /status` on the ops port
(next to /health, /ready, /metrics) and the gauge `mailroom_sender_queue_emails{reason}`.

Holding mail is not a fault of the replica, so `/ready` stays 200 while mail is held (a failing
readiness would only take replicas out of rotation, which sends nothing sooner); an operator sees
it here and in /metrics instead. No tenant ids, addresses or content: counts and the quota.

`/status`:
`{"send_quota": {max_send_rate, max_24_hour_send, sent_24h, refreshed_at},
  "daily_quota_holding": {"transactional": bool, "broadcast": bool},
  "queue": {"tenant_paused": n, "waiting": n, "due": n}}`:
the quota as GetAccount last reported it (shared row, all replicas), whether each stream is held
for the daily quota now (broadcast from `MAILROOM_SENDER_DAILY_QUOTA_HOLD_SHARE`, transactional at
100 %), and the sender's own queue: emails of paused tenants, emails waiting for their next try (a
daily-quota recheck, a retry's backoff), and emails due now (waiting for a send-rate token and
their tenant's round-robin turn).
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, get
from mailroom_kit.logging import get_logger
from mailroom_kit.runtime import Runtime, ops_app
from mailroom_kit.wake import sleep_until_stopped
from prometheus_client import Gauge

from mailroom_sender import repository
from mailroom_sender.settings import SenderSettings

log = get_logger(__name__)

QUEUE_EMAILS = Gauge(
    "mailroom_sender_queue_emails",
    "Emails in the sender's own queue: of paused tenants, waiting for their next try, due now",
    ["reason"],
)


def holding(q: repository.Quota, share: float) -> bool:
    """The day's sends have reached `share` of Max24HourSend (< 0 = unlimited: never)."""
    return q.max_24_hour_send >= 0 and q.sent_24h >= q.max_24_hour_send * share


async def status(rt: Runtime[SenderSettings]) -> dict[str, Any]:
    async with rt.pool.connection() as conn:
        q = await repository.quota(conn)
        queue = await repository.queue_summary(conn)
    for reason, n in queue.items():
        QUEUE_EMAILS.labels(reason=reason).set(n)
    return {
        "send_quota": {
            "max_send_rate": q.max_send_rate,
            "max_24_hour_send": q.max_24_hour_send,
            "sent_24h": q.sent_24h,
            "refreshed_at": q.refreshed_at.isoformat() if q.refreshed_at else None,
        },
        "daily_quota_holding": {
            "transactional": holding(q, 1.0),
            "broadcast": holding(q, rt.settings.daily_quota_hold_share),
        },
        "queue": queue,
    }


def build_app(rt: Runtime[SenderSettings]) -> Litestar:
    """The kit's ops app plus `GET /status`."""

    @get("/status", include_in_schema=False)
    async def status_handler() -> dict[str, Any]:
        return await status(rt)

    app = ops_app(rt)
    app.register(status_handler)
    return app


async def queue_gauges(rt: Runtime[SenderSettings]) -> None:
    """Every `MAILROOM_METRICS_INTERVAL_SECONDS`: the queue gauge (the status view reads the same)."""
    while not rt.stop.is_set():
        try:
            await status(rt)
        except Exception as exc:  # Postgres away: the next interval
            log.warning("sender.queue_gauges_failed", error=type(exc).__name__)
        if await sleep_until_stopped(rt.stop, rt.settings.metrics_interval_seconds):
            return
