"""Builds the API service: the Litestar app (every domain's routes, the health routes, OpenAPI, the
one error mapper) and its workers (email log and domain projectors, outbox relay).

A new domain is a new package with its controllers, added to ROUTES (and its projector to WORKERS)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
from litestar import Controller, Litestar
from litestar._openapi.plugin import OpenAPIPlugin  # the plugin `app.openapi_schema` reads; no public name
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, OpenAPI, Schema, SecurityScheme
from mailroom_contracts.streams import API_DOMAINS, API_EMAIL_LOG
from mailroom_kit import outbox
from mailroom_kit.http import request_logging
from mailroom_kit.retention import Purge
from mailroom_kit.runtime import Runtime, Worker, ops_router, serve
from mailroom_kit.settings import DAY

from mailroom_api.account.controllers import SettingsController
from mailroom_api.auth.cache import KeyCache
from mailroom_api.auth.service import Principal
from mailroom_api.domains.controllers import DomainsController
from mailroom_api.domains.projector import domains_worker
from mailroom_api.emails import repository as emails_repository
from mailroom_api.emails.accept_group import AcceptGroups
from mailroom_api.emails.controllers import EmailsController
from mailroom_api.emails.idempotency import purge_worker as idempotency_purge_worker
from mailroom_api.emails.projector import email_log_worker
from mailroom_api.emails.relay_wake import RelayWake
from mailroom_api.emails.scheduling import mark_queued, recheck_suppressions
from mailroom_api.http.body import Request
from mailroom_api.http.errors import exception_handler
from mailroom_api.http.guards import (
    ACCEPT_GROUPS_STATE,
    KEY_CACHE_STATE,
    RATE_LIMITER_STATE,
    RELAY_WAKE_STATE,
    RUNTIME_STATE,
    TENANT_SECURITY,
    UNSUBSCRIBE_LINKS_STATE,
    current_principal,
    make_before_request,
    rate_limit_headers,
)
from mailroom_api.keys.controllers import AdminApiKeysController, ApiKeysController
from mailroom_api.limits.controllers import UsageController
from mailroom_api.limits.service import RateLimiter
from mailroom_api.resend import resend_router
from mailroom_api.sending.controllers import AdminSendingController
from mailroom_api.settings import ApiSettings
from mailroom_api.stats.controllers import StatsController
from mailroom_api.suppressions.controllers import SuppressionsController
from mailroom_api.templates.controllers import RENDER_POOL_STATE, TemplatesController
from mailroom_api.templates.pool import RenderPool
from mailroom_api.tenants.controllers import AdminTenantsController
from mailroom_api.tenants.republish import republish_worker
from mailroom_api.unsubscribe.controllers import UnsubscribeController
from mailroom_api.webhooks.controllers import WebhooksController

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
NAME = "api"
SCHEMA = "api"

ROUTES: list[type[Controller]] = [
    AdminTenantsController,
    AdminApiKeysController,
    AdminSendingController,
    ApiKeysController,
    EmailsController,
    DomainsController,
    WebhooksController,
    SettingsController,
    UnsubscribeController,
    SuppressionsController,
    UsageController,
    TemplatesController,
    StatsController,
]


async def relay_worker(rt: Runtime) -> None:
    # Scheduling: a scheduled email moves to `queued` in the transaction that relays its EmailQueued.
    # Issue 22: and its recipients suppressed since the accept are dropped just before (recheck_suppressions).
    await rt.relay(on_scheduled_relayed=mark_queued, prepare_scheduled=recheck_suppressions).run(rt.stop)


WORKERS: list[Worker] = [email_log_worker, domains_worker, relay_worker, idempotency_purge_worker, republish_worker]
CONSUMERS = [API_EMAIL_LOG, API_DOMAINS]

OPENAPI = OpenAPIConfig(
    title="Mailroom API",
    version="1.0.0",
    description="Transactional email on AWS SES. Errors are "
    '`{"error", "message", "param", "request_id"}`; every response carries `X-Request-Id`.',
    path="/schema",
    render_plugins=[JsonRenderPlugin(path="/openapi.json")],
    components=Components(
        security_schemes={
            "ApiKey": SecurityScheme(type="http", scheme="bearer", description="mr_live_… or mr_test_… API key"),
            "OperatorToken": SecurityScheme(type="http", scheme="bearer", description="MAILROOM_OPERATOR_TOKEN"),
        }
    ),
    use_handler_docstrings=False,
)


def create_app(runtime: Runtime[ApiSettings]) -> Litestar:
    settings = runtime.settings
    keys = KeyCache(settings.key_cache_seconds)
    wake = RelayWake(settings.database_url, SCHEMA, outbox.channel(SCHEMA))
    groups = AcceptGroups(runtime.pool)  # issue 15: group commit
    limiter = RateLimiter(default_rate=settings.default_rate_limit, default_burst=settings.default_rate_burst)
    # Templates (issue 17): render workers, started on the first render, stopped with the app.
    render_pool = RenderPool(
        size=settings.template_workers,
        timeout_seconds=settings.template_render_timeout_seconds,
        memory_bytes=settings.template_worker_memory_mb * 1024 * 1024,
    )

    @contextlib.asynccontextmanager
    async def background(_: Litestar) -> AsyncIterator[None]:
        """The key cache's LISTEN and the relay wake, for as long as the app serves."""
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(keys.listen(settings.database_url, stop), name="key-cache-listen"),
            asyncio.create_task(wake.run(stop), name="relay-wake"),
        ]
        try:
            yield
        finally:
            stop.set()
            await groups.close()
            await asyncio.wait(tasks, timeout=5)
            for task in tasks:
                task.cancel()
            await render_pool.close()

    def provide_runtime() -> Runtime:
        return runtime

    def provide_settings() -> ApiSettings:
        return settings

    logging = request_logging(NAME)
    app = Litestar(
        route_handlers=[ops_router(runtime), *ROUTES, resend_router()],
        dependencies={
            "rt": Provide(provide_runtime, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
            "principal": Provide(current_principal, sync_to_thread=False),
        },
        signature_types=[Runtime, Principal, ApiSettings],
        before_request=make_before_request(runtime, settings, keys, limiter),
        state=State(
            {
                RUNTIME_STATE: runtime,
                KEY_CACHE_STATE: keys,
                RELAY_WAKE_STATE: wake,
                ACCEPT_GROUPS_STATE: groups,
                UNSUBSCRIBE_LINKS_STATE: settings.unsubscribe_links,
                RATE_LIMITER_STATE: limiter,
                RENDER_POOL_STATE: render_pool,
            }
        ),
        lifespan=[background],
        before_send=[*logging.before_send, rate_limit_headers],
        middleware=logging.middleware,
        logging_config=None,  # the kit's stdlib logging (JSON lines); Litestar's would replace it
        exception_handlers={Exception: exception_handler},
        openapi_config=OPENAPI,
        request_max_body_size=settings.max_body_bytes,
        debug=False,
    )
    # issue 15: the document is built (and amended) on its first request, not at start (1.3 s of
    # the API's CPU to ready, while every service starts on the same cores).
    app.plugins.get(OpenAPIPlugin).__class__ = _AmendedOpenAPIPlugin
    return app


class _AmendedOpenAPIPlugin(OpenAPIPlugin):
    """Litestar's OpenAPI plugin, whose document gets Mailroom's amendments when it is built."""

    __slots__ = ()

    def _build_openapi(self) -> OpenAPI:
        document = super()._build_openapi()
        _document_strict_bodies(document)
        _document_rate_limits(document)
        return document


def _document_rate_limits(document: OpenAPI) -> None:
    """Issue 23: every tenant route may answer 429 `rate_limited` and 403 `tenant_blocked`; the error
    mapper is one for all, so the tenant operations that do not list them get the send route's."""
    paths = document.paths or {}
    tenant_ops = [
        op
        for item in paths.values()
        for op in (item.get, item.post, item.patch, item.put, item.delete)
        if op is not None and op.security == TENANT_SECURITY and op.responses is not None
    ]
    send = paths["/v1/emails"].post
    assert send is not None and send.responses is not None
    for status in ("403", "429"):
        for op in tenant_ops:
            assert op.responses is not None
            op.responses.setdefault(status, send.responses[status])


def _request_bodies() -> dict[str, type[Request]]:
    found: dict[str, type[Request]] = {}
    pending = list(Request.__subclasses__())
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def _document_strict_bodies(document: OpenAPI) -> None:
    """Request bodies refuse unknown fields (`forbid_unknown_fields`); Litestar does not say so in
    the schema, so the document gets `additionalProperties: false` on each of them."""
    components = document.components
    schemas = components.schemas if components is not None and components.schemas is not None else {}
    bodies = _request_bodies()
    for name, schema in schemas.items():
        if name in bodies and isinstance(schema, Schema):
            schema.additional_properties = False
            _restore_zero_bounds(schema, bodies[name])


# msgspec's JSON Schema keyword → Litestar's Schema attribute.
_BOUNDS = {
    "minimum": "minimum",
    "maximum": "maximum",
    "exclusiveMinimum": "exclusive_minimum",
    "exclusiveMaximum": "exclusive_maximum",
    "minLength": "min_length",
    "maxLength": "max_length",
    "minItems": "min_items",
    "maxItems": "max_items",
}


def _restore_zero_bounds(schema: Schema, body: type[Request]) -> None:
    """Litestar leaves out a bound whose value is 0 (`minimum: 0` on a quota); msgspec's own schema
    of the same Struct has every bound, so any the document lacks is taken from it."""
    own = msgspec.json.schema(body)["$defs"][body.__name__].get("properties", {})
    for field, described in (schema.properties or {}).items():
        if not isinstance(described, Schema) or field not in own:
            continue
        truth = own[field]
        branches = [b for b in truth.get("anyOf", [truth]) if b.get("type") != "null"]
        for keyword, attribute in _BOUNDS.items():
            value = next((b[keyword] for b in branches if keyword in b), None)
            if value is not None and getattr(described, attribute) is None:
                setattr(described, attribute, value)


async def run(settings: ApiSettings) -> None:
    await serve(
        name=NAME,
        schema=SCHEMA,
        settings=settings,
        migrations_dir=MIGRATIONS,
        build_app=create_app,
        workers=WORKERS,
        consumers=CONSUMERS,
        processes=settings.processes,
        purges=purges(settings),
    )


def purges(settings: ApiSettings) -> list[Purge]:
    """What the api's retention job deletes (beside the kit's inbox claims)."""
    return [Purge("emails.content", settings.content_retention_days * DAY, emails_repository.purge_content)]
