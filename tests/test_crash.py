"""Crash test: with a burst of 500 accepted emails in flight, kill -9 the sender and the API
(which hosts the outbox relay) mid-way and restart them. Every accepted email must end
`delivered`, and appear exactly once in the SES emulator's sent list: none lost, none twice."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from mailroom_devstack.infra import Postgres
from mailroom_devstack.stack import Stack
from support import Tenant, create_tenant, make_stack, sent_email_ids, verified_domain, wait_for

TOTAL = 500


@pytest.fixture(scope="module")
def crash_stack(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[Stack]:
    # In-doubt sends wait for SES's Send event this long before a resend is considered.
    yield from make_stack(tmp_path_factory.mktemp("crash"), postgres, sender={"MAILROOM_SENDER_IN_DOUBT_SECONDS": "5"})


async def _post_until(stack: Stack, tenant: Tenant, accepted: list[str], target: int, stop: threading.Event) -> None:
    body = {"from": "crash@crash.test", "to": "success@simulator.amazonses.com", "subject": "burst", "text": "x"}
    async with httpx.AsyncClient(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as client:

        async def worker() -> None:
            while len(accepted) < target and not stop.is_set():
                try:
                    r = await client.post("/v1/emails", json=body)
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)  # API down (killed): retry; a lost 202 is simply not counted
                    continue
                if r.status_code == 202:
                    accepted.append(r.json()["id"])
                else:
                    await asyncio.sleep(0.1)

        await asyncio.gather(*(worker() for _ in range(16)))


def test_kill_9_sender_and_relay_mid_burst_loses_nothing_and_sends_nothing_twice(crash_stack: Stack) -> None:
    stack = crash_stack
    tenant = create_tenant(stack)
    verified_domain(stack, tenant, "crash.test")
    accepted: list[str] = []
    stop = threading.Event()
    poster = threading.Thread(target=lambda: asyncio.run(_post_until(stack, tenant, accepted, TOTAL, stop)))
    poster.start()
    try:
        # Kill the sender once SES has some but not all of the burst.
        wait_for(lambda: len(sent_email_ids(stack)) >= 60, timeout=60, interval=0.02, what="first sends")
        stack.kill("sender")
        sent_at_kill = len(sent_email_ids(stack))
        # Kill the API (HTTP + outbox relay) while accepting the burst.
        wait_for(lambda: len(accepted) >= 250, timeout=60, interval=0.02, what="half accepted")
        stack.kill("api")
        accepted_at_kill = len(accepted)
        time.sleep(1)
        stack.restart("api")
        stack.restart("sender")
        poster.join(timeout=120)
        assert not poster.is_alive()
    finally:
        stop.set()
        poster.join(timeout=5)
    assert len(accepted) >= TOTAL
    assert sent_at_kill < TOTAL and accepted_at_kill < TOTAL  # the kills really happened mid-burst

    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c:
        pending = set(accepted)

        def all_delivered() -> bool:  # (asks again only about those not delivered yet)
            pending.difference_update([i for i in pending if c.get(f"/v1/emails/{i}").json()["status"] == "delivered"])
            return not pending

        wait_for(all_delivered, timeout=150, interval=1.0, what="every accepted email delivered")
    counts = collections.Counter(sent_email_ids(stack))
    twice = {i: n for i, n in counts.items() if n > 1}
    assert not twice, f"sent more than once: {twice}"
    missing = [i for i in accepted if counts[i] != 1]
    assert not missing, f"{len(missing)} accepted emails not sent exactly once"
