"""Builds the events service: the SNS endpoint, health routes, and the outbox relay."""

from __future__ import annotations

from pathlib import Path

import httpx
from litestar import Litestar
from litestar.exceptions import HTTPException
from mailroom_kit.http import request_logging
from mailroom_kit.logging import get_logger
from mailroom_kit.retention import Purge
from mailroom_kit.runtime import Runtime, ops_router, serve
from mailroom_kit.settings import DAY

from mailroom_events import repository
from mailroom_events.groups import sns_groups
from mailroom_events.handlers import http_exception_handler, internal_error_handler, sns_handler
from mailroom_events.settings import EventsSettings
from mailroom_events.sns import SnsVerifier

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"

log = get_logger(__name__)


def build_verifier(settings: EventsSettings) -> SnsVerifier:
    return SnsVerifier(
        cert_host_pattern=settings.sns_cert_host_pattern,
        allowed_topics=settings.topic_arns,
        allow_http_cert_urls=settings.sns_allow_http,
        max_age=settings.sns_max_age,
    )


def create_app(runtime: Runtime[EventsSettings], verifier: SnsVerifier | None = None) -> Litestar:
    settings = runtime.settings
    verifier = verifier or build_verifier(settings)
    if not verifier.allowed_topics:
        log.warning("sns.no_topics", detail="MAILROOM_EVENTS_SNS_TOPIC_ARNS is empty: every SNS message is refused")
    # Used only for SubscribeURL GETs; certificate fetches have their own client in the verifier.
    client = httpx.AsyncClient(timeout=10.0, follow_redirects=False)

    groups = sns_groups(runtime.pool)  # issue 15: group commit of SNS messages

    async def close_client() -> None:
        await groups.close()
        await client.aclose()

    logging = request_logging("events")
    app = Litestar(
        route_handlers=[ops_router(runtime), sns_handler(runtime, verifier, client, groups)],
        exception_handlers={HTTPException: http_exception_handler, Exception: internal_error_handler},
        middleware=logging.middleware,
        before_send=logging.before_send,
        on_shutdown=[close_client],
        openapi_config=None,
        logging_config=None,  # keep the kit's stdlib logging (JSON lines); Litestar's would replace it
    )
    app.state.sns_groups = groups  # for tests and the bench: how many statements wrote how many messages
    return app


async def relay(runtime: Runtime) -> None:
    await runtime.relay().run(runtime.stop)


async def run(settings: EventsSettings) -> None:
    await serve(
        name="events",
        schema="events",
        settings=settings,
        migrations_dir=MIGRATIONS,
        build_app=create_app,
        workers=[relay],
        purges=[
            Purge("sns_messages", settings.sns_message_retention_days * DAY, repository.purge_sns_messages),
            Purge("unmatched_events", settings.unmatched_retention_days * DAY, repository.purge_unmatched),
        ],
    )
