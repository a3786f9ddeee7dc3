"""Who may call a route, decided before the body is read: route handlers declare `opt["auth"]`
("tenant": a full-access API key; "tenant_sending": sending-access keys too; "operator": the
operator token; absent: public). The guard then checks what no handler should see: a path id that
is not a well-formed id of its kind (404 `not_found`, as for any unknown resource), a query
parameter the route does not take, given twice, or holding NUL (422 naming it), and strictly
decodes the JSON body (once: the handler's `data` is the Struct decoded here). All before any
database call but the key lookup, which goes through the process's `KeyCache`. Also the
dependencies routes ask for (`rt`, `settings`, `principal`) and, for a hot route that takes none,
the same values read from the request (`runtime_of`, `current_principal`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request, Response
from litestar.di import NamedDependency
from litestar.openapi.spec import SecurityRequirement
from litestar.routes import HTTPRoute
from litestar.types import Message, Scope
from litestar.utils.scope.state import ScopeState
from mailroom_kit.http import add_log_fields
from mailroom_kit.runtime import Runtime

from mailroom_api.auth.cache import KeyCache
from mailroom_api.auth.service import Principal, authenticate_cached, operator_allowed
from mailroom_api.checks import is_well_formed_id
from mailroom_api.emails.accept_group import AcceptGroups
from mailroom_api.emails.relay_wake import RelayWake
from mailroom_api.errors import ApiError, forbidden, not_found, validation
from mailroom_api.http.body import decode_body
from mailroom_api.limits.service import RateLimitedError, RateLimiter, RateState
from mailroom_api.settings import ApiSettings
from mailroom_api.unsubscribe.tokens import UnsubscribeLinks

AUTH_OPT = "auth"
TENANT = {AUTH_OPT: "tenant"}
TENANT_SENDING = {AUTH_OPT: "tenant_sending"}
OPERATOR = {AUTH_OPT: "operator"}
TENANT_SECURITY: list[SecurityRequirement] = [{"ApiKey": []}]
OPERATOR_SECURITY: list[SecurityRequirement] = [{"OperatorToken": []}]
PRINCIPAL_KEY = "principal"
RUNTIME_STATE = "mailroom_runtime"  # app.state keys, set by create_app
KEY_CACHE_STATE = "mailroom_key_cache"
RELAY_WAKE_STATE = "mailroom_relay_wake"
ACCEPT_GROUPS_STATE = "mailroom_accept_groups"
UNSUBSCRIBE_LINKS_STATE = "mailroom_unsubscribe_links"
RATE_LIMITER_STATE = "mailroom_rate_limiter"
# Issue 23: the request's RateLimit state (scope state key), for `rate_limit_headers`; and the
# handler opt naming the body field whose length a request costs (a batch counts its items).
RATE_STATE_KEY = "mailroom_rate"
RATE_ITEMS_OPT = "rate_items"

Rt = NamedDependency[Runtime]
Settings = NamedDependency[ApiSettings]
Caller = NamedDependency[Principal]


def make_before_request(
    rt: Runtime, settings: ApiSettings, keys: KeyCache, limiter: RateLimiter | None = None
) -> Callable[[Request[Any, Any, Any]], Awaitable[Response[None] | None]]:
    async def before_request(request: Request[Any, Any, Any]) -> Response[None] | None:
        if request.method == "OPTIONS":  # no auth: the methods of a path are public (OpenAPI says so)
            return _options(request)
        handler = request.route_handler
        auth = handler.opt.get(AUTH_OPT)
        authorization = request.headers.get("authorization")
        if auth == "operator":
            operator_allowed(settings.operator_token, authorization)
        elif auth in ("tenant", "tenant_sending"):
            principal = await authenticate_cached(rt.pool, keys, authorization)
            request.scope["state"][PRINCIPAL_KEY] = principal
            add_log_fields(request.scope, tenant_id=principal.tenant_id, api_key_id=principal.key_id)
            if principal.tenant_status == "blocked":  # issue 23: every tenant route, not only sends
                why = f": {principal.tenant_status_reason}" if principal.tenant_status_reason else ""
                raise forbidden("tenant_blocked", f"this account is blocked{why}")
            if limiter is not None:
                await _take(request, limiter, rt, principal, 1)
            if auth == "tenant":
                principal.require_full_access()
        for name, value in request.path_params.items():
            if isinstance(value, str) and not is_well_formed_id(name, value):
                raise not_found()
        _check_query(request)
        data_field = handler.parsed_data_field
        if data_field is not None:
            await decode_body(request, data_field.annotation)
            items = handler.opt.get(RATE_ITEMS_OPT)
            if limiter is not None and items is not None:  # the items beyond the request's own token
                body: Any = ScopeState.from_scope(request.scope).json
                extra = len(body if items == "." else getattr(body, items, ())) - 1  # ".": an array body
                if extra > 0:
                    await _take(request, limiter, rt, current_principal(request), extra)
        return None

    return before_request


async def _take(
    request: Request[Any, Any, Any], limiter: RateLimiter, rt: Runtime, principal: Principal, cost: int
) -> None:
    """Spend `cost` of the tenant's rate limit; the state goes on the response's headers, a 429's too."""
    try:
        state = await limiter.take(rt.pool, principal, cost)
    except RateLimitedError as exc:
        request.scope["state"][RATE_STATE_KEY] = exc.state
        raise
    request.scope["state"][RATE_STATE_KEY] = state


async def rate_limit_headers(message: Message, scope: Scope) -> None:
    """`before_send`: the RateLimit-* and X-RateLimit-* headers on every response of a request
    the rate limiter saw (every authenticated tenant request, errors included)."""
    if message["type"] != "http.response.start":
        return
    state = scope.get("state", {}).get(RATE_STATE_KEY)
    if isinstance(state, RateState):
        message["headers"] = [*message.get("headers", []), *state.headers()]  # type: ignore[typeddict-unknown-key]


_ALLOW: dict[int, tuple[object, str]] = {}


def _options(request: Request[Any, Any, Any]) -> Response[None]:
    """204 with every method of the path. (Litestar builds a route's OPTIONS answer when its first
    handler is added, so a path served by several handlers listed only the first one's method.)"""
    handler = request.route_handler
    cached = _ALLOW.get(id(handler))
    if cached is not None and cached[0] is handler:
        allow = cached[1]
    else:
        route = next(
            r for r in request.app.routes if isinstance(r, HTTPRoute) and any(h is handler for h in r.route_handlers)
        )
        allow = ", ".join(sorted(route.methods))
        _ALLOW[id(handler)] = (handler, allow)
    return Response(None, status_code=204, headers={"Allow": allow})


# Per handler; each entry keeps its handler alive, so an id is never reused by another app's handler.
_QUERY_NAMES: dict[int, tuple[object, frozenset[str]]] = {}


def _query_names(request: Request[Any, Any, Any]) -> frozenset[str]:
    """The query parameters the route's handler declares (computed once per handler)."""
    handler = request.route_handler
    cached = _QUERY_NAMES.get(id(handler))
    if cached is not None and cached[0] is handler:
        return cached[1]
    model = handler.create_kwargs_model(path_parameters=dict.fromkeys(request.path_params))  # type: ignore[arg-type]
    names = frozenset(p.field_alias for p in model.expected_query_params)
    _QUERY_NAMES[id(handler)] = (handler, names)
    return names


def _check_query(request: Request[Any, Any, Any]) -> None:
    known = _query_names(request)
    for name, values in request.query_params.dict().items():
        if name not in known:
            raise validation(f"unknown query parameter {name!r}", name)
        if len(values) > 1:
            raise validation(f"query parameter {name!r} given more than once", name)
        if any("\x00" in v for v in values):
            raise validation("query parameters must not contain NUL", name)


def runtime_of(request: Request[Any, Any, Any]) -> Runtime[ApiSettings]:
    rt: Runtime[ApiSettings] = request.app.state[RUNTIME_STATE]
    return rt


def key_cache_of(request: Request[Any, Any, Any]) -> KeyCache:
    cache: KeyCache = request.app.state[KEY_CACHE_STATE]
    return cache


def rate_limiter_of(request: Request[Any, Any, Any]) -> RateLimiter:
    limiter: RateLimiter = request.app.state[RATE_LIMITER_STATE]
    return limiter


def relay_wake_of(request: Request[Any, Any, Any]) -> RelayWake:
    wake: RelayWake = request.app.state[RELAY_WAKE_STATE]
    return wake


def accept_groups_of(request: Request[Any, Any, Any]) -> AcceptGroups:
    groups: AcceptGroups = request.app.state[ACCEPT_GROUPS_STATE]
    return groups


def unsubscribe_links_of(request: Request[Any, Any, Any]) -> UnsubscribeLinks | None:
    """Signs broadcast emails' unsubscribe links (None: the broadcast stream is not configured)."""
    links: UnsubscribeLinks | None = request.app.state.get(UNSUBSCRIBE_LINKS_STATE)
    return links


def current_principal(request: Request[Any, Any, Any]) -> Principal:
    principal = request.scope["state"].get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):  # a route without opt["auth"] asked for it
        raise ApiError(500, "internal", "internal error")
    return principal
