"""SNS message verification against the really-signed AWS fixtures in tests/fixtures/ses-sns
(a copy of shared/fixtures/ses-sns), and against locally signed emulator-style messages."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from events_testkit import LOCAL_PATTERN, LOCAL_TOPIC, LocalSigner, self_signed, sns_timestamp
from mailroom_events.sns import (
    DEFAULT_CERT_HOST_PATTERN,
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_FUTURE_SKEW,
    MAX_JSON_DEPTH,
    HttpxCertFetcher,
    SnsMessage,
    SnsRejected,
    SnsVerifier,
    json_too_deep,
    parse_sns_message,
    string_to_sign,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "ses-sns"
if not (FIXTURES / "signed" / "manifest.json").is_file():
    raise RuntimeError(f"SES/SNS fixtures not found at {FIXTURES} (a copy of shared/fixtures/ses-sns)")
SIGNED = FIXTURES / "signed"
MANIFEST: list[dict[str, Any]] = json.loads((SIGNED / "manifest.json").read_text())


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Signed:
    name: str
    body: dict[str, Any]
    pem: bytes
    cert_url: str
    timestamp: datetime
    not_before: datetime
    not_after: datetime

    @property
    def raw(self) -> bytes:
        return json.dumps(self.body).encode()

    def with_fields(self, **changes: Any) -> bytes:
        body = dict(self.body)
        for key, value in changes.items():
            if value is None:
                body.pop(key, None)
            else:
                body[key] = value
        return json.dumps(body).encode()


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _load(entry: dict[str, Any]) -> Signed:
    body = json.loads((SIGNED / entry["file"]).read_text(encoding="utf-8"))
    assert body["SigningCertURL"] == entry["signingCertURL"]
    return Signed(
        name=entry["file"],
        body=body,
        pem=(SIGNED / entry["certificate"]).read_bytes(),
        cert_url=entry["signingCertURL"],
        timestamp=_iso(entry["messageTimestamp"]),
        not_before=_iso(entry["certNotBefore"]),
        not_after=_iso(entry["certNotAfter"]),
    )


ALL_SIGNED = [_load(entry) for entry in MANIFEST]
SIGNED_IDS = [s.name for s in ALL_SIGNED]


class StubFetcher:
    """Serves PEMs by URL and records every fetch."""

    def __init__(self, pems: dict[str, bytes]) -> None:
        self.pems = pems
        self.calls: list[str] = []

    async def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        try:
            return self.pems[url]
        except KeyError:
            raise RuntimeError(f"no certificate for {url}") from None


def _verifier(
    signed: Signed,
    *,
    topics: set[str] | None = None,
    at: datetime | None = None,
    fetcher: StubFetcher | None = None,
    **kwargs: Any,
) -> tuple[SnsVerifier, StubFetcher]:
    fetcher = fetcher or StubFetcher({signed.cert_url: signed.pem})
    clock_value = at or signed.timestamp
    verifier = SnsVerifier(
        allowed_topics=topics if topics is not None else {signed.body["TopicArn"]},
        cert_fetcher=fetcher,
        clock=lambda: clock_value,
        **kwargs,
    )
    return verifier, fetcher


async def _rejected(verifier: SnsVerifier, body: bytes) -> str:
    with pytest.raises(SnsRejected) as info:
        await verifier.verify(body)
    return info.value.reason


def _tamper(value: str) -> str:
    """Change exactly one character (one byte: ASCII) in the middle of `value`."""
    i = len(value) // 2
    replacement = "x" if value[i] != "x" else "y"
    return value[:i] + replacement + value[i + 1 :]


def _signed_fields(body: dict[str, Any]) -> list[str]:
    if body["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn"]
    return [n for n in names if body.get(n) is not None]


# --------------------------------------------------------------------------- the real fixtures


def test_fixture_set_is_complete() -> None:
    on_disk = {p.name for p in SIGNED.glob("*.json") if p.name != "manifest.json"}
    assert on_disk == {entry["file"] for entry in MANIFEST}
    assert len(ALL_SIGNED) == 14
    assert {s.body["SignatureVersion"] for s in ALL_SIGNED} == {"1", "2"}


@pytest.mark.parametrize("signed", ALL_SIGNED, ids=SIGNED_IDS)
async def test_every_signed_fixture_verifies(signed: Signed) -> None:
    verifier, fetcher = _verifier(signed)
    message = await verifier.verify(signed.raw)

    assert isinstance(message, SnsMessage)
    for key in ("Type", "MessageId", "TopicArn", "Message", "Timestamp", "SignatureVersion", "Signature"):
        assert getattr(message, key) == signed.body[key]
    assert message.Subject == signed.body.get("Subject")
    assert message.SubscribeURL == signed.body.get("SubscribeURL")
    assert message.Token == signed.body.get("Token")
    assert message.UnsubscribeURL == signed.body.get("UnsubscribeURL")
    assert message.timestamp == signed.timestamp
    assert fetcher.calls == [signed.cert_url]


@pytest.mark.parametrize("signed", ALL_SIGNED, ids=SIGNED_IDS)
def test_string_to_sign_matches_fixture_byte_for_byte(signed: Signed) -> None:
    expected = (SIGNED / signed.name.replace(".json", ".string-to-sign.txt")).read_bytes()
    assert string_to_sign(parse_sns_message(signed.raw)) == expected


@pytest.mark.parametrize("signed", ALL_SIGNED, ids=SIGNED_IDS)
async def test_original_bytes_verify_too(signed: Signed) -> None:
    """The pretty-printed file as it is on disk (other key order and whitespace) verifies as well."""
    verifier, _ = _verifier(signed)
    await verifier.verify((SIGNED / signed.name).read_bytes())


@pytest.mark.parametrize("signed", ALL_SIGNED, ids=SIGNED_IDS)
async def test_one_changed_byte_in_any_signed_field_is_bad_signature(signed: Signed) -> None:
    fields = _signed_fields(signed.body)
    assert "Message" in fields and "TopicArn" in fields
    for field in fields:
        tampered = _tamper(signed.body[field])
        assert len(tampered.encode()) == len(signed.body[field].encode())
        topics = {signed.body["TopicArn"], tampered}  # a changed TopicArn must reach the signature check
        verifier, _ = _verifier(signed, topics=topics)
        assert await _rejected(verifier, signed.with_fields(**{field: tampered})) == "bad_signature", field


@pytest.mark.parametrize("signed", ALL_SIGNED, ids=SIGNED_IDS)
async def test_changed_signature_or_dropped_subject_is_bad_signature(signed: Signed) -> None:
    verifier, _ = _verifier(signed)
    raw_sig = bytearray(base64.b64decode(signed.body["Signature"]))
    raw_sig[len(raw_sig) // 2] ^= 0x01
    forged = base64.b64encode(bytes(raw_sig)).decode()
    assert await _rejected(verifier, signed.with_fields(Signature=forged)) == "bad_signature"
    assert await _rejected(verifier, signed.with_fields(Signature="not base64!")) == "bad_signature"
    if signed.body["Type"] == "Notification":
        if "Subject" in signed.body:
            assert await _rejected(verifier, signed.with_fields(Subject=None)) == "bad_signature"
        else:
            assert await _rejected(verifier, signed.with_fields(Subject="added")) == "bad_signature"


@pytest.mark.parametrize("signed", ALL_SIGNED, ids=SIGNED_IDS)
async def test_unsigned_fields_do_not_matter(signed: Signed) -> None:
    verifier, _ = _verifier(signed)
    body = signed.with_fields(
        UnsubscribeURL="https://example.com/elsewhere",
        MessageAttributes={"x": {"Type": "String", "Value": "y"}},
    )
    message = await verifier.verify(body)
    assert message.UnsubscribeURL == "https://example.com/elsewhere"


@pytest.mark.parametrize("signed", ALL_SIGNED, ids=SIGNED_IDS)
async def test_untrusted_cert_urls_are_refused_without_fetching(signed: Signed) -> None:
    path = signed.cert_url.split("amazonaws.com", 1)[1]
    host = signed.cert_url.split("/")[2]
    bad_urls = [
        f"https://sns.us-east-1.amazonaws.com.evil.example{path}",  # suffix attack
        f"https://evil.example{path}",
        f"https://sns-us-east-1.amazonaws.com{path}",
        f"https://{host}.{path}",  # trailing dot → host "…com." does not match
        f"https://sqs.us-east-1.amazonaws.com{path}",
        f"http://{host}{path}",  # http
        f"https://{host}{path[:-4]}.crt",  # not .pem
        f"https://{host}{path}?x=1",  # query string
        f"https://{host}/",  # no .pem
        f"https://user@{host}{path}",  # userinfo
        f"https://evil.example\\@{host}{path}",  # parser confusion
        f"ftp://{host}{path}",
        f"//{host}{path}",
        "not a url",
        "",
    ]
    for url in bad_urls:
        pems = {url: signed.pem}
        verifier, fetcher = _verifier(signed, fetcher=StubFetcher(pems))
        assert await _rejected(verifier, signed.with_fields(SigningCertURL=url)) == "untrusted_cert_url", url
        assert fetcher.calls == []


@pytest.mark.parametrize("signed", ALL_SIGNED, ids=SIGNED_IDS)
async def test_http_cert_url_only_when_allowed(signed: Signed) -> None:
    http_url = signed.cert_url.replace("https://", "http://", 1)
    fetcher = StubFetcher({http_url: signed.pem})
    verifier, _ = _verifier(signed, fetcher=fetcher, allow_http_cert_urls=True)
    await verifier.verify(signed.with_fields(SigningCertURL=http_url))  # the URL itself is not signed
    assert fetcher.calls == [http_url]


@pytest.mark.parametrize("signed", ALL_SIGNED, ids=SIGNED_IDS)
async def test_clock_outside_certificate_validity_is_cert_expired(signed: Signed) -> None:
    for at in (signed.not_before - timedelta(seconds=1), signed.not_after + timedelta(seconds=1)):
        verifier, _ = _verifier(signed, at=at)
        assert await _rejected(verifier, signed.raw) == "cert_expired"
    for at in (signed.not_before, signed.not_after):  # inclusive bounds
        # The bounds lie months from the message's Timestamp: judge the certificate alone here.
        verifier, _ = _verifier(signed, at=at, max_age=None, max_future_skew=None)
        await verifier.verify(signed.raw)
    # Real clock: every fixture certificate has expired.
    verifier = SnsVerifier(
        allowed_topics={signed.body["TopicArn"]}, cert_fetcher=StubFetcher({signed.cert_url: signed.pem})
    )
    assert await _rejected(verifier, signed.raw) == "cert_expired"


@pytest.mark.parametrize("signed", ALL_SIGNED, ids=SIGNED_IDS)
async def test_unknown_topic_is_refused_before_fetching(signed: Signed) -> None:
    for topics in ({"arn:aws:sns:us-east-1:123456789012:other"}, set()):
        verifier, fetcher = _verifier(signed, topics=topics)
        assert await _rejected(verifier, signed.raw) == "topic_not_allowed"
        assert fetcher.calls == []


@pytest.mark.parametrize("signed", ALL_SIGNED, ids=SIGNED_IDS)
async def test_signature_version_3_or_missing_is_refused(signed: Signed) -> None:
    verifier, fetcher = _verifier(signed)
    for version in ("3", "0", "", "1.0"):
        assert await _rejected(verifier, signed.with_fields(SignatureVersion=version)) == ("bad_signature_version")
    assert await _rejected(verifier, signed.with_fields(SignatureVersion=None)) == "bad_json"
    assert fetcher.calls == []


@pytest.mark.parametrize("signed", ALL_SIGNED, ids=SIGNED_IDS)
async def test_swapping_signature_version_is_bad_signature(signed: Signed) -> None:
    other = "2" if signed.body["SignatureVersion"] == "1" else "1"
    verifier, _ = _verifier(signed)
    assert await _rejected(verifier, signed.with_fields(SignatureVersion=other)) == "bad_signature"


# --------------------------------------------------------------------------- parsing refusals


async def test_malformed_bodies_are_bad_json() -> None:
    signed = ALL_SIGNED[0]
    verifier, fetcher = _verifier(signed)
    bodies = [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'"Notification"',
        b"{}",
        json.dumps({**signed.body, "Type": 1}).encode(),
        json.dumps({**signed.body, "Message": 42}).encode(),
        json.dumps({**signed.body, "SignatureVersion": 1}).encode(),
        signed.with_fields(Signature=None),
        signed.with_fields(SigningCertURL=None),
        signed.with_fields(MessageId=None),
        signed.with_fields(Timestamp=None),
        signed.with_fields(TopicArn=None),
        signed.with_fields(Message=None),
    ]
    for body in bodies:
        assert await _rejected(verifier, body) == "bad_json", body[:60]
    assert fetcher.calls == []


async def test_confirmation_without_token_or_subscribe_url_is_bad_json() -> None:
    signed = next(s for s in ALL_SIGNED if s.body["Type"] == "SubscriptionConfirmation")
    verifier, _ = _verifier(signed)
    assert await _rejected(verifier, signed.with_fields(Token=None)) == "bad_json"
    assert await _rejected(verifier, signed.with_fields(SubscribeURL=None)) == "bad_json"


async def test_unsupported_type() -> None:
    signed = ALL_SIGNED[0]
    verifier, fetcher = _verifier(signed)
    for type_ in ("Foo", "notification", "", "SubscriptionConfirmation "):
        assert await _rejected(verifier, signed.with_fields(Type=type_)) == "unsupported_type"
    assert fetcher.calls == []


# --------------------------------------------------------------------------- certificates


async def test_certificates_are_cached_by_url_and_bounded() -> None:
    by_url: dict[str, Signed] = {}
    for s in ALL_SIGNED:
        by_url.setdefault(s.cert_url, s)
    fetcher = StubFetcher({url: s.pem for url, s in by_url.items()})
    clock_value = [datetime.now(UTC)]
    verifier = SnsVerifier(
        allowed_topics={s.body["TopicArn"] for s in ALL_SIGNED},
        cert_fetcher=fetcher,
        clock=lambda: clock_value[0],
        cert_cache_size=2,
    )
    signed = [s for s in ALL_SIGNED if s.cert_url == ALL_SIGNED[0].cert_url]
    assert len(signed) >= 2
    for s in signed:
        clock_value[0] = s.timestamp
        await verifier.verify(s.raw)
    assert fetcher.calls == [signed[0].cert_url]

    # Fill the cache past its bound: the least recently used URL is fetched again.
    urls = list(by_url)
    for url in urls:
        clock_value[0] = by_url[url].timestamp
        await verifier.verify(by_url[url].raw)
    fetcher.calls.clear()
    clock_value[0] = by_url[urls[0]].timestamp
    await verifier.verify(by_url[urls[0]].raw)
    assert fetcher.calls == [urls[0]]


async def test_fetch_failure_is_transient_cert_unavailable() -> None:
    signed = ALL_SIGNED[0]
    verifier, fetcher = _verifier(signed, fetcher=StubFetcher({}))
    with pytest.raises(SnsRejected) as info:
        await verifier.verify(signed.raw)
    assert info.value.reason == "cert_unavailable"
    assert info.value.transient
    # Failures are not cached: the next attempt fetches again and succeeds.
    fetcher.pems[signed.cert_url] = signed.pem
    await verifier.verify(signed.raw)
    assert fetcher.calls == [signed.cert_url, signed.cert_url]


async def test_not_a_certificate_is_bad_cert() -> None:
    signed = ALL_SIGNED[0]
    verifier, _ = _verifier(signed, fetcher=StubFetcher({signed.cert_url: b"<html>hello</html>"}))
    reason = await _rejected(verifier, signed.raw)
    assert reason == "bad_cert"


async def test_non_rsa_certificate_is_bad_cert() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = self_signed(key, "sns.amazonaws.com").public_bytes(serialization.Encoding.PEM)
    signed = ALL_SIGNED[0]
    verifier, _ = _verifier(signed, fetcher=StubFetcher({signed.cert_url: pem}))
    assert await _rejected(verifier, signed.raw) == "bad_cert"


async def test_a_different_valid_certificate_is_bad_signature() -> None:
    """Signed by AWS, but served a certificate with another key (same URL): refused."""
    signed = next(s for s in ALL_SIGNED if s.name.startswith("2022-notification-v2"))
    other = next(s for s in ALL_SIGNED if s.name.startswith("2024-"))
    verifier, _ = _verifier(signed, fetcher=StubFetcher({signed.cert_url: other.pem}), at=other.timestamp)
    assert await _rejected(verifier, signed.raw) == "bad_signature"


# --------------------------------------------------------------------------- synthetic messages


@pytest.fixture(scope="module")
def local_signer() -> tuple[bytes, Callable[[dict[str, Any]], dict[str, Any]]]:
    signer = LocalSigner()
    return signer.pem, signer.sign


def _local_body(type_: str, version: str, cert_url: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Type": type_,
        "MessageId": "6f3a1c2e-0000-4000-8000-000000000001",
        "TopicArn": LOCAL_TOPIC,
        "Message": 'caf\u00e9 "quoted"\nline two\n',
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
    }
    if type_ == "Notification":
        body["Subject"] = "Amazon SES Email Event Notification"
        body["UnsubscribeURL"] = "http://127.0.0.1:4566/?Action=Unsubscribe"
    else:
        body["Token"] = "abc123"
        body["SubscribeURL"] = "http://127.0.0.1:4566/?Action=ConfirmSubscription&Token=abc123"
    return body


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("type_", ["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"])
async def test_local_emulator_messages_of_every_type(
    local_signer: tuple[bytes, Callable[[dict[str, Any]], dict[str, Any]]], type_: str, version: str
) -> None:
    pem, sign = local_signer
    cert_url = "http://127.0.0.1:4566/SimpleNotificationService-local.pem"
    body = sign(_local_body(type_, version, cert_url))
    fetcher = StubFetcher({cert_url: pem})
    verifier = SnsVerifier(
        allowed_topics={LOCAL_TOPIC},
        cert_host_pattern=LOCAL_PATTERN,
        allow_http_cert_urls=True,
        cert_fetcher=fetcher,
    )
    message = await verifier.verify(json.dumps(body).encode())
    assert message.Type == type_
    assert message.Message == 'caf\u00e9 "quoted"\nline two\n'
    if message.SubscribeURL is not None:
        assert verifier.subscribe_url_allowed(message.SubscribeURL)

    # The same message, refused when http is not allowed or the port pattern is missing.
    strict = SnsVerifier(allowed_topics={LOCAL_TOPIC}, cert_host_pattern=LOCAL_PATTERN, cert_fetcher=fetcher)
    assert await _rejected(strict, json.dumps(body).encode()) == "untrusted_cert_url"
    aws_only = SnsVerifier(allowed_topics={LOCAL_TOPIC}, allow_http_cert_urls=True, cert_fetcher=fetcher)
    assert await _rejected(aws_only, json.dumps(body).encode()) == "untrusted_cert_url"
    # Tampering with the (non-ASCII) Message breaks the signature.
    tampered = {**body, "Message": body["Message"].replace("\u00e9", "e\u0301")}
    assert await _rejected(verifier, json.dumps(tampered).encode()) == "bad_signature"


# --------------------------------------------------------------------------- URL rules


def test_subscribe_url_allowed() -> None:
    verifier = SnsVerifier(allowed_topics=set())
    ok = [
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:x&Token=1",
        "https://sns.cn-north-1.amazonaws.com.cn/?Action=ConfirmSubscription",
        "https://SNS.EU-WEST-1.AMAZONAWS.COM/?Action=ConfirmSubscription",
    ]
    bad = [
        "http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
        "https://sns.us-east-1.amazonaws.com.evil.example/",
        "https://169.254.169.254/latest/meta-data/",
        "https://localhost/",
        "https://127.0.0.1:8080/",
        "https://user:pw@sns.us-east-1.amazonaws.com/",
        "https://evil.example\\@sns.us-east-1.amazonaws.com/",
        "https://sns.us-east-1.amazonaws.com:99999/",
        "file:///etc/passwd",
        "",
    ]
    for url in ok:
        assert verifier.subscribe_url_allowed(url), url
    for url in bad:
        assert not verifier.subscribe_url_allowed(url), url

    local = SnsVerifier(allowed_topics=set(), cert_host_pattern=LOCAL_PATTERN, allow_http_cert_urls=True)
    assert local.subscribe_url_allowed("http://127.0.0.1:4566/?Action=ConfirmSubscription")
    assert not local.subscribe_url_allowed("http://127.0.0.1/?Action=ConfirmSubscription")
    assert not local.subscribe_url_allowed("http://sns.us-east-1.amazonaws.com/")


def test_default_pattern_and_unanchored_patterns_match_whole_host() -> None:
    assert DEFAULT_CERT_HOST_PATTERN == r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"
    loose = SnsVerifier(allowed_topics=set(), cert_host_pattern=r"sns\.example\.com")
    assert loose.cert_url_allowed("https://sns.example.com/a.pem")
    assert not loose.cert_url_allowed("https://sns.example.com.evil.example/a.pem")
    assert not loose.cert_url_allowed("https://xsns.example.com/a.pem")


# --------------------------------------------------------------------------- default fetcher


async def test_httpx_fetcher_gets_pem_without_following_redirects() -> None:
    pem = ALL_SIGNED[0].pem

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ok.pem":
            return httpx.Response(200, content=pem)
        if request.url.path == "/redirect.pem":
            return httpx.Response(302, headers={"Location": "https://evil.example/ok.pem"})
        if request.url.path == "/huge.pem":
            return httpx.Response(200, content=b"x" * 100_000)
        return httpx.Response(404)

    fetcher = HttpxCertFetcher(transport=httpx.MockTransport(handler))
    assert await fetcher("https://sns.us-east-1.amazonaws.com/ok.pem") == pem
    for path in ("/redirect.pem", "/huge.pem", "/missing.pem"):
        with pytest.raises(RuntimeError):
            await fetcher(f"https://sns.us-east-1.amazonaws.com{path}")

    signed = ALL_SIGNED[0]
    verifier = SnsVerifier(
        allowed_topics={signed.body["TopicArn"]},
        cert_fetcher=HttpxCertFetcher(transport=httpx.MockTransport(lambda r: httpx.Response(503))),
        clock=lambda: signed.timestamp,
    )
    assert await _rejected(verifier, signed.raw) == "cert_unavailable"


# --------------------------------------------------------------------------- Timestamp window (issue 14, defect 8)


@pytest.mark.parametrize("signed", ALL_SIGNED, ids=SIGNED_IDS)
async def test_timestamp_outside_the_window_is_refused_after_the_signature(signed: Signed) -> None:
    """The clock seam that pins certificate validity also judges the signed Timestamp."""
    inside = (signed.timestamp + DEFAULT_MAX_AGE, signed.timestamp - DEFAULT_MAX_FUTURE_SKEW)
    for at in inside:  # inclusive bounds
        verifier, _ = _verifier(signed, at=at)
        await verifier.verify(signed.raw)
    verifier, _ = _verifier(signed, at=signed.timestamp + DEFAULT_MAX_AGE + timedelta(seconds=1))
    assert await _rejected(verifier, signed.raw) == "stale_timestamp"
    verifier, _ = _verifier(signed, at=signed.timestamp - DEFAULT_MAX_FUTURE_SKEW - timedelta(seconds=1))
    assert await _rejected(verifier, signed.raw) == "future_timestamp"
    # A tighter configured age, as MAILROOM_EVENTS_SNS_MAX_AGE_SECONDS sets it.
    verifier, _ = _verifier(signed, at=signed.timestamp + timedelta(seconds=61), max_age=timedelta(seconds=60))
    assert await _rejected(verifier, signed.raw) == "stale_timestamp"
    # A forged Timestamp never reaches the age check: the signature fails first.
    verifier, _ = _verifier(signed)
    moved = sns_timestamp(signed.timestamp - timedelta(days=1))
    assert await _rejected(verifier, signed.with_fields(Timestamp=moved)) == "bad_signature"


async def test_unparseable_signed_timestamp_is_bad_timestamp(
    local_signer: tuple[bytes, Callable[[dict[str, Any]], dict[str, Any]]],
) -> None:
    pem, sign = local_signer
    cert_url = "http://127.0.0.1:4566/SimpleNotificationService-local.pem"
    verifier = SnsVerifier(
        allowed_topics={LOCAL_TOPIC},
        cert_host_pattern=LOCAL_PATTERN,
        allow_http_cert_urls=True,
        cert_fetcher=StubFetcher({cert_url: pem}),
    )
    for value in ("yesterday", "", "2024-13-01T00:00:00Z"):
        body = sign({**_local_body("Notification", "2", cert_url), "Timestamp": value})
        assert await _rejected(verifier, json.dumps(body).encode()) == "bad_timestamp", value


# --------------------------------------------------------------------------- hostile shapes (issue 14, defect 1)


def test_json_too_deep_counts_brackets_outside_strings_only() -> None:
    assert not json_too_deep("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    assert json_too_deep("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    assert json_too_deep('{"a": ' * 10_000)  # unbalanced counts too
    assert not json_too_deep('{"a": "' + "[" * 100 + '"}')  # inside a string
    assert not json_too_deep('{"a\\"' + "[" * 100 + '": 1}')  # an escaped quote does not end it
    assert json_too_deep('{"a\\\\": ' + "[" * 100)  # an escaped backslash does
    assert not json_too_deep('"unterminated \\' + "[" * 100)
    assert not json_too_deep("")


async def test_hostile_shapes_are_bad_json_before_any_fetch() -> None:
    signed = next(s for s in ALL_SIGNED if s.body["Type"] == "Notification")
    verifier, fetcher = _verifier(signed)
    deep = "[" * 10_000 + "]" * 10_000
    bodies = {
        "body nested 10,000 deep": ("[" * 10_000 + "]" * 10_000).encode(),
        "a field nested 10,000 deep": signed.raw[:-1] + b', "MessageAttributes": ' + deep.encode() + b"}",
        "Message nested 10,000 deep": signed.with_fields(Message=deep),
        "Message nested 33 deep": signed.with_fields(Message='{"a":' * 33 + "1" + "}" * 33),
        "invalid UTF-8 in a string": signed.raw.replace(
            b'"Type": "Notification"', b'"Type": "Notification", "x": "\xff"'
        ),
        "lone surrogate": signed.raw.replace(b'"Type": "Notification"', b'"Type": "Notification", "x": "\\ud800"'),
        "NUL in MessageId": signed.with_fields(MessageId=signed.body["MessageId"] + "\u0000"),
        "NUL in Message": signed.with_fields(Message=signed.body["Message"] + "\u0000"),
        "NUL in Subject": signed.with_fields(Subject="a\u0000b"),
        "NUL in SigningCertURL": signed.with_fields(SigningCertURL=signed.cert_url + "\u0000"),
        "MessageId of 257 characters": signed.with_fields(MessageId="m" * 257),
    }
    for what, body in bodies.items():
        assert await _rejected(verifier, body) == "bad_json", what
    assert fetcher.calls == []
    # What SES records really look like passes the depth rule (every fixture above verifies).
    assert not json_too_deep(signed.body["Message"])
