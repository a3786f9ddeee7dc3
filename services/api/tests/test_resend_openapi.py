"""Contract: every route the app serves under `/resend` (issue 21) is in the OpenAPI document, with
each of its methods, and the document lists no `/resend` path the app does not serve."""

from __future__ import annotations

import re

import httpx
from mailroom_api.app import create_app
from mailroom_kit.runtime import Runtime

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]+)?\}")


async def test_every_resend_route_is_documented(client: httpx.AsyncClient, runtime: Runtime) -> None:
    app = create_app(runtime)
    served: dict[str, set[str]] = {}
    for route in app.routes:
        if route.path.startswith("/resend"):
            methods = {m.lower() for m in getattr(route, "methods", set())} - {"options", "head"}
            served.setdefault(_PARAM.sub(r"{\1}", route.path), set()).update(methods)
    assert "/resend/emails" in served and "/resend/emails/{email_id}/cancel" in served
    resp = await client.get("/schema/openapi.json")
    assert resp.status_code == 200
    documented = {p: set(ops) - {"parameters"} for p, ops in resp.json()["paths"].items() if p.startswith("/resend")}
    assert documented == served
