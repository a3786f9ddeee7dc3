"""`make run` as a new user meets it: `python -m mailroom_devstack run` (what the Makefile
calls) on a fresh directory with pip pgserver, prints the credentials and a working curl,
stops cleanly on Ctrl-C, and a second run keeps the tenant, keys and emails. A service killed
with -9 is restarted and the platform keeps serving; one that keeps crashing makes it give up
with a clear message."""

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
import psutil
from mailroom_devstack.infra import free_port_block
from mailroom_devstack.stack import Ports
from support import wait_for


class Run:
    def __init__(self, data_dir: Path, port: int, extra_env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
        env["MAILROOM_API_PORT"] = str(port)
        env.update(extra_env or {})
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

    def service_pid(self, name: str) -> int | None:
        """The pid of a running service process of this run (a direct child of the launcher)."""
        for child in psutil.Process(self.proc.pid).children():
            try:
                if f"mailroom_{name}" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                    return child.pid
            except psutil.NoSuchProcess:
                continue
        return None

    def wait_output(self, text: str, timeout: float = 60) -> None:
        wait_for(lambda: text in self.output, timeout=timeout, interval=0.1, what=f"{text!r} in:\n{self.output}")

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


def test_make_run_restarts_a_killed_service_and_gives_up_on_one_that_keeps_crashing(tmp_path: Path) -> None:
    port = free_port_block(Ports.OFFSETS)
    run = Run(
        tmp_path / ".run",
        port,
        extra_env={"MAILROOM_RUN_MAX_CRASHES": "3", "MAILROOM_RUN_RESTART_BACKOFF_SECONDS": "0.2"},
    )
    try:
        info = run.wait_banner()
        sender = run.service_pid("sender")
        assert sender is not None
        os.kill(sender, signal.SIGKILL)
        run.wait_output("sender was killed by signal 9; restarting it in 0.2 s (crash 1 of 3 allowed within 60 s)")
        run.wait_output("sender restarted (pid ")
        restarted = run.service_pid("sender")
        assert restarted is not None and restarted != sender
        # The platform still serves, and the restarted sender sends.
        result = subprocess.run(run.curl_command(), capture_output=True, text=True, timeout=30, check=True)
        email_id = httpx.Response(200, content=result.stdout).json()["id"]
        headers = {"Authorization": f"Bearer {info['Test key']}"}
        wait_for(
            lambda: httpx.get(f"{info['API']}/v1/emails/{email_id}", headers=headers).json()["status"] == "delivered",
            timeout=30,
            what="an email delivered after the sender's restart",
        )
        # The api crashes three times in a row: the third time Mailroom gives up and stops.
        killed: set[int] = set()
        for crash in (1, 2, 3):
            pid = wait_for(lambda: (p := run.service_pid("api")) not in killed and p, timeout=30, what="an api")
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
            if crash < 3:
                run.wait_output(f"api was killed by signal 9; restarting it in {0.2 * 2 ** (crash - 1):g} s")
        assert run.proc.wait(60) == 1, run.output
    finally:
        if run.proc.poll() is None:
            run.interrupt()
    assert (
        "mailroom: api was killed by signal 9; it crashed 3 times within 60 s, so Mailroom gave up restarting it"
        in run.output
    ), run.output
    assert "Stopped." in run.output
