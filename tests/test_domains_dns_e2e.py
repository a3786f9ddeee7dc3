"""Issue 18 through the whole stack: the domains service checks the stack's real local DNS server
(and the SES emulator resolves DKIM there too). A domain verifies once its records are published
(auto-published by the dev DNS server), a deleted DKIM record turns it `temporary_failure` and
stops sending, restoring it verifies it again; verify-now, PATCH tracking and DELETE work and are
tenant-scoped; bad names are 422 on `name`."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from mailroom_devstack.stack import Stack
from support import Tenant, create_tenant, verified_domain, wait_for


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Tenant:
    return create_tenant(stack)


def send(c: httpx.Client, name: str) -> httpx.Response:
    return c.post(
        "/v1/emails",
        json={"from": f"hi@{name}", "to": "success@simulator.amazonses.com", "subject": "x", "text": "y"},
    )


def refused_send(c: httpx.Client, name: str) -> httpx.Response | None:
    r = send(c, name)
    return r if r.status_code == 403 else None


def status_of(c: httpx.Client, domain_id: str, status: str) -> dict[str, Any] | None:
    got: dict[str, Any] = c.get(f"/v1/domains/{domain_id}").json()
    return got if got["status"] == status else None


def test_records_vanish_and_return_then_patch_verify_and_delete(stack: Stack, tenant: Tenant) -> None:
    assert stack.dns is not None
    name = f"mail.d{secrets.token_hex(4)}.example.com"
    dom = verified_domain(stack, tenant, name, timeout=30)
    assert all(r["status"] == "verified" for r in dom["records"])
    dkim = dom["records"][0]
    assert dkim["found"] == [dkim["value"]] and dkim["last_checked_at"] is not None
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c:
        assert send(c, name).status_code == 202

        # Someone deletes a DKIM record: temporary_failure, that record says why, sending stops.
        stack.dns.zone.delete(dkim["name"], "CNAME")
        broken = wait_for(lambda: status_of(c, dom["id"], "temporary_failure"), 30, what="temporary_failure")
        assert broken["records"][0]["status"] == "pending" and "NXDOMAIN" in broken["records"][0]["detail"]
        refused = wait_for(lambda: refused_send(c, name), 10, what="send refused")
        assert refused.json()["error"] == "domain_not_verified"

        # Restored (and checked now): verified again, sending resumes.
        stack.dns.zone.add(dkim["name"], "CNAME", dkim["value"])
        r = c.post(f"/v1/domains/{dom['id']}/verify")
        assert r.status_code == 202 and r.json()["id"] == dom["id"]
        wait_for(lambda: status_of(c, dom["id"], "verified"), 30, what="verified again")
        wait_for(lambda: send(c, name).status_code == 202, 10, what="send accepted again")

        # Tracking defaults: PATCH changes them, sends pick them up (they select the configuration set).
        r = c.patch(f"/v1/domains/{dom['id']}", json={"track_opens": True})
        assert r.status_code == 200 and (r.json()["track_opens"], r.json()["track_clicks"]) == (True, False)
        assert c.get(f"/v1/domains/{dom['id']}").json()["track_opens"] is True
        assert c.patch(f"/v1/domains/{dom['id']}", json={}).json()["param"] == "track_opens"

        def configuration_set_of(email_id: str) -> str | None:
            sent = httpx.get(f"{stack.url('emulator')}/_emulator/sent", timeout=10).json()
            messages = sent["messages"] if isinstance(sent, dict) else sent
            for m in messages:
                if m["tags"].get("mailroom_email_id") == email_id:
                    return str(m["configuration_set"])
            return None

        def tracked() -> bool:
            r = send(c, name)
            assert r.status_code == 202, r.text
            got = wait_for(lambda: configuration_set_of(r.json()["id"]), 20, what="sent at the emulator")
            return got == "mailroom-transactional-opens"

        wait_for(tracked, 20, what="a send in the open-tracking configuration set (the domain's new default)")

        # Another tenant: 404 for every route on this domain, and nothing changes.
        other = create_tenant(stack)
        for method, path, body in [
            ("POST", f"/v1/domains/{dom['id']}/verify", None),
            ("PATCH", f"/v1/domains/{dom['id']}", {"track_clicks": True}),
            ("DELETE", f"/v1/domains/{dom['id']}", None),
        ]:
            r = httpx.request(method, f"{stack.url('api')}{path}", json=body, headers=other.headers(), timeout=10)
            assert r.status_code == 404 and r.json()["error"] == "not_found", (method, r.text)
        assert c.get(f"/v1/domains/{dom['id']}").json()["track_clicks"] is False

        # DELETE: gone, its SES identity too, and sends from it are refused.
        r = c.delete(f"/v1/domains/{dom['id']}")
        assert r.status_code == 200 and r.json() == {"id": dom["id"], "deleted": True}
        assert c.get(f"/v1/domains/{dom['id']}").status_code == 404
        assert c.delete(f"/v1/domains/{dom['id']}").status_code == 404
        identities = httpx.get(f"{stack.url('emulator')}/_emulator/identities", timeout=10).json()["identities"]
        assert name not in [i["identity"] for i in identities]
        refused = wait_for(lambda: refused_send(c, name), 10, what="send refused")
        assert refused.json()["error"] == "domain_not_verified"


@pytest.mark.parametrize(
    "bad",
    ["192.0.2.1", "[::1]", "localhost", "co.uk", "a" * 300, "a..example.com", "ex\u200dample.com", "mail.local"],
)
def test_bad_domain_names_are_422_on_name(stack: Stack, tenant: Tenant, bad: str) -> None:
    r = httpx.post(f"{stack.url('api')}/v1/domains", json={"name": bad}, headers=tenant.headers(), timeout=10)
    assert r.status_code == 422, r.text
    assert (r.json()["error"], r.json()["param"]) == ("validation_error", "name")
