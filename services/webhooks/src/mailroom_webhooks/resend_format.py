"""Deliveries to `resend` endpoints (issue 21: created through the Resend-compatible API): Resend's
payload shape and Svix's header names, so `Webhooks.verify` of the official Resend SDKs accepts
them and receivers written for Resend parse them.

The stored payload stays Mailroom's (the delivery log and retries are format-blind); each attempt
reshapes it here, deterministically, so every attempt of a delivery sends the same bytes. The
signature is the Standard Webhooks HMAC (Svix's scheme: `v1,<base64 HMAC-SHA256("{id}.{ts}.{body}")>`),
under `svix-id`, `svix-timestamp` and `svix-signature`.

Resend's shape (its API reference and SDK types): `{"type", "created_at", "data"}`; email events'
`data` has `email_id`, `from`, `to` (the impacted recipients), `subject`, `created_at`, `tags`, and
per type `bounce {type, subType, message, diagnosticCode}`, `click {ipAddress, link, timestamp,
userAgent}`, `open {ipAddress, timestamp, userAgent}`, `failed {reason}`, `suppressed {type, message}`.
Types with no Resend counterpart (domain.*, webhook.test, ...) keep Mailroom's `data`."""

from __future__ import annotations

from typing import Any

import msgspec

RESEND = "resend"

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

# SES bounce types → Resend's words.
_BOUNCE_TYPES = {"Permanent": "Permanent", "Transient": "Temporary", "Undetermined": "Undetermined"}


def _email_data(event_type: str, created_at: str, data: dict[str, Any]) -> dict[str, Any]:
    recipients = data.get("recipients") or []
    out: dict[str, Any] = {
        "created_at": created_at,
        "email_id": data.get("email_id"),
        "from": data.get("from"),
        "to": list(recipients),
        "subject": data.get("subject"),
        "tags": data.get("tags") or {},
    }
    if event_type == "email.bounced" and isinstance(bounce := data.get("bounce"), dict):
        diagnostic = bounce.get("diagnostic_code")
        out["bounce"] = {
            "type": _BOUNCE_TYPES.get(bounce.get("type") or "", bounce.get("type")),
            "subType": bounce.get("subtype"),
            "message": diagnostic or f"{bounce.get('type')} bounce ({bounce.get('subtype')})",
        }
        if diagnostic:
            out["bounce"]["diagnosticCode"] = diagnostic
    elif event_type == "email.clicked" and isinstance(click := data.get("click"), dict):
        out["click"] = {
            "ipAddress": click.get("ip"),
            "link": click.get("link"),
            "timestamp": created_at,
            "userAgent": click.get("user_agent"),
        }
    elif event_type == "email.opened" and isinstance(opened := data.get("open"), dict):
        out["open"] = {"ipAddress": opened.get("ip"), "timestamp": created_at, "userAgent": opened.get("user_agent")}
    elif event_type == "email.failed" and isinstance(failed := data.get("failed"), dict):
        out["failed"] = {"reason": failed.get("reason")}
    elif event_type == "email.suppressed" and isinstance(suppressed := data.get("suppressed"), list):
        reasons = sorted({str(s.get("reason")) for s in suppressed if isinstance(s, dict)})
        out["suppressed"] = {
            "type": ",".join(reasons),
            "message": "; ".join(f"{s.get('email')}: {s.get('reason')}" for s in suppressed if isinstance(s, dict)),
        }
    elif event_type == "email.scheduled" and data.get("scheduled_at"):
        out["scheduled_at"] = data["scheduled_at"]
    return out


def resend_body(stored: bytes) -> bytes:
    """The body a `resend` endpoint gets for a stored (Mailroom-shaped) payload."""
    payload = _decoder.decode(stored)
    event_type, created_at = payload["type"], payload["created_at"]
    data = payload.get("data") or {}
    if event_type.startswith("email.") and "email_id" in data:
        data = _email_data(event_type, created_at, data)
    return _encoder.encode({"type": event_type, "created_at": created_at, "data": data})


def svix_headers(standard: dict[str, str]) -> dict[str, str]:
    """Standard Webhooks headers (`signed_headers`) under Svix's names: the same values."""
    return {
        "content-type": standard["content-type"],
        "svix-id": standard["webhook-id"],
        "svix-timestamp": standard["webhook-timestamp"],
        "svix-signature": standard["webhook-signature"],
    }
