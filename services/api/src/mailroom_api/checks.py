"""Field checks more than one domain uses."""

from __future__ import annotations

from mailroom_api.errors import validation

MAX_NAME = 200


def check_name(name: str, param: str = "name") -> str:
    """A display name (tenant, key): trimmed, not empty, at most MAX_NAME characters."""
    name = name.strip()
    if not name:
        raise validation("name is required", param)
    if len(name) > MAX_NAME:
        raise validation(f"name is longer than {MAX_NAME} characters", param)
    return name
