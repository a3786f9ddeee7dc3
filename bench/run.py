"""`make bench`: Mailroom's speed, measured on this machine against baselines measured in the same run.

    python bench/run.py [--quick] [--emails N] [--accept-seconds S] [--rounds R] [--only accept|pipeline|webhooks|stats]

1. Accept path: the real stack (production settings: JSON logs at info) with a tenant, a live key and a
   verified domain; every other service paused (SIGSTOP), so the API, Postgres and NATS have the cores.
   wrk (64 connections) POSTs single emails (1 recipient, 2 KB html) and batches of 100 of them to
   /v1/emails/batch. Interleaved with each measured run, in every round: a bare Litestar + msgspec POST
   served the same way, a JetStream publish-with-ack loop and a single-row Postgres insert+commit loop at the same
   concurrency. CPU per request of every process from /proc; the outbox relay's catch-up after the run is
   counted in the API's CPU.
2. Pipeline: a fresh stack, a webhook endpoint for `email.delivered` on the bench's own receiver; N emails
   at full speed, then a steady run at half the sustained rate. For each email: 202 → SES emulator →
   webhook receipt; lost (accepted, never sent) and duplicated (sent twice) counts; CPU-ms per email of
   every process; consumer pending and outbox rows every half second.
3. Footprint: RSS of every process idle and under load; time to ready (a fresh database, migrations incl.).
4. Webhooks isolation (issue 19): a fresh stack, one tenant with an endpoint hanging 15 s and a healthy one;
   1,000 test-mode emails (one email.delivered each, fanned out to both); the healthy endpoint's lag from
   the event's created_at to receipt, against a control run with the healthy endpoint alone.
5. Stats (issue 22): GET /v1/stats on a tenant with 100,000 emails' rollups (bench/stats.py), p50/p99.

Writes bench/results/latest.json and latest.png and prints a table. A private Postgres (pip pgserver) and
the pinned nats-server are used, so nothing else on the machine is measured or disturbed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
from cryptography.fernet import Fernet
from mailroom_contracts.streams import CONSUMERS
from mailroom_devstack.infra import Postgres, free_port, spawn
from mailroom_devstack.stack import PROCESSES, SERVICES, Ports, Stack

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

from chart import draw  # noqa: E402
from loadgen import IsolationReceiver, Receiver, Sent, email_request, send_emails  # noqa: E402
from procs import Group, Meter, children_cpu_seconds, postmaster_pid  # noqa: E402
from stats import stats_run  # noqa: E402
from support import create_tenant, verified_domain  # noqa: E402

DOMAIN = "bench.example.test"
PAUSED = ("sender", "events", "domains", "webhooks", "emulator")  # the accept run: only api, Postgres, NATS


def html_2kb() -> str:
    paragraph = "<p>Your order has shipped. Track it from your account page; reply to this email with questions.</p>"
    html = "<html><body><h1>Order update</h1>"
    while len(html) < 2048 - len(paragraph) - 14:
        html += paragraph
    return html + "</body></html>"


def email_body(to: str = "success@simulator.amazonses.com") -> dict[str, Any]:
    return {"from": f"Bench <bench@{DOMAIN}>", "to": to, "subject": "Your order has shipped", "html": html_2kb()}


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))], 1)


# ---------------------------------------------------------------------------------------------- stacks


class Bench:
    def __init__(self, base: Path, database_url: str | None) -> None:
        self.base = base
        self.postgres = Postgres(base / "pg", url=database_url).start()
        self.private_pg = database_url is None
        if self.private_pg:
            # 64 baseline connections beside five services' pools: more than pgserver's default 100.
            with psycopg.connect(self.postgres.admin_url, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET max_connections = 300")
                # A run takes the tables from empty to thousands of rows in seconds; autoanalyze
                # looking once a minute would leave the services' prepared statements on generic
                # plans made on near-empty tables (sequential scans of `emails`, `email_recipients`,
                # `email_summaries` to lock or read a few rows by id) for the whole run, a state a
                # deployment is in for its first minute only. Looking every 5 s keeps autovacuum's
                # own thresholds (50 rows + 10 % changed) on the bench's compressed time scale; its
                # work is Postgres CPU, counted like the rest.
                conn.execute("ALTER SYSTEM SET autovacuum_naptime = '5s'")
            self.postgres.stop()
            self.postgres = Postgres(base / "pg").start()

    @contextlib.contextmanager
    def stack(self, name: str, extra_env: dict[str, dict[str, str]] | None = None) -> Iterator[tuple[Stack, float]]:
        dbname = f"bench_{name}_{secrets.token_hex(3)}"
        url = self.postgres.create_database(dbname)
        stack = Stack(
            base_dir=self.base / name,
            ports=Ports.free(),
            operator_token=f"op_{secrets.token_hex(12)}",
            webhooks_secret_key=Fernet.generate_key().decode(),
            database_url=url,
            extra_env=extra_env or {},
        )
        started = time.monotonic()
        try:
            stack.start()
            yield stack, time.monotonic() - started
        finally:
            for proc in stack.procs.values():
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGCONT)
            stack.stop()
            self.postgres.drop_database(dbname)

    def groups(self, stack: Stack) -> list[Group]:
        def of(name: str) -> Callable[[], list[int]]:
            return lambda: [stack.procs[name].pid] if name in stack.procs else []

        assert stack.nats is not None and stack.nats.proc is not None
        nats_pid = stack.nats.proc.pid
        hint = str(self.base / "pg") if self.private_pg else None
        return [
            *(Group(name, of(name), counted=name != "emulator") for name in PROCESSES),
            Group("postgres", lambda: postmaster_pid(hint)),
            Group("nats", lambda: [nats_pid]),
            Group("bench", lambda: [os.getpid()], counted=False, children=False),
        ]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1)
            return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


# ---------------------------------------------------------------------------------------------- accept


def run_wrk(url: str, body_file: Path, *, token: str, seconds: float, connections: int) -> tuple[dict[str, Any], float]:
    """wrk against `url`; its result line and its own CPU seconds."""
    env = {**os.environ, "BENCH_BODY": str(body_file), "BENCH_TOKEN": token, "BENCH_PATH": httpx.URL(url).path}
    proc = spawn(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "10s", "-s", str(HERE / "post.lua"), url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    before = children_cpu_seconds()
    out, err = proc.communicate(timeout=seconds + 60)
    cpu = children_cpu_seconds() - before
    line = next((ln for ln in out.decode().splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out.decode()[-2000:]}\n{err.decode()[-2000:]}")
    return json.loads(line.removeprefix("BENCH_JSON ")), cpu


def wrk_summary(raw: dict[str, Any], *, per_request: int = 1) -> dict[str, Any]:
    seconds = raw["duration_us"] / 1e6
    errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["status_errors"] + raw["timeouts"]
    ok = raw["requests"] - raw["status_errors"]
    return {
        "requests": raw["requests"],
        "errors": errors,
        "requests_per_second": round(raw["requests"] / seconds, 1),
        "emails_per_second": round(ok * per_request / seconds, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "p999_ms": raw["p999_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "ok": ok,
        "seconds": round(seconds, 2),
    }


def outbox_rows(db_url: str, schema: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {schema}.outbox").fetchone()
    return int(row[0]) if row else 0


def pg_activity(db_url: str) -> dict[str, Any]:
    """Postgres's cumulative counters for the stack's database: commits, and rows written and
    index/sequential scans per service schema (pg_stat_user_tables), read after the backends' stats
    were flushed (they report about once a second while busy, at once when idle)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        db = conn.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        rows = conn.execute(
            "SELECT schemaname, sum(n_tup_ins), sum(n_tup_upd), sum(n_tup_del), sum(coalesce(idx_scan, 0)),"
            " sum(seq_scan) FROM pg_stat_user_tables GROUP BY schemaname"
        ).fetchall()
    assert db is not None
    return {
        "commits": int(db[0]),
        "rollbacks": int(db[1]),
        "schemas": {
            name: {"inserted": int(i), "updated": int(u), "deleted": int(d), "index_scans": int(x), "seq_scans": int(q)}
            for name, i, u, d, x, q in rows
        },
    }


def pg_activity_per_email(before: dict[str, Any], after: dict[str, Any], emails: int) -> dict[str, Any]:
    """What Postgres did per delivered email between two `pg_activity` readings."""
    n = max(1, emails)

    def per(a: int, b: int) -> float:
        return round((b - a) / n, 2)

    def written(counts: dict[str, int]) -> int:
        return counts["inserted"] + counts["updated"] + counts["deleted"]

    schemas = {}
    for name, a in sorted(after["schemas"].items()):
        b = before["schemas"].get(name, dict.fromkeys(a, 0))
        schemas[name] = {
            "rows_written": per(written(b), written(a)),
            "index_scans": per(b["index_scans"], a["index_scans"]),
            "seq_scans": per(b["seq_scans"], a["seq_scans"]),
        }
    return {
        "commits": per(before["commits"], after["commits"]),
        "rollbacks": per(before["rollbacks"], after["rollbacks"]),
        "schemas": schemas,
    }


def wait_outbox_empty(db_url: str, schema: str, timeout: float = 120.0) -> float:
    started = time.monotonic()
    while outbox_rows(db_url, schema) and time.monotonic() - started < timeout:
        time.sleep(0.2)
    return time.monotonic() - started


def measured(groups: list[Group], names: tuple[str, ...], fn: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    meter = Meter([g for g in groups if g.name in names]).start()
    result = fn()
    return result, meter.stop()


def accept_phase(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    # Issue 23: the limiter stays on (leases of 1,000) but never refuses the bench's tenant.
    api_env = {
        "api": {"MAILROOM_API_PROCESSES": str(args.api_processes), "MAILROOM_API_DEFAULT_RATE_LIMIT": "10000000"}
    }
    with bench.stack("accept", api_env) as (stack, startup):
        tenant = create_tenant(stack)
        verified_domain(stack, tenant, DOMAIN)
        api = stack.url("api")
        single = bench.base / "single.json"
        single.write_text(json.dumps(email_body()))
        paths = httpx.get(f"{api}/schema/openapi.json", timeout=10).json()["paths"]
        batch = bench.base / "batch.json" if "/v1/emails/batch" in paths else None
        if batch is not None:
            batch.write_text(json.dumps({"emails": [email_body()] * 100}))
        check = httpx.post(
            f"{api}/v1/emails",
            content=single.read_bytes(),
            headers={"Authorization": f"Bearer {tenant.live_key}", "Content-Type": "application/json"},
            timeout=10,
        )
        if check.status_code != 202:
            raise RuntimeError(f"the accept request is refused: {check.status_code} {check.text}")
        for name in PAUSED:
            os.killpg(stack.procs[name].pid, signal.SIGSTOP)
        assert stack.nats is not None
        bare_port = free_port()
        bare = spawn(
            [
                sys.executable,
                str(HERE / "baselines.py"),
                "bare",
                "--port",
                str(bare_port),
                "--processes",
                str(args.api_processes),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        groups = [*bench.groups(stack), Group("bare", lambda: [bare.pid])]
        rounds: list[dict[str, Any]] = []
        try:
            wait_http(f"http://127.0.0.1:{bare_port}/")
            for number in range(args.rounds):
                print(f"  accept round {number + 1}/{args.rounds}", flush=True)
                rounds.append(accept_round(stack, tenant.live_key, groups, single, batch, bare_port, args))
        finally:
            bare.terminate()
            bare.wait(10)
    return summarize_accept(rounds, startup)


def accept_round(
    stack: Stack,
    token: str,
    groups: list[Group],
    single: Path,
    batch: Path | None,
    bare_port: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    seconds, conns = args.accept_seconds, args.connections
    server = ("api", "postgres", "nats")
    out: dict[str, Any] = {}
    (raw, wrk_cpu), cpu = measured(
        groups,
        ("bare",),
        lambda: run_wrk(
            f"http://127.0.0.1:{bare_port}/v1/emails", single, token="", seconds=seconds, connections=conns
        ),
    )
    out["bare"] = {
        **wrk_summary(raw),
        "cpu_ms_per_request": round(cpu["bare"] * 1000 / max(1, raw["requests"]), 3),
        "wrk_cpu_seconds": round(wrk_cpu, 2),
    }

    def api_run(body: Path, per_request: int) -> dict[str, Any]:
        def go() -> tuple[dict[str, Any], float, int, float]:
            raw, wrk_cpu = run_wrk(
                f"{stack.url('api')}/v1/emails{'/batch' if per_request > 1 else ''}",
                body,
                token=token,
                seconds=seconds,
                connections=conns,
            )
            # The relay's catch-up belongs to the cost of accepting: wait for it inside the measurement.
            return raw, wrk_cpu, outbox_rows(stack.db_url, "api"), wait_outbox_empty(stack.db_url, "api")

        (raw, wrk_cpu, backlog, catch_up), cpu = measured(groups, server, go)
        summary = wrk_summary(raw, per_request=per_request)
        emails = max(1, summary["ok"] * per_request)
        return {
            **summary,
            "outbox_rows_at_end": backlog,
            "relay_catch_up_seconds": round(catch_up, 2),
            "cpu_ms_per_email": {k: round(v * 1000 / emails, 3) for k, v in cpu.items()},
            "wrk_cpu_seconds": round(wrk_cpu, 2),
        }

    out["single"] = api_run(single, 1)
    if batch is not None:
        out["batch"] = api_run(batch, 100)
    assert stack.nats is not None
    out["jetstream"] = baseline(groups, "jetstream", ["--nats", stack.nats.url], ("nats",), seconds, conns)
    out["postgres"] = baseline(groups, "postgres", ["--url", stack.db_url], ("postgres",), seconds, conns)
    return out


def baseline(
    groups: list[Group], kind: str, extra: list[str], servers: tuple[str, ...], seconds: float, concurrency: int
) -> dict[str, Any]:
    def go() -> tuple[dict[str, Any], float]:
        proc = spawn(
            [
                sys.executable,
                str(HERE / "baselines.py"),
                kind,
                *extra,
                "--seconds",
                str(seconds),
                "--concurrency",
                str(concurrency),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        before = children_cpu_seconds()
        out, err = proc.communicate(timeout=seconds + 120)
        cpu = children_cpu_seconds() - before
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} baseline failed:\n{err.decode()[-2000:]}")
        return json.loads(out.decode().strip().splitlines()[-1]), cpu

    (result, client_cpu), cpu = measured(groups, servers, go)
    ops = max(1, result["operations"])
    return {
        **result,
        "server_cpu_ms_per_op": {k: round(v * 1000 / ops, 3) for k, v in cpu.items()},
        "client_cpu_ms_per_op": round(client_cpu * 1000 / ops, 3),
    }


def summarize_accept(rounds: list[dict[str, Any]], startup: float) -> dict[str, Any]:
    def median(path: tuple[str, str]) -> float:
        values = [r[path[0]][path[1]] for r in rounds if path[0] in r]
        return round(statistics.median(values), 3) if values else 0.0

    single_rps = median(("single", "emails_per_second"))
    bare_rps = median(("bare", "requests_per_second"))
    api_cpu = [r["single"]["cpu_ms_per_email"]["api"] for r in rounds]
    out: dict[str, Any] = {
        "emails_per_second": single_rps,
        "bare_requests_per_second": bare_rps,
        "ratio_to_bare": round(single_rps / bare_rps, 3) if bare_rps else 0.0,
        "p50_ms": median(("single", "p50_ms")),
        "p99_ms": median(("single", "p99_ms")),
        "p999_ms": median(("single", "p999_ms")),
        "api_cpu_ms_per_email": round(statistics.median(api_cpu), 3),
        "bare_cpu_ms_per_request": median(("bare", "cpu_ms_per_request")),
        "jetstream_publishes_per_second": median(("jetstream", "per_second")),
        "postgres_commits_per_second": median(("postgres", "per_second")),
        "startup_seconds": round(startup, 2),
        "rounds": rounds,
    }
    if all("batch" in r for r in rounds):
        out["batch_emails_per_second"] = median(("batch", "emails_per_second"))
        out["batch_requests_per_second"] = median(("batch", "requests_per_second"))
        out["batch_p99_ms"] = median(("batch", "p99_ms"))
        out["batch_ratio_to_single"] = round(out["batch_emails_per_second"] / single_rps, 2) if single_rps else 0.0
        out["batch_api_cpu_ms_per_email"] = round(
            statistics.median(r["batch"]["cpu_ms_per_email"]["api"] for r in rounds), 3
        )
    return out


# ---------------------------------------------------------------------------------------------- pipeline


class Sampler:
    """Every half second: accepted and webhook counts, consumer pending (+ack pending), outbox rows; every
    2 s the memory (PSS) of each process group, whose peak is reported."""

    def __init__(self, stack: Stack, groups: list[Group], sent: Sent, receiver: Receiver) -> None:
        self.stack, self.groups, self.sent, self.receiver = stack, groups, sent, receiver
        self.samples: list[dict[str, Any]] = []
        self.memory_peak: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        assert self.stack.nats is not None
        nc = await nats.connect(self.stack.nats.url)
        js = nc.jetstream()
        schemas = [s for s in SERVICES]
        query = "SELECT " + ", ".join(f"(SELECT count(*) FROM {s}.outbox)" for s in schemas)
        try:
            async with await psycopg.AsyncConnection.connect(self.stack.db_url, autocommit=True) as conn:
                while True:
                    backlog: dict[str, int] = {}
                    for spec in CONSUMERS:
                        with contextlib.suppress(Exception):
                            info = await js.consumer_info(spec.stream, spec.durable)
                            backlog[spec.durable] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
                    with contextlib.suppress(Exception):
                        row = await (await conn.execute(query)).fetchone()  # type: ignore[arg-type]
                        for schema, count in zip(schemas, row or (), strict=False):
                            backlog[f"outbox:{schema}"] = int(count)
                    if len(self.samples) % 4 == 0:  # every 2 s: reading smaps of ~60 processes is not free
                        for g in self.groups:
                            self.memory_peak[g.name] = max(self.memory_peak.get(g.name, 0), g.memory_bytes())
                    self.samples.append(
                        {
                            "t": time.time(),
                            "accepted": len(self.sent.accepted),
                            "webhooks": len(self.receiver.arrived),
                            "backlog": backlog,
                        }
                    )
                    await asyncio.sleep(0.5)
        finally:
            await nc.close()

    def __enter__(self) -> Sampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def drain(sent: Sent, receiver: Receiver, idle_seconds: float) -> float:
    """Wait until every accepted email's webhook arrived, or none arrived for `idle_seconds`."""
    started = time.monotonic()
    last_count, last_change = -1, time.monotonic()
    while True:
        done = sum(1 for email_id in sent.accepted if email_id in receiver.arrived)
        if done >= len(sent.accepted):
            break
        if done != last_count:
            last_count, last_change = done, time.monotonic()
        elif time.monotonic() - last_change > idle_seconds:
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def pipeline_run(
    name: str,
    stack: Stack,
    groups: list[Group],
    receiver: Receiver,
    request: bytes,
    *,
    count: int,
    connections: int,
    rate: float | None,
    idle_seconds: float,
) -> dict[str, Any]:
    print(f"  pipeline {name}: {count} emails" + (f" at {rate:.0f}/s" if rate else " at full speed"), flush=True)
    receiver.arrived.clear()
    sent = Sent()
    api = httpx.URL(stack.url("api"))
    await asyncio.sleep(1.5)  # the previous run's backend stats flushed
    pg_before = await asyncio.to_thread(pg_activity, stack.db_url)
    meter = Meter(groups).start()
    t0 = time.time()
    with Sampler(stack, groups, sent, receiver) as sampler:
        send_seconds = await send_emails(
            api.host, api.port or 80, request, count=count, connections=connections, rate=rate, sent=sent
        )
        await drain(sent, receiver, idle_seconds)
    cpu = meter.stop()
    await asyncio.sleep(1.5)
    pg_after = await asyncio.to_thread(pg_activity, stack.db_url)
    return {
        "postgres": (pg_before, pg_after),
        "name": name,
        "t0": t0,
        "sent": sent,
        "arrived": dict(receiver.arrived),
        "send_seconds": send_seconds,
        "cpu": cpu,
        "samples": sampler.samples,
        "memory_peak": sampler.memory_peak,
        "rate": rate,
    }


def pipeline_report(run: dict[str, Any], emulator: dict[str, list[float]], groups: list[Group]) -> dict[str, Any]:
    sent: Sent = run["sent"]
    arrived: dict[str, float] = run["arrived"]
    accepted = sent.accepted
    delivered = [e for e in accepted if e in arrived]
    to_ses = [(emulator[e][0] - t) * 1000 for e, t in accepted.items() if e in emulator]
    to_hook = [(arrived[e] - t) * 1000 for e, t in accepted.items() if e in arrived]
    last = max(arrived[e] for e in delivered) if delivered else run["t0"]
    first = min(accepted.values()) if accepted else run["t0"]
    counted = {g.name for g in groups if g.counted}
    n = max(1, len(delivered))
    cpu_ms = {k: round(v * 1000 / n, 3) for k, v in run["cpu"].items()}
    return {
        "emails": len(accepted),
        "refused": run["sent"].refused,
        "accept_rate_per_second": round(len(accepted) / run["send_seconds"], 1) if run["send_seconds"] else 0,
        "emails_per_second": round(len(delivered) / (last - first), 1) if last > first else 0.0,
        "delivered": len(delivered),
        "lost": sum(1 for e in accepted if e not in emulator),
        "webhooks_missing": len(accepted) - len(delivered),
        "duplicated": sum(1 for e in accepted if len(emulator.get(e, ())) > 1),
        "to_ses_ms": {"p50": pct(to_ses, 0.5), "p99": pct(to_ses, 0.99), "max": round(max(to_ses, default=0), 1)},
        "to_webhook_ms": {
            "p50": pct(to_hook, 0.5),
            "p99": pct(to_hook, 0.99),
            "max": round(max(to_hook, default=0), 1),
        },
        "cpu_ms_per_email": cpu_ms,
        "cpu_ms_per_email_counted": round(sum(v for k, v in cpu_ms.items() if k in counted), 3),
        # Commits, and rows written and scans by schema, per delivered email (with the stack's
        # background work in the same window: pollers, gauges, the bench's own readings).
        "postgres_per_email": pg_activity_per_email(run["postgres"][0], run["postgres"][1], len(delivered)),
        "memory_peak_mb": {k: round(v / 2**20, 1) for k, v in run["memory_peak"].items()},
        "backlog_peak": {
            k: max((s["backlog"].get(k, 0) for s in run["samples"]), default=0)
            for k in sorted({k for s in run["samples"] for k in s["backlog"]})
        },
    }


def vacuum(stack: Stack) -> None:
    """Between two pipeline runs: the dead rows of the last one cleaned up and the statistics
    current before the next starts (with autovacuum looking every 5 s, its cleanup of a 3,000-email
    burst otherwise fell into the steady run's first seconds, a second-long stall on two cores)."""
    with psycopg.connect(stack.db_url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def emulator_sends(stack: Stack) -> dict[str, list[float]]:
    messages = httpx.get(stack.url("emulator") + "/_emulator/sent", params={"raw": "false"}, timeout=120).json()
    sends: dict[str, list[float]] = {}
    for m in messages["messages"]:
        email_id = m["tags"].get("mailroom_email_id")
        if email_id:
            ts = dt.datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00")).timestamp()
            sends.setdefault(email_id, []).append(ts)
    return sends


async def pipeline_async(bench: Bench, stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    receiver = await Receiver().start()
    try:
        tenant = await asyncio.to_thread(create_tenant, stack)
        await asyncio.to_thread(verified_domain, stack, tenant, DOMAIN)
        async with httpx.AsyncClient(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as client:
            hook = await client.post("/v1/webhooks", json={"url": receiver.url, "events": ["email.delivered"]})
            if hook.status_code != 201:
                raise RuntimeError(f"webhook endpoint refused: {hook.status_code} {hook.text}")
        groups = bench.groups(stack)
        idle_memory = {g.name: round(g.memory_bytes() / 2**20, 1) for g in groups}
        request = email_request("/v1/emails", tenant.live_key, json.dumps(email_body()).encode())
        kw = {"connections": args.connections, "idle_seconds": args.drain_seconds}
        warm = await pipeline_run("warm-up", stack, groups, receiver, request, count=200, rate=None, **kw)
        await asyncio.to_thread(vacuum, stack)
        full = await pipeline_run("full speed", stack, groups, receiver, request, count=args.emails, rate=None, **kw)
        await asyncio.to_thread(vacuum, stack)
        sustained = pipeline_report(full, {}, groups)["emails_per_second"] or 10.0
        rate = max(1.0, sustained / 2)
        steady = await pipeline_run(
            "steady", stack, groups, receiver, request, count=max(50, int(rate * args.steady_seconds)), rate=rate, **kw
        )
    finally:
        await receiver.stop()
    sends = await asyncio.to_thread(emulator_sends, stack)
    phases = {}
    for run in (warm, full, steady):
        phases[run["name"]] = pipeline_report(run, sends, groups)
    charts = [
        {
            "name": run["name"],
            "t0": run["t0"],
            "accepted_times": list(run["sent"].accepted.values()),
            "webhook_times": list(run["arrived"].values()),
            "latency_points": [
                (t, (run["arrived"][e] - t) * 1000) for e, t in run["sent"].accepted.items() if e in run["arrived"]
            ],
            "samples": run["samples"],
        }
        for run in (full, steady)
    ]
    return {
        "phases": phases,
        "idle_memory_mb": idle_memory,
        "charts": charts,
        "webhook_redeliveries": receiver.redelivered,
    }


def pipeline_phase(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    env = {
        "api": {"MAILROOM_API_PROCESSES": str(args.api_processes), "MAILROOM_API_DEFAULT_RATE_LIMIT": "10000000"},
        "emulator": {
            "SES_EMULATOR_MAX_SENT_KEPT": str(args.emails * 2 + 10000),
            "SES_EMULATOR_MAX_24_HOUR_SEND": "100000000",
        },
    }
    with bench.stack("pipeline", env) as (stack, startup):
        out = asyncio.run(pipeline_async(bench, stack, args))
    full, steady = out["phases"]["full speed"], out["phases"]["steady"]
    return {
        "emails_per_second": full["emails_per_second"],
        "p99_ms": steady["to_webhook_ms"]["p99"],
        "p50_ms": steady["to_webhook_ms"]["p50"],
        "lost": full["lost"] + steady["lost"],
        "duplicated": full["duplicated"] + steady["duplicated"],
        "cpu_ms_per_email": full["cpu_ms_per_email_counted"],
        "startup_seconds": round(startup, 2),
        **out,
    }


# ---------------------------------------------------------------------------------------------- webhooks


HANG_SECONDS = 15.0


def webhook_attempts(db_url: str, endpoint_id: str) -> dict[str, Any]:
    """The hanging endpoint's stored attempts by outcome, and its deliveries by status."""
    with psycopg.connect(db_url) as conn:
        errors = conn.execute(
            "SELECT coalesce(error, 'ok'), count(*) FROM webhooks.delivery_attempts WHERE endpoint_id = %s"
            " GROUP BY 1 ORDER BY 1",
            (endpoint_id,),
        ).fetchall()
        statuses = conn.execute(
            "SELECT status, count(*) FROM webhooks.deliveries WHERE endpoint_id = %s GROUP BY 1 ORDER BY 1",
            (endpoint_id,),
        ).fetchall()
    return {
        "attempts_by_outcome": {str(k): int(v) for k, v in errors},
        "deliveries_by_status": {str(k): int(v) for k, v in statuses},
    }


async def webhooks_run(
    bench: Bench, stack: Stack, args: argparse.Namespace, *, hanging: bool
) -> tuple[dict[str, Any], float]:
    """One tenant, a healthy endpoint (and, given `hanging`, a hanging one) for `email.delivered`;
    `--webhooks-events` test-mode emails at `--webhooks-rate`, until the healthy endpoint has them all."""
    receiver = await IsolationReceiver(hang_seconds=HANG_SECONDS).start()
    try:
        tenant = await asyncio.to_thread(create_tenant, stack)
        ids: dict[str, str] = {}
        async with httpx.AsyncClient(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as client:
            for name in ("hanging", "healthy") if hanging else ("healthy",):
                hook = await client.post(
                    "/v1/webhooks", json={"url": receiver.url(name), "events": ["email.delivered"]}
                )
                if hook.status_code != 201:
                    raise RuntimeError(f"webhook endpoint refused: {hook.status_code} {hook.text}")
                ids[name] = hook.json()["id"]
        groups = bench.groups(stack)
        # Test mode: the simulator delivers every email (no SES emulator); each email's one
        # email.delivered event fans out to every endpoint of the tenant.
        request = email_request("/v1/emails", tenant.test_key, json.dumps(email_body()).encode())
        count, rate = args.webhooks_events, args.webhooks_rate
        print(
            f"  webhooks: {count} emails at {rate:.0f}/s, "
            + (f"endpoints healthy and hanging {HANG_SECONDS:.0f} s" if hanging else "the healthy endpoint alone"),
            flush=True,
        )
        sent = Sent()
        api = httpx.URL(stack.url("api"))
        meter = Meter(groups).start()
        t0, wall0 = time.monotonic(), time.time()
        await send_emails(api.host, api.port or 80, request, count=count, connections=8, rate=rate, sent=sent)
        last_count, last_change = -1, time.monotonic()
        while len(receiver.healthy) < len(sent.accepted):
            if len(receiver.healthy) != last_count:
                last_count, last_change = len(receiver.healthy), time.monotonic()
            elif time.monotonic() - last_change > args.drain_seconds:
                break
            await asyncio.sleep(0.2)
        seconds = time.monotonic() - t0
        cpu = meter.stop()
        # Read while the receiver still serves: stopping it fails the attempts in flight.
        stored = await asyncio.to_thread(webhook_attempts, stack.db_url, ids["hanging"]) if hanging else {}
        hanging_seen = receiver.hanging_attempts
        hanging_max = receiver.hanging_max_active
    finally:
        await receiver.stop()
    lag = [(arrived - created) * 1000 for created, arrived in receiver.healthy.values()]
    to_hook = [(receiver.healthy[e][1] - t) * 1000 for e, t in sent.accepted.items() if e in receiver.healthy]
    counted = {g.name for g in groups if g.counted}
    n = max(1, len(receiver.healthy))
    # The worst lag of each second of the run (by receipt), to see whether the tail lines up with
    # the hanging endpoint's attempts (their arrival seconds are listed too).
    worst: dict[int, float] = {}
    for created, arrived in receiver.healthy.values():
        second = int(arrived - wall0)
        worst[second] = max(worst.get(second, 0.0), round((arrived - created) * 1000, 1))
    out: dict[str, Any] = {
        "events": len(sent.accepted),
        "refused": sent.refused,
        "seconds": round(seconds, 1),
        "healthy": {
            "received": len(receiver.healthy),
            "missing": len(sent.accepted) - sum(1 for e in sent.accepted if e in receiver.healthy),
            "repeats": receiver.healthy_repeats,
            "lag_ms": {"p50": pct(lag, 0.5), "p99": pct(lag, 0.99), "max": round(max(lag, default=0), 1)},
            "accept_to_receipt_ms": {
                "p50": pct(to_hook, 0.5),
                "p99": pct(to_hook, 0.99),
                "max": round(max(to_hook, default=0), 1),
            },
        },
        "cpu_ms_per_email": {k: round(v * 1000 / n, 3) for k, v in cpu.items()},
        "cpu_ms_per_email_counted": round(sum(v * 1000 / n for k, v in cpu.items() if k in counted), 3),
    }
    if hanging:
        out["hanging"] = {
            "attempts_received": hanging_seen,
            "max_concurrent": hanging_max,
            "attempt_seconds": [round(t - wall0, 1) for t in receiver.hanging_at],
            **stored,
        }
    out["healthy"]["worst_lag_ms_by_second"] = [worst.get(i, 0.0) for i in range(max(worst, default=-1) + 1)]
    return out, os.getloadavg()[0]


async def webhooks_async(bench: Bench, stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    # The control first, on the same stack: the healthy endpoint's lag without a hanging neighbour.
    control, control_load = await webhooks_run(bench, stack, args, hanging=False)
    measured, load = await webhooks_run(bench, stack, args, hanging=True)
    return {
        **measured,
        "rate_per_second": args.webhooks_rate,
        "hang_seconds": HANG_SECONDS,
        "load_average_1m": round(load, 2),
        "control": {**control, "load_average_1m": round(control_load, 2)},
    }


def webhooks_phase(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    # The devstack allow-lists loopback for the dispatcher's SSRF guard (MAILROOM_WEBHOOKS_ALLOWED_CIDRS
    # 127.0.0.0/8, ALLOW_HTTP), as for the tests; every other webhooks setting is the default
    # (15 s per attempt, 4 in flight per endpoint, 64 per process).
    env = {"api": {"MAILROOM_API_PROCESSES": str(args.api_processes), "MAILROOM_API_DEFAULT_RATE_LIMIT": "10000000"}}
    with bench.stack("webhooks", env) as (stack, startup):
        out = asyncio.run(webhooks_async(bench, stack, args))
    return {**out, "startup_seconds": round(startup, 2)}


def stats_phase(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    with bench.stack("stats") as (stack, startup):
        tenant = create_tenant(stack)
        out = stats_run(stack, tenant.headers(), tenant.id, args.stats_emails)
    return {**out, "startup_seconds": round(startup, 2)}


# ---------------------------------------------------------------------------------------------- report


def table(result: dict[str, Any]) -> str:
    lines = [
        f"Mailroom bench, {result['date']}, {result['machine']['cores']} cores, commit {result['commit']}"
        + (" (quick)" if result["quick"] else "")
    ]
    a = result.get("accept")
    if a:
        lines += [
            "accept path (POST /v1/emails, other services paused)",
            f"  emails/s {a['emails_per_second']:>9}   bare Litestar {a['bare_requests_per_second']} req/s"
            f"   ratio {a['ratio_to_bare']:.2f} (target >= 0.60)",
            f"  p50 {a['p50_ms']} ms  p99 {a['p99_ms']} ms (target <= 25)  p99.9 {a['p999_ms']} ms",
            f"  API CPU/email {a['api_cpu_ms_per_email']} ms (target <= 0.25)   bare CPU/request "
            f"{a['bare_cpu_ms_per_request']} ms",
            f"  baselines: JetStream publish+ack {a['jetstream_publishes_per_second']}/s,"
            f" Postgres insert+commit {a['postgres_commits_per_second']}/s",
        ]
        if "batch_emails_per_second" in a:
            lines.append(
                f"  batch of 100 (POST /v1/emails/batch): {a['batch_emails_per_second']} emails/s"
                f" ({a['batch_requests_per_second']} req/s, p99 {a['batch_p99_ms']} ms),"
                f" {a['batch_ratio_to_single']}x singles; API CPU/email {a['batch_api_cpu_ms_per_email']} ms"
            )
    p = result.get("pipeline")
    if p:
        lines.append("pipeline (API -> sender -> SES emulator -> SNS -> events -> webhooks)")
        for name, ph in p["phases"].items():
            lines.append(
                f"  {name:<10} {ph['emails']:>6} emails  {ph['emails_per_second']:>7}/s  to SES p50/p99 "
                f"{ph['to_ses_ms']['p50']}/{ph['to_ses_ms']['p99']} ms  to webhook p50/p99/max "
                f"{ph['to_webhook_ms']['p50']}/{ph['to_webhook_ms']['p99']}/{ph['to_webhook_ms']['max']} ms"
                f"  lost {ph['lost']} dup {ph['duplicated']}  CPU {ph['cpu_ms_per_email_counted']} ms/email"
            )
        full = p["phases"]["full speed"]["cpu_ms_per_email"]
        lines.append("  CPU ms/email at full speed: " + ", ".join(f"{k} {v}" for k, v in full.items()))
        pgs = p["phases"]["full speed"].get("postgres_per_email")
        if pgs:
            lines.append(
                f"  Postgres per email at full speed: {pgs['commits']} commits; rows written / index scans by schema: "
                + ", ".join(f"{k} {v['rows_written']}/{v['index_scans']}" for k, v in pgs["schemas"].items())
            )
        lines.append("  targets: >= 1000 emails/s, p99 <= 500 ms at half rate, <= 2 ms CPU/email, 0 lost, 0 dup")
        lines.append(f"  idle memory (PSS) MB: {p['idle_memory_mb']}")
    w = result.get("webhooks")
    if w:
        hl, hg = w["healthy"], w["hanging"]
        lines += [
            f"webhooks isolation ({w['events']} events at {w['rate_per_second']:.0f}/s to a healthy endpoint and one"
            f" hanging {w['hang_seconds']:.0f} s)",
            f"  healthy: {hl['received']} received, {hl['missing']} missing, {hl['repeats']} repeats;"
            f" lag created_at -> receipt p50/p99/max {hl['lag_ms']['p50']}/{hl['lag_ms']['p99']}/"
            f"{hl['lag_ms']['max']} ms (target p99 < 1000)",
            f"  hanging: {hg['attempts_received']} attempts received (at most {hg['max_concurrent']} open at once),"
            f" stored {hg['attempts_by_outcome']}, deliveries {hg['deliveries_by_status']}",
            f"  control (healthy endpoint alone, same stack, just before): lag p50/p99/max"
            f" {w['control']['healthy']['lag_ms']['p50']}/{w['control']['healthy']['lag_ms']['p99']}/"
            f"{w['control']['healthy']['lag_ms']['max']} ms",
            f"  load average (1 min) at the end: {w['load_average_1m']} (control {w['control']['load_average_1m']})",
        ]
    st = result.get("stats")
    if st:
        lines.append(f"stats (GET /v1/stats, {st['emails']} emails in {st['rollup_rows']} rollup rows, 30 days)")
        for name, q in st["queries"].items():
            lines.append(f"  {name:<16} p50 {q['p50_ms']} ms  p99 {q['p99_ms']} ms  ({q['buckets']} buckets)")
        lines.append(f"  worst p99 {st['worst_p99_ms']} ms (target < 50)")
    lines.append(f"startup (fresh database, to ready): {result.get('startup_seconds')} s (target <= 5)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--quick", action="store_true", help="short runs: a check, not a measurement to quote")
    parser.add_argument("--emails", type=int, help="pipeline emails at full speed (default 60000; quick 3000)")
    parser.add_argument("--accept-seconds", type=float, help="each wrk run (default 30; quick 8)")
    parser.add_argument("--rounds", type=int, help="interleaved accept rounds (default 2; quick 1)")
    parser.add_argument("--steady-seconds", type=float, help="steady pipeline run (default 60; quick 15)")
    parser.add_argument("--drain-seconds", type=float, default=60.0, help="give up waiting after this long idle")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--api-processes",
        type=int,
        default=1,
        help="MAILROOM_API_PROCESSES of the API (and the bare baseline's copies)",
    )
    parser.add_argument(
        "--webhooks-events", type=int, help="webhooks isolation: emails, one event each (default 1000; quick 200)"
    )
    parser.add_argument(
        "--webhooks-rate", type=float, help="webhooks isolation: emails per second (default 20; quick 10: 20 s)"
    )
    parser.add_argument("--only", choices=["accept", "pipeline", "webhooks", "stats"])
    parser.add_argument("--stats-emails", type=int, default=100_000, help="emails behind the stats phase's rollups")
    parser.add_argument("--database-url", help="an existing Postgres to use instead of a private pgserver")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--keep", action="store_true", help="keep the stacks' directories (logs) and say where")
    args = parser.parse_args()
    args.emails = args.emails or (3000 if args.quick else 60000)
    args.accept_seconds = args.accept_seconds or (8.0 if args.quick else 30.0)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.steady_seconds = args.steady_seconds or (15.0 if args.quick else 60.0)
    args.webhooks_events = args.webhooks_events or (200 if args.quick else 1000)
    args.webhooks_rate = args.webhooks_rate or (10.0 if args.quick else 20.0)
    if args.only in (None, "accept") and shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (make bench installs it with apt-get; or: apt-get install wrk)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit.strip(),
        "quick": args.quick,
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    base = Path(tempfile.mkdtemp(prefix="mailroom-bench-"))
    bench = Bench(base, args.database_url)
    try:
        if args.only in (None, "accept"):
            print("accept path ...", flush=True)
            result["accept"] = accept_phase(bench, args)
            result["startup_seconds"] = result["accept"]["startup_seconds"]
        if args.only in (None, "pipeline"):
            print("pipeline ...", flush=True)
            result["pipeline"] = pipeline_phase(bench, args)
            result["startup_seconds"] = result["pipeline"]["startup_seconds"]
        if args.only in (None, "stats"):
            print("stats ...", flush=True)
            result["stats"] = stats_phase(bench, args)
            result.setdefault("startup_seconds", result["stats"]["startup_seconds"])
        if args.only in (None, "webhooks"):
            print("webhooks isolation ...", flush=True)
            result["webhooks"] = webhooks_phase(bench, args)
            result.setdefault("startup_seconds", result["webhooks"]["startup_seconds"])
    finally:
        bench.postgres.stop()
        if args.keep:
            print(f"kept {base} (logs under */logs/)")
        else:
            shutil.rmtree(base, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    charts = result.get("pipeline", {}).pop("charts", None)
    if charts:
        draw(args.out / "latest.png", charts, f"Mailroom pipeline {result['date']} ({result['commit']})")
    (args.out / "latest.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(table(result))
    print(f"\nwrote {args.out / 'latest.json'}" + (f" and {args.out / 'latest.png'}" if charts else ""))


if __name__ == "__main__":
    main()
