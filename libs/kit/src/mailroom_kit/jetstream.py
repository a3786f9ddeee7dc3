"""NATS connection and the JetStream reconciler.

`reconcile` makes the server match the contracts: it creates missing streams and durable
consumers and updates existing ones (so changed limits or filters roll out on deploy).
"""

from __future__ import annotations

from collections.abc import Iterable

import nats
from mailroom_contracts.streams import ConsumerSpec, StreamSpec
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from mailroom_kit.logging import get_logger

log = get_logger(__name__)


async def connect(url: str, name: str) -> Client:
    async def on_disconnect() -> None:
        log.warning("nats.disconnected")

    async def on_reconnect() -> None:
        log.info("nats.reconnected")

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )


def stream_config(spec: StreamSpec, replicas: int) -> api.StreamConfig:
    return api.StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        max_age=spec.max_age_seconds,
        duplicate_window=spec.duplicate_window_seconds,
        max_msg_size=spec.max_msg_size,
        num_replicas=replicas,
        discard=api.DiscardPolicy.OLD,
    )


def consumer_config(spec: ConsumerSpec) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        name=spec.durable,
        durable_name=spec.durable,
        description=spec.description,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_seconds,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        filter_subjects=list(spec.filter_subjects),
    )


async def reconcile(
    js: JetStreamContext, streams: Iterable[StreamSpec], consumers: Iterable[ConsumerSpec], *, replicas: int = 1
) -> None:
    for spec in streams:
        config = stream_config(spec, replicas)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("stream.created", stream=spec.name)
        else:
            await js.update_stream(config)
    for cspec in consumers:
        # CONSUMER.CREATE with an existing name updates the consumer's editable fields.
        await js.add_consumer(cspec.stream, consumer_config(cspec))
