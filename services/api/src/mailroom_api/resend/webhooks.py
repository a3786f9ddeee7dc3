"""`/resend/webhooks` (issue 21): Resend's webhook routes over the same webhooks RPCs as
`/v1/webhooks` (`mailroom_api.webhooks.service`). Endpoints created here have the `resend` format:
their deliveries carry `svix-id`, `svix-timestamp`, `svix-signature` (the Standard Webhooks HMAC)
and Resend's payload shape (the webhooks service's `resend_format`).

Resend's event names map one to one to Mailroom's where Mailroom has the event (EVENTS); the
others (inbound email, contacts, domains' created/updated/deleted, topics, inboxes, ...) are
refused with a validation_error naming the entry. The signing secret is shown once, at create and
at rotation (Mailroom keeps it encrypted), so `get`/`list` answer `signing_secret: null`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, JSONBody
from mailroom_contracts.rpc import WEBHOOK_EVENTS_MAX, WEBHOOK_URL_MAX_LENGTH

from mailroom_api.errors import validation
from mailroom_api.http.body import Request
from mailroom_api.http.guards import TENANT, TENANT_SECURITY, Caller, Rt, Settings
from mailroom_api.resend.paging import PageAfter, PageBefore, PageLimit, page
from mailroom_api.resend.responses import documented
from mailroom_api.webhooks import service
from mailroom_api.webhooks.schemas import CreateWebhook, UpdateWebhook, Webhook

FORMAT = "resend"
# Resend's event name → Mailroom's webhook event type (libs/contracts WEBHOOK_EVENT_TYPES).
EVENTS: dict[str, str] = {
    name: name
    for name in (
        "email.sent",
        "email.scheduled",
        "email.delivered",
        "email.delivery_delayed",
        "email.complained",
        "email.bounced",
        "email.opened",
        "email.clicked",
        "email.failed",
        "email.suppressed",
    )
}
# Resend's names Mailroom has no counterpart for (the Resend SDK's WebhookEvent list).
UNSUPPORTED_EVENTS: frozenset[str] = frozenset(
    {
        "email.received",
        "contact.created",
        "contact.updated",
        "contact.deleted",
        "contact.topics.updated",
        "domain.created",
        "domain.updated",
        "domain.deleted",
        "suppression.added",
        "suppression.removed",
        "topic.created",
        "topic.updated",
        "topic.deleted",
    }
)
_TO_RESEND = {mailroom: resend for resend, mailroom in EVENTS.items()}
Endpoint = Annotated[str, msgspec.Meta(min_length=1, max_length=WEBHOOK_URL_MAX_LENGTH)]
Events = Annotated[list[str], msgspec.Meta(min_length=1, max_length=WEBHOOK_EVENTS_MAX)]


class ResendCreateWebhook(Request, frozen=True, kw_only=True):
    endpoint: Endpoint
    events: Events


class ResendUpdateWebhook(Request, frozen=True, kw_only=True):
    webhook_id: str | msgspec.UnsetType = msgspec.UNSET  # the Python SDK repeats the path's id in the body
    endpoint: Endpoint | msgspec.UnsetType = msgspec.UNSET
    events: Events | msgspec.UnsetType = msgspec.UNSET
    status: Literal["enabled", "disabled"] | msgspec.UnsetType = msgspec.UNSET


class ResendWebhook(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "webhook"
    id: str
    created_at: datetime
    status: Literal["enabled", "disabled"]
    endpoint: str
    events: list[str]
    signing_secret: str | None = None  # shown once (create, rotate); null here


class ResendWebhookList(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "list"
    has_more: bool
    data: list[ResendWebhook]


class ResendWebhookSecret(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "webhook"
    id: str
    signing_secret: str


class ResendWebhookRef(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "webhook"
    id: str


class ResendWebhookDeleted(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "webhook"
    id: str
    deleted: bool = True


def mailroom_events(events: list[str]) -> list[str]:
    """Resend's names → Mailroom's; an unknown or unsupported one is a validation_error naming it."""
    chosen: list[str] = []
    for i, name in enumerate(events):
        shown = name if len(name) <= 64 and name.isprintable() else "(not an event type)"
        if name in UNSUPPORTED_EVENTS:
            raise validation(f"the event type {shown!r} is not supported by Mailroom", f"events[{i}]")
        if name not in EVENTS:
            raise validation(f"unknown event type {shown!r}; expected one of {', '.join(EVENTS)}", f"events[{i}]")
        if EVENTS[name] not in chosen:
            chosen.append(EVENTS[name])
    return chosen


def _view(w: Webhook) -> ResendWebhook:
    return ResendWebhook(
        id=w.id,
        created_at=w.created_at,
        status="enabled" if w.enabled else "disabled",
        endpoint=w.url,
        events=[_TO_RESEND.get(e, e) for e in w.events],
    )


class ResendWebhooksController(Controller):
    path = "/webhooks"
    security = TENANT_SECURITY
    opt = TENANT

    @post(
        "/",
        status_code=200,
        summary="Create a webhook (Resend: webhooks.create)",
        responses=documented(400, 401, 403, 422, 503),
    )
    async def create_webhook(
        self, data: JSONBody[ResendCreateWebhook], rt: Rt, settings: Settings, principal: Caller
    ) -> ResendWebhookSecret:
        req = CreateWebhook(url=data.endpoint, events=mailroom_events(data.events))
        created = await service.create_webhook(
            rt.nc, principal.tenant_id, req, rpc_timeout=settings.rpc_timeout_seconds, format=FORMAT
        )
        return ResendWebhookSecret(id=created.id, signing_secret=created.secret)

    @get("/", summary="List webhooks (Resend: webhooks.list)", responses=documented(401, 403, 422, 503))
    async def list_webhooks(
        self,
        rt: Rt,
        settings: Settings,
        principal: Caller,
        limit: PageLimit = None,
        after: PageAfter = None,
        before: PageBefore = None,
    ) -> ResendWebhookList:
        found = await service.list_webhooks(rt.nc, principal.tenant_id, rpc_timeout=settings.rpc_timeout_seconds)
        data, has_more = page([_view(w) for w in found], limit=limit, after=after, before=before)
        return ResendWebhookList(has_more=has_more, data=data)

    @get("/{webhook_id:str}", summary="Get a webhook (Resend: webhooks.get)", responses=documented(401, 403, 404, 503))
    async def get_webhook(
        self, webhook_id: FromPath[str], rt: Rt, settings: Settings, principal: Caller
    ) -> ResendWebhook:
        found = await service.get_webhook(
            rt.nc, principal.tenant_id, webhook_id, rpc_timeout=settings.rpc_timeout_seconds
        )
        return _view(found)

    @patch(
        "/{webhook_id:str}",
        summary="Update a webhook (Resend: webhooks.update)",
        description="`endpoint`, `events`, `status` (`enabled` | `disabled`); only the fields given change.",
        responses=documented(400, 401, 403, 404, 422, 503),
    )
    async def update_webhook(
        self,
        webhook_id: FromPath[str],
        data: JSONBody[ResendUpdateWebhook],
        rt: Rt,
        settings: Settings,
        principal: Caller,
    ) -> ResendWebhookRef:
        if isinstance(data.webhook_id, str) and data.webhook_id != webhook_id:
            raise validation("webhook_id in the body must be the path's", "webhook_id")
        change = UpdateWebhook(
            url=data.endpoint,
            events=mailroom_events(data.events) if isinstance(data.events, list) else msgspec.UNSET,
            enabled=(data.status == "enabled") if isinstance(data.status, str) else msgspec.UNSET,
        )
        await service.update_webhook(
            rt.nc, principal.tenant_id, webhook_id, change, rpc_timeout=settings.rpc_timeout_seconds
        )
        return ResendWebhookRef(id=webhook_id)

    @delete(
        "/{webhook_id:str}",
        status_code=200,
        summary="Remove a webhook (Resend: webhooks.remove)",
        responses=documented(401, 403, 404, 503),
    )
    async def remove_webhook(
        self, webhook_id: FromPath[str], rt: Rt, settings: Settings, principal: Caller
    ) -> ResendWebhookDeleted:
        await service.delete_webhook(rt.nc, principal.tenant_id, webhook_id, rpc_timeout=settings.rpc_timeout_seconds)
        return ResendWebhookDeleted(id=webhook_id)

    @post(
        "/{webhook_id:str}/signing-secret/rotate",
        status_code=200,
        summary="Rotate the signing secret (Resend: webhooks.rotate_signing_secret)",
        description="The new secret once; the previous one keeps signing beside it (a second `v1,` "
        "signature in svix-signature) for MAILROOM_WEBHOOKS_SECRET_ROTATION_OVERLAP_HOURS.",
        responses=documented(401, 403, 404, 503),
    )
    async def rotate_signing_secret(
        self, webhook_id: FromPath[str], rt: Rt, settings: Settings, principal: Caller
    ) -> ResendWebhookSecret:
        rotated = await service.rotate_secret(
            rt.nc, principal.tenant_id, webhook_id, rpc_timeout=settings.rpc_timeout_seconds
        )
        return ResendWebhookSecret(id=webhook_id, signing_secret=rotated.secret)
