"""Requests the HTTP server refuses before the app sees them still get the SPEC error body and an
X-Request-Id (real uvicorn, real sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from litestar import Litestar, Request, get, post
from litestar.response import Stream
from mailroom_devstack.infra import free_port
from mailroom_kit.http import request_logging
from mailroom_kit.server import MAX_HEAD_BYTES, CoalescingTransport, server_config


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@get("/hello", sync_to_thread=False)
def hello() -> dict[str, str]:
    return {"hello": "world"}


@get("/stream")
async def stream() -> Stream:
    async def chunks() -> Any:
        for n in range(3):
            await asyncio.sleep(0.01)  # each chunk in an event-loop iteration of its own
            yield f"chunk{n};".encode()

    return Stream(chunks())


@post("/size", status_code=200)
async def size(request: Request[Any, Any, Any]) -> dict[str, int]:
    return {"size": len(await request.body())}


@pytest.fixture(params=["httptools", "h11"])
async def port(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    logging = request_logging("test")
    app = Litestar(
        [hello, size, stream], middleware=logging.middleware, before_send=logging.before_send, logging_config=None
    )
    chosen = free_port()
    server = _Server(server_config(app, service="test", host="127.0.0.1", port=chosen, http=request.param))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield chosen
    server.should_exit = True
    await asyncio.wait_for(task, 10)


async def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        # a header block past h11's 16 KiB limit (the server refuses it before it ends)
        b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000,
        b"GET /hello HTTP/1.1\r\nHost x\r\n\r\n",
        b"NOT A REQUEST LINE\r\n\r\n",
    ],
    ids=["bad content-length", "two content-lengths", "over-long header", "header without colon", "garbage"],
)
async def test_malformed_requests_get_the_spec_error_body(port: int, request_bytes: bytes) -> None:
    status, headers, body = await raw(port, request_bytes)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"].startswith("req_")
    error = json.loads(body)
    assert error == {
        "error": "invalid_json",
        "message": "malformed HTTP request",
        "param": None,
        "request_id": headers["x-request-id"],
    }


async def test_well_formed_requests_are_untouched(port: int) -> None:
    status, headers, body = await raw(port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and json.loads(body) == {"hello": "world"} and headers["x-request-id"].startswith("req_")


async def test_a_head_just_under_the_limit_is_served(port: int) -> None:
    padding = b"a" * (MAX_HEAD_BYTES - 200)
    request = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Pad: " + padding + b"\r\nConnection: close\r\n\r\n"
    status, _, body = await raw(port, request)
    assert status == 200 and json.loads(body) == {"hello": "world"}


async def test_a_large_body_in_the_same_packet_as_its_head_is_not_a_large_head(port: int) -> None:
    body = b"x" * 200_000
    request = b"POST /size HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
        len(body),
        body,
    )
    status, _, answer = await raw(port, request)
    assert status == 200 and json.loads(answer) == {"size": len(body)}


async def test_keep_alive_responses_each_arrive_whole(port: int) -> None:
    """The writes a response makes are held to the end of the loop iteration, never beyond it: on a
    kept-alive connection (no close to flush them) each answer arrives before the next request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(3):
            writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1])
            assert json.loads(await asyncio.wait_for(reader.readexactly(length), 5)) == {"hello": "world"}
    finally:
        writer.close()


async def test_a_streamed_body_arrives_chunk_by_chunk(port: int) -> None:
    status, _, body = await raw(port, b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and b"chunk0;" in body and b"chunk2;" in body


class _Recording:
    """Stands in for the socket transport: what CoalescingTransport hands it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_writes_of_one_iteration_go_out_as_one() -> None:
    inner = _Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"body")
    assert inner.writes == []  # held until the iteration ends
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    transport.write(b"later")
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"later"]
    transport.write(b"last words")
    transport.close()  # what is held goes out before the close
    assert inner.writes[2:] == [b"last words"] and inner.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left to write
    assert len(inner.writes) == 3
    assert transport.get_extra_info("peername") == "info:peername"
