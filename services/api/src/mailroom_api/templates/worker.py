"""A render worker: a separate process that compiles and renders templates for the API process
(templates/pool.py), so a template that loops forever or allocates without bound costs a killed
worker, never the API's event loop or memory.

`python -m mailroom_api.templates.worker <memory_bytes>`: caps its own address space
(RLIMIT_AS), then answers frames on stdin/stdout (4-byte big-endian length + msgpack) one at a
time: a `Job` in, a `Result` out. It exits when stdin closes (its API process is gone)."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any, BinaryIO, Literal

import msgspec

from mailroom_api.templates.rendering import Renderer, RenderError

Part = Literal["subject", "html", "text"]


class Job(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Render (or, without data, only compile) the given parts. `key` names the immutable source
    (`tpl_…:version`) so each worker compiles it once; None for a source not stored yet."""

    key: str | None
    parts: dict[str, str]  # part name → source
    data: dict[str, Any] | None  # None: compile only (a syntax check)
    max_output: int
    budget_seconds: float


class Result(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    rendered: dict[str, str] = {}
    error: str | None = None
    part: str | None = None  # which part failed


_encoder = msgspec.msgpack.Encoder()
_job_decoder = msgspec.msgpack.Decoder(Job)


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def handle(renderer: Renderer, job: Job) -> Result:
    deadline = time.monotonic() + job.budget_seconds
    rendered: dict[str, str] = {}
    for part, source in job.parts.items():
        html = part == "html"
        key = f"{job.key}:{part}" if job.key else None
        try:
            if job.data is None:
                renderer.compile(source, html=html, key=key)
            else:
                rendered[part] = renderer.render(
                    source, job.data, html=html, key=key, max_output=job.max_output, deadline=deadline
                )
        except RenderError as exc:
            return Result(error=str(exc), part=part)
        except MemoryError:
            return Result(error="rendering the template needs too much memory", part=part)
        except RecursionError:
            return Result(error="the template recurses too deeply", part=part)
        except Exception as exc:  # anything else a template can provoke: the tenant's error
            return Result(error=f"the template failed: {type(exc).__name__}", part=part)
    return Result(rendered=rendered)


def main(argv: list[str]) -> int:
    memory = int(argv[1]) if len(argv) > 1 else 0
    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    sys.setrecursionlimit(2000)
    renderer = Renderer()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(b"\x00\x00\x00\x00")  # ready: imports done, the limit set
    stdout.flush()
    while True:
        header = _read_exact(stdin, 4)
        if header is None:
            return 0
        body = _read_exact(stdin, int.from_bytes(header, "big"))
        if body is None:
            return 0
        try:
            result = handle(renderer, _job_decoder.decode(body))
        except MemoryError:
            result = Result(error="rendering the template needs too much memory")
        try:
            out = _encoder.encode(result)
        except MemoryError:
            out = _encoder.encode(Result(error="rendering the template needs too much memory"))
        stdout.write(len(out).to_bytes(4, "big") + out)
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
