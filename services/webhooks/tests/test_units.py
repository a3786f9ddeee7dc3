"""Pure rules: address policy, URL validation, signing, retry schedule, Retry-After, settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from mailroom_kit.settings import SettingsError
from mailroom_webhooks.delivery import parse_retry_after, signed_headers
from mailroom_webhooks.errors import ValidationError
from mailroom_webhooks.netpolicy import AddressPolicy, validate_endpoint_url
from mailroom_webhooks.service import retry_delay
from mailroom_webhooks.settings import WebhooksSettings
from mailroom_webhooks.signing import SecretBox, new_secret, sign
from standardwebhooks.webhooks import Webhook


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.0.1", False),
        ("127.0.0.1", False),
        ("169.254.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("100.127.255.254", False),
        ("224.0.0.1", False),
        ("239.1.1.1", False),
        ("0.0.0.0", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("fd00:ec2::254", False),
        ("ff02::1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::a00:1", False),
        ("192.0.2.1", False),
        ("198.18.0.1", False),
    ],
)
def test_default_address_policy(address: str, allowed: bool) -> None:
    assert AddressPolicy().is_allowed(address) is allowed


def test_allow_list_opens_ranges_but_metadata_only_exactly() -> None:
    import ipaddress

    policy = AddressPolicy([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("169.254.0.0/16")])
    assert policy.is_allowed("10.2.3.4") and policy.is_allowed("169.254.3.3")
    assert not policy.is_allowed("169.254.169.254") and not policy.is_allowed("192.168.1.1")
    assert AddressPolicy([ipaddress.ip_network("169.254.169.254/32")]).is_allowed("169.254.169.254")


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/x?y=1",
        "https://HOOKS.example.com:8443/x",
        "https://xn--bcher-kva.example/",
        "https://bücher.example/hook",
        "https://93.184.216.34/hook",
        "https://[2606:4700::1]/h",
        "https://localhost/",
    ],
)
def test_acceptable_urls(url: str) -> None:
    assert validate_endpoint_url(url, allow_http=False, policy=AddressPolicy()) == url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://hooks.example.com/",
        "javascript:alert(1)",
        "https://",
        "https://a b.example/",
        "https://hooks.example.com/\n",
        "https://u@hooks.example.com/",
        "https://:pw@hooks.example.com/",
        "https://hooks.example.com:99999/",
        "https://hooks.example.com:0/",
        "https://0x7f.0.0.1/",
        "https://127.1/",
        "https://-bad-.example/",
        "https://[::ffff:127.0.0.1]/",
        "https://192.168.1.10/",
        "https://example.com/" + "x" * 2048,
    ],
)
def test_rejected_urls(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_endpoint_url(url, allow_http=False, policy=AddressPolicy())
    assert info.value.param == "url"


def test_http_only_when_allowed() -> None:
    assert validate_endpoint_url("http://hooks.example.com/", allow_http=True, policy=AddressPolicy())


def test_signature_is_standard_webhooks() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    body = b'{"id":"evt_1","type":"email.sent"}'
    ts = int(datetime.now(UTC).timestamp())
    headers = signed_headers(secret=secret, msg_id="evt_1", body=body, timestamp=ts)
    assert Webhook(secret).verify(body.decode(), headers) == {"id": "evt_1", "type": "email.sent"}
    expected = base64.b64encode(
        hmac.new(base64.b64decode(secret[6:]), f"evt_1.{ts}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    assert sign(secret, "evt_1", ts, body) == "v1," + expected
    with pytest.raises(Exception):  # noqa: B017 - the library raises its own WebhookVerificationError
        Webhook(new_secret()).verify(body.decode(), headers)


def test_secret_box_rotates_keys(h: Any) -> None:
    from cryptography.fernet import Fernet

    old, new = h.FERNET_KEY, Fernet.generate_key().decode()
    token = SecretBox([old]).encrypt("whsec_abc")
    assert "whsec_abc" not in token
    assert SecretBox([new, old]).decrypt(token) == "whsec_abc"


def test_retry_schedule_jitter_and_retry_after() -> None:
    schedule = [5.0, 30.0, 120.0]
    assert 4.5 <= retry_delay(1, schedule, None) <= 5.5
    assert 27 <= retry_delay(2, schedule, None) <= 33
    assert 108 <= retry_delay(9, schedule, None) <= 132  # the last delay repeats
    assert retry_delay(1, schedule, 60) == 60
    assert retry_delay(1, schedule, 10**9) == 24 * 3600


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_settings_require_a_valid_fernet_key(h: Any) -> None:
    with pytest.raises(SettingsError, match="MAILROOM_WEBHOOKS_SECRET_KEY is required"):
        WebhooksSettings.from_env({})
    with pytest.raises(SettingsError, match="not a valid Fernet key"):
        WebhooksSettings.from_env({"MAILROOM_WEBHOOKS_SECRET_KEY": "short"})
    with pytest.raises(SettingsError, match="ALLOWED_CIDRS"):
        WebhooksSettings.from_env(
            {
                "MAILROOM_WEBHOOKS_SECRET_KEY": h.FERNET_KEY,
                "MAILROOM_WEBHOOKS_ALLOWED_CIDRS": "10.0.0.0/8,nope",
            }
        )
    s = WebhooksSettings.from_env(
        {
            "MAILROOM_WEBHOOKS_SECRET_KEY": h.FERNET_KEY,
            "MAILROOM_WEBHOOKS_RETRY_DELAYS_SECONDS": "1, 2.5",
            "MAILROOM_WEBHOOKS_ALLOWED_CIDRS": "127.0.0.0/8, ::1/128",
            "MAILROOM_WEBHOOKS_ALLOW_HTTP": "true",
        }
    )
    assert s.retry_delays() == [1.0, 2.5] and s.allow_http and len(s.allowed_networks()) == 2
    assert h.FERNET_KEY not in repr(s)


def test_main_exits_with_a_clear_message_without_a_key(monkeypatch: Any, capsys: Any) -> None:
    from mailroom_kit.runtime import main
    from mailroom_webhooks.app import MIGRATIONS

    async def never(_: Any) -> None:
        raise AssertionError("must not start")

    monkeypatch.delenv("MAILROOM_WEBHOOKS_SECRET_KEY", raising=False)
    with pytest.raises(SystemExit) as info:
        main(
            name="webhooks",
            schema="webhooks",
            settings_cls=WebhooksSettings,
            migrations_dir=MIGRATIONS,
            run=never,
            argv=["run"],
        )
    assert info.value.code == 2
    assert "MAILROOM_WEBHOOKS_SECRET_KEY is required" in capsys.readouterr().err
