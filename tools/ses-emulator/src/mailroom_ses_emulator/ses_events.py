"""SES event-publishing records (the SNS ``Message``) and the mailbox simulator's outcomes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .mime import ParsedMessage, decode_words, split_addresses
from .util import iso_ms, ses_message_id

# MatchingEventTypes value -> record ``eventType``
EVENT_TYPE_NAMES: dict[str, str] = {
    "SEND": "Send",
    "REJECT": "Reject",
    "BOUNCE": "Bounce",
    "COMPLAINT": "Complaint",
    "DELIVERY": "Delivery",
    "OPEN": "Open",
    "CLICK": "Click",
    "RENDERING_FAILURE": "Rendering Failure",
    "DELIVERY_DELAY": "DeliveryDelay",
    "SUBSCRIPTION": "Subscription",
}
EVENT_TYPE_KEYS: dict[str, str] = {v: k for k, v in EVENT_TYPE_NAMES.items()}

SIMULATOR_DOMAIN = "simulator.amazonses.com"
REPORTING_MTA = "a8-30.smtp-out.amazonses.com"
SUPPRESSION_DIAGNOSTIC = (
    "Amazon SES did not send the message to this address because it is on the suppression list "
    "for your account. For more information about removing addresses from the suppression list, "
    "see the Amazon SES Developer Guide at "
    "https://docs.aws.amazon.com/ses/latest/DeveloperGuide/sending-email-suppression-list.html"
)


@dataclass
class MailContext:
    """What an event record's ``mail`` object is built from."""

    timestamp: float
    source: str
    source_arn: str
    account_id: str
    message_id: str
    destination: list[str]
    parsed: ParsedMessage
    tags: dict[str, list[str]]


def common_headers(parsed: ParsedMessage, ses_id: str) -> dict[str, Any]:
    common: dict[str, Any] = {}
    if froms := parsed.get_all("From"):
        common["from"] = split_addresses(froms)
    if reply := parsed.get_all("Reply-To"):
        common["replyTo"] = split_addresses(reply)
    if (date := parsed.get("Date")) is not None:
        common["date"] = date
    if to := parsed.get_all("To"):
        common["to"] = split_addresses(to)
    if cc := parsed.get_all("Cc"):
        common["cc"] = split_addresses(cc)
    if bcc := parsed.get_all("Bcc"):
        common["bcc"] = split_addresses(bcc)
    common["messageId"] = parsed.get("Message-ID") or ses_id
    if (subject := parsed.get("Subject")) is not None:
        common["subject"] = decode_words(subject)
    return common


def mail_object(ctx: MailContext, extra_tags: dict[str, list[str]] | None = None) -> dict[str, Any]:
    tags = dict(ctx.tags)
    if extra_tags:
        # SES adds e.g. ses:outgoing-ip after its own tags, before the caller's
        own = {k: v for k, v in tags.items() if k.startswith("ses:")}
        custom = {k: v for k, v in tags.items() if not k.startswith("ses:")}
        tags = {**own, **extra_tags, **custom}
    return {
        "timestamp": iso_ms(ctx.timestamp),
        "source": ctx.source,
        "sourceArn": ctx.source_arn,
        "sendingAccountId": ctx.account_id,
        "messageId": ctx.message_id,
        "destination": list(ctx.destination),
        "headersTruncated": ctx.parsed.headers_truncated,
        "headers": [{"name": n, "value": v} for n, v in ctx.parsed.headers],
        "commonHeaders": common_headers(ctx.parsed, ctx.message_id),
        "tags": tags,
    }


def send_record(ctx: MailContext) -> dict[str, Any]:
    return {"eventType": "Send", "mail": mail_object(ctx), "send": {}}


def delivery_record(ctx: MailContext, recipient: str, region: str) -> dict[str, Any]:
    now = time.time()
    return {
        "eventType": "Delivery",
        "mail": mail_object(ctx, {"ses:outgoing-ip": ["127.0.0.1"]}),
        "delivery": {
            "timestamp": iso_ms(now),
            "processingTimeMillis": max(0, int((now - ctx.timestamp) * 1000)),
            "recipients": [recipient],
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": REPORTING_MTA,
        },
    }


def bounce_record(
    ctx: MailContext,
    recipient: str,
    region: str,
    *,
    sub_type: str = "General",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 user unknown",
) -> dict[str, Any]:
    now = time.time()
    bounce: dict[str, Any] = {
        "feedbackId": ses_message_id(now, region),
        "bounceType": "Permanent",
        "bounceSubType": sub_type,
        "bouncedRecipients": [
            {"emailAddress": recipient, "action": "failed", "status": status, "diagnosticCode": diagnostic}
        ],
        "timestamp": iso_ms(now),
    }
    if sub_type == "OnAccountSuppressionList":
        bounce["reportingMTA"] = "dns; amazonses.com"
    else:
        bounce["remoteMtaIp"] = "127.0.0.1"
        bounce["reportingMTA"] = f"dns; {REPORTING_MTA}"
    return {"eventType": "Bounce", "bounce": bounce, "mail": mail_object(ctx)}


def complaint_record(ctx: MailContext, recipient: str, region: str) -> dict[str, Any]:
    now = time.time()
    return {
        "eventType": "Complaint",
        "complaint": {
            "feedbackId": ses_message_id(now, region),
            "complaintSubType": None,
            "complainedRecipients": [{"emailAddress": recipient}],
            "timestamp": iso_ms(now),
            "userAgent": "Amazon SES Mailbox Simulator",
            "complaintFeedbackType": "abuse",
            "arrivalDate": iso_ms(now),
        },
        "mail": mail_object(ctx),
    }


def recipient_outcome(recipient: str) -> list[str]:
    """Event types (record names) the mailbox simulator produces after ``Send`` for a recipient."""
    local, _, domain = recipient.lower().rpartition("@")
    if domain == SIMULATOR_DOMAIN:
        base = local.split("+", 1)[0]  # success+label@simulator... behaves like success@
        if base == "bounce":
            return ["Bounce"]
        if base == "complaint":
            return ["Delivery", "Complaint"]
        if base == "suppressionlist":
            return ["Bounce:OnAccountSuppressionList"]
    return ["Delivery"]


def build_records(ctx: MailContext, region: str) -> list[dict[str, Any]]:
    """All event records for a message, in the order SES would emit them."""
    records = [send_record(ctx)]
    for rcpt in ctx.destination:
        for outcome in recipient_outcome(rcpt):
            if outcome == "Delivery":
                records.append(delivery_record(ctx, rcpt, region))
            elif outcome == "Bounce":
                records.append(bounce_record(ctx, rcpt, region))
            elif outcome == "Bounce:OnAccountSuppressionList":
                records.append(
                    bounce_record(
                        ctx,
                        rcpt,
                        region,
                        sub_type="OnAccountSuppressionList",
                        diagnostic=SUPPRESSION_DIAGNOSTIC,
                    )
                )
            elif outcome == "Complaint":
                records.append(complaint_record(ctx, rcpt, region))
    return records
