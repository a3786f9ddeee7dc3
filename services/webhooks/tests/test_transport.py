"""The pinned transport: it connects to the address it checked, keeps TLS verification on the
URL's host name, and refuses addresses outside the policy — against real local servers."""

from __future__ import annotations

import ipaddress
from typing import Any

import httpx
import pytest
from mailroom_webhooks.netpolicy import AddressPolicy
from mailroom_webhooks.transport import AddressNotAllowed, build_client

LOOPBACK = AddressPolicy([ipaddress.ip_network("127.0.0.0/8")])


def fixed(table: dict[str, list[str]]) -> Any:
    """A name → addresses table standing in for DNS (names under .test/.invalid never resolve)."""

    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"{host} not found")
        return table[host]

    return resolve


async def test_connects_to_the_checked_address_with_the_original_host_header(receiver: Any) -> None:
    resolver = fixed({"rebind.invalid": ["10.0.0.7", "127.0.0.1"]})  # the refused address is skipped
    async with build_client(LOOPBACK, timeout=5, resolver=resolver) as client:
        response = await client.post(f"http://rebind.invalid:{receiver.port}/pinned", content=b"{}")
    assert response.status_code == 200
    [post] = receiver.posts("/pinned")
    assert post.headers["host"] == f"rebind.invalid:{receiver.port}"


@pytest.mark.parametrize(
    ("addresses", "policy"),
    [
        (["127.0.0.1"], AddressPolicy()),
        (["10.0.0.1", "192.168.1.1", "100.64.0.9", "::1", "fe80::1", "0.0.0.0"], AddressPolicy()),
        # Metadata addresses need an exact entry: a wide link-local allow-list does not open them.
        (["169.254.169.254"], AddressPolicy([ipaddress.ip_network("169.254.0.0/16")])),
        (["fd00:ec2::254"], AddressPolicy([ipaddress.ip_network("fd00::/8")])),
    ],
)
async def test_refuses_without_connecting(receiver: Any, addresses: list[str], policy: AddressPolicy) -> None:
    async with build_client(policy, timeout=5, resolver=fixed({"evil.invalid": addresses})) as client:
        with pytest.raises(AddressNotAllowed):
            await client.post(f"http://evil.invalid:{receiver.port}/x", content=b"{}")
    assert receiver.posts("/x") == []


async def test_https_is_pinned_and_still_verifies_the_host_name(tls_receiver: Any) -> None:
    server, ca = tls_receiver
    resolver = fixed({"hook.test": ["127.0.0.1"], "wrong.test": ["127.0.0.1"]})
    async with build_client(LOOPBACK, timeout=5, resolver=resolver, ssl_context=ca.client_context()) as client:
        ok = await client.post(f"https://hook.test:{server.port}/tls", content=b"{}")
        assert ok.status_code == 200
        # Same address, but the certificate does not name wrong.test: TLS verification still applies.
        with pytest.raises(httpx.ConnectError):
            await client.post(f"https://wrong.test:{server.port}/tls", content=b"{}")
    [post] = server.posts("/tls")
    assert post.headers["host"] == f"hook.test:{server.port}"


async def test_redirects_are_not_followed(receiver: Any, h: Any) -> None:
    receiver.script("/moved", h.Reply(307, headers={"location": f"http://127.0.0.1:{receiver.port}/elsewhere"}))
    async with build_client(LOOPBACK, timeout=5) as client:
        response = await client.post(receiver.url("/moved"), content=b"{}")
    assert response.status_code == 307
    assert receiver.posts("/elsewhere") == []


async def test_unresolvable_host_is_a_connect_error() -> None:
    async with build_client(LOOPBACK, timeout=5, resolver=fixed({})) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post("http://nowhere.invalid/x", content=b"{}")


async def _closing_server(served: list[int]) -> Any:
    """Answers each request with 200 and a kept-alive connection, then closes it 50 ms later (as a
    server whose idle timeout is short does)."""
    import asyncio

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1])
        await reader.readexactly(length)
        served.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_a_connection_the_server_closed_is_not_reused() -> None:
    """The pool asks the stream whether an idle connection has received anything (the server's
    close) before reusing it; a stream that said no would send the next delivery into a closed
    socket and fail it."""
    import asyncio

    served: list[int] = []
    server = await _closing_server(served)
    port = server.sockets[0].getsockname()[1]
    try:
        async with build_client(LOOPBACK, timeout=5, resolver=fixed({"hook.test": ["127.0.0.1"]})) as client:
            for _ in range(3):
                response = await client.post(f"http://hook.test:{port}/", content=b"{}")
                assert response.status_code == 200 and response.content == b"ok"
                await asyncio.sleep(0.2)  # the server has closed the connection by now
    finally:
        server.close()
    assert len(served) == 3


async def test_a_read_timeout_is_httpx_read_timeout(receiver: Any) -> None:
    import asyncio

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)  # never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with build_client(LOOPBACK, timeout=0.3, resolver=fixed({"hook.test": ["127.0.0.1"]})) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(f"http://hook.test:{port}/", content=b"{}")
    finally:
        server.close()
