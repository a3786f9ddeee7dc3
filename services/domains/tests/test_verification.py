"""The verification poller against the SES emulator: transitions, events on JetStream, timeouts,
SES outages, and several pollers at once."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest
from domains_testkit import RunningDomains, Starter, domain_events, event_types, unique_domain, wait_for
from mailroom_contracts import subjects
from mailroom_contracts.events import DomainFailed, DomainSnapshot, DomainStatusChanged, DomainVerified
from mailroom_contracts.rpc import CreateDomainRequest, DomainReply, VerifyDomainRequest
from mailroom_devstack.infra import free_port
from mailroom_domains.checks import RecordCheck, SesStatusChecker
from mailroom_domains.handlers import CreateDomainHandler, VerificationPoller
from mailroom_kit import rpc
from mailroom_kit.db import Pool, open_pool
from mailroom_ses_emulator import EmulatorServer
from nats.aio.client import Client

pytestmark = pytest.mark.usefixtures("clean_db")


async def register(running: RunningDomains, tenant_id: str = "ten_a", name: str | None = None) -> DomainSnapshot:
    """Create a domain through the real RPC edge (called directly, no NATS round trip needed)."""
    reply = await CreateDomainHandler(running.service, running.runtime.pool)(
        CreateDomainRequest(tenant_id=tenant_id, name=name or unique_domain())
    )
    assert reply.error is None and reply.domain is not None, reply.error
    return reply.domain


async def row(pool: Pool, domain_id: str) -> dict[str, Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status, failure_reason, created_at, last_checked_at, next_check_at, verified_at, "
            "now() AS db_now FROM domains WHERE id = %s",
            (domain_id,),
        )
        found = await cur.fetchone()
    assert found is not None
    return found


async def record_statuses(pool: Pool, domain_id: str) -> list[str]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status FROM domain_records WHERE domain_id = %s ORDER BY position", (domain_id,)
        )
        return [r["status"] for r in await cur.fetchall()]


async def wait_status(pool: Pool, domain_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        r = await row(pool, domain_id)
        return r if r["status"] == status else None

    result: dict[str, Any] = await wait_for(reached, timeout=timeout)
    return result


def force(emulator: EmulatorServer, name: str, **statuses: str | None) -> None:
    resp = httpx.post(f"{emulator.url}/_emulator/identities/{name}/verification", json=statuses)
    resp.raise_for_status()


async def test_immediate_verification_publishes_domain_verified(
    start_domains: Starter, emulator_immediate: EmulatorServer, nats_client: Client, pool: Pool
) -> None:
    running = await start_domains(emulator_immediate.url)
    dom = await register(running)
    verified = await wait_status(pool, dom.domain_id, "verified")
    assert verified["last_checked_at"] is not None and verified["verified_at"] == verified["last_checked_at"]
    # Verified domains are re-checked at the (long) recheck interval, not every poll.
    assert (verified["next_check_at"] - verified["last_checked_at"]).total_seconds() == pytest.approx(3600)
    assert await record_statuses(pool, dom.domain_id) == ["verified"] * 5 + ["pending"]

    js = nats_client.jetstream()
    events = await wait_for(lambda: _with_types(js, dom.domain_id, 2))
    assert event_types(events) == ["domain.created", "domain.verified"]
    event = events[1]
    assert isinstance(event, DomainVerified)
    assert event.tenant_id == "ten_a" and event.domain.status == "verified"
    assert event.domain.last_checked_at == verified["last_checked_at"]
    assert [r.status for r in event.domain.records] == ["verified"] * 5 + ["pending"]
    assert event.domain.records[5].purpose == "dmarc"
    # Nothing changes any more: no further events while it stays verified.
    await asyncio.sleep(1.0)
    assert len(await domain_events(js, dom.domain_id)) == 2


async def _with_types(js: Any, domain_id: str, n: int) -> list[Any] | None:
    events = await domain_events(js, domain_id)
    return events if len(events) >= n else None


async def test_never_verified_stays_pending_without_events(
    start_domains: Starter, emulator_never: EmulatorServer, nats_client: Client, pool: Pool
) -> None:
    running = await start_domains(emulator_never.url)
    dom = await register(running)

    async def checked_twice() -> dict[str, Any] | None:
        first = await row(pool, dom.domain_id)
        if first["last_checked_at"] is None:
            return None
        await asyncio.sleep(0.5)
        second = await row(pool, dom.domain_id)
        return second if second["last_checked_at"] > first["last_checked_at"] else None

    later = await wait_for(checked_twice)
    assert later["status"] == "pending" and later["verified_at"] is None
    assert await record_statuses(pool, dom.domain_id) == ["pending"] * 6
    await asyncio.sleep(0.3)  # the relay has had every chance to publish
    assert event_types(await domain_events(nats_client.jetstream(), dom.domain_id)) == ["domain.created"]


async def test_a_domain_not_verified_in_time_fails(
    start_domains: Starter, emulator_never: EmulatorServer, nats_client: Client, pool: Pool
) -> None:
    running = await start_domains(emulator_never.url)
    dom = await register(running)
    young = await register(running)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE domains SET created_at = now() - interval '72 hours 1 second' WHERE id = %s",
            (dom.domain_id,),
        )
    failed = await wait_status(pool, dom.domain_id, "failed")
    assert failed["failure_reason"] == "not verified within 72 hours"
    events = await wait_for(lambda: _with_types(nats_client.jetstream(), dom.domain_id, 2))
    assert event_types(events) == ["domain.created", "domain.failed"]
    assert isinstance(events[1], DomainFailed)
    assert events[1].reason == "not verified within 72 hours" and events[1].domain.status == "failed"
    assert events[1].domain.last_checked_at == failed["last_checked_at"]
    # A failed domain is never checked again; the young one is still pending.
    await asyncio.sleep(0.6)
    assert (await row(pool, dom.domain_id))["last_checked_at"] == failed["last_checked_at"]
    assert (await row(pool, young.domain_id))["status"] == "pending"


async def test_status_follows_ses_through_every_transition(
    start_domains: Starter, emulator_never: EmulatorServer, nats_client: Client, pool: Pool
) -> None:
    running = await start_domains(emulator_never.url, recheck_interval_seconds=0.2)
    dom = await register(running)
    partial = await register(running)
    js = nats_client.jetstream()

    # MAIL FROM found but DKIM not yet: partially verified.
    force(emulator_never, partial.name, mail_from_status="SUCCESS")
    await wait_status(pool, partial.domain_id, "partially_verified")
    assert await record_statuses(pool, partial.domain_id) == ["pending"] * 3 + ["verified"] * 2 + ["pending"]
    events = await wait_for(lambda: _with_types(js, partial.domain_id, 2))
    assert isinstance(events[1], DomainStatusChanged)
    assert (events[1].previous_status, events[1].domain.status) == ("pending", "partially_verified")

    # SES verified (DKIM) with MAIL FROM still pending: partially verified (both halves are needed) …
    force(emulator_never, dom.name, status="SUCCESS")
    await wait_status(pool, dom.domain_id, "partially_verified")
    assert await record_statuses(pool, dom.domain_id) == ["verified"] * 3 + ["pending"] * 3
    # … MAIL FROM verifies later: verified.
    force(emulator_never, dom.name, mail_from_status="SUCCESS")
    await wait_status(pool, dom.domain_id, "verified")
    # DMARC is no SES matter: a record-only change is published so read models stay current
    # (here: nothing else changes, so the next events are the transitions).
    # The records vanish: temporary failure; they come back: verified again; SES gives up: failed.
    force(emulator_never, dom.name, status="TEMPORARY_FAILURE", mail_from_status="TEMPORARY_FAILURE")
    await wait_status(pool, dom.domain_id, "temporary_failure")
    assert await record_statuses(pool, dom.domain_id) == ["failed"] * 5 + ["pending"]
    force(emulator_never, dom.name, status="SUCCESS", mail_from_status="SUCCESS")
    await wait_status(pool, dom.domain_id, "verified")
    force(emulator_never, dom.name, status="FAILED")
    failed = await wait_status(pool, dom.domain_id, "failed")
    assert failed["failure_reason"] == "SES reported that DKIM verification failed"

    events = await wait_for(lambda: _with_types(js, dom.domain_id, 6))
    summary = [(event_types([e])[0], getattr(e, "previous_status", None), e.domain.status) for e in events]
    assert summary == [
        ("domain.created", None, "pending"),
        ("domain.status_changed", "pending", "partially_verified"),
        ("domain.verified", None, "verified"),
        ("domain.status_changed", "verified", "temporary_failure"),
        ("domain.verified", None, "verified"),
        ("domain.failed", None, "failed"),
    ]
    assert isinstance(events[-1], DomainFailed)
    assert events[-1].reason == "SES reported that DKIM verification failed"
    assert [r.status for r in events[2].domain.records] == ["verified"] * 5 + ["pending"]
    assert [r.status for r in events[1].domain.records] == ["verified"] * 3 + ["pending"] * 3


async def test_ses_outage_postpones_checks_without_changes(
    start_domains: Starter, emulator_never: EmulatorServer, nats_client: Client, pool: Pool
) -> None:
    creator = await start_domains(emulator_never.url, workers=False)
    dom = await register(creator)
    await start_domains(f"http://127.0.0.1:{free_port()}", ses_timeout_seconds=0.5)

    async def postponed() -> dict[str, Any] | None:
        r = await row(pool, dom.domain_id)
        # Claimed (which leases it for 120 s), then put back to the poll interval when SES failed.
        moved = r["next_check_at"] > r["created_at"]
        return r if moved and (r["next_check_at"] - r["db_now"]).total_seconds() < 5 else None

    r = await wait_for(postponed)
    assert r["status"] == "pending" and r["last_checked_at"] is None
    await asyncio.sleep(0.5)
    assert (await row(pool, dom.domain_id))["last_checked_at"] is None
    await creator.runtime.relay().relay_once()
    assert event_types(await domain_events(nats_client.jetstream(), dom.domain_id)) == ["domain.created"]


async def test_claims_are_exclusive_across_replicas(
    start_domains: Starter, emulator_never: EmulatorServer, pool: Pool, migrated: str
) -> None:
    running = await start_domains(emulator_never.url, workers=False)
    ids = {(await register(running)).domain_id for _ in range(3)}
    other = await open_pool(migrated, "domains", min_size=1, max_size=2)
    try:
        async with pool.connection() as first, first.transaction():
            claimed = set(await running.service.claim_due(first))
            assert claimed == ids
            # While the first replica's claim is uncommitted, another one skips those rows (no waiting).
            async with other.connection() as second, second.transaction():
                assert await asyncio.wait_for(running.service.claim_due(second), 2) == []
        # Once committed, the lease keeps them away from everyone until it ends.
        async with other.connection() as second, second.transaction():
            assert await running.service.claim_due(second) == []
    finally:
        await other.close()


async def test_concurrent_pollers_publish_each_transition_once(
    start_domains: Starter, emulator_immediate: EmulatorServer, nats_client: Client, pool: Pool, migrated: str
) -> None:
    running = await start_domains(emulator_immediate.url, workers=False)
    domains = [await register(running, tenant_id=f"ten_{i % 3}") for i in range(12)]
    pools = [await open_pool(migrated, "domains", min_size=1, max_size=6) for _ in range(3)]
    pollers = [VerificationPoller(running.service, p) for p in pools]
    try:
        # Replicas claiming batches at the same time (FOR UPDATE SKIP LOCKED) ...
        stop = asyncio.Event()
        loops = [asyncio.create_task(p.run(stop, tick=0.05)) for p in pollers]
        # ... and checks of the same domains racing them (an expired lease, a manual re-check).
        await asyncio.gather(*(pollers[i % 3].check(d.domain_id) for i, d in enumerate(domains * 3)))
        for d in domains:
            await wait_status(pool, d.domain_id, "verified")
        stop.set()
        await asyncio.gather(*loops)
    finally:
        for p in pools:
            await p.close()
    while await running.runtime.relay().relay_once():
        pass
    js = nats_client.jetstream()
    for d in domains:
        assert event_types(await domain_events(js, d.domain_id)) == ["domain.created", "domain.verified"]


class GatedChecker:
    """The SES-status checker, but the first check waits at `gate` once it has its answer: a slow
    check (a lease that expired, a verify request) overtaken by a later one of the same domain."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self._inner = SesStatusChecker()
        self._first = True

    async def check(self, domain: DomainSnapshot, records: Any, *, identity: Any) -> list[RecordCheck]:
        checks = await self._inner.check(domain, records, identity=identity)
        if self._first:
            self._first = False
            self.waiting.set()
            await self.gate.wait()
        return checks


async def test_a_check_overtaken_by_a_later_one_is_not_applied(
    start_domains: Starter, emulator_never: EmulatorServer, nats_client: Client, pool: Pool
) -> None:
    """Two check writers of one domain: a check that saw the records missing is applied after a
    later check saw them back. Applying it would move the domain back to temporary_failure (and
    publish it a second time once the next check finds it verified): the older view is dropped."""
    checker = GatedChecker()
    running = await start_domains(emulator_never.url, workers=False, checker=checker)
    dom = await register(running)
    checker._first = False  # the check that verifies it passes the gate
    force(emulator_never, dom.name, status="SUCCESS", mail_from_status="SUCCESS")
    poller = VerificationPoller(running.service, running.runtime.pool)
    await poller.check(dom.domain_id)
    assert (await row(pool, dom.domain_id))["status"] == "verified"

    # The records vanish; a check sees that and is held before it writes …
    checker._first = True
    force(emulator_never, dom.name, status="TEMPORARY_FAILURE", mail_from_status="TEMPORARY_FAILURE")
    slow = asyncio.create_task(poller.check(dom.domain_id))
    await asyncio.wait_for(checker.waiting.wait(), 10)
    # … they are back, and a second check of the same domain sees them and writes first.
    force(emulator_never, dom.name, status="SUCCESS", mail_from_status="SUCCESS")
    await poller.check(dom.domain_id)
    checker.gate.set()
    await asyncio.wait_for(slow, 10)

    assert (await row(pool, dom.domain_id))["status"] == "verified"
    await poller.check(dom.domain_id)  # and the next check changes nothing
    while await running.runtime.relay().relay_once():
        pass
    assert event_types(await domain_events(nats_client.jetstream(), dom.domain_id)) == [
        "domain.created",
        "domain.verified",
    ]


async def test_a_verify_request_is_checked_at_once_not_at_the_next_tick(
    start_domains: Starter, emulator_immediate: EmulatorServer, nats_client: Client, pool: Pool
) -> None:
    """`mailroom.rpc.domains.verify` makes the domain due and wakes the poller of the replica that
    answered: the check comes at once, not at the poller's next tick (5 s with a 60 s poll)."""
    creator = await start_domains(emulator_immediate.url, workers=False)
    dom = await register(creator)
    await start_domains(emulator_immediate.url, poll_interval_seconds=60.0)  # ticks every 5 s
    verified = await wait_status(pool, dom.domain_id, "verified")  # its first round, then asleep
    loop = asyncio.get_running_loop()
    asked = loop.time()
    reply = await rpc.request(
        nats_client,
        subjects.RPC_DOMAINS_VERIFY,
        VerifyDomainRequest(tenant_id="ten_a", domain_id=dom.domain_id),
        DomainReply,
        timeout=10,
    )
    assert reply.error is None and reply.domain is not None and reply.domain.status == "verified"

    async def checked_again() -> bool:
        return bool((await row(pool, dom.domain_id))["last_checked_at"] > verified["last_checked_at"])

    await wait_for(checked_again, timeout=10)
    took = loop.time() - asked
    assert took < 3.0, f"checked {took:.1f} s after the request: at a tick, not woken"
    # Another tenant's id: not_found.
    other = await rpc.request(
        nats_client,
        subjects.RPC_DOMAINS_VERIFY,
        VerifyDomainRequest(tenant_id="ten_b", domain_id=dom.domain_id),
        DomainReply,
        timeout=10,
    )
    assert other.error is not None and other.error.code == "not_found"


class CountingChecker:
    """The SES-status checker, holding each check until `width` are in flight at once (or 10 s)."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.in_flight = 0
        self.most = 0
        self._full = asyncio.Event()

    async def check(self, domain: DomainSnapshot, records: Any, *, identity: Any) -> list[RecordCheck]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= self.width:
            self._full.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), 10)
            return await SesStatusChecker().check(domain, records, identity=identity)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._full.clear()


async def test_a_round_checks_its_batch_concurrently_and_no_more(
    start_domains: Starter, emulator_immediate: EmulatorServer, pool: Pool
) -> None:
    """Many due domains: each round claims CHECK_BATCH_SIZE and checks them all at once (a slow
    resolver does not serialize them), never more than that (the bound)."""
    checker = CountingChecker(width=3)
    running = await start_domains(emulator_immediate.url, workers=False, checker=checker, check_batch_size=3)
    doms = [await register(running) for _ in range(6)]
    poller = VerificationPoller(running.service, running.runtime.pool)
    assert [await poller.run_once(), await poller.run_once(), await poller.run_once()] == [3, 3, 0]
    assert checker.most == 3  # one at a time: 1 (and each check would wait out the 10 s)
    assert {(await row(pool, d.domain_id))["status"] for d in doms} == {"verified"}
