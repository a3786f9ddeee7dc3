"""Resend resources with no counterpart in Mailroom (audiences, broadcasts, contacts, inbound
email, segments, topics, contact properties): every method answers 404 `not_found` saying so, in
Resend's error shape, so an SDK raises its typed not-found error instead of meeting a crash."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, HttpMethod, route
from litestar.params import Parameter

from mailroom_api.errors import ApiError
from mailroom_api.http.guards import TENANT, TENANT_SECURITY

UNSUPPORTED = ("audiences", "broadcasts", "contacts", "inbound", "segments", "topics", "contact-properties")
_METHODS: list[HttpMethod] = [HttpMethod.GET, HttpMethod.POST, HttpMethod.PATCH, HttpMethod.PUT, HttpMethod.DELETE]
_MESSAGE = "this Resend resource is not supported by Mailroom (see docs/resend.md)"


class UnsupportedController(Controller):
    path = "/"
    security = TENANT_SECURITY
    opt = TENANT

    @route([f"/{r}" for r in UNSUPPORTED], http_method=_METHODS, summary="Not supported by Mailroom (404 not_found)")
    async def unsupported(self) -> None:
        raise ApiError(404, "not_found", _MESSAGE)

    @route(
        [f"/{r}/{{rest:path}}" for r in UNSUPPORTED],
        http_method=_METHODS,
        summary="Not supported by Mailroom (404 not_found)",
    )
    async def unsupported_item(self, rest: Annotated[str, Parameter(description="anything")]) -> None:
        raise ApiError(404, "not_found", _MESSAGE)
