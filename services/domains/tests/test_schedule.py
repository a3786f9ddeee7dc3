"""The verification schedule and the 72-hour expiry on an injectable clock (no sleeps): the real
poller (`VerificationPoller.run_once`), the real repository and outbox, the SES emulator, and the
service's own public-DNS checker against a local authoritative DNS server. The clock is moved by
the test; a domain is claimed exactly when the schedule stored in the database says it is due."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from domains_testkit import RunningDomains, Starter, domain_events, event_types, unique_domain
from mailroom_contracts.events import DomainFailed, DomainSnapshot, DomainStatusChanged
from mailroom_contracts.rpc import CreateDomainRequest
from mailroom_devstack.dns import DnsServer
from mailroom_domains.handlers import CreateDomainHandler, VerificationPoller
from mailroom_kit.db import Pool
from mailroom_ses_emulator import EmulatorServer
from nats.aio.client import Client

pytestmark = pytest.mark.usefixtures("clean_db")

POLL, FAST_PHASE, SLOW_POLL, RECHECK = 60.0, 3600.0, 900.0, 10800.0
TIMEOUT = timedelta(hours=72)
SCHEDULE = {
    "poll_interval_seconds": POLL,
    "fast_phase_seconds": FAST_PHASE,
    "slow_poll_interval_seconds": SLOW_POLL,
    "recheck_interval_seconds": RECHECK,
    "verification_timeout_hours": 72.0,
}


class FakeClock:
    """The service's `clock=`: stands still until the test moves it."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def set(self, at: datetime) -> None:
        self.at = at


async def register(running: RunningDomains, name: str | None = None) -> DomainSnapshot:
    reply = await CreateDomainHandler(running.service, running.runtime.pool)(
        CreateDomainRequest(tenant_id="ten_sched", name=name or unique_domain("sched"))
    )
    assert reply.error is None and reply.domain is not None, reply.error
    return reply.domain


async def row(pool: Pool, domain_id: str) -> dict[str, Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status, failure_reason, created_at, last_checked_at, next_check_at FROM domains WHERE id = %s",
            (domain_id,),
        )
        found = await cur.fetchone()
    assert found is not None
    return found


def interval(r: dict[str, Any]) -> float:
    """Seconds from the last check to the next one, as stored."""
    return float((r["next_check_at"] - r["last_checked_at"]).total_seconds())


async def check_at(poller: VerificationPoller, clock: FakeClock, at: datetime) -> int:
    clock.set(at)
    return await poller.run_once()


async def test_pending_domain_is_checked_fast_then_slowly_and_fails_at_72_hours(
    start_domains: Starter, emulator_never: EmulatorServer, nats_client: Client, pool: Pool
) -> None:
    clock = FakeClock(datetime.now(UTC))
    running = await start_domains(emulator_never.url, workers=False, clock=clock, **SCHEDULE)
    poller = VerificationPoller(running.service, running.runtime.pool)
    dom = await register(running)
    created = (await row(pool, dom.domain_id))["created_at"]

    # Due at once: the first check, then every POLL seconds during the first hour.
    assert await check_at(poller, clock, created + timedelta(seconds=1)) == 1
    first = await row(pool, dom.domain_id)
    assert first["status"] == "pending" and first["last_checked_at"] == created + timedelta(seconds=1)
    assert interval(first) == pytest.approx(POLL)
    # The schedule is the database's: a replica started afresh (a restart) keeps to it.
    restarted = await start_domains(emulator_never.url, workers=False, clock=clock, **SCHEDULE)
    poller = VerificationPoller(restarted.service, restarted.runtime.pool)
    assert await check_at(poller, clock, first["next_check_at"] - timedelta(seconds=1)) == 0, "not due yet"
    assert await check_at(poller, clock, first["next_check_at"]) == 1
    assert (await row(pool, dom.domain_id))["last_checked_at"] == first["next_check_at"]

    # Past the first hour: every SLOW_POLL seconds.
    late = created + timedelta(seconds=FAST_PHASE + 5)
    assert await check_at(poller, clock, late) == 1
    slow = await row(pool, dom.domain_id)
    assert slow["status"] == "pending" and interval(slow) == pytest.approx(SLOW_POLL)
    assert await check_at(poller, clock, slow["next_check_at"] - timedelta(seconds=1)) == 0
    assert await check_at(poller, clock, slow["next_check_at"]) == 1

    # Ten minutes short of 72 hours: still pending, and the next check is not a whole slow interval
    # away but at the deadline itself.
    assert await check_at(poller, clock, created + TIMEOUT - timedelta(minutes=10)) == 1
    almost = await row(pool, dom.domain_id)
    assert (almost["status"], almost["failure_reason"]) == ("pending", None)
    assert almost["next_check_at"] == created + TIMEOUT
    assert await check_at(poller, clock, created + TIMEOUT - timedelta(seconds=1)) == 0

    # 72 hours: failed, with the reason, and never claimed again.
    assert await check_at(poller, clock, created + TIMEOUT) == 1
    failed = await row(pool, dom.domain_id)
    assert (failed["status"], failed["failure_reason"]) == ("failed", "not verified within 72 hours")
    assert failed["last_checked_at"] == created + TIMEOUT
    assert await check_at(poller, clock, created + TIMEOUT + timedelta(days=30)) == 0

    while await running.runtime.relay().relay_once():
        pass
    events = await domain_events(nats_client.jetstream(), dom.domain_id)
    assert event_types(events) == ["domain.created", "domain.failed"], "pending checks publish nothing"
    assert isinstance(events[1], DomainFailed) and events[1].reason == "not verified within 72 hours"


async def test_the_schedule_is_jittered_within_its_bounds(
    start_domains: Starter, emulator_never: EmulatorServer, pool: Pool
) -> None:
    clock = FakeClock(datetime.now(UTC))
    running = await start_domains(emulator_never.url, workers=False, clock=clock, **SCHEDULE, schedule_jitter=0.2)
    running.service._rng = random.Random(2026)  # a seeded rng= (the fixture seeds one too)
    poller = VerificationPoller(running.service, running.runtime.pool)
    doms = [await register(running) for _ in range(8)]
    created = max([(await row(pool, d.domain_id))["created_at"] for d in doms])
    assert await check_at(poller, clock, created + timedelta(seconds=1)) == len(doms)
    intervals = [interval(await row(pool, d.domain_id)) for d in doms]
    assert all(POLL * 0.8 <= i <= POLL * 1.2 for i in intervals), intervals
    assert len({round(i, 3) for i in intervals}) == len(doms), "domains added together drift apart"


async def test_a_verified_domain_whose_record_vanishes_fails_temporarily_at_the_next_recheck(
    start_domains: Starter,
    emulator_immediate: EmulatorServer,
    nats_client: Client,
    pool: Pool,
    dns_server: DnsServer,
) -> None:
    clock = FakeClock(datetime.now(UTC))
    running = await start_domains(
        emulator_immediate.url,
        workers=False,
        clock=clock,
        dns=True,
        dns_nameservers="127.0.0.1",
        dns_port=dns_server.port,
        dns_timeout_seconds=2.0,
        **SCHEDULE,
    )
    poller = VerificationPoller(running.service, running.runtime.pool)
    dom = await register(running)
    dns_server.zone.publish(dom.records)
    created = (await row(pool, dom.domain_id))["created_at"]

    assert await check_at(poller, clock, created + timedelta(seconds=1)) == 1
    verified = await row(pool, dom.domain_id)
    assert verified["status"] == "verified" and interval(verified) == pytest.approx(RECHECK)

    # Someone deletes a DKIM record. SES still reports the identity verified (it would notice only
    # much later); Mailroom notices at its next re-check, not before.
    dkim = dom.records[0]
    assert dns_server.zone.delete(dkim.name, "CNAME") == 1
    assert await check_at(poller, clock, verified["next_check_at"] - timedelta(seconds=1)) == 0
    assert (await row(pool, dom.domain_id))["status"] == "verified"
    assert await check_at(poller, clock, verified["next_check_at"]) == 1
    broken = await row(pool, dom.domain_id)
    assert broken["status"] == "temporary_failure"
    identity = await running.service.ses.get_identity(dom.name)
    assert identity.verified_for_sending and identity.dkim_status == "SUCCESS", "SES has not noticed"
    # Sending is stopped: watch the recovery closely (every POLL seconds).
    assert interval(broken) == pytest.approx(POLL)

    while await running.runtime.relay().relay_once():
        pass
    events = await domain_events(nats_client.jetstream(), dom.domain_id)
    assert event_types(events) == ["domain.created", "domain.verified", "domain.status_changed"]
    change = events[2]
    assert isinstance(change, DomainStatusChanged)
    assert (change.previous_status, change.domain.status) == ("verified", "temporary_failure")
    assert change.domain.records[0].status == "pending" and "NXDOMAIN" in (change.domain.records[0].detail or "")

    # Still missing 72 hours later: failed. (Restored before that, it would verify again.)
    assert await check_at(poller, clock, broken["last_checked_at"] + TIMEOUT - timedelta(seconds=1)) == 1
    assert (await row(pool, dom.domain_id))["status"] == "temporary_failure"
    assert await check_at(poller, clock, broken["last_checked_at"] + TIMEOUT) == 0, "next check: POLL later"
    assert await check_at(poller, clock, broken["last_checked_at"] + TIMEOUT + timedelta(seconds=POLL)) == 1
    gone = await row(pool, dom.domain_id)
    assert gone["status"] == "failed" and gone["failure_reason"] == "records missing or SES not verified for 72 hours"
