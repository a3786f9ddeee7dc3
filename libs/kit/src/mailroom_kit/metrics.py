"""Prometheus metrics shared by every service (each process exposes them on /metrics)."""

from prometheus_client import Counter, Histogram

OUTBOX_PUBLISHED = Counter("mailroom_outbox_published_total", "Events relayed from the outbox", ["schema"])
MESSAGES_HANDLED = Counter("mailroom_messages_handled_total", "JetStream messages handled", ["consumer", "outcome"])
MESSAGE_SECONDS = Histogram("mailroom_message_handle_seconds", "Time to handle one message", ["consumer"])
DEAD_LETTERS = Counter(
    "mailroom_dead_letters_total",
    "Messages a consumer gave up on and published to mailroom.dlq.<durable>",
    ["consumer"],
)
HTTP_REQUESTS = Counter("mailroom_http_requests_total", "HTTP requests", ["service", "method", "status"])
