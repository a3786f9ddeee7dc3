"""issue 23: `GET /admin/v1/sending` and `mailroom admin sending`, the operator's view of the sending
governor, asked of the sender over NATS request/reply (`mailroom.rpc.sender.status`, queue group:
any replica answers from the sender's database; the sender's own test drives the real responder).
Here a kit responder (`rpc.serve`, as the sender serves it) answers what a sender holding the
transactional stream for the daily quota answers; the route and the CLI show it. No sender → 503
`unavailable` (route) and exit 1 (CLI); no or a wrong operator token → 401."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from api_testkit import OPERATOR_TOKEN, bearer
from mailroom_contracts import subjects
from mailroom_contracts.rpc import SendingStatusReply, SendingStatusRequest, SendingStream, SendingTenant
from mailroom_kit import rpc
from mailroom_kit.runtime import Runtime

OP = bearer(OPERATOR_TOKEN)
AT = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)

HOLDING = SendingStatusReply(
    max_send_rate=14.0,
    max_24_hour_send=200.0,
    sent_last_24_hours=200.0,
    refreshed_at=AT,
    transactional_reserve=0.5,
    broadcast_hold_share=0.95,
    streams=[
        SendingStream(stream="transactional", held=True, reason="daily_quota", waiting=3),
        SendingStream(stream="broadcast", held=True, reason="daily_quota", waiting=0),
    ],
    tenants=[
        SendingTenant(tenant_id="ten_busy", held={"queued": 3}),
        SendingTenant(tenant_id="ten_paused", held={"tenant_paused": 2}),
    ],
)


@pytest.fixture
async def sender_answers(runtime: Runtime) -> AsyncIterator[list[SendingStatusRequest]]:
    asked: list[SendingStatusRequest] = []

    async def status(req: SendingStatusRequest) -> SendingStatusReply:
        asked.append(req)
        return HOLDING

    sub = await rpc.serve(runtime.nc, subjects.RPC_SENDER_STATUS, SendingStatusRequest, status, queue="sender")
    await runtime.nc.flush()
    yield asked
    await sub.unsubscribe()
    await runtime.nc.flush()


async def cli(nats_url: str, *args: str) -> tuple[int, str, str]:
    """The console script, without blocking this loop (the responder above runs on it)."""
    env = {**os.environ, "MAILROOM_NATS_URL": nats_url, "MAILROOM_API_RPC_TIMEOUT_SECONDS": "2"}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "mailroom"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_operator_sees_what_the_sender_holds(
    sender_answers: list[SendingStatusRequest], client: httpx.AsyncClient, module_nats: str
) -> None:
    resp = await client.get("/admin/v1/sending", headers=OP)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "send_quota": {
            "max_send_rate": 14.0,
            "max_24_hour_send": 200.0,
            "sent_last_24_hours": 200.0,
            "refreshed_at": "2026-12-02T18:00:00Z",
        },
        "transactional_reserve": 0.5,
        "broadcast_hold_share": 0.95,
        "streams": [
            {"stream": "transactional", "held": True, "reason": "daily_quota", "waiting": 3},
            {"stream": "broadcast", "held": True, "reason": "daily_quota", "waiting": 0},
        ],
        "tenants": [
            {"tenant_id": "ten_busy", "held": {"queued": 3}},
            {"tenant_id": "ten_paused", "held": {"tenant_paused": 2}},
        ],
    }
    assert len(sender_answers) == 1

    code, out, err = await cli(module_nats, "admin", "sending")
    assert code == 0, err
    assert "max_24_hour_send=200" in out and "sent_last_24_hours=200" in out
    assert "transactional\theld (daily_quota)\twaiting=3" in out
    assert "ten_paused\ttenant_paused=2" in out
    code, out, err = await cli(module_nats, "admin", "sending", "--json")
    assert code == 0, err
    assert json.loads(out) == resp.json()


async def test_no_sender_is_503_and_no_operator_token_is_401(client: httpx.AsyncClient, module_nats: str) -> None:
    resp = await client.get("/admin/v1/sending", headers=OP)
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"] == "unavailable" and resp.headers.get("retry-after")

    code, _out, err = await cli(module_nats, "admin", "sending")
    assert code == 1 and "unavailable" in err

    assert (await client.get("/admin/v1/sending")).status_code == 401
    wrong = await client.get("/admin/v1/sending", headers=bearer("op-" + "y" * 40))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_api_key"
