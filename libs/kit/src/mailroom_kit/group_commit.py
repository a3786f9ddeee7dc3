"""Group commit (issue 15): units of work that arrive together are written by one statement.

Each unit written alone costs a pool checkout and a statement's round trip, and Postgres a
statement and a commit. Units that arrive while earlier ones are being written wait for the next
statement instead, which writes all of them (`write(conn, items)`, on an autocommit connection: the
statement is its own transaction): at most `flushes` statements are in flight, one carries at most
`max_size` units. An idle process writes a unit at once, alone, with no added wait; under load the
groups grow by themselves, as the statements in flight take longer.

Each unit still gets its own answer, the one `write` returned for it. `write` returning None, or
failing with an error Postgres answered (`statement_failed`: the statement wrote nothing), makes
every unit of the group `ALONE`: the caller then writes it alone, as it would have without groups,
so each gets exactly the answer it would have got alone. A lost connection (the statement may have
committed) is every unit's error, as it would have been alone. A unit whose caller was cancelled
before its group was taken (the client went away) is not written.

The API's single sends (`mailroom_api.emails.accept_group`) and the events service's SNS messages
(`mailroom_events.groups`) are written this way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import psycopg

from mailroom_kit.db import Conn, Pool, single_statement

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_SIZE = 64
DEFAULT_FLUSHES = 2


def statement_failed(exc: BaseException) -> bool:
    """Whether `exc` is an error Postgres answered a statement with: an autocommit statement that
    fails is rolled back, so it wrote nothing. A lost connection (OperationalError) may have lost
    the answer of a statement that committed."""
    return isinstance(exc, psycopg.Error) and not isinstance(exc, psycopg.OperationalError)


class Alone:
    """The answer "write this unit on its own": its group was not written as one."""


ALONE = Alone()


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    answer: asyncio.Future[R | Alone] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupWriter(Generic[T, R]):
    def __init__(
        self,
        pool: Pool,
        write: Callable[[Conn, list[T]], Awaitable[list[R] | None]],
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        flushes: int = DEFAULT_FLUSHES,
        name: str = "group-commit",
    ) -> None:
        self.pool = pool
        self._write_many = write
        self._max_size = max_size
        self._flushes = flushes
        self._name = name
        self._waiting: list[_Waiting[T, R]] = []
        self._running: set[asyncio.Task[None]] = set()
        # For tests and the bench: statements run, units they carried, groups written alone.
        self.statements = 0
        self.items = 0
        self.alone = 0

    @property
    def waiting(self) -> int:
        """Units waiting for a statement (not yet taken into one)."""
        return len(self._waiting)

    async def submit(self, item: T) -> R | Alone:
        """`item`'s answer, from the statement that wrote it with others; ALONE when its group
        could not be written as one and nothing of it was (the caller writes it alone)."""
        waiting: _Waiting[T, R] = _Waiting(item)
        self._waiting.append(waiting)
        self._start()
        return await waiting.answer

    def _start(self) -> None:
        while self._waiting and len(self._running) < self._flushes:
            group = [w for w in self._waiting[: self._max_size] if not w.answer.done()]
            del self._waiting[: self._max_size]
            if not group:
                continue
            task = asyncio.create_task(self._write(group), name=self._name)
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start()

    async def _write(self, group: list[_Waiting[T, R]]) -> None:
        try:
            async with self.pool.connection() as conn, single_statement(conn):
                answers = await self._write_many(conn, [w.item for w in group])
        except Exception as exc:
            if len(group) > 1 and statement_failed(exc):
                self._alone(group)
            else:
                for w in group:
                    if not w.answer.done():
                        w.answer.set_exception(exc)
            return
        self.statements += 1
        self.items += len(group)
        if answers is None:  # the writer's "each on its own" (e.g. a tenant's quota)
            self._alone(group)
            return
        for w, answer in zip(group, answers, strict=True):
            if not w.answer.done():
                w.answer.set_result(answer)

    def _alone(self, group: list[_Waiting[T, R]]) -> None:
        self.alone += 1
        for w in group:
            if not w.answer.done():
                w.answer.set_result(ALONE)

    async def close(self) -> None:
        """Wait for the statements in flight (their units' answers)."""
        while self._running:
            await asyncio.wait(set(self._running))
