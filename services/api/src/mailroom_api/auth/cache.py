"""Key lookups by token hash, remembered per process for at most `ttl` seconds (≤ 1 s).

A change that can refuse a key (a revocation, a tenant's status) NOTIFYs `CHANNEL` in its own
transaction (`notify_auth_changed`, in the keys and tenants repositories); every API process LISTENs
(`listen`, through the kit's `PgWaker`) and forgets everything it remembered when the NOTIFY is
delivered on commit, and the process that made the change forgets at once (`invalidate`). The TTL is
the safety net while the listener is down (it reconnects by itself and forgets on reconnect), so a
revocation is honoured on every replica within the TTL, normally within milliseconds.

A lookup that started before an invalidation is not remembered (`generation`), so a read from just
before a revocation's commit cannot outlive the NOTIFY. Only keys that exist are remembered; an
unknown token is looked up every time. Concurrent misses of one key share one lookup (`lookup`),
and an entry past half its TTL is refreshed in the background while still served, so a busy key
never makes requests wait for a lookup (which, under load, queues for a pool connection).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from mailroom_kit.wake import PgWaker

from mailroom_api.auth.repository import AUTH_CHANNEL as CHANNEL
from mailroom_api.auth.repository import KeyPrincipalRow

# Bounds the memory a flood of distinct valid keys could take; past it the cache starts over.
MAX_ENTRIES = 10_000


class KeyCache:
    def __init__(self, ttl: float, *, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.generation = 0
        self._max = max_entries
        self._entries: dict[str, tuple[float, KeyPrincipalRow]] = {}
        self._inflight: dict[str, asyncio.Future[KeyPrincipalRow | None]] = {}

    def get(self, token_hash: str) -> KeyPrincipalRow | None:
        hit = self._entries.get(token_hash)
        if hit is None:
            return None
        if time.monotonic() - hit[0] >= self.ttl:
            del self._entries[token_hash]
            return None
        return hit[1]

    def put(self, token_hash: str, row: KeyPrincipalRow, *, generation: int, looked_up_at: float) -> None:
        """Remember `row`, read from the database at `looked_up_at` (monotonic) when the cache was at
        `generation`; dropped if an invalidation came in between."""
        if self.ttl <= 0 or generation != self.generation:
            return
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[token_hash] = (looked_up_at, row)

    def invalidate(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._inflight.clear()  # lookups already under way answer their own requests only

    async def lookup(
        self, token_hash: str, fetch: Callable[[], Awaitable[KeyPrincipalRow | None]]
    ) -> KeyPrincipalRow | None:
        """The remembered row, else `fetch()`'s, shared with every concurrent miss of the same key
        (which then also get its error, e.g. the database being unavailable). The fetch runs as its
        own task, so a caller that goes away does not cancel it for the others."""
        hit = self._entries.get(token_hash)
        if hit is not None:
            age = time.monotonic() - hit[0]
            if age < self.ttl:
                if age >= self.ttl / 2:  # refreshed ahead, so a busy key never waits for its lookup
                    self._start(token_hash, fetch)
                return hit[1]
            del self._entries[token_hash]
        return await asyncio.shield(self._start(token_hash, fetch))

    def _start(
        self, token_hash: str, fetch: Callable[[], Awaitable[KeyPrincipalRow | None]]
    ) -> asyncio.Future[KeyPrincipalRow | None]:
        task = self._inflight.get(token_hash)
        if task is None:
            task = asyncio.ensure_future(self._fetch(token_hash, fetch))
            task.add_done_callback(_retrieve)
            self._inflight[token_hash] = task
        return task

    async def _fetch(
        self, token_hash: str, fetch: Callable[[], Awaitable[KeyPrincipalRow | None]]
    ) -> KeyPrincipalRow | None:
        generation, looked_up_at = self.generation, time.monotonic()
        try:
            row = await fetch()
        finally:
            if self._inflight.get(token_hash) is asyncio.current_task():
                del self._inflight[token_hash]
        if row is not None:
            self.put(token_hash, row, generation=generation, looked_up_at=looked_up_at)
        return row

    async def listen(self, url: str, stop: asyncio.Event) -> None:
        """Forget everything on each NOTIFY of `CHANNEL` (and on each reconnect) until `stop`."""
        async with PgWaker(url, CHANNEL, stop=stop) as waker:
            while not stop.is_set():
                if await waker.wait(60.0):
                    waker.clear()
                    self.invalidate()


def _retrieve(task: asyncio.Future[KeyPrincipalRow | None]) -> None:
    """Every caller may have gone: the error is theirs to see, not asyncio's to log."""
    if not task.cancelled():
        task.exception()
