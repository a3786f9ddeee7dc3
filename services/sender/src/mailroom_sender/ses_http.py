"""issue 15: SES v2 `SendEmail`, the sender's one hot call, without botocore's per-call machinery.

botocore spent about a quarter of the sender's CPU on each send (model-driven validation and
serialisation, event hooks, a urllib3 request in a thread, the response parser) for one POST of a
JSON document. This module makes that POST itself, on the event loop: the body encoded by msgspec
(the raw message base64, as botocore sends it), signed with AWS Signature Version 4 using the
botocore client's own credentials (so the whole credential chain, refreshes included, is
botocore's), over a small pool of keep-alive HTTP/1.1 connections. Everything else SES is asked
(configuration sets, GetAccount) still goes through botocore. With an HTTP(S) proxy configured
for the endpoint the provider keeps botocore for sends too (`lean_send_client` returns None).

What each failure means is decided as for botocore's (providers.classify): an answer with an
error status is `SesAnswered` (SES's error code from `x-amzn-ErrorType`, as botocore reads it);
no connection (refused, DNS, connect timeout, TLS handshake) is `SesUnreachable`: certainly not
sent; anything after the request started to go out (read timeout, connection closed, an answer
that is not HTTP) is `SesNoAnswer`: in doubt.

A pooled connection is never reused once idle for `max_idle_seconds` (below any server's
keep-alive timeout) or once the server has closed it, so a request never races the server's
close of an idle connection (the tail defect of issue 15).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import ssl
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import botocore.httpsession
import msgspec
from botocore.client import BaseClient

SEND_EMAIL_PATH = "/v2/email/outbound-emails"
# An SES answer is a small JSON document; an answer claiming more is not SES's.
MAX_ANSWER_BYTES = 1024 * 1024
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()


class SesAnswered(Exception):
    """SES answered with an error status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"SES {code}: {message}".strip())
        self.status = status
        self.code = code
        self.message = message


class SesUnreachable(Exception):
    """No request reached SES (no connection, no credentials): certainly not sent."""


class SesNoAnswer(Exception):
    """The request went out (or started to) and no valid answer came: SES may have the message."""


# ----------------------------------------------------------------------------- Signature V4


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_headers(
    *,
    method: str,
    host: str,
    path: str,
    body: bytes,
    region: str,
    service: str,
    access_key: str,
    secret_key: str,
    token: str | None,
    amz_date: str,
) -> dict[str, str]:
    """The signed headers of a request without a query string (AWS Signature Version 4): `host`,
    `content-type` (JSON), `x-amz-date`, `x-amz-security-token` with temporary credentials, and the
    `authorization` that signs them. `amz_date` is `YYYYMMDDTHHMMSSZ` (UTC)."""
    headers = {"content-type": "application/json", "host": host, "x-amz-date": amz_date}
    if token:
        headers["x-amz-security-token"] = token
    names = sorted(headers)
    signed = ";".join(names)
    canonical = "\n".join(
        [
            method,
            path,
            "",  # no query string
            "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in names),
            signed,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    day = amz_date[:8]
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return headers


# ----------------------------------------------------------------------------- HTTP/1.1


class _Connection:
    __slots__ = ("idle_since", "loop", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.idle_since = 0.0

    def usable(self, max_idle: float) -> bool:
        """Idle for less than `max_idle`, not closed by the server (its FIN has arrived), and of
        the running event loop."""
        return (
            time.monotonic() - self.idle_since < max_idle
            and not self.reader.at_eof()
            and not self.writer.is_closing()
            and self.loop is asyncio.get_running_loop()
        )

    def close(self) -> None:
        if self.loop.is_closed():
            return  # its transport went with the loop
        self.writer.close()


class _Answer(msgspec.Struct, frozen=True):
    status: int
    headers: dict[str, str]
    body: bytes


async def _read_answer(reader: asyncio.StreamReader) -> tuple[_Answer, bool]:
    """One HTTP/1.1 response (informational ones skipped) and whether the connection stays open.
    Raises ValueError for anything that is not a well-formed answer."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        status = int(rest[:3])
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x answer: {status_line[:40]!r}")
        headers: dict[str, str] = {}
        for line in lines:
            if line:
                name, sep, value = line.partition(":")
                if not sep:
                    raise ValueError("malformed header line")
                headers[name.strip().lower()] = value.strip()
        if status >= 200:
            break
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                break
            if len(body) + size > MAX_ANSWER_BYTES:
                raise ValueError("answer too large")
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return _Answer(status, headers, bytes(body)), keep
    if "content-length" in headers:
        length = int(headers["content-length"])
        if not 0 <= length <= MAX_ANSWER_BYTES:
            raise ValueError("answer too large")
        return _Answer(status, headers, await reader.readexactly(length)), keep
    body_until_close = await reader.read(MAX_ANSWER_BYTES + 1)
    if len(body_until_close) > MAX_ANSWER_BYTES:
        raise ValueError("answer too large")
    return _Answer(status, headers, body_until_close), False


class SendEmailClient:
    """`send_email(params)`: SES v2 SendEmail on a pool of at most `max_connections` keep-alive
    connections (the caller's concurrency beyond that waits for one)."""

    def __init__(
        self,
        *,
        endpoint_url: str,
        region: str,
        credentials: Any,
        signing_name: str = "ses",
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_connections: int = 20,
        max_idle_seconds: float = 2.0,
        ca_bundle: str | None = None,
    ) -> None:
        url = urlsplit(endpoint_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"unsupported SES endpoint URL: {endpoint_url!r}")
        self._hostname = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        default_port = (url.scheme == "https" and self._port == 443) or (url.scheme == "http" and self._port == 80)
        bracketed = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        self._host = bracketed if default_port else f"{bracketed}:{self._port}"
        self._path = (url.path.rstrip("/") or "") + SEND_EMAIL_PATH
        self._tls = ssl.create_default_context(cafile=ca_bundle) if url.scheme == "https" else None
        self._region = region
        self._service = signing_name
        self._credentials = credentials
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_idle = max_idle_seconds
        self._max_connections = max_connections
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._idle: list[_Connection] = []
        # For tests: connections opened so far.
        self.connections_opened = 0

    async def _frozen_credentials(self) -> Any:
        credentials = self._credentials
        if credentials is None:
            raise SesUnreachable("no AWS credentials")
        refresh_needed = getattr(credentials, "refresh_needed", None)
        if refresh_needed is not None and refresh_needed():
            # A refresh asks STS/IMDS over the network: never on the event loop.
            return await asyncio.to_thread(credentials.get_frozen_credentials)
        return credentials.get_frozen_credentials()

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be closed
            if conn.usable(self._max_idle):
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self._hostname,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._hostname if self._tls is not None else None,
                    limit=MAX_ANSWER_BYTES,
                )
        except TimeoutError as exc:
            raise SesUnreachable(f"connect timeout after {self._connect_timeout} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise SesUnreachable(f"could not connect to {self._host}: {exc}") from exc
        self.connections_opened += 1
        return _Connection(reader, writer)

    async def send_email(self, params: dict[str, Any]) -> dict[str, Any]:
        """POST the SendEmail document; SES's answer (`MessageId`) or one of this module's errors."""
        body = _ENCODER.encode(params)
        frozen = await self._frozen_credentials()
        headers = sigv4_headers(
            method="POST",
            host=self._host,
            path=self._path,
            body=body,
            region=self._region,
            service=self._service,
            access_key=frozen.access_key,
            secret_key=frozen.secret_key,
            token=frozen.token,
            amz_date=datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        )
        head = (
            f"POST {self._path} HTTP/1.1\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            + f"content-length: {len(body)}\r\nuser-agent: mailroom-sender\r\n\r\n"
        ).encode()
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self._max_connections))
        async with self._slots[1]:
            conn = self._take_idle() or await self._connect()
            try:
                conn.writer.write(head + body)
                async with asyncio.timeout(self._read_timeout):
                    await conn.writer.drain()
                    answer, keep = await _read_answer(conn.reader)
            except TimeoutError as exc:
                conn.close()
                raise SesNoAnswer(f"read timeout after {self._read_timeout} s") from exc
            except (OSError, EOFError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                conn.close()
                raise SesNoAnswer(
                    f"Connection was closed before we received a valid response ({type(exc).__name__})"
                ) from exc
            except BaseException:  # cancelled mid-request: the connection's state is unknown
                conn.close()
                raise
            if keep:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
        document = _parsed(answer)
        if not isinstance(document.get("MessageId"), str):
            raise SesNoAnswer(f"SES answered {answer.status} without a MessageId")
        return document

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _parsed(answer: _Answer) -> dict[str, Any]:
    """The answer's JSON document, or `SesAnswered` for an error status (code as botocore reads
    it: `x-amzn-ErrorType` up to its first `:`, else the body's `code`, after any `#`)."""
    try:
        document = _DECODER.decode(answer.body) if answer.body else {}
    except msgspec.DecodeError:
        document = None
    if 200 <= answer.status < 300:
        if not isinstance(document, dict):
            raise SesNoAnswer(f"SES answered {answer.status} without a JSON document")
        return document
    fields = document if isinstance(document, dict) else {}
    code = answer.headers.get("x-amzn-errortype") or str(fields.get("code", fields.get("Code", answer.status)))
    code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    message = str(fields.get("message", fields.get("Message", "")))
    raise SesAnswered(answer.status, code, message)


def _proxied(endpoint_url: str) -> bool:
    """An HTTP(S) proxy from the environment applies to the endpoint (botocore would use it)."""
    url = urlsplit(endpoint_url)
    proxies = urllib.request.getproxies()
    if url.scheme not in proxies:
        return False
    return not (url.hostname and urllib.request.proxy_bypass(url.hostname))


def lean_send_client(client: BaseClient, *, max_idle_seconds: float) -> SendEmailClient | None:
    """The lean SendEmail client for `client`'s endpoint, region, credentials, timeouts and pool size;
    None when a proxy is configured for the endpoint (sends then stay on botocore)."""
    endpoint_url = client.meta.endpoint_url
    if _proxied(endpoint_url):
        return None
    config = client.meta.config
    return SendEmailClient(
        endpoint_url=endpoint_url,
        region=client.meta.region_name,
        credentials=client._get_credentials(),
        signing_name=client.meta.service_model.signing_name or "ses",
        connect_timeout=float(config.connect_timeout),
        read_timeout=float(config.read_timeout),
        max_connections=int(config.max_pool_connections),
        max_idle_seconds=max_idle_seconds,
        ca_bundle=os.environ.get("AWS_CA_BUNDLE") or botocore.httpsession.get_cert_path(True),
    )
