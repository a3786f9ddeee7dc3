"""Every NATS subject Mailroom publishes on or listens to."""

from typing import Final

# Email lifecycle (stream MAILROOM_EMAIL)
EMAIL_ALL: Final = "mailroom.email.>"
EMAIL_QUEUED: Final = "mailroom.email.queued"
EMAIL_SENT: Final = "mailroom.email.sent"
EMAIL_FAILED: Final = "mailroom.email.failed"
EMAIL_DELIVERED: Final = "mailroom.email.delivered"
EMAIL_BOUNCED: Final = "mailroom.email.bounced"
EMAIL_COMPLAINED: Final = "mailroom.email.complained"
EMAIL_DELIVERY_DELAYED: Final = "mailroom.email.delivery_delayed"
EMAIL_SCHEDULED: Final = "mailroom.email.scheduled"
EMAIL_CANCELED: Final = "mailroom.email.canceled"
EMAIL_OPENED: Final = "mailroom.email.opened"
EMAIL_CLICKED: Final = "mailroom.email.clicked"
EMAIL_UNSUBSCRIBED: Final = "mailroom.email.unsubscribed"
EMAIL_SUPPRESSED: Final = "mailroom.email.suppressed"
# Internal: SES reported a "Send" event for a message (used by the sender to settle in-doubt sends).
EMAIL_PROVIDER_ACCEPTED: Final = "mailroom.email.provider_accepted"

# Tenant-visible lifecycle subjects (what the email log and webhooks follow).
EMAIL_LIFECYCLE: Final = (
    EMAIL_SENT,
    EMAIL_FAILED,
    EMAIL_DELIVERED,
    EMAIL_BOUNCED,
    EMAIL_COMPLAINED,
    EMAIL_DELIVERY_DELAYED,
    EMAIL_SCHEDULED,
    EMAIL_CANCELED,
    EMAIL_OPENED,
    EMAIL_CLICKED,
    EMAIL_UNSUBSCRIBED,
    EMAIL_SUPPRESSED,
)

# Domains (stream MAILROOM_DOMAIN)
DOMAIN_ALL: Final = "mailroom.domain.>"
DOMAIN_CREATED: Final = "mailroom.domain.created"
DOMAIN_VERIFIED: Final = "mailroom.domain.verified"
DOMAIN_FAILED: Final = "mailroom.domain.failed"
DOMAIN_STATUS_CHANGED: Final = "mailroom.domain.status_changed"
# Issue 18: tracking settings changed (PATCH); the domain was deleted (DELETE).
DOMAIN_UPDATED: Final = "mailroom.domain.updated"
DOMAIN_DELETED: Final = "mailroom.domain.deleted"

# Tenants (stream MAILROOM_TENANT): the api publishes a tenant's whole state whenever its status
# changes (operator, CLI or the reputation guard); the sender keeps its own read model of it.
TENANT_ALL: Final = "mailroom.tenant.>"
TENANT_UPDATED: Final = "mailroom.tenant.updated"

# Webhook endpoints (stream MAILROOM_WEBHOOK): the webhooks service disabled an endpoint on its
# own (410 Gone, or failing for days).
WEBHOOK_ALL: Final = "mailroom.webhook.>"
WEBHOOK_DISABLED: Final = "mailroom.webhook.disabled"

# Dead letters (stream MAILROOM_DLQ): one subject per consumer durable, `mailroom.dlq.<durable>`.
DLQ_ALL: Final = "mailroom.dlq.>"
DLQ_PREFIX: Final = "mailroom.dlq."


def dlq_subject(durable: str) -> str:
    """Where the consumer `durable` puts the messages it gave up on."""
    return f"{DLQ_PREFIX}{durable}"


# Request/reply (core NATS, queue groups) where a synchronous answer is truly needed.
RPC_DOMAINS_CREATE: Final = "mailroom.rpc.domains.create"
RPC_WEBHOOKS_CREATE: Final = "mailroom.rpc.webhooks.create"
RPC_WEBHOOKS_LIST: Final = "mailroom.rpc.webhooks.list"
RPC_WEBHOOKS_GET: Final = "mailroom.rpc.webhooks.get"
RPC_WEBHOOKS_DELETE: Final = "mailroom.rpc.webhooks.delete"
RPC_WEBHOOKS_UPDATE: Final = "mailroom.rpc.webhooks.update"
RPC_WEBHOOKS_ROTATE_SECRET: Final = "mailroom.rpc.webhooks.rotate_secret"  # noqa: S105 - a subject
RPC_WEBHOOKS_TEST: Final = "mailroom.rpc.webhooks.test"
RPC_WEBHOOKS_DELIVERIES_LIST: Final = "mailroom.rpc.webhooks.deliveries.list"
RPC_WEBHOOKS_DELIVERIES_GET: Final = "mailroom.rpc.webhooks.deliveries.get"
RPC_WEBHOOKS_DELIVERIES_RETRY: Final = "mailroom.rpc.webhooks.deliveries.retry"
# Issue 18: check a domain now, change its tracking settings, delete it (and its SES identity).
RPC_DOMAINS_VERIFY: Final = "mailroom.rpc.domains.verify"
RPC_DOMAINS_UPDATE: Final = "mailroom.rpc.domains.update"
RPC_DOMAINS_DELETE: Final = "mailroom.rpc.domains.delete"
# Issue 23: what the sending governor holds (any sender replica answers, from the shared database).
RPC_SENDER_STATUS: Final = "mailroom.rpc.sender.status"
