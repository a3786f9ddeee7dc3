"""The SNS forgery matrix (issue 14): every way a hostile client can dress up a message for
`POST /ses/sns` is refused (or, for a replay, acknowledged without a second event), and in every
case the database and the stream prove it: no new `sns_messages` or `subscriptions` row beyond
what the case allows, no outbox row, no message on `MAILROOM_EMAIL`. Also the hostile bodies
(deep nesting, invalid UTF-8, NUL, oversize) that must be a clean 4xx, never a 500.

The real app over real Postgres and a private nats-server, with the service's own outbox relay
running, so an event that slipped through would show up on the stream; messages are signed by
the events test kit's local keys, whose certificates a real local HTTP server serves."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from events_testkit import (
    LOCAL_PATTERN,
    TEXT_PLAIN,
    CertServer,
    LocalSigner,
    confirmation,
    notification,
    ses_record,
)
from litestar.testing import AsyncTestClient
from mailroom_contracts.streams import EMAIL_STREAM
from mailroom_events.app import build_verifier, create_app, relay
from mailroom_events.handlers import MAX_BODY
from mailroom_events.settings import EventsSettings
from mailroom_events.sns import DEFAULT_MAX_AGE, DEFAULT_MAX_FUTURE_SKEW, SnsVerifier
from mailroom_kit.ids import new_id
from mailroom_kit.runtime import Runtime
from mailroom_kit.settings import SettingsError

Client = AsyncTestClient  # type: ignore[type-arg]
OTHER_TOPIC = "arn:aws:sns:us-east-1:000000000000:someone-else"
EXPIRED_CERT_PATH = "/SimpleNotificationService-expired.pem"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def relaying(runtime: Runtime) -> AsyncIterator[None]:
    """The service's own relay worker, publishing whatever reaches the outbox to JetStream."""
    stop = asyncio.Event()
    relay_rt = dataclasses.replace(runtime, stop=stop)
    task = asyncio.create_task(relay(relay_rt))
    yield
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.fixture(scope="module")
async def https_only_client(runtime: Runtime) -> AsyncIterator[Client]:
    """The same app with production's scheme rule: certificate and subscribe URLs must be https."""
    verifier = SnsVerifier(
        allowed_topics=runtime.settings.topic_arns, cert_host_pattern=LOCAL_PATTERN, allow_http_cert_urls=False
    )
    async with AsyncTestClient(app=create_app(runtime, verifier)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def expired_signer(cert_server: CertServer) -> LocalSigner:
    """A key whose certificate expired yesterday, served from the trusted host."""
    now = datetime.now(UTC)
    signer = LocalSigner(not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))
    cert_server.other_pems[EXPIRED_CERT_PATH] = signer.pem
    return signer


@dataclass(frozen=True)
class State:
    sns_messages: int
    subscriptions: int
    outbox: int
    stream: int


async def settled_state(runtime: Runtime) -> State:
    """Row counts and the stream's message count, once the relay has emptied the outbox."""
    row: dict[str, Any] | None = None
    for _ in range(200):
        async with runtime.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT (SELECT count(*) FROM sns_messages) AS sns, (SELECT count(*) FROM subscriptions) AS subs, "
                "(SELECT count(*) FROM outbox) AS outbox"
            )
            row = await cur.fetchone()
        if row is not None and row["outbox"] == 0:
            break
        await asyncio.sleep(0.05)
    assert row is not None
    info = await runtime.js.stream_info(EMAIL_STREAM.name)
    return State(int(row["sns"]), int(row["subs"]), int(row["outbox"]), int(info.state.messages))


async def post(client: Client, body: dict[str, Any] | bytes) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post("/ses/sns", content=content, headers=TEXT_PLAIN)


# --------------------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Kit:
    signer: LocalSigner
    expired: LocalSigner
    server: CertServer

    def delivery(self, **kwargs: Any) -> dict[str, Any]:
        """An authentic, signed Delivery notification for a fresh Mailroom email."""
        return notification(self.signer, self.server, ses_record("delivery", email_id=new_id("msg")), **kwargs)


def _resigned(kit: Kit, body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return kit.signer.sign({k: v for k, v in {**body, **changes}.items() if k != "Signature"})


def _bad_signature(kit: Kit) -> dict[str, Any]:
    body = kit.delivery()
    i = body["Message"].index("recipient@example.com")
    return {**body, "Message": body["Message"][:i] + "R" + body["Message"][i + 1 :]}


def _foreign_subscribe_url(kit: Kit) -> dict[str, Any]:
    token = uuid.uuid4().hex
    return confirmation(kit.signer, kit.server, f"http://evil.example/confirm?Token={token}", token)


@dataclass(frozen=True)
class Case:
    build: Callable[[Kit], dict[str, Any]]
    status: int
    answer: str  # the `error` code, or the `status` of a 200
    reason: str = ""  # the verifier's reason, named in the refusal's message
    https_only: bool = False  # against the app that allows https URLs only
    replay: bool = False  # delivered once (authentic, accepted) before the replay
    rows: int = 0  # sns_messages rows the case may add
    events: int = 0  # lifecycle events the case may add (outbox → stream)
    fetches: bool = False  # may the certificate server be asked anything (else: refused before any fetch)


CASES: dict[str, Case] = {
    "unsigned": Case(
        lambda kit: {k: v for k, v in kit.delivery().items() if k not in ("Signature", "SigningCertURL")},
        400,
        "invalid_json",
    ),
    "bad signature": Case(_bad_signature, 403, "forbidden", "bad_signature", fetches=True),
    "foreign certificate host": Case(
        lambda kit: kit.delivery(cert_url="http://evil.example/SimpleNotificationService-x.pem"),
        403,
        "forbidden",
        "untrusted_cert_url",
    ),
    "http certificate URL": Case(lambda kit: kit.delivery(), 403, "forbidden", "untrusted_cert_url", https_only=True),
    "expired certificate": Case(
        lambda kit: notification(
            kit.expired,
            kit.server,
            ses_record("delivery", email_id=new_id("msg")),
            cert_url=kit.server.base + EXPIRED_CERT_PATH,
        ),
        403,
        "forbidden",
        "cert_expired",
        fetches=True,
    ),
    "wrong TopicArn": Case(lambda kit: kit.delivery(topic=OTHER_TOPIC), 403, "forbidden", "topic_not_allowed"),
    "replayed MessageId": Case(
        lambda kit: kit.delivery(), 200, "duplicate", replay=True, rows=1, events=1, fetches=True
    ),
    "stale Timestamp": Case(
        lambda kit: kit.delivery(at=datetime.now(UTC) - DEFAULT_MAX_AGE - timedelta(minutes=1)),
        403,
        "forbidden",
        "stale_timestamp",
        fetches=True,
    ),
    "future Timestamp": Case(
        lambda kit: kit.delivery(at=datetime.now(UTC) + DEFAULT_MAX_FUTURE_SKEW + timedelta(minutes=1)),
        403,
        "forbidden",
        "future_timestamp",
        fetches=True,
    ),
    "foreign SubscribeURL host": Case(
        _foreign_subscribe_url, 403, "forbidden", "SubscribeURL host is not trusted", fetches=True
    ),
    "unknown SignatureVersion": Case(
        lambda kit: _resigned(kit, kit.delivery(), SignatureVersion="3"), 403, "forbidden", "bad_signature_version"
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.usefixtures("relaying")
async def test_forged_sns_message_is_refused_and_changes_nothing(
    client: Client,
    https_only_client: Client,
    runtime: Runtime,
    signer: LocalSigner,
    expired_signer: LocalSigner,
    cert_server: CertServer,
    case: Case,
) -> None:
    kit = Kit(signer=signer, expired=expired_signer, server=cert_server)
    app = https_only_client if case.https_only else client
    body = case.build(kit)
    before = await settled_state(runtime)
    requests_before = len(cert_server.requests)
    if case.replay:
        first = await post(app, body)
        assert first.status_code == 200 and first.json() == {"status": "mapped"}

    r = await post(app, body)

    assert r.status_code == case.status, r.text
    payload = r.json()
    if case.status == 200:
        assert payload == {"status": case.answer}
    else:
        assert payload["error"] == case.answer and payload["request_id"] == r.headers["x-request-id"]
        assert case.reason in payload["message"]
    after = await settled_state(runtime)
    assert after == State(
        sns_messages=before.sns_messages + case.rows,
        subscriptions=before.subscriptions,
        outbox=0,
        stream=before.stream + case.events,
    )
    if not case.fetches:
        assert cert_server.requests[requests_before:] == []
    # A refused SubscribeURL is never fetched (the certificate, at most, was).
    assert [r.path for r in cert_server.requests[requests_before:] if not r.path.endswith(".pem")] == []


# --------------------------------------------------------------------------- hostile bodies (issue 14, defect 1)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


HOSTILE: dict[str, Callable[[Kit], bytes]] = {
    "body nested 10,000 deep": lambda kit: _deep(10_000).encode(),
    "object nested 10,000 deep": lambda kit: b'{"Type": ' * 10_000,
    "signed Message nested 10,000 deep": lambda kit: json.dumps(
        notification(kit.signer, kit.server, _deep(10_000))
    ).encode(),
    "signed SES record with a field nested 10,000 deep": lambda kit: json.dumps(
        notification(kit.signer, kit.server, '{"eventType": "Send", "mail": ' + _deep(10_000) + "}")
    ).encode(),
    "invalid UTF-8": lambda kit: json.dumps(kit.delivery()).encode().replace(b"recipient@", b"recipient\xff@", 1),
    "lone surrogate": lambda kit: json.dumps(kit.delivery()).encode().replace(b"Amazon SES", b"\\udc00", 1),
    "signed NUL in MessageId": lambda kit: json.dumps(
        _resigned(kit, kit.delivery(), MessageId=f"{uuid.uuid4()}\u0000")
    ).encode(),
    "signed NUL in Message": lambda kit: json.dumps(
        _resigned(kit, kit.delivery(), Message="\u0000" + ses_record("delivery", email_id=new_id("msg")))
    ).encode(),
    "signed MessageId of 10,000 characters": lambda kit: json.dumps(
        _resigned(kit, kit.delivery(), MessageId="m" * 10_000)
    ).encode(),
}


@pytest.mark.parametrize("build", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.usefixtures("relaying")
async def test_hostile_body_is_400_invalid_json_and_changes_nothing(
    client: Client,
    runtime: Runtime,
    signer: LocalSigner,
    expired_signer: LocalSigner,
    cert_server: CertServer,
    build: Callable[[Kit], bytes],
) -> None:
    content = build(Kit(signer=signer, expired=expired_signer, server=cert_server))
    assert len(content) <= MAX_BODY
    before = await settled_state(runtime)
    r = await post(client, content)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_json"
    assert await settled_state(runtime) == before


@pytest.mark.usefixtures("relaying")
async def test_body_over_the_limit_is_413_and_changes_nothing(client: Client, runtime: Runtime) -> None:
    before = await settled_state(runtime)
    r = await post(client, b'{"Type": "Notification", "Message": "' + b"x" * MAX_BODY + b'"}')
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    assert await settled_state(runtime) == before


@pytest.mark.usefixtures("relaying")
async def test_nul_escape_inside_an_authentic_ses_record_is_mapped_not_a_500(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    """Postgres text cannot hold NUL: a `\\u0000` in an SES record (tags, diagnostic text) used to
    fail the transaction with a 500 that SNS would retry for an hour."""
    email_id = new_id("msg")
    record = json.loads(ses_record("delivery", email_id=email_id))
    record["mail"]["messageId"] += "\u0000"
    record["delivery"]["smtpResponse"] = "250 ok\u0000"
    before = await settled_state(runtime)
    r = await post(client, notification(signer, cert_server, json.dumps(record) + "\n"))
    assert r.status_code == 200 and r.json() == {"status": "mapped"}, r.text
    after = await settled_state(runtime)
    assert (after.sns_messages, after.stream) == (before.sns_messages + 1, before.stream + 1)
    async with runtime.pool.connection() as conn:
        cur = await conn.execute("SELECT ses_message_id FROM sns_messages WHERE email_id = %s", (email_id,))
        row = await cur.fetchone()
    assert row is not None and row["ses_message_id"].endswith("\ufffd")


def test_max_age_setting_reaches_the_verifier() -> None:
    assert build_verifier(EventsSettings.from_env({})).max_age == DEFAULT_MAX_AGE == timedelta(seconds=3600)
    settings = EventsSettings.from_env({"MAILROOM_EVENTS_SNS_MAX_AGE_SECONDS": "600"})
    assert build_verifier(settings).max_age == timedelta(minutes=10)
    for bad in ("0", "-5", "an hour"):
        with pytest.raises(SettingsError, match="MAILROOM_EVENTS_SNS_MAX_AGE_SECONDS"):
            EventsSettings.from_env({"MAILROOM_EVENTS_SNS_MAX_AGE_SECONDS": bad})
