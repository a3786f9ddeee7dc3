"""Dead letters: publishing a message a consumer gave up on to `mailroom.dlq.<durable>` (stream
MAILROOM_DLQ), listing them, and replaying them after a fix (`mailroom admin dlq …`).

`publish` uses a deterministic `Nats-Msg-Id` (consumer + original stream + sequence), so a crash
between publishing the dead letter and terminating the original cannot store it twice. `replay`
republishes the original payload to its original subject with a fresh `Nats-Msg-Id` (derived from
the dead letter's own sequence, so a retried replay is still de-duplicated) and only then deletes
the dead letter. Every consumer on that subject sees the replayed message again; consumers are
idempotent by event id, so only the one that failed does anything with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from mailroom_contracts import decode, encode
from mailroom_contracts.dead_letters import MAX_ERROR_CHARS, DeadLetter, DeadLetterReason
from mailroom_contracts.streams import DLQ_STREAM, ConsumerSpec
from mailroom_contracts.subjects import DLQ_ALL, dlq_subject
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NotFoundError

from mailroom_kit import tracing

_ID_HEADER = "Nats-Msg-Id"


@dataclass(frozen=True)
class StoredDeadLetter:
    seq: int  # the dead letter's sequence in MAILROOM_DLQ (what `replay` takes)
    letter: DeadLetter


def dead_letter_for(
    spec: ConsumerSpec,
    msg: Msg,
    *,
    reason: DeadLetterReason,
    error: str,
    event_type: str | None = None,
) -> DeadLetter:
    meta = msg.metadata
    event_id = (msg.headers or {}).get(_ID_HEADER)
    return DeadLetter(
        consumer=spec.durable,
        stream=meta.stream,
        stream_seq=meta.sequence.stream,
        subject=msg.subject,
        payload=bytes(msg.data),
        deliveries=meta.num_delivered,
        reason=reason,
        error=error[:MAX_ERROR_CHARS],
        dead_lettered_at=datetime.now(UTC),
        event_type=event_type,
        event_id=event_id,
    )


async def publish(js: JetStreamContext, letter: DeadLetter) -> PubAck:
    """Store `letter` on mailroom.dlq.<consumer>; returns once JetStream has it."""
    msg_id = f"dlq.{letter.consumer}.{letter.stream}.{letter.stream_seq}"
    headers = {_ID_HEADER: msg_id}
    tracing.inject(headers)  # the span of the message given up on
    return await js.publish(dlq_subject(letter.consumer), encode(letter), stream=DLQ_STREAM.name, headers=headers)


async def list_dead_letters(js: JetStreamContext, *, consumer: str | None = None) -> list[StoredDeadLetter]:
    """Every dead letter (of `consumer`, if given), oldest first."""
    subject = dlq_subject(consumer) if consumer else DLQ_ALL
    found: list[StoredDeadLetter] = []
    seq = 1
    while True:
        try:
            raw = await js.get_msg(DLQ_STREAM.name, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return found
        assert raw.seq is not None
        try:
            letter = decode(raw.data or b"", DeadLetter)
        except (msgspec.ValidationError, msgspec.DecodeError):
            letter = None  # not ours; leave it alone
        if letter is not None:
            found.append(StoredDeadLetter(seq=raw.seq, letter=letter))
        seq = raw.seq + 1


async def get_dead_letter(js: JetStreamContext, seq: int) -> StoredDeadLetter:
    """The dead letter at `seq`; raises LookupError if there is none."""
    try:
        raw = await js.get_msg(DLQ_STREAM.name, seq=seq)
    except NotFoundError:
        raise LookupError(f"no dead letter with sequence {seq}") from None
    try:
        return StoredDeadLetter(seq=seq, letter=decode(raw.data or b"", DeadLetter))
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise LookupError(f"message {seq} in {DLQ_STREAM.name} is not a dead letter") from None


async def replay(js: JetStreamContext, seq: int) -> StoredDeadLetter:
    """Republish the dead letter at `seq` to its original subject, then delete it."""
    stored = await get_dead_letter(js, seq)
    letter = stored.letter
    origin = letter.event_id or f"{letter.stream}.{letter.stream_seq}"
    headers = {_ID_HEADER: f"{origin}.replay.{seq}"}
    tracing.inject(headers)
    await js.publish(letter.subject, letter.payload, headers=headers)
    await js.delete_msg(DLQ_STREAM.name, seq)
    return stored


async def replay_all(js: JetStreamContext, *, consumer: str | None = None) -> list[StoredDeadLetter]:
    """Replay every dead letter (of `consumer`, if given), oldest first."""
    return [await replay(js, stored.seq) for stored in await list_dead_letters(js, consumer=consumer)]
