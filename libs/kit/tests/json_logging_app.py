"""Run by test_logging_http.py in its own process (logging is configured once per process):
the kit's JSON logging, a real uvicorn serving the kit's `ops_app` over a real Runtime (Postgres,
NATS) plus one extra route, and records from the stdlib loggers Mailroom's dependencies use.

    python json_logging_app.py <level> <database_url> <nats_url>
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import warnings
from pathlib import Path

import httpx
import nats
import uvicorn
from litestar import Request, get
from litestar.params import FromPath
from mailroom_kit.db import open_pool
from mailroom_kit.http import add_log_fields
from mailroom_kit.logging import configure_logging, get_logger
from mailroom_kit.runtime import Runtime, ops_app
from mailroom_kit.settings import BaseSettings

level, database_url, nats_url = sys.argv[1:4]
configure_logging("jsontest", level, "json")
log = get_logger("jsontest")


@get("/things/{thing_id:str}", sync_to_thread=False)
def thing(request: Request, thing_id: FromPath[str]) -> dict[str, str]:  # type: ignore[type-arg]
    add_log_fields(request.scope, tenant_id="ten_json")
    log.info("thing.read", thing_id=thing_id)
    return {"id": thing_id}


async def main() -> None:
    pool = await open_pool(database_url, "kit_json_test", min_size=1, max_size=2)
    nc = await nats.connect(nats_url)
    runtime = Runtime(
        name="jsontest",
        schema="kit_json_test",
        settings=BaseSettings(database_url=database_url, nats_url=nats_url),
        migrations_dir=Path(__file__).parent / "fixture_migrations",
        pool=pool,
        nc=nc,
        js=nc.jetstream(),
    )
    app = ops_app(runtime)
    app.register(thing)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for path in ("/health", "/ready", "/metrics", "/things/t1?token=secret-value", "/nope"):
            await client.get(path, headers={"Authorization": "Bearer mr_live_secret"})
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")  # uvicorn logs "Invalid HTTP request received." itself
    await writer.drain()
    await reader.read()
    writer.close()
    logging.getLogger("uvicorn.error").info("uvicorn info line")
    logging.getLogger("uvicorn.error").warning("uvicorn warning line")
    logging.getLogger("nats.aio.client").error("nats error line")
    logging.getLogger("botocore.credentials").debug("botocore debug line")
    warnings.warn("a python warning", UserWarning, stacklevel=1)
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logging.getLogger("asyncio").exception("asyncio exception line")
    server.should_exit = True
    await task
    await nc.close()
    await pool.close()


asyncio.run(main())
