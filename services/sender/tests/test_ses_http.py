"""issue 15: the lean SendEmail client (ses_http.py): its Signature V4 is botocore's, byte for byte;
SES's answers and failures are classified as botocore's were; connections are kept alive and
reused; credentials are botocore's (refreshed off the event loop); a proxy keeps botocore."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from mailroom_sender.errors import InDoubtProviderError, PermanentProviderError, TransientProviderError
from mailroom_sender.mime import build_message
from mailroom_sender.providers import SesProvider, make_ses_client
from mailroom_sender.ses_http import SEND_EMAIL_PATH, SendEmailClient, lean_send_client, sigv4_headers
from mailroom_ses_emulator import EmulatorServer

from .conftest import CONFIG_SET, queued, sent_messages, ses_client

BODY = b'{"FromEmailAddress":"a@example.org","Content":{"Raw":{"Data":"aGk="}}}'


@pytest.mark.parametrize(
    ("endpoint", "token"),
    [
        ("https://email.eu-west-1.amazonaws.com", None),
        ("https://email.eu-west-1.amazonaws.com", "FwoGZXIvYXdzEJr//////////token+with/odd=chars"),
        ("http://127.0.0.1:4566", None),
    ],
)
def test_signature_is_botocores(endpoint: str, token: str | None) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    request = AWSRequest(
        method="POST", url=endpoint + SEND_EMAIL_PATH, data=BODY, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(credentials, "ses", "eu-west-1").add_auth(request)
    host = endpoint.split("://", 1)[1]
    ours = sigv4_headers(
        method="POST",
        host=host,
        path=SEND_EMAIL_PATH,
        body=BODY,
        region="eu-west-1",
        service="ses",
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        token=token,
        amz_date=request.headers["X-Amz-Date"],
    )
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours.get("x-amz-security-token") == request.headers.get("X-Amz-Security-Token")


async def test_sends_reuse_one_keep_alive_connection(emulator: EmulatorServer) -> None:
    provider = SesProvider(ses_client(emulator.url), configuration_set=CONFIG_SET, max_concurrency=4)
    assert provider._sender is not None  # the lean client sends, not botocore
    emails = [queued() for _ in range(3)]
    for ev in emails:
        result = await provider.send(ev, build_message(ev))
        [stored] = sent_messages(emulator, ev.email_id)
        assert stored["message_id"] == result.message_id
    assert provider._sender.connections_opened == 1
    provider.close()


class CannedServer:
    """A real HTTP server answering every request with the next of `answers` (raw bytes)."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.url = ""

    async def start(self) -> CannedServer:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            while self.answers:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                self.requests.append(head + await reader.readexactly(length))
                writer.write(self.answers.pop(0))
                await writer.drain()
            writer.close()

        self._server = await asyncio.start_server(answer, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)


def http(status: str, body: bytes, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def test_answers_are_classified_as_botocore_did() -> None:
    server = await CannedServer(
        [
            # The code is the header's up to ':' (SES appends a URL), after any '#'.
            http(
                "400 Bad Request",
                b'{"message":"Email address is not verified."}',
                "x-amzn-ErrorType: MessageRejected:http://internal.amazon.com/coral/com.amazonaws.ses/",
            ),
            http(
                "429 Too Many Requests",
                b'{"message":"Maximum sending rate exceeded."}',
                "x-amzn-ErrorType: com.amazonaws#TooManyRequestsException",
            ),
            http("503 Service Unavailable", b"<html>not json</html>"),
            http("400 Bad Request", b'{"code":"SomethingNew","message":"refused"}'),
            # Chunked, after an informational answer: still SES's MessageId.
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'9\r\n{"Message\r\n10\r\nId":"0100-chunk"\r\n1\r\n}\r\n0\r\n\r\n',
            http("200 OK", b"not json"),
            http("200 OK", b'{"Other":"field"}'),
        ]
    ).start()
    provider = SesProvider(ses_client(server.url), configuration_set=CONFIG_SET, max_concurrency=2)
    ev = queued()
    raw = build_message(ev)
    try:
        with pytest.raises(PermanentProviderError) as rejected:
            await provider.send(ev, raw)
        assert rejected.value.reason == "message_rejected" and "not verified" in rejected.value.message
        with pytest.raises(TransientProviderError, match="TooManyRequestsException"):
            await provider.send(ev, raw)
        with pytest.raises(TransientProviderError, match="503"):  # 5xx: SES did not take it
            await provider.send(ev, raw)
        with pytest.raises(PermanentProviderError, match="SomethingNew"):  # another 4xx: refused
            await provider.send(ev, raw)
        assert (await provider.send(ev, raw)).message_id == "0100-chunk"
        with pytest.raises(InDoubtProviderError):  # 200 without SES's document: it may have the message
            await provider.send(ev, raw)
        with pytest.raises(InDoubtProviderError, match="without a MessageId"):
            await provider.send(ev, raw)
    finally:
        provider.close()
        await server.stop()
    assert len(server.requests) == 7
    assert provider._sender is not None and provider._sender.connections_opened == 1  # all on one connection
    first = server.requests[0]
    assert first.startswith(f"POST {SEND_EMAIL_PATH} HTTP/1.1\r\n".encode())
    assert b"authorization: AWS4-HMAC-SHA256 Credential=x/" in first and b"x-amz-date: " in first


async def test_an_answer_cut_short_is_in_doubt() -> None:
    """The server closes mid-answer: SES may have taken the message."""
    server = await CannedServer([b'HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{"MessageId"']).start()
    provider = SesProvider(ses_client(server.url), configuration_set=CONFIG_SET, max_concurrency=2)
    ev = queued()
    try:
        with pytest.raises(InDoubtProviderError, match="closed before we received a valid response"):
            await provider.send(ev, build_message(ev))
    finally:
        provider.close()
        await server.stop()


async def test_credentials_are_botocores_and_refresh_off_the_event_loop(emulator: EmulatorServer) -> None:
    refreshed_in: list[threading.Thread] = []

    def refresh() -> dict[str, str]:
        refreshed_in.append(threading.current_thread())
        expiry = datetime.now(UTC) + timedelta(hours=1)
        return {"access_key": "AKIDNEW", "secret_key": "new", "token": "tok", "expiry_time": expiry.isoformat()}

    expired = {
        "access_key": "AKIDOLD",
        "secret_key": "old",
        "token": "old-tok",
        "expiry_time": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
    }
    credentials = RefreshableCredentials.create_from_metadata(expired, refresh, "test")
    client = SendEmailClient(endpoint_url=emulator.url, region="us-east-1", credentials=credentials)
    ev = queued()
    provider = SesProvider(ses_client(emulator.url), configuration_set=CONFIG_SET, max_concurrency=2)
    try:
        answer = await client.send_email(provider.request(ev, build_message(ev)))
    finally:
        client.close()
        provider.close()
    assert answer["MessageId"]
    assert len(refreshed_in) == 1 and refreshed_in[0] is not threading.main_thread()
    assert credentials.access_key == "AKIDNEW"


async def test_without_credentials_nothing_is_sent(emulator: EmulatorServer) -> None:
    client = SendEmailClient(endpoint_url=emulator.url, region="us-east-1", credentials=None)
    provider = SesProvider(ses_client(emulator.url), configuration_set=CONFIG_SET, max_concurrency=2)
    provider._sender = client
    ev = queued()
    try:
        with pytest.raises(TransientProviderError, match="no AWS credentials"):
            await provider.send(ev, build_message(ev))
    finally:
        provider.close()
    assert sent_messages(emulator, ev.email_id) == []


def test_a_proxy_for_the_endpoint_keeps_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_ses_client(region="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    assert lean_send_client(client, max_idle_seconds=2.0) is not None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert lean_send_client(client, max_idle_seconds=2.0) is None
    monkeypatch.setenv("NO_PROXY", "email.eu-west-1.amazonaws.com")
    assert lean_send_client(client, max_idle_seconds=2.0) is not None
