"""`/resend/templates` (issue 21): Resend's templates over Mailroom's template store
(`mailroom_api.templates`: versions, publish, the Jinja2 sandbox; no second renderer).

Translation: Resend's `{{{VAR}}}` becomes `{{ VAR }}` (html autoescaped, as every Mailroom
template), and any other `{{`, `{%`, `{#` of the source is kept literally; each declared variable
`{key, type, fallback_value}` becomes a declaration `{type, default}` (no fallback: `required`),
so a send leaving a variable out gets its fallback, by the same code as `/v1`. A variable used but
not declared is a validation_error (a send could never give it a value Resend would check).

Versions: create is version 1, a draft; update adds a draft version (name/alias change in place);
publish publishes the latest. `status` is `published` while the published version is the latest,
else `draft`. The Resend source form is kept beside (`resend_templates`, api migration 0016) and
is what get/list answer; a template created through `/v1` is shown from its Jinja2 source.

A Resend template's `subject` is optional; without one the send must give it (the send's rules
then refuse an email with no subject). `from` and `reply_to` are stored and returned; the send
applies them when the request leaves them out (`template_defaults`)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import psycopg
from litestar import Controller, Request, delete, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from mailroom_kit.db import Conn

from mailroom_api.auth.service import Principal
from mailroom_api.checks import MAX_NAME, Name
from mailroom_api.errors import ApiError, not_found, validation
from mailroom_api.http.body import Request as Body
from mailroom_api.http.guards import TENANT, TENANT_SECURITY, Caller, Rt
from mailroom_api.resend import repository as resend_repo
from mailroom_api.resend.responses import documented
from mailroom_api.templates import repository as repo
from mailroom_api.templates import service
from mailroom_api.templates.controllers import render_pool_of
from mailroom_api.templates.schemas import (
    MAX_ALIAS,
    MAX_VARIABLES,
    Alias,
    BodySource,
    CreateTemplate,
    CreateVersion,
    SubjectSource,
    TemplateDetail,
)

MAX_PAGE = 100
MAX_FROM = 998
KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_VAR = re.compile(r"\{\{\{\s*([^{}\s]*)\s*\}\}\}")
_KEY = re.compile(KEY_PATTERN)
_JINJA_OPEN = re.compile(r"\{(?=[{%#])")

TemplatePath = Annotated[
    str, PathParameter(min_length=1, max_length=MAX_ALIAS, description="`tpl_…` id or the template's alias")
]
From = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_FROM)]
ReplyTo = From | Annotated[list[From], msgspec.Meta(max_length=50)]


class ResendVariable(Body, frozen=True, kw_only=True, omit_defaults=True):
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    type: Literal["string", "number"]
    fallback_value: Any = None  # null or absent: a send must give the variable


Variables = Annotated[list[ResendVariable], msgspec.Meta(max_length=MAX_VARIABLES)]


class ResendCreateTemplate(Body, frozen=True, kw_only=True, rename={"from_": "from"}):
    name: Name
    html: BodySource
    alias: Alias | None = None
    from_: From | None = None
    subject: SubjectSource | None = None
    reply_to: ReplyTo | None = None
    text: BodySource | None = None
    variables: Variables = []


class ResendUpdateTemplate(Body, frozen=True, kw_only=True, rename={"from_": "from"}):
    """Only the fields given change (the others are the latest version's)."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    alias: Alias | msgspec.UnsetType | None = msgspec.UNSET
    from_: From | msgspec.UnsetType | None = msgspec.UNSET
    subject: SubjectSource | msgspec.UnsetType | None = msgspec.UNSET
    reply_to: ReplyTo | msgspec.UnsetType | None = msgspec.UNSET
    html: BodySource | msgspec.UnsetType = msgspec.UNSET
    text: BodySource | msgspec.UnsetType | None = msgspec.UNSET
    variables: Variables | msgspec.UnsetType = msgspec.UNSET


class VariableOut(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """As written: `fallback_value` left out when there is none."""

    key: str
    type: str
    fallback_value: Any = None


class ResendTemplate(msgspec.Struct, frozen=True, kw_only=True, rename={"from_": "from"}):
    object: str = "template"
    id: str
    name: str
    alias: str | None
    status: Literal["draft", "published"]
    from_: str | None
    subject: str | None
    reply_to: str | list[str] | None
    html: str
    text: str | None
    variables: list[VariableOut]
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None


class ResendTemplateItem(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    alias: str | None
    status: Literal["draft", "published"]
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ResendTemplateList(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "list"
    has_more: bool
    data: list[ResendTemplateItem]


class ResendTemplateRef(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "template"
    id: str


class ResendTemplateDeleted(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "template"
    id: str
    deleted: bool = True


# ----------------------------------------------------------------------------- translation


def jinja_source(source: str, declared: set[str], part: str) -> str:
    """Resend's source → Jinja2: `{{{KEY}}}` → `{{ KEY }}`; every other `{` that would open a
    Jinja2 tag is emitted literally. A key that is not declared is a validation_error."""
    out: list[str] = []
    end = 0
    for match in _VAR.finditer(source):
        out.append(_JINJA_OPEN.sub('{{ "{" }}', source[end : match.start()]))
        key = match.group(1)
        if not _KEY.fullmatch(key):
            raise validation(f"{{{{{{{key[:64]}}}}}}} is not a variable (letters, digits and _)", part)
        if key not in declared:
            raise validation(f"the template uses {{{{{{{key}}}}}}} but declares no variable {key}", "variables")
        out.append("{{ " + key + " }}")
        end = match.end()
    out.append(_JINJA_OPEN.sub('{{ "{" }}', source[end:]))
    return "".join(out)


def declarations(variables: list[ResendVariable]) -> dict[str, Any]:
    """Resend's variable list → Mailroom's declarations (checked again by the template service)."""
    out: dict[str, Any] = {}
    for i, v in enumerate(variables):
        if not _KEY.fullmatch(v.key):
            raise validation(
                "a variable key is letters, digits and _ (not starting with a digit)", f"variables[{i}].key"
            )
        if v.key in out:
            raise validation(f"the variable {v.key} is declared twice", f"variables[{i}].key")
        entry: dict[str, Any] = {"type": v.type, "required": v.fallback_value is None}
        if v.fallback_value is not None:
            entry["default"] = v.fallback_value
        out[v.key] = entry
    return out


def _check_fallbacks(variables: list[ResendVariable]) -> None:
    for i, v in enumerate(variables):
        value = v.fallback_value
        if value is None:
            continue
        ok = (
            isinstance(value, str)
            if v.type == "string"
            else isinstance(value, int | float) and not isinstance(value, bool)
        )
        if not ok:
            raise validation(f"fallback_value must be of type {v.type}", f"variables[{i}].fallback_value")


def _translated(source: dict[str, Any]) -> dict[str, Any]:
    """The Mailroom version fields of a Resend source: subject (empty when none), html, text, variables."""
    variables = [msgspec.convert(v, ResendVariable) for v in source["variables"]]
    _check_fallbacks(variables)
    declared_variables = declarations(variables)  # the variables' own errors first
    declared = set(declared_variables)
    subject = source.get("subject")
    text = source.get("text")
    return {
        "subject": jinja_source(subject, declared, "subject") if subject else "",
        "html": jinja_source(source["html"], declared, "html"),
        "text": None if text is None else jinja_source(text, declared, "text"),
        "variables": declared_variables,
    }


def _source(body: ResendCreateTemplate) -> dict[str, Any]:
    return {
        "from": body.from_,
        "subject": body.subject,
        "reply_to": body.reply_to,
        "html": body.html,
        "text": body.text,
        "variables": msgspec.to_builtins(body.variables),
    }


def _status(detail: TemplateDetail) -> Literal["draft", "published"]:
    return "published" if detail.published_version == detail.latest_version else "draft"


def _published_at(detail: TemplateDetail) -> datetime | None:
    for v in detail.versions:
        if v.version == detail.published_version:
            return v.published_at
    return None


def _view(detail: TemplateDetail, source: dict[str, Any] | None) -> ResendTemplate:
    if source is None:  # made through /v1: its Jinja2 source and declarations as they are
        latest = detail.versions[0]
        source = {
            "from": None,
            "subject": latest.subject,
            "reply_to": None,
            "html": latest.html,
            "text": latest.text,
            "variables": [
                {"key": k, "type": d.type, "fallback_value": None if d.default is msgspec.UNSET else d.default}
                for k, d in latest.variables.items()
            ],
        }
    return ResendTemplate(
        id=detail.id,
        name=detail.name,
        alias=detail.alias,
        status=_status(detail),
        from_=source.get("from"),
        subject=source.get("subject"),
        reply_to=source.get("reply_to"),
        html=source["html"],
        text=source.get("text"),
        variables=[msgspec.convert(v, VariableOut) for v in source["variables"]],
        created_at=detail.created_at,
        updated_at=detail.updated_at,
        published_at=_published_at(detail),
    )


async def template_defaults(conn: Conn, tenant_id: str, template_id: str) -> dict[str, Any]:
    """For the send route: the `from` and `reply_to` a Resend template was stored with (empty
    when none, or when it was made through /v1)."""
    source = (await resend_repo.get_sources(conn, tenant_id, [template_id])).get(template_id) or {}
    return {k: source[k] for k in ("from", "reply_to") if source.get(k) is not None}


async def _check(request: Request[Any, Any, Any], rt: Rt, fields: dict[str, Any]) -> None:
    parts = {"subject": fields["subject"] or None, "html": fields["html"], "text": fields["text"]}
    await service.check_sources(render_pool_of(request), parts, max_output=rt.settings.max_message_bytes)


async def _create(
    conn: Conn, principal: Principal, name: str, alias: str | None, source: dict[str, Any], fields: dict[str, Any]
) -> str:
    # Built, not decoded: the fields were checked above (an empty subject is how "none" is stored).
    body = CreateTemplate(
        name=name,
        alias=alias,
        subject=fields["subject"],
        html=fields["html"],
        text=fields["text"],
        variables=fields["variables"],
    )
    detail = await service.create_template(conn, principal, body)
    await resend_repo.put_source(conn, principal.tenant_id, detail.id, source)
    return detail.id


class ResendTemplatesController(Controller):
    path = "/templates"
    security = TENANT_SECURITY
    opt = TENANT

    @post(
        "/",
        status_code=200,
        summary="Create a template (Resend: templates.create)",
        responses=documented(400, 401, 403, 409, 422),
    )
    async def create_template(
        self, data: JSONBody[ResendCreateTemplate], rt: Rt, principal: Caller, request: Request[Any, Any, Any]
    ) -> ResendTemplateRef:
        source = _source(data)
        fields = _translated(source)
        await _check(request, rt, fields)
        async with rt.pool.connection() as conn, conn.transaction():
            template_id = await _create(conn, principal, data.name, data.alias, source, fields)
        return ResendTemplateRef(id=template_id)

    @get("/", summary="List templates, newest first (Resend: templates.list)", responses=documented(401, 403, 422))
    async def list_templates(
        self,
        rt: Rt,
        principal: Caller,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="page size")] = 20,
        after: Annotated[str | None, QueryParameter(description="id after which the page starts")] = None,
        before: Annotated[str | None, QueryParameter(description="id before which the page ends")] = None,
    ) -> ResendTemplateList:
        if after is not None and before is not None:
            raise validation("after and before cannot be used together", "after")
        for name, value in (("after", after), ("before", before)):
            if value is not None and not service.is_template_id(value):
                raise validation(f"{name} must be a template id", name)
        async with rt.pool.connection() as conn:
            if before is None:
                rows = await repo.list_templates(conn, principal.tenant_id, before_id=after, limit=limit + 1)
                has_more = len(rows) > limit
                rows = rows[:limit]
            else:  # the `limit` newer than `before` (ids sort by creation)
                rows = await repo.list_templates(conn, principal.tenant_id, before_id=None, limit=10_000)
                newer = [r for r in rows if r.id > before]
                has_more = len(newer) > limit
                rows = newer[-limit:]
            details = [await service.get_template(conn, principal, r.id) for r in rows]
        return ResendTemplateList(
            has_more=has_more,
            data=[
                ResendTemplateItem(
                    id=d.id,
                    name=d.name,
                    alias=d.alias,
                    status=_status(d),
                    published_at=_published_at(d),
                    created_at=d.created_at,
                    updated_at=d.updated_at,
                )
                for d in details
            ],
        )

    @get("/{template:str}", summary="Get a template (Resend: templates.get)", responses=documented(401, 403, 404))
    async def get_template(self, template: TemplatePath, rt: Rt, principal: Caller) -> ResendTemplate:
        async with rt.pool.connection() as conn:
            detail = await service.get_template(conn, principal, template)
            sources = await resend_repo.get_sources(conn, principal.tenant_id, [detail.id])
        return _view(detail, sources.get(detail.id))

    @patch(
        "/{template:str}",
        summary="Update a template: a new draft version (Resend: templates.update)",
        responses=documented(400, 401, 403, 404, 409, 422),
    )
    async def update_template(
        self,
        template: TemplatePath,
        data: JSONBody[ResendUpdateTemplate],
        rt: Rt,
        principal: Caller,
        request: Request[Any, Any, Any],
    ) -> ResendTemplateRef:
        async with rt.pool.connection() as conn:
            detail = await service.get_template(conn, principal, template)
            stored = (await resend_repo.get_sources(conn, principal.tenant_id, [detail.id])).get(detail.id)
        given = msgspec.to_builtins(data)  # only the fields given (UNSET ones are left out)
        if stored is None and set(given) - {"name", "alias"}:
            raise ApiError(
                409,
                "conflict",
                "this template was made through /v1/templates (Jinja2 source); change its content there",
            )
        current = msgspec.to_builtins(_view(detail, stored))
        source = {k: current[k] for k in ("from", "subject", "reply_to", "html", "text", "variables")}
        for key in source:
            if key in given:
                source[key] = given[key]
        fields = _translated(source)
        content = any(k in given for k in ("subject", "html", "text", "variables"))
        if content:
            await _check(request, rt, fields)
        async with rt.pool.connection() as conn, conn.transaction():
            row = await repo.get_template(conn, principal.tenant_id, detail.id, ref_is_id=True, for_update=True)
            if row is None:
                raise not_found("template")
            if "name" in given or "alias" in given:
                try:
                    renamed = await repo.rename_template(
                        conn,
                        row.id,
                        name=given.get("name"),
                        alias=given.get("alias"),
                        set_alias="alias" in given,
                    )
                except psycopg.errors.UniqueViolation:
                    renamed = False
                if not renamed:
                    raise ApiError(
                        409, "conflict", f"the alias {given.get('alias')!r} is used by another template", param="alias"
                    )
            if content:
                version = CreateVersion(
                    subject=fields["subject"], html=fields["html"], text=fields["text"], variables=fields["variables"]
                )
                await service.create_version(conn, principal, row.id, version)
            await resend_repo.put_source(conn, principal.tenant_id, row.id, source)
        return ResendTemplateRef(id=row.id)

    @post(
        "/{template:str}/publish",
        status_code=200,
        summary="Publish the latest version (Resend: templates.publish)",
        description="409 `conflict` when the latest version is already published.",
        responses=documented(401, 403, 404, 409),
    )
    async def publish_template(self, template: TemplatePath, rt: Rt, principal: Caller) -> ResendTemplateRef:
        async with rt.pool.connection() as conn, conn.transaction():
            detail = await service.publish(conn, principal, template, None)
        return ResendTemplateRef(id=detail.id)

    @post(
        "/{template:str}/duplicate",
        status_code=200,
        summary="Duplicate a template as a new draft (Resend: templates.duplicate)",
        description="The copy is named `<name> (copy)`, has no alias, and the source of the latest version.",
        responses=documented(401, 403, 404),
    )
    async def duplicate_template(
        self, template: TemplatePath, rt: Rt, principal: Caller, request: Request[Any, Any, Any]
    ) -> ResendTemplateRef:
        async with rt.pool.connection() as conn:
            detail = await service.get_template(conn, principal, template)
            stored = (await resend_repo.get_sources(conn, principal.tenant_id, [detail.id])).get(detail.id)
        view = msgspec.to_builtins(_view(detail, stored))
        source = {k: view[k] for k in ("from", "subject", "reply_to", "html", "text", "variables")}
        if stored is None:  # a /v1 template: its Jinja2 version, copied as it is
            latest = detail.versions[0]
            fields: dict[str, Any] = {
                "subject": latest.subject,
                "html": latest.html,
                "text": latest.text,
                "variables": {k: msgspec.to_builtins(v) for k, v in latest.variables.items()},
            }
        else:
            fields = _translated(source)
        name = (detail.name + " (copy)")[:MAX_NAME]
        async with rt.pool.connection() as conn, conn.transaction():
            if stored is None:
                copy = await service.create_template(
                    conn,
                    principal,
                    CreateTemplate(
                        name=name,
                        subject=fields["subject"],
                        html=fields["html"],
                        text=fields["text"],
                        variables=fields["variables"],
                    ),
                )
                template_id = copy.id
            else:
                template_id = await _create(conn, principal, name, None, source, fields)
        return ResendTemplateRef(id=template_id)

    @delete(
        "/{template:str}",
        status_code=200,
        summary="Remove a template (Resend: templates.remove)",
        responses=documented(401, 403, 404),
    )
    async def remove_template(self, template: TemplatePath, rt: Rt, principal: Caller) -> ResendTemplateDeleted:
        async with rt.pool.connection() as conn, conn.transaction():
            deleted = await service.delete_template(conn, principal, template)
        return ResendTemplateDeleted(id=deleted.id)
