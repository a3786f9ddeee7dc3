"""Two domains-service processes on one database and one NATS (issue 18): every due domain is
checked exactly once per round — one GetEmailIdentity per domain at the SES emulator, one check
counted in the two processes' /metrics together, both processes doing part of the work — a check that
changes nothing publishes nothing, and each status move is published once while both re-check every
domain that lost a DKIM record (`temporary_failure` once, then `verified` once when it is back).
Record-only updates (`DomainStatusChanged` whose previous_status is its status, e.g. DNS right again
before SES is) may come in between: they are no transition, and no webhook (webhooks' payloads.py).

The verifier's real DNS checks go to the stack's local DNS server, made slow for the measured round
(`Zone.latency`) so that one process cannot drain the round before the other's next tick."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

import httpx
import nats
import psycopg
import pytest
from cryptography.fernet import Fernet
from mailroom_contracts import decode_event
from mailroom_contracts.events import DomainEvent, DomainStatusChanged
from mailroom_contracts.rpc import CreateDomainRequest, DomainReply
from mailroom_contracts.streams import DOMAIN_STREAM
from mailroom_contracts.subjects import RPC_DOMAINS_CREATE
from mailroom_devstack.infra import Postgres, free_port, spawn
from mailroom_devstack.stack import Ports, Stack
from mailroom_kit import rpc
from nats.js.errors import NotFoundError
from support import wait_for

DOMAINS = 16
ENV = {
    "MAILROOM_DOMAINS_POLL_INTERVAL_SECONDS": "0.5",
    "MAILROOM_DOMAINS_RECHECK_INTERVAL_SECONDS": "3600",  # verified: not checked again unless made due
    "MAILROOM_DOMAINS_CHECK_BATCH_SIZE": "2",
    "MAILROOM_DOMAINS_SCHEDULE_JITTER": "0",
    "MAILROOM_DOMAINS_DNS_TIMEOUT_SECONDS": "3",
    "MAILROOM_DOMAINS_SES_TIMEOUT_SECONDS": "10",
}
CHECKS = re.compile(r'^mailroom_domain_checks_total\{[^}]*outcome="(\w+)"[^}]*\} (\S+)$', re.M)


class TwoVerifiers:
    def __init__(self, stack: Stack, second_port: int) -> None:
        self.stack = stack
        self.ports = (stack.ports.domains, second_port)

    def checks(self) -> tuple[float, float]:
        """mailroom_domain_checks_total (every outcome) of each process."""
        totals = []
        for port in self.ports:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            totals.append(sum(float(n) for _, n in CHECKS.findall(text)))
        return totals[0], totals[1]

    def reads(self) -> Counter[str]:
        r = httpx.get(f"{self.stack.url('emulator')}/_emulator/identity-reads", timeout=10)
        return Counter(r.json()["reads"])

    def rows(self) -> dict[str, dict[str, object]]:
        with psycopg.connect(self.stack.db_url, row_factory=psycopg.rows.dict_row) as conn:
            found = conn.execute("SELECT id, name, status, last_checked_at FROM domains.domains").fetchall()
        return {str(r["id"]): r for r in found}

    def first_dkim_records(self) -> list[tuple[str, str]]:
        """(name, value) of every domain's first DKIM CNAME."""
        with psycopg.connect(self.stack.db_url) as conn:
            found = conn.execute("SELECT name, value FROM domains.domain_records WHERE position = 0").fetchall()
        assert all(str(name).split(".")[1] == "_domainkey" for name, _ in found), found
        return [(str(name), str(value)) for name, value in found]

    def make_all_due(self) -> datetime:
        with psycopg.connect(self.stack.db_url) as conn:
            row = conn.execute("UPDATE domains.domains SET next_check_at = now() RETURNING now()").fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def verifiers(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[TwoVerifiers]:
    base = tmp_path_factory.mktemp("verifiers")
    dbname = f"mailroom_verifiers_{secrets.token_hex(5)}"
    stack = Stack(
        base_dir=base,
        ports=Ports.free(),
        operator_token=f"op_{secrets.token_hex(12)}",
        webhooks_secret_key=Fernet.generate_key().decode(),
        database_url=postgres.create_database(dbname),
        processes=("emulator", "domains"),
        extra_env={"domains": ENV},
    )
    second: subprocess.Popen[bytes] | None = None
    try:
        stack.start()
        port = free_port()
        env = {**stack.env_for("domains"), "MAILROOM_DOMAINS_PORT": str(port)}
        with open(base / "logs" / "domains-2.log", "ab") as log:
            second = spawn(stack.command("domains"), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200
            assert second is not None and second.poll() is None, (base / "logs" / "domains-2.log").read_text()
            return False

        wait_for(ready, 60, what="the second domains process ready")
        yield TwoVerifiers(stack, port)
    finally:
        if second is not None and second.poll() is None:
            second.terminate()
            second.wait(20)
        stack.stop()
        postgres.drop_database(dbname)


async def create_domains(nats_url: str, n: int) -> list[str]:
    nc = await nats.connect(nats_url)
    try:
        names = [f"mail.v{secrets.token_hex(5)}.example.com" for _ in range(n)]
        replies = await asyncio.gather(
            *(
                rpc.request(nc, RPC_DOMAINS_CREATE, CreateDomainRequest(tenant_id="ten_two", name=name), DomainReply)
                for name in names
            )
        )
    finally:
        await nc.close()
    assert all(r.error is None and r.domain is not None for r in replies), [r.error for r in replies]
    return [r.domain.domain_id for r in replies if r.domain is not None]


async def stream_events(nats_url: str) -> list[DomainEvent]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(DOMAIN_STREAM.name)
        events = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                raw = await js.get_msg(DOMAIN_STREAM.name, seq)
            except NotFoundError:
                continue
            assert raw.data is not None
            event = decode_event(raw.data)
            assert isinstance(event, DomainEvent)
            events.append(event)
        return events
    finally:
        await nc.close()


def events_by_domain(verifiers: TwoVerifiers) -> dict[str, list[str]]:
    assert verifiers.stack.nats is not None
    out: dict[str, list[str]] = {}
    for event in asyncio.run(stream_events(verifiers.stack.nats.url)):
        tag = str(type(event).__struct_config__.tag)
        if isinstance(event, DomainStatusChanged):
            tag = f"{tag}:{event.previous_status}->{event.domain.status}"
        label = tag
        out.setdefault(event.domain.domain_id, []).append(label)
    return out


def all_in(verifiers: TwoVerifiers, ids: list[str], status: str) -> bool:
    rows = verifiers.rows()
    return all(rows[i]["status"] == status for i in ids)


def test_two_verifier_processes_check_each_due_domain_once_per_round(verifiers: TwoVerifiers) -> None:
    stack = verifiers.stack
    assert stack.nats is not None and stack.dns is not None
    ids = asyncio.run(create_domains(stack.nats.url, DOMAINS))
    rows = verifiers.rows()
    names = {i: str(rows[i]["name"]) for i in ids}
    # The dev DNS server publishes each new domain's records: both processes verify them.
    wait_for(lambda: all_in(verifiers, ids, "verified"), 60, what="every domain verified")

    def settled() -> dict[str, list[str]] | None:
        events = events_by_domain(verifiers)
        return events if all(events.get(i, [])[-1:] == ["domain.verified"] for i in ids) else None

    before_events = wait_for(settled, 30, what="the verified events relayed")
    time.sleep(1.5)  # verified domains are next due in an hour: nothing may be checked meanwhile
    reads_before, checks_before = verifiers.reads(), verifiers.checks()

    # The measured round: every domain due at once, slow DNS answers, two processes polling.
    stack.dns.zone.latency = 0.1
    try:
        due_at = verifiers.make_all_due()

        def round_done() -> bool:
            rows = verifiers.rows()
            checked = [rows[i]["last_checked_at"] for i in ids]
            return all(isinstance(at, datetime) and at >= due_at for at in checked)

        wait_for(round_done, 90, what="every domain checked in the round")
        time.sleep(2.0)  # four more ticks of each process: a second check would show now
    finally:
        stack.dns.zone.latency = 0.0
    reads_after, checks_after = verifiers.reads(), verifiers.checks()
    per_domain = {names[i]: reads_after[names[i]] - reads_before[names[i]] for i in ids}
    assert per_domain == {names[i]: 1 for i in ids}, "exactly one SES call per domain in the round"
    done = [after - before for before, after in zip(checks_before, checks_after, strict=True)]
    assert sum(done) == DOMAINS, done
    assert all(n >= 1 for n in done), f"both processes took part: {done}"
    assert events_by_domain(verifiers) == before_events, "a check that changed nothing publishes nothing"

    # Every domain loses a DKIM CNAME at once, both processes re-check the failing domains every
    # poll, then it is restored: each status move is published once (record-only updates, whose
    # previous_status equals the status, may come in between: e.g. DNS right again before SES is).
    dkims = verifiers.first_dkim_records()
    for record_name, _ in dkims:
        assert stack.dns.zone.delete(record_name, "CNAME") == 1
    verifiers.make_all_due()
    wait_for(lambda: all_in(verifiers, ids, "temporary_failure"), 60, what="every domain temporary_failure")
    time.sleep(2.0)  # four more polls of each process while the record is missing
    for record_name, value in dkims:
        stack.dns.zone.add(record_name, "CNAME", value)
    wait_for(lambda: all_in(verifiers, ids, "verified"), 60, what="every domain verified again")

    def moves(events: dict[str, list[str]]) -> dict[str, list[str]]:
        return {names[i]: [e for e in events[i][len(before_events[i]) :] if not _record_only(e)] for i in ids}

    expected = {names[i]: ["domain.status_changed:verified->temporary_failure", "domain.verified"] for i in ids}

    def relayed() -> dict[str, list[str]] | None:
        seen = moves(events_by_domain(verifiers))
        return seen if all(len(m) >= 2 for m in seen.values()) else None

    wait_for(relayed, 30, what="both transitions of every domain relayed")
    time.sleep(1.0)  # a late duplicate would show now
    assert moves(events_by_domain(verifiers)) == expected, "each status move published once"


def _record_only(label: str) -> bool:
    """A `DomainStatusChanged` whose previous status is its status (records changed, not the status)."""
    moved = label.partition(":")[2]
    before, _, after = moved.partition("->")
    return bool(moved) and before == after
