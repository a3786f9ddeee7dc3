"""The render pool: a few worker processes (templates/worker.py) that render templates off the
API's event loop, each with a hard wall-clock timeout and an address-space cap.

Why processes rather than in-process guards alone: a Jinja loop that neither calls nor outputs,
or a filter that allocates a gigabyte, cannot be interrupted from inside CPython; a process can be
killed. A render that times out kills its worker (the next job starts a fresh one); one that runs
out of memory gets MemoryError inside the worker, or kills it. Either way the request gets 422
`invalid_template_data` and nothing else is affected. Workers start on the first render, so a
process that never renders a template pays nothing; a job is one pipe round trip (tens of µs) plus
the render, and each worker compiles a (template, version) once."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Mapping
from typing import Any

import msgspec

from mailroom_api.templates.worker import Job, Result

_result_decoder = msgspec.msgpack.Decoder(Result)
_encoder = msgspec.msgpack.Encoder()
_START_TIMEOUT = 30.0  # a cold start on a loaded machine (Python + Jinja imports)


class RenderFailed(Exception):
    """The render did not finish: too slow, too much memory, the worker died."""

    def __init__(self, message: str, part: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.part = part


class WorkerUnavailable(RenderFailed):
    """No render worker could be started (not the template's fault: 503)."""


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def call(self, payload: bytes) -> Result:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(len(payload).to_bytes(4, "big") + payload)
        await self.proc.stdin.drain()
        header = await self.proc.stdout.readexactly(4)
        body = await self.proc.stdout.readexactly(int.from_bytes(header, "big"))
        return _result_decoder.decode(body)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    async def reap(self) -> None:
        self.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 5)


class RenderPool:
    def __init__(self, *, size: int, timeout_seconds: float, memory_bytes: int) -> None:
        self._size = size
        self._timeout = timeout_seconds
        self._memory = memory_bytes
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._reaping: set[asyncio.Task[None]] = set()

    async def _start(self) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailroom_api.templates.worker",
            str(self._memory),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,  # a template's content must never reach the logs
        )
        worker = _Worker(proc)
        self._all.add(worker)
        try:
            assert proc.stdout is not None
            await asyncio.wait_for(proc.stdout.readexactly(4), _START_TIMEOUT)
        except (Exception, asyncio.CancelledError):
            self._discard(worker)
            raise
        return worker

    def _discard(self, worker: _Worker) -> None:
        self._all.discard(worker)
        task = asyncio.create_task(worker.reap())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def run(
        self, *, key: str | None, parts: Mapping[str, str], data: dict[str, Any] | None, max_output: int
    ) -> dict[str, str]:
        """The rendered parts (or, with `data` None, only a compile check). RenderFailed when the
        template fails, exceeds a budget, or its worker has to be killed."""
        job = Job(key=key, parts=dict(parts), data=data, max_output=max_output, budget_seconds=self._timeout)
        payload = _encoder.encode(job)
        async with self._slots:
            worker = self._idle.pop() if self._idle else None
            if worker is None:
                try:
                    worker = await self._start()
                except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    raise WorkerUnavailable(
                        "templates cannot be rendered right now (no render worker); try again"
                    ) from exc
            try:
                # A little beyond the worker's own deadline, which makes a slow render fail cleanly.
                result = await asyncio.wait_for(worker.call(payload), self._timeout + 0.25)
            except TimeoutError:
                self._discard(worker)
                raise RenderFailed(f"rendering the template took longer than {self._timeout:g} s") from None
            except (OSError, asyncio.IncompleteReadError, msgspec.DecodeError):
                self._discard(worker)
                raise RenderFailed("rendering the template needs too much memory") from None
            except BaseException:  # cancelled mid-call: the worker's state is unknown
                self._discard(worker)
                raise
            self._idle.append(worker)
        if result.error is not None:
            raise RenderFailed(result.error, result.part)
        return result.rendered

    async def close(self) -> None:
        workers, self._all, self._idle = list(self._all), set(), []
        for worker in workers:
            await worker.reap()
        if self._reaping:
            await asyncio.wait(self._reaping, timeout=5)
