"""The webhooks service's Prometheus metrics (exposed on /metrics next to the kit's)."""

from prometheus_client import Counter, Histogram

ATTEMPTS = Counter("mailroom_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])
ATTEMPT_SECONDS = Histogram("mailroom_webhook_attempt_seconds", "Webhook delivery attempt latency")
