"""Templates: create, version, publish, delete, preview, and rendering a send's `template`.

A template has immutable versions; each new one is a draft until it is published, and the
template's `published_version` is what sends get by default. A send may name a version: one that
was ever published with any key, a draft only with a test key (previews of what is not live yet).
Sources are compiled (syntax-checked) before they are stored, and every render happens in the
render pool (templates/pool.py) with the data checked against the typed variables first.

The send path costs one indexed statement (`repository.resolve`, for a batch too) and one
round trip to a render worker per item; a send without a template costs nothing here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from mailroom_contracts.message import html_to_text
from mailroom_kit.db import Conn, Pool
from mailroom_kit.ids import has_prefix, new_id

from mailroom_api.auth.service import Principal
from mailroom_api.checks import check_name
from mailroom_api.emails.schemas import SendEmail
from mailroom_api.errors import ApiError, not_found, unavailable, validation
from mailroom_api.templates import repository as repo
from mailroom_api.templates.pool import RenderFailed, RenderPool, WorkerUnavailable
from mailroom_api.templates.schemas import (
    CreateTemplate,
    CreateVersion,
    Rendered,
    RenderTemplate,
    TemplateDeleted,
    TemplateDetail,
    TemplateList,
    TemplateRef,
    TemplateSummary,
    TemplateVersion,
    VariableOut,
)
from mailroom_api.templates.variables import ExtraPolicy, check_data, declarations, invalid_data

MAX_LIMIT = 100


def is_template_id(ref: str) -> bool:
    return has_prefix(ref, "tpl")


def _check_alias(alias: str | None) -> None:
    if alias is not None and alias.startswith("tpl_"):
        raise validation("an alias must not start with tpl_ (that is how ids start)", "alias")


# ----------------------------------------------------------------------------- reading


def _status(row: repo.TemplateRow, v: repo.VersionRow) -> str:
    if v.published_at is None:
        return "draft"
    return "published" if v.version == row.published_version else "unpublished"


def _version_out(row: repo.TemplateRow, v: repo.VersionRow) -> TemplateVersion:
    return TemplateVersion(
        version=v.version,
        status=_status(row, v),  # type: ignore[arg-type]
        subject=v.subject,
        html=v.html,
        text=v.text,
        variables={name: msgspec.convert(d, VariableOut) for name, d in v.variables.items()},
        created_at=v.created_at,
        published_at=v.published_at,
    )


def _summary(row: repo.TemplateRow) -> TemplateSummary:
    return TemplateSummary(**msgspec.structs.asdict(row))


async def _detail(conn: Conn, row: repo.TemplateRow) -> TemplateDetail:
    versions = await repo.get_versions(conn, row.id)
    return TemplateDetail(**msgspec.structs.asdict(row), versions=[_version_out(row, v) for v in versions])


async def _find(conn: Conn, principal: Principal, ref: str, *, for_update: bool = False) -> repo.TemplateRow:
    row = await repo.get_template(conn, principal.tenant_id, ref, ref_is_id=is_template_id(ref), for_update=for_update)
    if row is None:
        raise not_found("template")
    return row


async def get_template(conn: Conn, principal: Principal, ref: str) -> TemplateDetail:
    return await _detail(conn, await _find(conn, principal, ref))


async def list_templates(conn: Conn, principal: Principal, *, limit: int, cursor: str | None) -> TemplateList:
    if not 1 <= limit <= MAX_LIMIT:
        raise validation(f"limit must be between 1 and {MAX_LIMIT}", "limit")
    if cursor is not None and not is_template_id(cursor):
        raise validation("invalid cursor", "cursor")
    rows = await repo.list_templates(conn, principal.tenant_id, before_id=cursor, limit=limit + 1)
    page = rows[:limit]
    return TemplateList(data=[_summary(r) for r in page], next_cursor=page[-1].id if len(rows) > limit else None)


# ----------------------------------------------------------------------------- writing


async def check_sources(pool: RenderPool, parts: Mapping[str, str | None], *, max_output: int) -> None:
    """Compile the given sources (a syntax error → 422 naming the part). Call it before taking a
    database connection: it waits on a render worker."""
    given = {name: source for name, source in parts.items() if source is not None}
    if not given:
        return
    try:
        await pool.run(key=None, parts=given, data=None, max_output=max_output)
    except WorkerUnavailable as exc:
        raise unavailable(exc.message) from None
    except RenderFailed as exc:
        raise validation(exc.message, exc.part) from None


def _version_fields(subject: str, html: str, text: str | None, variables: dict[str, Any]) -> dict[str, Any]:
    if not html.strip():
        raise validation("html is required", "html")
    return {"subject": subject, "html": html, "text": text, "variables": variables}


async def create_template(conn: Conn, principal: Principal, body: CreateTemplate) -> TemplateDetail:
    """Version 1, a draft. 409 `conflict` when the alias is another template's. (Sources are
    compiled by the caller first, `check_sources`.)"""
    name = check_name(body.name)
    _check_alias(body.alias)
    fields = _version_fields(body.subject, body.html, body.text, declarations(body.variables))
    row = await repo.insert_template(
        conn, template_id=new_id("tpl"), tenant_id=principal.tenant_id, name=name, alias=body.alias, version=fields
    )
    if row is None:
        raise ApiError(409, "conflict", f"the alias {body.alias!r} is used by another template", param="alias")
    return await _detail(conn, row)


async def create_version(conn: Conn, principal: Principal, ref: str, body: CreateVersion) -> TemplateDetail:
    """A new draft: the given fields, the latest version's for the others (in the transaction
    that holds the template's row lock, so versions are numbered one by one)."""
    row = await _find(conn, principal, ref, for_update=True)
    latest = await repo.get_version(conn, row.id, row.latest_version)
    assert latest is not None
    variables = latest.variables if body.variables is msgspec.UNSET else declarations(body.variables)
    fields = _version_fields(
        latest.subject if body.subject is msgspec.UNSET else body.subject,
        latest.html if body.html is msgspec.UNSET else body.html,
        latest.text if body.text is msgspec.UNSET else body.text,
        variables,
    )
    await repo.add_version(conn, row.id, fields)
    return await _detail(conn, await _find(conn, principal, row.id))


async def publish(conn: Conn, principal: Principal, ref: str, version: int | None) -> TemplateDetail:
    """Make `version` (default: the latest draft) what sends get; a version published before may
    be published again (a rollback). 404 for no such version, 409 when there is no draft."""
    row = await _find(conn, principal, ref, for_update=True)
    if version is None:
        versions = await repo.get_versions(conn, row.id)
        drafts = [v.version for v in versions if v.published_at is None]
        if not drafts:
            raise ApiError(409, "conflict", "this template has no draft to publish; name a version", param="version")
        version = max(drafts)
    elif await repo.get_version(conn, row.id, version) is None:
        raise ApiError(404, "not_found", f"this template has no version {version}", param="version")
    await repo.publish(conn, row.id, version)
    return await _detail(conn, await _find(conn, principal, row.id))


async def delete_template(conn: Conn, principal: Principal, ref: str) -> TemplateDeleted:
    """The template and its versions; later sends naming it get 404 (the email log keeps the id)."""
    deleted = await repo.delete_template(conn, principal.tenant_id, ref, ref_is_id=is_template_id(ref))
    if deleted is None:
        raise not_found("template")
    return TemplateDeleted(id=deleted, deleted=True)


# ----------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class RenderedTemplate:
    """A send's template, rendered: applied to the send by `emails.service.prepare_email` (the
    request's own subject/html/text win) before any of the send's checks, which then apply to
    the rendered content. `text` None: the template has none (the send generates it from html)."""

    template_id: str
    version: int
    subject: str
    html: str
    text: str | None

    def apply(self, req: SendEmail) -> SendEmail:
        return msgspec.structs.replace(
            req,
            subject=self.subject if req.subject is None else req.subject,
            html=self.html if req.html is None else req.html,
            text=self.text if req.text is None else req.text,
        )


async def _render(
    pool: RenderPool, found: repo.Resolved, data: dict[str, Any], *, max_output: int, param: str
) -> RenderedTemplate:
    assert found.version is not None and found.subject is not None and found.html is not None
    parts = {"subject": found.subject, "html": found.html}
    if found.text is not None:
        parts["text"] = found.text
    try:
        out = await pool.run(key=f"{found.template_id}:{found.version}", parts=parts, data=data, max_output=max_output)
    except WorkerUnavailable as exc:
        raise unavailable(exc.message) from None
    except RenderFailed as exc:
        where = f" ({exc.part})" if exc.part else ""
        raise invalid_data(f"the template could not be rendered{where}: {exc.message}", param) from None
    # A subject renders to one line: the template's own line breaks (around tags) are folded.
    subject = " ".join(out["subject"].split())
    return RenderedTemplate(
        template_id=found.template_id, version=found.version, subject=subject, html=out["html"], text=out.get("text")
    )


def _chosen(found: repo.Resolved | None, ref: TemplateRef, principal: Principal, prefix: str) -> repo.Resolved:
    """The version a send gets, or why not (404 naming template.id / template.version)."""
    if found is None:
        raise ApiError(404, "not_found", "template not found", param=f"{prefix}.id")
    if found.version is None:
        if ref.version is not None:
            raise ApiError(404, "not_found", f"the template has no version {ref.version}", param=f"{prefix}.version")
        raise validation(
            "the template has no published version: publish one, or name a version (a draft with a test key)",
            f"{prefix}.version",
        )
    if found.published_at is None and principal.mode != "test":
        raise validation(
            f"version {found.version} is a draft: only a test key may send a draft (publish it to send it live)",
            f"{prefix}.version",
        )
    return found


async def render_send(
    db: Pool, pool: RenderPool, principal: Principal, req: SendEmail, *, extra: ExtraPolicy, max_output: int
) -> RenderedTemplate:
    """A single send's template resolved (one statement), its data checked and rendered.
    A database connection is held only for the read, not while rendering."""
    ref = req.template
    assert ref is not None
    principal.require_may_send()  # a paused tenant's templated send is 403, not its template's 404
    async with db.connection() as conn:
        found = await repo.resolve(conn, principal.tenant_id, [(ref.id, ref.version or 0)])
    chosen = _chosen(found[0] if found else None, ref, principal, "template")
    data = check_data(chosen.variables or {}, ref.data, extra=extra, prefix="template.data")
    return await _render(pool, chosen, data, max_output=max_output, param="template")


def batch_requests(items: list[Any]) -> dict[int, SendEmail]:
    """The batch items that name a template, as send bodies (an item that does not convert is
    left to the batch's own per-item validation, which refuses it with the same error)."""
    found: dict[int, SendEmail] = {}
    for index, item in enumerate(items):
        if isinstance(item, dict) and "template" in item:
            try:
                req = msgspec.convert(item, SendEmail)
            except msgspec.ValidationError:
                continue
            if req.template is not None:
                found[index] = req
    return found


async def render_batch(
    db: Pool,
    pool: RenderPool,
    principal: Principal,
    items: list[Any],
    *,
    extra: ExtraPolicy,
    max_output: int,
) -> dict[int, RenderedTemplate | ApiError]:
    """Each templated item rendered, or the error that item fails with (param within the item):
    one statement resolves every item's template, then each is rendered."""
    reqs = batch_requests(items)
    if not reqs:
        return {}
    principal.require_may_send()
    wanted = sorted({(r.template.id, r.template.version or 0) for r in reqs.values() if r.template is not None})
    async with db.connection() as conn:
        rows = await repo.resolve(conn, principal.tenant_id, wanted)
    by_ref = {(r.ref, r.asked): r for r in rows}
    out: dict[int, RenderedTemplate | ApiError] = {}
    for index, req in reqs.items():
        ref = req.template
        assert ref is not None
        try:
            chosen = _chosen(by_ref.get((ref.id, ref.version or 0)), ref, principal, "template")
            data = check_data(chosen.variables or {}, ref.data, extra=extra, prefix="template.data")
            out[index] = await _render(pool, chosen, data, max_output=max_output, param="template")
        except ApiError as exc:
            out[index] = exc
    return out


async def preview(
    db: Pool,
    pool: RenderPool,
    principal: Principal,
    ref: str,
    body: RenderTemplate,
    *,
    extra: ExtraPolicy,
    max_output: int,
) -> Rendered:
    """What a send would get (any version, drafts too: nothing is sent); default the published
    version, else the latest. Text is generated from html when the template has none."""
    async with db.connection() as conn:
        row = await _find(conn, principal, ref)
        version = body.version or row.published_version or row.latest_version
        found = await repo.resolve(conn, principal.tenant_id, [(row.id, version)])
    if not found or found[0].version is None:
        raise ApiError(404, "not_found", f"this template has no version {version}", param="version")
    chosen = found[0]
    data = check_data(chosen.variables or {}, body.data, extra=extra, prefix="data")
    rendered = await _render(pool, chosen, data, max_output=max_output, param="data")
    text = rendered.text if rendered.text is not None else html_to_text(rendered.html)
    return Rendered(
        id=rendered.template_id, version=rendered.version, subject=rendered.subject, html=rendered.html, text=text
    )
