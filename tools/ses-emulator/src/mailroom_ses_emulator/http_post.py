"""The SNS look-alike's HTTP client: POST a body, read the status, keep the connection.

SNS does little with a subscriber's answer: the status code decides delivered or retry. httpx did
that through httpcore's anyio backend, whose cancel scopes and per-call bookkeeping cost more than
the request itself (half the emulator's CPU in the pipeline bench, where the emulator shares the
machine with what is measured). This is HTTP/1.1 on asyncio's streams: keep-alive connections per
origin, reused only while younger than `idle_seconds` (below a server's keep-alive, so never one
the server is closing), a request on a reused connection that fails before any answer arrives is
sent once more on a new one (SNS delivers at least once anyway), answers with `Content-Length`,
chunked or read-to-close bodies (discarded, at most `MAX_BODY` bytes), 1xx answers skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024


class PostError(Exception):
    """The request got no valid answer (connect, timeout, protocol)."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    used_at: float

    def usable(self, idle_seconds: float) -> bool:
        return (
            time.monotonic() - self.used_at < idle_seconds
            and not self.reader.at_eof()
            and not self.writer.is_closing()
            and not getattr(self.reader, "_buffer", b"")  # bytes nobody asked for: the server is closing
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class PostClient:
    def __init__(self, *, timeout: float, user_agent: str, max_idle: int = 32, idle_seconds: float = 4.0) -> None:
        self.timeout = timeout
        self.user_agent = user_agent
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST `body` to `url`; the answer's status code. PostError when there is none."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PostError(f"unsupported URL {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        lines = [f"POST {target} HTTP/1.1", f"Host: {host}", f"User-Agent: {self.user_agent}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        try:
            async with asyncio.timeout(self.timeout):
                conn = self._take(origin)
                if conn is not None:
                    try:
                        return await self._exchange(origin, conn, request)
                    except _NoAnswer:
                        pass  # the server closed the kept connection before reading this request
                conn = await self._connect(origin)
                try:
                    return await self._exchange(origin, conn, request)
                except _NoAnswer as exc:
                    raise PostError(str(exc)) from None
        except TimeoutError:
            raise PostError(f"no answer within {self.timeout} s") from None
        except OSError as exc:
            raise PostError(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    # -- connections -----------------------------------------------------------------------
    def _take(self, origin: tuple[str, str, int]) -> _Connection | None:
        conns = self._idle.get(origin)
        while conns:
            conn = conns.pop()
            if conn.usable(self.idle_seconds):
                return conn
            conn.close()
        return None

    def _keep(self, origin: tuple[str, str, int], conn: _Connection) -> None:
        conns = self._idle.setdefault(origin, deque())
        conn.used_at = time.monotonic()
        conns.append(conn)
        while len(conns) > self.max_idle:
            conns.popleft().close()

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        reader, writer = await asyncio.open_connection(host, port, ssl=tls, limit=MAX_HEAD)
        return _Connection(reader, writer, time.monotonic())

    # -- one exchange ------------------------------------------------------------------------
    async def _exchange(self, origin: tuple[str, str, int], conn: _Connection, request: bytes) -> int:
        answered = False
        try:
            conn.writer.write(request)
            await conn.writer.drain()
            while True:
                line = await conn.reader.readline()
                if not line:
                    raise _NoAnswer("the connection closed before an answer")
                answered = True
                status, keep_alive, length, chunked = await self._head(conn.reader, line)
                if 100 <= status < 200:
                    continue  # 100 Continue and other informational answers precede the real one
                break
            if chunked:
                await self._skip_chunked(conn.reader)
            elif length is not None:
                await self._skip(conn.reader, length)
            else:
                keep_alive = False
                await self._skip_to_close(conn.reader)
        except _NoAnswer:
            conn.close()
            raise
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            conn.close()
            if not answered and isinstance(exc, (ConnectionError, asyncio.IncompleteReadError)):
                raise _NoAnswer(f"{type(exc).__name__}: {exc}") from None
            raise PostError(f"{type(exc).__name__}: {exc}") from None
        except BaseException:
            conn.close()  # cancelled or timed out mid-answer: the connection's state is unknown
            raise
        if keep_alive:
            self._keep(origin, conn)
        else:
            conn.close()
        return status

    @staticmethod
    async def _head(reader: asyncio.StreamReader, status_line: bytes) -> tuple[int, bool, int | None, bool]:
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(parts[1])
        keep_alive = parts[0] == b"HTTP/1.1"
        length: int | None = None
        chunked = False
        size = len(status_line)
        while True:
            line = await reader.readline()
            size += len(line)
            if size > MAX_HEAD:
                raise ValueError("answer head too long")
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise asyncio.IncompleteReadError(b"", None)
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.endswith(b"chunked")
            elif name == b"connection":
                keep_alive = b"close" not in value if keep_alive else b"keep-alive" in value
        if status in (204, 304) or 100 <= status < 200:
            length = 0
        return status, keep_alive, length, chunked

    @staticmethod
    async def _skip(reader: asyncio.StreamReader, length: int) -> None:
        if length > MAX_BODY:
            raise ValueError("answer body too long")
        await reader.readexactly(length)

    @classmethod
    async def _skip_chunked(cls, reader: asyncio.StreamReader) -> None:
        total = 0
        while True:
            size = int((await reader.readline()).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            total += size
            if total > MAX_BODY:
                raise ValueError("answer body too long")
            await reader.readexactly(size + 2)

    @staticmethod
    async def _skip_to_close(reader: asyncio.StreamReader) -> None:
        total = 0
        while chunk := await reader.read(65536):
            total += len(chunk)
            if total > MAX_BODY:
                raise ValueError("answer body too long")


class _NoAnswer(Exception):
    """Nothing came back on the connection: safe to send again on a new one."""
