"""Waking the outbox relay after accepts without a NOTIFY in every accept.

A transaction that NOTIFYs holds a database-wide lock from the start of its commit to its end, so
NOTIFYing transactions commit one at a time, each waiting for its own WAL flush (no group commit):
with a NOTIFY in every accept, Postgres took half as many accepts per second at 10 connections
(measured on the accept statement alone). Each accept instead marks this process's `RelayWake`
after its commit, and the wake sends one NOTIFY, a transaction of its own on its own connection,
for all the accepts committed since its previous one: at once when it was idle, then at most every
`interval` seconds while accepts keep coming. The NOTIFY commits after the rows it announces, so
the relay that wakes on it sees them. A wake that never happens (the process died between an
accept's commit and the NOTIFY, or Postgres was unreachable) only delays the row to the relay's
own poll (1 s); nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib

from mailroom_kit.db import Conn, connect
from mailroom_kit.logging import get_logger
from mailroom_kit.wake import sleep_until_stopped, until_stopped_or

from mailroom_api.emails import repository as repo

log = get_logger(__name__)

# At most this long between an accept's commit and the relay's wake while accepts keep coming.
DEFAULT_INTERVAL = 0.005


class RelayWake:
    def __init__(self, url: str, schema: str, channel: str, *, interval: float = DEFAULT_INTERVAL) -> None:
        self._url = url
        self._schema = schema
        self._channel = channel
        self._interval = interval
        self._pending = asyncio.Event()
        self.sent = 0  # NOTIFYs sent, for tests and curiosity

    def accepted(self) -> None:
        """An accept committed an outbox row: the relay is to be woken soon."""
        self._pending.set()

    async def run(self, stop: asyncio.Event) -> None:
        conn: Conn | None = None
        try:
            while not stop.is_set():
                await until_stopped_or(stop, self._pending.wait())
                if stop.is_set():
                    return
                self._pending.clear()  # before the NOTIFY: an accept committed during it gets the next one
                try:
                    if conn is None or conn.closed:
                        conn = await connect(self._url, self._schema, autocommit=True)
                    await repo.notify_relay(conn, self._channel)
                    self.sent += 1
                except Exception as exc:  # Postgres unreachable: the relay's poll finds the rows
                    log.warning("outbox.wake_failed", error=repr(exc))
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                    conn = None
                    await sleep_until_stopped(stop, 1.0)
                    continue
                await sleep_until_stopped(stop, self._interval)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
