"""The HTTP server every service runs (uvicorn, h11), configured once.

Requests so malformed that they never reach the app (a bad `Content-Length`, a header block over the
limit, a broken request line) are answered by the server itself. uvicorn's own answer is a plain-text
400 without a request id; ours is the SPEC error body (`invalid_json`, the 400 code) with
`X-Request-Id`, and the refusal is logged like any other request (`http.request`, path unknown).
"""

from __future__ import annotations

from typing import Any

import h11
import msgspec
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from mailroom_kit.ids import new_id
from mailroom_kit.logging import get_logger
from mailroom_kit.metrics import HTTP_REQUESTS

log = get_logger("mailroom_kit.http")


class SpecErrorH11Protocol(H11Protocol):
    service = "service"

    def send_400_response(self, msg: str) -> None:
        rid = new_id("req")
        body = msgspec.json.encode(
            {"error": "invalid_json", "message": "malformed HTTP request", "param": None, "request_id": rid}
        )
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
        HTTP_REQUESTS.labels(service=self.service, method="OTHER", status="400").inc()
        # uvicorn's reason ("Invalid HTTP request received.") is fixed text, never request data.
        log.info("http.request", request_id=rid, method=None, path=None, status=400, reason=msg)


def server_config(app: Any, *, service: str, host: str, port: int, **extra: Any) -> uvicorn.Config:
    """uvicorn for a Mailroom service: no access log (the kit writes one line per request), the
    kit's logging left in place, and SPEC error bodies for requests the server refuses itself."""
    protocol = type(f"{service.title()}H11Protocol", (SpecErrorH11Protocol,), {"service": service})
    return uvicorn.Config(
        app, host=host, port=port, http=protocol, log_config=None, access_log=False, lifespan="on", **extra
    )
