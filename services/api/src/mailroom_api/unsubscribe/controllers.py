"""`/v1/unsubscribe/{token}`: no API key (the signed token is the authority). POST is the RFC 8058
one-click request (mailbox providers send `List-Unsubscribe=One-Click` form-encoded; the body is
not needed) and the confirmation page's button; GET only shows that page."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.params import PathParameter
from mailroom_kit.http import add_log_fields

from mailroom_api.http.errors import documented
from mailroom_api.http.guards import Rt, unsubscribe_links_of
from mailroom_api.unsubscribe import service
from mailroom_api.unsubscribe.tokens import MAX_TOKEN_LENGTH

# Any other value (too long included) is simply not a token we signed: 404, like a malformed id.
Token = Annotated[
    str, PathParameter(description=f"the signed token of the link (at most {MAX_TOKEN_LENGTH} characters)")
]

# The page must not be cached, framed (clickjacking the button) or leak its URL as a Referer.
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def _secret(request: Request[Any, Any, Any]) -> bytes | None:
    """The key tokens are signed with (None: the broadcast stream is off, so no token is valid)."""
    links = unsubscribe_links_of(request)
    return links.secret if links is not None else None


def _log_without_token(request: Request[Any, Any, Any]) -> None:
    """The token is a capability naming an address: the request's log line shows the route instead."""
    add_log_fields(request.scope, path="/v1/unsubscribe/{token}")


class UnsubscribeController(Controller):
    path = "/v1/unsubscribe"
    tags = ["unsubscribe"]

    @post(
        "/{token:str}",
        status_code=200,
        media_type=MediaType.HTML,
        summary="Unsubscribe (RFC 8058 one-click): records an `unsubscribe` suppression",
        responses=documented(404),
    )
    async def unsubscribe(self, token: Token, rt: Rt, request: Request[Any, Any, Any]) -> Response[str]:
        _log_without_token(request)
        async with rt.pool.connection() as conn, conn.transaction():
            who = await service.unsubscribe(conn, _secret(request), token)
        return Response(service.done_page(who), media_type=MediaType.HTML, headers=_HEADERS)

    @get(
        "/{token:str}",
        media_type=MediaType.HTML,
        summary="The unsubscribe confirmation page (changes nothing; its button POSTs)",
        responses=documented(404),
    )
    async def confirmation(self, token: Token, request: Request[Any, Any, Any]) -> Response[str]:
        _log_without_token(request)
        who = service.check_token(_secret(request), token)
        return Response(service.confirmation_page(who), media_type=MediaType.HTML, headers=_HEADERS)
