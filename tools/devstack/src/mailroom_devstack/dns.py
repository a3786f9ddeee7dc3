"""A small authoritative DNS server for dev and tests (dnspython wire format, UDP and TCP on one
port), whose zone a test changes in-process or anyone changes over a tiny HTTP control API (and the
`python -m mailroom_devstack dns …` CLI that calls it).

It answers authoritatively for every name: records it holds, NXDOMAIN for names it has nothing
at, an empty NOERROR answer for a name that has records of other types, and a CNAME for any type
at a name that has one. Faults are injectable per name: `servfail` answers SERVFAIL, `timeout`
answers nothing; and every answer can be delayed (`Zone.latency`, a slow resolver). A UDP
answer too large for the query's buffer (512 bytes, or its EDNS size) is sent truncated (TC), so
resolvers retry over TCP, as with a real server.

Under `make run` (and the whole-stack test fixture) it also *auto-publishes*: it listens to
`mailroom.domain.created` on NATS and publishes every new domain's records at once (a dev
convenience, switchable with MAILROOM_DEV_DNS_AUTOPUBLISH=0), and removes them on
`mailroom.domain.deleted`. The verifier and the SES emulator resolve through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Fault = Literal["servfail", "timeout"]
TYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "NS")
TTL = 1  # tests and dev change records all the time: nobody should cache them for long


def normalize(name: str) -> str:
    return name.strip().lower().rstrip(".")


def txt_rdata(value: str) -> str:
    """A TXT value in zone-file syntax: split in ≤ 255-byte quoted strings (one record)."""
    raw = value.encode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return " ".join('"' + c.decode(errors="replace").replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def rdata_text(rtype: str, value: str, priority: int | None = None) -> str:
    """Zone-file rdata for a record as Mailroom shows it (CNAME/MX targets absolute, TXT quoted)."""
    rtype = rtype.upper()
    if rtype == "TXT":
        return value if value.startswith('"') else txt_rdata(value)
    if rtype == "CNAME":
        return normalize(value) + "."
    if rtype == "MX":
        parts = value.split()
        if len(parts) == 2:  # "10 host"
            return f"{int(parts[0])} {normalize(parts[1])}."
        return f"{priority if priority is not None else 10} {normalize(value)}."
    return value


@dataclass(frozen=True)
class Record:
    name: str
    type: str
    value: str  # zone-file rdata text

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "value": self.value}


class Zone:
    """The records the server answers with; safe to change from any thread while it serves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rrsets: dict[tuple[str, str], list[str]] = {}
        self._faults: dict[str, Fault] = {}
        # Seconds every answer waits before it is sent (UDP and TCP alike; others are served meanwhile).
        self.latency = 0.0

    def add(self, name: str, rtype: str, value: str, *, priority: int | None = None) -> None:
        """Add one record (`value` as Mailroom shows it, or zone-file rdata); a duplicate is ignored."""
        key = (normalize(name), self._type(rtype))
        text = rdata_text(key[1], value, priority)
        dns.rdata.from_text(dns.rdataclass.IN, key[1], text)  # refuse what no server could send
        with self._lock:
            values = self._rrsets.setdefault(key, [])
            if text not in values:
                values.append(text)

    def set(self, name: str, rtype: str, values: Sequence[str]) -> None:
        """Replace the records of that name and type (an empty list deletes them)."""
        key = (normalize(name), self._type(rtype))
        texts = [rdata_text(key[1], v) for v in values]
        for text in texts:
            dns.rdata.from_text(dns.rdataclass.IN, key[1], text)
        with self._lock:
            if texts:
                self._rrsets[key] = texts
            else:
                self._rrsets.pop(key, None)

    def delete(self, name: str, rtype: str | None = None) -> int:
        """Delete the records of `name` (of one type, or all); how many record sets went."""
        n = normalize(name)
        with self._lock:
            keys = [k for k in self._rrsets if k[0] == n and (rtype is None or k[1] == rtype.upper())]
            for k in keys:
                del self._rrsets[k]
        return len(keys)

    def fault(self, name: str, fault: Fault | None) -> None:
        """Make lookups of `name` fail (`servfail`, `timeout`), or answer normally again (None)."""
        with self._lock:
            if fault is None:
                self._faults.pop(normalize(name), None)
            else:
                self._faults[normalize(name)] = fault

    def clear(self) -> None:
        with self._lock:
            self._rrsets.clear()
            self._faults.clear()

    def records(self) -> list[Record]:
        with self._lock:
            return [Record(n, t, v) for (n, t), vs in sorted(self._rrsets.items()) for v in vs]

    def publish(self, records: Iterable[Any]) -> None:
        """Publish records shaped like the contracts' `DomainRecord` (name, type, value, priority)."""
        for r in records:
            self.add(r.name, r.type, r.value, priority=getattr(r, "priority", None))

    def unpublish(self, records: Iterable[Any]) -> None:
        for r in records:
            self.delete(r.name, r.type)

    @staticmethod
    def _type(rtype: str) -> str:
        t = rtype.upper()
        if t not in TYPES:
            raise ValueError(f"record type must be one of {', '.join(TYPES)}")
        return t

    # ------------------------------------------------------------------ answering

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        """The authoritative response to `query`; None = send nothing (an injected timeout)."""
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname = normalize(question.name.to_text())
        qtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            fault = self._faults.get(qname)
            exists = any(k[0] == qname for k in self._rrsets)
            cname = self._rrsets.get((qname, "CNAME"))
            values = self._rrsets.get((qname, qtype))
        if fault == "timeout":
            return None
        if fault == "servfail":
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        if cname and qtype != "CNAME":
            qtype, values = "CNAME", cname
        if values:
            response.answer.append(dns.rrset.from_text_list(question.name, TTL, "IN", qtype, values))
        elif not exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response


def _udp_limit(query: dns.message.Message) -> int:
    return max(512, query.payload) if query.edns >= 0 else 512


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        response = self.zone.answer(query)
        if response is None or self.transport is None:
            return
        try:
            wire = response.to_wire(max_size=_udp_limit(query))
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.AA | dns.flags.TC
            wire = truncated.to_wire()
        if self.zone.latency > 0:
            asyncio.get_running_loop().call_later(self.zone.latency, self.transport.sendto, wire, addr)
        else:
            self.transport.sendto(wire, addr)


async def _serve_tcp(zone: Zone, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, dns.exception.DNSException):
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            query = dns.message.from_wire(await reader.readexactly(length))
            response = zone.answer(query)
            if response is None:
                continue
            if zone.latency > 0:
                await asyncio.sleep(zone.latency)
            wire = response.to_wire()
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
    writer.close()


class DnsServer:
    """UDP and TCP on `host:port` (0 = a free port, the same for both), plus the HTTP control API on
    `control_port` (None = none; 0 = a free port), served from a thread of their own."""

    def __init__(
        self,
        zone: Zone | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        control_port: int | None = None,
        nats_url: str | None = None,
    ) -> None:
        self.zone = zone or Zone()
        self.host = host
        self.port = port
        self.control_port = control_port
        self.nats_url = nats_url  # set: auto-publish new domains' records
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._http: ThreadingHTTPServer | None = None
        self._closers: list[Any] = []
        self._publisher_ready = threading.Event()
        self._manual: set[str] = set()  # domains whose records auto-publish leaves alone

    def manual(self, domain: str) -> None:
        """Leave the records of `domain` (created later) to the caller: auto-publish skips it, so a
        test can publish them one by one (the stack's server is shared: one domain, not a switch)."""
        self._manual.add(normalize(domain))

    def start(self) -> DnsServer:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._bind())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                started.set()
                return
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="devstack-dns", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        if self.control_port is not None:
            self._http = ThreadingHTTPServer((self.host, self.control_port), _control_handler(self.zone))
            self.control_port = self._http.server_address[1]
            threading.Thread(target=self._http.serve_forever, name="devstack-dns-http", daemon=True).start()
        if self.nats_url:
            asyncio.run_coroutine_threadsafe(self._autopublish(self.nats_url), self._loop)
            self._publisher_ready.wait(10)
        return self

    async def _bind(self) -> None:
        for _ in range(20):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self.host, self.port))
            port = sock.getsockname()[1]
            try:
                server = await asyncio.start_server(
                    lambda r, w: _serve_tcp(self.zone, r, w), self.host, port, reuse_address=True
                )
            except OSError:
                sock.close()
                if self.port:
                    raise
                continue
            transport, _ = await self._loop.create_datagram_endpoint(lambda: _Udp(self.zone), sock=sock)
            self.port = port
            self._closers = [transport.close, server.close]
            return
        raise OSError("no free port for UDP and TCP at once")

    async def _autopublish(self, nats_url: str) -> None:
        """Publish every created domain's records; remove a deleted one's (core NATS: sees what
        JetStream stores on those subjects)."""
        import nats
        from mailroom_contracts import decode_event, events, subjects

        async def on_message(msg: Any) -> None:
            with contextlib.suppress(Exception):
                event = decode_event(msg.data)
                if isinstance(event, events.DomainCreated) and event.domain.name not in self._manual:
                    self.zone.publish(event.domain.records)
                elif isinstance(event, events.DomainDeleted):
                    self.zone.unpublish(event.domain.records)

        try:
            nc = await nats.connect(nats_url, max_reconnect_attempts=-1)
            await nc.subscribe(subjects.DOMAIN_CREATED, cb=on_message)
            await nc.subscribe(subjects.DOMAIN_DELETED, cb=on_message)
            await nc.flush()
            self._closers.append(lambda: asyncio.ensure_future(nc.close()))
        finally:
            self._publisher_ready.set()

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._thread is not None:

            def close() -> None:
                for closer in self._closers:
                    with contextlib.suppress(Exception):
                        closer()
                for task in asyncio.all_tasks(self._loop):  # open TCP connections
                    task.cancel()
                self._loop.call_later(0.05, self._loop.stop)

            self._loop.call_soon_threadsafe(close)
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.control_port}"


def _control_handler(zone: Zone) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """GET /records; POST /records {name,type,value} (add); PUT /records {name,type,values}
        (replace); DELETE /records?name=…[&type=…]; POST /faults {name, fault: servfail|timeout|null}."""

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            data = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(data, dict):
                raise ValueError("the body must be a JSON object")
            return data

        def _records(self) -> None:
            self._reply(200, {"records": [r.to_json() for r in zone.records()]})

        def do_GET(self) -> None:
            if urlparse(self.path).path == "/records":
                self._records()
            else:
                self._reply(404, {"error": "not_found"})

        def _change(self, method: str) -> None:
            url = urlparse(self.path)
            try:
                if url.path == "/records" and method == "DELETE":
                    query = parse_qs(url.query)
                    name = (query.get("name") or [""])[0]
                    if not name:
                        raise ValueError("name is required")
                    types = query.get("type")
                    rtype = types[0] if types else None
                    self._reply(200, {"deleted": zone.delete(name, rtype)})
                    return
                body = self._body()
                if url.path == "/records" and method == "POST":
                    zone.add(str(body["name"]), str(body["type"]), str(body["value"]))
                elif url.path == "/records" and method == "PUT":
                    zone.set(str(body["name"]), str(body["type"]), [str(v) for v in body["values"]])
                elif url.path == "/faults" and method == "POST":
                    fault = body.get("fault")
                    if fault not in ("servfail", "timeout", None):
                        raise ValueError("fault must be servfail, timeout or null")
                    zone.fault(str(body["name"]), fault)
                else:
                    self._reply(404, {"error": "not_found"})
                    return
            except (KeyError, ValueError, TypeError, dns.exception.DNSException) as exc:
                self._reply(422, {"error": "validation_error", "message": str(exc)})
                return
            self._records()

        def do_POST(self) -> None:
            self._change("POST")

        def do_PUT(self) -> None:
            self._change("PUT")

        def do_DELETE(self) -> None:
            self._change("DELETE")

    return Handler
