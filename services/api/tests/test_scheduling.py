"""Scheduled emails through the real app, Postgres and JetStream with the service's own workers
(relay and email log projector): `scheduled_at` validation (nothing written when refused), the
EmailQueued published no earlier than due and within a second after it, the email log moving
`scheduled → queued`, reschedule and cancel (409 once sending began, 404 across tenants), and a
cancel at the due moment: either sent or canceled, never both."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from api_testkit import Tenant, add_domain, assert_error, bearer, make_tenant, table_counts, unique_domain
from mailroom_contracts import decode, decode_event, subjects
from mailroom_contracts.content import CONTENT_BUCKET
from mailroom_contracts.events import (
    EmailCanceled,
    EmailQueued,
    EmailScheduled,
    EmailSuppressed,
    Event,
    SuppressedRecipient,
)
from mailroom_kit.runtime import Runtime
from nats.aio.msg import Msg
from nats.js.errors import ObjectNotFoundError

pytestmark = pytest.mark.usefixtures("workers")


class Heard:
    """Every email event published on this module's NATS, with the time it arrived."""

    def __init__(self) -> None:
        self.events: list[tuple[float, Event]] = []

    def of(self, kind: type[Event], email_id: str) -> list[tuple[float, Any]]:
        return [(t, e) for t, e in self.events if isinstance(e, kind) and getattr(e, "email_id", None) == email_id]


@pytest.fixture(scope="module")
async def heard(runtime: Runtime) -> AsyncIterator[Heard]:
    h = Heard()

    async def on_msg(msg: Msg) -> None:
        h.events.append((time.time(), decode_event(msg.data)))

    sub = await runtime.nc.subscribe(subjects.EMAIL_ALL, cb=on_msg)
    yield h
    await sub.unsubscribe()


@pytest.fixture(scope="module")
async def world(runtime: Runtime) -> tuple[Tenant, Tenant, str]:
    tenant, other = await make_tenant(runtime), await make_tenant(runtime, "Other")
    domain = unique_domain()
    await add_domain(runtime, tenant.id, domain)
    return tenant, other, domain


def at(seconds: float) -> datetime:
    """A time `seconds` from now, to the millisecond (what the API keeps in the timeline)."""
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def body(domain: str, scheduled_at: Any) -> dict[str, Any]:
    return {
        "from": f"Acme <hi@{domain}>",
        "to": ["ada@example.com"],
        "cc": ["bob@example.com"],
        "subject": "Later",
        "text": "see you",
        "scheduled_at": scheduled_at,
    }


async def schedule(client: httpx.AsyncClient, tenant: Tenant, domain: str, when: datetime) -> str:
    resp = await client.post("/v1/emails", json=body(domain, rfc3339(when)), headers=bearer(tenant.live))
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "scheduled"
    return str(resp.json()["id"])


async def until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def detail(client: httpx.AsyncClient, tenant: Tenant, email_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/emails/{email_id}", headers=bearer(tenant.live))
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


TABLES = ("emails", "email_recipients", "email_events", "outbox", "outbox_scheduled")


@pytest.mark.parametrize(
    "value",
    [
        "2020-01-01T00:00:00Z",  # past
        "in an hour",
        "2030-01-01",  # a date alone
        "2030-01-01T09:00:00",  # no offset
        "2030-13-01T09:00:00Z",
        1893456000,
        "",
    ],
)
async def test_bad_scheduled_at_is_a_422_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, world: tuple[Tenant, Tenant, str], value: Any
) -> None:
    tenant, _, domain = world
    before = await table_counts(runtime, *TABLES)
    resp = await client.post("/v1/emails", json=body(domain, value), headers=bearer(tenant.live))
    assert_error(resp, 422, "validation_error", "scheduled_at")
    assert await table_counts(runtime, *TABLES) == before


async def test_too_far_ahead_and_the_skew_allowance(
    client: httpx.AsyncClient, runtime: Runtime, world: tuple[Tenant, Tenant, str]
) -> None:
    tenant, _, domain = world
    before = await table_counts(runtime, *TABLES)
    too_far = rfc3339(at(30 * 24 * 3600 + 120))
    resp = await client.post("/v1/emails", json=body(domain, too_far), headers=bearer(tenant.live))
    assert_error(resp, 422, "validation_error", "scheduled_at")
    resp = await client.post("/v1/emails", json=body(domain, rfc3339(at(-120))), headers=bearer(tenant.live))
    assert_error(resp, 422, "validation_error", "scheduled_at")
    assert await table_counts(runtime, *TABLES) == before
    # Just under 30 days, with an offset other than Z: accepted (and shown in UTC).
    when = at(29 * 24 * 3600 + 23 * 3600).astimezone(timezone(timedelta(hours=2)))
    resp = await client.post(
        "/v1/emails", json=body(domain, when.isoformat(timespec="milliseconds")), headers=bearer(tenant.live)
    )
    assert resp.status_code == 202 and resp.json()["status"] == "scheduled", resp.text
    got = await detail(client, tenant, resp.json()["id"])
    assert got["scheduled_at"].endswith("Z") and datetime.fromisoformat(got["scheduled_at"]) == when
    # A few seconds in the past (a client clock ahead of ours): scheduled, and due at once.
    email_id = await schedule(client, tenant, domain, at(-5))
    await until(lambda: _status_is(client, tenant, email_id, "queued"))


async def _status_is(client: httpx.AsyncClient, tenant: Tenant, email_id: str, status: str) -> bool:
    return (await detail(client, tenant, email_id))["status"] == status


async def test_a_scheduled_email_is_queued_on_time_not_before(
    client: httpx.AsyncClient, runtime: Runtime, world: tuple[Tenant, Tenant, str], heard: Heard
) -> None:
    tenant, _, domain = world
    when = at(1.5)
    email_id = await schedule(client, tenant, domain, when)
    got = await detail(client, tenant, email_id)
    assert got["status"] == "scheduled"
    assert [r["status"] for r in got["recipients"]] == ["scheduled", "scheduled"]
    assert [e["type"] for e in got["events"]] == ["scheduled"]
    assert got["events"][0]["data"] == {"scheduled_at": rfc3339(when)}
    assert datetime.fromisoformat(got["scheduled_at"]) == when
    listed = (await client.get("/v1/emails?status=scheduled", headers=bearer(tenant.live))).json()["data"]
    assert email_id in [e["id"] for e in listed]
    # EmailScheduled goes out at once (webhooks hear of it), EmailQueued only at its time.
    await until(lambda: _async(bool(heard.of(EmailScheduled, email_id))))
    scheduled = heard.of(EmailScheduled, email_id)[0][1]
    assert scheduled.to[0].email == "ada@example.com" and scheduled.subject == "Later"
    assert not heard.of(EmailQueued, email_id)
    await until(lambda: _async(bool(heard.of(EmailQueued, email_id))), timeout=5)
    arrived, queued = heard.of(EmailQueued, email_id)[0]
    assert 0 <= arrived - when.timestamp() < 1.0, arrived - when.timestamp()
    assert queued.scheduled_at is not None and queued.text == "see you"
    await until(lambda: _status_is(client, tenant, email_id, "queued"))
    got = await detail(client, tenant, email_id)
    assert [e["type"] for e in got["events"]] == ["scheduled", "queued"]
    assert got["events"][1]["data"] == {}  # never the message
    assert [r["status"] for r in got["recipients"]] == ["queued", "queued"]
    # Its time has come: too late to move or cancel it.
    resp = await client.post(f"/v1/emails/{email_id}/cancel", headers=bearer(tenant.live))
    assert_error(resp, 409, "conflict", None)
    resp = await client.patch(
        f"/v1/emails/{email_id}", json={"scheduled_at": rfc3339(at(60))}, headers=bearer(tenant.live)
    )
    assert_error(resp, 409, "conflict", None)


async def _async(value: bool) -> bool:
    return value


async def test_reschedule_moves_it_and_cancel_stops_it(
    client: httpx.AsyncClient, runtime: Runtime, world: tuple[Tenant, Tenant, str], heard: Heard
) -> None:
    tenant, other, domain = world
    email_id = await schedule(client, tenant, domain, at(3600))
    # Bad new times: 422 and nothing changed.
    for bad in ("2020-01-01T00:00:00Z", "soon", rfc3339(at(31 * 24 * 3600))):
        resp = await client.patch(f"/v1/emails/{email_id}", json={"scheduled_at": bad}, headers=bearer(tenant.live))
        assert_error(resp, 422, "validation_error", "scheduled_at")
    resp = await client.patch(f"/v1/emails/{email_id}", json={}, headers=bearer(tenant.live))
    assert_error(resp, 422, "validation_error", "scheduled_at")
    # Another tenant (or the other mode) cannot see it: 404, as for an unknown id.
    for token in (other.live, tenant.test):
        resp = await client.post(f"/v1/emails/{email_id}/cancel", headers=bearer(token))
        assert_error(resp, 404, "not_found", None)
        resp = await client.patch(
            f"/v1/emails/{email_id}", json={"scheduled_at": rfc3339(at(60))}, headers=bearer(token)
        )
        assert_error(resp, 404, "not_found", None)
    unknown = "msg_" + "0" * 26
    resp = await client.post(f"/v1/emails/{unknown}/cancel", headers=bearer(tenant.live))
    assert_error(resp, 404, "not_found", None)
    assert (await detail(client, tenant, email_id))["status"] == "scheduled"

    # Reschedule to 1 s from now (a sending-access key may): it goes out then, not in an hour.
    when = at(1.0)
    resp = await client.patch(
        f"/v1/emails/{email_id}", json={"scheduled_at": rfc3339(when)}, headers=bearer(tenant.sending)
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "scheduled" and resp.json()["id"] == email_id
    await until(lambda: _async(len(heard.of(EmailScheduled, email_id)) == 2))
    assert heard.of(EmailScheduled, email_id)[1][1].scheduled_at == when
    await until(lambda: _async(bool(heard.of(EmailQueued, email_id))), timeout=5)
    arrived, queued = heard.of(EmailQueued, email_id)[0]
    assert 0 <= arrived - when.timestamp() < 1.0
    assert queued.scheduled_at == when
    assert datetime.fromisoformat((await detail(client, tenant, email_id))["scheduled_at"]) == when

    # Cancel another one: canceled, never queued, and a second cancel (or a reschedule) is a 409.
    canceled_id = await schedule(client, tenant, domain, at(1.0))
    resp = await client.post(f"/v1/emails/{canceled_id}/cancel", headers=bearer(tenant.sending))
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "canceled"
    got = await detail(client, tenant, canceled_id)
    assert got["status"] == "canceled" and {r["status"] for r in got["recipients"]} == {"canceled"}
    assert [e["type"] for e in got["events"]] == ["scheduled", "canceled"]
    resp = await client.post(f"/v1/emails/{canceled_id}/cancel", headers=bearer(tenant.live))
    assert_error(resp, 409, "conflict", None)
    resp = await client.patch(
        f"/v1/emails/{canceled_id}", json={"scheduled_at": rfc3339(at(60))}, headers=bearer(tenant.live)
    )
    assert_error(resp, 409, "conflict", None)
    await until(lambda: _async(bool(heard.of(EmailCanceled, canceled_id))))
    await asyncio.sleep(1.5)  # past its old time
    assert not heard.of(EmailQueued, canceled_id)
    assert (await detail(client, tenant, canceled_id))["status"] == "canceled"


async def test_a_plain_email_cannot_be_canceled(client: httpx.AsyncClient, world: tuple[Tenant, Tenant, str]) -> None:
    tenant, _, domain = world
    plain = {k: v for k, v in body(domain, None).items() if k != "scheduled_at"}
    resp = await client.post("/v1/emails", json=plain, headers=bearer(tenant.live))
    assert resp.status_code == 202 and resp.json()["status"] == "queued"
    email_id = resp.json()["id"]
    assert (await detail(client, tenant, email_id))["scheduled_at"] is None
    resp = await client.post(f"/v1/emails/{email_id}/cancel", headers=bearer(tenant.live))
    assert_error(resp, 409, "conflict", None)


async def test_cancel_at_the_due_moment_is_sent_or_canceled_never_both(
    client: httpx.AsyncClient, runtime: Runtime, world: tuple[Tenant, Tenant, str], heard: Heard
) -> None:
    tenant, _, domain = world
    due = [at(1.0 + 0.05 * i) for i in range(24)]
    ids = [await schedule(client, tenant, domain, when) for when in due]
    outcomes: dict[str, int] = {}

    async def cancel_at(email_id: str, when: datetime) -> None:
        await asyncio.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds() + random.uniform(-0.02, 0.03)))
        resp = await client.post(f"/v1/emails/{email_id}/cancel", headers=bearer(tenant.live))
        outcomes[email_id] = resp.status_code

    await asyncio.gather(*(cancel_at(i, w) for i, w in zip(ids, due, strict=True)))
    await asyncio.sleep(1.0)  # whatever was published has arrived
    sent = {i for i in ids if heard.of(EmailQueued, i)}
    canceled = {i for i, status in outcomes.items() if status == 200}
    assert set(outcomes.values()) <= {200, 409}
    assert not sent & canceled, "sent and canceled"
    assert sent | canceled == set(ids), "neither sent nor canceled"
    assert sent and canceled, "the race went one way only: the test did not exercise it"
    for email_id in ids:
        await until(lambda e=email_id: _status_is(client, tenant, e, "canceled" if e in canceled else "queued"))


async def test_batch_items_and_keyed_sends_can_be_scheduled(
    client: httpx.AsyncClient, runtime: Runtime, world: tuple[Tenant, Tenant, str], heard: Heard
) -> None:
    tenant, _, domain = world
    when = at(1.0)
    plain = {k: v for k, v in body(domain, None).items() if k != "scheduled_at"}
    items = [plain, body(domain, rfc3339(when)), body(domain, "2020-01-01T00:00:00Z")]
    resp = await client.post("/v1/emails/batch", json={"emails": items}, headers=bearer(tenant.live))
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert [d.get("status") for d in data[:2]] == ["queued", "scheduled"]
    assert (data[2]["error"], data[2]["param"]) == ("validation_error", "scheduled_at")
    now_id, later_id = data[0]["id"], data[1]["id"]
    # The same through the Idempotency-Key statement; its replay says `scheduled` again.
    keyed_body = body(domain, rfc3339(when))
    headers = {**bearer(tenant.live), "Idempotency-Key": f"sched-{later_id}"}
    first = await client.post("/v1/emails", json=keyed_body, headers=headers)
    again = await client.post("/v1/emails", json=keyed_body, headers=headers)
    assert first.status_code == again.status_code == 202 and again.headers.get("idempotent-replayed") == "true"
    assert first.json() == again.json() and first.json()["status"] == "scheduled"
    keyed_id = first.json()["id"]
    for email_id in (later_id, keyed_id):
        got = await detail(client, tenant, email_id)
        assert got["status"] == "scheduled" and [e["type"] for e in got["events"]] == ["scheduled"]
        assert got["events"][0]["data"] == {"scheduled_at": rfc3339(when)}
    await until(lambda: _async(bool(heard.of(EmailQueued, now_id))))
    for email_id in (later_id, keyed_id):
        await until(lambda e=email_id: _async(bool(heard.of(EmailScheduled, e))))
        await until(lambda e=email_id: _async(bool(heard.of(EmailQueued, e))), timeout=5)
        arrived, queued = heard.of(EmailQueued, email_id)[0]
        assert 0 <= arrived - when.timestamp() < 1.0 and queued.scheduled_at == when
        await until(lambda e=email_id: _status_is(client, tenant, e, "queued"))
    assert len(heard.of(EmailQueued, keyed_id)) == 1  # the replay wrote nothing


async def test_a_large_scheduled_email_keeps_its_stored_content_until_canceled(
    client: httpx.AsyncClient, runtime: Runtime, world: tuple[Tenant, Tenant, str], heard: Heard
) -> None:
    tenant, _, domain = world
    big = {**body(domain, rfc3339(at(3600))), "text": "x" * (300 * 1024)}  # over the 256 KiB threshold
    resp = await client.post("/v1/emails", json=big, headers=bearer(tenant.live))
    assert resp.status_code == 202 and resp.json()["status"] == "scheduled", resp.text
    email_id = resp.json()["id"]
    store = await runtime.js.object_store(CONTENT_BUCKET.bucket)
    assert (await store.get(email_id)).data  # offloaded, kept while the email waits
    # A reschedule rewrites the waiting event; it still refers to the object.
    resp = await client.patch(
        f"/v1/emails/{email_id}", json={"scheduled_at": rfc3339(at(7200))}, headers=bearer(tenant.live)
    )
    assert resp.status_code == 200, resp.text
    async with runtime.pool.connection() as conn:
        cur = await conn.execute("SELECT payload FROM outbox_scheduled WHERE event_id = %s", ("evt_" + email_id[4:],))
        row = await cur.fetchone()
    assert row is not None
    waiting = decode(bytes(row["payload"]), EmailQueued)
    assert waiting.content is not None and waiting.content.name == email_id and waiting.text is None
    assert waiting.scheduled_at is not None and waiting.scheduled_at > datetime.now(UTC) + timedelta(seconds=7000)
    # Canceled: nothing will ever read it, so it is deleted.
    resp = await client.post(f"/v1/emails/{email_id}/cancel", headers=bearer(tenant.live))
    assert resp.status_code == 200, resp.text
    with pytest.raises(ObjectNotFoundError):
        await store.get(email_id)


async def test_recipients_suppressed_before_the_due_time_are_dropped_at_release(
    client: httpx.AsyncClient, runtime: Runtime, world: tuple[Tenant, Tenant, str], heard: Heard
) -> None:
    """Issue 22: the relay re-checks the list when the email falls due. A recipient suppressed
    since the accept is left out of the EmailQueued (status `suppressed`, an EmailSuppressed); an
    email left with nobody is never published (status `suppressed`); another tenant's list and the
    test list change nothing."""
    tenant, other, domain = world
    when = at(2)
    partly = await schedule(client, tenant, domain, when)
    resp = await client.post(
        "/v1/emails",
        json={**body(domain, rfc3339(when)), "to": ["carol@example.com"], "cc": []},
        headers=bearer(tenant.live),
    )
    assert resp.status_code == 202, resp.text
    wholly = resp.json()["id"]
    for token, address in (
        (tenant.live, "Bob@Example.com"),
        (tenant.live, "carol@example.com"),
        (other.live, "ada@example.com"),
        (tenant.test, "ada@example.com"),
    ):
        added = await client.post("/v1/suppressions", json={"email": address}, headers=bearer(token))
        assert added.status_code == 201, added.text
    assert datetime.now(UTC) < when, "the machine is too slow for this test's schedule"
    await until(lambda: _status_is(client, tenant, partly, "queued"))
    [(_, queued)] = heard.of(EmailQueued, partly)
    assert ([a.email for a in queued.to], queued.cc) == (["ada@example.com"], [])
    got = await detail(client, tenant, partly)
    assert [(r["email"], r["status"]) for r in got["recipients"]] == [
        ("ada@example.com", "queued"),
        ("bob@example.com", "suppressed"),
    ]
    await until(lambda: _async(bool(heard.of(EmailSuppressed, partly))))
    [(_, notice)] = heard.of(EmailSuppressed, partly)
    assert notice.recipients == [SuppressedRecipient(email="bob@example.com", reason="manual")]

    await until(lambda: _status_is(client, tenant, wholly, "suppressed"))
    await until(lambda: _async(bool(heard.of(EmailSuppressed, wholly))))
    assert heard.of(EmailQueued, wholly) == []  # never published: the sender never hears of it
    got = await detail(client, tenant, wholly)
    assert [r["status"] for r in got["recipients"]] == ["suppressed"]
    assert heard.of(EmailSuppressed, wholly)[0][1].recipients == [
        SuppressedRecipient(email="carol@example.com", reason="manual")
    ]
    async with runtime.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM outbox_scheduled WHERE event_id = %s", ("evt_" + wholly[4:],)
        )
        row = await cur.fetchone()
    assert row is not None and row["n"] == 0
    listed = (await client.get("/v1/emails?status=suppressed", headers=bearer(tenant.live))).json()["data"]
    assert [e["id"] for e in listed] == [wholly]
    # Its time has passed: it cannot be canceled any more.
    assert_error(await client.post(f"/v1/emails/{wholly}/cancel", headers=bearer(tenant.live)), 409, "conflict", None)
