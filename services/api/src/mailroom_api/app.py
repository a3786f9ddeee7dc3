"""Builds the API service: the Litestar app (tenant and operator routes, health routes, OpenAPI,
the one error mapper) and the workers (email log and domain projectors, outbox relay)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from mailroom_contracts.streams import API_DOMAINS, API_EMAIL_LOG
from mailroom_kit.runtime import Runtime, ops_router, serve
from mailroom_kit.settings import BaseSettings

from mailroom_api.controllers import CONTROLLERS
from mailroom_api.handlers import domains_worker, email_log_worker, relay_worker
from mailroom_api.service import Principal
from mailroom_api.settings import ApiSettings
from mailroom_api.web import (
    RequestContextMiddleware,
    before_send,
    current_principal,
    exception_handler,
    make_before_request,
)

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
NAME = "api"
SCHEMA = "api"

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


def create_app(runtime: Runtime) -> Litestar:
    settings = runtime.settings
    if not isinstance(settings, ApiSettings):
        settings = ApiSettings(**{f: getattr(settings, f) for f in BaseSettings.__struct_fields__})

    def provide_runtime() -> Runtime:
        return runtime

    return Litestar(
        route_handlers=[ops_router(runtime), *CONTROLLERS],
        dependencies={
            "rt": Provide(provide_runtime, sync_to_thread=False),
            "principal": Provide(current_principal, sync_to_thread=False),
        },
        signature_types=[Runtime, Principal],
        before_request=make_before_request(runtime.pool, settings),
        before_send=[before_send],
        middleware=[DefineMiddleware(RequestContextMiddleware)],
        exception_handlers={Exception: exception_handler},
        openapi_config=OPENAPI,
        request_max_body_size=settings.max_body_bytes,
        debug=False,
    )


WORKERS = [email_log_worker, domains_worker, relay_worker]
CONSUMERS = [API_EMAIL_LOG, API_DOMAINS]


async def run(settings: BaseSettings) -> None:
    assert isinstance(settings, ApiSettings)
    await serve(
        name=NAME,
        schema=SCHEMA,
        settings=settings,
        migrations_dir=MIGRATIONS,
        build_app=create_app,
        workers=WORKERS,
        consumers=CONSUMERS,
    )


__all__: list[Any] = ["CONSUMERS", "MIGRATIONS", "WORKERS", "create_app", "run"]
