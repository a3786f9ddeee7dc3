"""A tenant's reputation window: its figures for the operator API (many tenants, one statement)
and the verdict the guard acts on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from mailroom_kit.db import Conn

from mailroom_api.reputation import repository as repo
from mailroom_api.reputation.policy import Policy, ReputationDefaults, Verdict, id_floor, judge, policy_of
from mailroom_api.reputation.schemas import Reputation
from mailroom_api.tenants.repository import TenantRow


def tenant_policy(row: TenantRow, defaults: ReputationDefaults, now: datetime | None = None) -> Policy:
    return policy_of(
        defaults,
        bounce_rate=row.reputation_bounce_rate,
        complaint_rate=row.reputation_complaint_rate,
        min_sends=row.reputation_min_sends,
        since=row.reputation_since,
        now=now or datetime.now(UTC),
    )


async def assess(
    conn: Conn, rows: Sequence[TenantRow], defaults: ReputationDefaults
) -> dict[str, tuple[Policy, repo.WindowCounts, Verdict]]:
    """Each tenant's policy, window counts and verdict, in one statement."""
    now = datetime.now(UTC)
    policies = {row.id: tenant_policy(row, defaults, now) for row in rows}
    counted = await repo.window_counts(
        conn, [(t, id_floor("msg", p.window_start)) for t, p in policies.items()], defaults.window_sends
    )
    out: dict[str, tuple[Policy, repo.WindowCounts, Verdict]] = {}
    for counts in counted:
        policy = policies[counts.tenant_id]
        verdict = judge(policy, sends=counts.sends, hard_bounces=counts.hard_bounces, complaints=counts.complaints)
        out[counts.tenant_id] = (policy, counts, verdict)
    return out


async def reputations(conn: Conn, rows: Sequence[TenantRow], defaults: ReputationDefaults) -> dict[str, Reputation]:
    """What `GET /admin/v1/tenants(/{id})` shows of each tenant's window."""
    return {
        tenant_id: Reputation(
            guard=policy.enabled,
            window_sends=policy.window_sends,
            window_days=defaults.window_days,
            window_start=policy.window_start,
            min_sends=policy.min_sends,
            sends=counts.sends,
            hard_bounces=counts.hard_bounces,
            complaints=counts.complaints,
            bounce_rate=counts.hard_bounces / counts.sends if counts.sends else None,
            complaint_rate=counts.complaints / counts.sends if counts.sends else None,
            bounce_rate_threshold=policy.bounce_rate,
            complaint_rate_threshold=policy.complaint_rate,
            warn_ratio=policy.warn_ratio,
            warn=verdict.warn,
            over_threshold=verdict.tripped,
        )
        for tenant_id, (policy, counts, verdict) in (await assess(conn, rows, defaults)).items()
    }
