"""Every SQL statement on the email log: `emails`, `email_recipients` and `email_events`."""

from __future__ import annotations

import functools
from datetime import date, datetime
from typing import Any

import msgspec
import psycopg
from mailroom_kit import tracing
from mailroom_kit.db import Conn, columns, fetch_all, fetch_one
from mailroom_kit.group_commit import statement_failed as statement_failed  # re-exported
from mailroom_kit.outbox import rows_json
from psycopg.types.json import Jsonb


class EmailRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    api_key_id: str
    mode: str
    from_address: str  # as given, e.g. "Acme <noreply@mail.acme.com>"
    from_domain: str
    to_addresses: list[str]
    cc_addresses: list[str]
    bcc_addresses: list[str]
    reply_to: list[str]
    subject: str
    html: str | None
    text: str | None
    headers: dict[str, str]
    tags: dict[str, str]
    metadata: dict[str, Any] | None
    status: str
    created_at: datetime
    last_event_at: datetime
    # issue 16 (migration 0005): [{filename, size, content_type, content_id}], never the bytes.
    attachments: list[dict[str, Any]] = []
    # Migration 0006: when the retention job removed html, text, headers and attachments (the
    # content); None while they are kept.
    content_purged_at: datetime | None = None
    # Migration 0008: SES Open / Click events counted by the projector (update_email_statuses).
    opens: int = 0
    clicks: int = 0
    # Migration 0010 (templates, issue 17): the template and version that rendered it.
    template_id: str | None = None
    template_version: int | None = None


class LockedEmail(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    status: str
    last_event_at: datetime


class RecipientRow(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    address: str
    type: str
    status: str


class TimelineRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]


COLUMNS = columns(EmailRow)
_JSON_COLUMNS = ("to_addresses", "cc_addresses", "bcc_addresses", "reply_to", "headers", "tags", "attachments")


# The accept statement's column casts (its values come from a SELECT, so nothing else types them).
_ACCEPT_TYPES = {
    **dict.fromkeys(EmailRow.__struct_fields__, "text"),
    **dict.fromkeys(_JSON_COLUMNS, "jsonb"),
    "metadata": "jsonb",
    "created_at": "timestamptz",
    "last_event_at": "timestamptz",
    "content_purged_at": "timestamptz",
    "opens": "int",
    "clicks": "int",
    "template_version": "int",
}
_RECORDSET = ", ".join(f"{name} {kind}" for name, kind in _ACCEPT_TYPES.items())


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What an Idempotency-Key answers for (tenant and mode come with the email rows)."""

    key: str
    endpoint: str  # e.g. "POST /v1/emails"; with body_sha256 the request's fingerprint
    body_sha256: bytes
    status_code: int
    response: bytes  # the answer's body, replayed byte for byte
    ttl_seconds: int


# Records the key in the statement that writes the email(s), and only when `{gate}` lets them be
# written. An expired record (not purged yet) is taken over; a live one is left alone (no row
# returned, so nothing else is written). A concurrent statement with the same key waits here until
# the first one committed, then finds its record.
_RECORD_KEY = """
    INSERT INTO idempotency_keys AS k
        (tenant_id, mode, key, endpoint, body_sha256, status_code, response, created_at, expires_at)
    SELECT %(tenant_id)s::text, %(mode)s::text, %(idempotency_key)s::text, %(key_endpoint)s::text,
        %(key_body_sha256)s::bytea, %(key_status_code)s::integer, %(key_response)s::bytea,
        now(), now() + make_interval(secs => %(key_ttl_seconds)s::integer)
    FROM {gate}
    ON CONFLICT (tenant_id, mode, key) DO UPDATE SET
        endpoint = EXCLUDED.endpoint, body_sha256 = EXCLUDED.body_sha256, status_code = EXCLUDED.status_code,
        response = EXCLUDED.response, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
    WHERE k.expires_at <= now()
    RETURNING 1
"""


def _key_params(record: IdempotencyRecord) -> dict[str, Any]:
    return {
        "idempotency_key": record.key,
        "key_endpoint": record.endpoint,
        "key_body_sha256": record.body_sha256,
        "key_status_code": record.status_code,
        "key_response": record.response,
        "key_ttl_seconds": record.ttl_seconds,
    }


# ----------------------------------------------------------------------------- monthly quota (issue 23)

# Both accept statements count the live recipients they write into the month's `tenant_usage` row,
# FROM the rows that gate the email inserts (so a refused or replayed request never counts), and
# only within the quota: ON CONFLICT DO UPDATE ... WHERE sees the latest committed count, whichever
# replica wrote it. Counting none (`usage_n` 0: a test key, or every recipient suppressed) skips it.
_COUNT_USAGE = """, counted AS (  -- issue 23: the month's live recipients, within the quota
    INSERT INTO tenant_usage AS u (tenant_id, month, recipients)
    SELECT %(tenant_id)s::text, %(usage_month)s::date, %(usage_n)s::bigint FROM {source}
    WHERE %(usage_n)s::bigint > 0
        AND (%(usage_quota)s::bigint IS NULL OR %(usage_n)s::bigint <= %(usage_quota)s::bigint)
    ON CONFLICT (tenant_id, month) DO UPDATE SET recipients = u.recipients + EXCLUDED.recipients
    WHERE %(usage_quota)s::bigint IS NULL OR u.recipients + EXCLUDED.recipients <= %(usage_quota)s::bigint
    RETURNING 1
)"""
# Emails written but not counted: over the quota. quota_refused() (migration 0013) raises MRQ01, so
# the whole statement, Idempotency-Key record included, is rolled back (CASE: evaluated only then).
_WITHIN_QUOTA = (
    "CASE WHEN %(usage_n)s::bigint = 0 OR NOT EXISTS (SELECT 1 FROM {source})"
    " OR EXISTS (SELECT 1 FROM counted) THEN true ELSE quota_refused() END AS within_quota"
)
QUOTA_SQLSTATE = "MRQ01"


class UsageCount(msgspec.Struct, frozen=True, kw_only=True):
    """What an accept adds to the month's count, and the quota it must stay within."""

    month: date  # the first day of the UTC month of the accept
    recipients: int  # live recipients written (0: count nothing)
    quota: int | None  # None: no quota, count only


NO_USAGE = UsageCount(month=date(1970, 1, 1), recipients=0, quota=None)


def _usage_params(usage: UsageCount) -> dict[str, Any]:
    return {"usage_month": usage.month, "usage_n": usage.recipients, "usage_quota": usage.quota}


async def _execute_within_quota(
    conn: Conn, statement: str, params: dict[str, Any]
) -> psycopg.AsyncCursor[dict[str, Any]] | None:
    """Run an accept statement; None when it was refused for the quota (nothing was written)."""
    try:
        return await conn.execute(statement, params)
    except psycopg.Error as exc:
        if exc.sqlstate == QUOTA_SQLSTATE:
            return None
        raise


async def _execute_counted(conn: Conn, statement: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """`_execute_within_quota` for a statement answering one row (the gate's)."""
    cur = await _execute_within_quota(conn, statement, params)
    if cur is None:
        return None
    row = await cur.fetchone()
    assert row is not None  # the gate is always one row
    return row


# ----------------------------------------------------------------------------- single accept


def _accept_sql(*, keyed: bool) -> str:
    """The one accept statement; with `keyed`, the Idempotency-Key record gates the writes."""
    gate = "allowed WHERE domain_allowed AND domain_verified"
    record = f"idem AS ({_RECORD_KEY.format(gate=gate)}), " if keyed else ""
    source = "idem" if keyed else gate
    key_recorded = "EXISTS (SELECT 1 FROM idem)" if keyed else "true"
    return f"""
WITH allowed AS (
    SELECT
        (%(key_domain_id)s::text IS NULL OR EXISTS (
            SELECT 1 FROM domains
            WHERE tenant_id = %(tenant_id)s AND id = %(key_domain_id)s AND lower(name) = %(from_domain)s
        )) AS domain_allowed,
        (NOT %(needs_verified)s::boolean OR EXISTS (
            SELECT 1 FROM domains
            WHERE tenant_id = %(tenant_id)s AND lower(name) = %(from_domain)s AND status = 'verified'
        )) AS domain_verified
), {record}email AS (
    INSERT INTO emails ({COLUMNS})
    SELECT {", ".join(f"%({name})s::{kind}" for name, kind in _ACCEPT_TYPES.items())}
    FROM {source}
    RETURNING id
), recipients AS (
    INSERT INTO email_recipients (email_id, position, address, type, status)
    SELECT email.id, r.n - 1, r.address, r.type, coalesce(r.status, %(status)s::text)
    FROM email, ROWS FROM (jsonb_to_recordset(%(recipients)s::jsonb) AS (address text, type text, status text))
        WITH ORDINALITY AS r (address, type, status, n)
), timeline AS (
    INSERT INTO email_events (id, email_id, type, occurred_at, data)
    SELECT %(event_id)s::text, email.id, %(timeline_type)s::text, %(created_at)s::timestamptz, '{{}}' FROM email
), queued AS (
    INSERT INTO outbox (event_id, subject, payload, trace_context)
    SELECT %(event_id)s::text, %(outbox_subject)s::text, %(payload)s::bytea, %(trace_context)s::text FROM email
    ON CONFLICT (event_id) DO NOTHING
){_COUNT_USAGE.format(source="email")}
SELECT domain_allowed, domain_verified, {key_recorded} AS key_recorded, {_WITHIN_QUOTA.format(source="email")}
FROM allowed
"""


_ACCEPT = _accept_sql(keyed=False)
_ACCEPT_KEYED = _accept_sql(keyed=True)


class Acceptance(msgspec.Struct, frozen=True, kw_only=True):
    domain_allowed: bool  # False: the key is limited to another domain (nothing was written)
    domain_verified: bool  # False: a live key and no verified domain of that name (nothing was written)
    # False only with an Idempotency-Key: a live record of that key exists (nothing was written).
    key_recorded: bool = True
    # False: the recipients would take the month past the tenant's quota (issue 23; nothing was written).
    within_quota: bool = True


async def accept_email(
    conn: Conn,
    email: EmailRow,
    *,
    recipients: list[tuple[str, str]],
    key_domain_id: str | None,
    needs_verified_domain: bool,
    event_id: str,
    outbox_subject: str,
    payload: bytes,
    timeline_type: str = "queued",
    idempotency: IdempotencyRecord | None = None,
    schedule: ScheduledAccept | None = None,
    suppressed: frozenset[str] = frozenset(),
    usage: UsageCount = NO_USAGE,
    suppressed_event: OutboxRow | None = None,
) -> Acceptance:
    """Accept an email in ONE statement, atomic by itself: check the from-domain (the key's own
    domain if it is limited to one; a verified domain of the tenant if `needs_verified_domain`),
    and only if both hold write the email, its `recipients` ((address, type) in order) with the
    email's status, the `timeline_type` timeline entry (`event_id`) and the outbox row
    (`outbox_subject`, `payload`) — and, given `idempotency`, the key's record, without which
    (a live record of that key exists) nothing is written. No NOTIFY here: it would serialize the
    commits (see emails/relay_wake.py). With `schedule` (scheduling, at the end of this module) the
    EmailQueued row waits in `outbox_scheduled` and the EmailScheduled row goes to the outbox."""
    params: dict[str, Any] = msgspec.structs.asdict(email)
    for name in (*_JSON_COLUMNS, "metadata"):
        value = params[name]
        params[name] = None if value is None else msgspec.json.encode(value).decode()
    params.update(
        key_domain_id=key_domain_id,
        needs_verified=needs_verified_domain,
        # One JSON text, not two arrays: psycopg dumps a str without inspecting it.
        # A recipient in `suppressed` (lower-cased; issue 22) carries its own status; the others take the email's.
        recipients=msgspec.json.encode(
            [
                {"address": a, "type": t, "status": "suppressed"}
                if a.lower() in suppressed
                else {"address": a, "type": t}
                for a, t in recipients
            ]
            if suppressed
            else [{"address": a, "type": t} for a, t in recipients]
        ).decode(),
        event_id=event_id,
        timeline_type=timeline_type,
        outbox_subject=outbox_subject,
        payload=payload,
        trace_context=tracing.context_text(),  # NULL when tracing is off
    )
    statement = _ACCEPT
    if idempotency is not None:
        params.update(_key_params(idempotency))
        statement = _ACCEPT_KEYED
    if schedule is not None:
        params.update(msgspec.structs.asdict(schedule))
        statement = _SCHEDULED[statement]
    if suppressed_event is not None:  # issue 22: the EmailSuppressed of the dropped recipients
        params.update(
            suppressed_event_id=suppressed_event.event_id,
            suppressed_subject=suppressed_event.subject,
            suppressed_payload=suppressed_event.payload,
        )
        statement = _with_suppressed_events(statement, batch=False)
    params.update(_usage_params(usage))  # issue 23
    row = await _execute_counted(conn, statement, params)
    if row is None:
        return Acceptance(domain_allowed=True, domain_verified=True, within_quota=False)
    return Acceptance(
        domain_allowed=row["domain_allowed"], domain_verified=row["domain_verified"], key_recorded=row["key_recorded"]
    )


# ----------------------------------------------------------------------------- grouped accept (issue 15)


class GroupedEmail(msgspec.Struct, frozen=True, kw_only=True):
    """One single send in a group of them written by one statement (`accept_grouped`): what
    `accept_email` takes, for the plain case only (no Idempotency-Key, schedule or suppressed
    recipients), with the request's own tenant, key rules and quota."""

    row: EmailRow
    recipients: list[tuple[str, str]]
    key_domain_id: str | None
    needs_verified_domain: bool
    event_id: str
    outbox_subject: str
    payload: bytes
    usage: UsageCount
    trace_context: str | None  # the request's, taken when it joined the group


# Each item (n, from 1) is gated by its own from-domain rules, as `_ACCEPT`'s `allowed`; only the
# items that pass are written. The month's usage is counted per tenant in one row update each; if
# any tenant's items do not all fit its quota, quota_refused() rolls the whole statement back and
# the caller accepts the items one by one (their exact answers).
_ACCEPT_GROUPED = f"""
WITH item AS (
    SELECT * FROM jsonb_to_recordset(%(items)s::jsonb) AS i (
        n integer, tenant_id text, key_domain_id text, needs_verified boolean, from_domain text,
        usage_month date, usage_n bigint, usage_quota bigint, email_id text, created_at timestamptz,
        event_id text, subject text, payload text, trace_context text)
), allowed AS (
    SELECT i.n,
        (i.key_domain_id IS NULL OR EXISTS (
            SELECT 1 FROM domains d
            WHERE d.tenant_id = i.tenant_id AND d.id = i.key_domain_id AND lower(d.name) = i.from_domain
        )) AS domain_allowed,
        (NOT i.needs_verified OR EXISTS (
            SELECT 1 FROM domains d
            WHERE d.tenant_id = i.tenant_id AND lower(d.name) = i.from_domain AND d.status = 'verified'
        )) AS domain_verified
    FROM item i
), ok AS (
    SELECT n FROM allowed WHERE domain_allowed AND domain_verified
), email AS (
    INSERT INTO emails ({COLUMNS})
    SELECT {", ".join(f"e.{name}" for name in _ACCEPT_TYPES)}
    FROM ROWS FROM (jsonb_to_recordset(%(emails)s::jsonb) AS ({_RECORDSET})) WITH ORDINALITY
        AS e ({COLUMNS}, n)
    JOIN ok USING (n)
), recipients AS (
    INSERT INTO email_recipients (email_id, position, address, type, status)
    SELECT r.email_id, r.position, r.address, r.type, r.status
    FROM jsonb_to_recordset(%(recipients)s::jsonb)
        AS r (n integer, email_id text, position integer, address text, type text, status text)
    JOIN ok USING (n)
), timeline AS (
    INSERT INTO email_events (id, email_id, type, occurred_at, data)
    SELECT i.event_id, i.email_id, 'queued', i.created_at, '{{}}' FROM item i JOIN ok USING (n)
), queued AS (
    INSERT INTO outbox (event_id, subject, payload, trace_context)
    SELECT i.event_id, i.subject, decode(i.payload, 'base64'), i.trace_context FROM item i JOIN ok USING (n)
    ON CONFLICT (event_id) DO NOTHING
), usage AS (
    SELECT i.tenant_id, i.usage_month, sum(i.usage_n)::bigint AS recipients, min(i.usage_quota) AS quota
    FROM item i JOIN ok USING (n)
    WHERE i.usage_n > 0
    GROUP BY i.tenant_id, i.usage_month
), counted AS (
    INSERT INTO tenant_usage AS u (tenant_id, month, recipients)
    SELECT tenant_id, usage_month, recipients FROM usage WHERE quota IS NULL OR recipients <= quota
    ON CONFLICT (tenant_id, month) DO UPDATE SET recipients = u.recipients + EXCLUDED.recipients
    WHERE u.recipients + EXCLUDED.recipients <= coalesce(
        (SELECT g.quota FROM usage g WHERE g.tenant_id = u.tenant_id AND g.usage_month = u.month),
        9223372036854775807)
    RETURNING 1
)
SELECT a.n, a.domain_allowed, a.domain_verified,
    CASE WHEN (SELECT count(*) FROM usage) = (SELECT count(*) FROM counted) THEN true
        ELSE quota_refused() END AS within_quota
FROM allowed a
ORDER BY a.n
"""


async def accept_grouped(conn: Conn, emails: list[GroupedEmail]) -> list[Acceptance] | None:
    """Accept several single sends, of any tenants, in ONE statement: each one whose from-domain
    passes `accept_email`'s rules is written (its row, recipients, `queued` timeline entry, outbox
    row and month's count) and the others are not; the answers are in the order of `emails`. None
    when the month's count of a tenant would pass its quota: then nothing was written, and the
    caller accepts them one by one (`accept_email`), so each gets its own answer."""
    # Three JSON texts, no arrays: psycopg dumps a str at once, a list element by element in Python
    # (six arrays here cost 11 % of the API's CPU under load).
    params: dict[str, Any] = {
        "items": msgspec.json.encode(
            [
                {
                    "n": n,
                    "tenant_id": e.row.tenant_id,
                    "key_domain_id": e.key_domain_id,
                    "needs_verified": e.needs_verified_domain,
                    "from_domain": e.row.from_domain,
                    "usage_month": e.usage.month,
                    "usage_n": e.usage.recipients,
                    "usage_quota": e.usage.quota,
                    "email_id": e.row.id,
                    "created_at": e.row.created_at,
                    "event_id": e.event_id,
                    "subject": e.outbox_subject,
                    "payload": e.payload,  # base64 in JSON (msgspec), decoded by the statement
                    "trace_context": e.trace_context,
                }
                for n, e in enumerate(emails, 1)
            ]
        ).decode(),
        "emails": msgspec.json.encode([e.row for e in emails]).decode(),
        "recipients": msgspec.json.encode(
            [
                {"n": n, "email_id": e.row.id, "position": i, "address": a, "type": t, "status": e.row.status}
                for n, e in enumerate(emails, 1)
                for i, (a, t) in enumerate(e.recipients)
            ]
        ).decode(),
    }
    cur = await _execute_within_quota(conn, _ACCEPT_GROUPED, params)
    if cur is None:
        return None
    rows = await cur.fetchall()
    return [Acceptance(domain_allowed=r["domain_allowed"], domain_verified=r["domain_verified"]) for r in rows]


async def suppressed_among(conn: Conn, tenant_id: str, mode: str, addresses: list[str]) -> dict[str, str]:
    """Which of `addresses` (lower-cased) are on the tenant's suppression list of `mode`, each with
    its entry's reason (issue 22; asked only when that list is not empty)."""
    cur = await conn.execute(
        "SELECT email, reason FROM suppressions WHERE tenant_id = %s AND mode = %s AND email = ANY(%s)",
        (tenant_id, mode, addresses),
    )
    return {row["email"]: row["reason"] for row in await cur.fetchall()}


async def add_suppressions(conn: Conn, entries: list[tuple[str, str, str, str, str]]) -> None:
    """Suppress (tenant_id, mode, lower-cased address, reason, source email id) entries in one
    statement; an address already on its list keeps its first entry (issue 22: the email log
    projector's automatic adds from hard bounces and complaints)."""
    if not entries:
        return
    tenant_ids, modes, emails, reasons, sources = (list(column) for column in zip(*entries, strict=True))
    await conn.execute(
        "INSERT INTO suppressions (tenant_id, mode, email, reason, source_email_id)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[])"
        " ON CONFLICT (tenant_id, mode, email) DO NOTHING",
        (tenant_ids, modes, emails, reasons, sources),
    )


# ----------------------------------------------------------------------------- email.suppressed at accept
# Issue 22: an accept that drops suppressed recipients also writes their EmailSuppressed to the
# outbox, in the same statement (one more CTE; a send that drops nobody runs the statement as it was).


class OutboxRow(msgspec.Struct, frozen=True, kw_only=True):
    """One more event an accept statement writes to the outbox."""

    event_id: str
    subject: str
    payload: bytes


_SUPPRESSED_CTE = """
), suppressed_event AS (
    INSERT INTO outbox (event_id, subject, payload)
    SELECT %(suppressed_event_id)s::text, %(suppressed_subject)s::text, %(suppressed_payload)s::bytea FROM email
    ON CONFLICT (event_id) DO NOTHING
)
SELECT """
_SUPPRESSED_BATCH_CTE = """
), suppressed_event AS (
    INSERT INTO outbox (event_id, subject, payload)
    SELECT s.event_id, s.subject, s.payload
    FROM go, unnest(%(suppressed_event_ids)s::text[], %(suppressed_subjects)s::text[],
        %(suppressed_payloads)s::bytea[]) AS s (event_id, subject, payload)
    ON CONFLICT (event_id) DO NOTHING
)
SELECT """


@functools.cache
def _with_suppressed_events(statement: str, *, batch: bool) -> str:
    """`statement` (any accept variant) with the EmailSuppressed CTE before its final SELECT."""
    tail = "\n)\nSELECT "
    assert statement.count(tail) == 1, "an accept statement changed: update _with_suppressed_events with it"
    return statement.replace(tail, _SUPPRESSED_BATCH_CTE if batch else _SUPPRESSED_CTE)


# ----------------------------------------------------------------------------- soft bounces (issue 22)


class SoftBounceFold(msgspec.Struct, frozen=True, kw_only=True):
    """What one projector batch did to one address's run of soft bounces, in stream order:
    `reset` (a delivery came, after which `added` soft bounces) or not (`added` more on the run)."""

    tenant_id: str
    mode: str
    email: str  # lower-cased
    reset: bool
    added: int
    last_email_id: str | None  # the email of the latest soft bounce (None when added is 0)


_SOFT_BOUNCES = """
WITH ops AS (
    SELECT * FROM unnest(%(tenant_ids)s::text[], %(modes)s::text[], %(emails)s::text[], %(resets)s::boolean[],
        %(added)s::integer[], %(sources)s::text[]) AS o (tenant_id, mode, email, reset, added, source)
), cleared AS (
    DELETE FROM soft_bounces s USING ops o
    WHERE o.reset AND o.added = 0 AND (s.tenant_id, s.mode, s.email) = (o.tenant_id, o.mode, o.email)
), counted AS (
    INSERT INTO soft_bounces AS s (tenant_id, mode, email, consecutive, last_email_id)
    SELECT tenant_id, mode, email, added, source FROM ops WHERE added > 0
    ON CONFLICT (tenant_id, mode, email) DO UPDATE SET
        -- a reset in this batch starts the run again: what the batch added after it is the run
        consecutive = CASE WHEN (SELECT reset FROM ops o WHERE (o.tenant_id, o.mode, o.email)
                = (EXCLUDED.tenant_id, EXCLUDED.mode, EXCLUDED.email))
            THEN EXCLUDED.consecutive ELSE s.consecutive + EXCLUDED.consecutive END,
        last_email_id = EXCLUDED.last_email_id,
        updated_at = now()
    RETURNING tenant_id, mode, email, consecutive, last_email_id
)
INSERT INTO suppressions (tenant_id, mode, email, reason, source_email_id)
SELECT tenant_id, mode, email, 'bounce', last_email_id FROM counted WHERE consecutive >= %(threshold)s
ON CONFLICT (tenant_id, mode, email) DO NOTHING
"""


async def fold_soft_bounces(conn: Conn, folds: list[SoftBounceFold], *, threshold: int) -> None:
    """Apply one batch's soft-bounce runs in one statement: a reset alone deletes the address's
    row, soft bounces add to it (or start it again after a reset), and an address whose run
    reaches `threshold` is suppressed (reason `bounce`; an existing entry is kept)."""
    if not folds:
        return
    await conn.execute(
        _SOFT_BOUNCES,
        {
            "tenant_ids": [f.tenant_id for f in folds],
            "modes": [f.mode for f in folds],
            "emails": [f.email for f in folds],
            "resets": [f.reset for f in folds],
            "added": [f.added for f in folds],
            "sources": [f.last_email_id for f in folds],
            "threshold": threshold,
        },
    )


# ----------------------------------------------------------------------------- batch accept


class DomainState(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str  # lower case
    status: str


async def domain_states(conn: Conn, tenant_id: str, names: list[str]) -> list[DomainState]:
    """The tenant's domains named `names` (lower case), for a batch's from-domain checks."""
    return await fetch_all(
        conn,
        DomainState,
        "SELECT id, lower(name) AS name, status FROM domains WHERE tenant_id = %s AND lower(name) = ANY(%s)",
        (tenant_id, names),
    )


class BatchEmail(msgspec.Struct, frozen=True, kw_only=True):
    """One email of a batch, as `accept_emails` writes it."""

    row: EmailRow
    recipients: list[tuple[str, str]]  # (address, type) in order
    event_id: str
    outbox_subject: str
    payload: bytes
    timeline_type: str = "queued"
    schedule: ScheduledAccept | None = None  # scheduling: see the end of this module
    suppressed: frozenset[str] = frozenset()  # issue 22: recipients (lower-cased) written `suppressed`
    suppressed_event: OutboxRow | None = None  # issue 22: their EmailSuppressed


def _accept_batch_sql(*, keyed: bool) -> str:
    gate = "gate WHERE ok"
    record = f"idem AS ({_RECORD_KEY.format(gate=gate)}), " if keyed else ""
    source = "idem" if keyed else gate
    key_recorded = "EXISTS (SELECT 1 FROM idem)" if keyed else "ok"
    return f"""
WITH gate AS (
    SELECT coalesce(bool_and(
        (%(key_domain_id)s::text IS NULL OR EXISTS (
            SELECT 1 FROM domains
            WHERE tenant_id = %(tenant_id)s AND id = %(key_domain_id)s AND lower(name) = f.name
        ))
        AND (NOT %(needs_verified)s::boolean OR EXISTS (
            SELECT 1 FROM domains
            WHERE tenant_id = %(tenant_id)s AND lower(name) = f.name AND status = 'verified'
        ))
    ), true) AS ok
    FROM unnest(%(from_domains)s::text[]) AS f (name)
), {record}go AS (
    SELECT 1 FROM {source}
), email AS (
    INSERT INTO emails ({COLUMNS})
    SELECT {COLUMNS} FROM go, jsonb_to_recordset(%(emails)s::jsonb) AS e ({_RECORDSET})
), recipients AS (
    INSERT INTO email_recipients (email_id, position, address, type, status)
    SELECT r.email_id, r.position, r.address, r.type, r.status
    FROM go, jsonb_to_recordset(%(recipients)s::jsonb)
        AS r (email_id text, position integer, address text, type text, status text)
), timeline AS (
    INSERT INTO email_events (id, email_id, type, occurred_at, data)
    SELECT t.id, t.email_id, t.type, t.occurred_at, '{{}}'
    FROM go, jsonb_to_recordset(%(timeline)s::jsonb) AS t (id text, email_id text, type text, occurred_at timestamptz)
), queued AS (
    INSERT INTO outbox (event_id, subject, payload, trace_context)
    SELECT o.event_id, o.subject, decode(o.payload, 'base64'), %(trace_context)s::text
    FROM go, jsonb_to_recordset(%(outbox)s::jsonb) AS o (event_id text, subject text, payload text)
    ON CONFLICT (event_id) DO NOTHING
){_COUNT_USAGE.format(source="go")}
SELECT ok AS domains_ok, {key_recorded} AS key_recorded, {_WITHIN_QUOTA.format(source="go")} FROM gate
"""


_ACCEPT_BATCH = _accept_batch_sql(keyed=False)
_ACCEPT_BATCH_KEYED = _accept_batch_sql(keyed=True)


_outbox_json = rows_json  # (event id, subject, payload) rows as the statements' `outbox` JSON


class BatchAcceptance(msgspec.Struct, frozen=True, kw_only=True):
    # False: a from-domain the caller found allowed no longer is (nothing was written; check again).
    domains_ok: bool
    # False: nothing was written, because domains_ok is False or (with an Idempotency-Key) a live
    # record of that key exists.
    key_recorded: bool
    # False: the recipients would take the month past the tenant's quota (issue 23; nothing was written).
    within_quota: bool = True


async def accept_emails(
    conn: Conn,
    emails: list[BatchEmail],
    *,
    tenant_id: str,
    mode: str,
    key_domain_id: str | None,
    needs_verified_domain: bool,
    idempotency: IdempotencyRecord | None = None,
    usage: UsageCount = NO_USAGE,
) -> BatchAcceptance:
    """Accept many emails of one tenant in ONE statement, atomic by itself: all of them (their
    rows, recipients, timeline entries and outbox rows, one outbox batch) and the Idempotency-Key
    record, or nothing. The caller has checked each email's from-domain; the statement checks
    again that every from-domain of `emails` still passes the same rules as `accept_email`'s and
    writes nothing if one does not (`domains_ok` False)."""
    rows = [e.row for e in emails]
    params: dict[str, Any] = {
        "tenant_id": tenant_id,
        "mode": mode,
        "key_domain_id": key_domain_id,
        "needs_verified": needs_verified_domain,
        "from_domains": sorted({r.from_domain for r in rows}),
        "emails": msgspec.json.encode(rows).decode(),
        "recipients": msgspec.json.encode(
            [
                {
                    "email_id": e.row.id,
                    "position": i,
                    "address": address,
                    "type": kind,
                    "status": "suppressed" if e.suppressed and address.lower() in e.suppressed else e.row.status,
                }
                for e in emails
                for i, (address, kind) in enumerate(e.recipients)
            ]
        ).decode(),
        "timeline": msgspec.json.encode(
            [
                {"id": e.event_id, "email_id": e.row.id, "type": e.timeline_type, "occurred_at": e.row.created_at}
                for e in emails
            ]
        ).decode(),
        # JSON, not arrays (see accept_grouped); a payload is base64 in it, decoded by the statement.
        "outbox": _outbox_json([(e.event_id, e.outbox_subject, e.payload) for e in emails]),
        "trace_context": tracing.context_text(),  # NULL when tracing is off
    }
    statement = _ACCEPT_BATCH
    if idempotency is not None:
        params.update(_key_params(idempotency))
        statement = _ACCEPT_BATCH_KEYED
    if any(e.schedule is not None for e in emails):
        params.update(_batch_schedule_params(emails))
        statement = _SCHEDULED[statement]
    dropped = [e.suppressed_event for e in emails if e.suppressed_event is not None]
    if dropped:  # issue 22: the EmailSuppressed of the items with dropped recipients
        params.update(
            suppressed_event_ids=[o.event_id for o in dropped],
            suppressed_subjects=[o.subject for o in dropped],
            suppressed_payloads=[o.payload for o in dropped],
        )
        statement = _with_suppressed_events(statement, batch=True)
    params.update(_usage_params(usage))  # issue 23
    row = await _execute_counted(conn, statement, params)
    if row is None:
        return BatchAcceptance(domains_ok=True, key_recorded=False, within_quota=False)
    return BatchAcceptance(domains_ok=row["domains_ok"], key_recorded=row["key_recorded"])


# ----------------------------------------------------------------------------- idempotency keys


class StoredAnswer(msgspec.Struct, frozen=True, kw_only=True):
    endpoint: str
    body_sha256: bytes
    status_code: int
    response: bytes


async def find_idempotency_key(conn: Conn, tenant_id: str, mode: str, key: str) -> StoredAnswer | None:
    """The live (unexpired) record of `key`, if any."""
    return await fetch_one(
        conn,
        StoredAnswer,
        f"SELECT {columns(StoredAnswer)} FROM idempotency_keys"
        " WHERE tenant_id = %s AND mode = %s AND key = %s AND expires_at > now()",
        (tenant_id, mode, key),
    )


async def purge_expired_idempotency_keys(conn: Conn, limit: int) -> int:
    """Delete up to `limit` expired records (rows another purger holds are skipped); how many."""
    cur = await conn.execute(
        "DELETE FROM idempotency_keys WHERE (tenant_id, mode, key) IN ("
        " SELECT tenant_id, mode, key FROM idempotency_keys WHERE expires_at <= now()"
        " LIMIT %s FOR UPDATE SKIP LOCKED)",
        (limit,),
    )
    return cur.rowcount


async def notify_relay(conn: Conn, channel: str) -> None:
    """Wake the outbox relays listening on `channel` (on an autocommit connection: its own transaction)."""
    await conn.execute("SELECT pg_notify(%s, '')", (channel,))


async def insert_email(conn: Conn, email: EmailRow) -> None:
    params = msgspec.structs.asdict(email)
    for name in _JSON_COLUMNS:
        params[name] = Jsonb(params[name])
    params["metadata"] = Jsonb(email.metadata) if email.metadata is not None else None
    values = ", ".join(f"%({name})s" for name in EmailRow.__struct_fields__)
    await conn.execute(f"INSERT INTO emails ({COLUMNS}) VALUES ({values})", params)


async def insert_recipients(conn: Conn, email_id: str, recipients: list[tuple[str, str]], status: str) -> None:
    """`recipients`: (address, type) in order."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO email_recipients (email_id, position, address, type, status) VALUES (%s, %s, %s, %s, %s)",
            [(email_id, i, address, kind, status) for i, (address, kind) in enumerate(recipients)],
        )


async def insert_timeline_event(
    conn: Conn, *, event_id: str, email_id: str, type_: str, occurred_at: datetime, data: dict[str, Any]
) -> bool:
    """Record a timeline entry; False if this event id was already recorded (a redelivery)."""
    cur = await conn.execute(
        "INSERT INTO email_events (id, email_id, type, occurred_at, data) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        (event_id, email_id, type_, occurred_at, Jsonb(data)),
    )
    return await cur.fetchone() is not None


async def get_email(conn: Conn, tenant_id: str, mode: str, email_id: str) -> EmailRow | None:
    return await fetch_one(
        conn,
        EmailRow,
        f"SELECT {COLUMNS} FROM emails WHERE id = %s AND tenant_id = %s AND mode = %s",
        (email_id, tenant_id, mode),
    )


async def lock_email(conn: Conn, email_id: str) -> LockedEmail | None:
    """SELECT … FOR UPDATE: the projector applies one email's events one after the other."""
    return await fetch_one(
        conn,
        LockedEmail,
        f"SELECT {columns(LockedEmail)} FROM emails WHERE id = %s FOR UPDATE",
        (email_id,),
    )


async def update_email_status(conn: Conn, email_id: str, status: str, last_event_at: datetime) -> None:
    await conn.execute(
        "UPDATE emails SET status = %s, last_event_at = greatest(last_event_at, %s) WHERE id = %s",
        (status, last_event_at, email_id),
    )


async def get_recipients(conn: Conn, email_id: str) -> list[RecipientRow]:
    return await fetch_all(
        conn,
        RecipientRow,
        f"SELECT {columns(RecipientRow)} FROM email_recipients WHERE email_id = %s ORDER BY position",
        (email_id,),
    )


async def update_recipient_status(conn: Conn, email_id: str, position: int, status: str) -> None:
    await conn.execute(
        "UPDATE email_recipients SET status = %s, updated_at = now() WHERE email_id = %s AND position = %s",
        (status, email_id, position),
    )


async def get_timeline(conn: Conn, email_id: str) -> list[TimelineRow]:
    return await fetch_all(
        conn,
        TimelineRow,
        f"SELECT {columns(TimelineRow)} FROM email_events WHERE email_id = %s ORDER BY occurred_at, recorded_at",
        (email_id,),
    )


async def list_emails(
    conn: Conn,
    *,
    tenant_id: str,
    mode: str,
    limit: int,
    before_id: str | None,
    status: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    to: str | None = None,
    tag: dict[str, str] | None = None,
    domain: str | None = None,
    after_id: str | None = None,
) -> list[EmailRow]:
    """Newest first; keyset pagination on the (time-sortable) id: the newest ones older than
    `before_id`, or (`after_id`) the oldest ones newer than it, still returned newest first."""
    rows = await fetch_all(
        conn,
        EmailRow,
        f"""
        SELECT {COLUMNS} FROM emails
        WHERE tenant_id = %(tenant_id)s AND mode = %(mode)s
          AND (%(before_id)s::text IS NULL OR id < %(before_id)s)
          AND (%(after_id)s::text IS NULL OR id > %(after_id)s)
          AND (%(status)s::text IS NULL OR status = %(status)s)
          AND (%(created_after)s::timestamptz IS NULL OR created_at >= %(created_after)s)
          AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s)
          AND (%(domain)s::text IS NULL OR from_domain = lower(%(domain)s))
          AND (%(tag)s::jsonb IS NULL OR tags @> %(tag)s::jsonb)
          AND (%(to)s::text IS NULL OR EXISTS (
                SELECT 1 FROM email_recipients r
                WHERE r.email_id = emails.id AND lower(r.address) = lower(%(to)s)))
        ORDER BY id {"ASC" if after_id is not None else "DESC"}
        LIMIT %(limit)s
        """,
        {
            "tenant_id": tenant_id,
            "mode": mode,
            "before_id": before_id,
            "after_id": after_id,
            "status": status,
            "created_after": created_after,
            "created_before": created_before,
            "to": to,
            "tag": Jsonb(tag) if tag is not None else None,
            "domain": domain,
            "limit": limit,
        },
    )
    return rows[::-1] if after_id is not None else rows


# ----------------------------------------------------------------------------- projector (batches)


# issue 15: the projector's statements take one JSON text, not arrays (psycopg dumps a list
# element by element in Python: a fifth of the projector's CPU).
_JSON_IDS = "ARRAY(SELECT jsonb_array_elements_text(%s::jsonb))"


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def lock_emails(conn: Conn, email_ids: list[str]) -> list[LockedEmail]:
    """`lock_email` for a batch: SELECT … FOR UPDATE in id order, so two batches that share emails
    lock them in the same order and cannot deadlock."""
    return await fetch_all(
        conn,
        LockedEmail,
        f"SELECT {columns(LockedEmail)} FROM emails WHERE id = ANY({_JSON_IDS}) ORDER BY id FOR UPDATE",
        (_json(sorted(set(email_ids))),),
    )


class EmailRecipient(msgspec.Struct, frozen=True, kw_only=True):
    email_id: str
    position: int
    address: str
    status: str


async def get_recipients_of(conn: Conn, email_ids: list[str]) -> list[EmailRecipient]:
    """The recipients of `email_ids`. Read after `lock_emails`, in a statement of its own: its
    snapshot then includes what the previous holder of those locks committed (a join in the
    locking statement would read the recipients as they were before it waited)."""
    return await fetch_all(
        conn,
        EmailRecipient,
        f"SELECT {columns(EmailRecipient)} FROM email_recipients WHERE email_id = ANY({_JSON_IDS})"
        " ORDER BY email_id, position",
        (_json(sorted(set(email_ids))),),
    )


class TimelineInsert(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    email_id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]


async def insert_timeline_events(conn: Conn, entries: list[TimelineInsert]) -> set[str]:
    """Record timeline entries in one statement; returns the event ids that were new (the others
    were recorded before: redeliveries)."""
    if not entries:
        return set()
    cur = await conn.execute(
        "INSERT INTO email_events (id, email_id, type, occurred_at, data)"
        " SELECT event_id, email_id, type, occurred_at, data FROM jsonb_to_recordset(%s::jsonb)"
        " AS e(event_id text, email_id text, type text, occurred_at timestamptz, data jsonb)"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        (_json(entries),),
    )
    return {row["id"] for row in await cur.fetchall()}


async def update_recipient_statuses(conn: Conn, updates: list[tuple[str, int, str]]) -> None:
    """`updates`: (email_id, position, status), in one statement."""
    if not updates:
        return
    await conn.execute(
        "UPDATE email_recipients r SET status = u.status, updated_at = now()"
        " FROM jsonb_to_recordset(%(rows)s::jsonb) AS u(email_id text, position int, status text)"
        " WHERE r.email_id = u.email_id AND r.position = u.position"
        # The planner guesses 100 rows for a JSON record set: the ids let it go by the index.
        " AND r.email_id = ANY(ARRAY(SELECT x->>'email_id' FROM jsonb_array_elements(%(rows)s::jsonb) x))",
        {"rows": _json([{"email_id": e, "position": p, "status": st} for e, p, st in updates])},
    )


class EmailUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """What one projector batch changes on one email: its status, its latest event time, and how
    many new opens and clicks it had (added to the counters)."""

    id: str
    status: str
    last_event_at: datetime
    opens: int = 0
    clicks: int = 0


async def update_email_statuses(conn: Conn, updates: list[EmailUpdate]) -> None:
    """All `updates` in one statement; last_event_at never moves back, opens/clicks are added."""
    if not updates:
        return
    await conn.execute(
        "UPDATE emails e SET status = u.status, last_event_at = greatest(e.last_event_at, u.last_event_at),"
        " opens = e.opens + u.opens, clicks = e.clicks + u.clicks"
        " FROM jsonb_to_recordset(%(rows)s::jsonb)"
        " AS u(id text, status text, last_event_at timestamptz, opens int, clicks int)"
        " WHERE e.id = u.id"
        # The planner guesses 100 rows for a JSON record set: the ids let it go by the index.
        " AND e.id = ANY(ARRAY(SELECT x->>'id' FROM jsonb_array_elements(%(rows)s::jsonb) x))",
        {"rows": _json(updates)},
    )


# ----------------------------------------------------------------------------- retention


async def purge_content(conn: Conn, cutoff: datetime, limit: int) -> int:
    """Remove the content (html, text, custom headers, the attachments' list) of at most `limit`
    emails accepted before `cutoff` and no longer waiting for their scheduled time, keeping the log
    entry itself (addresses, subject, tags, metadata, status, timeline); the retention job."""
    cur = await conn.execute(
        "UPDATE emails SET html = NULL, text = NULL, headers = '{}', attachments = '[]', content_purged_at = now()"
        " WHERE ctid IN (SELECT ctid FROM emails WHERE created_at < %s AND content_purged_at IS NULL"
        " AND status <> 'scheduled' LIMIT %s FOR UPDATE SKIP LOCKED)",
        (cutoff, limit),
    )
    return cur.rowcount


# ----------------------------------------------------------------------------- scheduling
# A scheduled email's accept, cancel and reschedule (emails/scheduling.py). Its EmailQueued waits
# in the kit's `outbox_scheduled` until `scheduled_at`; the relay takes it from there.


class ScheduledAccept(msgspec.Struct, frozen=True, kw_only=True):
    """What the accept statement writes besides a plain accept's rows for a scheduled email."""

    not_before: datetime  # when the EmailQueued row may be published
    scheduled_event_id: str  # the EmailScheduled event: the `scheduled` timeline entry's id too
    scheduled_subject: str
    scheduled_payload: bytes
    scheduled_data: str  # the timeline entry's data, JSON text


# The accept statements with three changes for scheduled emails: the timeline entry is
# `scheduled` (the EmailScheduled's id and data), the EmailQueued row goes to `outbox_scheduled`
# with `not_before`, and the EmailScheduled row goes to the immediate outbox (webhooks hear of it
# at once). The plain statements stay exactly as they are: a plain send pays nothing for this.
_PLAIN_TAIL = """), timeline AS (
    INSERT INTO email_events (id, email_id, type, occurred_at, data)
    SELECT %(event_id)s::text, email.id, %(timeline_type)s::text, %(created_at)s::timestamptz, '{}' FROM email
), queued AS (
    INSERT INTO outbox (event_id, subject, payload, trace_context)
    SELECT %(event_id)s::text, %(outbox_subject)s::text, %(payload)s::bytea, %(trace_context)s::text FROM email
    ON CONFLICT (event_id) DO NOTHING
)"""
_SCHEDULED_TAIL = """), timeline AS (
    INSERT INTO email_events (id, email_id, type, occurred_at, data)
    SELECT %(scheduled_event_id)s::text, email.id, 'scheduled', %(created_at)s::timestamptz,
        %(scheduled_data)s::jsonb FROM email
), queued AS (
    INSERT INTO outbox_scheduled (event_id, subject, payload, not_before, trace_context)
    SELECT %(event_id)s::text, %(outbox_subject)s::text, %(payload)s::bytea, %(not_before)s::timestamptz,
        %(trace_context)s::text FROM email
    ON CONFLICT (event_id) DO NOTHING
), scheduled AS (
    INSERT INTO outbox (event_id, subject, payload, trace_context)
    SELECT %(scheduled_event_id)s::text, %(scheduled_subject)s::text, %(scheduled_payload)s::bytea,
        %(trace_context)s::text FROM email
    ON CONFLICT (event_id) DO NOTHING
)"""
# A batch: the timeline rows carry their data (a scheduled item's `scheduled_at`), the immediate
# outbox arrays hold the plain items' EmailQueued and the scheduled items' EmailScheduled, and the
# scheduled items' EmailQueued go to `outbox_scheduled` (see `_batch_schedule_params`).
_PLAIN_BATCH_TAIL = """    SELECT t.id, t.email_id, t.type, t.occurred_at, '{}'
    FROM go, jsonb_to_recordset(%(timeline)s::jsonb) AS t (id text, email_id text, type text, occurred_at timestamptz)
), queued AS ("""
_SCHEDULED_BATCH_TAIL = """    SELECT t.id, t.email_id, t.type, t.occurred_at, coalesce(t.data, '{}')
    FROM go, jsonb_to_recordset(%(timeline)s::jsonb)
        AS t (id text, email_id text, type text, occurred_at timestamptz, data jsonb)
), scheduled AS (
    INSERT INTO outbox_scheduled (event_id, subject, payload, not_before, trace_context)
    SELECT d.event_id, d.subject, d.payload, d.not_before, %(trace_context)s::text
    FROM go, unnest(%(due_event_ids)s::text[], %(due_subjects)s::text[], %(due_payloads)s::bytea[],
        %(not_befores)s::timestamptz[]) AS d (event_id, subject, payload, not_before)
    ON CONFLICT (event_id) DO NOTHING
), queued AS ("""


def _scheduled_variant(statement: str, plain: str, scheduled: str) -> str:
    assert statement.count(plain) == 1, "an accept statement changed: update its scheduled tail with it"
    return statement.replace(plain, scheduled)


# Plain statement → its scheduled variant.
_SCHEDULED = {
    **{s: _scheduled_variant(s, _PLAIN_TAIL, _SCHEDULED_TAIL) for s in (_ACCEPT, _ACCEPT_KEYED)},
    **{
        s: _scheduled_variant(s, _PLAIN_BATCH_TAIL, _SCHEDULED_BATCH_TAIL) for s in (_ACCEPT_BATCH, _ACCEPT_BATCH_KEYED)
    },
}


def _batch_schedule_params(emails: list[BatchEmail]) -> dict[str, Any]:
    """`accept_emails`' timeline and outbox arrays when some of `emails` are scheduled."""
    immediate = [
        (e.event_id, e.outbox_subject, e.payload)
        if e.schedule is None
        else (e.schedule.scheduled_event_id, e.schedule.scheduled_subject, e.schedule.scheduled_payload)
        for e in emails
    ]
    due = [e for e in emails if e.schedule is not None]
    timeline = [
        {"id": e.event_id, "email_id": e.row.id, "type": e.timeline_type, "occurred_at": e.row.created_at}
        if e.schedule is None
        else {
            "id": e.schedule.scheduled_event_id,
            "email_id": e.row.id,
            "type": "scheduled",
            "occurred_at": e.row.created_at,
            "data": msgspec.json.decode(e.schedule.scheduled_data),
        }
        for e in emails
    ]
    return {
        "timeline": msgspec.json.encode(timeline).decode(),
        "outbox": _outbox_json(immediate),
        "due_event_ids": [e.event_id for e in due],
        "due_subjects": [e.outbox_subject for e in due],
        "due_payloads": [e.payload for e in due],
        "not_befores": [e.schedule.not_before for e in due if e.schedule is not None],
    }


class ScheduleLock(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: str


async def lock_email_of(conn: Conn, tenant_id: str, mode: str, email_id: str) -> ScheduleLock | None:
    """The tenant's email (of this key's mode), locked FOR UPDATE for a cancel or reschedule. Lock
    order everywhere: the outbox_scheduled row first, then the email (the relay's transaction locks
    the row, then `mark_queued` the email), so nothing waits in a cycle."""
    return await fetch_one(
        conn,
        ScheduleLock,
        "SELECT id, status FROM emails WHERE id = %s AND tenant_id = %s AND mode = %s FOR UPDATE",
        (email_id, tenant_id, mode),
    )


async def record_canceled(conn: Conn, email_id: str, *, event_id: str, occurred_at: datetime) -> None:
    """The email and every recipient `canceled`, with the `canceled` timeline entry, in one statement."""
    await conn.execute(
        """
        WITH email AS (
            UPDATE emails SET status = 'canceled', last_event_at = greatest(last_event_at, %(at)s)
            WHERE id = %(email_id)s RETURNING id
        ), recipients AS (
            UPDATE email_recipients SET status = 'canceled', updated_at = now()
            WHERE email_id IN (SELECT id FROM email)
        )
        INSERT INTO email_events (id, email_id, type, occurred_at, data)
        SELECT %(event_id)s, id, 'canceled', %(at)s, '{}' FROM email
        """,
        {"email_id": email_id, "event_id": event_id, "at": occurred_at},
    )


async def record_rescheduled(
    conn: Conn, email_id: str, *, event_id: str, occurred_at: datetime, data: dict[str, Any]
) -> None:
    """A new `scheduled` timeline entry (the reschedule's EmailScheduled) and the email's last event time."""
    await conn.execute(
        """
        WITH email AS (
            UPDATE emails SET last_event_at = greatest(last_event_at, %(at)s) WHERE id = %(email_id)s RETURNING id
        )
        INSERT INTO email_events (id, email_id, type, occurred_at, data)
        SELECT %(event_id)s, id, 'scheduled', %(at)s, %(data)s FROM email
        """,
        {"email_id": email_id, "event_id": event_id, "at": occurred_at, "data": Jsonb(data)},
    )


async def mark_queued(conn: Conn, email_ids: list[str], event_ids: list[str]) -> None:
    """Scheduled emails whose EmailQueued (`event_ids`, in the same order) was just relayed:
    `scheduled → queued` for the email and its recipients, and the `queued` timeline entry (keyed by
    the event id, so a window that is redone adds nothing). Emails first, then recipients, as
    every other writer locks them, and the emails in id order, as the projector does (two
    transactions locking the same emails in different orders could deadlock)."""
    await conn.execute(
        "UPDATE emails SET status = 'queued', last_event_at = greatest(last_event_at, now())"
        " WHERE id IN (SELECT id FROM emails WHERE id = ANY(%s) ORDER BY id FOR UPDATE) AND status = 'scheduled'",
        (sorted(email_ids),),
    )
    await conn.execute(
        "UPDATE email_recipients SET status = 'queued', updated_at = now()"
        " WHERE email_id = ANY(%s) AND status = 'scheduled'",
        (email_ids,),
    )
    await conn.execute(
        "INSERT INTO email_events (id, email_id, type, occurred_at, data)"
        " SELECT u.event_id, u.email_id, 'queued', now(), '{}'"
        " FROM unnest(%s::text[], %s::text[]) AS u(event_id, email_id)"
        " JOIN emails e ON e.id = u.email_id"
        " ON CONFLICT (id) DO NOTHING",
        (event_ids, email_ids),
    )


# ----------------------------------------------------------------------------- suppressed by the due time (issue 22)
# The relay's `prepare_scheduled` hook (emails/scheduling.recheck_suppressions): a scheduled email's
# recipients suppressed since its accept are dropped when it falls due, in the relay's transaction.


class ScheduledRecipient(msgspec.Struct, frozen=True, kw_only=True):
    email_id: str
    position: int
    type: str
    address: str


async def lock_scheduled_recipients(conn: Conn, email_ids: list[str]) -> list[ScheduledRecipient]:
    """The still-`scheduled` recipients of `email_ids`, by email and position, their emails locked
    first (in id order, as `mark_queued` and the projector lock them: no lock cycle)."""
    return await fetch_all(
        conn,
        ScheduledRecipient,
        """
        WITH locked AS (SELECT id FROM emails WHERE id = ANY(%s) ORDER BY id FOR UPDATE)
        SELECT r.email_id, r.position, r.type, r.address
        FROM locked JOIN email_recipients r ON r.email_id = locked.id
        WHERE r.status = 'scheduled'
        ORDER BY r.email_id, r.position
        """,
        (email_ids,),
    )


async def suppressions_of(conn: Conn, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """Which (tenant_id, mode, lower-cased address) of `keys` are suppressed → the entry's reason."""
    if not keys:
        return {}
    tenants, modes, emails = (list(column) for column in zip(*keys, strict=True))
    cur = await conn.execute(
        "SELECT tenant_id, mode, email, s.reason FROM suppressions s"
        " JOIN unnest(%s::text[], %s::text[], %s::text[]) AS u (tenant_id, mode, email) USING (tenant_id, mode, email)",
        (tenants, modes, emails),
    )
    return {(r["tenant_id"], r["mode"], r["email"]): r["reason"] for r in await cur.fetchall()}


async def record_suppressed_at_release(
    conn: Conn, recipients: list[tuple[str, int]], emails: list[str], payloads: list[tuple[int, bytes]]
) -> None:
    """`recipients` ((email id, position)) become `suppressed`, so do `emails` (all their recipients
    were), and the scheduled outbox rows `payloads` ((row id, payload)) keep the EmailQueued without
    them (a window whose publish fails takes the row again as the table has it)."""
    await conn.execute(
        "UPDATE email_recipients r SET status = 'suppressed', updated_at = now()"
        " FROM unnest(%s::text[], %s::integer[]) AS u (email_id, position)"
        " WHERE (r.email_id, r.position) = (u.email_id, u.position) AND r.status = 'scheduled'",
        ([e for e, _ in recipients], [p for _, p in recipients]),
    )
    if emails:
        await conn.execute(
            "UPDATE emails SET status = 'suppressed', last_event_at = greatest(last_event_at, now())"
            " WHERE id = ANY(%s) AND status = 'scheduled'",
            (emails,),
        )
    if payloads:
        await conn.execute(
            "UPDATE outbox_scheduled o SET payload = u.payload"
            " FROM unnest(%s::bigint[], %s::bytea[]) AS u (id, payload) WHERE o.id = u.id",
            ([i for i, _ in payloads], [p for _, p in payloads]),
        )
