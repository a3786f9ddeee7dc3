"""`python -m mailroom_domains migrate|run` as a real process configured only by environment variables."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from domains_testkit import domain_events, event_types, unique_domain, wait_for
from mailroom_contracts import subjects
from mailroom_contracts.rpc import CreateDomainRequest, DomainReply
from mailroom_devstack.dns import DnsServer
from mailroom_devstack.infra import NatsServer, free_port
from mailroom_kit import rpc
from mailroom_ses_emulator import EmulatorServer
from nats.aio.client import Client

pytestmark = pytest.mark.usefixtures("clean_db")


def service_env(database_url: str, nats_url: str, emulator_url: str, port: int, dns_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
    env.update(
        {
            "MAILROOM_DATABASE_URL": database_url,
            "MAILROOM_NATS_URL": nats_url,
            "MAILROOM_AWS_REGION": "us-east-1",
            "MAILROOM_SES_ENDPOINT_URL": emulator_url,
            "MAILROOM_DOMAINS_PORT": str(port),
            "MAILROOM_DOMAINS_POLL_INTERVAL_SECONDS": "0.3",
            "MAILROOM_DOMAINS_DNS_NAMESERVERS": "127.0.0.1",
            "MAILROOM_DOMAINS_DNS_PORT": str(dns_port),
            "MAILROOM_DOMAINS_DNS_TIMEOUT_SECONDS": "1",
            "MAILROOM_LOG_FORMAT": "json",
            "AWS_ACCESS_KEY_ID": "emulator",
            "AWS_SECRET_ACCESS_KEY": "emulator",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return env


async def test_the_service_process_migrates_serves_verifies_and_stops(
    migrated: str,
    own_nats: NatsServer,
    emulator_immediate: EmulatorServer,
    nats_client: Client,
    tmp_path: Path,
    dns_server: DnsServer,
) -> None:
    port = free_port()
    env = service_env(migrated, own_nats.url, emulator_immediate.url, port, dns_server.port)
    migrate = subprocess.run(
        [sys.executable, "-m", "mailroom_domains", "migrate"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr.decode()[-2000:]

    log_path = tmp_path / "domains.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailroom_domains", "run"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def ready() -> bool:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                try:
                    return (await http.get("/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(ready, timeout=30, every=0.1)
            assert (await http.get("/health")).json() == {"status": "ok"}
            assert "mailroom_outbox_published_total" in (await http.get("/metrics")).text

            name = unique_domain()
            reply = await rpc.request(
                nats_client,
                subjects.RPC_DOMAINS_CREATE,
                CreateDomainRequest(tenant_id="ten_p", name=name),
                DomainReply,
                timeout=20,
            )
            assert reply.error is None and reply.domain is not None
            domain_id = reply.domain.domain_id
            js = nats_client.jetstream()
            # The process checks public DNS (here: the local server): verified once the records are there.
            dns_server.zone.publish(reply.domain.records)

            async def verified() -> list[str] | None:
                types = event_types(await domain_events(js, domain_id))
                return types if "domain.verified" in types else None

            types = await wait_for(verified, timeout=15)
            assert types[0] == "domain.created" and types[-1] == "domain.verified"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log_path.read_text()[-3000:]
    assert "service.started" in log_path.read_text()
