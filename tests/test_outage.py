"""Faults answered fast, end to end: the api served on a private pgserver (never the machine's
shared Postgres), the server stopped under it. Requests are answered 503 `unavailable` with
`Retry-After` within the pool's bounded wait, not after 30 s, and the first request after the
server is back succeeds."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
from cryptography.fernet import Fernet
from mailroom_devstack.infra import Postgres
from mailroom_devstack.stack import Ports, Stack
from support import Tenant, create_tenant

BODY = {"from": "outage@example.test", "to": "success@simulator.amazonses.com", "subject": "s", "text": "t"}


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    pg = Postgres(tmp_path_factory.mktemp("outage-pg") / "pg").start()
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def api_stack(tmp_path_factory: pytest.TempPathFactory, private_pg: Postgres) -> Iterator[Stack]:
    stack = Stack(
        base_dir=tmp_path_factory.mktemp("outage"),
        ports=Ports.free(),
        operator_token=f"op_{secrets.token_hex(12)}",
        webhooks_secret_key=Fernet.generate_key().decode(),
        database_url=private_pg.create_database("mailroom"),
        processes=("api",),
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def timed(client: httpx.Client, method: str, path: str, **kwargs: object) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    return r, time.monotonic() - t0


def assert_unavailable_fast(r: httpx.Response, took: float) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "unavailable"
    assert r.headers["Retry-After"].isdigit()
    assert r.headers["X-Request-Id"]
    assert took < 2.0, took


def test_postgres_down_is_a_fast_503_and_the_first_request_after_recovery_succeeds(
    api_stack: Stack, private_pg: Postgres
) -> None:
    tenant: Tenant = create_tenant(api_stack)
    with httpx.Client(base_url=api_stack.url("api"), headers=tenant.headers("test"), timeout=40) as c:
        assert c.get("/v1/emails").status_code == 200
        url = private_pg.admin_url
        private_pg.stop()
        try:
            # The pool's idle connections are closed by the shutdown, then nothing answers at all;
            # keep asking long enough for a reconnection backoff to have grown.
            until = time.monotonic() + 6
            while time.monotonic() < until:
                assert_unavailable_fast(*timed(c, "GET", "/v1/emails"))
                assert_unavailable_fast(*timed(c, "POST", "/v1/emails", json=BODY))
            r = c.get("/ready")
            assert r.status_code != 200
        finally:
            private_pg.start()
        assert private_pg.admin_url == url
        r, took = timed(c, "POST", "/v1/emails", json=BODY)
        assert r.status_code == 202, r.text
        assert took < 2.0, took
        email = c.get(f"/v1/emails/{r.json()['id']}")
        assert email.status_code == 200


def test_a_postgres_restart_between_requests_is_invisible(api_stack: Stack, private_pg: Postgres) -> None:
    tenant = create_tenant(api_stack)
    with httpx.Client(base_url=api_stack.url("api"), headers=tenant.headers("test"), timeout=40) as c:
        assert c.get("/v1/emails").status_code == 200
        private_pg.stop()
        private_pg.start()  # every connection the api holds is now closed by the server
        r, took = timed(c, "GET", "/v1/emails")
        assert r.status_code == 200, r.text
        assert took < 1.0, took
