"""`make run` keeps the platform up when one process dies: NATS, the SES emulator or a service
that exits is restarted with a doubling backoff, each exit and restart is said on the console,
and a process that keeps crashing (`max_crashes` within `window` seconds) makes the supervisor
give up with a message naming it and its log. Driven by `tick()` from the launcher's main loop,
so every restart is spawned the same way as the first start (see `infra.spawn`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from mailroom_devstack.stack import Stack

NATS = "nats-server"


@dataclass(frozen=True)
class Policy:
    max_crashes: int = 5  # exits of one process within `window` seconds before giving up
    window: float = 60.0
    backoff: float = 1.0  # wait before the first restart; doubles with each crash in the window
    max_backoff: float = 30.0

    ENV: ClassVar[dict[str, str]] = {
        "max_crashes": "MAILROOM_RUN_MAX_CRASHES",
        "window": "MAILROOM_RUN_CRASH_WINDOW_SECONDS",
        "backoff": "MAILROOM_RUN_RESTART_BACKOFF_SECONDS",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Policy:
        values: dict[str, float] = {}
        for name, var in cls.ENV.items():
            if raw := environ.get(var):
                try:
                    value = float(raw)
                except ValueError:
                    raise ValueError(f"{var} must be a number, not {raw!r}") from None
                if value <= 0:
                    raise ValueError(f"{var} must be positive, not {raw!r}")
                values[name] = value
        return cls(
            max_crashes=int(values.get("max_crashes", cls.max_crashes)),
            window=values.get("window", cls.window),
            backoff=values.get("backoff", cls.backoff),
        )

    def delay(self, crashes: int) -> float:
        return float(min(self.backoff * 2 ** (crashes - 1), self.max_backoff))


class GaveUp(RuntimeError):
    """A process crashed too often; the message says which and where its log is."""


def _how(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass
class Supervisor:
    stack: Stack
    policy: Policy
    say: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    crashes: dict[str, list[float]] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)  # process → when to restart it

    def tick(self) -> None:
        """Notice exits, restart what is due; raise GaveUp when a process crashed too often."""
        now = self.clock()
        for name, proc in list(self.stack.procs.items()):
            if proc.poll() is not None:
                del self.stack.procs[name]
                self._crashed(name, _how(proc.returncode), now)
        nats = self.stack.nats
        if nats is not None and NATS not in self.due and nats.proc is not None and nats.proc.poll() is not None:
            self._crashed(NATS, _how(nats.proc.returncode), now)
        for name, at in list(self.due.items()):
            if now >= at:
                del self.due[name]
                try:
                    self._restart(name)
                except Exception as exc:  # e.g. its port still taken: counts as one more crash
                    self._crashed(name, f"could not be restarted ({exc})", self.clock())

    def log_path(self, name: str) -> str:
        return str(self.stack.base_dir / "logs" / f"{name}.log")

    def _crashed(self, name: str, how: str, now: float) -> None:
        recent = [t for t in self.crashes.get(name, []) if now - t < self.policy.window] + [now]
        self.crashes[name] = recent
        if len(recent) >= self.policy.max_crashes:
            raise GaveUp(
                f"mailroom: {name} {how}; it crashed {len(recent)} times within "
                f"{self.policy.window:g} s, so Mailroom gave up restarting it and is stopping. "
                f"See {self.log_path(name)}"
            )
        delay = self.policy.delay(len(recent))
        self.due[name] = now + delay
        self.say(
            f"{name} {how}; restarting it in {delay:g} s "
            f"(crash {len(recent)} of {self.policy.max_crashes} allowed within {self.policy.window:g} s). "
            f"See {self.log_path(name)}"
        )

    def _restart(self, name: str) -> None:
        if name == NATS:
            assert self.stack.nats is not None
            self.stack.nats.start()
            pid = self.stack.nats.proc.pid if self.stack.nats.proc else None
        else:
            self.stack.start_process(name)
            pid = self.stack.procs[name].pid
        self.say(f"{name} restarted (pid {pid})")
