"""The bench's own measuring parts, so `make bench` cannot rot unnoticed: its load generator and webhook
receiver speak real HTTP to each other, its CPU accounting sees a busy child, and the wrk script parses."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import psutil
import psycopg
from mailroom_devstack.infra import Postgres

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from loadgen import Connection, Receiver  # noqa: E402
from procs import Group, Meter, children_cpu_seconds  # noqa: E402
from run import html_2kb, pct, pg_activity, pg_activity_per_email  # noqa: E402


def _hook(webhook_id: str, type_: str, email_id: str) -> bytes:
    body = msgspec.json.encode({"id": webhook_id, "type": type_, "data": {"email_id": email_id}})
    head = f"POST /hooks HTTP/1.1\r\nHost: x\r\nwebhook-id: {webhook_id}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def test_receiver_records_first_arrival_and_counts_redeliveries() -> None:
    receiver = await Receiver().start()
    port = int(receiver.url.split(":")[2].split("/")[0])
    conn = Connection("127.0.0.1", port)
    try:
        for data in (
            _hook("evt_1", "email.delivered", "msg_a"),
            _hook("evt_1", "email.delivered", "msg_a"),  # the same webhook-id again: a redelivery
            _hook("evt_2", "email.sent", "msg_a"),
            _hook("evt_3", "email.delivered", "msg_b"),
        ):
            status, body = await conn.request(data)
            assert (status, body) == (200, b"")
    finally:
        conn.close()
        await receiver.stop()
    assert sorted(receiver.arrived) == ["msg_a", "msg_b"]
    assert receiver.redelivered == 1 and receiver.other == 1


def test_cpu_of_a_busy_child_is_counted() -> None:
    before = children_cpu_seconds()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\ntime.sleep(1)",
        ]
    )
    group = Group("child", lambda: [child.pid])
    meter = Meter([group]).start()
    time.sleep(0.8)
    busy = meter.stop()["child"]
    child.wait()
    assert busy >= 0.3, busy
    assert children_cpu_seconds() - before >= 0.4
    assert group.memory_bytes() == 0  # gone: nothing left to count


def test_a_process_that_starts_and_exits_inside_the_window_is_counted_once(tmp_path: Path) -> None:
    """A root whose short-lived child burns 0.6 s of CPU and exits between the meter's two readings
    (the shape of a baseline client's Postgres backends): counted, through the root's waited-for
    children's times, and once — read while alive and after it has gone, it is not counted twice."""
    burnt = tmp_path / "burnt"
    child = (
        "import pathlib, sys, time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.6: pass\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "time.sleep(0.5)\n"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "time.sleep(0.3)\n"
            f"subprocess.run([sys.executable, '-c', {child!r}, {str(burnt)!r}])\n"
            "time.sleep(30)",
        ]
    )
    try:
        group = Group("tree", lambda: [parent.pid])
        meter = Meter([group]).start()
        deadline = time.monotonic() + 20
        while not burnt.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = group.cpu_seconds() - meter._start["tree"]  # the child alive, its burn done
        while psutil.Process(parent.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not psutil.Process(parent.pid).children()
        total = meter.stop()["tree"]  # the child gone, waited for by the parent
        assert alive >= 0.55, alive
        assert 0.55 <= total < alive + 0.3, (alive, total)
    finally:
        parent.kill()
        parent.wait()


def test_helpers() -> None:
    assert pct([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0 and pct([], 0.99) == 0.0
    assert 1900 < len(html_2kb()) <= 2048


def test_wrk_script_reports_a_json_line() -> None:
    """The line wrk's `done()` prints is JSON with the keys bench/run.py reads (wrk is not on CI)."""
    script = (BENCH / "post.lua").read_text()
    template = script[script.index("'BENCH_JSON ") + len("'BENCH_JSON ") : script.index("\\n'")]
    template = template.replace("' ..\n    '", "")
    sample = template.replace("%d", "1").replace("%.1f", "1.5")
    assert set(json.loads(sample)) >= {"requests", "p99_us", "p999_us", "status_errors", "duration_us"}


def test_postgres_activity_per_email_counts_commits_and_rows_by_schema(postgres: Postgres) -> None:
    name = f"bench_pg_{time.time_ns()}"
    url = postgres.create_database(name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA svc; CREATE TABLE svc.t (id int PRIMARY KEY, v int)")
        before = pg_activity(url)
        with psycopg.connect(url) as conn:  # its stats are flushed when it closes
            for i in range(10):
                conn.execute("INSERT INTO svc.t VALUES (%s, 0)", (i,))
                conn.commit()
            conn.execute("UPDATE svc.t SET v = 1 WHERE id < 4")
            conn.commit()
        deadline = time.monotonic() + 10
        while (after := pg_activity(url))["schemas"]["svc"]["inserted"] < 10 and time.monotonic() < deadline:
            time.sleep(0.2)
        per = pg_activity_per_email(before, after, 2)
        assert per["schemas"]["svc"]["rows_written"] == 7.0  # (10 inserted + 4 updated) / 2
        assert per["commits"] >= 5.5  # 11 commits / 2, and the readings' own
    finally:
        postgres.drop_database(name)


def test_the_receiver_stops_without_a_traceback_for_a_keep_alive_connection() -> None:
    """The webhooks dispatcher keeps its connection open: stopping the receiver must end it, or the
    handler is cancelled when the loop ends and Python 3.11 prints a traceback into the bench's output."""
    script = f"""
import asyncio, sys
sys.path.insert(0, {str(BENCH)!r})
from loadgen import Receiver

async def main():
    r = await Receiver().start()
    port = int(r.url.split(":")[2].split("/")[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /hooks HTTP/1.1\\r\\nHost: x\\r\\nwebhook-id: a\\r\\nContent-Length: 2\\r\\n\\r\\n{{}}")
    await writer.drain()
    await reader.readuntil(b"\\r\\n\\r\\n")
    await r.stop()
    print("received", r.other)

asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == "received 1", done.stderr
    assert "Traceback" not in done.stderr, done.stderr
