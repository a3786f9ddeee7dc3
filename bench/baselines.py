"""The bench's baselines, each its own process so its CPU is told apart:

    python bench/baselines.py bare --port P          a bare Litestar + msgspec POST, served as the API is
    python bench/baselines.py jetstream --nats URL --seconds S --concurrency C
    python bench/baselines.py postgres --url URL --seconds S --concurrency C

The last two print one JSON line: {"operations", "seconds", "per_second", "p50_ms", "p99_ms"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from typing import Any

import msgspec

PAYLOAD = b"x" * 2048


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    to: str | list[str]
    subject: str
    html: str | None = None


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: str


def bare_app() -> Any:
    from litestar import Litestar, post

    @post("/v1/emails", status_code=202, sync_to_thread=False)
    def accept(data: Body) -> Accepted:
        return Accepted(id="msg_" + secrets.token_hex(8), status="queued")

    return Litestar(route_handlers=[accept], openapi_config=None, logging_config=None, debug=False)


def serve_bare(port: int, processes: int) -> None:
    """The bare app on the server stack the API uses (the kit's `server_config`, and with `processes`
    > 1 the kit's SO_REUSEPORT copies, as MAILROOM_API_PROCESSES runs the API), nothing else."""
    import uvicorn
    from mailroom_kit import server

    if processes > 1 and not server.is_child_process():
        sys.exit(asyncio.run(server.run_children(processes)))
    sockets = None
    if server.is_child_process():
        server.die_with_parent()
        sockets = [server.reuse_port_socket("127.0.0.1", port)]
    config = server.server_config(bare_app(), service="bare", host="127.0.0.1", port=port)
    uvicorn.Server(config).run(sockets=sockets)


def _summary(latencies: list[float], seconds: float) -> dict[str, Any]:
    latencies.sort()
    n = len(latencies)

    def pct(p: float) -> float:
        return round(latencies[min(n - 1, int(n * p))] * 1000, 2) if n else 0.0

    return {
        "operations": n,
        "seconds": round(seconds, 2),
        "per_second": round(n / seconds, 1),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    }


async def jetstream(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream()
    stream = f"BENCH_BASELINE_{secrets.token_hex(3).upper()}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"bench.{stream}"], max_age=300))
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await js.publish(f"bench.{stream}", PAYLOAD, headers={"Nats-Msg-Id": secrets.token_hex(8)})
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await js.delete_stream(stream)
    await nc.close()
    return _summary(latencies, elapsed)


async def postgres(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    import psycopg

    table = f"bench_baseline_{secrets.token_hex(3)}"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, payload text NOT NULL)")
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    payload = PAYLOAD.decode()

    async def loop() -> None:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                await conn.execute(f"INSERT INTO {table} (payload) VALUES (%s)", (payload,))
                await conn.commit()
                latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute(f"DROP TABLE {table}")
    return _summary(latencies, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(prog="baselines")
    parser.add_argument("kind", choices=["bare", "jetstream", "postgres"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--url", default="")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    if args.kind == "bare":
        serve_bare(args.port, args.processes)
        return
    if args.kind == "jetstream":
        result = asyncio.run(jetstream(args.nats, args.seconds, args.concurrency))
    else:
        result = asyncio.run(postgres(args.url, args.seconds, args.concurrency))
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
