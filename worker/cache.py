"""The workflow cache: running executions kept between their workflow tasks.

A bounded LRU by count (`worker.workflow_cache_size`) and by Lua memory
(`worker.workflow_cache_bytes`; a run's memory is what it holds in the shared Lua state, as
measured around its tasks: `WorkflowRun.retained`). A task takes its run's execution out (so two tasks never share
one) and puts it back when the task completed; a failed task or a closed run leaves it out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from worker.replay import WorkflowExecution


class WorkflowCache:
    def __init__(self, max_entries: int, max_bytes: int = 0) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[WorkflowExecution, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._items

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def take(self, run_id: str) -> WorkflowExecution | None:
        """Remove and return the run's execution, if cached."""
        with self._lock:
            item = self._items.pop(run_id, None)
            if item is None:
                self.misses += 1
                return None
            self._bytes -= item[1]
            self.hits += 1
            return item[0]

    def peek(self, run_id: str) -> WorkflowExecution | None:
        """The run's execution, left where it is (not taken, not counted as a hit, not moved in
        the LRU order): what a query looks at (worker.queries)."""
        with self._lock:
            item = self._items.get(run_id)
        return item[0] if item is not None else None

    def put(self, run_id: str, execution: WorkflowExecution) -> list[str]:
        """Keep the execution for the run's next task (or dispose of it if it cannot be kept);
        return the runs dropped to make room."""
        evicted: list[str] = []
        if self.max_entries <= 0 or execution.closed or execution.broken:
            execution.dispose()
            return evicted
        size = execution.memory_used() if self.max_bytes > 0 else 0
        if self.max_bytes > 0 and size > self.max_bytes:
            execution.dispose()
            return evicted
        with self._lock:
            old = self._items.pop(run_id, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[run_id] = (execution, size)
            self._bytes += size
            while len(self._items) > self.max_entries or (self.max_bytes > 0 and self._bytes > self.max_bytes):
                old_id, (old_ex, sz) = self._items.popitem(last=False)
                self._bytes -= sz
                old_ex.dispose()
                evicted.append(old_id)
        return evicted

    def evict(self, run_id: str) -> None:
        with self._lock:
            item = self._items.pop(run_id, None)
            if item is not None:
                self._bytes -= item[1]
                item[0].dispose()

    def clear(self) -> None:
        with self._lock:
            for ex, _ in self._items.values():
                ex.dispose()
            self._items.clear()
            self._bytes = 0
