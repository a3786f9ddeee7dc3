"""Test helpers for the SES emulator: a real SNS HTTP subscriber that confirms its subscription and
verifies every message's signature itself (string to sign built per the fixtures README), and
boto3/MIME helpers. (A uniquely named module, imported through ``sys.path`` by conftest.py.)"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import boto3
import httpx
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from mailroom_ses_emulator import EmulatorServer

TOPIC = "arn:aws:sns:us-east-1:000000000000:mailroom-ses-events"
FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "ses-sns"  # copy of shared/fixtures
T = TypeVar("T")
StartEmulator = Callable[..., EmulatorServer]


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


# ----------------------------------------------------------------------------------------------
# SNS signature verification, written from the fixtures README ("String to sign")
# ----------------------------------------------------------------------------------------------
def sns_string_to_sign(msg: dict[str, Any]) -> bytes:
    if msg["Type"] == "Notification":
        keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    out = []
    for key in keys:
        if key == "Subject" and msg.get("Subject") is None:
            continue
        out.append(f"{key}\n{msg[key]}\n")
    return "".join(out).encode("utf-8")


def verify_sns_signature(msg: dict[str, Any], cert_pem: bytes, check_validity: bool = True) -> None:
    """Raise if ``msg`` is not signed by ``cert_pem``'s key (InvalidSignature / AssertionError)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    if check_validity:
        now = dt.datetime.now(dt.UTC)
        assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc, "certificate not valid now"
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == "sns.amazonaws.com", cn
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    algo: hashes.HashAlgorithm = hashes.SHA256() if msg["SignatureVersion"] == "2" else hashes.SHA1()
    key.verify(base64.b64decode(msg["Signature"]), sns_string_to_sign(msg), padding.PKCS1v15(), algo)


# ----------------------------------------------------------------------------------------------
# The subscriber
# ----------------------------------------------------------------------------------------------
@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes
    path: str

    @property
    def type(self) -> str:
        return str(self.body["Type"])

    @functools.cached_property
    def record(self) -> dict[str, Any] | None:
        """The parsed SES record of an event Notification (None for other messages)."""
        if self.type != "Notification":
            return None
        try:
            rec = json.loads(self.body["Message"])
        except ValueError:
            return None
        return rec if isinstance(rec, dict) else None


@dataclass
class SnsReceiver:
    auto_confirm: bool = True
    fail_notifications: int = 0  # answer 500 to this many Notifications
    messages: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    confirm_responses: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _certs: dict[str, bytes] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    url: str = ""

    # -- queries --
    def of_type(self, type_: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.type == type_]

    def events(self, ses_message_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            recs = [m.record for m in self.messages if m.record is not None]
        return [r for r in recs if ses_message_id is None or r["mail"]["messageId"] == ses_message_id]

    def event_types(self, ses_message_id: str) -> list[str]:
        return [r["eventType"] for r in self.events(ses_message_id)]

    def validations(self) -> list[Received]:
        return [
            m
            for m in self.of_type("Notification")
            if m.body["Message"] == "Successfully validated SNS topic for Amazon SES event publishing."
        ]

    # -- server --
    def _cert(self, url: str) -> bytes:
        with self.lock:
            if url in self._certs:
                return self._certs[url]
        resp = httpx.get(url, timeout=5)
        resp.raise_for_status()
        with self.lock:
            self._certs[url] = resp.content
        return resp.content

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> int:
        body = json.loads(raw)
        msg = Received(headers=headers, body=body, raw=raw, path=path)
        try:
            self._cert(body["SigningCertURL"])
        except httpx.HTTPError:  # the emulator may be stopping at the end of a test
            return 503
        try:
            self._check(msg)
        except Exception as exc:
            with self.lock:
                self.errors.append(f"{type(exc).__name__}: {exc} in {raw[:300]!r}")
            return 400
        if msg.type == "Notification":
            with self.lock:
                if self.fail_notifications > 0:
                    self.fail_notifications -= 1
                    return 500
        if msg.type == "SubscriptionConfirmation" and self.auto_confirm:
            try:
                resp = httpx.get(body["SubscribeURL"], timeout=5)
            except httpx.HTTPError:  # the emulator may be stopping at the end of a test
                return 500
            with self.lock:
                self.confirm_responses.append(resp.text)
            if resp.status_code != 200:
                return 500
        with self.lock:
            self.messages.append(msg)
        return 200

    def _check(self, msg: Received) -> None:
        body, h = msg.body, msg.headers
        assert h.get("content-type") == "text/plain; charset=UTF-8", h
        assert h["x-amz-sns-message-type"] == body["Type"]
        assert h["x-amz-sns-message-id"] == body["MessageId"]
        assert h["x-amz-sns-topic-arn"] == body["TopicArn"]
        if body["Type"] == "Notification":
            assert h["x-amz-sns-subscription-arn"].startswith(body["TopicArn"] + ":")
        else:
            assert "x-amz-sns-subscription-arn" not in h
        assert body["SignatureVersion"] == "2"
        assert body["Timestamp"].endswith("Z") and len(body["Timestamp"]) == 24
        verify_sns_signature(body, self._cert(body["SigningCertURL"]))

    def start(self) -> SnsReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver.handle(self.path, headers, raw)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/ses/sns"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def ses_client(url: str) -> Any:
    return boto3.client(
        "sesv2",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(max_pool_connections=32, retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def raw_mime(
    to: str = "success@simulator.amazonses.com",
    from_: str = "Mailroom <noreply@example.com>",
    subject: str = "Hello",
    extra: str = "",
) -> bytes:
    return (
        f"From: {from_}\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=UTF-8\r\n\r\nHello there.\r\n"
    ).encode()


ALL_TYPES = ["SEND", "DELIVERY", "BOUNCE", "COMPLAINT", "REJECT", "DELIVERY_DELAY", "RENDERING_FAILURE"]


def setup_events(
    ses: Any,
    receiver: SnsReceiver,
    *,
    domain: str = "example.com",
    config_set: str = "mailroom",
    types: list[str] | None = None,
    wait_confirmed: bool = True,
) -> None:
    """Domain identity + configuration set + SNS event destination (confirmed by the receiver)."""
    ses.create_email_identity(EmailIdentity=domain, DkimSigningAttributes={"NextSigningKeyLength": "RSA_2048_BIT"})
    ses.create_configuration_set(ConfigurationSetName=config_set)
    ses.create_configuration_set_event_destination(
        ConfigurationSetName=config_set,
        EventDestinationName="sns",
        EventDestination={
            "Enabled": True,
            "MatchingEventTypes": types or ALL_TYPES,
            "SnsDestination": {"TopicArn": TOPIC},
        },
    )
    if wait_confirmed:
        wait_for(receiver.validations, what="validation notification after confirmation")
