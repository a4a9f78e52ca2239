"""The progress bar (tqdm on stderr; off when stderr is not a terminal or with --output json) and
the per-process measurements it and the report show (RSS via psutil, store size on disk)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Progress:
    def __init__(self, total: int | None, label: str, enabled: bool) -> None:
        self._bar: Any = None
        self._n = 0
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit="wf", file=sys.stderr, dynamic_ncols=True,
                             smoothing=0.1)

    def update(self, done: int, open_: int, failed: int) -> None:
        if self._bar is None:
            return
        if done > self._n:
            self._bar.update(done - self._n)
            self._n = done
        self._bar.set_postfix(open=open_, failed=failed, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class ProcessWatch:
    """RSS and CPU time of this process and its descendants (the Lua host processes, and with
    --processes the server and worker and theirs), labelled by role."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process(os.getpid())
        self.names: dict[int, str] = {}

    def name(self, pid: int, label: str) -> None:
        self.names[pid] = label

    def rss(self) -> dict[str, int]:
        return self._each(lambda p: int(p.memory_info().rss), 0)

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds each process has used so far (a Lua host that was replaced
        took its own with it)."""
        return self._each(lambda p: sum(p.cpu_times()[:2]), 0.0)

    def _each(self, measure: Callable[[Any], Any], zero: Any) -> dict[str, Any]:
        ps = self._psutil
        out: dict[str, Any] = {}
        try:
            out["load"] = measure(self._me)
            procs = self._me.children(recursive=True)
        except ps.Error:
            return out
        for p in procs:
            try:
                value = measure(p)
                label = self.names.get(p.pid) or self._label(p)
            except ps.Error:
                continue
            out[label] = out.get(label, zero) + value
        return out

    def _label(self, p: Any) -> str:
        parent = p.ppid()
        owner = self.names.get(parent, "load" if parent == self._me.pid else "")
        label = f"{owner}-lua-host-{p.pid}" if owner else f"pid-{p.pid}"
        return label


def store_bytes(db_path: str | None) -> int | None:
    if not db_path:
        return None
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += Path(db_path + suffix).stat().st_size
        except OSError:
            pass
    return total
