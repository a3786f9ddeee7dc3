"""issue 23, the operator's view of the daily-quota hold: a real sender process against the SES
emulator whose Max24HourSend leaves room for 2 more sends. Of 5 live transactional emails, 2 go out
and 3 are held; the sender's `GET /status` says the transactional stream is held for the daily
quota with 3 emails in its queue, and /metrics says the same. Once the quota is raised, the held
ones go out (each once) and the view clears."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import httpx
from mailroom_devstack.infra import NatsServer
from mailroom_ses_emulator import EmulatorServer
from nats.js import JetStreamContext

from .conftest import queued, sent_messages
from .test_end_to_end import SenderProcess, js, own_nats, publish  # noqa: F401  (fixtures)


async def _until(check: Any, timeout: float, what: str) -> Any:
    async def loop() -> Any:
        while True:
            got = check()
            if got:
                return got
            await asyncio.sleep(0.25)

    try:
        return await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out: {what}") from None


async def test_operator_sees_the_daily_quota_hold_and_it_clears(
    sender_db: str,
    own_nats: NatsServer,  # noqa: F811
    js: JetStreamContext,  # noqa: F811
    emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    already = httpx.get(f"{emulator.url}/_emulator/send-times").json()["count"]
    httpx.put(
        f"{emulator.url}/_emulator/send-quota", json={"MaxSendRate": 200, "Max24HourSend": already + 2}
    ).raise_for_status()
    sender = SenderProcess(
        database_url=sender_db,
        nats_url=own_nats.url,
        ses_url=emulator.url,
        log_path=tmp_path / "s.log",
        MAILROOM_SENDER_SEND_QUOTA_REFRESH_SECONDS="1",
        MAILROOM_SENDER_DAILY_QUOTA_RECHECK_SECONDS="1",
        MAILROOM_METRICS_INTERVAL_SECONDS="1",
    )
    ops = f"http://127.0.0.1:{sender.port}"
    try:
        sender.start()
        emails = [queued(to=[f"daily{i}@example.org"]) for i in range(5)]
        ids = {e.email_id for e in emails}
        for ev in emails:
            await publish(js, ev)

        def sent_ids() -> list[str]:
            return [
                m["tags"].get("mailroom_email_id")
                for m in sent_messages(emulator)
                if m["tags"].get("mailroom_email_id") in ids
            ]

        def held_view() -> dict[str, Any] | None:
            st = httpx.get(f"{ops}/status", timeout=5).json()
            queue = st["queue"]
            held = queue["waiting"] + queue["due"]
            return st if st["daily_quota_holding"]["transactional"] and held == 3 else None

        status = await _until(held_view, 30, "the status view shows the daily-quota hold")
        assert len(sent_ids()) == 2
        assert status["queue"]["tenant_paused"] == 0
        assert status["send_quota"]["max_24_hour_send"] == already + 2
        assert httpx.get(f"{ops}/ready", timeout=5).status_code == 200  # holding is not a fault

        def metrics_show_it() -> bool:
            text = httpx.get(f"{ops}/metrics", timeout=5).text
            return (
                'mailroom_sender_daily_quota_holding{stream="transactional"} 1.0' in text
                and 'mailroom_sender_queue_emails{reason="waiting"}' in text
            )

        await _until(metrics_show_it, 15, "metrics show the hold")

        httpx.put(f"{emulator.url}/_emulator/send-quota", json={"Max24HourSend": 50000}).raise_for_status()
        await _until(lambda: len(sent_ids()) == 5, 30, "held emails sent once the quota is raised")

        def cleared() -> bool:
            st = httpx.get(f"{ops}/status", timeout=5).json()
            return not st["daily_quota_holding"]["transactional"] and st["queue"] == {
                "tenant_paused": 0,
                "waiting": 0,
                "due": 0,
            }

        await _until(cleared, 15, "the view clears")
        await asyncio.sleep(1.0)
    finally:
        sender.kill()
        httpx.put(f"{emulator.url}/_emulator/send-quota", json={"MaxSendRate": 200, "Max24HourSend": 50000})
    assert all(n == 1 for n in collections.Counter(sent_ids()).values())
    assert set(sent_ids()) == ids
