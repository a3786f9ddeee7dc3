"""The pipeline bench's own HTTP: a lean keep-alive HTTP/1.1 client that POSTs emails and records each
202's time and id, and a webhook receiver that records when each email's webhook arrived. Both are
plain asyncio on prebuilt bytes, so the load generator costs little of the two cores it shares."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime

import msgspec


class _Hook(msgspec.Struct):
    type: str
    data: dict[str, object]


class _Accepted(msgspec.Struct):
    id: str


@dataclass
class Sent:
    accepted: dict[str, float] = field(default_factory=dict)  # email id → time.time() of its 202
    refused: dict[int, int] = field(default_factory=dict)  # status → count (0: connection error)


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value)
            elif lname == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def email_request(path: str, token: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def send_emails(
    host: str, port: int, request: bytes, *, count: int, connections: int, rate: float | None, sent: Sent
) -> float:
    """POST `count` emails over `connections` keep-alive connections, as fast as they are answered
    (`rate` None) or on an open-loop schedule of `rate` per second. Returns the seconds it took."""
    started = time.monotonic()
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        conn = Connection(host, port)
        try:
            while next_index < count:
                index = next_index
                next_index += 1
                if rate is not None:
                    delay = started + index / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                try:
                    status, body = await conn.request(request)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    conn.close()
                    sent.refused[0] = sent.refused.get(0, 0) + 1
                    continue
                if status == 202:
                    sent.accepted[msgspec.json.decode(body, type=_Accepted).id] = time.time()
                else:
                    sent.refused[status] = sent.refused.get(status, 0) + 1
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.monotonic() - started


@dataclass
class Receiver:
    """Records the first arrival time of each email's webhook of `event_type`, and repeats of a webhook-id."""

    event_type: str = "email.delivered"
    arrived: dict[str, float] = field(default_factory=dict)
    webhook_ids: set[str] = field(default_factory=set)
    redelivered: int = 0
    other: int = 0
    server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> Receiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hooks"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, webhook_id = 0, ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    lname = name.strip().lower()
                    if lname == b"content-length":
                        length = int(value)
                    elif lname == b"webhook-id":
                        webhook_id = value.strip().decode()
                body = await reader.readexactly(length)
                now = time.time()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                self._record(body, webhook_id, now)
        self._writers.discard(writer)
        writer.close()

    def _record(self, body: bytes, webhook_id: str, now: float) -> None:
        if webhook_id in self.webhook_ids:
            self.redelivered += 1
            return
        self.webhook_ids.add(webhook_id)
        try:
            hook = msgspec.json.decode(body, type=_Hook)
        except msgspec.DecodeError:
            self.other += 1
            return
        email_id = hook.data.get("email_id")
        if hook.type == self.event_type and isinstance(email_id, str):
            self.arrived.setdefault(email_id, now)
        else:
            self.other += 1

    async def stop(self) -> None:
        """End the dispatcher's keep-alive connections too: a handler still reading when the loop
        ends is cancelled, and Python 3.11's stream callback prints a traceback for it."""
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.close()
            await asyncio.sleep(0.1)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


class _Payload(msgspec.Struct):
    created_at: str
    data: dict[str, object]


@dataclass
class IsolationReceiver:
    """Two endpoints on one server (issue 19's isolation measurement): `/healthy` answers 200 at once
    and records, per email, when its webhook arrived and the event's `created_at`; `/hanging` counts
    each attempt, then holds the connection `hang_seconds` before answering 200 (the dispatcher's
    own 15 s time limit usually ends it first: the client closing is noticed, so `hanging_max_active`
    counts attempts really open at once)."""

    hang_seconds: float = 15.0
    healthy: dict[str, tuple[float, float]] = field(default_factory=dict)  # email id → (created_at, arrived)
    healthy_repeats: int = 0
    hanging_attempts: int = 0
    hanging_at: list[float] = field(default_factory=list)  # time.time() of each hanging attempt's arrival
    hanging_active: int = 0
    hanging_max_active: int = 0
    server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> IsolationReceiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    def url(self, path: str) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            while not self._release.is_set():
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1] if b" " in lines[0] else b""
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                now = time.time()
                if path == b"/hanging":
                    self.hanging_attempts += 1
                    self.hanging_at.append(now)
                    self.hanging_active += 1
                    self.hanging_max_active = max(self.hanging_max_active, self.hanging_active)
                    # Held until hang_seconds pass, the client gives up (EOF) or the bench stops.
                    waits = [asyncio.ensure_future(self._release.wait()), asyncio.ensure_future(reader.read(1))]
                    try:
                        done, _ = await asyncio.wait(waits, timeout=self.hang_seconds, return_when="FIRST_COMPLETED")
                    finally:
                        self.hanging_active -= 1
                        for w in waits:
                            w.cancel()
                        await asyncio.gather(*waits, return_exceptions=True)  # no read left waiting
                    if waits[1] in done:
                        break  # EOF: the dispatcher's time limit ended the attempt and closed the connection
                else:
                    self._record(body, now)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        self._writers.discard(writer)
        writer.close()

    def _record(self, body: bytes, now: float) -> None:
        try:
            hook = msgspec.json.decode(body, type=_Payload)
            created = datetime.fromisoformat(hook.created_at).timestamp()
        except (msgspec.DecodeError, ValueError):
            return
        email_id = hook.data.get("email_id")
        if not isinstance(email_id, str):
            return
        if email_id in self.healthy:
            self.healthy_repeats += 1
        else:
            self.healthy[email_id] = (created, now)

    async def stop(self) -> None:
        """End every connection (hanging ones too), so no handler is left to be cancelled."""
        self._release.set()
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.close()
            await asyncio.sleep(0.1)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
