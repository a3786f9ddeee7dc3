"""The api service's business rules: tenants, API keys and authentication, accepting emails,
the email log and domain read models (projected from events), and the domains/webhooks calls
answered by their owning services over request/reply.

Functions take a connection inside the caller's transaction and never commit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

import msgspec
from mailroom_contracts import events, rpc, subjects
from mailroom_kit import outbox
from mailroom_kit import rpc as kit_rpc
from mailroom_kit.db import Conn
from mailroom_kit.ids import has_prefix, new_id
from nats.aio.client import Client

from mailroom_api import repository as repo
from mailroom_api import schemas
from mailroom_api.errors import ApiError, forbidden, from_rpc, not_found, unavailable, validation
from mailroom_api.validation import validate_send

SCHEMA = "api"
R = TypeVar("R", bound=msgspec.Struct)
TOKEN_PREFIXES = {"live": "mr_live_", "test": "mr_test_"}
MAX_NAME = 200


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def utc(value: datetime) -> datetime: ...
@overload
def utc(value: None) -> None: ...
def utc(value: datetime | None) -> datetime | None:
    """Timestamps are rendered in UTC whatever the database session's time zone is."""
    return value.astimezone(UTC) if value is not None else None


# --------------------------------------------------------------------------- tenants


def _check_name(name: str, param: str = "name") -> str:
    name = name.strip()
    if not name:
        raise validation("name is required", param)
    if len(name) > MAX_NAME:
        raise validation(f"name is longer than {MAX_NAME} characters", param)
    return name


def _check_limits(monthly_quota: Any, rate_limit: Any) -> None:
    if isinstance(monthly_quota, int) and monthly_quota < 0:
        raise validation("monthly_quota must be 0 or more", "monthly_quota")
    if isinstance(rate_limit, int) and rate_limit < 1:
        raise validation("rate_limit must be at least 1", "rate_limit")


def tenant_view(row: repo.Row) -> schemas.Tenant:
    return schemas.Tenant(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        monthly_quota=row["monthly_quota"],
        rate_limit=row["rate_limit"],
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
    )


async def create_tenant(conn: Conn, req: schemas.CreateTenant) -> schemas.Tenant:
    name = _check_name(req.name)
    _check_limits(req.monthly_quota, req.rate_limit)
    row = await repo.insert_tenant(
        conn, tenant_id=new_id("ten"), name=name, monthly_quota=req.monthly_quota, rate_limit=req.rate_limit
    )
    return tenant_view(row)


async def list_tenants(conn: Conn) -> list[schemas.Tenant]:
    return [tenant_view(r) for r in await repo.list_tenants(conn)]


async def get_tenant(conn: Conn, tenant_id: str) -> schemas.Tenant:
    row = await repo.get_tenant(conn, tenant_id)
    if row is None:
        raise not_found("tenant")
    return tenant_view(row)


async def update_tenant(conn: Conn, tenant_id: str, req: schemas.UpdateTenant) -> schemas.Tenant:
    changes = {f: v for f in req.__struct_fields__ if (v := getattr(req, f)) is not msgspec.UNSET}
    if "name" in changes:
        changes["name"] = _check_name(changes["name"])
    _check_limits(changes.get("monthly_quota"), changes.get("rate_limit"))
    row = await repo.update_tenant(conn, tenant_id, changes)
    if row is None:
        raise not_found("tenant")
    return tenant_view(row)


# --------------------------------------------------------------------------- API keys and authentication


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key of a tenant."""

    key_id: str
    tenant_id: str
    mode: str
    permission: str
    domain_id: str | None
    tenant_status: str

    def require_full_access(self) -> None:
        if self.permission != "full_access":
            raise forbidden("insufficient_permission", "this API key may only send and read emails")


def parse_bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(conn: Conn, authorization: str | None) -> Principal:
    """Resolve a tenant API key. Looked up on every request, so a revocation is effective at once."""
    token = parse_bearer(authorization)
    if token is None:
        raise ApiError(401, "missing_api_key", "missing API key: send Authorization: Bearer mr_live_…")
    if not token.startswith(tuple(TOKEN_PREFIXES.values())):
        raise ApiError(401, "invalid_api_key", "invalid API key")
    row = await repo.find_key_by_hash(conn, hash_token(token))
    if row is None:
        raise ApiError(401, "invalid_api_key", "invalid API key")
    if row["revoked_at"] is not None:
        raise forbidden("api_key_revoked", "this API key has been revoked")
    return Principal(
        key_id=row["id"],
        tenant_id=row["tenant_id"],
        mode=row["mode"],
        permission=row["permission"],
        domain_id=row["domain_id"],
        tenant_status=row["tenant_status"],
    )


def operator_allowed(configured: str, authorization: str | None) -> None:
    token = parse_bearer(authorization)
    if not configured:
        raise ApiError(401, "invalid_api_key", "the operator API is disabled (no operator token configured)")
    if token is None:
        raise ApiError(401, "missing_api_key", "missing operator token")
    if not hmac.compare_digest(token.encode(), configured.encode()):
        raise ApiError(401, "invalid_api_key", "invalid operator token")


def api_key_view(row: repo.Row) -> schemas.ApiKey:
    return schemas.ApiKey(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        mode=row["mode"],
        permission=row["permission"],
        domain_id=row["domain_id"],
        prefix=row["token_prefix"],
        last4=row["token_last4"],
        created_at=utc(row["created_at"]),
        revoked_at=utc(row["revoked_at"]),
    )


async def create_api_key(
    conn: Conn, tenant_id: str, req: schemas.CreateApiKey, *, caller_mode: str | None = None
) -> schemas.CreatedApiKey:
    """`caller_mode` is the mode of the tenant key asking (None: the operator or the CLI)."""
    if caller_mode == "test" and req.mode == "live":
        # A test key never reaches SES; it must not be able to mint a key that does.
        raise forbidden("insufficient_permission", "a test key can only create test keys")
    name = _check_name(req.name)
    if await repo.get_tenant(conn, tenant_id) is None:
        raise not_found("tenant")
    if req.domain_id is not None and await repo.get_domain(conn, tenant_id, req.domain_id) is None:
        raise validation("unknown domain", "domain_id")
    token = TOKEN_PREFIXES[req.mode] + secrets.token_urlsafe(32)
    row = await repo.insert_api_key(
        conn,
        key_id=new_id("key"),
        tenant_id=tenant_id,
        name=name,
        mode=req.mode,
        permission=req.permission,
        domain_id=req.domain_id,
        token_hash=hash_token(token),
        token_prefix=token[:12],
        token_last4=token[-4:],
    )
    view = api_key_view(row)
    return schemas.CreatedApiKey(
        **{f: getattr(view, f) for f in schemas.CreatedApiKey.__struct_fields__ if f != "token"}, token=token
    )


async def list_api_keys(conn: Conn, tenant_id: str) -> list[schemas.ApiKey]:
    return [api_key_view(r) for r in await repo.list_api_keys(conn, tenant_id)]


async def revoke_api_key(conn: Conn, tenant_id: str, key_id: str) -> schemas.ApiKey:
    row = await repo.revoke_api_key(conn, tenant_id, key_id)
    if row is None:
        raise not_found("API key")
    return api_key_view(row)


# --------------------------------------------------------------------------- emails


# Status only moves forward (SES/SNS deliver out of order). `failed` is terminal and only
# replaces states in which nothing has reached a mailbox yet.
STATUS_RANK = {"queued": 0, "sent": 1, "delivery_delayed": 2, "delivered": 3, "bounced": 4, "complained": 5}
EVENT_STATUS: dict[type[events.EmailEvent], str] = {
    events.EmailSent: "sent",
    events.EmailFailed: "failed",
    events.EmailDelivered: "delivered",
    events.EmailBounced: "bounced",
    events.EmailComplained: "complained",
    events.EmailDeliveryDelayed: "delivery_delayed",
}


def advance(current: str, new: str) -> str:
    if current == "failed" or current not in STATUS_RANK:
        return current
    if new == "failed":
        return new if STATUS_RANK[current] < STATUS_RANK["delivered"] else current
    return new if STATUS_RANK.get(new, -1) > STATUS_RANK[current] else current


def _check_sender(principal: Principal, from_domain: str, domain: repo.Row | None, key_domain: repo.Row | None) -> None:
    if principal.domain_id is not None and (key_domain is None or key_domain["name"].lower() != from_domain):
        raise forbidden("from_domain_not_allowed", "this API key may only send from its own domain")
    if principal.mode == "live" and (domain is None or domain["status"] != "verified"):
        raise forbidden("domain_not_verified", f"{from_domain} is not a verified domain of this account")


async def send_email(conn: Conn, principal: Principal, req: schemas.SendEmail) -> schemas.EmailAccepted:
    """Accept one email: the email, its recipients, a `queued` timeline entry and the EmailQueued
    event are written in the caller's transaction."""
    if principal.tenant_status == "paused":
        raise forbidden("tenant_paused", "sending is paused for this account")
    if principal.tenant_status == "blocked":
        raise forbidden("tenant_blocked", "sending is blocked for this account")
    email = validate_send(req)
    from_domain = email.sender.domain
    domain = await repo.find_domain_by_name(conn, principal.tenant_id, from_domain)
    key_domain = await repo.get_domain(conn, principal.tenant_id, principal.domain_id) if principal.domain_id else None
    _check_sender(principal, from_domain, domain, key_domain)

    now = utcnow()
    email_id = new_id("msg")
    queued = events.EmailQueued(
        event_id=new_id("evt"),
        occurred_at=now,
        tenant_id=principal.tenant_id,
        email_id=email_id,
        mode="test" if principal.mode == "test" else "live",
        from_=email.sender.contract(),
        to=[a.contract() for a in email.to],
        cc=[a.contract() for a in email.cc],
        bcc=[a.contract() for a in email.bcc],
        reply_to=[a.contract() for a in email.reply_to],
        subject=email.subject,
        html=email.html,
        text=email.text,
        headers=email.headers,
        tags=email.tags,
        metadata=email.metadata,
        created_at=now,
    )
    await repo.insert_email(
        conn,
        {
            "id": email_id,
            "tenant_id": principal.tenant_id,
            "api_key_id": principal.key_id,
            "mode": principal.mode,
            "from_address": email.sender.original,
            "from_domain": from_domain,
            "to": [a.original for a in email.to],
            "cc": [a.original for a in email.cc],
            "bcc": [a.original for a in email.bcc],
            "reply_to": [a.original for a in email.reply_to],
            "subject": email.subject,
            "html": email.html,
            "text": email.text,
            "headers": email.headers,
            "tags": email.tags,
            "metadata": email.metadata,
            "status": "queued",
            "created_at": now,
        },
    )
    recipients = (
        [(a.email, "to") for a in email.to]
        + [(a.email, "cc") for a in email.cc]
        + [(a.email, "bcc") for a in email.bcc]
    )
    await repo.insert_recipients(conn, email_id, recipients, "queued")
    await repo.insert_timeline_event(
        conn, event_id=queued.event_id, email_id=email_id, type_="queued", occurred_at=now, data={}
    )
    await outbox.add(conn, queued, schema=SCHEMA)
    return schemas.EmailAccepted(id=email_id, status="queued", created_at=now)


def _summary_fields(row: repo.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "from_": row["from_address"],
        "to": row["to_addresses"],
        "cc": row["cc_addresses"],
        "bcc": row["bcc_addresses"],
        "reply_to": row["reply_to"],
        "subject": row["subject"],
        "tags": row["tags"],
        "metadata": row["metadata"],
        "status": row["status"],
        "mode": row["mode"],
        "created_at": utc(row["created_at"]),
        "last_event_at": utc(row["last_event_at"]),
    }


async def get_email(conn: Conn, principal: Principal, email_id: str, *, include_content: bool) -> schemas.EmailDetail:
    row = await repo.get_email(conn, principal.tenant_id, principal.mode, email_id)
    if row is None:
        raise not_found("email")
    recipients = [
        schemas.Recipient(email=r["address"], type=r["type"], status=r["status"])
        for r in await repo.get_recipients(conn, email_id)
    ]
    timeline = [
        schemas.TimelineEvent(id=e["id"], type=e["type"], occurred_at=utc(e["occurred_at"]), data=e["data"])
        for e in await repo.get_timeline(conn, email_id)
    ]
    content: dict[str, Any] = {}
    if include_content:
        content = {"html": row["html"], "text": row["text"], "headers": row["headers"]}
    return schemas.EmailDetail(**_summary_fields(row), recipients=recipients, events=timeline, **content)


def _encode_cursor(email_id: str) -> str:
    return email_id


def _decode_cursor(cursor: str) -> str:
    if not has_prefix(cursor, "msg"):
        raise validation("invalid cursor", "cursor")
    return cursor


async def list_emails(
    conn: Conn,
    principal: Principal,
    *,
    limit: int,
    cursor: str | None,
    status: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    to: str | None = None,
    tag: str | None = None,
    domain: str | None = None,
) -> schemas.EmailList:
    if not 1 <= limit <= 100:
        raise validation("limit must be between 1 and 100", "limit")
    if status is not None and status not in STATUS_RANK and status != "failed":
        raise validation("unknown status", "status")
    tag_filter: dict[str, str] | None = None
    if tag is not None:
        key, sep, value = tag.partition(":")
        if not sep or not key:
            raise validation("tag filter must be key:value", "tag")
        tag_filter = {key: value}
    rows = await repo.list_emails(
        conn,
        tenant_id=principal.tenant_id,
        mode=principal.mode,
        limit=limit + 1,
        before_id=_decode_cursor(cursor) if cursor else None,
        status=status,
        created_after=created_after,
        created_before=created_before,
        to=to.strip() if to else None,
        tag=tag_filter,
        domain=domain.strip().lower() if domain else None,
    )
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1]["id"]) if len(rows) > limit else None
    return schemas.EmailList(data=[schemas.EmailSummary(**_summary_fields(r)) for r in page], next_cursor=next_cursor)


class EmailNotYetKnown(Exception):
    """A lifecycle event arrived before the email it is about is visible (retry later)."""


def _timeline_data(event: events.EmailEvent) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(event)
    for common in ("type", "event_id", "occurred_at", "tenant_id", "email_id", "mode"):
        data.pop(common, None)
    return data


async def apply_email_event(conn: Conn, event: events.EmailEvent) -> bool:
    """Project one lifecycle event into the email log. Returns False for a duplicate."""
    new_status = EVENT_STATUS.get(type(event))
    if new_status is None:
        return False
    email = await repo.lock_email(conn, event.email_id)
    if email is None:
        raise EmailNotYetKnown(event.email_id)
    if not await repo.insert_timeline_event(
        conn,
        event_id=event.event_id,
        email_id=event.email_id,
        type_=new_status,
        occurred_at=event.occurred_at,
        data=_timeline_data(event),
    ):
        return False
    targets = {r.lower() for r in getattr(event, "recipients", [])}
    for recipient in await repo.get_recipients(conn, event.email_id):
        if targets and recipient["address"].lower() not in targets:
            continue
        status = advance(recipient["status"], new_status)
        if status != recipient["status"]:
            await repo.update_recipient_status(conn, event.email_id, recipient["position"], status)
    await repo.update_email_status(conn, event.email_id, advance(email["status"], new_status), event.occurred_at)
    return True


# --------------------------------------------------------------------------- domains


def _snapshot_row(snapshot: events.DomainSnapshot) -> repo.Row:
    return {
        "id": snapshot.domain_id,
        "tenant_id": snapshot.tenant_id,
        "name": snapshot.name,
        "status": snapshot.status,
        "region": snapshot.region,
        "mail_from_domain": snapshot.mail_from_domain,
        "records": msgspec.to_builtins(snapshot.records),
        "track_opens": snapshot.track_opens,
        "track_clicks": snapshot.track_clicks,
        "created_at": snapshot.created_at,
        "last_checked_at": snapshot.last_checked_at,
    }


def domain_view(row: repo.Row) -> schemas.Domain:
    records = [
        schemas.DomainRecord(
            purpose=r["purpose"],
            type=r["type"],
            name=r["name"],
            value=r["value"],
            priority=r.get("priority"),
            required=r.get("required", True),
            status=r.get("status", "pending"),
        )
        for r in row["records"]
    ]
    return schemas.Domain(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        region=row["region"],
        records=records,
        mail_from_domain=row["mail_from_domain"],
        track_opens=row["track_opens"],
        track_clicks=row["track_clicks"],
        created_at=utc(row["created_at"]),
        last_checked_at=utc(row["last_checked_at"]),
    )


async def request_domain(
    nc: Client, tenant_id: str, req: schemas.CreateDomain, *, rpc_timeout: float
) -> events.DomainSnapshot:
    """Ask the domains service to create the domain (it owns SES identities and DNS records)."""
    request = rpc.CreateDomainRequest(
        tenant_id=tenant_id,
        name=req.name,
        mail_from_subdomain=req.mail_from_subdomain,
        track_opens=req.track_opens,
        track_clicks=req.track_clicks,
    )
    reply = await _call(nc, subjects.RPC_DOMAINS_CREATE, request, rpc.DomainReply, rpc_timeout)
    if reply.error is not None:
        raise from_rpc(reply.error.code, reply.error.message, reply.error.param)
    if reply.domain is None:
        raise unavailable("the domains service gave an empty answer")
    return reply.domain


async def record_domain(conn: Conn, snapshot: events.DomainSnapshot, *, event_at: datetime | None) -> bool:
    return await repo.upsert_domain(conn, _snapshot_row(snapshot), event_at)


async def get_domain(conn: Conn, tenant_id: str, domain_id: str) -> schemas.Domain:
    row = await repo.get_domain(conn, tenant_id, domain_id)
    if row is None:
        raise not_found("domain")
    return domain_view(row)


async def list_domains(conn: Conn, tenant_id: str) -> list[schemas.Domain]:
    return [domain_view(r) for r in await repo.list_domains(conn, tenant_id)]


# --------------------------------------------------------------------------- webhooks (webhooks service)


async def _call(nc: Client, subject: str, req: msgspec.Struct, reply_type: type[R], rpc_timeout: float) -> R:
    try:
        return await kit_rpc.request(nc, subject, req, reply_type, timeout=rpc_timeout)
    except kit_rpc.RpcUnavailable:
        raise unavailable() from None
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise unavailable("a dependency answered with an unreadable reply") from None


def webhook_view(endpoint: rpc.WebhookEndpoint) -> schemas.Webhook:
    return schemas.Webhook(
        id=endpoint.webhook_id,
        url=endpoint.url,
        events=list(endpoint.events),
        description=endpoint.description,
        enabled=endpoint.enabled,
        created_at=endpoint.created_at,
    )


def _endpoint(reply: rpc.WebhookReply | rpc.CreateWebhookReply) -> rpc.WebhookEndpoint:
    if reply.error is not None:
        raise from_rpc(reply.error.code, reply.error.message, reply.error.param)
    if reply.endpoint is None:
        raise unavailable("the webhooks service gave an empty answer")
    return reply.endpoint


async def create_webhook(
    nc: Client, tenant_id: str, req: schemas.CreateWebhook, *, rpc_timeout: float
) -> schemas.CreatedWebhook:
    request = rpc.CreateWebhookRequest(tenant_id=tenant_id, url=req.url, events=req.events, description=req.description)
    reply = await _call(nc, subjects.RPC_WEBHOOKS_CREATE, request, rpc.CreateWebhookReply, rpc_timeout)
    view = webhook_view(_endpoint(reply))
    if reply.secret is None:
        raise unavailable("the webhooks service gave no secret")
    return schemas.CreatedWebhook(**msgspec.structs.asdict(view), secret=reply.secret)


async def list_webhooks(nc: Client, tenant_id: str, *, rpc_timeout: float) -> list[schemas.Webhook]:
    reply = await _call(
        nc,
        subjects.RPC_WEBHOOKS_LIST,
        rpc.ListWebhooksRequest(tenant_id=tenant_id),
        rpc.ListWebhooksReply,
        rpc_timeout,
    )
    if reply.error is not None:
        raise from_rpc(reply.error.code, reply.error.message, reply.error.param)
    return [webhook_view(e) for e in reply.data]


async def get_webhook(nc: Client, tenant_id: str, webhook_id: str, *, rpc_timeout: float) -> schemas.Webhook:
    reply = await _call(
        nc,
        subjects.RPC_WEBHOOKS_GET,
        rpc.GetWebhookRequest(tenant_id=tenant_id, webhook_id=webhook_id),
        rpc.WebhookReply,
        rpc_timeout,
    )
    return webhook_view(_endpoint(reply))


async def delete_webhook(nc: Client, tenant_id: str, webhook_id: str, *, rpc_timeout: float) -> schemas.Deleted:
    reply = await _call(
        nc,
        subjects.RPC_WEBHOOKS_DELETE,
        rpc.DeleteWebhookRequest(tenant_id=tenant_id, webhook_id=webhook_id),
        rpc.WebhookReply,
        rpc_timeout,
    )
    if reply.error is not None:
        raise from_rpc(reply.error.code, reply.error.message, reply.error.param)
    return schemas.Deleted(id=webhook_id)
