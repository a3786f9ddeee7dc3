"""The API as several processes on one port (MAILROOM_API_PROCESSES=2, the kit's multi-process
`serve`): both copies answer, a revocation or a tenant pause made through one copy is honoured by
the other within 1 s (its key cache is forgotten on the NOTIFY), SIGTERM stops them all cleanly,
a copy that dies takes the service down with exit code 1 (the supervisor restarts it), and the
copies never outlive a parent killed with -9."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mailroom_devstack.infra import Postgres
from mailroom_devstack.stack import Stack
from support import Tenant, api_processes_stack, create_tenant, requests_per_process, wait_for

PROCESSES = 2
# Requests on fresh connections: SO_REUSEPORT spreads connections, not requests.
FRESH = httpx.Limits(max_keepalive_connections=0)


@pytest.fixture
def api_stack(tmp_path: Path, postgres: Postgres) -> Iterator[Stack]:
    yield from api_processes_stack(tmp_path, postgres, PROCESSES)


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _statuses(stack: Stack, tenant: Tenant, count: int = 24) -> set[int]:
    with httpx.Client(base_url=stack.url("api"), limits=FRESH, timeout=10, headers=tenant.headers("test")) as client:
        return {client.get("/v1/emails").status_code for _ in range(count)}


def test_both_processes_serve_and_honour_revocations_and_pauses_within_a_second(api_stack: Stack) -> None:
    parent = api_stack.procs["api"]
    assert len(children(parent.pid)) == PROCESSES
    with httpx.Client(base_url=api_stack.url("api"), limits=FRESH, timeout=10) as client:
        for _ in range(40):
            assert client.get("/v1/emails").status_code == 401
    counts = requests_per_process(api_stack, 40, method="GET", status="401", scrapes=30)
    assert len(counts) == PROCESSES and sum(counts) == 40 and min(counts) > 0, counts  # both took some

    tenant = create_tenant(api_stack)
    assert _statuses(api_stack, tenant) == {200}  # both copies now remember the key
    admin = {"Authorization": f"Bearer {api_stack.operator_token}"}
    with httpx.Client(base_url=api_stack.url("api"), timeout=10) as client:
        paused = client.patch(f"/admin/v1/tenants/{tenant.id}", json={"status": "paused"}, headers=admin)
        assert paused.status_code == 200
        started = time.monotonic()
        # Reads stay allowed for a paused tenant; a send is refused by every copy.
        body = {"from": "a@x.test", "to": "b@y.test", "subject": "s", "text": "t"}

        def refused_everywhere() -> bool:
            with httpx.Client(base_url=api_stack.url("api"), limits=FRESH, timeout=10) as fresh:
                codes = {
                    fresh.post("/v1/emails", json=body, headers=tenant.headers("test")).json().get("error")
                    for _ in range(16)
                }
            return codes == {"tenant_paused"}

        wait_for(refused_everywhere, timeout=5, interval=0.05, what="pause honoured by every process")
        assert time.monotonic() - started < 1.0

        keys = client.get("/v1/api-keys", headers=tenant.headers("live")).json()["data"]
        test_key = next(k for k in keys if k["mode"] == "test")
        revoked = client.delete(f"/v1/api-keys/{test_key['id']}", headers=tenant.headers("live"))
        assert revoked.status_code == 200
        started = time.monotonic()
        wait_for(lambda: _statuses(api_stack, tenant, 16) == {403}, timeout=5, interval=0.05, what="revocation")
        assert time.monotonic() - started < 1.0


def test_sigterm_stops_every_process_cleanly(api_stack: Stack) -> None:
    parent = api_stack.procs["api"]
    copies = children(parent.pid)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(30) == 0
    wait_for(lambda: not any(alive(c) for c in copies), timeout=10, what="copies stopped")


def test_a_dead_copy_takes_the_service_down_with_exit_code_1(api_stack: Stack) -> None:
    parent = api_stack.procs["api"]
    first, *others = children(parent.pid)
    os.kill(first, signal.SIGKILL)
    assert parent.wait(30) == 1
    wait_for(lambda: not any(alive(c) for c in others), timeout=10, what="the other copies stopped")


def test_copies_die_with_a_parent_killed_with_9(api_stack: Stack) -> None:
    parent = api_stack.procs["api"]
    copies = children(parent.pid)
    api_stack.kill("api")
    wait_for(lambda: not any(alive(c) for c in copies), timeout=20, what="orphaned copies gone")
