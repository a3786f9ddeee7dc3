"""Chaos harness: a steady stream of emails through the whole stack while each service is killed -9
in turn, NATS is restarted and (on the long run) a private Postgres is restarted; then a report of
what was accepted, delivered, lost, sent twice and what the webhook endpoint received.

    python tests/chaos.py [--seconds 180] [--rate 20]      # `make chaos`: exit 1 on a broken invariant

`tests/test_chaos.py` runs a short schedule of it in `make test`. The stack runs on its own pgserver
(never the machine's shared Postgres) and its own nats-server. Invariants: every accepted email
(202) is delivered and reaches the SES emulator exactly once, except a send that was in doubt
across a sender kill, which the sender may resend after MAILROOM_SENDER_IN_DOUBT_SECONDS (the one
documented at-least-once window; such duplicates are counted apart); every delivered email's
`email.delivered` webhook arrives (duplicate deliveries of one webhook-id are counted, not failed:
webhooks are at-least-once by design).
"""

from __future__ import annotations

import argparse
import collections
import json
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from mailroom_devstack.stack import SERVICES, Ports, Stack

sys.path.insert(0, str(Path(__file__).parent))

from support import WebhookReceiver, create_tenant, sent_email_ids, verified_domain, wait_for

IN_DOUBT_SECONDS = 5
SENDER_CONCURRENCY = 16  # MAILROOM_SENDER_CONCURRENCY's default: sends in flight at a kill


@dataclass
class Report:
    accepted: int = 0
    refused: int = 0  # 503s and connection errors while something was down: not accepted, not owed
    delivered: int = 0
    lost: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    in_doubt_duplicates: int = 0
    webhooks_expected: int = 0
    webhooks_received: int = 0
    webhooks_missing: list[str] = field(default_factory=list)
    webhook_redeliveries: int = 0
    faults: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicates and not self.webhooks_missing

    def lines(self) -> list[str]:
        return [
            f"faults: {', '.join(self.faults)}",
            f"accepted {self.accepted}, refused while down {self.refused}, delivered {self.delivered}",
            f"lost {len(self.lost)}, duplicate SES sends {len(self.duplicates)} "
            f"(+{self.in_doubt_duplicates} inside the documented in-doubt window)",
            f"webhooks expected {self.webhooks_expected}, received {self.webhooks_received}, "
            f"missing {len(self.webhooks_missing)}, redelivered {self.webhook_redeliveries}",
            f"took {self.seconds:.0f} s: {'OK' if self.ok else 'BROKEN'}",
        ]


@contextmanager
def chaos_stack(base: Path) -> Iterator[Stack]:
    stack = Stack(
        base_dir=base,
        ports=Ports.free(),
        operator_token=f"op_{secrets.token_hex(12)}",
        webhooks_secret_key=Fernet.generate_key().decode(),
        database_url=None,  # a private pgserver under base/pg: it can be restarted
        extra_env={"sender": {"MAILROOM_SENDER_IN_DOUBT_SECONDS": str(IN_DOUBT_SECONDS)}},
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


class Load:
    """Sends emails at `rate` per second from its own thread, recording every 202."""

    def __init__(self, stack: Stack, headers: dict[str, str], sender: str, rate: float) -> None:
        self.stack, self.headers, self.sender, self.rate = stack, headers, sender, rate
        self.accepted: list[str] = []
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = {"from": self.sender, "to": "success@simulator.amazonses.com", "subject": "chaos", "text": "x"}
        interval = 1.0 / self.rate
        with httpx.Client(base_url=self.stack.url("api"), headers=self.headers, timeout=5) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                try:
                    r = client.post("/v1/emails", json=body)
                except httpx.HTTPError:
                    self.refused += 1
                else:
                    if r.status_code == 202:
                        self.accepted.append(r.json()["id"])
                    else:
                        self.refused += 1
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def kill_and_restart(name: str) -> Callable[[Stack], str]:
    def fault(stack: Stack) -> str:
        stack.kill(name)
        time.sleep(0.5)
        stack.restart(name)
        return f"kill -9 {name}"

    return fault


def restart_nats(stack: Stack) -> str:
    assert stack.nats is not None
    stack.nats.stop()
    time.sleep(1.0)
    stack.nats.start()
    return "restart NATS"


def restart_postgres(stack: Stack) -> str:
    assert stack.postgres is not None
    stack.postgres.stop()
    time.sleep(1.0)
    stack.postgres.start()
    return "restart Postgres"


def full_schedule() -> list[Callable[[Stack], str]]:
    return [*(kill_and_restart(name) for name in SERVICES), restart_nats, restart_postgres]


def short_schedule() -> list[Callable[[Stack], str]]:
    return [kill_and_restart("sender"), kill_and_restart("events"), kill_and_restart("webhooks"), restart_nats]


def run(stack: Stack, schedule: list[Callable[[Stack], str]], *, seconds: float, rate: float) -> Report:
    started = time.monotonic()
    report = Report()
    tenant = create_tenant(stack, "Chaos")
    domain = verified_domain(stack, tenant, f"chaos-{secrets.token_hex(3)}.test")
    with WebhookReceiver() as receiver, httpx.Client(base_url=stack.url("api"), headers=tenant.headers()) as api:
        hook = api.post("/v1/webhooks", json={"url": receiver.url, "events": ["email.delivered"]})
        assert hook.status_code == 201, hook.text
        with Load(stack, tenant.headers(), f"chaos@{domain['name']}", rate) as load:
            pause = seconds / (len(schedule) + 1)
            for fault in schedule:
                time.sleep(pause)
                report.faults.append(fault(stack))
            time.sleep(pause)
        accepted = list(load.accepted)
        report.accepted, report.refused = len(accepted), load.refused

        def statuses() -> dict[str, str]:
            return {i: api.get(f"/v1/emails/{i}").json().get("status", "?") for i in accepted}

        def settled() -> bool:
            return all(s == "delivered" for s in statuses().values())

        try:
            wait_for(settled, timeout=180, interval=2.0, what="every accepted email delivered")
        except AssertionError:
            pass  # reported below as lost
        final = statuses()
        report.delivered = sum(1 for s in final.values() if s == "delivered")
        sends = collections.Counter(sent_email_ids(stack))
        report.lost = [i for i in accepted if final[i] != "delivered" or sends[i] == 0]
        twice = {i: n for i, n in sends.items() if i in final and n > 1}
        # Only a send in flight when the sender was killed may be resent (the documented in-doubt
        # window): at most the sender's concurrency per kill, and at most one extra send each.
        sender_kills = sum(1 for f in report.faults if f == "kill -9 sender")
        if twice and all(n == 2 for n in twice.values()) and len(twice) <= SENDER_CONCURRENCY * sender_kills:
            report.in_doubt_duplicates = len(twice)
        else:
            report.duplicates = twice

        delivered_ids = [i for i in accepted if final[i] == "delivered"]
        report.webhooks_expected = len(delivered_ids)

        def hooks() -> dict[str, int]:
            seen: dict[str, set[str]] = collections.defaultdict(set)
            for r in receiver.of_type("email.delivered"):
                seen[r.json["data"]["email_id"]].add(r.headers["webhook-id"])
            return {k: len(v) for k, v in seen.items()}

        try:
            wait_for(lambda: set(delivered_ids) <= hooks().keys(), timeout=120, interval=1.0, what="webhooks")
        except AssertionError:
            pass
        got = hooks()
        report.webhooks_received = sum(1 for i in delivered_ids if i in got)
        report.webhooks_missing = [i for i in delivered_ids if i not in got]
        counts = collections.Counter(r.headers["webhook-id"] for r in receiver.of_type("email.delivered"))
        report.webhook_redeliveries = sum(n - 1 for n in counts.values())
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="how long the stream runs")
    parser.add_argument("--rate", type=float, default=20.0, help="emails per second")
    parser.add_argument("--short", action="store_true", help="the short schedule of `make test`")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    schedule = short_schedule() if args.short else full_schedule()
    with tempfile.TemporaryDirectory(prefix="mailroom-chaos-") as tmp, chaos_stack(Path(tmp)) as stack:
        report = run(stack, schedule, seconds=args.seconds, rate=args.rate)
    if args.json:
        print(json.dumps({**report.__dict__, "ok": report.ok}, indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
