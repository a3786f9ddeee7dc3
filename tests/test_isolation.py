"""Tenant isolation, generated from the OpenAPI document the API serves, against the whole stack (the
real domains and webhooks services answer their routes): every tenant route that names a resource,
called with another tenant's id, is 404 and changes nothing; a sending-access key is refused every
management route; test and live keys never see each other's emails; no route answers without a
credential. A new route is covered as soon as it is in the document (and the test fails, asking for
an id or body, if it names a resource kind it has not met)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from mailroom_devstack.stack import Stack
from support import Tenant, create_tenant, verified_domain

METHODS = ("get", "post", "put", "patch", "delete")
PARAM = re.compile(r"\{(\w+)\}")
# Routes a sending-access key may use (SPEC §2: "send + read own emails").
SENDING_ROUTES = re.compile(r"^/v1/emails(/|$)")
# Routes that take no credential at all: the one-click unsubscribe links, whose signed token is
# the authority (RFC 8058); checked on their own below.
PUBLIC_ROUTES = re.compile(r"^/v1/unsubscribe/")
# Example bodies for routes that take one and name another tenant's resource; a new such route must
# be given one here (the lookup must answer 404 before the body could matter).
BODIES: dict[tuple[str, str], dict[str, Any]] = {}


def _in_an_hour() -> dict[str, Any]:
    return {"scheduled_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}


# Bodies that must be valid for the id (not the body) to decide, by method and URL: reschedule, and
# a domain's tracking (an empty PATCH is 422 before the id is looked up).
VALID_BODIES = [
    ("PATCH", re.compile(r"/v1/emails/msg_[0-9a-z]{26}"), _in_an_hour),
    ("PATCH", re.compile(r"/v1/domains/dom_[0-9a-z]{26}"), lambda: {"track_opens": True}),
]


@dataclass
class World:
    a: Tenant
    b: Tenant
    a_sending: str
    ids_of_b: dict[str, str]  # path parameter name → one of tenant B's ids
    a_live_email: str
    a_test_email: str


def operations(doc: dict[str, Any], prefix: str, *, public: bool = False) -> list[tuple[str, str]]:
    """The document's operations under `prefix`: those that need a credential, or (`public`) the others."""
    return sorted(
        (method.upper(), path)
        for path, item in doc["paths"].items()
        if path.startswith(prefix) and bool(PUBLIC_ROUTES.match(path)) == public
        for method in METHODS
        if method in item
    )


def send(client: httpx.Client, from_: str, headers: dict[str, str]) -> str:
    r = client.post(
        "/v1/emails",
        json={"from": from_, "to": "success@simulator.amazonses.com", "subject": "Hi", "text": "Hello"},
        headers=headers,
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url("api"), timeout=15) as client:
        yield client


@pytest.fixture(scope="module")
def doc(api: httpx.Client) -> dict[str, Any]:
    r = api.get("/schema/openapi.json")
    assert r.status_code == 200
    document: dict[str, Any] = r.json()
    return document


@pytest.fixture(scope="module")
def world(stack: Stack, api: httpx.Client) -> World:
    a, b = create_tenant(stack, "Isolation A"), create_tenant(stack, "Isolation B")
    domain_a = verified_domain(stack, a, f"iso-a-{secrets.token_hex(3)}.test")
    domain_b = verified_domain(stack, b, f"iso-b-{secrets.token_hex(3)}.test")
    key_b = api.post("/v1/api-keys", json={"name": "b-extra"}, headers=b.headers())
    assert key_b.status_code == 201, key_b.text
    hook_b = api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hooks", "events": ["*"]}, headers=b.headers())
    assert hook_b.status_code == 201, hook_b.text
    delivery_b = api.post(f"/v1/webhooks/{hook_b.json()['id']}/test", headers=b.headers())
    assert delivery_b.status_code == 202, delivery_b.text
    suppressed_b = api.post("/v1/suppressions", json={"email": "iso-b@example.test"}, headers=b.headers())
    assert suppressed_b.status_code == 201, suppressed_b.text
    template_b = api.post(
        "/v1/templates",
        json={"name": "b-welcome", "alias": f"b-welcome-{secrets.token_hex(3)}", "subject": "Hi", "html": "<p>Hi</p>"},
        headers=b.headers(),
    )
    assert template_b.status_code == 201, template_b.text
    sending = api.post("/v1/api-keys", json={"name": "a-sending", "permission": "sending_access"}, headers=a.headers())
    assert sending.status_code == 201, sending.text
    return World(
        a=a,
        b=b,
        a_sending=sending.json()["token"],
        ids_of_b={
            "email_id": send(api, f"hi@{domain_b['name']}", b.headers()),
            "domain_id": domain_b["id"],
            "key_id": key_b.json()["id"],
            "webhook_id": hook_b.json()["id"],
            "delivery_id": delivery_b.json()["id"],  # GET/POST /v1/webhooks/{webhook_id}/deliveries/{delivery_id}…
            "email": suppressed_b.json()["email"],  # DELETE /v1/suppressions/{email}
            "template": template_b.json()["id"],  # every /v1/templates/{template}… route
        },
        a_live_email=send(api, f"hi@{domain_a['name']}", a.headers()),
        a_test_email=send(api, f"hi@{domain_a['name']}", a.headers("test")),
    )


def call(api: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = BODIES.get((method, path))
    for valid_method, url, make in VALID_BODIES:
        if body is None and method == valid_method and url.fullmatch(path):
            body = make()
    if method in ("POST", "PUT", "PATCH") and body is None:
        body = {}
    return api.request(method, path, json=body, headers=headers)


def fill(path: str, ids: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in ids, f"no id of kind {name!r} for {path}: add one to the world fixture"
        return ids[name]

    return PARAM.sub(one, path)


def test_the_document_names_the_resources_the_matrix_covers(doc: dict[str, Any]) -> None:
    named = {p for _, path in operations(doc, "/v1/") for p in PARAM.findall(path)}
    assert named == {"email_id", "domain_id", "key_id", "webhook_id", "email", "delivery_id", "template"}
    assert operations(doc, "/v1/", public=True) == [
        ("GET", "/v1/unsubscribe/{token}"),
        ("POST", "/v1/unsubscribe/{token}"),
    ]


def test_another_tenants_resources_are_not_found_and_unchanged(
    doc: dict[str, Any], world: World, api: httpx.Client
) -> None:
    targets = [(m, p) for m, p in operations(doc, "/v1/") if PARAM.search(p)]
    assert len(targets) >= 4
    for method, path in targets:
        url = fill(path, world.ids_of_b)
        for headers in (world.a.headers(), world.a.headers("test")):
            r = call(api, method, url, headers)
            assert r.status_code == 404, f"{method} {path}: {r.status_code} {r.text}"
            body = r.json()
            assert body["error"] == "not_found" and body["request_id"] == r.headers["x-request-id"], body
            # nothing of B's leaks through the message
            assert not any(v in body["message"] for v in world.ids_of_b.values()), body
    # B's resources are all still there, untouched by A's DELETEs
    for method, path in targets:
        if method == "GET":
            r = api.get(fill(path, world.ids_of_b), headers=world.b.headers())
            assert r.status_code == 200, f"B lost {path}: {r.status_code} {r.text}"
    kept = api.get("/v1/suppressions", params={"email": world.ids_of_b["email"]}, headers=world.b.headers())
    assert [e["email"] for e in kept.json()["data"]] == [world.ids_of_b["email"]], "B lost its suppression"


def test_a_sending_key_is_refused_every_management_route(doc: dict[str, Any], world: World, api: httpx.Client) -> None:
    sending = {"Authorization": f"Bearer {world.a_sending}"}
    management = [(m, p) for m, p in operations(doc, "/v1/") if not SENDING_ROUTES.match(p)]
    assert management
    for method, path in management:
        r = call(api, method, fill(path, world.ids_of_b), sending)
        assert (r.status_code, r.json()["error"]) == (403, "insufficient_permission"), f"{method} {path}: {r.text}"
    listed = api.get("/v1/emails", headers=sending)
    assert listed.status_code == 200
    assert world.a_live_email in [e["id"] for e in listed.json()["data"]]


def test_test_and_live_keys_never_see_each_others_emails(world: World, api: httpx.Client) -> None:
    live, test = world.a.headers(), world.a.headers("test")
    assert api.get(f"/v1/emails/{world.a_live_email}", headers=live).status_code == 200
    assert api.get(f"/v1/emails/{world.a_test_email}", headers=test).status_code == 200
    assert api.get(f"/v1/emails/{world.a_live_email}", headers=test).status_code == 404
    assert api.get(f"/v1/emails/{world.a_test_email}", headers=live).status_code == 404
    live_ids = [e["id"] for e in api.get("/v1/emails?limit=100", headers=live).json()["data"]]
    test_ids = [e["id"] for e in api.get("/v1/emails?limit=100", headers=test).json()["data"]]
    assert world.a_live_email in live_ids and world.a_test_email not in live_ids
    assert world.a_test_email in test_ids and world.a_live_email not in test_ids
    assert world.ids_of_b["email_id"] not in live_ids + test_ids


def test_no_route_answers_without_a_credential(doc: dict[str, Any], world: World, api: httpx.Client) -> None:
    ids = {**world.ids_of_b, "tenant_id": world.b.id}
    for method, path in operations(doc, "/v1/") + operations(doc, "/admin/"):
        r = call(api, method, fill(path, ids), {})
        assert (r.status_code, r.json()["error"]) == (401, "missing_api_key"), f"{method} {path}: {r.text}"
        # a tenant key is not an operator token
        if path.startswith("/admin/"):
            r = call(api, method, fill(path, ids), world.a.headers())
            assert (r.status_code, r.json()["error"]) == (401, "invalid_api_key"), f"{method} {path}: {r.text}"


def test_public_routes_answer_only_to_a_token_the_api_signed(
    doc: dict[str, Any], world: World, api: httpx.Client
) -> None:
    """No credential is asked for, and none helps: a token that is not one the API signed is 404
    with or without either tenant's key (a forged one cannot record anything for anybody)."""
    forged = "v1.WyJ0ZW5fMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAiLCJsaXZlIiwibXNnX3giLCJhQGIudGVzdCJd.AAAA"
    for method, path in operations(doc, "/v1/", public=True):
        for headers in ({}, world.a.headers(), world.b.headers(), {"Authorization": f"Bearer {world.a_sending}"}):
            r = call(api, method, path.replace("{token}", forged), headers)
            assert (r.status_code, r.json()["error"]) == (404, "not_found"), f"{method} {path}: {r.text}"


# `/resend` (issue 21) answers in Resend's error shape; the same matrix over its routes. The
# unsupported resources' catch-alls ({rest}) name nothing of anybody's.
RESEND_VALID_BODIES = [
    ("PATCH", re.compile(r"/resend/emails/msg_[0-9a-z]{26}"), _in_an_hour),
    ("PATCH", re.compile(r"/resend/domains/dom_[0-9a-z]{26}"), lambda: {"open_tracking": True}),
    ("PATCH", re.compile(r"/resend/webhooks/wh_[0-9a-z]{26}"), lambda: {"status": "enabled"}),
    ("PATCH", re.compile(r"/resend/templates/.+"), lambda: {"name": "renamed"}),
]


def resend_call(api: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body: dict[str, Any] | None = None
    for valid_method, url, make in RESEND_VALID_BODIES:
        if method == valid_method and url.fullmatch(path):
            body = make()
    if method in ("POST", "PUT", "PATCH") and body is None:
        body = {}
    return api.request(method, path, json=body, headers=headers)


def resend_ids(world: World) -> dict[str, str]:
    ids = world.ids_of_b
    return {**ids, "id_or_email": ids["email"], "rest": "anything"}


def test_resend_routes_keep_tenants_apart(doc: dict[str, Any], world: World, api: httpx.Client) -> None:
    routes = operations(doc, "/resend/")
    named = {p for _, path in routes for p in PARAM.findall(path)}
    assert named == {"email_id", "domain_id", "key_id", "webhook_id", "template", "id_or_email", "rest"}, named
    ids = resend_ids(world)
    targets = [(m, p) for m, p in routes if PARAM.search(p) and "{rest}" not in p]
    assert len(targets) >= 15
    for method, path in targets:
        for headers in (world.a.headers(), world.a.headers("test")):
            r = resend_call(api, method, fill(path, ids), headers)
            assert r.status_code == 404, f"{method} {path}: {r.status_code} {r.text}"
            body = r.json()
            assert (body["statusCode"], body["name"]) == (404, "not_found"), body
            assert not any(v in body["message"] for v in world.ids_of_b.values()), body
    for method, path in targets:  # B's resources are all still there
        if method == "GET":
            r = api.get(fill(path, ids), headers=world.b.headers())
            assert r.status_code == 200, f"B lost {path}: {r.status_code} {r.text}"

    sending = {"Authorization": f"Bearer {world.a_sending}"}
    for method, path in routes:
        r = resend_call(api, method, fill(path, ids), {})
        assert (r.status_code, r.json()["name"]) == (401, "missing_api_key"), f"{method} {path}: {r.text}"
        if not path.startswith("/resend/emails") and "{rest}" not in path and path not in UNSUPPORTED_ROOTS:
            r = resend_call(api, method, fill(path, ids), sending)
            assert (r.status_code, r.json()["name"]) == (401, "restricted_api_key"), f"{method} {path}: {r.text}"


UNSUPPORTED_ROOTS = {
    f"/resend/{r}"
    for r in ("audiences", "broadcasts", "contacts", "inbound", "segments", "topics", "contact-properties")
}
