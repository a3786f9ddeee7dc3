"""The real process: `migrate`, then `run`: ready, answering RPC, stopping cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import httpx
import nats
from mailroom_contracts import subjects
from mailroom_contracts.rpc import ListWebhooksReply, ListWebhooksRequest
from mailroom_devstack.infra import free_port
from mailroom_kit import rpc


def service_env(port: int, webhooks_db: str, js_ready: str, h: Any) -> dict[str, str]:
    return {
        **os.environ,
        "MAILROOM_DATABASE_URL": webhooks_db,
        "MAILROOM_NATS_URL": js_ready,
        "MAILROOM_WEBHOOKS_PORT": str(port),
        "MAILROOM_WEBHOOKS_SECRET_KEY": h.FERNET_KEY,
        "MAILROOM_LOG_FORMAT": "json",
    }


def migrate_and_run(env: dict[str, str]) -> subprocess.Popen[bytes]:
    migrate = subprocess.run(
        [sys.executable, "-m", "mailroom_webhooks", "migrate"], env=env, capture_output=True, timeout=60
    )
    assert migrate.returncode == 0, migrate.stderr.decode()
    return subprocess.Popen(
        [sys.executable, "-m", "mailroom_webhooks", "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


async def test_process_starts_ready_and_stops(webhooks_db: str, js_ready: str, h: Any) -> None:
    port = free_port()
    env = service_env(port, webhooks_db, js_ready, h)
    proc = migrate_and_run(env)
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(100):
                try:
                    ready = await client.get(f"http://127.0.0.1:{port}/ready")
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            assert ready.status_code == 200 and ready.json()["checks"] == {
                "nats": True,
                "postgres": True,
                "migrations": True,
            }
        nc = await nats.connect(js_ready)
        reply = await rpc.request(
            nc, subjects.RPC_WEBHOOKS_LIST, ListWebhooksRequest(tenant_id="ten_proc"), ListWebhooksReply
        )
        assert reply.error is None
        await nc.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert h.FERNET_KEY.encode() not in err


def test_a_taken_port_stops_the_process_with_exit_code_1(webhooks_db: str, js_ready: str, h: Any) -> None:
    """uvicorn answers a port it cannot bind with `sys.exit(3)` inside its task; the process used to
    hang there for ever (alive, listening nowhere), so an orchestrator saw a pod that never got ready
    rather than one that crashed — and a test stack waited out its 90 s."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = service_env(taken.getsockname()[1], webhooks_db, js_ready, h)
        proc = migrate_and_run(env)
        try:
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 1, err.decode()[-2000:]
    assert b"address already in use" in err and b'"event":"service.stopped"' in err
