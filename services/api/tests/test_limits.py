"""Issue 23 at the API, on the real app, Postgres and NATS: the rate limit's headers and 429s (a
batch counts its items), the monthly quota (exact, replay not counted, test mode free, nothing
written when refused), `GET /v1/usage` and the operator's view of it, `blocked` on every tenant
route, `trial_expired`, and the operator fields' bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from api_testkit import OPERATOR_TOKEN, Tenant, add_domain, assert_error, bearer, make_tenant, table_counts
from mailroom_api.limits.service import RateLimiter, lease_size, month_of, next_month
from mailroom_kit.runtime import Runtime

ADMIN = bearer(OPERATOR_TOKEN)


async def patch_tenant(client: httpx.AsyncClient, tenant_id: str, **fields: Any) -> dict[str, Any]:
    r = await client.patch(f"/admin/v1/tenants/{tenant_id}", json=fields, headers=ADMIN)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def live_tenant(rt: Runtime, client: httpx.AsyncClient, **fields: Any) -> tuple[Tenant, str]:
    tenant = await make_tenant(rt)
    domain = f"mail-{tenant.id[-8:].lower()}.acme.test"
    await add_domain(rt, tenant.id, domain)
    if fields:
        await patch_tenant(client, tenant.id, **fields)
    return tenant, domain


def email(domain: str, *to: str) -> dict[str, Any]:
    return {"from": f"noreply@{domain}", "to": list(to) or ["a@example.test"], "subject": "hi", "text": "hello"}


async def test_every_tenant_response_carries_the_rate_headers_and_429_has_retry_after(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant, _ = await live_tenant(runtime, client, rate_limit=1, rate_burst=3)
    seen = []
    for _ in range(3):
        r = await client.get("/v1/api-keys", headers=bearer(tenant.live))
        assert r.status_code == 200
        assert r.headers["ratelimit-limit"] == r.headers["x-ratelimit-limit"] == "3"
        assert r.headers["ratelimit-remaining"] == r.headers["x-ratelimit-remaining"]
        assert int(r.headers["x-ratelimit-reset"]) >= int(datetime.now(UTC).timestamp())
        seen.append(int(r.headers["ratelimit-remaining"]))
    assert seen == [2, 1, 0]
    refused = await client.get("/v1/emails", headers=bearer(tenant.sending))
    assert_error(refused, 429, "rate_limited", None)
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    assert refused.headers["ratelimit-remaining"] == "0"
    assert int(refused.headers["ratelimit-reset"]) >= 1
    # Another tenant's bucket is its own.
    other = await make_tenant(runtime)
    r = await client.get("/v1/api-keys", headers=bearer(other.live))
    assert r.status_code == 200 and r.headers["ratelimit-limit"] == "1000"  # the server's default
    # Errors after the limiter carry the headers too (and count).
    fresh, _ = await live_tenant(runtime, client, rate_limit=5, rate_burst=5)
    bad = await client.post("/v1/emails", json={"to": "a@example.test"}, headers=bearer(fresh.live))
    assert bad.status_code == 422 and bad.headers["ratelimit-remaining"] == "4"


async def test_a_batch_counts_its_items(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant, domain = await live_tenant(runtime, client, rate_limit=1, rate_burst=4)
    before = await table_counts(runtime, "emails")
    r = await client.post("/v1/emails/batch", json={"emails": [email(domain)] * 3}, headers=bearer(tenant.live))
    assert r.status_code == 200, r.text
    assert r.json()["queued"] == 3 and r.headers["ratelimit-remaining"] == "1"
    refused = await client.post("/v1/emails/batch", json={"emails": [email(domain)] * 2}, headers=bearer(tenant.live))
    assert_error(refused, 429, "rate_limited", None)
    assert await table_counts(runtime, "emails") == (before[0] + 3,)


async def test_monthly_quota_is_exact_replays_are_not_counted_and_test_mode_is_free(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant, domain = await live_tenant(runtime, client, monthly_quota=4)
    key = {"Idempotency-Key": "quota-1"} | bearer(tenant.live)
    first = await client.post("/v1/emails", json=email(domain, "a@example.test", "b@example.test"), headers=key)
    assert first.status_code == 202, first.text
    replay = await client.post("/v1/emails", json=email(domain, "a@example.test", "b@example.test"), headers=key)
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    for _ in range(3):  # test mode counts against nothing
        assert (await client.post("/v1/emails", json=email(domain), headers=bearer(tenant.test))).status_code == 202
    usage = (await client.get("/v1/usage", headers=bearer(tenant.live))).json()
    assert (usage["recipients_sent"], usage["monthly_quota"], usage["remaining"]) == (2, 4, 2)
    # 2 + 3 > 4: refused whole, nothing written, the key not recorded.
    counts = await table_counts(runtime, "emails", "outbox", "idempotency_keys")
    three = email(domain, "a@example.test", "b@example.test", "c@example.test")
    over = await client.post("/v1/emails", json=three, headers={"Idempotency-Key": "quota-2"} | bearer(tenant.live))
    assert_error(over, 429, "quota_exceeded", None)
    resets = next_month(month_of(datetime.now(UTC)))
    assert resets.isoformat().replace("+00:00", "Z") in over.json()["message"]
    assert abs(int(over.headers["retry-after"]) - (resets - datetime.now(UTC)).total_seconds()) < 5
    over_batch = await client.post(
        "/v1/emails/batch", json={"emails": [email(domain), three]}, headers=bearer(tenant.live)
    )
    assert_error(over_batch, 429, "quota_exceeded", None)
    assert await table_counts(runtime, "emails", "outbox", "idempotency_keys") == counts
    # Exactly up to the quota: the 4th recipient passes (a batch of two), the 5th does not.
    fit = await client.post("/v1/emails/batch", json={"emails": [email(domain)] * 2}, headers=bearer(tenant.live))
    assert fit.status_code == 200 and fit.json()["queued"] == 2
    assert_error(
        await client.post("/v1/emails", json=email(domain), headers=bearer(tenant.live)), 429, "quota_exceeded", None
    )
    # The key refused before is free to use now (nothing was recorded); the quota still refuses.
    assert (
        await client.post("/v1/emails", json=three, headers={"Idempotency-Key": "quota-2"} | bearer(tenant.live))
    ).status_code == 429
    # Raising the quota is effective at once; the operator sees the month's count.
    await patch_tenant(client, tenant.id, monthly_quota=5)
    assert (await client.post("/v1/emails", json=email(domain), headers=bearer(tenant.live))).status_code == 202
    view = (await client.get(f"/admin/v1/tenants/{tenant.id}", headers=ADMIN)).json()
    assert view["usage"] == {"month": datetime.now(UTC).strftime("%Y-%m"), "recipients_sent": 5}
    listed = (await client.get("/admin/v1/tenants", headers=ADMIN)).json()["data"]
    assert next(t for t in listed if t["id"] == tenant.id)["usage"]["recipients_sent"] == 5


async def test_usage_shows_the_tenants_own_figures(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant, _ = await live_tenant(runtime, client, rate_limit=7)
    other, other_domain = await live_tenant(runtime, client)
    assert (await client.post("/v1/emails", json=email(other_domain), headers=bearer(other.live))).status_code == 202
    r = await client.get("/v1/usage", headers=bearer(tenant.live))
    assert r.status_code == 200
    body = r.json()
    now = datetime.now(UTC)
    assert body == {
        "month": now.strftime("%Y-%m"),
        "period_start": now.strftime("%Y-%m-01T00:00:00Z"),
        "resets_at": next_month(month_of(now)).isoformat().replace("+00:00", "Z"),
        "recipients_sent": 0,
        "monthly_quota": None,
        "remaining": None,
        "rate_limit": 7,
        "rate_burst": 7,
    }
    assert_error(await client.get("/v1/usage", headers=bearer(tenant.sending)), 403, "insufficient_permission", None)
    assert_error(await client.get("/v1/usage?month=1", headers=bearer(tenant.live)), 422, "validation_error", "month")


async def test_blocked_is_refused_on_every_tenant_route_and_paused_only_on_sends(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant, domain = await live_tenant(runtime, client)
    routes = [
        ("GET", "/v1/emails", None),
        ("GET", "/v1/emails/msg_00000000000000000000000000", None),
        ("GET", "/v1/api-keys", None),
        ("GET", "/v1/domains", None),
        ("GET", "/v1/settings", None),
        ("GET", "/v1/suppressions", None),
        ("GET", "/v1/usage", None),
        ("POST", "/v1/emails", email(domain)),
        ("POST", "/v1/emails/batch", {"emails": [email(domain)]}),
        ("POST", "/v1/api-keys", {"name": "x", "mode": "live", "permission": "full_access"}),
    ]
    await patch_tenant(client, tenant.id, status="paused")
    assert (await client.get("/v1/emails", headers=bearer(tenant.live))).status_code == 200
    assert_error(
        await client.post("/v1/emails", json=email(domain), headers=bearer(tenant.live)), 403, "tenant_paused", None
    )
    await patch_tenant(client, tenant.id, status="blocked")
    counts = await table_counts(runtime, "emails", "api_keys")
    for method, path, body in routes:
        r = await client.request(method, path, json=body, headers=bearer(tenant.live))
        assert_error(r, 403, "tenant_blocked", None)
    assert await table_counts(runtime, "emails", "api_keys") == counts
    await patch_tenant(client, tenant.id, status="active")
    assert (await client.post("/v1/emails", json=email(domain), headers=bearer(tenant.live))).status_code == 202


async def test_trial_expired_is_402_on_sends(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant, domain = await live_tenant(runtime, client)
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert (await patch_tenant(client, tenant.id, trial_ends_at=future))["trial_ends_at"]
    assert (await client.post("/v1/emails", json=email(domain), headers=bearer(tenant.live))).status_code == 202
    await patch_tenant(client, tenant.id, trial_ends_at=(datetime.now(UTC) - timedelta(seconds=1)).isoformat())
    assert_error(
        await client.post("/v1/emails", json=email(domain), headers=bearer(tenant.live)), 402, "trial_expired", None
    )
    assert_error(
        await client.post("/v1/emails/batch", json={"emails": [email(domain)]}, headers=bearer(tenant.test)),
        402,
        "trial_expired",
        None,
    )
    assert (await client.get("/v1/emails", headers=bearer(tenant.live))).status_code == 200  # reads still work
    await patch_tenant(client, tenant.id, trial_ends_at=None)
    assert (await client.post("/v1/emails", json=email(domain), headers=bearer(tenant.live))).status_code == 202


async def test_operator_limit_fields_bad_input(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    for body, param in [
        ({"rate_burst": 0}, "rate_burst"),
        ({"rate_burst": 2**31}, "rate_burst"),
        ({"rate_burst": "x"}, "rate_burst"),
        ({"trial_ends_at": "tomorrow"}, "trial_ends_at"),
        ({"trial_ends_at": "2027-01-01T00:00:00"}, "trial_ends_at"),
    ]:
        r = await client.patch(f"/admin/v1/tenants/{tenant.id}", json=body, headers=ADMIN)
        assert_error(r, 422, "validation_error", param)
    created = await client.post(
        "/admin/v1/tenants",
        json={"name": "T", "rate_limit": 5, "rate_burst": 9, "trial_ends_at": "2030-01-01T00:00:00Z"},
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    assert (created.json()["rate_burst"], created.json()["trial_ends_at"]) == (9, "2030-01-01T00:00:00Z")
    assert_error(
        await client.patch("/admin/v1/tenants/ten_00000000000000000000000000", json={"rate_burst": 3}, headers=ADMIN),
        404,
        "not_found",
        None,
    )


def test_lease_sizes_and_limits_of() -> None:
    assert [lease_size(r, r) for r in (1, 20, 100, 1000, 10**6)] == [1, 1, 5, 50, 1000]
    assert lease_size(1000, 8) == 2  # a quarter of a small burst
    limiter = RateLimiter(default_rate=50, default_burst=0)
    assert month_of(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)).isoformat() == "2026-12-01"
    assert next_month(month_of(datetime(2026, 12, 5, tzinfo=UTC))) == datetime(2027, 1, 1, tzinfo=UTC)
    assert limiter.default_rate == 50
