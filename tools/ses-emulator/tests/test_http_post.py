"""The SNS look-alike's HTTP client against a scripted asyncio server: keep-alive reuse, a kept
connection the server closed, the answer framings (length, chunked, to close), 1xx, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from mailroom_ses_emulator.http_post import PostClient, PostError

Answer = Callable[[int], bytes]  # request number (0-based) -> raw answer bytes


class Server:
    def __init__(
        self, answer: Answer, *, close_after_answer: bool = False, silent: bool = False, drop_second: bool = False
    ) -> None:
        self.answer = answer
        self.drop_second = drop_second  # close, unanswered, a connection's second request
        self.close_after_answer = close_after_answer
        self.silent = silent
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                self.requests.append(head + await reader.readexactly(length))
                served += 1
                if self.drop_second and served == 2:
                    break
                if self.silent:
                    await asyncio.sleep(60)
                writer.write(self.answer(len(self.requests) - 1))
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(server: Server) -> AsyncIterator[str]:
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/sns?x=1"
    finally:
        srv.close()
        for w in server.writers:
            w.close()


def ok(_: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_posts_reuse_one_kept_connection_and_send_the_body_and_headers() -> None:
    server = Server(ok)
    client = PostClient(timeout=5, user_agent="Amazon Simple Notification Service Agent")
    async with serving(server) as url:
        assert [await client.post(url, b'{"a":1}', {"x-amz-sns-message-type": "Notification"}) for _ in range(3)] == [
            200
        ] * 3
    await client.aclose()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /sns?x=1 HTTP/1.1\r\n")
    assert b"\r\nx-amz-sns-message-type: Notification\r\n" in first and b"\r\nContent-Length: 7\r\n" in first
    assert b"User-Agent: Amazon Simple Notification Service Agent" in first and first.endswith(b'{"a":1}')


async def test_a_kept_connection_the_server_closed_is_not_a_failed_delivery() -> None:
    server = Server(ok)
    client = PostClient(timeout=5, user_agent="t")
    async with serving(server) as url:
        assert await client.post(url, b"1", {}) == 200
        for w in server.writers:  # the server's keep-alive ran out
            w.close()
        await asyncio.sleep(0.05)
        assert await client.post(url, b"2", {}) == 200
    await client.aclose()
    assert server.connections == 2 and len(server.requests) == 2


async def test_a_request_the_kept_connection_dropped_unanswered_is_sent_again_on_a_new_one() -> None:
    # The race the idle bound narrows but cannot close: the server closes as the request arrives.
    server = Server(ok, drop_second=True)
    client = PostClient(timeout=5, user_agent="t")
    async with serving(server) as url:
        assert await client.post(url, b"1", {}) == 200
        assert await client.post(url, b"2", {}) == 200
    await client.aclose()
    assert server.connections == 2 and [r[-1:] for r in server.requests] == [b"1", b"2", b"2"]


async def test_a_connection_idle_longer_than_the_bound_is_not_reused() -> None:
    server = Server(ok)
    client = PostClient(timeout=5, user_agent="t", idle_seconds=0.05)
    async with serving(server) as url:
        assert await client.post(url, b"1", {}) == 200
        await asyncio.sleep(0.1)
        assert await client.post(url, b"2", {}) == 200
    await client.aclose()
    assert server.connections == 2


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n", True),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\n\r\nread to close", False),
    ],
)
async def test_answer_framings(raw: bytes, kept: bool) -> None:
    server = Server(lambda _: raw, close_after_answer=not kept)
    client = PostClient(timeout=5, user_agent="t")
    async with serving(server) as url:
        status = int(raw.rsplit(b"HTTP/1.", 1)[1].split()[1])
        assert await client.post(url, b"1", {}) == status
        assert await client.post(url, b"2", {}) == status
    await client.aclose()
    assert server.connections == (1 if kept else 2)


async def test_no_answer_in_time_connection_refused_and_garbage_are_post_errors() -> None:
    silent = Server(ok, silent=True)
    async with serving(silent) as url:
        with pytest.raises(PostError, match="no answer within"):
            await PostClient(timeout=0.2, user_agent="t").post(url, b"1", {})
    garbage = Server(lambda _: b"SMTP ready\r\n\r\n")
    async with serving(garbage) as url:
        with pytest.raises(PostError, match="not an HTTP"):
            await PostClient(timeout=2, user_agent="t").post(url, b"1", {})
    with pytest.raises(PostError):
        await PostClient(timeout=2, user_agent="t").post(url, b"1", {})  # the server is gone: refused
