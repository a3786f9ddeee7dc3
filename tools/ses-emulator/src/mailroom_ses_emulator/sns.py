"""An SNS look-alike that delivers signed messages to HTTP(S) subscribers.

Each *job* is an ordered list of SNS messages for one subscription (e.g. the events of one SES
message). A small pool of asyncio workers shares one HTTP client (`http_post`); a job's messages are
delivered strictly in order, and a failed attempt re-queues the job after a backoff delay without
blocking a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .config import EmulatorConfig
from .http_post import PostClient, PostError
from .signing import SnsSigner
from .state import Subscription
from .util import iso_ms

log = logging.getLogger(__name__)

EVENT_SUBJECT = "Amazon SES Email Event Notification"
VALIDATION_MESSAGE = "Successfully validated SNS topic for Amazon SES event publishing."
USER_AGENT = "Amazon Simple Notification Service Agent"
REDELIVERABLE_KEPT = 1000


@dataclass
class DeliveryRecord:
    """One SNS message to one subscriber, as shown by ``GET /_emulator/notifications``."""

    sns_message_id: str
    type: str
    topic_arn: str
    subscription_arn: str
    url: str
    event_type: str | None
    ses_message_id: str | None
    created_at: float
    signing_cert_url: str = ""
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    state: str = "pending"  # pending | delivered | failed | skipped
    delivered_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "sns_message_id": self.sns_message_id,
            "type": self.type,
            "topic_arn": self.topic_arn,
            "subscription_arn": self.subscription_arn,
            "url": self.url,
            "event_type": self.event_type,
            "ses_message_id": self.ses_message_id,
            "signing_cert_url": self.signing_cert_url,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "state": self.state,
            "created_at": iso_ms(self.created_at),
            "delivered_at": None if self.delivered_at is None else iso_ms(self.delivered_at),
        }


@dataclass
class OutboundMessage:
    fields: dict[str, Any]  # unsigned envelope, in SNS key order (Signature filled in later)
    subscription: Subscription
    record: DeliveryRecord
    max_attempts: int
    body: bytes | None = None


@dataclass
class Job:
    items: deque[OutboundMessage] = field(default_factory=deque)


class SnsPublisher:
    def __init__(self, config: EmulatorConfig, signer: SnsSigner) -> None:
        self.config = config
        self.signer = signer
        self.records: deque[DeliveryRecord] = deque(maxlen=config.max_notifications_kept)
        self._queue: asyncio.Queue[Job] | None = None
        self._client: PostClient | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._pending_jobs = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        # The last REDELIVERABLE_KEPT notifications by SNS MessageId, for `redeliver` (tests of
        # duplicate deliveries: SNS delivers at least once).
        self._sent_notifications: OrderedDict[str, list[OutboundMessage]] = OrderedDict()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        n = self.config.sns_workers
        # No redirects followed, no HTTP(S)_PROXY: subscribers are local.
        self._client = PostClient(timeout=self.config.sns_timeout, user_agent=USER_AGENT, max_idle=n * 2)
        self._workers = [asyncio.create_task(self._worker(i), name=f"sns-worker-{i}") for i in range(n)]

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def pending_jobs(self) -> int:
        return self._pending_jobs

    # -- URLs --------------------------------------------------------------------------------
    @property
    def signing_cert_url(self) -> str:
        return f"{self.config.base_url}/_emulator/{self.signer.cert_filename}"

    def subscribe_url(self, sub: Subscription) -> str:
        return (
            f"{self.config.base_url}/_emulator/sns/confirm"
            f"?Action=ConfirmSubscription&TopicArn={quote(sub.topic_arn, safe=':')}&Token={sub.token}"
        )

    def unsubscribe_url(self, sub: Subscription) -> str:
        return (
            f"{self.config.base_url}/_emulator/sns/unsubscribe"
            f"?Action=Unsubscribe&SubscriptionArn={quote(sub.subscription_arn, safe=':')}"
        )

    # -- publishing ----------------------------------------------------------------------------
    def notification(
        self,
        sub: Subscription,
        message: str,
        *,
        subject: str | None,
        sns_message_id: str,
        timestamp: float,
        event_type: str | None,
        ses_message_id: str | None,
    ) -> OutboundMessage:
        fields: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": sns_message_id,
            "TopicArn": sub.topic_arn,
        }
        if subject is not None:
            fields["Subject"] = subject
        fields["Message"] = message
        fields["Timestamp"] = iso_ms(timestamp)
        fields["SignatureVersion"] = "2"
        fields["Signature"] = ""
        fields["SigningCertURL"] = self.signing_cert_url
        fields["UnsubscribeURL"] = self.unsubscribe_url(sub)
        return self._outbound(fields, sub, event_type, ses_message_id, self.config.sns_max_attempts)

    def confirmation(self, sub: Subscription) -> OutboundMessage:
        fields: dict[str, Any] = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": sub.token,
            "TopicArn": sub.topic_arn,
            "Message": (
                f"You have chosen to subscribe to the topic {sub.topic_arn}.\n"
                "To confirm the subscription, visit the SubscribeURL included in this message."
            ),
            "SubscribeURL": self.subscribe_url(sub),
            "Timestamp": iso_ms(),
            "SignatureVersion": "2",
            "Signature": "",
            "SigningCertURL": self.signing_cert_url,
        }
        return self._outbound(fields, sub, None, None, self.config.sns_confirmation_max_attempts)

    def _outbound(
        self,
        fields: dict[str, Any],
        sub: Subscription,
        event_type: str | None,
        ses_message_id: str | None,
        max_attempts: int,
    ) -> OutboundMessage:
        record = DeliveryRecord(
            sns_message_id=fields["MessageId"],
            type=fields["Type"],
            topic_arn=sub.topic_arn,
            subscription_arn=sub.subscription_arn,
            url=sub.endpoint,
            event_type=event_type,
            ses_message_id=ses_message_id,
            created_at=time.time(),
            signing_cert_url=fields["SigningCertURL"],
        )
        return OutboundMessage(fields, sub, record, max_attempts)

    def skipped(self, msg: OutboundMessage, reason: str) -> None:
        """Log a message that is not delivered (e.g. the subscription is not confirmed)."""
        msg.record.state = "skipped"
        msg.record.last_error = reason
        self.records.append(msg.record)

    def submit(self, messages: Iterable[OutboundMessage]) -> None:
        """Queue messages for delivery, in order. Must be called on the publisher's event loop."""
        job = Job(deque(messages))
        if not job.items:
            return
        for msg in job.items:
            self.records.append(msg.record)
            if msg.record.type == "Notification":
                self._sent_notifications.setdefault(msg.record.sns_message_id, []).append(msg)
                self._sent_notifications.move_to_end(msg.record.sns_message_id)
                while len(self._sent_notifications) > REDELIVERABLE_KEPT:
                    self._sent_notifications.popitem(last=False)
        if self._queue is None:
            raise RuntimeError("SNS publisher is not running")
        self._pending_jobs += 1
        self._queue.put_nowait(job)

    def redeliver(self, sns_message_id: str) -> int:
        """Deliver a notification again, byte for byte (same MessageId and signature), to each
        subscriber it went to, as SNS does when it retries; returns how many were queued (0 when
        the id is not among the last REDELIVERABLE_KEPT notifications)."""
        originals = self._sent_notifications.get(sns_message_id, [])
        again = []
        for msg in originals:
            copy = self._outbound(
                dict(msg.fields), msg.subscription, msg.record.event_type, msg.record.ses_message_id, msg.max_attempts
            )
            copy.body = self._body(msg)
            again.append(copy)
        for msg in again:
            self.records.append(msg.record)
        if again:
            if self._queue is None:
                raise RuntimeError("SNS publisher is not running")
            self._pending_jobs += 1
            self._queue.put_nowait(Job(deque(again)))
        return len(again)

    # -- delivery ------------------------------------------------------------------------------
    def _body(self, msg: OutboundMessage) -> bytes:
        if msg.body is None:
            msg.fields["Signature"] = self.signer.sign(msg.fields)
            msg.body = json.dumps(msg.fields, indent=2, ensure_ascii=False).encode("utf-8")
        return msg.body

    def _headers(self, msg: OutboundMessage) -> dict[str, str]:
        headers = {
            "x-amz-sns-message-type": msg.fields["Type"],
            "x-amz-sns-message-id": msg.fields["MessageId"],
            "x-amz-sns-topic-arn": msg.fields["TopicArn"],
        }
        if msg.fields["Type"] != "SubscriptionConfirmation":
            headers["x-amz-sns-subscription-arn"] = msg.subscription.subscription_arn
        headers["Content-Type"] = "text/plain; charset=UTF-8"
        return headers

    async def _attempt(self, msg: OutboundMessage) -> bool:
        assert self._client is not None
        rec = msg.record
        rec.attempts += 1
        try:
            status = await self._client.post(msg.subscription.endpoint, self._body(msg), self._headers(msg))
        except PostError as exc:
            rec.last_status = None
            rec.last_error = f"{type(exc).__name__}: {exc}"
            return False
        rec.last_status = status
        if 200 <= status < 300:
            rec.last_error = None
            rec.state = "delivered"
            rec.delivered_at = time.time()
            return True
        rec.last_error = f"HTTP {status}"
        return False

    def _retry_delay(self, attempts: int) -> float:
        return float(min(self.config.sns_retry_base_delay * (2 ** (attempts - 1)), self.config.sns_retry_max_delay))

    def _requeue_later(self, job: Job, delay: float) -> None:
        assert self._loop is not None and self._queue is not None
        queue = self._queue

        def fire() -> None:
            self._timers.discard(handle)
            queue.put_nowait(job)

        handle = self._loop.call_later(delay, fire)
        self._timers.add(handle)

    async def _worker(self, index: int) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            requeued = False
            try:
                while job.items:
                    msg = job.items[0]
                    if await self._attempt(msg):
                        job.items.popleft()
                        continue
                    if msg.record.attempts >= msg.max_attempts:
                        msg.record.state = "failed"
                        log.warning(
                            "SNS %s %s to %s failed after %d attempts: %s",
                            msg.record.type,
                            msg.record.sns_message_id,
                            msg.subscription.endpoint,
                            msg.record.attempts,
                            msg.record.last_error,
                        )
                        job.items.popleft()
                        continue
                    self._requeue_later(job, self._retry_delay(msg.record.attempts))
                    requeued = True
                    break
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - defensive: never let a worker die
                log.exception("SNS worker %d crashed on a job; dropping it", index)
                for msg in job.items:
                    msg.record.state = "failed"
                job.items.clear()
            finally:
                if not requeued:
                    self._pending_jobs -= 1
