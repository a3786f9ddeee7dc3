"""CPU time and memory of process trees, read from /proc (psutil), for the bench's accounting."""

from __future__ import annotations

import contextlib
import resource
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

_TREE_SECONDS = 0.5
_tree: tuple[float, dict[int, list[int]]] = (0.0, {})
_tree_lock = threading.Lock()


def _children_by_parent() -> dict[int, list[int]]:
    """Every process's children, from one walk of /proc shared by every group for half a second
    (psutil's `children(recursive=True)` walks all of /proc once per call: with nine groups read
    four times a second, that walk was most of the bench's own CPU, taken from the machine it
    measures)."""
    global _tree
    with _tree_lock:
        taken, tree = _tree
        if time.monotonic() - taken > _TREE_SECONDS:
            tree = {}
            for proc in psutil.process_iter(["ppid"]):
                tree.setdefault(proc.info["ppid"] or 0, []).append(proc.pid)
            _tree = (time.monotonic(), tree)
        return tree


@dataclass
class Group:
    """A named set of process trees: a service (and any worker processes it forks), Postgres (the
    postmaster and its backends), NATS, the bench's own processes. `roots` is called at each reading,
    so a restarted or late-started process is still counted."""

    name: str
    roots: Callable[[], Iterable[int]]
    counted: bool = True  # False: reported, but not in the pipeline's per-email sum (emulator, bench)
    children: bool = True  # False: the root processes only (the bench itself, whose children are the stack)
    _roots_seen: dict[int, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _procs(self) -> tuple[set[int], list[psutil.Process]]:
        roots = set(self.roots())
        pids = set(roots)
        if self.children:
            tree = _children_by_parent()
            todo = list(roots)
            while todo:
                for child in tree.get(todo.pop(), ()):
                    if child not in pids:
                        pids.add(child)
                        todo.append(child)
        found = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(pid))
        return roots, found

    def cpu_seconds(self) -> float:
        """User + system CPU of every process of the group so far. A process of the tree that has
        exited is in its parent's "children" times once the parent has waited for it (a Postgres
        backend under its postmaster, a baseline client's backends, a service's worker), so it is
        counted without the meter having to catch it alive; a root that has exited keeps the CPU it
        had at its last reading."""
        with self._lock:
            roots, procs = self._procs()
            live: dict[int, float] = {}
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    live[proc.pid] = t.user + t.system
                    if self.children:
                        live[proc.pid] += t.children_user + t.children_system
            self._roots_seen.update({pid: cpu for pid, cpu in live.items() if pid in roots})
            return sum(live.values()) + sum(cpu for pid, cpu in self._roots_seen.items() if pid not in live)

    def memory_bytes(self) -> int:
        """Proportional set size (PSS) summed over the group: shared pages (Postgres's shared buffers,
        a forked worker's inherited heap) are split between the processes sharing them, not counted
        once per process as RSS would."""
        total = 0
        for proc in self._procs()[1]:
            with contextlib.suppress(psutil.Error):
                info = proc.memory_full_info()
                total += getattr(info, "pss", info.rss)
        return total

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs()[1]]


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
    """CPU of each group between `start()` and `stop()`: two readings (a process that starts and
    exits in between is in its parent's children times, see `Group.cpu_seconds`)."""

    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups
        self._start: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def start(self) -> Meter:
        self._start = {g.name: g.cpu_seconds() for g in self.groups}
        return self

    def stop(self) -> dict[str, float]:
        self.seconds = {g.name: g.cpu_seconds() - self._start[g.name] for g in self.groups}
        return self.seconds
