"""Fixtures for the webhooks suite: the migrated `webhooks` schema, an own nats-server with the
Mailroom streams and consumers, a real HTTP(S) receiver, and an in-process service harness."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import nats
import psycopg
import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mailroom_contracts import encode, subject_for
from mailroom_contracts.events import Event
from mailroom_contracts.streams import CONSUMERS, STREAMS
from mailroom_devstack.infra import NatsServer
from mailroom_kit.db import open_pool
from mailroom_kit.jetstream import reconcile
from mailroom_kit.migrations import migrate
from mailroom_kit.runtime import Runtime
from mailroom_webhooks.app import MIGRATIONS, SCHEMA, build_workers
from mailroom_webhooks.settings import WebhooksSettings
from mailroom_webhooks.transport import Resolver, system_resolver
from psycopg.rows import dict_row

FERNET_KEY = Fernet.generate_key().decode()


# ----------------------------------------------------------------------------- infrastructure


@pytest.fixture(scope="session")
async def webhooks_db(database_url: str) -> str:
    await migrate(database_url, SCHEMA, MIGRATIONS)
    return database_url


@pytest.fixture(scope="session")
def webhooks_nats() -> Iterator[str]:
    """Our own nats-server: the MAILROOM_* streams would collide on the shared session server."""
    with tempfile.TemporaryDirectory(prefix="wh-nats-") as tmp:
        server = NatsServer(Path(tmp)).start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture(scope="session")
async def js_ready(webhooks_nats: str) -> str:
    nc = await nats.connect(webhooks_nats)
    await reconcile(nc.jetstream(), STREAMS, CONSUMERS)
    await nc.close()
    return webhooks_nats


@pytest.fixture
async def db(webhooks_db: str) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
    """An autocommit connection on the webhooks schema; the schema's tables start (and end) empty."""
    conn = await psycopg.AsyncConnection.connect(
        webhooks_db, row_factory=dict_row, options=f"-c search_path={SCHEMA}", autocommit=True
    )
    truncate = "TRUNCATE endpoint_notices, delivery_attempts, deliveries, endpoints, email_summaries, inbox, outbox"
    await conn.execute(truncate)
    yield conn
    await conn.execute(truncate)
    await conn.close()


@pytest.fixture
async def publisher(js_ready: str) -> AsyncIterator[Publisher]:
    nc = await nats.connect(js_ready)
    yield Publisher(nc)
    await nc.close()


class Publisher:
    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.js = nc.jetstream()

    async def publish(self, event: Event, msg_id: str | None = None) -> None:
        ack = await self.js.publish(
            subject_for(event), encode(event), headers={"Nats-Msg-Id": msg_id or event.event_id}
        )
        assert not ack.duplicate


def settings(**overrides: Any) -> WebhooksSettings:
    base: dict[str, Any] = {
        "secret_key": FERNET_KEY,
        "allow_http": True,
        "allowed_cidrs": "127.0.0.0/8",
        "retry_delays_seconds": "0.2",
        "poll_interval_seconds": 0.1,
        "summary_retry_seconds": 0.2,
        "timeout_seconds": 5.0,
    }
    base.update(overrides)
    return msgspec.convert(base, WebhooksSettings)


# ----------------------------------------------------------------------------- service harness


@dataclass
class Harness:
    settings: WebhooksSettings
    runtime: Runtime
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def nc(self) -> Any:
        return self.runtime.nc


@pytest.fixture
async def start_service(webhooks_db: str, js_ready: str, db: Any) -> AsyncIterator[Any]:
    """`await start_service(workers=..., ssl_context=..., resolver=..., nats_url=..., **settings)` runs
    the service's workers in this process against the real Postgres and NATS (the session's, or the
    server at `nats_url`: a test that restarts NATS brings its own); stopped at teardown."""
    started: list[Harness] = []

    async def start(
        *,
        workers: tuple[str, ...] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        resolver: Resolver = system_resolver,
        clock: Any = None,
        nats_url: str | None = None,
        **overrides: Any,
    ) -> Harness:
        s = settings(database_url=webhooks_db, nats_url=nats_url or js_ready, **overrides)
        pool = await open_pool(webhooks_db, SCHEMA, min_size=1, max_size=10)
        nc = await nats.connect(s.nats_url)
        rt = Runtime(
            name="webhooks",
            schema=SCHEMA,
            settings=s,
            migrations_dir=MIGRATIONS,
            pool=pool,
            nc=nc,
            js=nc.jetstream(),
        )
        harness = Harness(settings=s, runtime=rt)
        extra = {"clock": clock} if clock is not None else {}
        for worker in build_workers(s, ssl_context=ssl_context, resolver=resolver, **extra):
            if workers is None or worker.__name__ in workers:
                harness.tasks.append(asyncio.create_task(worker(rt), name=worker.__name__))
        started.append(harness)
        await asyncio.sleep(0.1)  # responders subscribed
        return harness

    yield start
    for harness in started:
        harness.runtime.stop.set()
    for harness in started:
        _, pending = await asyncio.wait(harness.tasks, timeout=3) if harness.tasks else (set(), set())
        for task in pending:
            task.cancel()
        for task in harness.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"worker {task.get_name()} crashed: {task.exception()!r}")
        await harness.runtime.nc.close()
        await harness.runtime.pool.close()


# ----------------------------------------------------------------------------- HTTP receiver


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes = b'{"ok": true}'


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A real HTTP (or HTTPS) server in a thread that records every POST and answers from a script."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.received: list[Received] = []
        self.scripts: dict[str, list[Reply]] = {}
        self.active: dict[str, int] = {}
        self.max_active: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                path = self.path
                with receiver.lock:
                    receiver.received.append(
                        Received(
                            path=path,
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                            at=time.monotonic(),
                        )
                    )
                    script = receiver.scripts.get(path)
                    reply = script.pop(0) if script else Reply()
                    receiver.active[path] = receiver.active.get(path, 0) + 1
                    receiver.max_active[path] = max(receiver.max_active.get(path, 0), receiver.active[path])
                try:
                    if reply.delay:
                        time.sleep(reply.delay)
                    payload = reply.body
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout test)
                finally:
                    with receiver.lock:
                        receiver.active[path] -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        with self.lock:
            self.scripts[path] = list(replies)

    def posts(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    async def wait_for(self, path: str, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.posts(path)
            if len(got) >= count:
                return got
            await asyncio.sleep(0.05)
        raise AssertionError(f"{path}: expected {count} POSTs, got {len(self.posts(path))}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@dataclass
class TestCA:
    """A throwaway CA and a server certificate for `names` (DNS) and 127.0.0.1."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    def server_context(self, tmp: Path) -> ssl.SSLContext:
        (tmp / "cert.pem").write_bytes(self.cert_pem)
        (tmp / "key.pem").write_bytes(self.key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
        return ctx


def make_ca(*names: str) -> TestCA:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailroom test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return TestCA(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[Receiver, TestCA]]:
    ca = make_ca("hook.test", "localhost")
    r = Receiver(ssl_context=ca.server_context(tmp_path))
    yield r, ca
    r.close()


async def eventually(check: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async `check()` until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


class FakeClock:
    """An injectable clock for the dispatcher: starts at the real time, moves only when told."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)

    def set(self, moment: dt.datetime) -> None:
        self.now = max(self.now, moment)


@pytest.fixture
def h() -> SimpleNamespace:
    """Helpers for test modules (importlib import mode keeps conftest out of reach of imports)."""
    return SimpleNamespace(
        Reply=Reply,
        make_ca=make_ca,
        eventually=eventually,
        settings=settings,
        FERNET_KEY=FERNET_KEY,
        FakeClock=FakeClock,
    )
