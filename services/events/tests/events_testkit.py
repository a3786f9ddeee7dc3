"""Test helpers shared by the events suites: a locally generated RSA key with a self-signed
certificate that signs SNS messages the way SNS does (SignatureVersion 1 and 2), builders of the
messages SNS posts for SES (`ses_record`, `notification`, `confirmation`), and a real local HTTP
server that serves that certificate (and any other PEM put on it) and answers SubscribeURL GETs,
recording every request it gets."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from mailroom_contracts.ses import TAG_EMAIL_ID, TAG_MODE, TAG_TENANT_ID
from mailroom_events.sns import SnsMessage, string_to_sign

LOCAL_TOPIC = "arn:aws:sns:us-east-1:000000000000:mailroom-ses"
LOCAL_PATTERN = r"^127\.0\.0\.1:\d+$"
CERT_PATH = "/SimpleNotificationService-local.pem"
UNAVAILABLE_CERT_PATH = "/SimpleNotificationService-unavailable.pem"
FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "ses-sns" / "event-publishing"
TEXT_PLAIN = {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "Notification"}


def self_signed(
    key: Any, cn: str, *, not_before: datetime | None = None, not_after: datetime | None = None
) -> x509.Certificate:
    """A certificate for `key` (RSA or EC), valid from yesterday to tomorrow unless told otherwise."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def as_message(body: dict[str, Any]) -> SnsMessage:
    """The SnsMessage of a (possibly not yet signed) body, for computing its string to sign.

    Built without the verifier's shape checks, so hostile shapes (NUL, deep nesting) can be signed too.
    """
    return msgspec.convert({**body, "Signature": body.get("Signature", "")}, SnsMessage)


class LocalSigner:
    """Signs SNS bodies with a fresh 2048-bit RSA key; `pem` is its self-signed certificate
    (valid from yesterday to tomorrow unless `not_before` / `not_after` say otherwise)."""

    def __init__(self, *, not_before: datetime | None = None, not_after: datetime | None = None) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = self_signed(self.key, "localhost", not_before=not_before, not_after=not_after)
        self.pem = cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` with its `Signature` (SHA1 for SignatureVersion "1", SHA256 for "2")."""
        algorithm = hashes.SHA1() if body["SignatureVersion"] == "1" else hashes.SHA256()
        signature = self.key.sign(string_to_sign(as_message(body)), padding.PKCS1v15(), algorithm)
        return {**body, "Signature": base64.b64encode(signature).decode()}


def sns_timestamp(at: datetime | None = None) -> str:
    """SNS's Timestamp format: `2024-01-01T00:00:00.000Z`."""
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ses_record(kind: str, *, email_id: str | None = None, tenant_id: str = "ten_test", mode: str = "live") -> str:
    """An AWS documentation example SES event (event-publishing/<kind>.json) as SES publishes it
    (JSON plus a trailing newline), tagged as a Mailroom email when `email_id` is given."""
    record = json.loads((FIXTURES / f"{kind}.json").read_text())
    if email_id is not None:
        record["mail"]["tags"].update({TAG_EMAIL_ID: [email_id], TAG_TENANT_ID: [tenant_id], TAG_MODE: [mode]})
    return json.dumps(record) + "\n"


def notification(
    signer: LocalSigner,
    server: CertServer,
    message: str,
    *,
    topic: str = LOCAL_TOPIC,
    version: str = "2",
    cert_url: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """A signed SNS Notification carrying `message`, published `at` (now by default)."""
    return signer.sign(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic,
            "Subject": "Amazon SES Email Event Notification",
            "Message": message,
            "Timestamp": sns_timestamp(at),
            "SignatureVersion": version,
            "SigningCertURL": cert_url or server.cert_url,
            "UnsubscribeURL": f"{server.base}/unsubscribe?SubscriptionArn={topic}:1",
        }
    )


def confirmation(
    signer: LocalSigner,
    server: CertServer,
    subscribe_url: str,
    token: str,
    *,
    topic: str = LOCAL_TOPIC,
    type_: str = "SubscriptionConfirmation",
) -> dict[str, Any]:
    return signer.sign(
        {
            "Type": type_,
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": topic,
            "Message": f"You have chosen to subscribe to the topic {topic}.\nTo confirm, visit the SubscribeURL.",
            "SubscribeURL": subscribe_url,
            "Timestamp": sns_timestamp(),
            "SignatureVersion": "1",
            "SigningCertURL": server.cert_url,
        }
    )


@dataclass
class Recorded:
    method: str
    path: str  # path + query, as requested


@dataclass
class CertServer:
    """A real HTTP server on 127.0.0.1:<free port> (a thread): GET CERT_PATH → the PEM,
    GET UNAVAILABLE_CERT_PATH → 503 until `cert_available` is set, GET <path> → `other_pems[path]`,
    GET /confirm… → 200 with an SNS-like ConfirmSubscriptionResponse, anything else → 404.
    Every request is recorded."""

    pem: bytes
    other_pems: dict[str, bytes] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    cert_available: threading.Event = field(default_factory=threading.Event)
    _httpd: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cert_url(self) -> str:
        return self.base + CERT_PATH

    def requests_to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if urlsplit(r.path).path == path]

    def start(self) -> CertServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(Recorded("GET", self.path))
                path = urlsplit(self.path).path
                if path == CERT_PATH:
                    self._answer(200, server.pem, "application/x-pem-file")
                elif path == UNAVAILABLE_CERT_PATH:
                    if server.cert_available.is_set():
                        self._answer(200, server.pem, "application/x-pem-file")
                    else:
                        self._answer(503, b"try later", "text/plain")
                elif path in server.other_pems:
                    self._answer(200, server.other_pems[path], "application/x-pem-file")
                elif path == "/confirm":
                    xml = (
                        b"<ConfirmSubscriptionResponse><ConfirmSubscriptionResult><SubscriptionArn>"
                        b"arn:aws:sns:us-east-1:000000000000:mailroom-ses:1</SubscriptionArn>"
                        b"</ConfirmSubscriptionResult></ConfirmSubscriptionResponse>"
                    )
                    self._answer(200, xml, "text/xml")
                else:
                    self._answer(404, b"not found", "text/plain")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, name="cert-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
