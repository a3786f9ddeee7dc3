"""Test helpers shared by the events suites: a locally generated RSA key with a self-signed
certificate that signs SNS messages the way SNS does (SignatureVersion 1 and 2), and a real
local HTTP server that serves that certificate and answers SubscribeURL GETs, recording every
request it gets."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from mailroom_events.sns import SnsMessage, parse_sns_message, string_to_sign

LOCAL_TOPIC = "arn:aws:sns:us-east-1:000000000000:mailroom-ses"
LOCAL_PATTERN = r"^127\.0\.0\.1:\d+$"
CERT_PATH = "/SimpleNotificationService-local.pem"
UNAVAILABLE_CERT_PATH = "/SimpleNotificationService-unavailable.pem"


def self_signed(key: Any, cn: str) -> x509.Certificate:
    """A certificate for `key` (RSA or EC), valid from yesterday to tomorrow."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def as_message(body: dict[str, Any]) -> SnsMessage:
    """The SnsMessage of a (possibly not yet signed) body, for computing its string to sign."""
    return parse_sns_message(json.dumps({**body, "Signature": body.get("Signature", "")}).encode())


class LocalSigner:
    """Signs SNS bodies with a fresh 2048-bit RSA key; `pem` is its self-signed certificate."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = self_signed(self.key, "localhost").public_bytes(serialization.Encoding.PEM)

    def sign(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` with its `Signature` (SHA1 for SignatureVersion "1", SHA256 for "2")."""
        algorithm = hashes.SHA1() if body["SignatureVersion"] == "1" else hashes.SHA256()
        signature = self.key.sign(string_to_sign(as_message(body)), padding.PKCS1v15(), algorithm)
        return {**body, "Signature": base64.b64encode(signature).decode()}


def sns_timestamp(at: datetime | None = None) -> str:
    """SNS's Timestamp format: `2024-01-01T00:00:00.000Z`."""
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Recorded:
    method: str
    path: str  # path + query, as requested


@dataclass
class CertServer:
    """A real HTTP server on 127.0.0.1:<free port> (a thread): GET CERT_PATH → the PEM,
    GET UNAVAILABLE_CERT_PATH → 503 until `cert_available` is set, GET /confirm… → 200 with
    an SNS-like ConfirmSubscriptionResponse, anything else → 404. Every request is recorded."""

    pem: bytes
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
