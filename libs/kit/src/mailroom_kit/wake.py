"""Waiting that a stop interrupts at once: `sleep_until_stopped`, `until_stopped` (race any
awaitable against the stop event) and `PgWaker`, the LISTEN/NOTIFY wake-up shared by the outbox
relay and the webhooks dispatcher.

Every loop in a service waits through these, so setting the runtime's `stop` ends every wait
immediately instead of after the current poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from types import TracebackType
from typing import Final, TypeVar

from psycopg import AsyncConnection

from mailroom_kit.logging import get_logger

log = get_logger(__name__)

_T = TypeVar("_T")


class Stopped(Exception):
    """`until_stopped` gave up on its awaitable because `stop` was set."""


# issue 15: a loop woken by each commit (the outbox relay, the webhooks dispatcher) pays the same
# few statements per round whatever the round takes. A wake-up less than STREAM_GAP_SECONDS after
# the last round that found work is part of a stream of commits: the loop then waits
# LINGER_SECONDS, so the next round takes several commits' work. Work that comes alone after a
# quiet spell is not delayed.
LINGER_SECONDS: Final = 0.01
STREAM_GAP_SECONDS: Final = 0.05


class StreamLinger:
    """The pause above, for one loop: `busy()` after a round that found work, `pause(stop)` after
    each wake-up (it waits only inside a stream; `linger_seconds` 0 turns it off)."""

    def __init__(self, linger_seconds: float = LINGER_SECONDS, stream_gap_seconds: float = STREAM_GAP_SECONDS):
        self.linger_seconds = linger_seconds
        self.stream_gap_seconds = stream_gap_seconds
        self._busy_at = -float("inf")

    def busy(self, at: float | None = None) -> None:
        self._busy_at = time.monotonic() if at is None else at

    def streaming(self) -> bool:
        return self.linger_seconds > 0 and time.monotonic() - self._busy_at < self.stream_gap_seconds

    async def pause(self, stop: asyncio.Event) -> bool:
        """Wait `linger_seconds` if inside a stream; True if `stop` was set (the loop should end)."""
        if not self.streaming():
            return stop.is_set()
        return await sleep_until_stopped(stop, self.linger_seconds)


async def sleep_until_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` or until `stop` is set; True if stopped (the caller should return)."""
    if stop.is_set():
        return True
    if seconds <= 0:
        return False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()


async def until_stopped(stop: asyncio.Event, aw: Awaitable[_T]) -> _T:
    """Await `aw`; as soon as `stop` is set instead, cancel it and raise `Stopped`."""
    work = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        raise
    finally:
        stopper.cancel()
    if work.done():
        return work.result()
    work.cancel()
    await asyncio.wait({work})  # let it unwind; its CancelledError stays inside it
    raise Stopped


class PgWaker:
    """LISTEN on a Postgres channel from its own autocommit connection and wake waiters on every
    NOTIFY (delivered on the notifier's commit). The listener reconnects by itself; while it is
    down, `wait`'s timeout is the polling fallback. `set()` wakes waiters from inside the process.

        async with PgWaker(url, channel, stop=stop) as waker:
            while not stop.is_set():
                waker.clear()          # before looking, so a NOTIFY during the work is not lost
                ...do the work...
                await waker.wait(poll_seconds)
    """

    def __init__(self, url: str, channel: str, *, stop: asyncio.Event, reconnect_seconds: float = 1.0) -> None:
        self._url = url
        self._channel = channel
        self._stop = stop
        self._reconnect = reconnect_seconds
        self._woken = asyncio.Event()
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PgWaker:
        self._task = asyncio.create_task(self._listen(), name=f"listen-{self._channel}")
        # Start listening before the caller's first look, so nothing committed after it is missed
        # (a failed first connect is retried in the background; the poll covers the gap).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await until_stopped_or(self._stop, self._listening.wait(), self._task)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def set(self) -> None:
        self._woken.set()

    def clear(self) -> None:
        self._woken.clear()

    async def wait(self, timeout: float) -> bool:
        """Until a NOTIFY (or `set()`) since the last `clear()`, `stop`, or `timeout` seconds.
        True if woken (not by the timeout)."""
        if self._woken.is_set() or self._stop.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await until_stopped_or(self._stop, self._woken.wait())
        return self._woken.is_set() or self._stop.is_set()

    async def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                async with await AsyncConnection.connect(self._url, autocommit=True) as conn:
                    await conn.execute(f'LISTEN "{self._channel}"')
                    self._listening.set()
                    # Whatever was notified while we were not listening: look once more.
                    self._woken.set()
                    async for _ in conn.notifies():
                        self._woken.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._listening.clear()
                log.warning("listen.failed", channel=self._channel, error=repr(exc))
                await sleep_until_stopped(self._stop, self._reconnect)


async def until_stopped_or(stop: asyncio.Event, *aws: Awaitable[object]) -> None:
    """Return as soon as `stop` is set or any of `aws` completes (the others are cancelled;
    tasks passed in are left running)."""
    owned = [asyncio.ensure_future(a) for a in aws if not isinstance(a, asyncio.Task)]
    shared = [a for a in aws if isinstance(a, asyncio.Task)]
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopper, *owned, *shared}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (stopper, *owned):
            t.cancel()
