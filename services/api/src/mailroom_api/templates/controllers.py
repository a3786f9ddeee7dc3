"""Template routes (`/v1/templates`, full-access keys); `{template}` is a `tpl_…` id or an alias.
Also where the send routes find the render pool (`render_pool_of`)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from mailroom_api.checks import id_pattern
from mailroom_api.http.errors import documented
from mailroom_api.http.guards import TENANT, TENANT_SECURITY, Caller, Rt
from mailroom_api.templates import service
from mailroom_api.templates.pool import RenderPool
from mailroom_api.templates.schemas import (
    MAX_ALIAS,
    CreateTemplate,
    CreateVersion,
    PublishTemplate,
    Rendered,
    RenderTemplate,
    TemplateDeleted,
    TemplateDetail,
    TemplateList,
)

RENDER_POOL_STATE = "mailroom_template_pool"  # app.state key, set by create_app

TemplatePath = Annotated[
    str, PathParameter(min_length=1, max_length=MAX_ALIAS, description="`tpl_…` id or the template's alias")
]


def render_pool_of(request: Request[Any, Any, Any]) -> RenderPool:
    pool: RenderPool = request.app.state[RENDER_POOL_STATE]
    return pool


class TemplatesController(Controller):
    path = "/v1/templates"
    tags = ["templates"]
    security = TENANT_SECURITY
    opt = TENANT

    @post(
        "/",
        summary="Create a template (version 1, a draft)",
        description="Sources are Jinja2 templates, rendered in a sandbox (html autoescaped). A syntax error "
        "is 422 naming the part; an alias used by another template of the account is 409 `conflict`.",
        responses=documented(401, 403, 409, 422),
    )
    async def create_template(
        self, data: JSONBody[CreateTemplate], rt: Rt, principal: Caller, request: Request[Any, Any, Any]
    ) -> TemplateDetail:
        pool = render_pool_of(request)
        parts = {"subject": data.subject, "html": data.html, "text": data.text}
        await service.check_sources(pool, parts, max_output=rt.settings.max_message_bytes)
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.create_template(conn, principal, data)

    @get("/", summary="List templates, newest first", responses=documented(401, 403, 422))
    async def list_templates(
        self,
        rt: Rt,
        principal: Caller,
        limit: Annotated[int, QueryParameter(ge=1, le=service.MAX_LIMIT, description="page size")] = 20,
        cursor: Annotated[
            str | None, QueryParameter(pattern=id_pattern("tpl"), description="next_cursor of the previous page")
        ] = None,
    ) -> TemplateList:
        async with rt.pool.connection() as conn:
            return await service.list_templates(conn, principal, limit=limit, cursor=cursor)

    @get("/{template:str}", summary="Get a template with its versions", responses=documented(401, 403, 404))
    async def get_template(self, template: TemplatePath, rt: Rt, principal: Caller) -> TemplateDetail:
        async with rt.pool.connection() as conn:
            return await service.get_template(conn, principal, template)

    @post(
        "/{template:str}/versions",
        summary="Add a version (a draft); fields left out are the latest version's",
        responses=documented(401, 403, 404, 422),
    )
    async def create_version(
        self,
        template: TemplatePath,
        data: JSONBody[CreateVersion],
        rt: Rt,
        principal: Caller,
        request: Request[Any, Any, Any],
    ) -> TemplateDetail:
        given = {"subject": data.subject, "html": data.html, "text": data.text}
        parts = {name: s for name, s in given.items() if isinstance(s, str)}
        await service.check_sources(render_pool_of(request), parts, max_output=rt.settings.max_message_bytes)
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.create_version(conn, principal, template, data)

    @post(
        "/{template:str}/publish",
        status_code=200,
        summary="Publish a version: what sends get from now on",
        description="`version` defaults to the latest draft (409 `conflict` when there is none); a version "
        "published before may be published again. Emails already accepted keep what they rendered.",
        responses=documented(401, 403, 404, 409, 422),
    )
    async def publish(
        self, template: TemplatePath, data: JSONBody[PublishTemplate], rt: Rt, principal: Caller
    ) -> TemplateDetail:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.publish(conn, principal, template, data.version)

    @delete(
        "/{template:str}",
        status_code=200,
        summary="Delete a template and its versions (later sends naming it: 404)",
        responses=documented(401, 403, 404),
    )
    async def delete_template(self, template: TemplatePath, rt: Rt, principal: Caller) -> TemplateDeleted:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.delete_template(conn, principal, template)

    @post(
        "/{template:str}/render",
        status_code=200,
        summary="Render a version with data, without sending (a preview)",
        description="`version` defaults to the published one, else the latest (drafts included). Data is "
        "checked against the typed variables (422 `invalid_template_data` naming `data.<path>`).",
        responses=documented(401, 403, 404, 422),
    )
    async def render(
        self,
        template: TemplatePath,
        data: JSONBody[RenderTemplate],
        rt: Rt,
        principal: Caller,
        request: Request[Any, Any, Any],
    ) -> Rendered:
        settings = rt.settings
        return await service.preview(
            rt.pool,
            render_pool_of(request),
            principal,
            template,
            data,
            extra=settings.template_extra_variables,
            max_output=settings.max_message_bytes,
        )
