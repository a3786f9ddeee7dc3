"""Re-publishing the non-active tenants' state (issue 23): the stream gap.

`MAILROOM_TENANT` keeps 14 days. A sender started with an empty read model (a new database) learns
only what the stream still holds, so a tenant paused or blocked longer ago than that, with no
change since, would look active to it and its mail would go out. So every API process writes a
`TenantUpdated` with the current state of every tenant that is not active to its outbox at start
and then every `MAILROOM_API_TENANT_REPUBLISH_INTERVAL_SECONDS` (default one day, at most 7: well
inside the stream's 14 days, so the stream always holds every non-active tenant's current state).
Active tenants need nothing: a read model without a row takes a tenant as active.

Exactly-once safe. The event carries the row's own `updated_at`, the same as the status change's
event: a consumer that keeps the latest `updated_at` applies it to an empty read model and treats
it as a no-op otherwise (never older than what it has: a later change has a later `updated_at`).
Its `event_id` is derived from the state (tenant, status, reason, `updated_at`), so replicas
starting together write one outbox row (ON CONFLICT) and one stream message (Nats-Msg-Id
de-duplication), and a consumer's inbox that already applied that state skips it.
"""

from __future__ import annotations

import hashlib

from mailroom_contracts.events import TenantUpdated
from mailroom_kit import outbox
from mailroom_kit.db import Conn
from mailroom_kit.logging import get_logger
from mailroom_kit.runtime import Runtime
from mailroom_kit.wake import sleep_until_stopped

from mailroom_api.settings import ApiSettings
from mailroom_api.tenants import repository as repo

log = get_logger(__name__)

SCHEMA = "api"
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def state_event_id(row: repo.TenantRow) -> str:
    """`evt_` + 26 base32 characters of a SHA-256 of the state: the same state, the same id."""
    key = "\x1f".join((row.id, row.status, row.status_reason or "", row.updated_at.isoformat()))
    value = int.from_bytes(hashlib.sha256(key.encode()).digest()[:17], "big") >> 6  # 130 bits
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "evt_" + "".join(reversed(chars))


async def republish_states(conn: Conn) -> int:
    """Write the current state of every non-active tenant to the outbox (caller's transaction)."""
    rows = await repo.list_not_active(conn)
    for row in rows:
        event = TenantUpdated(
            event_id=state_event_id(row),
            occurred_at=row.updated_at,
            tenant_id=row.id,
            status=row.status,  # type: ignore[arg-type]  # the column's CHECK: a TenantStatus
            status_reason=row.status_reason,
            updated_at=row.updated_at,
        )
        await outbox.add(conn, event, schema=SCHEMA)
    return len(rows)


async def republish_worker(rt: Runtime[ApiSettings]) -> None:
    """At start and every `tenant_republish_interval_seconds`."""
    while not rt.stop.is_set():
        try:
            async with rt.pool.connection() as conn, conn.transaction():
                count = await republish_states(conn)
            log.info("tenants.states_republished", tenants=count)
        except Exception as exc:  # the database is down: try again in a minute
            log.warning("tenants.republish_failed", error=type(exc).__name__)
            if await sleep_until_stopped(rt.stop, 60):
                return
            continue
        if await sleep_until_stopped(rt.stop, rt.settings.tenant_republish_interval_seconds):
            return
