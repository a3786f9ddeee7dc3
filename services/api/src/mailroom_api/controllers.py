"""HTTP edges: class controllers for the tenant API (/v1) and the operator API (/admin/v1).

Each handler is thin: authentication and strict body decoding already ran in the
before-request hook; the handler opens the transaction and calls the service.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import SecurityRequirement
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from mailroom_kit.runtime import Runtime

from mailroom_api import schemas, service
from mailroom_api.settings import ApiSettings
from mailroom_api.web import AUTH_OPT

Rt = NamedDependency[Runtime]
Caller = NamedDependency[service.Principal]

TENANT_SECURITY: list[SecurityRequirement] = [{"ApiKey": []}]
OPERATOR_SECURITY: list[SecurityRequirement] = [{"OperatorToken": []}]

_ERROR_TEXT = {
    400: "invalid_json: the body is not JSON or the content type is wrong (or a malformed request)",
    401: "missing_api_key / invalid_api_key",
    403: "api_key_revoked, insufficient_permission, domain_not_verified, from_domain_not_allowed, "
    "tenant_paused, tenant_blocked",
    404: "not_found (also for other tenants' resources)",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error: `param` names the field",
    503: "unavailable: a dependency is down; retry after Retry-After",
}


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    """Documented error responses (all in the one error shape); 400 and 401 can happen anywhere."""
    statuses = tuple(sorted({400, 401, *statuses}))
    return {
        s: ResponseSpec(data_container=schemas.ErrorBody, description=_ERROR_TEXT[s], generate_examples=False)
        for s in statuses
    }


def _timeout(rt: Rt) -> float:
    settings = rt.settings
    return settings.rpc_timeout_seconds if isinstance(settings, ApiSettings) else 5.0


# --------------------------------------------------------------------------- operator API


class AdminTenantsController(Controller):
    path = "/admin/v1/tenants"
    tags = ["operator"]
    security = OPERATOR_SECURITY
    opt = {AUTH_OPT: "operator"}

    @post("/", summary="Create a tenant", responses=errors(400, 401, 422))
    async def create_tenant(self, data: JSONBody[schemas.CreateTenant], rt: Rt) -> schemas.Tenant:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.create_tenant(conn, data)

    @get("/", summary="List tenants", responses=errors(401))
    async def list_tenants(self, rt: Rt) -> schemas.TenantList:
        async with rt.pool.connection() as conn:
            return schemas.TenantList(data=await service.list_tenants(conn))

    @get("/{tenant_id:str}", summary="Get a tenant", responses=errors(401, 404))
    async def get_tenant(self, tenant_id: FromPath[str], rt: Rt) -> schemas.Tenant:
        async with rt.pool.connection() as conn:
            return await service.get_tenant(conn, tenant_id)

    @patch(
        "/{tenant_id:str}",
        summary="Update a tenant (status, quota, rate limit)",
        responses=errors(400, 401, 404, 422),
    )
    async def update_tenant(
        self, tenant_id: FromPath[str], data: JSONBody[schemas.UpdateTenant], rt: Rt
    ) -> schemas.Tenant:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.update_tenant(conn, tenant_id, data)

    @post(
        "/{tenant_id:str}/api-keys",
        summary="Create an API key for a tenant (token shown once)",
        responses=errors(400, 401, 404, 422),
    )
    async def create_api_key(
        self, tenant_id: FromPath[str], data: JSONBody[schemas.CreateApiKey], rt: Rt
    ) -> schemas.CreatedApiKey:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.create_api_key(conn, tenant_id, data)


# --------------------------------------------------------------------------- tenant API


class ApiKeysController(Controller):
    path = "/v1/api-keys"
    tags = ["api-keys"]
    security = TENANT_SECURITY
    opt = {AUTH_OPT: "tenant"}

    @post("/", summary="Create an API key (token shown once)", responses=errors(400, 401, 403, 422))
    async def create_api_key(
        self, data: JSONBody[schemas.CreateApiKey], rt: Rt, principal: Caller
    ) -> schemas.CreatedApiKey:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.create_api_key(conn, principal.tenant_id, data, caller_mode=principal.mode)

    @get("/", summary="List API keys (prefix and last 4 characters only)", responses=errors(401, 403))
    async def list_api_keys(self, rt: Rt, principal: Caller) -> schemas.ApiKeyList:
        async with rt.pool.connection() as conn:
            return schemas.ApiKeyList(data=await service.list_api_keys(conn, principal.tenant_id))

    @delete(
        "/{key_id:str}",
        status_code=200,
        summary="Revoke an API key (effective immediately)",
        responses=errors(401, 403, 404),
    )
    async def revoke_api_key(self, key_id: FromPath[str], rt: Rt, principal: Caller) -> schemas.ApiKey:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.revoke_api_key(conn, principal.tenant_id, key_id)


class EmailsController(Controller):
    path = "/v1/emails"
    tags = ["emails"]
    security = TENANT_SECURITY
    opt = {AUTH_OPT: "tenant_sending"}

    @post("/", status_code=202, summary="Queue an email", responses=errors(400, 401, 403, 413, 422))
    async def send_email(self, data: JSONBody[schemas.SendEmail], rt: Rt, principal: Caller) -> schemas.EmailAccepted:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.send_email(conn, principal, data)

    @get("/", summary="List emails, newest first", responses=errors(401, 403, 422))
    async def list_emails(
        self,
        rt: Rt,
        principal: Caller,
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="page size")] = 20,
        cursor: Annotated[str | None, QueryParameter(description="next_cursor of the previous page")] = None,
        status: FromQuery[str | None] = None,
        created_after: FromQuery[datetime | None] = None,
        created_before: FromQuery[datetime | None] = None,
        to: Annotated[str | None, QueryParameter(description="a recipient address")] = None,
        tag: Annotated[str | None, QueryParameter(description="`key:value`")] = None,
        domain: Annotated[str | None, QueryParameter(description="the from-domain")] = None,
    ) -> schemas.EmailList:
        async with rt.pool.connection() as conn:
            return await service.list_emails(
                conn,
                principal,
                limit=limit,
                cursor=cursor,
                status=status,
                created_after=created_after,
                created_before=created_before,
                to=to,
                tag=tag,
                domain=domain,
            )

    @get(
        "/{email_id:str}",
        summary="Get an email: recipients' status and the event timeline",
        responses=errors(401, 403, 404),
    )
    async def get_email(
        self,
        email_id: FromPath[str],
        rt: Rt,
        principal: Caller,
        include: Annotated[str | None, QueryParameter(description="`content` adds html, text and headers")] = None,
    ) -> schemas.EmailDetail:
        include_content = "content" in (include or "").split(",")
        async with rt.pool.connection() as conn:
            return await service.get_email(conn, principal, email_id, include_content=include_content)


class DomainsController(Controller):
    path = "/v1/domains"
    tags = ["domains"]
    security = TENANT_SECURITY
    opt = {AUTH_OPT: "tenant"}

    @post(
        "/",
        summary="Add a sending domain (returns its DNS records)",
        responses=errors(400, 401, 403, 409, 422, 503),
    )
    async def create_domain(self, data: JSONBody[schemas.CreateDomain], rt: Rt, principal: Caller) -> schemas.Domain:
        snapshot = await service.request_domain(rt.nc, principal.tenant_id, data, rpc_timeout=_timeout(rt))
        async with rt.pool.connection() as conn, conn.transaction():
            await service.record_domain(conn, snapshot, event_at=None)
            return await service.get_domain(conn, principal.tenant_id, snapshot.domain_id)

    @get("/", summary="List domains", responses=errors(401, 403))
    async def list_domains(self, rt: Rt, principal: Caller) -> schemas.DomainList:
        async with rt.pool.connection() as conn:
            return schemas.DomainList(data=await service.list_domains(conn, principal.tenant_id))

    @get("/{domain_id:str}", summary="Get a domain with per-record status", responses=errors(401, 403, 404))
    async def get_domain(self, domain_id: FromPath[str], rt: Rt, principal: Caller) -> schemas.Domain:
        async with rt.pool.connection() as conn:
            return await service.get_domain(conn, principal.tenant_id, domain_id)


class WebhooksController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]
    security = TENANT_SECURITY
    opt = {AUTH_OPT: "tenant"}

    @post(
        "/",
        summary="Create a webhook endpoint (secret shown once)",
        responses=errors(400, 401, 403, 409, 422, 503),
    )
    async def create_webhook(
        self, data: JSONBody[schemas.CreateWebhook], rt: Rt, principal: Caller
    ) -> schemas.CreatedWebhook:
        return await service.create_webhook(rt.nc, principal.tenant_id, data, rpc_timeout=_timeout(rt))

    @get("/", summary="List webhook endpoints", responses=errors(401, 403, 503))
    async def list_webhooks(self, rt: Rt, principal: Caller) -> schemas.WebhookList:
        return schemas.WebhookList(
            data=await service.list_webhooks(rt.nc, principal.tenant_id, rpc_timeout=_timeout(rt))
        )

    @get("/{webhook_id:str}", summary="Get a webhook endpoint", responses=errors(401, 403, 404, 503))
    async def get_webhook(self, webhook_id: FromPath[str], rt: Rt, principal: Caller) -> schemas.Webhook:
        return await service.get_webhook(rt.nc, principal.tenant_id, webhook_id, rpc_timeout=_timeout(rt))

    @delete(
        "/{webhook_id:str}",
        status_code=200,
        summary="Delete a webhook endpoint",
        responses=errors(401, 403, 404, 503),
    )
    async def delete_webhook(self, webhook_id: FromPath[str], rt: Rt, principal: Caller) -> schemas.Deleted:
        return await service.delete_webhook(rt.nc, principal.tenant_id, webhook_id, rpc_timeout=_timeout(rt))


CONTROLLERS: list[type[Controller]] = [
    AdminTenantsController,
    ApiKeysController,
    EmailsController,
    DomainsController,
    WebhooksController,
]
