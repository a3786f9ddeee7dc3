"""Providers against the real SES v2 emulator (boto3 over HTTP), and the test-mode simulator."""

from __future__ import annotations

import asyncio
import email
import email.policy

import httpx
import pytest
from mailroom_contracts.events import Address
from mailroom_contracts.ses import MAILROOM_TAGS, TAG_EMAIL_ID, TAG_MODE, TAG_TENANT_ID, is_reserved_tag
from mailroom_sender.errors import InDoubtProviderError, PermanentProviderError, TransientProviderError
from mailroom_sender.mime import build_message
from mailroom_sender.providers import SES_EVENT_TYPES, SesProvider, SimulatorProvider, make_ses_client, simulate
from mailroom_ses_emulator import EmulatorServer

from .conftest import (
    CONFIG_SET,
    BlackHole,
    closed_port_url,
    queued,
    sent_messages,
    ses_client,
    start_emulator,
)


async def test_ses_send_lands_in_emulator_with_tags_and_all_recipients(
    emulator: EmulatorServer, ses_provider: SesProvider
) -> None:
    ev = queued(
        to=["a@example.org"],
        cc=[Address(email="c@example.org")],
        bcc=[Address(email="hidden@example.org")],
        tags={"order": "o-42", "mailroom_email_id": "forged"},
    )
    result = await ses_provider.send(ev, build_message(ev))
    assert result.provider == "ses" and result.outcomes == ()
    [sent] = sent_messages(emulator, ev.email_id)
    assert sent["message_id"] == result.message_id
    assert sent["configuration_set"] == CONFIG_SET
    assert sent["tags"] == {
        "mailroom_email_id": ev.email_id,
        "mailroom_tenant_id": "ten_test",
        "mailroom_mode": "live",
        "order": "o-42",
    }
    assert sorted(sent["destinations"]) == ["a@example.org", "c@example.org", "hidden@example.org"]
    assert sent["subject"] == "Your receipt"
    parsed = email.message_from_string(sent["raw"], policy=email.policy.default)
    assert parsed["Message-ID"] == f"<{ev.email_id}@mail.acme.test>"
    assert "Bcc" not in parsed and "hidden@example.org" not in sent["raw"]


def test_send_request_carries_the_contract_tag_keys(ses_provider: SesProvider) -> None:
    # The events service matches SES events by these same constants (mailroom_contracts.ses).
    ev = queued(mode="test", tags={"team": "billing"})
    tags = {t["Name"]: t["Value"] for t in ses_provider.request(ev, b"raw")["EmailTags"]}
    assert {name for name in tags if is_reserved_tag(name)} == set(MAILROOM_TAGS)
    assert tags[TAG_EMAIL_ID] == ev.email_id
    assert tags[TAG_TENANT_ID] == ev.tenant_id
    assert tags[TAG_MODE] == "test"
    assert tags["team"] == "billing"


async def test_unverified_from_domain_is_permanent(emulator: EmulatorServer, ses_provider: SesProvider) -> None:
    ev = queued(from_email="noreply@not-verified.test")
    with pytest.raises(PermanentProviderError) as exc:
        await ses_provider.send(ev, build_message(ev))
    assert exc.value.reason == "message_rejected"
    assert "not verified" in exc.value.message
    assert sent_messages(emulator, ev.email_id) == []


async def test_unknown_configuration_set_is_permanent(emulator: EmulatorServer) -> None:
    provider = SesProvider(ses_client(emulator.url), configuration_set="nope", max_concurrency=2)
    ev = queued()
    with pytest.raises(PermanentProviderError) as exc:
        await provider.send(ev, build_message(ev))
    provider.close()
    assert exc.value.reason == "configuration_set_not_found"


async def test_throttling_and_connection_refused_are_transient() -> None:
    throttled = start_emulator(enforce_send_rate=True, max_send_rate=0)
    ev = queued()
    try:
        provider = SesProvider(ses_client(throttled.url), configuration_set=CONFIG_SET, max_concurrency=2)
        with pytest.raises(TransientProviderError, match="TooManyRequestsException"):
            await provider.send(ev, build_message(ev))
        provider.close()
    finally:
        throttled.stop()
    refused = SesProvider(ses_client(closed_port_url()), configuration_set=CONFIG_SET, max_concurrency=2)
    with pytest.raises(TransientProviderError, match="unreachable"):
        await refused.send(ev, build_message(ev))
    refused.close()


async def test_read_timeout_after_sending_is_in_doubt(black_hole: BlackHole) -> None:
    from mailroom_sender.providers import make_ses_client

    client = make_ses_client(
        region="us-east-1",
        endpoint_url=black_hole.url,
        connect_timeout=1,
        read_timeout=0.5,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    provider = SesProvider(client, configuration_set=CONFIG_SET, max_concurrency=2)
    ev = queued()
    with pytest.raises(InDoubtProviderError):
        await provider.send(ev, build_message(ev))
    provider.close()
    assert black_hole.received == 1  # one request, no retry by botocore


async def test_event_destination_is_created_idempotently_and_converges(emulator: EmulatorServer) -> None:
    provider = SesProvider(
        ses_client(emulator.url),
        configuration_set="mailroom-setup-test",
        broadcast_configuration_set="mailroom-setup-bulk",
        max_concurrency=2,
    )
    topic = "arn:aws:sns:us-east-1:000000000000:mailroom-ses-events"
    await provider.ensure_event_destination(topic_arn=topic, destination_name="mailroom-events")
    await provider.ensure_event_destination(topic_arn=topic, destination_name="mailroom-events")
    other = "arn:aws:sns:us-east-1:000000000000:other-topic"
    await provider.ensure_event_destination(topic_arn=other, destination_name="mailroom-events")
    provider.close()
    sets = httpx.get(f"{emulator.url}/_emulator/configuration-sets").json()["configuration_sets"]
    ours = {c["name"]: c for c in sets if c["name"].startswith(("mailroom-setup-test", "mailroom-setup-bulk"))}
    # Each stream, each tracking choice: a set whose destination matches OPEN / CLICK only when on.
    untracked = sorted(set(SES_EVENT_TYPES) - {"OPEN", "CLICK"})
    expected = {
        "": untracked,
        "-opens": sorted([*untracked, "OPEN"]),
        "-clicks": sorted([*untracked, "CLICK"]),
        "-opens-clicks": sorted(SES_EVENT_TYPES),
    }
    assert sorted(ours) == sorted(
        f"{base}{suffix}" for base in ("mailroom-setup-test", "mailroom-setup-bulk") for suffix in expected
    )
    for base in ("mailroom-setup-test", "mailroom-setup-bulk"):
        for suffix, types in expected.items():
            [dest] = ours[base + suffix]["event_destinations"]
            assert dest["Name"] == "mailroom-events" and dest["Enabled"] is True
            assert dest["SnsDestination"]["TopicArn"] == other
            assert sorted(dest["MatchingEventTypes"]) == types


async def test_configuration_set_follows_stream_and_tracking(emulator: EmulatorServer) -> None:
    """The set each send is made with, as the emulator recorded it."""
    provider = SesProvider(
        ses_client(emulator.url),
        configuration_set="mailroom-cs-t",
        broadcast_configuration_set="mailroom-cs-b",
        max_concurrency=2,
    )
    await provider.ensure_event_destination(
        topic_arn="arn:aws:sns:us-east-1:000000000000:cs-test", destination_name="mailroom-events"
    )
    cases = {
        ("transactional", False, False): "mailroom-cs-t",
        ("transactional", True, False): "mailroom-cs-t-opens",
        ("transactional", False, True): "mailroom-cs-t-clicks",
        ("broadcast", True, True): "mailroom-cs-b-opens-clicks",
        ("broadcast", False, False): "mailroom-cs-b",
    }
    for (stream, opens, clicks), name in cases.items():
        extra = {"unsubscribe_url": "https://api.acme.test/v1/unsubscribe/v1.x.y"} if stream == "broadcast" else {}
        ev = queued(stream=stream, track_opens=opens, track_clicks=clicks, **extra)
        await provider.send(ev, build_message(ev))
        [sent] = sent_messages(emulator, ev.email_id)
        assert sent["configuration_set"] == name
    provider.close()


def test_simulator_mirrors_the_ses_mailbox_simulator() -> None:
    outcomes = simulate(
        [
            "success@simulator.amazonses.com",
            "bounce@simulator.amazonses.com",
            "complaint+x@simulator.amazonses.com",
            "ooto@simulator.amazonses.com",
            "suppressionlist@simulator.amazonses.com",
            "anyone@example.org",
            "bounce@example.org",
        ]
    )
    by_kind = {(o.kind, o.bounce_subtype if o.kind == "bounced" else ""): o for o in outcomes}
    assert by_kind[("delivered", "")].recipients == (
        "success@simulator.amazonses.com",
        "complaint+x@simulator.amazonses.com",
        "ooto@simulator.amazonses.com",
        "anyone@example.org",
        "bounce@example.org",
    )
    general = by_kind[("bounced", "General")]
    assert general.recipients == ("bounce@simulator.amazonses.com",) and general.bounce_type == "Permanent"
    listed = by_kind[("bounced", "OnAccountSuppressionList")]
    assert listed.recipients == ("suppressionlist@simulator.amazonses.com",) and listed.bounce_type == "Permanent"
    assert by_kind[("complained", "")].recipients == ("complaint+x@simulator.amazonses.com",)
    assert len(outcomes) == 4


async def test_simulator_provider_never_touches_ses(emulator: EmulatorServer) -> None:
    ev = queued(mode="test", to=["bounce@simulator.amazonses.com"])
    result = await SimulatorProvider().send(ev, build_message(ev))
    assert result.provider == "simulator" and result.message_id.startswith("sim-")
    assert [o.kind for o in result.outcomes] == ["bounced"]
    assert sent_messages(emulator, ev.email_id) == []


class KeepAliveRace:
    """A real TCP proxy in front of the emulator that behaves like a server whose keep-alive
    timer fires just as a request arrives: a request on a connection idle for `keep_alive`
    seconds or more is read and the connection closed without an answer (the tail defect:
    "Connection was closed before we received a valid response")."""

    def __init__(self, upstream: str, keep_alive: float) -> None:
        self._upstream = upstream.removeprefix("http://").rpartition(":")
        self.keep_alive = keep_alive
        self.connections = 0
        self.cut = 0
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> KeepAliveRace:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        host, _, port = self._upstream
        server_r, server_w = await asyncio.open_connection(host, int(port))
        loop = asyncio.get_running_loop()
        last_answer: list[float | None] = [None]

        async def answers() -> None:
            while data := await server_r.read(65536):
                client_w.write(data)
                await client_w.drain()
                last_answer[0] = loop.time()

        answering = asyncio.create_task(answers())
        try:
            while data := await client_r.read(65536):
                idle_since = last_answer[0]
                if idle_since is not None and loop.time() - idle_since >= self.keep_alive:
                    self.cut += 1
                    return
                server_w.write(data)
                await server_w.drain()
        finally:
            answering.cancel()
            client_w.close()
            server_w.close()


def racing_client(url: str, max_idle_seconds: float) -> SesProvider:
    client = make_ses_client(
        region="us-east-1",
        endpoint_url=url,
        max_idle_seconds=max_idle_seconds,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    return SesProvider(client, configuration_set=CONFIG_SET, max_concurrency=2)


async def test_a_connection_idle_past_the_servers_keep_alive_is_never_reused(emulator: EmulatorServer) -> None:
    race = await KeepAliveRace(emulator.url, keep_alive=1.0).start()
    try:
        # Reusing a connection idle past the server's keep-alive: the request is lost, in doubt.
        careless = racing_client(race.url, max_idle_seconds=30)
        ev = queued()
        await careless.send(ev, build_message(ev))
        await asyncio.sleep(1.1)
        with pytest.raises(InDoubtProviderError, match="Connection was closed before we received a valid response"):
            await careless.send(ev, build_message(ev))
        careless.close()
        assert (race.connections, race.cut) == (1, 1)

        # Idle time bounded below the keep-alive: back-to-back sends share the connection, one
        # after a longer gap gets a new connection and goes through.
        race.connections = race.cut = 0
        bounded = racing_client(race.url, max_idle_seconds=0.5)
        sent: dict[str, str] = {}
        for gap in (0.0, 0.0, 1.1, 0.0, 1.2):
            await asyncio.sleep(gap)
            ev = queued()
            sent[ev.email_id] = (await bounded.send(ev, build_message(ev))).message_id
        bounded.close()
        assert race.cut == 0
        assert race.connections <= 3  # 3 on an idle machine; each gap over 0.5 s costs one
        for email_id, message_id in sent.items():
            assert [m["message_id"] for m in sent_messages(emulator, email_id)] == [message_id]
    finally:
        await race.stop()
