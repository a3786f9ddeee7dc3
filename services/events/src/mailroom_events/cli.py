"""`mailroom-events unmatched`: the operator's view of the SES events that matched no email.

The simplest honest surface: the events service's own schema read with its own settings
(MAILROOM_DATABASE_URL), from wherever the service runs (`kubectl exec … mailroom-events
unmatched`), so no new HTTP route, token or port to secure. One JSON object per line, newest first."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

import msgspec
from mailroom_kit.db import open_pool
from mailroom_kit.settings import SettingsError

from mailroom_events import repository
from mailroom_events.settings import EventsSettings

SCHEMA = "events"
MAX_LIMIT = 1000


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailroom-events unmatched", description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=50, help=f"how many, newest first (1..{MAX_LIMIT}; default 50)")
    p.add_argument("--reason", choices=["not_ours", "unparseable"], help="only this kind")
    p.add_argument("--before", help="only those received before this RFC 3339 time (to page back)")
    return p


async def unmatched(settings: EventsSettings, argv: Sequence[str], out: TextIO = sys.stdout) -> int:
    """Print the unmatched events; 2 (and a message on stderr) for bad arguments, reading nothing."""
    p = parser()
    args = p.parse_args(list(argv))
    if not 1 <= args.limit <= MAX_LIMIT:
        p.error(f"--limit must be between 1 and {MAX_LIMIT}")
    before = None
    if args.before is not None:
        try:
            before = datetime.fromisoformat(args.before)
        except ValueError:
            p.error("--before must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z")
        if before.tzinfo is None:
            p.error("--before needs a UTC offset (e.g. Z)")
    pool = await open_pool(settings.database_url, SCHEMA)
    try:
        async with pool.connection() as conn:
            rows = await repository.list_unmatched(conn, limit=args.limit, reason=args.reason, before=before)
    finally:
        await pool.close()
    for row in rows:
        out.write(msgspec.json.encode(row).decode() + "\n")
    return 0


def main(argv: Sequence[str]) -> int:
    try:
        settings = EventsSettings.from_env()
    except SettingsError as exc:
        print(f"mailroom-events: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(unmatched(settings, argv))
