"""The email status ranking. Status only moves forward (SES/SNS deliver out of order): a late
`delivered` never overwrites `bounced` or `complained`. `failed` is terminal and only replaces
states in which nothing has reached a mailbox yet. `scheduled` comes before `queued` (the api's
relay moves it when it publishes the EmailQueued: emails/scheduling.mark_queued); `canceled` is
terminal and only replaces `scheduled` (a cancel is possible only before that)."""

from __future__ import annotations

from mailroom_contracts import events

STATUS_RANK = {
    "scheduled": -1,
    "queued": 0,
    "sent": 1,
    "delivery_delayed": 2,
    "delivered": 3,
    "bounced": 4,
    "complained": 5,
}
# `suppressed` (issue 22): a scheduled email every recipient of which was suppressed by its due time
# (emails/scheduling.recheck_suppressions); nothing was sent, nothing follows.
TERMINAL = frozenset({"failed", "canceled", "suppressed"})
STATUSES = frozenset({*STATUS_RANK, *TERMINAL})
EVENT_STATUS: dict[type[events.EmailEvent], str] = {
    events.EmailSent: "sent",
    events.EmailFailed: "failed",
    events.EmailDelivered: "delivered",
    events.EmailBounced: "bounced",
    events.EmailComplained: "complained",
    events.EmailDeliveryDelayed: "delivery_delayed",
    events.EmailScheduled: "scheduled",
    events.EmailCanceled: "canceled",
}


def advance(current: str, new: str) -> str:
    if current in TERMINAL or current not in STATUS_RANK:
        return current
    if new == "failed":
        return new if STATUS_RANK[current] < STATUS_RANK["delivered"] else current
    if new == "canceled":
        return new if current == "scheduled" else current
    return new if STATUS_RANK.get(new, -2) > STATUS_RANK[current] else current
