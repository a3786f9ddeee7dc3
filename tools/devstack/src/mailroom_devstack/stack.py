"""The whole Mailroom platform on one machine, the way `make run` runs it: a pinned NATS,
Postgres, the SES emulator and the five services as separate processes, each configured
only by environment variables. The end-to-end and crash suites drive the same class.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import httpx
from mailroom_kit.migrations import migrate

from mailroom_devstack.dns import DnsServer
from mailroom_devstack.infra import NatsServer, Postgres, free_port_block, spawn

SERVICES = ("api", "events", "sender", "domains", "webhooks")
PROCESSES = ("emulator", *SERVICES)
TOPIC_ARN = "arn:aws:sns:us-east-1:000000000000:mailroom-ses-events"
REGION = "us-east-1"


def migrations_dir(service: str) -> Path:
    """services/<service>/migrations of the installed workspace package, found without importing it."""
    spec = importlib.util.find_spec(f"mailroom_{service}")
    if spec is None or spec.origin is None:
        raise RuntimeError(f"mailroom_{service} is not installed")
    return Path(spec.origin).resolve().parents[2] / "migrations"


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Ports:
    api: int
    events: int
    sender: int
    domains: int
    webhooks: int
    emulator: int
    dns: int  # the local DNS server (UDP and TCP)
    dns_control: int  # its HTTP control API (python -m mailroom_devstack dns …)

    OFFSETS: ClassVar[tuple[int, ...]] = (0, 1, 2, 3, 4, 10, 11, 12)  # from the API port, in field order

    @classmethod
    def fixed(cls, api: int) -> Ports:
        """`make run`: the API port and the others at fixed offsets from it."""
        return cls(*(api + offset for offset in cls.OFFSETS))

    @classmethod
    def free(cls) -> Ports:
        """Tests: a block that is free now and below the ephemeral range (see free_port_block)."""
        return cls.fixed(free_port_block(cls.OFFSETS))

    def of(self, name: str) -> int:
        return int(getattr(self, name))


@dataclass
class Stack:
    base_dir: Path
    ports: Ports
    operator_token: str
    webhooks_secret_key: str
    database_url: str | None = None  # None → pip pgserver under base_dir/pg, database "mailroom"
    # HMAC key of broadcast emails' unsubscribe links (MAILROOM_API_UNSUBSCRIBE_SECRET); `make run`
    # keeps its own in .run/secrets.json so links already sent keep working across runs.
    unsubscribe_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    extra_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # per process name
    processes: Sequence[str] = PROCESSES  # a subset for a test that needs only some (e.g. ("api",))
    # Publish every new domain's DNS records in the local DNS server at once (MAILROOM_DEV_DNS_AUTOPUBLISH).
    dns_autopublish: bool = True
    nats: NatsServer | None = None
    postgres: Postgres | None = None
    dns: DnsServer | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    db_url: str = ""

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 90.0) -> Stack:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "logs").mkdir(exist_ok=True)
        self.nats = NatsServer(self.base_dir / "nats", log_file=self.base_dir / "logs" / "nats-server.log").start()
        if self.database_url:
            self.postgres = Postgres(self.base_dir / "pg", url=self.database_url).start()
            self.db_url = self.database_url
        else:
            self.postgres = Postgres(self.base_dir / "pg").start()
            self.db_url = self.postgres.create_database("mailroom", exist_ok=True)
        self._migrate_all()
        # The verifier and the SES emulator resolve tenants' records here (a real DNS server).
        self.dns = DnsServer(
            port=self.ports.dns,
            control_port=self.ports.dns_control,
            nats_url=self.nats.url if self.dns_autopublish else None,
        ).start()
        for name in self.processes:
            self.start_process(name)
        self.wait_ready(timeout=timeout)
        return self

    def stop(self) -> None:
        for name in list(self.procs):
            self.stop_process(name)
        if self.dns:
            self.dns.stop()
        if self.nats:
            self.nats.stop()
        if self.postgres:
            self.postgres.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ processes
    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports.of(name)}"

    def env_for(self, name: str) -> dict[str, str]:
        assert self.nats is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILROOM_", "SES_EMULATOR_"))}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "MAILROOM_DATABASE_URL": self.db_url,
                "MAILROOM_NATS_URL": self.nats.url,
                "MAILROOM_LOG_FORMAT": "json",
                "MAILROOM_AWS_REGION": REGION,
                "MAILROOM_SES_ENDPOINT_URL": self.url("emulator"),
                "AWS_ACCESS_KEY_ID": "emulator",
                "AWS_SECRET_ACCESS_KEY": "emulator",
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        port = str(self.ports.of(name))
        if name == "emulator":
            env.update(
                {
                    "SES_EMULATOR_HOST": "127.0.0.1",
                    "SES_EMULATOR_PORT": port,
                    "SES_EMULATOR_REGION": REGION,
                    "SES_EMULATOR_VERIFY": "dns",
                    "SES_EMULATOR_DNS_SERVER": f"127.0.0.1:{self.ports.dns}",
                    "SES_EMULATOR_STATE_DIR": str(self.base_dir / "ses-emulator"),
                    "SES_EMULATOR_SNS_SUBSCRIPTIONS": f"{TOPIC_ARN}={self.url('events')}/ses/sns",
                }
            )
        else:
            env[f"MAILROOM_{name.upper()}_PORT"] = port
        if name == "api":
            env["MAILROOM_API_OPERATOR_TOKEN"] = self.operator_token
            # The broadcast stream: links point at this API (http is allowed for loopback only).
            env["MAILROOM_API_UNSUBSCRIBE_SECRET"] = self.unsubscribe_secret
            env["MAILROOM_API_PUBLIC_URL"] = self.url("api")
        elif name == "events":
            env.update(
                {
                    "MAILROOM_EVENTS_SNS_TOPIC_ARNS": TOPIC_ARN,
                    # The emulator serves its signing certificate over http on loopback (dev/test only).
                    "MAILROOM_EVENTS_SNS_CERT_HOST_PATTERN": rf"^127\.0\.0\.1:{self.ports.emulator}$",
                    "MAILROOM_EVENTS_SNS_ALLOW_HTTP": "true",
                }
            )
        elif name == "sender":
            env["MAILROOM_SENDER_SES_EVENTS_TOPIC_ARN"] = TOPIC_ARN
        elif name == "domains":
            env["MAILROOM_DOMAINS_POLL_INTERVAL_SECONDS"] = "0.5"
            env["MAILROOM_DOMAINS_RECHECK_INTERVAL_SECONDS"] = "2"  # dev: notice a deleted record quickly
            env["MAILROOM_DOMAINS_DNS_NAMESERVERS"] = "127.0.0.1"
            env["MAILROOM_DOMAINS_DNS_PORT"] = str(self.ports.dns)
            env["MAILROOM_DOMAINS_DNS_TIMEOUT_SECONDS"] = "1"
        elif name == "webhooks":
            env.update(
                {
                    "MAILROOM_WEBHOOKS_SECRET_KEY": self.webhooks_secret_key,
                    # Local receivers only: a real deployment keeps https-only and no private ranges.
                    "MAILROOM_WEBHOOKS_ALLOW_HTTP": "true",
                    "MAILROOM_WEBHOOKS_ALLOWED_CIDRS": "127.0.0.0/8,::1/128",
                }
            )
        env.update(self.extra_env.get(name, {}))
        return env

    def command(self, name: str, verb: str = "run") -> list[str]:
        if name == "emulator":
            return [sys.executable, "-m", "mailroom_ses_emulator"]
        return [sys.executable, "-m", f"mailroom_{name}", verb]

    def _migrate_all(self, timeout: float = 120.0) -> None:
        """Each service's migrations, all at once, with the kit function `python -m mailroom_<svc> migrate`
        runs: each touches only its own schema, under its own advisory lock. Run here, in this process,
        they cost no interpreter start per service (five of those, one after another, were half of
        `make run`'s start)."""
        names = [name for name in SERVICES if name in self.processes]

        async def one(name: str) -> None:
            await asyncio.wait_for(migrate(self.db_url, name, migrations_dir(name)), timeout)

        async def every() -> list[BaseException | None]:
            return await asyncio.gather(*(one(name) for name in names), return_exceptions=True)

        # A thread of its own: the caller may be inside a running event loop (an async test).
        with ThreadPoolExecutor(1) as pool:
            results = pool.submit(asyncio.run, every()).result()
        failures = [
            f"migrations of {name} failed: {describe(result)}"
            for name, result in zip(names, results, strict=True)
            if result is not None
        ]
        if failures:
            raise RuntimeError("\n".join(failures))

    def start_process(self, name: str) -> None:
        log = open(self.base_dir / "logs" / f"{name}.log", "ab")
        self.procs[name] = spawn(
            self.command(name),
            env=self.env_for(name),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()

    def stop_process(self, name: str, timeout: float = 20.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self, name: str) -> None:
        """kill -9, for crash tests."""
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def restart(self, name: str, timeout: float = 60.0) -> None:
        self.start_process(name)
        self.wait_ready([name], timeout=timeout)

    def wait_ready(self, names: list[str] | None = None, timeout: float = 90.0) -> None:
        pending = list(names or self.processes)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for name in list(pending):
                    proc = self.procs.get(name)
                    if proc is not None and proc.poll() is not None:
                        raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
                    path = "/health" if name == "emulator" else "/ready"
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(self.url(name) + path).status_code == 200:
                            pending.remove(name)
                if pending and time.monotonic() > deadline:
                    tails = "\n".join(f"--- {n}\n{self.log_tail(n)}" for n in pending)
                    raise TimeoutError(f"not ready after {timeout}s: {pending}\n{tails}")
                if pending:
                    time.sleep(0.1)

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.base_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""
