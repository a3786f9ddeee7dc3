"""Every SQL statement on `templates` and `template_versions`, always within one tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from mailroom_kit.db import Conn, columns, fetch_all, fetch_one
from psycopg.types.json import Jsonb


class TemplateRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    alias: str | None
    latest_version: int
    published_version: int | None
    created_at: datetime
    updated_at: datetime


class VersionRow(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    subject: str
    html: str
    text: str | None
    variables: dict[str, Any]
    created_at: datetime
    published_at: datetime | None


COLUMNS = columns(TemplateRow)
VERSION_COLUMNS = columns(VersionRow)


def _where_ref(ref_is_id: bool) -> str:
    return "id = %(ref)s" if ref_is_id else "alias = %(ref)s"


async def insert_template(
    conn: Conn, *, template_id: str, tenant_id: str, name: str, alias: str | None, version: dict[str, Any]
) -> TemplateRow | None:
    """The template and its version 1 (a draft) in one statement; None when the alias is taken."""
    return await fetch_one(
        conn,
        TemplateRow,
        f"""
        WITH t AS (
            INSERT INTO templates (id, tenant_id, name, alias, latest_version)
            VALUES (%(id)s, %(tenant_id)s, %(name)s, %(alias)s, 1)
            ON CONFLICT (tenant_id, alias) WHERE alias IS NOT NULL DO NOTHING
            RETURNING {COLUMNS}
        ), v AS (
            INSERT INTO template_versions (template_id, version, subject, html, text, variables)
            SELECT t.id, 1, %(subject)s, %(html)s, %(text)s, %(variables)s FROM t
        )
        SELECT {COLUMNS} FROM t
        """,
        {
            "id": template_id,
            "tenant_id": tenant_id,
            "name": name,
            "alias": alias,
            "subject": version["subject"],
            "html": version["html"],
            "text": version["text"],
            "variables": Jsonb(version["variables"]),
        },
    )


async def get_template(
    conn: Conn, tenant_id: str, ref: str, *, ref_is_id: bool, for_update: bool = False
) -> TemplateRow | None:
    lock = " FOR UPDATE" if for_update else ""
    return await fetch_one(
        conn,
        TemplateRow,
        f"SELECT {COLUMNS} FROM templates WHERE tenant_id = %(tenant_id)s AND {_where_ref(ref_is_id)}{lock}",
        {"tenant_id": tenant_id, "ref": ref},
    )


async def get_versions(conn: Conn, template_id: str) -> list[VersionRow]:
    return await fetch_all(
        conn,
        VersionRow,
        f"SELECT {VERSION_COLUMNS} FROM template_versions WHERE template_id = %(id)s ORDER BY version DESC",
        {"id": template_id},
    )


async def get_version(conn: Conn, template_id: str, version: int) -> VersionRow | None:
    return await fetch_one(
        conn,
        VersionRow,
        f"SELECT {VERSION_COLUMNS} FROM template_versions WHERE template_id = %(id)s AND version = %(version)s",
        {"id": template_id, "version": version},
    )


async def list_templates(conn: Conn, tenant_id: str, *, before_id: str | None, limit: int) -> list[TemplateRow]:
    """Newest first (ids sort by creation), after the cursor."""
    return await fetch_all(
        conn,
        TemplateRow,
        f"""
        SELECT {COLUMNS} FROM templates
        WHERE tenant_id = %(tenant_id)s AND (%(before)s::text IS NULL OR id < %(before)s::text)
        ORDER BY id DESC LIMIT %(limit)s
        """,
        {"tenant_id": tenant_id, "before": before_id, "limit": limit},
    )


async def add_version(conn: Conn, template_id: str, version: dict[str, Any]) -> int:
    """Version latest + 1 (a draft); the caller holds the template's row lock."""
    cur = await conn.execute(
        """
        WITH t AS (
            UPDATE templates SET latest_version = latest_version + 1, updated_at = now()
            WHERE id = %(id)s RETURNING latest_version
        )
        INSERT INTO template_versions (template_id, version, subject, html, text, variables)
        SELECT %(id)s, t.latest_version, %(subject)s, %(html)s, %(text)s, %(variables)s FROM t
        RETURNING version
        """,
        {
            "id": template_id,
            "subject": version["subject"],
            "html": version["html"],
            "text": version["text"],
            "variables": Jsonb(version["variables"]),
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["version"])


async def publish(conn: Conn, template_id: str, version: int) -> None:
    await conn.execute(
        """
        WITH v AS (
            UPDATE template_versions SET published_at = coalesce(published_at, now())
            WHERE template_id = %(id)s AND version = %(version)s
        )
        UPDATE templates SET published_version = %(version)s, updated_at = now() WHERE id = %(id)s
        """,
        {"id": template_id, "version": version},
    )


async def rename_template(
    conn: Conn, template_id: str, *, name: str | None, alias: str | None, set_alias: bool
) -> bool:
    """Change the name and/or alias (issue 21, Resend's update); False when the alias is another
    template's of the tenant. The caller holds the template's row lock."""
    cur = await conn.execute(
        """
        UPDATE templates t SET name = coalesce(%(name)s, t.name),
            alias = CASE WHEN %(set_alias)s THEN %(alias)s ELSE t.alias END, updated_at = now()
        WHERE t.id = %(id)s AND NOT (%(set_alias)s AND %(alias)s::text IS NOT NULL AND EXISTS (
            SELECT 1 FROM templates o WHERE o.tenant_id = t.tenant_id AND o.alias = %(alias)s AND o.id <> t.id))
        """,
        {"id": template_id, "name": name, "alias": alias, "set_alias": set_alias},
    )
    return cur.rowcount == 1


async def delete_template(conn: Conn, tenant_id: str, ref: str, *, ref_is_id: bool) -> str | None:
    """Delete the template and its versions (cascade); its id, None when there was none."""
    cur = await conn.execute(
        f"DELETE FROM templates WHERE tenant_id = %(tenant_id)s AND {_where_ref(ref_is_id)} RETURNING id",
        {"tenant_id": tenant_id, "ref": ref},
    )
    row = await cur.fetchone()
    return None if row is None else str(row["id"])


# ----------------------------------------------------------------------------- the send path


class Resolved(msgspec.Struct, frozen=True, kw_only=True):
    """A send's `template` as found: the template (None: no such template of the tenant) and the
    version asked for, else the published one (`version` None: no such version / none published)."""

    ref: str
    asked: int  # the version asked for, 0 for "the published one"
    template_id: str
    published_version: int | None
    version: int | None
    published_at: datetime | None
    subject: str | None
    html: str | None
    text: str | None
    variables: dict[str, Any] | None


async def resolve(conn: Conn, tenant_id: str, wanted: list[tuple[str, int]]) -> list[Resolved]:
    """The templates and versions a send (or a batch) names, as (id or alias, version or 0), in
    ONE statement: the tenant's (id) primary-key probe or (tenant, alias) unique-index probe per
    reference, and the version's primary key. References that match nothing are left out."""
    return await fetch_all(
        conn,
        Resolved,
        """
        SELECT r.ref, r.asked, t.id AS template_id, t.published_version, v.version, v.published_at,
            v.subject, v.html, v.text, v.variables
        FROM unnest(%(refs)s::text[], %(versions)s::int[]) AS r (ref, asked)
        JOIN templates t ON t.tenant_id = %(tenant_id)s
            AND t.id = CASE WHEN r.ref LIKE 'tpl\\_%%' THEN r.ref END
        LEFT JOIN template_versions v
            ON v.template_id = t.id AND v.version = coalesce(nullif(r.asked, 0), t.published_version)
        UNION ALL
        SELECT r.ref, r.asked, t.id, t.published_version, v.version, v.published_at,
            v.subject, v.html, v.text, v.variables
        FROM unnest(%(refs)s::text[], %(versions)s::int[]) AS r (ref, asked)
        JOIN templates t ON t.tenant_id = %(tenant_id)s
            AND t.alias = CASE WHEN r.ref NOT LIKE 'tpl\\_%%' THEN r.ref END
        LEFT JOIN template_versions v
            ON v.template_id = t.id AND v.version = coalesce(nullif(r.asked, 0), t.published_version)
        """,
        {"tenant_id": tenant_id, "refs": [w[0] for w in wanted], "versions": [w[1] for w in wanted]},
    )
