"""Field checks and constraint types more than one domain uses. The constraint types are
`Annotated[..., msgspec.Meta(...)]`, so the one declaration both validates the body and documents
the bound in OpenAPI."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final

import msgspec
from litestar.params import PathParameter
from mailroom_contracts.message import has_break_or_nul

from mailroom_api.errors import validation

MAX_NAME = 200
INT4_MAX: Final = 2**31 - 1  # Postgres `integer` columns

# A display name (tenant, key); `check_name` also refuses one that is only blanks.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
# Operator-set limits stored in int4 columns.
MonthlyQuota = Annotated[int, msgspec.Meta(ge=0, le=INT4_MAX)]
RateLimit = Annotated[int, msgspec.Meta(ge=1, le=INT4_MAX)]


def id_pattern(prefix: str) -> str:
    """The JSON Schema / regex pattern of an id with `prefix` (`mailroom_kit.ids`: 26 base32 chars)."""
    return f"^{prefix}_[0-9a-z]{{26}}$"


DomainId = Annotated[str, msgspec.Meta(pattern=id_pattern("dom"))]

# Path parameter name → the id prefix it must carry (a malformed id is simply not found).
PATH_ID_PREFIXES: Final = {
    "email_id": "msg",
    "domain_id": "dom",
    "key_id": "key",
    "tenant_id": "ten",
    "webhook_id": "wh",
    "delivery_id": "whd",
}
_ID_RES: Final = {name: re.compile(id_pattern(prefix)) for name, prefix in PATH_ID_PREFIXES.items()}


# Path parameters holding an id, the pattern documented (the guard answers 404 to any other value).
EmailIdPath = Annotated[str, PathParameter(pattern=id_pattern("msg"), description="`msg_…` id")]
DomainIdPath = Annotated[str, PathParameter(pattern=id_pattern("dom"), description="`dom_…` id")]
KeyIdPath = Annotated[str, PathParameter(pattern=id_pattern("key"), description="`key_…` id")]
TenantIdPath = Annotated[str, PathParameter(pattern=id_pattern("ten"), description="`ten_…` id")]


def is_well_formed_id(param: str, value: str) -> bool:
    """False when `value` cannot be an id of the kind path parameter `param` names."""
    pattern = _ID_RES.get(param)
    return pattern is None or pattern.fullmatch(value) is not None


# RFC 3339 date-time (SPEC: timestamps are RFC 3339): a date alone, a bare number or a missing
# offset is refused, where a lax parser would read `0.5` as a second after the epoch.
RFC3339: Final = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"


def parse_timestamp(value: str | None, param: str) -> datetime | None:
    """An RFC 3339 query value (its pattern already checked by the route) as an aware datetime."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:  # the pattern lets through e.g. month 13
        raise validation("not an RFC 3339 timestamp", param) from None


def check_name(name: str, param: str = "name") -> str:
    """A display name (tenant, key): trimmed, one line, not empty, at most MAX_NAME characters."""
    name = name.strip()
    if not name:
        raise validation("name is required", param)
    if has_break_or_nul(name):
        raise validation("names are one line: no line breaks or NUL", param)
    if len(name) > MAX_NAME:
        raise validation(f"name is longer than {MAX_NAME} characters", param)
    return name
