"""Helpers shared by the cross-service suites: a started stack, a tenant with keys, a real
local webhook receiver, and polling."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
from cryptography.fernet import Fernet
from mailroom_devstack.infra import Postgres
from mailroom_devstack.stack import Ports, Stack

T = TypeVar("T")


def wait_for(fn: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.1, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}; last={last!r}")


@dataclass
class Tenant:
    id: str
    live_key: str
    test_key: str

    def headers(self, mode: str = "live") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.live_key if mode == 'live' else self.test_key}"}


def create_tenant(stack: Stack, name: str | None = None) -> Tenant:
    admin = {"Authorization": f"Bearer {stack.operator_token}"}
    with httpx.Client(base_url=stack.url("api"), timeout=10) as c:
        t = c.post("/admin/v1/tenants", json={"name": name or f"t-{secrets.token_hex(3)}"}, headers=admin)
        assert t.status_code == 201, t.text
        tid = t.json()["id"]
        keys = {}
        for mode in ("live", "test"):
            k = c.post(
                f"/admin/v1/tenants/{tid}/api-keys",
                headers=admin,
                json={"name": mode, "mode": mode, "permission": "full_access"},
            )
            assert k.status_code == 201, k.text
            keys[mode] = k.json()["token"]
    return Tenant(tid, keys["live"], keys["test"])


def verified_domain(stack: Stack, tenant: Tenant, name: str, timeout: float = 20.0) -> dict[str, Any]:
    with httpx.Client(base_url=stack.url("api"), timeout=10, headers=tenant.headers()) as c:
        r = c.post("/v1/domains", json={"name": name})
        assert r.status_code == 201, r.text
        dom = r.json()

        def verified() -> dict[str, Any] | None:
            got = c.get(f"/v1/domains/{dom['id']}").json()
            return got if got["status"] == "verified" else None

        return wait_for(verified, timeout, what=f"domain {name} verified")


def email_status(client: httpx.Client, email_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/emails/{email_id}")
    assert r.status_code == 200, r.text
    return r.json()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A real HTTP server on loopback that records every POST it gets."""

    received: list[Received] = field(default_factory=list)
    status: int = 200
    server: ThreadingHTTPServer | None = None

    def __enter__(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def of_type(self, type_: str, email_id: str | None = None) -> list[Received]:
        return [
            r
            for r in self.received
            if r.json.get("type") == type_ and (email_id is None or r.json["data"].get("email_id") == email_id)
        ]


def emulator_sent(stack: Stack) -> list[dict[str, Any]]:
    r = httpx.get(stack.url("emulator") + "/_emulator/sent", timeout=10)
    r.raise_for_status()
    messages: list[dict[str, Any]] = r.json()["messages"]
    return messages


def sent_email_ids(stack: Stack) -> list[str]:
    return [m["tags"].get("mailroom_email_id", "") for m in emulator_sent(stack)]


def make_stack(tmp: Path, postgres: Postgres, **extra_env: dict[str, str]) -> Iterator[Stack]:
    dbname = f"mailroom_e2e_{secrets.token_hex(5)}"
    url = postgres.create_database(dbname)
    stack = Stack(
        base_dir=tmp,
        ports=Ports.free(),
        operator_token=f"op_{secrets.token_hex(12)}",
        webhooks_secret_key=Fernet.generate_key().decode(),
        database_url=url,
        extra_env=extra_env,
    )
    try:
        try:
            stack.start()
        except Exception as exc:
            raise RuntimeError(f"the stack did not start: {exc}\n{postgres.connections()}") from exc
        yield stack
    finally:
        stack.stop()
        postgres.drop_database(dbname)


def api_processes_stack(base: Path, postgres: Postgres, processes: int) -> Iterator[Stack]:
    """The api service alone, as `processes` copies on one port (MAILROOM_API_PROCESSES), on a
    database of its own; yielded once every copy has started."""
    dbname = f"mailroom_procs_{secrets.token_hex(5)}"
    stack = Stack(
        base_dir=base,
        ports=Ports.free(),
        operator_token=f"op_{secrets.token_hex(12)}",
        webhooks_secret_key=Fernet.generate_key().decode(),
        database_url=postgres.create_database(dbname),
        processes=("api",),
        extra_env={"api": {"MAILROOM_API_PROCESSES": str(processes)}},
    )
    try:
        stack.start()
        # Ready answers as soon as one copy listens: wait for every copy.
        wait_for(
            lambda: stack.log_tail("api", 200_000).count('"service.started"') == processes,
            timeout=60,
            what="every copy started",
        )
        yield stack
    finally:
        stack.stop()
        postgres.drop_database(dbname)


# SO_REUSEPORT spreads connections, not requests: a client of several API processes opens a fresh one each time.
FRESH_CONNECTIONS = httpx.Limits(max_keepalive_connections=0)


def requests_per_process(
    stack: Stack, total: float, method: str = "POST", status: str = r"\d+", scrapes: int = 40
) -> list[float]:
    """How many of `total` requests (`method`, responses with `status`, a regex) each of two API
    processes reports, smallest first. Scrapes on fresh connections reach every copy; a copy that
    took none reports 0. Two copies that took the same number report one value, told apart from one
    copy that took them all by `total` (v + v == total): equal counts are not a failure to spread."""
    seen = set()
    pattern = re.compile(
        rf'^mailroom_http_requests_total\{{method="{method}",route="[^"]*",service="api",status="{status}"\}} (\S+)$',
        re.M,
    )
    with httpx.Client(base_url=stack.url("api"), limits=FRESH_CONNECTIONS, timeout=10) as client:
        for _ in range(scrapes):
            seen.add(sum(float(n) for n in pattern.findall(client.get("/metrics").text)))
    if len(seen) == 1 and 2 * next(iter(seen)) == total:
        return [total / 2, total / 2]
    return sorted(seen)
