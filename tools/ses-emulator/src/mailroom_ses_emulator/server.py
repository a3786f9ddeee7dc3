"""Running the emulator: in-process (a background thread, for tests) or as the main program."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from types import TracebackType

import uvicorn

from .app import create_app
from .config import EmulatorConfig
from .service import Emulator


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind (and listen on) ``host:port``; port 0 picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (it checks sock.proto);
    # without it every keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, but SIGINT/SIGTERM end ``run()`` normally (exit code 0) instead of being
    re-raised after the graceful shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def _uvicorn_config(app: object, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
        backlog=2048,
    )


class EmulatorServer:
    """Runs the emulator with uvicorn in a daemon thread.

    ``port=0`` in the config picks a free port; ``url`` is the bound address::

        with EmulatorServer(EmulatorConfig(port=0, state_dir=tmp)) as srv:
            boto3.client("sesv2", endpoint_url=srv.url, ...)
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self._sock = bind_socket(config.host, config.port)
        port = self._sock.getsockname()[1]
        self.config = replace(config, port=port)
        self.emulator = Emulator(self.config)
        self.app = create_app(self.config, self.emulator)
        self._server = _Server(_uvicorn_config(self.app, "warning"))
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def url(self) -> str:
        host = self.config.host
        if host in ("0.0.0.0", "", "::"):  # noqa: S104
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmulatorServer:
        def run() -> None:
            try:
                asyncio.run(self._server.serve(sockets=[self._sock]))
            except BaseException as exc:  # pragma: no cover - surfaced by start()
                self._error = exc

        self._thread = threading.Thread(target=run, name=f"ses-emulator-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"SES emulator failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("SES emulator did not start in time")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m mailroom_ses_emulator``: configuration from ``SES_EMULATOR_*`` variables."""
    config = EmulatorConfig.from_env()
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    sock = bind_socket(config.host, config.port)
    config = replace(config, port=sock.getsockname()[1])
    emulator = Emulator(config)
    app = create_app(config, emulator)

    async def announce() -> None:
        subs = ", ".join(f"{s.topic_arn} -> {s.endpoint}" for s in config.sns_subscriptions) or "none"
        print(
            f"mailroom-ses-emulator listening on http://{config.host}:{config.port} "
            f"(public URL {config.base_url}, region {config.region}, verify={config.verify}, "
            f"SNS subscribers: {subs})",
            flush=True,
        )

    app.on_startup.append(announce)
    # SIGINT/SIGTERM: graceful shutdown (lifespan shutdown included), then exit code 0.
    server = _Server(_uvicorn_config(app, "warning" if config.log_level == "info" else config.log_level))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
