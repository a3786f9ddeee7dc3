"""Group commit of single sends (issue 15): many `POST /v1/emails` in one statement.

Each single send costs the API a pool checkout and a statement's round trip, and Postgres a
statement and a commit, whatever the email: about half of what an accept costs both. Sends that
arrive while earlier ones are being written wait for the next statement instead, which writes all
of them (`repository.accept_grouped`): at most `flushes` statements are in flight in a process, and
one carries at most `max_size` emails. An idle process writes a send at once, alone, with no added
wait; under load the groups grow by themselves, as the statements in flight take longer.

Each send still gets its own answer: its from-domain is checked on its own (a refused one is not
written, the others are), and its tenant's monthly quota too: when a group's recipients would take
a tenant past its quota, or the statement fails for any reason that certainly wrote nothing (an
error Postgres answered), none of the group is written and every send is accepted alone, as
before (`Alone`), so each gets exactly the answer it would have got alone. A lost connection (the
statement may have committed) is every send's error, as it would have been alone. Only the plain
case is grouped: no Idempotency-Key, schedule or suppressed recipients (those keep their own
statement). A send cancelled before its group is taken (the client went away) is not written.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from mailroom_kit.db import Pool, single_statement

from mailroom_api.emails import repository as repo

DEFAULT_MAX_SIZE = 64
DEFAULT_FLUSHES = 2


class Alone:
    """The answer "accept this send on its own": its group was not written as one."""


ALONE = Alone()


@dataclass
class _Waiting:
    email: repo.GroupedEmail
    answer: asyncio.Future[repo.Acceptance | Alone] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class AcceptGroups:
    def __init__(self, pool: Pool, *, max_size: int = DEFAULT_MAX_SIZE, flushes: int = DEFAULT_FLUSHES) -> None:
        self.pool = pool
        self._max_size = max_size
        self._flushes = flushes
        self._waiting: list[_Waiting] = []
        self._running: set[asyncio.Task[None]] = set()
        # For tests and the bench: statements run, emails they carried, groups accepted alone.
        self.statements = 0
        self.emails = 0
        self.alone = 0

    async def accept(self, email: repo.GroupedEmail) -> repo.Acceptance | Alone:
        """`email`'s answer, from the statement that wrote (or refused) it with others; ALONE when
        its group could not be written as one and nothing of it was (the caller accepts it alone)."""
        waiting = _Waiting(email)
        self._waiting.append(waiting)
        self._start()
        return await waiting.answer

    def _start(self) -> None:
        while self._waiting and len(self._running) < self._flushes:
            group = [w for w in self._waiting[: self._max_size] if not w.answer.done()]
            del self._waiting[: self._max_size]
            if not group:
                continue
            task = asyncio.create_task(self._write(group), name="accept-group")
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start()

    async def _write(self, group: list[_Waiting]) -> None:
        try:
            async with self.pool.connection() as conn, single_statement(conn):
                answers = await repo.accept_grouped(conn, [w.email for w in group])
        except Exception as exc:
            if len(group) > 1 and repo.statement_failed(exc):
                self._alone(group)
            else:
                for w in group:
                    if not w.answer.done():
                        w.answer.set_exception(exc)
            return
        self.statements += 1
        self.emails += len(group)
        if answers is None:  # a tenant's quota: each send alone gets its own answer
            self._alone(group)
            return
        for w, answer in zip(group, answers, strict=True):
            if not w.answer.done():
                w.answer.set_result(answer)

    def _alone(self, group: list[_Waiting]) -> None:
        self.alone += 1
        for w in group:
            if not w.answer.done():
                w.answer.set_result(ALONE)

    async def close(self) -> None:
        """Wait for the statements in flight (their sends' answers)."""
        while self._running:
            await asyncio.wait(set(self._running))
