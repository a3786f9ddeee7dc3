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

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Sequence
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
    HTTP_REQUESTS.labels(service=service, route="unmatched", method="OTHER", status="400").inc()
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


class CoalescingTransport:
    """The connection's transport, with the writes of one event-loop iteration sent together.

    uvicorn writes a response's head and its body with a `write` each, so every response cost two
    send syscalls (on loopback each also runs the receiving end's TCP processing) and woke the
    client twice (issue 15). Held writes go out, joined, in a callback at the end of the current
    iteration (a head and a body sent one after the other by the app share it; a streamed body's
    later chunks go out in their own iterations), or at once when the connection closes. Every
    other attribute is the transport's own."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = [data]
            self._loop.call_soon(self.flush)
        else:
            self._held.append(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held:
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class SpecErrorHttpToolsProtocol(HttpToolsProtocol):
    service = "service"
    # Bytes received of a request head that has not ended yet (llhttp itself has no limit).
    _head_bytes = 0
    _in_head = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

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


# --------------------------------------------------------------------------- several processes
# `serve(processes=N)` with N > 1: the process started (the parent) runs no service itself; it
# starts N copies of its own command line (children), each a whole service runtime (HTTP, relay,
# consumers: all safe to replicate) listening on the same port with SO_REUSEPORT, so the kernel
# spreads connections over them. The parent forwards SIGTERM/SIGINT, and exits 1 as soon as a child
# dies on its own (after stopping the others), so the supervisor restarts the whole service.
# Children die with the parent however it dies (PR_SET_PDEATHSIG, set by the child itself, then
# a check that the parent it was started by is still its parent).

PARENT_ENV = "MAILROOM_PARENT_PID"  # set by the parent for its children only
PROCESS_INDEX_ENV = "MAILROOM_PROCESS_INDEX"
_PR_SET_PDEATHSIG = 1
CHILD_STOP_SECONDS = 20.0


def is_child_process() -> bool:
    return PARENT_ENV in os.environ


def process_index() -> int | None:
    """0..N-1 in a child of a multi-process service, None otherwise."""
    value = os.environ.get(PROCESS_INDEX_ENV)
    return int(value) if value is not None else None


def die_with_parent() -> None:
    """In a child: get SIGTERM when the parent dies (Linux); exit at once if it is already gone."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if str(os.getppid()) != os.environ.get(PARENT_ENV):  # the parent died before the prctl
        log.error("service.orphaned", parent=os.environ.get(PARENT_ENV))
        sys.exit(1)


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket that every process of the service binds on the same port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


async def run_children(count: int, *, command: Sequence[str] | None = None) -> int:
    """Run `count` children (`command`, default: this process's own command line) until SIGTERM or
    SIGINT (forwarded to them; exit code 0 if they all stopped cleanly) or until one of them exits
    on its own (the others are stopped; exit code 1)."""
    argv = list(command if command is not None else sys.orig_argv)
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    children: list[asyncio.subprocess.Process] = []
    died: list[asyncio.subprocess.Process] = []
    try:
        for index in range(count):
            env = dict(os.environ, **{PARENT_ENV: str(os.getpid()), PROCESS_INDEX_ENV: str(index)})
            children.append(await asyncio.create_subprocess_exec(*argv, env=env))
        log.info("service.processes_started", processes=count, pids=[c.pid for c in children])
        exits = {asyncio.ensure_future(c.wait()): c for c in children}
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait([stopper, *exits], return_when=asyncio.FIRST_COMPLETED)
        died = [exits[t] for t in done if t is not stopper]
        for child in died:
            log.error("service.process_died", pid=child.pid, returncode=child.returncode)
    finally:
        forward = received[0] if received else signal.SIGTERM
        for child in children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(forward)
        waiting = [asyncio.ensure_future(c.wait()) for c in children]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=CHILD_STOP_SECONDS)
            for child in children:
                if child.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.kill()
            if late:
                await asyncio.wait(late)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if died:
        return 1
    # A copy the forwarded signal ended before it had set up its own handling stopped cleanly too.
    return 0 if all(c.returncode in (0, -forward) for c in children) else 1
