"""The webhooks service's Prometheus metrics (exposed on /metrics next to the kit's)."""

from prometheus_client import Counter, Gauge, Histogram

ATTEMPTS = Counter("mailroom_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])
ATTEMPT_SECONDS = Histogram("mailroom_webhook_attempt_seconds", "Webhook delivery attempt latency")
# Read every MAILROOM_METRICS_INTERVAL_SECONDS (app.backlog_gauges): the deliveries not finished yet,
# by state: `due` (pending, due now: the dispatcher is behind), `waiting` (pending, a retry later),
# `in_flight` (claimed by a dispatcher), `paused` (pending at a disabled endpoint, until it is
# enabled again); and how long the longest-due one has been due (0 when none is).
DELIVERY_BACKLOG = Gauge("mailroom_webhook_deliveries", "Webhook deliveries not finished, by state", ["state"])
OLDEST_DUE_SECONDS = Gauge(
    "mailroom_webhook_oldest_due_seconds", "How long the longest-due webhook delivery has been due (0 when none)"
)
