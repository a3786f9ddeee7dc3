"""kit `rpc.serve` labels the errors it answers itself with their class (`RpcError.kind`), over a
real nats-server: undecodable → validation, a Postgres outage the handler let escape → transient,
any other exception → internal with no detail."""

from __future__ import annotations

import secrets

import nats
import psycopg
from mailroom_contracts import decode
from mailroom_contracts.rpc import GetWebhookRequest, RpcError, WebhookReply
from mailroom_kit import rpc
from mailroom_kit.metrics import RPC_REQUESTS


def outcome_count(subject: str, outcome: str) -> float:
    return RPC_REQUESTS.labels(subject=subject, outcome=outcome)._value.get()


async def ask(nc: nats.NATS, subject: str) -> WebhookReply:
    return await rpc.request(nc, subject, GetWebhookRequest(tenant_id="ten_a", webhook_id="wh_x"), WebhookReply)


async def test_errors_serve_answers_itself_carry_their_class(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    base = f"rpc.kinds.{secrets.token_hex(3)}"

    async def crashes(req: GetWebhookRequest) -> WebhookReply:
        raise RuntimeError(f"secret detail for {req.tenant_id}")

    async def database_down(req: GetWebhookRequest) -> WebhookReply:
        # A real connection refusal: nothing listens on port 1.
        await psycopg.AsyncConnection.connect("postgresql://postgres@127.0.0.1:1/x", connect_timeout=2)
        return WebhookReply()

    async def answers(req: GetWebhookRequest) -> WebhookReply:
        return WebhookReply(error=RpcError(code="not_found", message="webhook not found"))

    for name, handler in (("crash", crashes), ("down", database_down), ("ok", answers)):
        await rpc.serve(nc, f"{base}.{name}", GetWebhookRequest, handler, queue="q")
    await nc.flush()

    crashed = await ask(nc, f"{base}.crash")
    assert crashed.error == RpcError(code="internal", message="internal error", kind="internal")
    assert outcome_count(f"{base}.crash", "internal") == 1

    down = await ask(nc, f"{base}.down")
    assert down.error is not None
    assert (down.error.code, down.error.kind, down.error.param) == ("unavailable", "transient", None)
    assert "127.0.0.1" not in down.error.message  # no connection detail leaks
    assert outcome_count(f"{base}.down", "unavailable") == 1

    undecodable = await nc.request(f"{base}.ok", b'{"tenant_id": 1, "webhook_id": "wh_x"}', timeout=5)
    error = decode(undecodable.data, WebhookReply).error
    assert error is not None and (error.code, error.kind) == ("validation_error", "validation")
    assert outcome_count(f"{base}.ok", "bad_request") == 1

    # A handler's own reply passes through unchanged (kind None: an older responder).
    passed = await ask(nc, f"{base}.ok")
    assert passed.error == RpcError(code="not_found", message="webhook not found")
    await nc.close()
