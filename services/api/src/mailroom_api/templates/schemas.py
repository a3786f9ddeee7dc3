"""Template bodies: create, new version, publish, render preview, and how templates are read.
Also `TemplateRef`, the `template` field of a send (`POST /v1/emails` and batch items)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from mailroom_api.checks import INT4_MAX, Name
from mailroom_api.http.body import Request

MAX_SUBJECT_SOURCE = 4096  # the subject's template; the rendered subject is ≤ 998 (send rules)
MAX_BODY_SOURCE = 512 * 1024  # html / text templates, in characters
MAX_VARIABLES = 100
MAX_ALIAS = 64
ALIAS_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
# A variable path: `name` or `user.name` (nested object members), at most 5 levels.
VARIABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,4}$"

VariableType = Literal["string", "number", "boolean", "object", "list"]
Version = Annotated[int, msgspec.Meta(ge=1, le=INT4_MAX)]
Alias = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ALIAS, pattern=ALIAS_PATTERN)]
SubjectSource = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SUBJECT_SOURCE)]
BodySource = Annotated[str, msgspec.Meta(max_length=MAX_BODY_SOURCE)]


class Variable(Request, frozen=True, kw_only=True):
    """A declared variable: its type, whether a send must give it, and the value used when not."""

    type: VariableType
    required: bool = False
    default: Any = msgspec.UNSET


_VARIABLE_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"enum": ["string", "number", "boolean", "object", "list"]},
        "required": {"type": "boolean", "default": False},
        "default": {"description": "used when a send leaves the variable out; of the variable's type"},
    },
    "required": ["type"],
    "additionalProperties": False,
}
# Declarations are converted one by one (variables.declarations), so an error names
# `variables.<path>.type`; the document still describes each declaration.
Variables = Annotated[
    dict[str, Any],
    msgspec.Meta(
        max_length=MAX_VARIABLES,
        description="variable path (`name`, or `user.name` for a member of the object `user`, "
        f"pattern `{VARIABLE_PATTERN}`) → declaration",
        extra_json_schema={"additionalProperties": _VARIABLE_SCHEMA},
    ),
]


class CreateTemplate(Request, frozen=True, kw_only=True):
    name: Name
    alias: Alias | None = None
    subject: SubjectSource
    html: BodySource
    text: BodySource | None = None
    variables: Variables = {}


class CreateVersion(Request, frozen=True, kw_only=True):
    """A new draft version; a field left out is the latest version's (`text: null` removes the
    text part: sends then generate it from the html)."""

    subject: SubjectSource | msgspec.UnsetType = msgspec.UNSET
    html: BodySource | msgspec.UnsetType = msgspec.UNSET
    text: BodySource | msgspec.UnsetType | None = msgspec.UNSET
    variables: Variables | msgspec.UnsetType = msgspec.UNSET


class PublishTemplate(Request, frozen=True, kw_only=True):
    version: Version | None = None  # default: the latest draft


class RenderTemplate(Request, frozen=True, kw_only=True):
    version: Version | None = None  # default: the published version, else the latest
    data: dict[str, Any] = {}


class TemplateRef(Request, frozen=True, kw_only=True):
    """The `template` of a send: which template (id or alias), which version (default: the
    published one; a draft only with a test key), and the data it is rendered with."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ALIAS, description="`tpl_…` id or alias")]
    version: Version | None = None
    data: dict[str, Any] = {}


class VariableOut(msgspec.Struct, frozen=True, kw_only=True):
    type: VariableType
    required: bool
    default: Any = msgspec.UNSET


class TemplateVersion(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    status: Literal["draft", "published", "unpublished"]  # unpublished: published once, not now
    subject: str
    html: str
    text: str | None
    variables: dict[str, VariableOut]
    created_at: datetime
    published_at: datetime | None


class TemplateSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    alias: str | None
    latest_version: int
    published_version: int | None
    created_at: datetime
    updated_at: datetime


class TemplateDetail(TemplateSummary, frozen=True, kw_only=True):
    versions: list[TemplateVersion]  # newest first


class TemplateList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[TemplateSummary]
    next_cursor: str | None


class TemplateDeleted(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    deleted: bool


class Rendered(msgspec.Struct, frozen=True, kw_only=True):
    """A render preview: what a send with this data would get (text generated from html when the
    template has none)."""

    id: str
    version: int
    subject: str
    html: str
    text: str
