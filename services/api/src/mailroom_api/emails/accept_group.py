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

from mailroom_kit.db import Conn, Pool
from mailroom_kit.group_commit import ALONE, DEFAULT_FLUSHES, DEFAULT_MAX_SIZE, Alone, GroupWriter

from mailroom_api.emails import repository as repo

__all__ = ["ALONE", "DEFAULT_FLUSHES", "DEFAULT_MAX_SIZE", "AcceptGroups", "Alone"]


async def _accept_grouped(conn: Conn, emails: list[repo.GroupedEmail]) -> list[repo.Acceptance] | None:
    return await repo.accept_grouped(conn, emails)  # looked up at each call (tests replace it)


class AcceptGroups(GroupWriter[repo.GroupedEmail, repo.Acceptance]):
    """The kit's group commit (`mailroom_kit.group_commit`) of single sends."""

    def __init__(self, pool: Pool, *, max_size: int = DEFAULT_MAX_SIZE, flushes: int = DEFAULT_FLUSHES) -> None:
        super().__init__(pool, _accept_grouped, max_size=max_size, flushes=flushes, name="accept-group")

    async def accept(self, email: repo.GroupedEmail) -> repo.Acceptance | Alone:
        """`email`'s answer, from the statement that wrote (or refused) it with others; ALONE when
        its group could not be written as one and nothing of it was (the caller accepts it alone)."""
        return await self.submit(email)

    @property
    def emails(self) -> int:
        """Emails the group statements carried."""
        return self.items
