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
HTTP_REQUEST_SECONDS = Histogram("mailroom_http_request_seconds", "Time to answer one HTTP request", ["service"])
RPC_REQUESTS = Counter("mailroom_rpc_requests_total", "RPC requests answered", ["subject", "outcome"])
RPC_SECONDS = Histogram("mailroom_rpc_request_seconds", "Time to answer one RPC request", ["subject"])
