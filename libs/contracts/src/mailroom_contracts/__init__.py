"""Mailroom's inter-service contracts: NATS subjects, JetStream streams and consumers, and
one frozen, tagged msgspec Struct per event and request/reply payload.

This package is msgspec only and does no I/O. It is the only thing services share about
each other. Contracts only grow: new optional fields may be added; a breaking change gets
a new type and subject (SPEC §3).
"""

from mailroom_contracts import dead_letters, events, rpc, streams, subjects
from mailroom_contracts.registry import (
    decode,
    decode_event,
    encode,
    event_type_for_subject,
    is_unknown_event_type,
    peek_type,
    subject_for,
)

__all__ = [
    "dead_letters",
    "decode",
    "decode_event",
    "encode",
    "event_type_for_subject",
    "events",
    "is_unknown_event_type",
    "peek_type",
    "rpc",
    "streams",
    "subject_for",
    "subjects",
]
