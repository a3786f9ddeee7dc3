"""API keys (creation, hashing, listing, immediate revocation), the operator API and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from api_testkit import OPERATOR_TOKEN, add_domain, bearer, make_tenant, serve, unique_domain
from mailroom_api import cli
from mailroom_contracts.streams import TENANT_STREAM
from mailroom_devstack.pytest_plugin import eventually
from mailroom_kit.runtime import Runtime

OP = bearer(OPERATOR_TOKEN)


def email(sender: str) -> dict[str, object]:
    return {"from": sender, "to": "ann@example.test", "subject": "Hi", "text": "hi"}


async def test_operator_creates_tenant_and_first_key(client: httpx.AsyncClient, runtime: Runtime) -> None:
    resp = await client.post("/admin/v1/tenants", json={"name": "Globex", "monthly_quota": 1000}, headers=OP)
    assert resp.status_code == 201, resp.text
    tenant = resp.json()
    assert tenant["id"].startswith("ten_") and tenant["status"] == "active"
    assert (tenant["name"], tenant["monthly_quota"], tenant["rate_limit"]) == ("Globex", 1000, None)
    assert tenant["created_at"].endswith("Z")

    resp = await client.post(
        f"/admin/v1/tenants/{tenant['id']}/api-keys",
        json={"name": "first", "mode": "live", "permission": "full_access"},
        headers=OP,
    )
    assert resp.status_code == 201, resp.text
    key = resp.json()
    token = key["token"]
    assert token.startswith("mr_live_") and len(token) >= len("mr_live_") + 32
    assert key["id"].startswith("key_") and key["tenant_id"] == tenant["id"]
    assert key["prefix"] == token[:12] and key["last4"] == token[-4:]

    # Only the hash is stored.
    async with runtime.pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM api_keys WHERE id = %s", (key["id"],))
        row = await cur.fetchone()
    assert row is not None and row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in json.dumps({k: str(v) for k, v in row.items()})

    # The key works on the tenant API.
    assert (await client.get("/v1/api-keys", headers=bearer(token))).status_code == 200

    got = await client.get(f"/admin/v1/tenants/{tenant['id']}", headers=OP)
    assert got.status_code == 200 and got.json()["name"] == "Globex"
    listed = await client.get("/admin/v1/tenants", headers=OP)
    assert tenant["id"] in [t["id"] for t in listed.json()["data"]]

    patched = await client.patch(
        f"/admin/v1/tenants/{tenant['id']}",
        json={"status": "blocked", "rate_limit": 5, "monthly_quota": None},
        headers=OP,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["status"], body["rate_limit"], body["monthly_quota"], body["name"]) == (
        "blocked",
        5,
        None,
        "Globex",
    )


async def test_operator_errors(client: httpx.AsyncClient) -> None:
    resp = await client.get("/admin/v1/tenants")
    assert (resp.status_code, resp.json()["error"]) == (401, "missing_api_key")
    resp = await client.get("/admin/v1/tenants", headers=bearer("wrong"))
    assert (resp.status_code, resp.json()["error"]) == (401, "invalid_api_key")
    tenant = await client.post("/admin/v1/tenants", json={"name": "x"}, headers=OP)
    resp = await client.get("/admin/v1/tenants", headers=bearer(tenant.json()["id"]))
    assert resp.status_code == 401
    resp = await client.get("/admin/v1/tenants/ten_nope", headers=OP)
    assert (resp.status_code, resp.json()["error"]) == (404, "not_found")
    resp = await client.patch(f"/admin/v1/tenants/{tenant.json()['id']}", json={"status": "asleep"}, headers=OP)
    assert (resp.status_code, resp.json()["error"], resp.json()["param"]) == (
        422,
        "validation_error",
        "status",
    )
    resp = await client.post("/admin/v1/tenants", json={"name": "  "}, headers=OP)
    assert (resp.status_code, resp.json()["param"]) == (422, "name")
    resp = await client.post("/admin/v1/tenants", json={"name": "q", "monthly_quota": -1}, headers=OP)
    assert (resp.status_code, resp.json()["param"]) == (422, "monthly_quota")
    resp = await client.post("/admin/v1/tenants/ten_nope/api-keys", json={"name": "k"}, headers=OP)
    assert resp.status_code == 404
    # A tenant key is not an operator token.
    t = await make_tenant_via_api(client)
    resp = await client.get("/admin/v1/tenants", headers=bearer(t))
    assert resp.status_code == 401


async def make_tenant_via_api(client: httpx.AsyncClient) -> str:
    tenant = (await client.post("/admin/v1/tenants", json={"name": "t"}, headers=OP)).json()
    key = await client.post(
        f"/admin/v1/tenants/{tenant['id']}/api-keys", json={"name": "k", "mode": "test"}, headers=OP
    )
    token: str = key.json()["token"]
    assert token.startswith("mr_test_")
    return token


async def test_operator_api_disabled_without_token(runtime: Runtime) -> None:
    import dataclasses

    import msgspec
    from mailroom_api.app import create_app

    closed = dataclasses.replace(runtime, settings=msgspec.structs.replace(runtime.settings, operator_token=""))
    async with serve(create_app(closed)) as client:
        for headers in ({}, {"Authorization": "Bearer"}, bearer(OPERATOR_TOKEN)):
            resp = await client.get("/admin/v1/tenants", headers=headers)
            assert resp.status_code == 401, resp.text


async def test_tenant_api_keys_lifecycle_and_immediate_revocation(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await make_tenant(runtime)
    dom = unique_domain()
    dom_id = await add_domain(runtime, t.id, dom)
    resp = await client.post(
        "/v1/api-keys",
        json={"name": "ci", "mode": "live", "permission": "sending_access", "domain_id": dom_id},
        headers=bearer(t.live),
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    token = created["token"]
    assert (created["permission"], created["domain_id"], created["mode"]) == (
        "sending_access",
        dom_id,
        "live",
    )

    listed = (await client.get("/v1/api-keys", headers=bearer(t.live))).json()["data"]
    assert len(listed) == 4
    entry = next(k for k in listed if k["id"] == created["id"])
    assert "token" not in entry and entry["prefix"] == token[:12] and entry["last4"] == token[-4:]
    assert token not in json.dumps(listed)

    bad = await client.post("/v1/api-keys", json={"name": "x", "domain_id": "dom_other"}, headers=bearer(t.live))
    assert (bad.status_code, bad.json()["param"]) == (422, "domain_id")
    bad = await client.post("/v1/api-keys", json={"name": "x", "mode": "prod"}, headers=bearer(t.live))
    assert (bad.status_code, bad.json()["param"]) == (422, "mode")

    sent = await client.post("/v1/emails", json=email(f"a@{dom}"), headers=bearer(token))
    assert sent.status_code == 202, sent.text

    # Another tenant cannot revoke it.
    other = await make_tenant(runtime)
    resp = await client.delete(f"/v1/api-keys/{created['id']}", headers=bearer(other.live))
    assert resp.status_code == 404

    resp = await client.delete(f"/v1/api-keys/{created['id']}", headers=bearer(t.live))
    assert resp.status_code == 200 and resp.json()["revoked_at"] is not None
    # Effective on the very next request.
    again = await client.post("/v1/emails", json=email(f"a@{dom}"), headers=bearer(token))
    assert (again.status_code, again.json()["error"]) == (403, "api_key_revoked")
    assert (await client.get(f"/v1/emails/{sent.json()['id']}", headers=bearer(token))).status_code == 403


async def test_test_key_cannot_mint_a_live_key(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await make_tenant(runtime)
    before = (await client.get("/v1/api-keys", headers=bearer(t.live))).json()["data"]
    resp = await client.post("/v1/api-keys", json={"name": "escalate", "mode": "live"}, headers=bearer(t.test))
    assert (resp.status_code, resp.json()["error"]) == (403, "insufficient_permission")
    assert (await client.get("/v1/api-keys", headers=bearer(t.live))).json()["data"] == before
    ok = await client.post("/v1/api-keys", json={"name": "more-tests", "mode": "test"}, headers=bearer(t.test))
    assert ok.status_code == 201 and ok.json()["token"].startswith("mr_test_")


async def test_blocked_tenant_cannot_send(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await make_tenant(runtime)
    dom = unique_domain()
    await add_domain(runtime, t.id, dom)
    await client.patch(f"/admin/v1/tenants/{t.id}", json={"status": "blocked"}, headers=OP)
    resp = await client.post("/v1/emails", json=email(f"a@{dom}"), headers=bearer(t.live))
    assert (resp.status_code, resp.json()["error"]) == (403, "tenant_blocked")
    await client.patch(f"/admin/v1/tenants/{t.id}", json={"status": "active"}, headers=OP)
    resp = await client.post("/v1/emails", json=email(f"a@{dom}"), headers=bearer(t.live))
    assert resp.status_code == 202


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILROOM_DATABASE_URL": database_url}
    mailroom = Path(sys.executable).parent / "mailroom"  # the console script from the pyproject
    return subprocess.run(
        [str(mailroom), *args], env=env, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent
    )


async def test_cli_creates_tenants_and_keys(api_database_url: str, client: httpx.AsyncClient) -> None:
    made = run_cli(api_database_url, "admin", "tenants", "create", "--name", "From CLI", "--json")
    assert made.returncode == 0, made.stderr
    tenant = json.loads(made.stdout)
    assert tenant["id"].startswith("ten_") and tenant["status"] == "active" and tenant["name"] == "From CLI"

    listed = run_cli(api_database_url, "admin", "tenants", "list")
    assert listed.returncode == 0 and tenant["id"] in listed.stdout

    key = run_cli(
        api_database_url,
        "admin",
        "api-keys",
        "create",
        "--tenant",
        tenant["id"],
        "--name",
        "boot",
        "--mode",
        "test",
        "--json",
    )
    assert key.returncode == 0, key.stderr
    token = json.loads(key.stdout)["token"]
    assert token.startswith("mr_test_")
    resp = await client.post("/v1/emails", json=email("anyone@unverified.test"), headers=bearer(token))
    assert resp.status_code == 202, resp.text

    plain = run_cli(
        api_database_url,
        "admin",
        "api-keys",
        "create",
        "--tenant",
        tenant["id"],
        "--name",
        "p",
        "--mode",
        "live",
        "--permission",
        "sending_access",
    )
    assert plain.returncode == 0 and "mr_live_" in plain.stdout

    missing = run_cli(
        api_database_url,
        "admin",
        "api-keys",
        "create",
        "--tenant",
        "ten_nope",
        "--name",
        "x",
        "--mode",
        "live",
    )
    assert missing.returncode == 1 and "not_found" in missing.stderr


def test_cli_in_process_update(api_database_url: str, monkeypatch: object, capsys: object) -> None:
    import pytest

    mp: pytest.MonkeyPatch = monkeypatch  # type: ignore[assignment]
    mp.setenv("MAILROOM_DATABASE_URL", api_database_url)
    assert cli.main(["admin", "tenants", "create", "--name", "inproc", "--json"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    tenant_id = json.loads(out)["id"]
    assert cli.main(["admin", "tenants", "update", "--tenant", tenant_id, "--status", "paused"]) == 0
    assert "paused" in capsys.readouterr().out  # type: ignore[attr-defined]


async def test_status_change_records_reason_and_publishes_tenant_updated(
    client: httpx.AsyncClient, runtime: Runtime, workers: None
) -> None:
    t = await make_tenant(runtime)
    paused = await client.patch(
        f"/admin/v1/tenants/{t.id}", json={"status": "paused", "status_reason": "billing review"}, headers=OP
    )
    assert paused.status_code == 200
    body = paused.json()
    assert (body["status"], body["status_reason"]) == ("paused", "billing review")
    assert body["paused_at"] is not None
    # Pausing again keeps the original paused_at; a reason without a status is refused.
    again = (await client.patch(f"/admin/v1/tenants/{t.id}", json={"status": "paused"}, headers=OP)).json()
    assert again["paused_at"] == body["paused_at"] and again["status_reason"] is None
    bad = await client.patch(f"/admin/v1/tenants/{t.id}", json={"status_reason": "x"}, headers=OP)
    assert (bad.status_code, bad.json()["param"]) == (422, "status_reason")
    bad = await client.patch(
        f"/admin/v1/tenants/{t.id}", json={"status": "blocked", "status_reason": "a\nb"}, headers=OP
    )
    assert (bad.status_code, bad.json()["param"]) == (422, "status_reason")
    active = (await client.patch(f"/admin/v1/tenants/{t.id}", json={"status": "active"}, headers=OP)).json()
    assert (active["status"], active["paused_at"]) == ("active", None)

    # Relayed by the outbox to MAILROOM_TENANT, in order, with the whole state each time.
    async def published() -> list[dict[str, object]]:
        info = await runtime.js.stream_info(TENANT_STREAM.name)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await runtime.js.get_msg(TENANT_STREAM.name, seq)
            payload = json.loads(msg.data or b"{}")
            if payload.get("tenant_id") == t.id:
                found.append(payload)
        return found

    await eventually(lambda: _count_is(published, 3))
    assert [(p["type"], p["status"], p["status_reason"]) for p in await published()] == [
        ("tenant.updated", "paused", "billing review"),
        ("tenant.updated", "paused", None),
        ("tenant.updated", "active", None),
    ]


async def _count_is(fetch: Callable[[], Awaitable[list[dict[str, object]]]], n: int) -> bool:
    return len(await fetch()) == n
