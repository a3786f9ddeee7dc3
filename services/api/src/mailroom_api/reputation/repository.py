"""Every SQL statement of the reputation guard: a tenant's window of live sends, counted."""

from __future__ import annotations

import msgspec
from mailroom_kit.db import Conn, fetch_all

# A recipient the sender handed to SES (whatever happened to it since). Queued, scheduled, failed,
# canceled and suppressed recipients were never sent.
SENT_STATUSES = ["sent", "delivery_delayed", "delivered", "bounced", "complained"]


class WindowCounts(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    sends: int
    hard_bounces: int
    complaints: int


async def window_counts(conn: Conn, windows: list[tuple[str, str]], limit: int) -> list[WindowCounts]:
    """Per (tenant, smallest email id counted), its newest `limit` live sends (a send is one
    recipient; newest email first, then in recipient order) and how many of them hard-bounced
    (a timeline `bounced` entry of bounce_type Permanent naming the recipient, or naming none) or
    complained. One statement: per tenant a backward range scan of emails_tenant_list_idx that
    stops after `limit` sends, the recipients by primary key, and the timeline (email_events_email_idx)
    only for bounced recipients."""
    if not windows:
        return []
    return await fetch_all(
        conn,
        WindowCounts,
        "SELECT t.tenant_id, count(w.status)::int AS sends,"
        " (count(*) FILTER (WHERE w.hard))::int AS hard_bounces,"
        " (count(*) FILTER (WHERE w.status = 'complained'))::int AS complaints"
        " FROM unnest(%(tenants)s::text[], %(floors)s::text[]) AS t (tenant_id, floor)"
        " LEFT JOIN LATERAL ("
        "  SELECT r.status, CASE WHEN r.status = 'bounced' THEN EXISTS ("
        "   SELECT 1 FROM email_events ev WHERE ev.email_id = r.email_id AND ev.type = 'bounced'"
        "   AND ev.data ->> 'bounce_type' = 'Permanent'"
        "   AND (jsonb_array_length(coalesce(ev.data -> 'recipients', '[]')) = 0"
        "    OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(ev.data -> 'recipients') a (address)"
        "     WHERE lower(a.address) = lower(r.address)))"
        "  ) ELSE false END AS hard"
        "  FROM emails e JOIN email_recipients r ON r.email_id = e.id"
        "  WHERE e.tenant_id = t.tenant_id AND e.mode = 'live' AND e.id >= t.floor"
        "  AND e.status = ANY(%(sent)s) AND r.status = ANY(%(sent)s)"
        "  ORDER BY e.id DESC, r.position LIMIT %(limit)s"
        " ) w ON true GROUP BY t.tenant_id",
        {
            "tenants": [w[0] for w in windows],
            "floors": [w[1] for w in windows],
            "sent": SENT_STATUSES,
            "limit": limit,
        },
    )
