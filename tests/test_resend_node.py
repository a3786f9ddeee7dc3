"""Issue 21 with the official Resend Node SDK (`resend` on npm, pinned by tests/resend_node/
package-lock.json) against the real stack: `tests/resend_node/check.mjs` drives the SDK with
RESEND_BASE_URL pointed at `/resend`. Node and npm are required (`.ci/run` installs them from the
Debian packages when missing); nothing is skipped.

`npm ci` runs once per lock file: node_modules/.package-lock.json (npm writes it on install) is
compared with package-lock.json, so an unchanged lock costs nothing on later runs."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from mailroom_devstack.stack import Stack
from support import Tenant, create_tenant, verified_domain

NODE_DIR = Path(__file__).parent / "resend_node"


def npm_ci() -> None:
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"{tool} is required (apt-get install -y nodejs npm)"
    lock, installed = NODE_DIR / "package-lock.json", NODE_DIR / "node_modules" / ".package-lock.json"
    if installed.exists() and json.loads(installed.read_text())["packages"] == _installable(lock):
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=NODE_DIR,
        check=True,
        timeout=300,
        capture_output=True,
    )


def _installable(lock: Path) -> dict[str, object]:
    """The lock's packages as npm records them under node_modules/.package-lock.json (without the root)."""
    packages = dict(json.loads(lock.read_text())["packages"])
    packages.pop("", None)
    return packages


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Tenant:
    return create_tenant(stack, "Resend Node SDK")


@pytest.fixture(scope="module")
def sender(stack: Stack, tenant: Tenant) -> str:
    name = f"node-{secrets.token_hex(3)}.test"
    verified_domain(stack, tenant, name)
    return f"Acme <hi@{name}>"


def run_check(stack: Stack, tenant: Tenant, sender: str, mode: str) -> dict[str, object]:
    npm_ci()
    env = {
        **os.environ,
        "RESEND_BASE_URL": stack.url("api") + "/resend",
        "RESEND_API_KEY": tenant.live_key,
        "MAILROOM_API_URL": stack.url("api"),
        "MAILROOM_FROM": sender,
    }
    done = subprocess.run(
        ["node", "check.mjs", mode], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["mode"] == mode
    return result


def test_node_sdk_webhooks_and_verify_on_real_deliveries(stack: Stack, tenant: Tenant, sender: str) -> None:
    result = run_check(stack, tenant, sender, "webhooks")
    assert str(result["webhook"]).startswith("wh_")
    assert isinstance(result["verified"], int) and result["verified"] >= 3  # sent, delivered, sent again


def test_node_sdk_send_get_and_batch(stack: Stack, tenant: Tenant, sender: str) -> None:
    result = run_check(stack, tenant, sender, "emails")
    assert str(result["email"]).startswith("msg_")
    assert isinstance(result["batch"], list) and len(result["batch"]) == 2
    assert all(str(i).startswith("msg_") for i in result["batch"])
