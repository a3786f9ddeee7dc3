"""Stats: what each newly recorded lifecycle event adds to the hourly rollups (called by the email
log projector in its transaction, with only the events whose timeline entry it wrote just now, so a
redelivery counts nothing), and the bucketed read of `GET /v1/stats` for the caller's tenant and
mode. Recipient events count their recipients; a failure counts its email; opens and clicks count
each event, and once per email (`*_unique`, the email's first). Rates are of hard bounces and of
complaints over the recipients sent, null when nothing was sent."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from mailroom_contracts import events
from mailroom_kit.db import Conn

from mailroom_api.auth.service import Principal
from mailroom_api.errors import validation
from mailroom_api.stats import repository as repo
from mailroom_api.stats.schemas import Bucket, Stats

# The widest ranges a request may ask for (buckets in one answer: 31 * 24 hours, 400 days).
MAX_RANGE = {"hour": timedelta(days=31), "day": timedelta(days=400)}
DEFAULT_RANGE = {"hour": timedelta(hours=24), "day": timedelta(days=30)}
STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


def _counted(event: events.EmailEvent) -> tuple[str, int] | None:
    """(counter, amount) an event adds, before opens/clicks uniqueness; None: it counts nothing."""
    recipients = len(getattr(event, "recipients", []) or [])
    if isinstance(event, events.EmailSent):
        return "sent", recipients or 1
    if isinstance(event, events.EmailDelivered):
        return "delivered", recipients
    if isinstance(event, events.EmailDeliveryDelayed):
        return "delivery_delayed", recipients
    if isinstance(event, events.EmailBounced):
        return ("bounced_hard" if event.bounce_type == "Permanent" else "bounced_soft"), recipients
    if isinstance(event, events.EmailComplained):
        return "complained", recipients
    if isinstance(event, events.EmailFailed):
        return "failed", 1
    if isinstance(event, events.EmailSuppressed):
        return "suppressed", recipients
    if isinstance(event, events.EmailUnsubscribed):
        return "unsubscribed", recipients
    if isinstance(event, events.EmailOpened):
        return "opened", 1
    if isinstance(event, events.EmailClicked):
        return "clicked", 1
    return None


def _hour(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


async def record(conn: Conn, recorded: Sequence[events.EmailEvent]) -> None:
    """Add the counts of `recorded` (events whose timeline entries this transaction wrote, after the
    emails' counters were updated) to the rollups: one read of the emails, one upsert."""
    counted = [(e, c) for e in recorded if (c := _counted(e)) is not None]
    if not counted:
        return
    facts = {f.id: f for f in await repo.email_facts(conn, sorted({e.email_id for e, _ in counted}))}
    counts: dict[repo.RollupKey, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    new_opens: dict[str, int] = defaultdict(int)
    new_clicks: dict[str, int] = defaultdict(int)
    first: dict[tuple[str, str], datetime] = {}  # (email, "opened"|"clicked") → its batch's earliest

    def add(email: repo.EmailFacts, hour: datetime, counter: str, amount: int) -> None:
        for tag in ("", *(f"{k}:{v}" for k, v in email.tags.items())):
            counts[(email.tenant_id, email.mode, tag, hour, email.domain)][counter] += amount

    for event, (counter, amount) in counted:
        email = facts.get(event.email_id)
        if email is None or amount == 0:
            continue
        add(email, _hour(event.occurred_at), counter, amount)
        if counter in ("opened", "clicked"):
            (new_opens if counter == "opened" else new_clicks)[email.id] += 1
            key = (email.id, counter)
            first[key] = min(first.get(key, event.occurred_at), event.occurred_at)
    for (email_id, counter), at in first.items():
        email = facts[email_id]
        # The email's counter now includes this batch's: it was 0 before iff they are all of it.
        total, new = (email.opens, new_opens[email_id]) if counter == "opened" else (email.clicks, new_clicks[email_id])
        if total == new:
            add(email, _hour(at), f"{counter}_unique", 1)
    await repo.add_counts(conn, {k: dict(v) for k, v in counts.items()})


def _rate(part: int, sent: int) -> float | None:
    return round(part / sent, 6) if sent else None


def _bucket(start: datetime, row: repo.BucketRow | None) -> Bucket:
    values = {c: (getattr(row, c) if row is not None else 0) for c in repo.COUNTERS}
    return Bucket(
        start=start,
        bounced=values["bounced_hard"] + values["bounced_soft"],
        bounce_rate=_rate(values["bounced_hard"], values["sent"]),
        complaint_rate=_rate(values["complained"], values["sent"]),
        **values,
    )


async def get_stats(
    conn: Conn,
    principal: Principal,
    *,
    start: datetime | None,
    end: datetime | None,
    granularity: str,
    domain: str | None,
    tag: str | None,
) -> Stats:
    """The caller's tenant's counts of the key's mode in [start, end), one bucket per UTC hour or
    day (empty ones included), and their totals."""
    if granularity not in STEP:
        raise validation("granularity must be hour or day", "granularity")
    end = end or datetime.now(UTC)
    start = start or end - DEFAULT_RANGE[granularity]
    if start >= end:
        raise validation("from must be before to", "from")
    if end - start > MAX_RANGE[granularity]:
        days = MAX_RANGE[granularity].days
        raise validation(f"a {granularity} range covers at most {days} days", "to")
    tag_key = ""
    if tag is not None:
        key, sep, value = tag.partition(":")
        if not sep or not key:
            raise validation("tag filter must be key:value", "tag")
        tag_key = f"{key}:{value}"
    step = STEP[granularity]
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if granularity == "day":
        first = first.replace(hour=0)
    rows = await repo.buckets(
        conn,
        tenant_id=principal.tenant_id,
        mode=principal.mode,
        start=first,
        end=end,
        granularity=granularity,
        domain=domain.lower() if domain else None,
        tag=tag_key,
    )
    by_start = {r.bucket.astimezone(UTC): r for r in rows}
    data: list[Bucket] = []
    at = first
    while at < end:
        data.append(_bucket(at, by_start.get(at)))
        at += step
    totals = {c: sum(getattr(r, c) for r in rows) for c in repo.COUNTERS}
    return Stats(
        start=start,
        end=end,
        granularity=granularity,  # type: ignore[arg-type]  # checked above
        mode=principal.mode,  # type: ignore[arg-type]  # a key's mode is live or test
        domain=domain.lower() if domain else None,
        tag=tag,
        totals=_bucket(first, repo.BucketRow(bucket=first, **totals)),
        data=data,
    )
