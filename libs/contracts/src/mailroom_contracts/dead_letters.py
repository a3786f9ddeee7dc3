"""The dead letter: a message a consumer gave up on, kept on `mailroom.dlq.<durable>` (stream
MAILROOM_DLQ) for an operator to look at and replay (SPEC §3). Not an event: it belongs to no
tenant and is never projected; it carries the original message byte for byte.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

# Why the consumer gave up:
# - exhausted: the handler kept failing (Retry or an unexpected error) up to the consumer's max_deliveries
# - permanent: the handler raised Permanent (the data can never be handled)
# - undecodable: not a known event, on a consumer that must understand everything it receives
DeadLetterReason = Literal["exhausted", "permanent", "undecodable"]

MAX_ERROR_CHARS = 2000


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    consumer: str  # the durable that gave up
    stream: str  # the original stream ...
    stream_seq: int  # ... and the message's sequence in it
    subject: str  # the original subject (a replay publishes there again)
    payload: bytes  # the original payload (base64 in JSON)
    deliveries: int  # how many times it was delivered to the consumer
    reason: DeadLetterReason
    error: str  # the last error, at most MAX_ERROR_CHARS (exception text, never the payload)
    dead_lettered_at: datetime
    event_type: str | None = None  # the payload's `type` tag, when it had one
    event_id: str | None = None  # the original Nats-Msg-Id (the event id), when it had one
