"""Issue 18 through the whole stack: the domains service checks the stack's real local DNS server
(and the SES emulator resolves DKIM there too). A domain verifies once its records are published
(auto-published by the dev DNS server), a deleted DKIM record turns it `temporary_failure` and
stops sending, restoring it verifies it again; verify-now, PATCH tracking and DELETE work and are
tenant-scoped. A domain whose records the test publishes itself is told record by record what is
missing and what was found instead until it verifies, and once SES fails it, sends are refused.
Bad names are 422 on `name`."""

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


def record(dom: dict[str, Any], purpose: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in dom["records"] if r["purpose"] == purpose)
    return found


def test_record_by_record_until_verified_then_failed_refuses_sends(stack: Stack, tenant: Tenant) -> None:
    """The tenant publishes the records itself (auto-publish skips this domain): nothing there →
    pending, each record saying NXDOMAIN; a wrong MX → that record `failed` with what DNS answered;
    the right MX, our SPF merged into the tenant's, the DKIM CNAMEs → verified (DMARC, recommended,
    still pending), sends accepted; SES then fails the identity → `failed`, sends refused."""
    assert stack.dns is not None
    name = f"mail.r{secrets.token_hex(4)}.example.com"
    stack.dns.manual(name)
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c:
        r = c.post("/v1/domains", json={"name": name})
        assert r.status_code == 201, r.text
        dom_id = r.json()["id"]

        def checked(pred: Any) -> Any:
            def look() -> dict[str, Any] | None:
                got: dict[str, Any] = c.get(f"/v1/domains/{dom_id}").json()
                return got if all(x["last_checked_at"] for x in got["records"]) and pred(got) else None

            return look

        pending = wait_for(checked(lambda d: True), 30, what="the first check")
        assert pending["status"] == "pending"
        assert all(x["status"] == "pending" and "NXDOMAIN" in x["detail"] for x in pending["records"]), pending
        assert refused_send(c, name) is not None

        mx, spf = record(pending, "mail_from_mx"), record(pending, "mail_from_spf")
        stack.dns.zone.add(mx["name"], "MX", "10 mx.other-provider.test")
        stack.dns.zone.add(spf["name"], "TXT", "v=spf1 include:_spf.google.com ~all")  # the tenant's own

        def both_seen(d: dict[str, Any]) -> bool:  # one check may have come between the two adds
            return bool(record(d, "mail_from_mx")["found"] and record(d, "mail_from_spf")["found"])

        wrong = wait_for(checked(both_seen), 30, what="the wrong MX and the SPF record without us checked")
        assert record(wrong, "mail_from_mx")["found"] == ["10 mx.other-provider.test"]
        assert mx["value"] in record(wrong, "mail_from_mx")["detail"]
        wrong_spf = record(wrong, "mail_from_spf")
        assert wrong_spf["status"] == "failed" and "include:amazonses.com" in wrong_spf["detail"], wrong_spf
        assert wrong["status"] == "pending"

        merged = "v=spf1 include:_spf.google.com include:amazonses.com ~all"
        stack.dns.zone.set(mx["name"], "MX", [f"{mx['priority']} {mx['value']}"])
        stack.dns.zone.set(spf["name"], "TXT", [merged])
        for x in pending["records"]:
            if x["purpose"] == "dkim":
                stack.dns.zone.add(x["name"], "CNAME", x["value"])
        assert c.post(f"/v1/domains/{dom_id}/verify").status_code == 202
        verified = wait_for(checked(lambda d: d["status"] == "verified"), 30, what="verified")
        assert (record(verified, "mail_from_spf")["status"], record(verified, "mail_from_spf")["found"]) == (
            "verified",
            [merged],
        )
        assert (record(verified, "dmarc")["status"], record(verified, "dmarc")["required"]) == ("pending", False)
        wait_for(lambda: send(c, name).status_code == 202, 10, what="send accepted")

        # SES gives up on the identity: failed (final), and sending from it is refused.
        httpx.post(
            f"{stack.url('emulator')}/_emulator/identities/{name}/verification", json={"status": "FAILED"}, timeout=10
        ).raise_for_status()
        wait_for(lambda: status_of(c, dom_id, "failed"), 30, what="failed")
        refused = wait_for(lambda: refused_send(c, name), 10, what="send refused")
        assert refused.json()["error"] == "domain_not_verified"
        r = c.post(f"/v1/domains/{dom_id}/verify")  # failed is final: delete it and add it again
        assert (r.status_code, r.json()["error"]) == (409, "conflict"), r.text


@pytest.mark.parametrize(
    "bad",
    ["192.0.2.1", "[::1]", "localhost", "co.uk", "a" * 300, "a..example.com", "ex\u200dample.com", "mail.local"],
)
def test_bad_domain_names_are_422_on_name(stack: Stack, tenant: Tenant, bad: str) -> None:
    r = httpx.post(f"{stack.url('api')}/v1/domains", json={"name": bad}, headers=tenant.headers(), timeout=10)
    assert r.status_code == 422, r.text
    assert (r.json()["error"], r.json()["param"]) == ("validation_error", "name")
