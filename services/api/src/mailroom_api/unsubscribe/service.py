"""One-click unsubscribe: a valid token records an `unsubscribe` suppression of its address for
its tenant and mode (once; repeating is harmless) and, when the entry is new, an EmailUnsubscribed
in the outbox in the same transaction (webhook `email.unsubscribed`). Anything else is `not_found`, and nothing is
written. The page a GET shows changes nothing (link scanners follow GETs)."""

from __future__ import annotations

import html
from datetime import UTC, datetime

from mailroom_contracts import events
from mailroom_kit import outbox
from mailroom_kit.db import Conn
from mailroom_kit.ids import new_id

from mailroom_api.emails.validation import parse_address
from mailroom_api.errors import not_found
from mailroom_api.unsubscribe import repository as repo
from mailroom_api.unsubscribe.tokens import Unsubscriber, verify

SCHEMA = "api"
ONE_CLICK_SOURCE = "OneClick"  # EmailUnsubscribed.source of our own RFC 8058 endpoint (SES says "UnsubscribeHeader")


def check_token(secret: bytes | None, token: str) -> Unsubscriber:
    who = verify(secret, token) if secret else None
    if who is None:
        raise not_found("unsubscribe link")
    return who


async def unsubscribe(conn: Conn, secret: bytes | None, token: str) -> Unsubscriber:
    who = check_token(secret, token)
    recorded = await repo.add_suppression(
        conn,
        tenant_id=who.tenant_id,
        mode=who.mode,
        email=suppressed_form(who.address),
        reason="unsubscribe",
        source_email_id=who.email_id,
    )
    if recorded is None:
        raise not_found("unsubscribe link")
    if recorded:  # issue 22: webhooks and subscribers hear of it as of an SES Subscription opt-out
        await outbox.add(conn, unsubscribed_event(who), schema=SCHEMA)
    return who


def unsubscribed_event(who: Unsubscriber) -> events.EmailUnsubscribed:
    """The EmailUnsubscribed of a one-click unsubscribe (`source` "OneClick"): the suppression is
    tenant-wide, so it is an unsubscribe from all. Written only when the entry is new, so a second
    click (or a link scanner's retries) publishes nothing more."""
    return events.EmailUnsubscribed(
        event_id=new_id("evt"),
        occurred_at=datetime.now(UTC),
        tenant_id=who.tenant_id,
        email_id=who.email_id,
        mode=who.mode,
        recipients=[who.address],
        source=ONE_CLICK_SOURCE,
        unsubscribe_all=True,
    )


def suppressed_form(address: str) -> str:
    """The address as suppressions keep it: normalised as a recipient is (an IDN domain back in
    Unicode; the token carries the ASCII form), then lower-cased."""
    return parse_address(address, "token").email.lower()


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}}
button{{font-size:1rem;padding:.6rem 1.2rem;cursor:pointer}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def confirmation_page(who: Unsubscriber) -> str:
    """The GET page: says what the button does; the button POSTs to this same URL."""
    address = html.escape(who.address)
    body = (
        f"<p>Stop these emails to <strong>{address}</strong>?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _PAGE.format(title="Unsubscribe", body=body)


def done_page(who: Unsubscriber) -> str:
    address = html.escape(who.address)
    body = f"<p><strong>{address}</strong> will not get these emails any more.</p>"
    return _PAGE.format(title="Unsubscribed", body=body)
