"""The accept path's shape: the body is decoded once (by the guard; the handler gets that very
Struct), the send handler resolves no dependencies (Litestar resolves several in an anyio
TaskGroup per request), and a send is one statement (an Idempotency-Key's replay adds one)."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import litestar.connection.request
import pytest
from api_testkit import bearer, make_tenant, serve
from litestar.routes import HTTPRoute
from mailroom_api.app import create_app
from mailroom_api.emails import validation
from mailroom_api.emails.schemas import SendEmail
from mailroom_api.errors import ApiError
from mailroom_contracts.message import html_to_text
from mailroom_kit.runtime import Runtime
from psycopg import AsyncCursor

SEND = {"from": "a@anything.test", "to": "b@example.test", "subject": "hi", "text": "t"}


async def test_the_body_is_decoded_once(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    def second_decode(*_: Any, **__: Any) -> Any:
        raise AssertionError("Litestar decoded the body again")

    monkeypatch.setattr(litestar.connection.request, "decode_json", second_decode)
    tenant = await make_tenant(runtime)
    async with serve(create_app(runtime)) as client:
        resp = await client.post("/v1/emails", json=SEND, headers=bearer(tenant.test))
        assert resp.status_code == 202, resp.text
        bad = await client.post("/v1/emails", json={**SEND, "to": 5}, headers=bearer(tenant.test))
        assert (bad.status_code, bad.json()["param"]) == (422, "to")


def test_the_send_handler_resolves_no_dependencies(runtime: Runtime) -> None:
    app = create_app(runtime)
    route = next(r for r in app.routes if isinstance(r, HTTPRoute) and r.path == "/v1/emails")
    handler = next(h for h in route.route_handlers if "POST" in h.http_methods)
    model = handler.create_kwargs_model(path_parameters={})
    assert model.dependency_batches == []  # the list_emails handler, for contrast, has some
    listing = next(h for h in route.route_handlers if "GET" in h.http_methods)
    assert listing.create_kwargs_model(path_parameters={}).dependency_batches


async def test_sends_still_reach_the_log(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    resp = await client.post("/v1/emails", json=SEND, headers=bearer(tenant.test))
    assert resp.status_code == 202
    got = await client.get(f"/v1/emails/{resp.json()['id']}", headers=bearer(tenant.test))
    assert got.status_code == 200 and got.json()["recipients"] == [
        {"email": "b@example.test", "type": "to", "status": "queued"}
    ]


async def test_a_send_is_one_statement_and_a_key_adds_one_only_to_replay(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await make_tenant(runtime)
    assert (await client.get("/v1/emails", headers=bearer(tenant.test))).status_code == 200  # key now cached
    statements: list[str] = []
    execute = AsyncCursor.execute

    async def counted(self: AsyncCursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        text = str(query)
        # Not the relay wake's (its own connection, after the commit), nor a key lookup (the
        # cache may have expired under a slow machine), nor the rate limiter's lease (issue 23: its own
        # statement, about once a second per tenant and process).
        if "pg_notify" not in text and "FROM api_keys" not in text and "rate_buckets" not in text:
            statements.append(text.split()[0])
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(AsyncCursor, "execute", counted)
    keyed = {**bearer(tenant.test), "Idempotency-Key": "one-statement"}
    for headers, expected in ((bearer(tenant.test), ["WITH"]), (keyed, ["WITH"]), (keyed, ["WITH", "SELECT"])):
        statements.clear()
        resp = await client.post("/v1/emails", json=SEND, headers=headers)
        assert resp.status_code == 202, resp.text
        assert statements == expected, headers


def test_an_html_only_email_is_measured_with_the_text_generated_for_it() -> None:
    # The limit check after the text is generated adds the text part's size to the size checked
    # before (issue 15: not the whole message measured again): both give the same verdict.
    html = "<h1>Order</h1>" + "<p>Your order has shipped, see <a href='https://acme.test/o'>it</a>.</p>" * 40
    req = SendEmail(from_="a@anything.test", to=["b@example.test", "c@example.test"], subject="hi", html=html)
    sent = validation.validate_send(req, max_message_bytes=10**9)
    assert sent.text == html_to_text(html)
    full = validation.check_message_size(sent, 10**9)  # measured whole, text included
    without_text = validation.check_message_size(dataclasses.replace(sent, text=None), 10**9)
    assert without_text < full - 1
    assert validation.validate_send(req, max_message_bytes=full).text == sent.text
    with pytest.raises(ApiError) as refused:  # the html alone fits: the generated text does not
        validation.validate_send(req, max_message_bytes=full - 1)
    assert refused.value.status == 413 and f"about {full} bytes" in refused.value.message
