"""Templates through all five services (issue 17): a templated email rendered at accept reaches the
SES emulator as MIME carrying the rendered subject, html (escaped) and text; a pinned version and
a publish that switches what new sends get, while the email sent before keeps what it rendered."""

from __future__ import annotations

import email
import email.policy
import secrets
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from mailroom_devstack.stack import Stack
from support import Tenant, create_tenant, email_status, emulator_sent, verified_domain, wait_for


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Tenant:
    return create_tenant(stack)


@pytest.fixture(scope="module")
def domain(stack: Stack, tenant: Tenant) -> str:
    name = f"tpl-{secrets.token_hex(3)}.test"
    verified_domain(stack, tenant, name)
    return name


def _mime(stack: Stack, client: httpx.Client, email_id: str) -> EmailMessage:
    wait_for(lambda: email_status(client, email_id)["status"] == "delivered", 30, what=f"{email_id} delivered")
    [message] = [m for m in emulator_sent(stack) if m["tags"].get("mailroom_email_id") == email_id]
    parsed = email.message_from_bytes(message["raw"].encode("ascii"), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _parts(msg: EmailMessage) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in msg.walk():
        if part.get_content_type() in ("text/plain", "text/html"):
            out[part.get_content_type()] = part.get_content()  # type: ignore[attr-defined]
    return out


def test_a_templated_email_reaches_ses_rendered_and_versions_stick(stack: Stack, tenant: Tenant, domain: str) -> None:
    template: dict[str, Any] = {
        "name": "Receipt",
        "alias": "receipt",
        "subject": "Receipt {{ order.number }} for {{ name }}",
        "html": "<p>Thanks {{ name }}!</p><ul>{% for l in order.lines %}<li>{{ l }}</li>{% endfor %}</ul>",
        "text": "Thanks {{ name }}! {{ order.lines | join(', ') }}",
        "variables": {
            "name": {"type": "string", "required": True},
            "order": {"type": "object", "required": True},
            "order.number": {"type": "number", "required": True},
            "order.lines": {"type": "list", "default": []},
        },
    }
    data = {"name": "Ann <admin>", "order": {"number": 42, "lines": ["Tea & cake", "<b>Jam</b>"]}}
    send = {"from": f"Shop <shop@{domain}>", "to": "success@simulator.amazonses.com"}
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=30) as c:
        created = c.post("/v1/templates", json=template)
        assert created.status_code == 201, created.text
        tpl_id = created.json()["id"]
        assert c.post("/v1/templates/receipt/publish", json={}).status_code == 200

        first = c.post("/v1/emails", json={**send, "template": {"id": "receipt", "data": data}})
        assert first.status_code == 202, first.text
        msg = _mime(stack, c, first.json()["id"])
        assert msg["Subject"] == "Receipt 42 for Ann <admin>"
        parts = _parts(msg)
        assert "<p>Thanks Ann &lt;admin&gt;!</p>" in parts["text/html"]
        assert "<li>Tea &amp; cake</li><li>&lt;b&gt;Jam&lt;/b&gt;</li>" in parts["text/html"]
        assert parts["text/plain"].strip() == "Thanks Ann <admin>! Tea & cake, <b>Jam</b>"
        logged = c.get(f"/v1/emails/{first.json()['id']}").json()
        assert logged["template"] == {"id": tpl_id, "version": 1}

        # Version 2, published: new sends get it; a send pinned to 1 and the first email keep 1.
        v2 = c.post(f"/v1/templates/{tpl_id}/versions", json={"subject": "Your order {{ order.number }}"})
        assert v2.status_code == 201, v2.text
        assert c.post(f"/v1/templates/{tpl_id}/publish", json={"version": 2}).status_code == 200
        second = c.post("/v1/emails", json={**send, "template": {"id": tpl_id, "data": data}})
        pinned = c.post("/v1/emails", json={**send, "template": {"id": "receipt", "version": 1, "data": data}})
        assert second.status_code == pinned.status_code == 202
        assert _mime(stack, c, second.json()["id"])["Subject"] == "Your order 42"
        assert _mime(stack, c, pinned.json()["id"])["Subject"] == "Receipt 42 for Ann <admin>"
        assert c.get(f"/v1/emails/{second.json()['id']}").json()["template"] == {"id": tpl_id, "version": 2}
        assert _mime(stack, c, first.json()["id"])["Subject"] == "Receipt 42 for Ann <admin>"

        # Refused sends write nothing the sender could pick up.
        bad = c.post("/v1/emails", json={**send, "template": {"id": "receipt", "data": {"name": "x"}}})
        assert (bad.status_code, bad.json()["error"], bad.json()["param"]) == (
            422,
            "invalid_template_data",
            "template.data.order",
        )
