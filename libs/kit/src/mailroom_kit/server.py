"""The HTTP server every service runs (uvicorn), configured once: httptools (llhttp, C) parses
requests and the service's event loop is uvloop (see `runtime.main`); h11 remains available
(`http="h11"`) for a platform without the C parser.

Requests so malformed that they never reach the app (a bad `Content-Length`, a header block over the
limit, a broken request line) are answered by the server itself. uvicorn's own answer is a plain-text
400 without a request id; ours is the SPEC error body (`invalid_json`, the 400 code) with
`X-Request-Id`, and the refusal is logged like any other request (`http.request`, path unknown).
Both parsers refuse a request head (request line and headers) over `MAX_HEAD_BYTES`: h11 by its own
limit, llhttp has none, so the httptools protocol counts the bytes of an unfinished head itself.
"""

from __future__ import annotations

from typing import Any, Literal

import h11
import msgspec
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mailroom_kit.ids import new_id
from mailroom_kit.logging import get_logger
from mailroom_kit.metrics import HTTP_REQUESTS

log = get_logger("mailroom_kit.http")

# h11's default (and uvicorn's `h11_max_incomplete_event_size`): the largest request head accepted.
MAX_HEAD_BYTES = 16 * 1024


def _refusal(service: str, reason: str) -> tuple[str, bytes]:
    """The SPEC 400 body for a request the server refuses, counted and logged once."""
    rid = new_id("req")
    body = msgspec.json.encode(
        {"error": "invalid_json", "message": "malformed HTTP request", "param": None, "request_id": rid}
    )
    HTTP_REQUESTS.labels(service=service, method="OTHER", status="400").inc()
    # uvicorn's reason ("Invalid HTTP request received.") is fixed text, never request data.
    log.info("http.request", request_id=rid, method=None, path=None, status=400, reason=reason)
    return rid, body


class SpecErrorH11Protocol(H11Protocol):
    service = "service"

    def send_400_response(self, msg: str) -> None:
        rid, body = _refusal(self.service, msg)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid.encode()),
            (b"connection", b"close"),
        ]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body)):
            self.transport.write(self.conn.send(event))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()


class SpecErrorHttpToolsProtocol(HttpToolsProtocol):
    service = "service"
    # Bytes received of a request head that has not ended yet (llhttp itself has no limit).
    _head_bytes = 0
    _in_head = True

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self.send_400_response("request head too large")

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        rid, body = _refusal(self.service, msg)
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"x-request-id: %s\r\nconnection: close\r\n\r\n%s" % (len(body), rid.encode(), body)
        )
        self.transport.close()


def server_config(
    app: Any, *, service: str, host: str, port: int, http: Literal["httptools", "h11"] = "httptools", **extra: Any
) -> uvicorn.Config:
    """uvicorn for a Mailroom service: no access log (the kit writes one line per request), the
    kit's logging left in place, and SPEC error bodies for requests the server refuses itself."""
    base = SpecErrorHttpToolsProtocol if http == "httptools" else SpecErrorH11Protocol
    protocol = type(f"{service.title()}{base.__name__}", (base,), {"service": service})
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        log_config=None,
        access_log=False,
        lifespan="on",
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        **extra,
    )
