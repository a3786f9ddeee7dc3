"""The guard itself, run by the email log projector in the transaction of a batch (emails/projector.py):
for each tenant with a newly recorded live hard bounce or complaint in the batch (nothing else
makes it look), read the tenant and, if it is active, its window (one statement); over a threshold,
pause it with the reason and the figures through the tenants' status path (tenant.updated through
the outbox: the sender holds its mail; every API process refuses its sends from the commit on).

Idempotent: a redelivered event is not newly recorded (the projector hands only those over), and
the pause is conditional on the tenant still being active, so a tenant is paused once even when
two projector processes judge it at the same time (the second UPDATE finds it paused)."""

from __future__ import annotations

from collections.abc import Sequence

from mailroom_contracts import events
from mailroom_kit.db import Conn
from mailroom_kit.logging import get_logger

from mailroom_api.reputation import service
from mailroom_api.reputation.policy import ReputationDefaults
from mailroom_api.tenants import repository as tenants_repo
from mailroom_api.tenants import service as tenants

log = get_logger(__name__)


def concerned_tenants(recorded: Sequence[events.EmailEvent]) -> list[str]:
    """Tenants with a live hard bounce or complaint among `recorded`, in id order (so two batches
    pausing the same tenants take their row locks in the same order)."""
    return sorted(
        {
            e.tenant_id
            for e in recorded
            if e.mode == "live"
            and (
                (isinstance(e, events.EmailBounced) and e.bounce_type == "Permanent")
                or isinstance(e, events.EmailComplained)
            )
        }
    )


async def guard(conn: Conn, recorded: Sequence[events.EmailEvent], defaults: ReputationDefaults) -> list[str]:
    """Judge the tenants `recorded` concerns; pause those over a threshold. Returns the paused ones."""
    if not defaults.enabled:
        return []
    paused: list[str] = []
    for tenant_id in concerned_tenants(recorded):
        row = await tenants_repo.get_tenant(conn, tenant_id)
        if row is None or row.status != "active":
            continue
        assessed = await service.assess(conn, [row], defaults)
        if tenant_id not in assessed:
            continue
        _policy, counts, verdict = assessed[tenant_id]
        if not verdict.tripped or verdict.reason is None:
            continue
        if await tenants.pause_if_active(conn, tenant_id, reason=verdict.reason):
            paused.append(tenant_id)
            log.warning(
                "reputation.tenant_paused",
                tenant_id=tenant_id,
                sends=counts.sends,
                hard_bounces=counts.hard_bounces,
                complaints=counts.complaints,
            )
    return paused
