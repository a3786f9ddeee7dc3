"""Unsubscribe tokens: who unsubscribes from whom, signed by the API (HMAC-SHA256 with
`MAILROOM_API_UNSUBSCRIBE_SECRET`), so the link needs no API key and cannot be forged or altered.

A token is `v1.<payload>.<mac>`, both parts base64url without padding: the payload is the JSON
array `[tenant_id, mode, email_id, address]`, the MAC covers a fixed context string and the
payload. It is self-contained (no lookup to verify, valid as long as the secret is), and only the
API holds the secret: the signed URL travels to the sender in the `EmailQueued` event.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

import msgspec

VERSION = "v1"
_CONTEXT = b"mailroom-unsubscribe-v1\x00"  # so no other HMAC made with the secret can pass as a token
MAX_TOKEN_LENGTH = 2048  # longer than any token we sign (an address is at most 320 characters)

Mode = Literal["live", "test"]


class Unsubscriber(msgspec.Struct, frozen=True, array_like=True):
    """What a token names: this tenant's `mode` sends to `address` (bare, normalised), from `email_id`."""

    tenant_id: str
    mode: Mode
    email_id: str
    address: str


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Unsubscriber).decode


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _CONTEXT + payload, hashlib.sha256).digest()


def sign(secret: bytes, who: Unsubscriber) -> str:
    payload = _encode(who)
    return f"{VERSION}.{_b64(payload)}.{_b64(_mac(secret, payload))}"


def verify(secret: bytes, token: str) -> Unsubscriber | None:
    """What `token` names, or None when it is not one we signed (malformed, altered, other secret)."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    version, _, rest = token.partition(".")
    payload_text, _, mac_text = rest.partition(".")
    if version != VERSION or not payload_text or not mac_text:
        return None
    try:
        payload, mac = _unb64(payload_text), _unb64(mac_text)
    except (binascii.Error, ValueError):
        return None
    # Compared before anything in the payload is trusted (or even decoded).
    if not hmac.compare_digest(mac, _mac(secret, payload)) or _b64(payload) != payload_text:
        return None
    try:
        return _decode(payload)
    except msgspec.DecodeError:  # cannot happen for a payload we signed
        return None


@dataclass(frozen=True)
class UnsubscribeLinks:
    """Builds the links of a broadcast email (from the API settings; None when not configured)."""

    secret: bytes
    public_url: str  # e.g. https://mail-api.example.com (no trailing slash)
    mailto: str | None = None  # an address that takes unsubscribe requests by email, if any

    def for_recipient(self, who: Unsubscriber) -> tuple[str, str | None]:
        """(the one-click https URL, the mailto URI or None) for `who`."""
        token = sign(self.secret, who)
        url = f"{self.public_url}/v1/unsubscribe/{token}"
        mailto = f"mailto:{self.mailto}?subject=unsubscribe%20{token}" if self.mailto else None
        return url, mailto
