"""Amazon SNS HTTP(S) message verification.

`SnsVerifier.verify(body)` parses the POST body of an SNS delivery and accepts it only when it is
well formed, of a known type, from an allowed topic, signed (SignatureVersion 1: RSA/SHA1,
2: RSA/SHA256, PKCS#1 v1.5) by a certificate fetched from a trusted SNS host and valid now, and
recent: its signed `Timestamp` at most `max_age` old and at most `max_future_skew` ahead of the
clock, so a captured authentic message cannot be replayed later (MessageId de-duplication is the
other half: it stops replays inside the window).
Every refusal is an `SnsRejected` whose `reason` is a short machine-readable code.

Hostile shapes are refused as `bad_json` before any signature work: nesting deeper than any SNS
envelope or SES record has (in the body or in a JSON `Message`), NUL characters (Postgres text
cannot hold them), and a MessageId longer than SNS's UUIDs could ever be.

The trust anchor is the certificate URL: it must be https (unless the operator allows http,
for local emulators) on a host matching `cert_host_pattern`, so the certificate comes from
AWS over TLS. Certificates are cached by URL (bounded, least recently used evicted).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Final, Literal
from urllib.parse import urlsplit

import httpx
import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "DEFAULT_CERT_HOST_PATTERN",
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_FUTURE_SKEW",
    "MAX_JSON_DEPTH",
    "MESSAGE_TYPES",
    "CertFetcher",
    "Clock",
    "HttpxCertFetcher",
    "RejectReason",
    "SnsMessage",
    "SnsRejected",
    "SnsVerifier",
    "parse_sns_message",
    "string_to_sign",
]

DEFAULT_CERT_HOST_PATTERN: Final = r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"
MESSAGE_TYPES: Final = frozenset({"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"})
# SNS's HTTP/S retry policy cannot span more than 3600 s, so a genuine (re)delivery is never older.
DEFAULT_MAX_AGE: Final = timedelta(hours=1)
# Clock skew tolerated between SNS and this host before a Timestamp counts as "in the future".
DEFAULT_MAX_FUTURE_SKEW: Final = timedelta(minutes=5)
# SNS envelopes are flat and SES records nest about 5 levels; anything far deeper is hostile.
MAX_JSON_DEPTH: Final = 32
MAX_MESSAGE_ID_LENGTH: Final = 256  # SNS MessageIds are UUIDs; the column is a btree key
# A JSON string, or an unterminated one running to the end: it always matches from a quote, so
# it never backtracks (linear even on hostile input); brackets left outside strings give depth.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.?[^"\\]*)*(?:"|\Z)', re.DOTALL)
_JSON_BRACKETS = re.compile(r"[\[\]{}]")
_DEPTH_STEP: Final = {"[": 1, "{": 1, "]": -1, "}": -1}
_SIGNATURE_HASHES: Final[dict[str, Callable[[], hashes.HashAlgorithm]]] = {
    "1": hashes.SHA1,
    "2": hashes.SHA256,
}

RejectReason = Literal[
    "bad_json",  # not JSON, not an object, a required field missing or of the wrong type
    "unsupported_type",  # Type is not Notification / SubscriptionConfirmation / UnsubscribeConfirmation
    "bad_signature_version",  # SignatureVersion is not "1" or "2"
    "topic_not_allowed",  # TopicArn is not configured
    "untrusted_cert_url",  # SigningCertURL scheme/host/path not trusted
    "cert_unavailable",  # the certificate could not be fetched (transient: SNS should retry)
    "bad_cert",  # the fetched document is not a PEM X.509 certificate with an RSA key
    "cert_expired",  # the certificate is not valid at the clock's time
    "bad_signature",  # the signature does not verify
    "bad_timestamp",  # the (signed) Timestamp is not an ISO 8601 time
    "stale_timestamp",  # the Timestamp is older than max_age (a replay of a captured message)
    "future_timestamp",  # the Timestamp is more than max_future_skew ahead of the clock
]

CertFetcher = Callable[[str], Awaitable[bytes]]
"""Async callable: certificate URL → PEM bytes. Raise any exception on failure."""
Clock = Callable[[], datetime]


class SnsRejected(Exception):
    """An SNS delivery that must not be processed. `reason` is machine-readable."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: RejectReason = reason
        self.detail = detail

    @property
    def transient(self) -> bool:
        """True when retrying later may succeed (answer 5xx so SNS redelivers)."""
        return self.reason == "cert_unavailable"


class SnsMessage(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON body of an SNS HTTP(S) delivery (unsigned extras such as MessageAttributes ignored).

    Values are kept exactly as sent (`Timestamp` is a string) because they form the string to sign.
    """

    Type: str
    MessageId: str
    TopicArn: str
    Message: str
    Timestamp: str
    SignatureVersion: str
    Signature: str
    SigningCertURL: str
    Subject: str | None = None
    SubscribeURL: str | None = None
    Token: str | None = None
    UnsubscribeURL: str | None = None

    @property
    def timestamp(self) -> datetime:
        """`Timestamp` as an aware datetime (raises ValueError if SNS sent something odd)."""
        value = datetime.fromisoformat(self.Timestamp)
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def json_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON-looking `text` nests objects/arrays more than `limit` levels deep.

    Strings are blanked out, then the running sum of +1/-1 per bracket is the depth: regex and
    C iterators only, never recursion, so it is cheap on input that would exhaust a recursive decoder.
    """
    brackets = _JSON_BRACKETS.findall(_JSON_STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > limit


def _shape_refusal(message: SnsMessage) -> str | None:
    """Why `message` is a hostile shape no SNS delivery has, or None."""
    for name in message.__struct_fields__:
        value = getattr(message, name)
        if isinstance(value, str) and "\x00" in value:
            return f"NUL character in {name}"
    if len(message.MessageId) > MAX_MESSAGE_ID_LENGTH:
        return "MessageId too long"
    if message.Message.lstrip()[:1] in ("{", "[") and json_too_deep(message.Message):
        return f"Message nested deeper than {MAX_JSON_DEPTH} levels"
    return None


def parse_sns_message(body: bytes | str) -> SnsMessage:
    """Parse and shape-check an SNS body. Raises SnsRejected (bad_json, unsupported_type)."""
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise SnsRejected("bad_json", "body is not JSON") from exc
    except RecursionError as exc:  # msgspec's own guard against deep nesting
        raise SnsRejected("bad_json", "body nested too deeply") from exc
    if not isinstance(raw, dict):
        raise SnsRejected("bad_json", "body is not a JSON object")
    msg_type = raw.get("Type")
    if not isinstance(msg_type, str):
        raise SnsRejected("bad_json", "Type missing")
    if msg_type not in MESSAGE_TYPES:
        raise SnsRejected("unsupported_type", msg_type[:64])
    try:
        message = msgspec.convert(raw, SnsMessage)
    except msgspec.ValidationError as exc:
        raise SnsRejected("bad_json", str(exc)) from exc
    if message.Type != "Notification" and (message.SubscribeURL is None or message.Token is None):
        raise SnsRejected("bad_json", f"{message.Type} without SubscribeURL or Token")
    if (why := _shape_refusal(message)) is not None:
        raise SnsRejected("bad_json", why)
    return message


def string_to_sign(message: SnsMessage) -> bytes:
    """The exact UTF-8 bytes SNS signed: `Name\\nValue\\n` pairs in byte order, last newline included."""
    pairs: list[tuple[str, str | None]]
    if message.Type == "Notification":
        pairs = [
            ("Message", message.Message),
            ("MessageId", message.MessageId),
            ("Subject", message.Subject),
            ("Timestamp", message.Timestamp),
            ("TopicArn", message.TopicArn),
            ("Type", message.Type),
        ]
    else:
        pairs = [
            ("Message", message.Message),
            ("MessageId", message.MessageId),
            ("SubscribeURL", message.SubscribeURL),
            ("Timestamp", message.Timestamp),
            ("Token", message.Token),
            ("TopicArn", message.TopicArn),
            ("Type", message.Type),
        ]
    return "".join(f"{name}\n{value}\n" for name, value in pairs if value is not None).encode("utf-8")


class HttpxCertFetcher:
    """Default certificate fetcher: one GET, short timeout, no redirects, size-capped, 200 only."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        max_bytes: int = 64 * 1024,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._transport = transport

    async def __call__(self, url: str) -> bytes:
        async with (
            httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, transport=self._transport) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise RuntimeError(f"certificate fetch answered HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._max_bytes:
                    raise RuntimeError("certificate document too large")
                chunks.append(chunk)
            return b"".join(chunks)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SnsVerifier:
    """Verifies SNS HTTP(S) deliveries. Safe to share between concurrent requests."""

    def __init__(
        self,
        *,
        allowed_topics: Iterable[str],
        cert_host_pattern: str | re.Pattern[str] = DEFAULT_CERT_HOST_PATTERN,
        allow_http_cert_urls: bool = False,
        cert_fetcher: CertFetcher | None = None,
        clock: Clock = _utcnow,
        cert_cache_size: int = 32,
        max_age: timedelta | None = DEFAULT_MAX_AGE,
        max_future_skew: timedelta | None = DEFAULT_MAX_FUTURE_SKEW,
    ) -> None:
        """`allowed_topics`: TopicArns accepted (empty = refuse everything).

        `cert_host_pattern` (a regex, string or compiled) is matched in full (`re.fullmatch`)
        against the URL's lower-cased host and, when the URL carries a port, also against
        `host:port`; either may match.
        `allow_http_cert_urls` lets SigningCertURL and SubscribeURL use http (local emulators).
        `max_age` / `max_future_skew`: how far the signed Timestamp may lie behind / ahead of
        `clock` (the same clock the certificate validity is checked with); None disables that side.
        """
        self.allowed_topics: frozenset[str] = frozenset(allowed_topics)
        self._host_re = re.compile(cert_host_pattern)
        self.allow_http_cert_urls = allow_http_cert_urls
        self._fetch: CertFetcher = cert_fetcher if cert_fetcher is not None else HttpxCertFetcher()
        self._clock = clock
        self._cache_size = max(1, cert_cache_size)
        self._cache: OrderedDict[str, x509.Certificate] = OrderedDict()
        self.max_age = max_age
        self.max_future_skew = max_future_skew

    # ------------------------------------------------------------------ URL rules

    def _url_allowed(self, url: str, *, require_pem: bool) -> bool:
        # Refuse anything different URL parsers could read differently (the fetcher is httpx).
        if not url.isascii() or any(ch.isspace() or ch == "\\" for ch in url):
            return False
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        if "@" in parts.netloc:  # userinfo
            return False
        schemes = ("https", "http") if self.allow_http_cert_urls else ("https",)
        if parts.scheme not in schemes:
            return False
        host = parts.hostname
        if not host:
            return False
        candidates = [host] if port is None else [host, f"{host}:{port}"]
        if not any(self._host_re.fullmatch(candidate) for candidate in candidates):
            return False
        if require_pem:
            return parts.path.endswith(".pem") and not parts.query and not parts.fragment
        return True

    def cert_url_allowed(self, url: str) -> bool:
        """SigningCertURL rule: allowed scheme, trusted host, path ending in `.pem`, no query."""
        return self._url_allowed(url, require_pem=True)

    def subscribe_url_allowed(self, url: str) -> bool:
        """SSRF guard before GETting a SubscriptionConfirmation's SubscribeURL: scheme and host rule."""
        return self._url_allowed(url, require_pem=False)

    # ------------------------------------------------------------------ certificates

    async def _certificate(self, url: str) -> x509.Certificate:
        cached = self._cache.get(url)
        if cached is not None:
            self._cache.move_to_end(url)
            return cached
        try:
            pem = await self._fetch(url)
        except Exception as exc:
            raise SnsRejected("cert_unavailable", f"{type(exc).__name__}: {exc}"[:200]) from exc
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise SnsRejected("bad_cert", "not a PEM X.509 certificate") from exc
        if not isinstance(cert.public_key(), rsa.RSAPublicKey):
            raise SnsRejected("bad_cert", "certificate key is not RSA")
        self._cache[url] = cert
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return cert

    def _now(self) -> datetime:
        now = self._clock()
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)

    def _check_timestamp(self, message: SnsMessage, now: datetime) -> None:
        try:
            sent_at = message.timestamp
        except ValueError as exc:
            raise SnsRejected("bad_timestamp", message.Timestamp[:40]) from exc
        if self.max_age is not None and now - sent_at > self.max_age:
            raise SnsRejected("stale_timestamp", f"{message.Timestamp[:40]} is older than {self.max_age}")
        if self.max_future_skew is not None and sent_at - now > self.max_future_skew:
            raise SnsRejected("future_timestamp", f"{message.Timestamp[:40]} is ahead of {now.isoformat()}")

    # ------------------------------------------------------------------ verify

    async def verify(self, body: bytes | str) -> SnsMessage:
        """Return the verified message or raise SnsRejected. Cheap checks run before any fetch.

        The Timestamp is judged last, once the signature proves SNS wrote it: a refusal for age
        then means "authentic but replayed late", never a guess about a forgery.
        """
        message = parse_sns_message(body)
        hash_factory = _SIGNATURE_HASHES.get(message.SignatureVersion)
        if hash_factory is None:
            raise SnsRejected("bad_signature_version", message.SignatureVersion[:16])
        if message.TopicArn not in self.allowed_topics:
            raise SnsRejected("topic_not_allowed", message.TopicArn[:256])
        if not self.cert_url_allowed(message.SigningCertURL):
            raise SnsRejected("untrusted_cert_url", message.SigningCertURL[:256])
        try:
            signature = base64.b64decode(message.Signature, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SnsRejected("bad_signature", "Signature is not base64") from exc

        cert = await self._certificate(message.SigningCertURL)
        now = self._now()
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            raise SnsRejected("cert_expired", f"not valid at {now.isoformat()}")
        public_key = cert.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):  # checked when cached; narrows the type
            raise SnsRejected("bad_cert", "certificate key is not RSA")
        try:
            public_key.verify(signature, string_to_sign(message), padding.PKCS1v15(), hash_factory())
        except InvalidSignature as exc:
            raise SnsRejected("bad_signature") from exc
        self._check_timestamp(message, now)
        return message
