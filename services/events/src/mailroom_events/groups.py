"""Group commit of SNS messages (issue 15): the Notifications that arrive together (SNS delivers
concurrently) are recorded by one statement (`repository.record_messages`), each with the outcome
it would have had alone (`service.ingest_grouped`): the kit's `GroupWriter`, whose docstring says
how groups form and fail."""

from __future__ import annotations

import functools

from mailroom_kit import outbox
from mailroom_kit.db import Pool
from mailroom_kit.group_commit import GroupWriter

from mailroom_events import repository
from mailroom_events.service import SCHEMA


def sns_groups(pool: Pool) -> GroupWriter[repository.Record, bool]:
    write = functools.partial(repository.record_messages, notify_channel=outbox.channel(SCHEMA))
    return GroupWriter(pool, write, name="sns-group")
