"""Subject ↔ event type registry, the known `type` tags, and the shared encoder/decoders (built once)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from mailroom_contracts import events, subjects

_SUBJECTS: dict[type[events.Event], str] = {
    events.EmailQueued: subjects.EMAIL_QUEUED,
    events.EmailSent: subjects.EMAIL_SENT,
    events.EmailFailed: subjects.EMAIL_FAILED,
    events.EmailDelivered: subjects.EMAIL_DELIVERED,
    events.EmailBounced: subjects.EMAIL_BOUNCED,
    events.EmailComplained: subjects.EMAIL_COMPLAINED,
    events.EmailDeliveryDelayed: subjects.EMAIL_DELIVERY_DELAYED,
    events.EmailProviderAccepted: subjects.EMAIL_PROVIDER_ACCEPTED,
    events.EmailScheduled: subjects.EMAIL_SCHEDULED,
    events.EmailCanceled: subjects.EMAIL_CANCELED,
    events.EmailOpened: subjects.EMAIL_OPENED,
    events.EmailClicked: subjects.EMAIL_CLICKED,
    events.EmailUnsubscribed: subjects.EMAIL_UNSUBSCRIBED,
    events.EmailSuppressed: subjects.EMAIL_SUPPRESSED,
    events.DomainCreated: subjects.DOMAIN_CREATED,
    events.DomainVerified: subjects.DOMAIN_VERIFIED,
    events.DomainFailed: subjects.DOMAIN_FAILED,
    events.DomainStatusChanged: subjects.DOMAIN_STATUS_CHANGED,
    events.DomainUpdated: subjects.DOMAIN_UPDATED,
    events.DomainDeleted: subjects.DOMAIN_DELETED,
    events.TenantUpdated: subjects.TENANT_UPDATED,
    events.WebhookDisabled: subjects.WEBHOOK_DISABLED,
}
_BY_SUBJECT: dict[str, type[events.Event]] = {s: t for t, s in _SUBJECTS.items()}

_T = TypeVar("_T")

_encoder = msgspec.json.Encoder()
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}
_any_event = msgspec.json.Decoder(
    events.EmailQueued
    | events.EmailSent
    | events.EmailFailed
    | events.EmailDelivered
    | events.EmailBounced
    | events.EmailComplained
    | events.EmailDeliveryDelayed
    | events.EmailProviderAccepted
    | events.EmailScheduled
    | events.EmailCanceled
    | events.EmailOpened
    | events.EmailClicked
    | events.EmailUnsubscribed
    | events.EmailSuppressed
    | events.DomainCreated
    | events.DomainVerified
    | events.DomainFailed
    | events.DomainStatusChanged
    | events.DomainUpdated
    | events.DomainDeleted
    | events.TenantUpdated
    | events.WebhookDisabled
)


KNOWN_EVENT_TAGS: frozenset[str] = frozenset(str(t.__struct_config__.tag) for t in events.ALL_EVENT_TYPES)


class _TagOnly(msgspec.Struct):
    type: str | None = None


_tag_decoder = msgspec.json.Decoder(_TagOnly)


class UnknownSubjectError(LookupError):
    pass


def peek_type(data: bytes) -> str | None:
    """The `type` tag of a JSON object payload without decoding the rest; None if there is none
    (not JSON, not an object, no string `type`)."""
    try:
        return _tag_decoder.decode(data).type
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def is_unknown_event_type(data: bytes) -> bool:
    """True for an event of a type this version does not know (e.g. published by a newer replica):
    a payload with a `type` tag that is not one of ours. Bad data (no tag, not JSON) is False."""
    tag = peek_type(data)
    return tag is not None and tag not in KNOWN_EVENT_TAGS


def subject_for(event: events.Event) -> str:
    return _SUBJECTS[type(event)]


def event_type_for_subject(subject: str) -> type[events.Event]:
    try:
        return _BY_SUBJECT[subject]
    except KeyError:
        raise UnknownSubjectError(subject) from None


def encode(obj: msgspec.Struct) -> bytes:
    return _encoder.encode(obj)


def decode_event(data: bytes) -> events.Event:
    """Decode any event by its `type` tag. Raises msgspec.ValidationError/DecodeError."""
    event: events.Event = _any_event.decode(data)
    return event


def decode(data: bytes, kind: type[_T]) -> _T:
    """Decode `data` as `kind` (an event or an rpc Struct), with a cached decoder."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    result: _T = decoder.decode(data)
    return result
