"""A durable JetStream consumer of Mailroom's email events, for an internal team's own use
(analytics, CRM sync, alerting): the pattern docs/event-stream.md describes, runnable.

    uv run python examples/subscriber.py --nats nats://nats:4222 --durable analytics-email \
        --subject mailroom.email.delivered --subject mailroom.email.bounced

It creates (or updates) its own durable pull consumer on MAILROOM_EMAIL, prints one JSON line per
event (`type`, `event_id`, `email_id`, `tenant_id`, `occurred_at`) and acks it after handling; a
handler failure naks with a delay, so the event comes back. Handling is idempotent by `event_id`
(JetStream delivers at least once). It needs nothing of Mailroom's code: the events are JSON.
`--history` starts with the stream's history, `--since TIME` (ISO 8601) with the events stored
from that time on; `--count N` stops after N events, `--idle-exit S` after S seconds without one; `--delete` removes the
consumer on exit (for trials). Keep the same options from run to run: a durable's deliver policy
cannot change once it exists.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from typing import Any

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

STREAM = "MAILROOM_EMAIL"


def handle(event: dict[str, Any], seen: set[str]) -> bool:
    """Your logic goes here; returns False for a redelivery of an event already handled."""
    if event["event_id"] in seen:
        return False
    seen.add(event["event_id"])
    fields = ("type", "event_id", "email_id", "tenant_id", "occurred_at")
    print(json.dumps({k: event.get(k) for k in fields}), flush=True)
    return True


async def run(args: argparse.Namespace) -> int:
    nc = await nats.connect(args.nats, name=f"subscriber-{args.durable}")
    js = nc.jetstream()
    if args.since is not None:
        policy = DeliverPolicy.BY_START_TIME
    else:
        policy = DeliverPolicy.ALL if args.history else DeliverPolicy.NEW
    config = ConsumerConfig(  # created, or updated when it exists
        durable_name=args.durable,
        filter_subjects=args.subject,
        deliver_policy=policy,
        opt_start_time=args.since.isoformat() if args.since is not None else None,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=30,
        max_deliver=-1,
    )
    if len(args.subject) == 1:  # one subject also works on nats-server < 2.10
        config.filter_subject, config.filter_subjects = args.subject[0], None
    await js.add_consumer(STREAM, config)
    sub = await js.pull_subscribe_bind(args.durable, STREAM)
    seen: set[str] = set()
    handled = 0
    loop = asyncio.get_running_loop()
    last = loop.time()
    try:
        while args.count is None or handled < args.count:
            try:
                msgs = await sub.fetch(batch=50, timeout=min(5.0, args.idle_exit or 5.0))
            except NatsTimeout:
                if args.idle_exit is not None and loop.time() - last >= args.idle_exit:
                    break
                continue
            last = loop.time()
            for msg in msgs:
                try:
                    new = handle(json.loads(msg.data), seen)
                except Exception as exc:  # transient: redelivered later
                    print(f"handler failed, retrying later: {exc!r}", file=sys.stderr)
                    await msg.nak(delay=5)
                    continue
                await msg.ack()
                handled += new
                if args.count is not None and handled >= args.count:
                    break
    finally:
        await sub.unsubscribe()  # (a pull subscription left open holds drain() for its 30 s timeout)
        if args.delete:
            await js.delete_consumer(STREAM, args.durable)
        await nc.drain()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="subscriber", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222", help="NATS URL")
    parser.add_argument("--durable", required=True, help="your consumer's name (never one of Mailroom's)")
    parser.add_argument("--subject", action="append", required=True, help="a subject to read (repeatable)")
    parser.add_argument("--history", action="store_true", help="start with the stream's history (14 days)")
    parser.add_argument(
        "--since", type=datetime.fromisoformat, help="start with the events stored from this ISO 8601 time on"
    )
    parser.add_argument("--count", type=int, help="stop after this many events")
    parser.add_argument("--idle-exit", type=float, help="stop after this many seconds without an event")
    parser.add_argument("--delete", action="store_true", help="delete the consumer on exit")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
