"""One PNG of the pipeline run: throughput, latency and backlog over time, so a stall shows at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _per_second(times: list[float], t0: float) -> tuple[list[float], list[int]]:
    if not times:
        return [], []
    end = int(max(times) - t0) + 1
    counts = [0] * (end + 1)
    for t in times:
        counts[max(0, int(t - t0))] += 1
    return list(range(len(counts))), counts


def draw(path: Path, phases: list[dict[str, Any]], title: str) -> None:
    fig, axes = plt.subplots(3, len(phases), figsize=(7 * len(phases), 10), squeeze=False)
    for col, phase in enumerate(phases):
        t0 = phase["t0"]
        ax = axes[0][col]
        for label, times in (("accepted (202)", phase["accepted_times"]), ("webhook received", phase["webhook_times"])):
            xs, ys = _per_second(times, t0)
            ax.plot(xs, ys, label=label)
        ax.set_title(f"{phase['name']}: emails per second")
        ax.set_xlabel("s")
        ax.legend(loc="upper right")
        ax = axes[1][col]
        points = sorted(phase["latency_points"])
        if points:
            ax.scatter([p[0] - t0 for p in points], [p[1] for p in points], s=2, alpha=0.4, label="202 → webhook")
            ax.set_yscale("log")
        ax.set_title("per-email latency (ms, by time of 202)")
        ax.set_xlabel("s")
        ax = axes[2][col]
        samples = phase["samples"]
        xs = [s["t"] - t0 for s in samples]
        # Series that stayed at 0 (the domain consumers, mostly) only crowd the legend.
        names = sorted({k for s in samples for k, v in s["backlog"].items() if v})
        ax.set_prop_cycle(color=[plt.get_cmap("tab20")(i % 20) for i in range(max(1, len(names)))])
        for name in names:
            ax.plot(xs, [s["backlog"].get(name, 0) for s in samples], label=name)
        ax.set_title("backlog: consumer pending and outbox rows")
        ax.set_xlabel("s")
        if names:
            ax.legend(loc="upper right", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
