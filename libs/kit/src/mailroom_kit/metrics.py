"""Prometheus metrics shared by every service (each process exposes them on /metrics)."""

import gc

from prometheus_client import Counter, Gauge, Histogram

# By subject: rate(...{subject="mailroom.email.queued"}) is emails accepted, `.sent`, `.failed`,
# `.delivered`, `.bounced` … the outcomes, each counted once by the service that publishes it.
OUTBOX_PUBLISHED = Counter("mailroom_outbox_published_total", "Events relayed from the outbox", ["schema", "subject"])
MESSAGES_HANDLED = Counter("mailroom_messages_handled_total", "JetStream messages handled", ["consumer", "outcome"])
MESSAGE_SECONDS = Histogram("mailroom_message_handle_seconds", "Time to handle one message", ["consumer"])
DEAD_LETTERS = Counter(
    "mailroom_dead_letters_total",
    "Messages a consumer gave up on and published to mailroom.dlq.<durable>",
    ["consumer"],
)
# `route` is the matched route's template (`/v1/emails/{email_id}`), never the path itself, so its
# values are the routes the service has (plus "unmatched"): no id or token becomes a label.
HTTP_REQUESTS = Counter("mailroom_http_requests_total", "HTTP requests", ["service", "route", "method", "status"])
HTTP_REQUEST_SECONDS = Histogram(
    "mailroom_http_request_seconds", "Time to answer one HTTP request", ["service", "route", "status"]
)
RPC_REQUESTS = Counter("mailroom_rpc_requests_total", "RPC requests answered", ["subject", "outcome"])
RPC_SECONDS = Histogram("mailroom_rpc_request_seconds", "Time to answer one RPC request", ["subject"])

# Read every MAILROOM_METRICS_INTERVAL_SECONDS by each service (runtime.ops_gauges).
OUTBOX_BACKLOG = Gauge("mailroom_outbox_backlog", "Outbox rows not yet relayed (scheduled ones excluded)", ["schema"])
OUTBOX_OLDEST_SECONDS = Gauge(
    "mailroom_outbox_oldest_seconds", "Age of the oldest outbox row not yet relayed (0 when empty)", ["schema"]
)
CONSUMER_PENDING = Gauge(
    "mailroom_consumer_pending", "Messages a durable consumer has not been given yet", ["consumer"]
)
CONSUMER_ACK_PENDING = Gauge(
    "mailroom_consumer_ack_pending", "Messages given to a durable consumer and not acknowledged yet", ["consumer"]
)
CONSUMER_REDELIVERED = Gauge(
    "mailroom_consumer_redelivered", "Messages of a durable consumer delivered more than once", ["consumer"]
)

# Read at each scrape: the objects `heap.freeze_startup_heap` put out of the collector's reach
# (0: the process never froze its startup heap, and pays for traversing it in every full collection).
GC_FROZEN_OBJECTS = Gauge(
    "mailroom_gc_frozen_objects", "Startup objects frozen out of the cyclic collector (gc.freeze)"
)
GC_FROZEN_OBJECTS.set_function(gc.get_freeze_count)
