"""`make run` as a new user meets it: `python -m mailroom_devstack run` (what the Makefile
calls) on a fresh directory with pip pgserver, prints the credentials and a working curl,
stops cleanly on Ctrl-C, and a second run keeps the tenant, keys and emails."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from mailroom_devstack.infra import free_port_block
from mailroom_devstack.stack import Ports
from support import wait_for


class Run:
    def __init__(self, data_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
        env["MAILROOM_API_PORT"] = str(port)
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailroom_devstack", "run", "--dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_banner(self, timeout: float = 180) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while "Press Ctrl-C" not in self.output:
            assert self.proc.poll() is None, self.output
            assert time.monotonic() < deadline, self.output
            time.sleep(0.2)
        fields = {}
        for key in ("API", "Operator token", "Tenant", "Live key", "Test key"):
            m = re.search(rf"^\s+{key}\s+(\S+)", self.output, re.M)
            assert m, (key, self.output)
            fields[key] = m.group(1)
        return fields

    def curl_command(self) -> list[str]:
        text = self.output.split("Send an email", 1)[1]
        block = text.split("\n\n", 2)[1]
        return shlex.split(block.replace("\\\n", " "))

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


def test_make_run_prints_a_working_curl_stops_cleanly_and_keeps_data(tmp_path: Path) -> None:
    port = free_port_block(Ports.OFFSETS)  # make run uses the API port and fixed offsets from it
    data = tmp_path / ".run"
    first = Run(data, port)
    try:
        info = first.wait_banner()
        assert info["API"] == f"http://127.0.0.1:{port}"
        assert info["Live key"].startswith("mr_live_") and info["Test key"].startswith("mr_test_")
        assert info["Tenant"].startswith("ten_")
        cmd = first.curl_command()
        assert cmd[0] == "curl"
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
        email_id = httpx.Response(200, content=result.stdout).json()["id"]
        headers = {"Authorization": f"Bearer {info['Test key']}"}
        wait_for(
            lambda: httpx.get(f"{info['API']}/v1/emails/{email_id}", headers=headers).json()["status"] == "delivered",
            timeout=20,
            what="curl's email delivered",
        )
    finally:
        code = first.interrupt()
    assert code == 0, first.output
    assert "Stopped." in first.output

    second = Run(data, port)
    try:
        again = second.wait_banner()
        assert (again["Tenant"], again["Live key"], again["Test key"], again["Operator token"]) == (
            info["Tenant"],
            info["Live key"],
            info["Test key"],
            info["Operator token"],
        )
        r = httpx.get(f"{again['API']}/v1/emails/{email_id}", headers={"Authorization": f"Bearer {again['Test key']}"})
        assert r.status_code == 200 and r.json()["status"] == "delivered"
    finally:
        assert second.interrupt() == 0, second.output
