"""`python -m mailroom_devstack run` — what `make run` does.

Keeps everything under ./.run (git-ignored): NATS's store, the pgserver data directory
(unless MAILROOM_DATABASE_URL is set), the SES emulator's state, logs, and the generated
operator token, webhook-secret key, unsubscribe-link secret and bootstrap tenant, so a second run keeps the data.
While it runs, a process that dies is restarted (see supervisor.py); one that keeps crashing
stops the run with a message saying which.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import httpx
from cryptography.fernet import Fernet

from mailroom_devstack.stack import Ports, Stack
from mailroom_devstack.supervisor import GaveUp, Policy, Supervisor

BOOTSTRAP_TENANT = "Bootstrap tenant"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2))
    path.chmod(0o600)


def bootstrap(stack: Stack, state_file: Path) -> dict[str, Any]:
    """Create (once) a tenant with one live and one test key; reuse them on later runs."""
    state = _load(state_file)
    admin = {"Authorization": f"Bearer {stack.operator_token}"}
    with httpx.Client(base_url=stack.url("api"), timeout=10) as client:
        if state.get("tenant_id"):
            alive = client.get(f"/admin/v1/tenants/{state['tenant_id']}", headers=admin).status_code == 200
            keys_ok = alive and all(
                client.get("/v1/emails?limit=1", headers={"Authorization": f"Bearer {state[k]}"}).status_code == 200
                for k in ("live_key", "test_key")
            )
            if keys_ok:
                return state
        tenant = client.post("/admin/v1/tenants", json={"name": BOOTSTRAP_TENANT}, headers=admin)
        tenant.raise_for_status()
        tenant_id = tenant.json()["id"]
        keys = {}
        for mode in ("live", "test"):
            resp = client.post(
                f"/admin/v1/tenants/{tenant_id}/api-keys",
                headers=admin,
                json={"name": f"bootstrap-{mode}", "mode": mode, "permission": "full_access"},
            )
            resp.raise_for_status()
            keys[mode] = resp.json()["token"]
    state = {"tenant_id": tenant_id, "live_key": keys["live"], "test_key": keys["test"]}
    _save(state_file, state)
    return state


def banner(stack: Stack, state: dict[str, Any]) -> str:
    api = stack.url("api")
    body = (
        '{"from": "hello@example.test", "to": "success@simulator.amazonses.com", '
        '"subject": "Hello from Mailroom", "text": "It works."}'
    )
    return f"""
Mailroom is running.

  API             {api}   (OpenAPI: {api}/schema/openapi.json)
  Operator token  {stack.operator_token}
  Tenant          {state["tenant_id"]}
  Live key        {state["live_key"]}
  Test key        {state["test_key"]}
  SES emulator    {stack.url("emulator")}/_emulator/sent
  Logs            {stack.base_dir / "logs"}/

Send an email (test key: no domain needed, nothing reaches SES):

  curl -s {api}/v1/emails \\
    -H "Authorization: Bearer {state["test_key"]}" \\
    -H "Content-Type: application/json" \\
    -d '{body}'

Then: curl -s {api}/v1/emails/<id> -H "Authorization: Bearer {state["test_key"]}"
The README's quick start shows the live-key flow (domain, webhooks). Press Ctrl-C to stop.
"""


def run(base_dir: Path) -> int:
    base_dir.mkdir(parents=True, exist_ok=True)
    secrets_file = base_dir / "secrets.json"
    saved = _load(secrets_file)
    operator_token = (
        os.environ.get("MAILROOM_OPERATOR_TOKEN") or saved.get("operator_token") or f"mr_op_{secrets.token_urlsafe(24)}"
    )
    webhooks_key = saved.get("webhooks_secret_key") or Fernet.generate_key().decode()
    unsubscribe_secret = saved.get("unsubscribe_secret") or secrets.token_urlsafe(32)
    _save(
        secrets_file,
        {
            "operator_token": operator_token,
            "webhooks_secret_key": webhooks_key,
            "unsubscribe_secret": unsubscribe_secret,
        },
    )
    api_port = int(os.environ.get("MAILROOM_API_PORT", "8000"))
    try:
        policy = Policy.from_env(os.environ)
    except ValueError as exc:
        _say(f"mailroom: {exc}", sys.stderr)
        return 2
    stack = Stack(
        base_dir=base_dir,
        ports=Ports.fixed(api_port),
        operator_token=operator_token,
        webhooks_secret_key=webhooks_key,
        database_url=os.environ.get("MAILROOM_DATABASE_URL") or None,
        unsubscribe_secret=unsubscribe_secret,
        # The local DNS server publishes every new domain's records at once (0 = publish them yourself
        # with `python -m mailroom_devstack dns add …`, to watch a domain stay pending).
        dns_autopublish=os.environ.get("MAILROOM_DEV_DNS_AUTOPUBLISH", "1").strip().lower() not in ("0", "false", "no"),
    )
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    _say("Starting Mailroom (NATS, Postgres, SES emulator, api, events, sender, domains, webhooks)...")
    try:
        stack.start()
        state = bootstrap(stack, base_dir / "bootstrap.json")
        _say(banner(stack, state))
        # Restarts happen here, on the main thread, between waits: never from a signal handler.
        supervisor = Supervisor(stack, policy, say=lambda text: _say(text, sys.stderr))
        while not stopping.is_set():
            supervisor.tick()
            stopping.wait(0.2)
    except GaveUp as exc:
        _say(str(exc), sys.stderr)
        return 1
    except Exception as exc:
        _say(f"mailroom: could not start: {exc}", sys.stderr)
        return 1
    finally:
        _say("\nStopping Mailroom...")
        stack.stop()
        _say(f"Stopped. Data kept in {base_dir}")
    return 0


def _say(text: str, stream: TextIO | None = None) -> None:
    """Print, but never let a closed terminal or pipe keep the stack from stopping."""
    with contextlib.suppress(OSError):
        print(text, file=stream or sys.stdout, flush=True)


def dns_command(argv: list[str]) -> int:
    """`dns list | add NAME TYPE VALUE | delete NAME [TYPE] | fault NAME servfail|timeout|none`:
    changes the zone of the running `make run`'s local DNS server (its control API)."""
    parser = argparse.ArgumentParser(prog="mailroom_devstack dns")
    default_url = f"http://127.0.0.1:{Ports.fixed(int(os.environ.get('MAILROOM_API_PORT', '8000'))).dns_control}"
    parser.add_argument("--url", default=default_url, help=f"control API (default {default_url})")
    parser.add_argument("action", choices=["list", "add", "delete", "fault"])
    parser.add_argument("args", nargs="*")
    ns = parser.parse_args(argv)
    with httpx.Client(base_url=ns.url, timeout=5) as client:
        if ns.action == "list":
            resp = client.get("/records")
        elif ns.action == "add" and len(ns.args) == 3:
            resp = client.post("/records", json={"name": ns.args[0], "type": ns.args[1], "value": ns.args[2]})
        elif ns.action == "delete" and len(ns.args) in (1, 2):
            params = {"name": ns.args[0], **({"type": ns.args[1]} if len(ns.args) == 2 else {})}
            resp = client.delete("/records", params=params)
        elif ns.action == "fault" and len(ns.args) == 2:
            fault = None if ns.args[1] == "none" else ns.args[1]
            resp = client.post("/faults", json={"name": ns.args[0], "fault": fault})
        else:
            parser.error("usage: list | add NAME TYPE VALUE | delete NAME [TYPE] | fault NAME servfail|timeout|none")
    _say(json.dumps(resp.json(), indent=2))
    return 0 if resp.status_code < 400 else 1


def main() -> None:
    if sys.argv[1:2] == ["dns"]:
        sys.exit(dns_command(sys.argv[2:]))
    parser = argparse.ArgumentParser(prog="mailroom_devstack")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--dir", default=".run", help="where to keep local data (default ./.run)")
    args = parser.parse_args()
    sys.exit(run(Path(args.dir).resolve()))


if __name__ == "__main__":
    main()
