"""Tenant rules: names are trimmed and bounded, quotas are 0 or more, rate limits at least 1, both
fit the int4 columns. Every status change goes through `change_status`, which also publishes
tenant.updated (through the outbox, in the caller's transaction) for the services that act on it."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import msgspec
from mailroom_contracts.events import TenantStatus, TenantUpdated
from mailroom_contracts.headers import has_control
from mailroom_kit import outbox
from mailroom_kit.db import Conn
from mailroom_kit.ids import new_id

from mailroom_api.auth import repository as auth_repo
from mailroom_api.checks import INT4_MAX, check_name
from mailroom_api.errors import not_found, validation
from mailroom_api.limits import service as limits
from mailroom_api.reputation import service as reputation
from mailroom_api.reputation.policy import ReputationDefaults
from mailroom_api.tenants import repository as repo
from mailroom_api.tenants.schemas import CreateTenant, Tenant, TenantUsage, UpdateTenant


def _check_limits(monthly_quota: Any, rate_limit: Any) -> None:
    # The HTTP bodies carry the same bounds as msgspec.Meta; this also covers the CLI, which builds
    # the Structs directly (no decoding, so no Meta checks).
    if isinstance(monthly_quota, int) and not 0 <= monthly_quota <= INT4_MAX:
        raise validation(f"monthly_quota must be between 0 and {INT4_MAX}", "monthly_quota")
    if isinstance(rate_limit, int) and not 1 <= rate_limit <= INT4_MAX:
        raise validation(f"rate_limit must be between 1 and {INT4_MAX}", "rate_limit")


def _check_trial_and_burst(changes: dict[str, Any]) -> None:
    """Issue 23: the burst has the rate limit's bounds; the trial's end is an instant (with an offset)."""
    burst = changes.get("rate_burst")
    if isinstance(burst, int) and not 1 <= burst <= INT4_MAX:
        raise validation(f"rate_burst must be between 1 and {INT4_MAX}", "rate_burst")
    ends = changes.get("trial_ends_at")
    if isinstance(ends, datetime) and ends.utcoffset() is None:
        raise validation("trial_ends_at must be an RFC 3339 timestamp with an offset (e.g. Z)", "trial_ends_at")


# Changes every API process must see at once (the cached key lookup carries them): NOTIFY.
_LIMIT_FIELDS = frozenset({"monthly_quota", "rate_limit", "rate_burst", "trial_ends_at"})

SCHEMA = "api"


DEFAULT_REPUTATION = ReputationDefaults()


def _view(row: repo.TenantRow, usage: TenantUsage | None = None) -> Tenant:
    view = msgspec.convert(row, Tenant, from_attributes=True)
    return msgspec.structs.replace(view, usage=usage) if usage is not None else view


async def _with_usage(conn: Conn, rows: list[repo.TenantRow], guard: ReputationDefaults) -> list[Tenant]:
    """The tenants with this month's live recipients (issue 23: the operator sees every tenant's)
    and their reputation window (issue 22: one statement for all of them)."""
    month, used = await limits.month_usage_of(conn, [r.id for r in rows])
    windows = await reputation.reputations(conn, rows, guard)
    return [
        msgspec.structs.replace(
            _view(r, TenantUsage(month=month, recipients_sent=used.get(r.id, 0))), reputation=windows.get(r.id)
        )
        for r in rows
    ]


def _check_reputation(changes: dict[str, Any]) -> None:
    """Issue 22: the guard's thresholds are fractions, its minimum a count (the CLI skips Meta checks)."""
    for rate in ("reputation_bounce_rate", "reputation_complaint_rate"):
        value = changes.get(rate)
        if isinstance(value, int | float) and not (0 <= value <= 1 and math.isfinite(value)):
            raise validation(f"{rate} must be a fraction between 0 and 1 (0.05 is 5%)", rate)
    least = changes.get("reputation_min_sends")
    if isinstance(least, int) and not 1 <= least <= 100_000:
        raise validation("reputation_min_sends must be between 1 and 100000", "reputation_min_sends")


async def create_tenant(conn: Conn, req: CreateTenant, guard: ReputationDefaults = DEFAULT_REPUTATION) -> Tenant:
    name = check_name(req.name)
    _check_limits(req.monthly_quota, req.rate_limit)
    _check_trial_and_burst({"rate_burst": req.rate_burst, "trial_ends_at": req.trial_ends_at})
    _check_reputation(
        {
            "reputation_bounce_rate": req.reputation_bounce_rate,
            "reputation_complaint_rate": req.reputation_complaint_rate,
            "reputation_min_sends": req.reputation_min_sends,
        }
    )
    row = await repo.insert_tenant(
        conn,
        tenant_id=new_id("ten"),
        name=name,
        monthly_quota=req.monthly_quota,
        rate_limit=req.rate_limit,
        rate_burst=req.rate_burst,
        trial_ends_at=req.trial_ends_at,
        reputation_bounce_rate=req.reputation_bounce_rate,
        reputation_complaint_rate=req.reputation_complaint_rate,
        reputation_min_sends=req.reputation_min_sends,
    )
    return (await _with_usage(conn, [row], guard))[0]


async def list_tenants(conn: Conn, guard: ReputationDefaults = DEFAULT_REPUTATION) -> list[Tenant]:
    return await _with_usage(conn, await repo.list_tenants(conn), guard)


async def get_tenant(conn: Conn, tenant_id: str, guard: ReputationDefaults = DEFAULT_REPUTATION) -> Tenant:
    row = await repo.get_tenant(conn, tenant_id)
    if row is None:
        raise not_found("tenant")
    return (await _with_usage(conn, [row], guard))[0]


async def exists(conn: Conn, tenant_id: str) -> bool:
    return await repo.get_tenant(conn, tenant_id) is not None


async def update_tenant(
    conn: Conn, tenant_id: str, req: UpdateTenant, guard: ReputationDefaults = DEFAULT_REPUTATION
) -> Tenant:
    changes = {f: v for f in req.__struct_fields__ if (v := getattr(req, f)) is not msgspec.UNSET}
    if "name" in changes:
        changes["name"] = check_name(changes["name"])
    _check_limits(changes.get("monthly_quota"), changes.get("rate_limit"))
    _check_trial_and_burst(changes)
    _check_reputation(changes)
    reason = changes.pop("status_reason", None)
    if reason is not None and "status" not in changes:
        raise validation("status_reason is only accepted with status", "status_reason")
    if reason is not None and has_control(reason):
        raise validation("status_reason must not contain control characters", "status_reason")
    status = changes.pop("status", None)
    row = await repo.update_tenant(conn, tenant_id, changes)
    if row is None:
        raise not_found("tenant")
    if _LIMIT_FIELDS & changes.keys():  # issue 23: every process's cached key lookup forgets them
        await auth_repo.notify_auth_changed(conn)
    if status is None:
        return (await _with_usage(conn, [row], guard))[0]
    return await change_status(conn, tenant_id, status, reason=reason, guard=guard)


async def change_status(
    conn: Conn,
    tenant_id: str,
    status: TenantStatus,
    *,
    reason: str | None = None,
    guard: ReputationDefaults = DEFAULT_REPUTATION,
) -> Tenant:
    """Set a tenant's status (and why), in the caller's transaction: every API process refuses or
    accepts its keys from the commit on, and tenant.updated tells the sender to hold, fail or
    release its queued mail."""
    row = await repo.set_status(conn, tenant_id, status=status, reason=reason)
    if row is None:
        raise not_found("tenant")
    await _announce(conn, row)
    return (await _with_usage(conn, [row], guard))[0]


async def pause_if_active(conn: Conn, tenant_id: str, *, reason: str) -> bool:
    """The reputation guard's pause (issue 22): `change_status` to paused, but only of a tenant that
    is active when its row is locked (False, nothing written, otherwise)."""
    row = await repo.set_status(conn, tenant_id, status="paused", reason=reason, only_from="active")
    if row is None:
        return False
    await _announce(conn, row)
    return True


async def _announce(conn: Conn, row: repo.TenantRow) -> None:
    """A status change's consequences: every process's key cache forgets, and tenant.updated."""
    await auth_repo.notify_auth_changed(conn)
    event = TenantUpdated(
        event_id=new_id("evt"),
        occurred_at=row.updated_at,
        tenant_id=row.id,
        status=row.status,  # type: ignore[arg-type]  # the column's CHECK: a TenantStatus
        status_reason=row.status_reason,
        updated_at=row.updated_at,
    )
    await outbox.add(conn, event, schema=SCHEMA)
