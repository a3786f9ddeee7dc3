"""Stored content's retention: the retention job removes html, text, headers and the attachments'
list of emails older than MAILROOM_API_CONTENT_RETENTION_DAYS, keeps the rest of the log entry, and
`include=content` says the content expired."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
from api_testkit import bearer, make_tenant
from mailroom_api.app import purges
from mailroom_api.emails import repository
from mailroom_kit.retention import Purge, purge_once
from mailroom_kit.runtime import Runtime
from mailroom_kit.settings import DAY


async def test_old_content_is_removed_and_said_to_have_expired(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    body = {
        "from": "Acme <hi@anything.test>",
        "to": "ada@example.test",
        "subject": "Your invoice",
        "html": "<p>Thanks</p>",
        "headers": {"X-Order": "42"},
        "tags": {"kind": "invoice"},
        "attachments": [{"filename": "a.pdf", "content": base64.b64encode(b"%PDF").decode()}],
    }
    ids = []
    for _ in range(2):
        resp = await client.post("/v1/emails", json=body, headers=bearer(tenant.test))
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    old, recent = ids
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    resp = await client.post("/v1/emails", json={**body, "scheduled_at": later}, headers=bearer(tenant.test))
    assert resp.status_code == 202 and resp.json()["status"] == "scheduled", resp.text
    waiting = resp.json()["id"]
    async with runtime.pool.connection() as conn:
        await conn.execute(
            "UPDATE emails SET created_at = created_at - interval '31 days' WHERE id = ANY(%s)", ([old, waiting],)
        )
        await conn.commit()

    purge = Purge("emails.content", 30 * DAY, repository.purge_content)
    assert await purge_once(runtime.pool, purge, schema="api", batch=1000) >= 1
    assert await purge_once(runtime.pool, purge, schema="api", batch=1000) == 0  # once only

    expired = (await client.get(f"/v1/emails/{old}?include=content", headers=bearer(tenant.test))).json()
    assert expired["content_expired_at"] is not None
    assert (expired["html"], expired["text"], expired["headers"], expired["attachments"]) == (None, None, {}, [])
    # the log entry itself stays
    assert (expired["subject"], expired["tags"], expired["to"]) == ("Your invoice", {"kind": "invoice"}, [body["to"]])
    assert [e["type"] for e in expired["events"]][:1] == ["queued"] and expired["recipients"]

    kept = (await client.get(f"/v1/emails/{recent}?include=content", headers=bearer(tenant.test))).json()
    assert kept["content_expired_at"] is None
    assert kept["html"] == "<p>Thanks</p>" and kept["text"] and kept["headers"] == {"X-Order": "42"}
    assert [a["filename"] for a in kept["attachments"]] == ["a.pdf"]
    # still waiting for its time: its content is what will be sent, and stays
    scheduled = (await client.get(f"/v1/emails/{waiting}?include=content", headers=bearer(tenant.test))).json()
    assert scheduled["content_expired_at"] is None and scheduled["html"] == "<p>Thanks</p>"
    plain = (await client.get(f"/v1/emails/{old}", headers=bearer(tenant.test))).json()
    assert "content_expired_at" not in plain and "html" not in plain  # only with include=content


async def test_the_api_purges_content_after_its_setting(runtime: Runtime) -> None:
    (content,) = purges(msgspec.structs.replace(runtime.settings, content_retention_days=7))
    assert (content.table, content.keep_seconds, content.delete) == (
        "emails.content",
        7 * DAY,
        repository.purge_content,
    )
    (kept,) = purges(msgspec.structs.replace(runtime.settings, content_retention_days=0))
    assert await purge_once(runtime.pool, kept, schema="api", batch=10) == 0  # 0 keeps it
