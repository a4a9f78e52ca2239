"""The report of a load run: JSON (`--report`), text, and a PNG plot (`--plot`, matplotlib Agg)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LISTED_FAILURES = 20  # failures listed (ids and messages) in the report and the text output


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


@dataclass
class Sample:
    """One point of the time series (seconds since the start of this invocation)."""

    t: float
    completed: int  # so far, including what earlier (resumed) invocations completed
    failed: int
    open: int  # workflows of this run that are running
    completions_per_s: float
    p50_ms: float | None  # latency of the completions since the previous sample
    p99_ms: float | None
    rss_bytes: dict[str, int]  # per process: "load" (this one), "server", "worker", "lua-host-<pid>"...
    store_bytes: int | None  # the SQLite file and its -wal and -shm


@dataclass
class LoadReport:
    scenario: str
    run_id: str
    mode: str
    params: dict[str, Any]
    total: int | None
    started: int = 0
    completed: int = 0
    failed: int = 0
    open: int = 0
    seconds: float = 0.0
    completions_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_bytes: dict[str, int] = field(default_factory=dict)
    # CPU seconds each process used, from its start to the end of this invocation ("load" is this
    # process: in --embedded, the engine, the worker's activities and the generator itself)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    store_bytes: int | None = None
    failures: list[dict[str, str]] = field(default_factory=list)  # the first ones: {"id", "message"}
    finished: bool = False  # everything asked for is done
    stopped: str = ""  # why it stopped early: "signal", "stop-after", "duration"
    resumed: bool = False
    resume_command: str = ""
    notes: list[str] = field(default_factory=list)
    series: list[Sample] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    def text(self) -> str:
        lat = (f"; latency p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms"
               if self.p50_ms is not None and self.p99_ms is not None else "")
        total = f"/{self.total}" if self.total else ""
        lines = [f"{self.scenario} {self.run_id}: {self.completed}{total} completed, {self.failed} failed, "
                 f"{self.open} open, in {self.seconds:.1f}s: {self.completions_per_s:.1f}/s{lat} ({self.mode})"]
        if self.scenario == "idle":
            lines.append(f"{self.started} idle workflows started")
        if self.peak_rss_bytes:
            lines.append("peak RSS: " + ", ".join(f"{k} {v / 2**20:.0f} MB"
                                                  for k, v in sorted(self.peak_rss_bytes.items())))
        if self.cpu_seconds:
            per = max(self.completed, 1)
            lines.append("CPU: " + ", ".join(f"{k} {v:.1f} s ({1000 * v / per:.2f} ms per workflow)"
                                             for k, v in sorted(self.cpu_seconds.items())))
        if self.store_bytes is not None:
            lines.append(f"store on disk: {self.store_bytes / 2**20:.1f} MB")
        for f in self.failures[:LISTED_FAILURES]:
            lines.append(f"  failed: {f.get('id', '?')}: {f.get('message', '')}")
        if self.failed > len(self.failures[:LISTED_FAILURES]):
            lines.append(f"  ... {self.failed - len(self.failures[:LISTED_FAILURES])} more failures")
        lines.extend(self.notes)
        if self.stopped and not self.finished:
            lines.append(f"stopped ({self.stopped}); to continue: {self.resume_command}"
                         if self.resume_command else f"stopped ({self.stopped})")
        return "\n".join(lines)


def write_plot(report: LoadReport, path: str) -> None:
    """Completions per second, p50/p99 latency, RSS per process, open workflows and store size
    over time, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report.series
    t = [x.t for x in s]
    # A run against a server elsewhere has no store file to measure: no panel for it.
    with_store = any(x.store_bytes is not None for x in s)
    fig, axes = plt.subplots(5 if with_store else 4, 1, figsize=(9, 14 if with_store else 11.5), sharex=True)
    fig.suptitle(f"legato load {report.scenario} ({report.run_id}, {report.mode})")
    ax = axes[0]
    ax.plot(t, [x.completions_per_s for x in s], color="tab:blue")
    ax.set_ylabel("completions/s")
    ax = axes[1]
    lt = [x.t for x in s if x.p50_ms is not None]
    ax.plot(lt, [x.p50_ms for x in s if x.p50_ms is not None], label="p50")
    ax.plot(lt, [x.p99_ms for x in s if x.p99_ms is not None], label="p99")
    ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper left")
    ax = axes[2]
    names = sorted({k for x in s for k in x.rss_bytes})
    for name in names:
        ax.plot(t, [x.rss_bytes.get(name, 0) / 2**20 for x in s], label=name)
    ax.set_ylabel("RSS (MB)")
    if names:
        ax.legend(loc="upper left", fontsize="small")
    ax = axes[3]
    ax.plot(t, [x.open for x in s], color="tab:green")
    ax.set_ylabel("open workflows")
    if with_store:
        ax = axes[4]
        ax.plot(t, [(x.store_bytes or 0) / 2**20 for x in s], color="tab:brown")
        ax.set_ylabel("store on disk (MB)")
    axes[-1].set_xlabel("seconds")
    for a in axes:
        a.grid(True, alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=80)
    plt.close(fig)
