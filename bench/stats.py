"""The stats phase of `make bench` (issue 22): `GET /v1/stats` on a tenant with 100,000 emails
(quick: 20,000) over the last 30 days, 5 from-domains and a tag of 4 values. The rollup rows are the
ones the projector would have written for them, written by its own statement
(`mailroom_api.stats.repository.add_counts`) from counts made as `stats.service.record` makes them (one
row per hour, domain and tag, plus the tag-less row), so no pipeline run is needed to fill them; the
route then reads them through the real API process. Reported: p50/p99 over repeated requests of the
30-day range by day, by hour (720 buckets), filtered by domain and by tag. Target p99 < 50 ms."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from mailroom_api.stats import repository as stats_repo
from mailroom_devstack.stack import Stack
from mailroom_kit.db import connect

DOMAINS = [f"d{i}.bench.test" for i in range(5)]
KINDS = ["receipt", "reset", "digest", "invite"]
# The share of sends that reach each outcome (one email, one recipient).
OUTCOMES = {"delivered": 0.95, "bounced_hard": 0.02, "bounced_soft": 0.01, "complained": 0.001, "opened": 0.4}


def rollups(tenant_id: str, emails: int, now: datetime, seed: int = 7) -> dict[stats_repo.RollupKey, dict[str, int]]:
    rng = random.Random(seed)
    start = (now - timedelta(days=30)).replace(minute=0, second=0, microsecond=0)
    counts: dict[stats_repo.RollupKey, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for _ in range(emails):
        hour = start + timedelta(hours=rng.randrange(30 * 24))
        domain, kind = rng.choice(DOMAINS), rng.choice(KINDS)
        got = ["sent", *(name for name, share in OUTCOMES.items() if rng.random() < share)]
        if "opened" in got:
            got.append("opened_unique")
        for tag in ("", f"kind:{kind}"):
            for counter in got:
                counts[(tenant_id, "live", tag, hour, domain)][counter] += 1
    return counts


async def fill(stack: Stack, tenant_id: str, emails: int) -> int:
    counts = rollups(tenant_id, emails, datetime.now(UTC))
    conn = await connect(stack.db_url, "api")
    try:
        keys = sorted(counts)
        for i in range(0, len(keys), 2000):
            await stats_repo.add_counts(conn, {k: counts[k] for k in keys[i : i + 2000]})
        await conn.commit()
    finally:
        await conn.close()
    return len(counts)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 1)


def timed(client: httpx.Client, params: dict[str, str], repeat: int) -> dict[str, Any]:
    ms: list[float] = []
    body: dict[str, Any] = {}
    for _ in range(repeat):
        started = time.perf_counter()
        r = client.get("/v1/stats", params=params)
        ms.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 200, r.text
        body = r.json()
    return {"p50_ms": round(statistics.median(ms), 1), "p99_ms": pct(ms, 99), "buckets": len(body["data"])}


def stats_run(stack: Stack, tenant_headers: dict[str, str], tenant_id: str, emails: int) -> dict[str, Any]:
    started = time.monotonic()
    rows = asyncio.run(fill(stack, tenant_id, emails))
    filled = time.monotonic() - started
    now = datetime.now(UTC)
    span = {"from": (now - timedelta(days=30)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()}
    repeat = 40
    with httpx.Client(base_url=stack.url("api"), headers=tenant_headers, timeout=30) as client:
        totals = client.get("/v1/stats", params=span).json()["totals"]
        assert totals["sent"] == emails, totals  # every generated email is counted
        queries = {
            "30 days by day": timed(client, {**span, "granularity": "day"}, repeat),
            "30 days by hour": timed(client, {**span, "granularity": "hour"}, repeat),
            "by domain": timed(client, {**span, "domain": DOMAINS[0]}, repeat),
            "by tag": timed(client, {**span, "tag": f"kind:{KINDS[0]}"}, repeat),
        }
    return {
        "emails": emails,
        "rollup_rows": rows,
        "fill_seconds": round(filled, 2),
        "queries": queries,
        "worst_p99_ms": max(q["p99_ms"] for q in queries.values()),
    }
