"""CPU time and memory of process trees, read from /proc (psutil), for the bench's accounting."""

from __future__ import annotations

import contextlib
import resource
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil


@dataclass
class Group:
    """A named set of process trees: a service (and any worker processes it forks), Postgres (the
    postmaster and its backends), NATS, the bench's own processes. `roots` is called at each reading,
    so a restarted or late-started process is still counted."""

    name: str
    roots: Callable[[], Iterable[int]]
    counted: bool = True  # False: reported, but not in the pipeline's per-email sum (emulator, bench)
    children: bool = True  # False: the root processes only (the bench itself, whose children are the stack)
    _seen: dict[int, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # the Meter's sampling thread reads too

    def _procs(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for pid in self.roots():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                found[root.pid] = root
                for child in root.children(recursive=True) if self.children else ():
                    found[child.pid] = child
        return list(found.values())

    def cpu_seconds(self) -> float:
        """User + system CPU of every process of the group so far. A process that exits keeps the CPU
        it had at its last reading (so a child that exits mid-run is not dropped from the total)."""
        with self._lock:
            for proc in self._procs():
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    self._seen[proc.pid] = t.user + t.system
            return sum(self._seen.values())

    def memory_bytes(self) -> int:
        """Proportional set size (PSS) summed over the group: shared pages (Postgres's shared buffers,
        a forked worker's inherited heap) are split between the processes sharing them, not counted
        once per process as RSS would."""
        total = 0
        for proc in self._procs():
            with contextlib.suppress(psutil.Error):
                info = proc.memory_full_info()
                total += getattr(info, "pss", info.rss)
        return total

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs()]


def postmaster_pid(data_dir_hint: str | None) -> list[int]:
    """The Postgres server to account for: the postmaster whose data directory is under `data_dir_hint`
    (a private pgserver), else every postmaster on the machine (a shared server)."""
    roots: list[int] = []
    for proc in psutil.process_iter(["name", "cmdline", "ppid"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] not in ("postgres", "postmaster"):
                continue
            parent = psutil.Process(proc.info["ppid"]) if proc.info["ppid"] else None
            if parent is not None and parent.name() in ("postgres", "postmaster"):
                continue  # a backend: counted under its postmaster
            cmdline = " ".join(proc.info["cmdline"] or [])
            if data_dir_hint is None or data_dir_hint in cmdline or data_dir_hint in _cwd(proc):
                roots.append(proc.pid)
    return roots


def _cwd(proc: psutil.Process) -> str:
    try:
        return proc.cwd()
    except psutil.Error:
        return ""


def children_cpu_seconds() -> float:
    """CPU of this process's children that have been waited for: a short-lived tool (wrk, a baseline
    client) is measured as the change of this around its run."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """CPU of each group between `start()` and `stop()`. The groups are read every
    `sample_seconds` in between too, so a process that starts and exits inside the window (a
    baseline client's Postgres backends) is counted up to its last reading instead of not at all."""

    def __init__(self, groups: list[Group], *, sample_seconds: float = 0.25) -> None:
        self.groups = groups
        self._start: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self._sample = sample_seconds
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Meter:
        self._start = {g.name: g.cpu_seconds() for g in self.groups}
        self._stopped.clear()
        self._thread = threading.Thread(target=self._sampling, name="meter", daemon=True)
        self._thread.start()
        return self

    def _sampling(self) -> None:
        while not self._stopped.wait(self._sample):
            for g in self.groups:
                g.cpu_seconds()

    def stop(self) -> dict[str, float]:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        self.seconds = {g.name: g.cpu_seconds() - self._start[g.name] for g in self.groups}
        return self.seconds
