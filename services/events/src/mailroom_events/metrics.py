"""The events service's own Prometheus metrics (the kit's `mailroom_http_*` cover its requests)."""

from prometheus_client import Counter

# Outcomes: refused, duplicate, unparseable, informational, mapped, ignored, not_ours,
# subscription_confirmed.
SNS_MESSAGES = Counter("mailroom_events_sns_messages_total", "SNS messages received", ["outcome"])
