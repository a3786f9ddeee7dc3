"""Typed template variables: the declarations' own checks (at create / new version) and the data
of a send or preview checked against them before anything is rendered.

A declaration is keyed by a path: `name`, or `user.name` for a member of the object `user`
(declaring `user.name` makes `user` an object even when `user` itself is not declared). A send's
data must give every `required` variable, each with its type (`number` is an int or a float,
never a boolean; `null` counts as not given), and gets the `default` of those it leaves out. A key
the declarations do not know (at the top, or inside an object whose members are declared) is
refused or ignored (MAILROOM_API_TEMPLATE_EXTRA_VARIABLES). A template declaring no variables
takes any data. Errors are 422 `invalid_template_data` naming the path (`template.data.user.name`)."""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from mailroom_api.errors import ApiError, validation
from mailroom_api.http.body import msgspec_param
from mailroom_api.templates.schemas import VARIABLE_PATTERN, Variable

_PATH = re.compile(VARIABLE_PATTERN)

ExtraPolicy = Literal["error", "ignore"]

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "list": (list,),
}


def has_type(value: Any, kind: str) -> bool:
    if kind == "number" and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def invalid_data(message: str, param: str) -> ApiError:
    return ApiError(422, "invalid_template_data", message, param=param)


def _declaration(path: str, raw: Any) -> Variable:
    if not _PATH.fullmatch(path):
        raise validation(
            "a variable is a name, or a dotted path of names (user.name), of letters, digits, _", f"variables.{path}"
        )
    if not isinstance(raw, dict):
        raise validation("a declaration is an object {type, required?, default?}", f"variables.{path}")
    try:
        return msgspec.convert(raw, Variable)
    except msgspec.ValidationError as exc:
        message, param = msgspec_param(exc)
        raise validation(message, f"variables.{path}.{param}" if param else f"variables.{path}") from None


def declarations(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The declarations as stored (JSON), after checking them: a default has the variable's type,
    and a path's parents are objects. 422 `validation_error` naming `variables.<path>…`."""
    variables = {path: _declaration(path, value) for path, value in raw.items()}
    stored: dict[str, dict[str, Any]] = {}
    for path in sorted(variables):
        decl = variables[path]
        parts = path.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent in variables and variables[parent].type != "object":
                raise validation(
                    f"{parent} has members declared, so it must be of type object", f"variables.{parent}.type"
                )
        entry: dict[str, Any] = {"type": decl.type, "required": decl.required}
        if decl.default is not msgspec.UNSET and decl.default is not None:  # null: no default
            if not has_type(decl.default, decl.type):
                raise validation(f"the default must be of type {decl.type}", f"variables.{path}.default")
            entry["default"] = decl.default
        stored[path] = entry
    return stored


def check_data(
    variables: dict[str, dict[str, Any]], data: dict[str, Any], *, extra: ExtraPolicy, prefix: str
) -> dict[str, Any]:
    """`data` checked against the stored declarations, with the defaults filled in (a new dict;
    `data` is not changed). `prefix` is the param's start: `template.data` or `data`."""
    if not variables:
        return data
    out = dict(data)
    for path in sorted(variables):
        decl = variables[path]
        parts = path.split(".")
        param = f"{prefix}.{path}"
        container: dict[str, Any] | None = out
        for i, part in enumerate(parts[:-1]):
            assert container is not None
            child = container.get(part)
            if child is None:
                if decl.get("required"):
                    raise invalid_data(f"{path} is required", param)
                if "default" not in decl:
                    container = None
                    break
                child = {}
            elif not isinstance(child, dict):
                raise invalid_data("must be an object", f"{prefix}.{'.'.join(parts[: i + 1])}")
            child = dict(child)  # a copy: the defaults never change the request's data
            container[part] = child
            container = child
        if container is None:
            continue
        leaf = parts[-1]
        value = container.get(leaf)
        if value is None:
            if decl.get("required"):
                raise invalid_data(f"{path} is required", param)
            if "default" in decl:
                container[leaf] = decl["default"]
            continue
        if not has_type(value, decl["type"]):
            raise invalid_data(f"must be of type {decl['type']}", param)
    if extra == "error":
        _refuse_extra(variables, out, prefix)
    return out


def _refuse_extra(variables: dict[str, dict[str, Any]], data: dict[str, Any], prefix: str) -> None:
    """A key of `data` (or of an object whose members are declared) that no declaration names."""
    known = {tuple(path.split(".")) for path in variables}
    parents = {p[:i] for p in known for i in range(1, len(p))}
    stack: list[tuple[tuple[str, ...], dict[str, Any]]] = [((), data)]
    while stack:
        at, obj = stack.pop()
        for key, value in obj.items():
            path = (*at, key)
            if path in known and path not in parents:
                continue  # a declared leaf: its content is its own (an object or list of anything)
            if path not in known and path not in parents:
                raise invalid_data("is not a variable of this template", f"{prefix}.{'.'.join(path)}")
            if isinstance(value, dict):
                stack.append((path, value))
