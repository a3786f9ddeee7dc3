"""SNS-style message signing (SignatureVersion 2: RSA PKCS#1 v1.5 over SHA-256)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from .util import write_atomic

log = logging.getLogger(__name__)

KEY_FILE = "sns-signing-key.pem"
CERT_FILE = "sns-signing-cert.pem"
CERT_VALIDITY_DAYS = 825
# Re-create a persisted certificate when less than this remains of its validity.
CERT_RENEW_BEFORE = dt.timedelta(days=7)

NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


def string_to_sign(message: Mapping[str, object]) -> bytes:
    """The canonical SNS string to sign for a Notification / (Un)SubscriptionConfirmation."""
    msg_type = message.get("Type")
    keys = NOTIFICATION_KEYS if msg_type == "Notification" else CONFIRMATION_KEYS
    parts: list[str] = []
    for key in keys:
        value = message.get(key)
        if value is None:
            if key == "Subject":
                continue
            raise ValueError(f"cannot sign SNS {msg_type} without {key}")
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode("utf-8")


def _new_key_and_cert() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("sns.amazonaws.com")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


class SnsSigner:
    """Holds the emulator's RSA key and self-signed ``sns.amazonaws.com`` certificate."""

    def __init__(self, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self.cert = cert
        self.cert_pem: bytes = cert.public_bytes(serialization.Encoding.PEM)
        # Stable per certificate, shaped like AWS's "SimpleNotificationService-<32 hex>.pem".
        digest = hashlib.sha256(self.cert_pem).hexdigest()[:32]
        self.cert_filename = f"SimpleNotificationService-{digest}.pem"

    @classmethod
    def generate(cls) -> SnsSigner:
        return cls(*_new_key_and_cert())

    @classmethod
    def load_or_create(cls, state_dir: Path | None) -> SnsSigner:
        """Load key+cert from ``state_dir`` (creating and persisting them if missing or expiring)."""
        if state_dir is None:
            return cls.generate()
        key_path, cert_path = state_dir / KEY_FILE, state_dir / CERT_FILE
        if key_path.exists() and cert_path.exists():
            try:
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
                fresh = cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > CERT_RENEW_BEFORE
                if isinstance(key, rsa.RSAPrivateKey) and fresh:
                    return cls(key, cert)
                log.warning("persisted SNS signing certificate expired or unusable; creating a new one")
            except (ValueError, TypeError) as exc:
                log.warning("could not load persisted SNS signing key/cert (%s); creating new ones", exc)
        signer = cls.generate()
        state_dir.mkdir(parents=True, exist_ok=True)
        key_pem = signer._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(key_path, key_pem, mode=0o600)
        write_atomic(cert_path, signer.cert_pem)
        return signer

    def sign(self, message: Mapping[str, object]) -> str:
        """Base64 SignatureVersion 2 signature of ``message``."""
        sig = self._key.sign(string_to_sign(message), padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(sig).decode("ascii")
