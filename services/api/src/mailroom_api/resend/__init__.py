"""Issue 21: a Resend-compatible API at `/resend`, so the official Resend SDKs work against Mailroom
by changing one URL. An adapter only: each route translates Resend's shapes to the same domain
services `/v1` calls and back (no rule is implemented twice), authenticated by the same keys
(`opt["auth"]`, the same guard), and every error is rendered in Resend's shape (`errors.py`).

A Resend resource is a module here with its controllers, added to CONTROLLERS."""

from __future__ import annotations

from litestar import Controller, Router

from mailroom_api.resend.api_keys import ResendApiKeysController
from mailroom_api.resend.domains import ResendDomainsController
from mailroom_api.resend.emails import ResendEmailsController
from mailroom_api.resend.errors import resend_exception_handler
from mailroom_api.resend.suppressions import ResendSuppressionsController
from mailroom_api.resend.templates import ResendTemplatesController
from mailroom_api.resend.unsupported import UnsupportedController
from mailroom_api.resend.webhooks import ResendWebhooksController

PATH = "/resend"

# The unsupported resources' catch-all routes last.
CONTROLLERS: list[type[Controller]] = [
    ResendEmailsController,
    ResendWebhooksController,
    ResendTemplatesController,
    ResendSuppressionsController,
    ResendDomainsController,
    ResendApiKeysController,
    UnsupportedController,
]


def resend_router() -> Router:
    return Router(
        path=PATH,
        route_handlers=CONTROLLERS,
        exception_handlers={Exception: resend_exception_handler},
        tags=["Resend compatibility"],
    )
