"""NATS connection and the JetStream reconciler.

`reconcile` makes the server match the contracts: it creates missing streams and durable
consumers and updates existing ones (so changed limits or filters roll out on deploy), and the
Object Store buckets of `mailroom_contracts.content` (`ensure_object_store`: the stream nats-py's
`create_object_store` makes, created or updated the same way), so every service that starts has them.
"""

from __future__ import annotations

from collections.abc import Iterable

import nats
from mailroom_contracts.content import OBJECT_STORES, ObjectStoreSpec
from mailroom_contracts.streams import ConsumerSpec, StreamSpec
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

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


def object_store_config(spec: ObjectStoreSpec, replicas: int) -> api.StreamConfig:
    """The stream behind an Object Store bucket, exactly as nats-py's `create_object_store` builds it."""
    return api.StreamConfig(
        name=f"OBJ_{spec.bucket}",
        description=spec.description,
        subjects=[f"$O.{spec.bucket}.C.>", f"$O.{spec.bucket}.M.>"],
        max_age=spec.max_age_seconds,
        max_bytes=-1,
        max_consumers=0,
        storage=api.StorageType.FILE,
        num_replicas=replicas,
        discard=api.DiscardPolicy.NEW,
        allow_rollup_hdrs=True,
        allow_direct=True,
    )


async def ensure_object_store(js: JetStreamContext, spec: ObjectStoreSpec, *, replicas: int = 1) -> ObjectStore:
    """Create the bucket, or bring an existing one's limits (max age) to the spec."""
    config = object_store_config(spec, replicas)
    try:
        await js.stream_info(config.name or "")
    except NotFoundError:
        await js.add_stream(config)
        log.info("object_store.created", bucket=spec.bucket)
    else:
        await js.update_stream(config)
    return await js.object_store(spec.bucket)


async def reconcile(
    js: JetStreamContext,
    streams: Iterable[StreamSpec],
    consumers: Iterable[ConsumerSpec],
    *,
    replicas: int = 1,
    object_stores: Iterable[ObjectStoreSpec] = OBJECT_STORES,
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
    for ospec in object_stores:
        await ensure_object_store(js, ospec, replicas=replicas)
