"""`spawn()`: a child started from a thread that then exits keeps running (PR_SET_PDEATHSIG is
tied to the forking thread), and a child still dies with its launcher when that is killed."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import psutil
from mailroom_devstack.infra import spawn


def test_a_child_started_from_a_short_lived_thread_outlives_the_thread() -> None:
    started: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(
        target=lambda: started.append(spawn([sys.executable, "-c", "import time; time.sleep(30)"]))
    )
    thread.start()
    thread.join()
    child = started[0]
    try:
        time.sleep(1.0)  # without spawn()'s own thread, SIGTERM arrives as soon as the thread has exited
        assert child.poll() is None, f"child exited with {child.returncode}"
    finally:
        child.kill()
        child.wait()


LAUNCHER = """
import sys, threading, time
from mailroom_devstack.infra import spawn
t = threading.Thread(target=lambda: print(spawn([sys.executable, "-c", "import time; time.sleep(60)"]).pid, flush=True))
t.start(); t.join()
time.sleep(60)
"""


def test_the_child_still_dies_with_its_launcher() -> None:
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout is not None
        child = psutil.Process(int(launcher.stdout.readline()))
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        launcher.kill()  # kill -9: no cleanup code runs in the launcher
        launcher.wait()
        child.wait(timeout=5)  # raises TimeoutExpired if the child were left behind
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
