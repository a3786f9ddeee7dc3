"""The SES message tags Mailroom sets on every send and matches SES events by.

The sender writes them on SendEmail (`EmailTags`); SES echoes them in every event it publishes
(`mail.tags`), and the events service reads them back to find the email. Tenants' own tags may
not start with `RESERVED_TAG_PREFIX`, so they can never collide with (or forge) these.
"""

from __future__ import annotations

from typing import Final

RESERVED_TAG_PREFIX: Final = "mailroom_"

TAG_EMAIL_ID: Final = f"{RESERVED_TAG_PREFIX}email_id"  # the email id, `msg_…`
TAG_TENANT_ID: Final = f"{RESERVED_TAG_PREFIX}tenant_id"  # the tenant id, `ten_…`
TAG_MODE: Final = f"{RESERVED_TAG_PREFIX}mode"  # `live` or `test`

MAILROOM_TAGS: Final = (TAG_EMAIL_ID, TAG_TENANT_ID, TAG_MODE)


def is_reserved_tag(name: str) -> bool:
    """True when a tenant may not use `name` as a tag (any case: SES tag names are case-sensitive,
    but `Mailroom_email_id` next to ours would only confuse whoever reads the events)."""
    return name.lower().startswith(RESERVED_TAG_PREFIX)
