"""The service runner: one process = HTTP server (health/ready/metrics + the service's
routes) + background workers (consumers, outbox relay, pollers), sharing a Postgres pool
and a NATS connection, stopped cleanly on SIGINT/SIGTERM.

`Runtime[S]` is generic over the service's settings class, so every service gets its own settings
typed from `main(settings_cls=…)` through `run` to its app and workers, never rebuilt or checked
with isinstance on the way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import uvicorn
import uvloop
from litestar import Litestar, Response, Router, get
from litestar.exceptions import HTTPException
from mailroom_contracts.streams import STREAMS, ConsumerSpec
from nats.aio.client import Client
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailroom_kit import inbox, outbox, tracing
from mailroom_kit.db import Pool, open_pool
from mailroom_kit.heap import freeze_startup_heap
from mailroom_kit.http import request_logging
from mailroom_kit.jetstream import connect, reconcile
from mailroom_kit.logging import configure_logging, get_logger
from mailroom_kit.metrics import (
    CONSUMER_ACK_PENDING,
    CONSUMER_PENDING,
    CONSUMER_REDELIVERED,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_SECONDS,
)
from mailroom_kit.migrations import migrate, pending
from mailroom_kit.outbox import OnScheduledRelayed, OutboxRelay, PrepareScheduled
from mailroom_kit.retention import Purge, retention_worker
from mailroom_kit.server import (
    die_with_parent,
    is_child_process,
    process_index,
    reuse_port_socket,
    run_children,
    server_config,
)
from mailroom_kit.settings import DAY, BaseSettings, SettingsError
from mailroom_kit.wake import sleep_until_stopped

log = get_logger(__name__)

S = TypeVar("S", bound=BaseSettings)


@dataclass
class Runtime(Generic[S]):
    name: str
    schema: str
    settings: S
    migrations_dir: Path
    pool: Pool
    nc: Client
    js: JetStreamContext
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def readiness(self) -> dict[str, Any]:
        checks: dict[str, Any] = {"nats": self.nc.is_connected}
        try:
            async with self.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
                missing = await pending(conn, self.schema, self.migrations_dir)
            checks["postgres"] = True
            checks["migrations"] = not missing
        except Exception:
            checks["postgres"] = False
            checks["migrations"] = False
        return checks

    def relay(
        self,
        on_scheduled_relayed: OnScheduledRelayed | None = None,
        prepare_scheduled: PrepareScheduled | None = None,
    ) -> OutboxRelay:
        return OutboxRelay(
            self.pool,
            self.js,
            url=self.settings.database_url,
            schema=self.schema,
            on_scheduled_relayed=on_scheduled_relayed,
            prepare_scheduled=prepare_scheduled,
        )


def ops_router(runtime: Runtime) -> Router:
    """GET /health (alive), /ready (Postgres, NATS, migrations), /metrics (Prometheus)."""

    @get("/health", include_in_schema=False, sync_to_thread=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", include_in_schema=False)
    async def ready() -> Response[dict[str, Any]]:
        checks = await runtime.readiness()
        ok = all(checks.values())
        return Response({"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503)

    @get("/metrics", include_in_schema=False, sync_to_thread=False)
    def metrics() -> Response[bytes]:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Router(path="/", route_handlers=[health, ready, metrics])


def ops_app(runtime: Runtime) -> Litestar:
    """The whole HTTP surface of a worker-only service, with the kit's request ids and summary lines."""

    def not_found(_: Any, exc: HTTPException) -> Response[dict[str, Any]]:
        return Response({"error": "not_found", "message": exc.detail}, status_code=exc.status_code)

    logging = request_logging(runtime.name)
    return Litestar(
        route_handlers=[ops_router(runtime)],
        openapi_config=None,
        exception_handlers={HTTPException: not_found},
        middleware=logging.middleware,
        before_send=logging.before_send,
        # Litestar's default LoggingConfig would replace the root handler configure_logging set
        # (and with it the JSON formatting of uvicorn's and every other stdlib logger's records).
        logging_config=None,
    )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the runner owns signals
        yield

    async def serve(self, sockets: list[Any] | None = None) -> None:
        """uvicorn's, with a failed start (its port taken: uvicorn calls `sys.exit(3)`) an ordinary
        crash of the `http` task, so `serve` stops the service and exits 1. A SystemExit raised in a
        task instead leaves the event loop at once, and asyncio's runner then waited for ever on the
        tasks it cancelled: the process hung, alive but not listening."""
        try:
            await super().serve(sockets=sockets)
        except SystemExit as exc:
            raise RuntimeError(f"the HTTP server did not start (uvicorn exit {exc.code})") from None


Worker = Callable[[Runtime[S]], Coroutine[Any, Any, None]]


async def read_gauges(rt: Runtime[Any], consumers: Sequence[ConsumerSpec]) -> None:
    """Outbox backlog and age, and each consumer's pending / ack-pending / redelivered counts, into
    the gauges of /metrics (mailroom_kit.metrics)."""
    async with rt.pool.connection() as conn:
        rows, oldest = await outbox.backlog(conn)
    OUTBOX_BACKLOG.labels(schema=rt.schema).set(rows)
    OUTBOX_OLDEST_SECONDS.labels(schema=rt.schema).set(oldest)
    for spec in consumers:
        info = await rt.js.consumer_info(spec.stream, spec.durable)
        CONSUMER_PENDING.labels(consumer=spec.durable).set(info.num_pending or 0)
        CONSUMER_ACK_PENDING.labels(consumer=spec.durable).set(info.num_ack_pending or 0)
        CONSUMER_REDELIVERED.labels(consumer=spec.durable).set(info.num_redelivered or 0)


def ops_gauges(consumers: Sequence[ConsumerSpec]) -> Worker[Any]:
    """The worker that keeps those gauges current (every MAILROOM_METRICS_INTERVAL_SECONDS); a failed
    reading (Postgres or NATS away) leaves the last values and is tried again."""

    async def gauges(rt: Runtime[Any]) -> None:
        while not rt.stop.is_set():
            try:
                await read_gauges(rt, consumers)
            except Exception as exc:
                log.debug("metrics.gauges_failed", error=repr(exc))
            if await sleep_until_stopped(rt.stop, rt.settings.metrics_interval_seconds):
                return

    return gauges


async def serve(
    *,
    name: str,
    schema: str,
    settings: S,
    migrations_dir: Path,
    build_app: Callable[[Runtime[S]], Litestar] = ops_app,
    workers: Iterable[Worker[S]] = (),
    consumers: Sequence[ConsumerSpec] = (),
    on_start: Callable[[Runtime[S]], Coroutine[Any, Any, None]] | None = None,
    processes: int = 1,
    purges: Sequence[Purge] = (),
) -> None:
    """Run the service until SIGTERM/SIGINT, its `workers` beside the HTTP server, and the retention
    job: the kit's inbox claims and the service's own `purges` (mailroom_kit.retention).

    With `processes` > 1 this process only supervises that many copies of itself on the same port
    (see mailroom_kit.server: SO_REUSEPORT, signals forwarded, exit 1 when a copy dies, copies die
    with it)."""
    configure_logging(name, settings.log_level, settings.log_format)
    child = is_child_process()
    if processes > 1 and not child:
        sys.exit(await run_children(processes))
    if child:
        die_with_parent()
    tracing.configure(name)  # OTEL_* (off unless OTEL_TRACES_EXPORTER names an exporter)
    # From the start: a stop asked for while connecting is honoured once connected, not fatal.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    pool = await open_pool(
        settings.database_url,
        schema,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_pool_timeout_seconds,
    )
    # Closed on every way out: a pool left open while the loop is torn down (an exception escaping
    # here) has a worker that swallows its cancellation mid-connect, and asyncio's runner then
    # waits for it for ever — a process alive but serving nothing.
    try:
        nc = await connect(settings.nats_url, name=f"mailroom-{name}")
        try:
            runtime: Runtime[S] = Runtime(
                name=name,
                schema=schema,
                settings=settings,
                migrations_dir=migrations_dir,
                pool=pool,
                nc=nc,
                js=nc.jetstream(),
                stop=stop,
            )
            crashed = await _run(runtime, build_app, workers, consumers, on_start, purges, child=child)
        finally:
            with contextlib.suppress(Exception):
                await nc.drain()
    finally:
        await pool.close()
    tracing.shutdown()  # flush the spans still batched
    log.info("service.stopped")
    if crashed:
        sys.exit(1)


async def _run(
    runtime: Runtime[S],
    build_app: Callable[[Runtime[S]], Litestar],
    workers: Iterable[Worker[S]],
    consumers: Sequence[ConsumerSpec],
    on_start: Callable[[Runtime[S]], Coroutine[Any, Any, None]] | None,
    purges: Sequence[Purge],
    *,
    child: bool,
) -> bool:
    """`serve`'s HTTP server and workers, until a stop or a task's end; True if a task crashed."""
    settings = runtime.settings
    await reconcile(runtime.js, STREAMS, consumers, replicas=settings.nats_replicas)
    if on_start is not None:
        await on_start(runtime)
    server = _Server(server_config(build_app(runtime), service=runtime.name, host=settings.host, port=settings.port))
    # A child binds its own SO_REUSEPORT socket: the kernel spreads connections over the copies.
    # Bound before any worker starts, so a port that is taken stops the service before it does anything.
    sockets = [reuse_port_socket(settings.host, settings.port)] if child else None
    frozen = freeze_startup_heap()  # the startup's objects out of the collector's reach (mailroom_kit.heap)
    retention = retention_worker(
        [Purge("inbox", settings.inbox_retention_days * DAY, inbox.purge), *purges],
        interval_seconds=settings.retention_interval_seconds,
    )
    gauges = ops_gauges(consumers)
    tasks = [
        asyncio.create_task(w(runtime), name=getattr(w, "__name__", "worker")) for w in [*workers, retention, gauges]
    ]
    http = asyncio.create_task(server.serve(sockets=sockets), name="http")
    log.info("service.started", host=settings.host, port=settings.port, process=process_index(), gc_frozen=frozen)
    stopper = asyncio.create_task(runtime.stop.wait())
    done, _ = await asyncio.wait([stopper, http, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for t in done:
        if t is not stopper and t.exception() is not None:
            log.error("service.task_crashed", task=t.get_name(), error=repr(t.exception()))
    runtime.stop.set()
    server.should_exit = True
    await asyncio.wait([http, *tasks], timeout=15)
    for t in tasks:
        t.cancel()
    return any(t is not stopper and not t.cancelled() and t.exception() is not None for t in done)


def main(
    *,
    name: str,
    schema: str,
    settings_cls: type[S],
    migrations_dir: Path,
    run: Callable[[S], Coroutine[Any, Any, None]],
    argv: Sequence[str] | None = None,
) -> None:
    """`python -m mailroom_<name> run|migrate`."""
    parser = argparse.ArgumentParser(prog=f"mailroom_{name}")
    parser.add_argument("command", choices=["run", "migrate"])
    args = parser.parse_args(argv)
    try:
        settings = settings_cls.from_env()
        tracing.check()
    except SettingsError as exc:
        print(f"mailroom_{name}: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.command == "migrate":
        configure_logging(name, settings.log_level, settings.log_format)
        applied = asyncio.run(migrate(settings.database_url, schema, migrations_dir))
        log.info("migrations.applied", schema=schema, applied=applied)
        return
    # uvloop: libuv's event loop, about twice asyncio's throughput for the HTTP and Postgres I/O.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run(settings))
