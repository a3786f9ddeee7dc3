"""Who may call a route, decided before the body is read: route handlers declare `opt["auth"]`
("tenant": a full-access API key; "tenant_sending": sending-access keys too; "operator": the
operator token; absent: public). The guard then strictly decodes the JSON body. Also the
dependencies routes ask for (`rt`, `settings`, `principal`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.openapi.spec import SecurityRequirement
from mailroom_kit.http import add_log_fields
from mailroom_kit.runtime import Runtime

from mailroom_api.auth.service import Principal, authenticate, operator_allowed
from mailroom_api.errors import ApiError
from mailroom_api.http.body import decode_body
from mailroom_api.settings import ApiSettings

AUTH_OPT = "auth"
TENANT = {AUTH_OPT: "tenant"}
TENANT_SENDING = {AUTH_OPT: "tenant_sending"}
OPERATOR = {AUTH_OPT: "operator"}
TENANT_SECURITY: list[SecurityRequirement] = [{"ApiKey": []}]
OPERATOR_SECURITY: list[SecurityRequirement] = [{"OperatorToken": []}]
PRINCIPAL_KEY = "principal"

Rt = NamedDependency[Runtime]
Settings = NamedDependency[ApiSettings]
Caller = NamedDependency[Principal]


def make_before_request(rt: Runtime, settings: ApiSettings) -> Callable[[Request[Any, Any, Any]], Awaitable[None]]:
    async def before_request(request: Request[Any, Any, Any]) -> None:
        handler = request.route_handler
        auth = handler.opt.get(AUTH_OPT)
        authorization = request.headers.get("authorization")
        if auth == "operator":
            operator_allowed(settings.operator_token, authorization)
        elif auth in ("tenant", "tenant_sending"):
            async with rt.pool.connection() as conn:
                principal = await authenticate(conn, authorization)
            request.scope["state"][PRINCIPAL_KEY] = principal
            add_log_fields(request.scope, tenant_id=principal.tenant_id, api_key_id=principal.key_id)
            if auth == "tenant":
                principal.require_full_access()
        data_field = handler.parsed_data_field
        if data_field is not None:
            await decode_body(request, data_field.annotation)

    return before_request


def current_principal(request: Request[Any, Any, Any]) -> Principal:
    principal = request.scope["state"].get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):  # a route without opt["auth"] asked for it
        raise ApiError(500, "internal", "internal error")
    return principal
