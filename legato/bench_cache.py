"""`legato bench cache`: the worker memory one cached workflow run costs.

Runs N workflows of a realistic shape (an activity called, then a wait on a signal or a timer)
through the worker's own task path (`worker.task_runner.TaskRunner` with a `WorkflowCache`, the
code a Lua host process runs) until every run is cached, blocked in its second task. Reports the
process's resident memory grown per cached run (everything: Lua states, the kernel, Python
objects) and the Lua heap per run. Nothing is started but this process.
"""

from __future__ import annotations

import gc
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_YAML = """\
version: "1.0"
namespace: bench
entries:
  - name: worker
    kind: temporal.worker
    task_queue: bench
  - name: order
    kind: workflow.lua
    source: file://order.lua
    modules: [funcs, time]
    meta: {temporal: {workflow: {worker: bench:worker}}}
"""

# An activity, then a signal or a timeout: the typical state of a long-lived cached run.
ORDER_LUA = """\
local funcs = require("funcs")
local time = require("time")
local function main(order)
  local reserved, err = funcs.call("bench:reserve", order)
  if err then return nil, err end
  local approvals = process.listen("approve")
  local timeout = time.after("24h")
  local r = channel.select({ approvals:case_receive(), timeout:case_receive() })
  if r.channel == timeout then return { order = order, status = "expired", reserved = reserved } end
  return { order = order, status = "approved", by = r.value, reserved = reserved }
end
return { main = main }
"""


@dataclass
class CacheReport:
    runs: int
    cached: int
    seconds: float
    rss_bytes_per_run: float
    lua_bytes_per_run: float

    def text(self) -> str:
        return (f"{self.cached} of {self.runs} runs cached in {self.seconds:.2f}s: "
                f"{self.rss_bytes_per_run / 1024:.1f} KB of process memory (RSS) per cached run, "
                f"{self.lua_bytes_per_run / 1024:.1f} KB of Lua heap per cached run")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _lua_bytes(cache: Any) -> int:
    """The Lua heap of every Lua state the cached runs use (each state counted once), after a full
    collection."""
    seen: dict[int, Any] = {}
    for ex, _size in list(cache._items.values()):
        run = ex.run
        lua = getattr(run, "lua", None)
        if lua is not None:
            seen[id(lua)] = lua
    total = 0
    for lua in seen.values():
        lua.execute("collectgarbage()")
        total += int(lua.get_memory_used(total=True) or 0)
    return total


def measure_cache(runs: int) -> CacheReport:
    from legato.api import WorkflowTask
    from legato.config import Limits
    from legato.events import EventType as E
    from legato.events import HistoryEvent
    from worker.cache import WorkflowCache
    from worker.entries import load_registry
    from worker.task_runner import TaskRunner

    with tempfile.TemporaryDirectory(prefix="legato-bench-cache-") as tmp:
        root = Path(tmp)
        (root / "app.yaml").write_text(CACHE_YAML)
        (root / "order.lua").write_text(ORDER_LUA)
        registry = load_registry(root / "app.yaml")
    cache = WorkflowCache(runs + 1, 0)
    runner = TaskRunner(registry, Limits(), cache, "bench-cache")
    now = 1_700_000_000_000

    def ev(h: list[HistoryEvent], etype: E, **attrs: Any) -> HistoryEvent:
        e = HistoryEvent(len(h) + 1, etype, now, attrs)
        h.append(e)
        return e

    def task(h: list[HistoryEvent], i: int, previous: int) -> WorkflowTask:
        return WorkflowTask(b"t", "default", f"order-{i}", f"run-{i:08d}", "bench:order", "bench", 1,
                            h[-1].event_id, previous, list(h))

    # warm up: the first run of a process loads the kernel, compiles, fills caches
    gc.collect()
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    for i in range(runs + 1):
        h: list[HistoryEvent] = []
        ev(h, E.WorkflowExecutionStarted, workflow_type="bench:order", task_queue="bench", input=[f"o{i}"],
           random_seed=f"{i:016x}", attempt=1, context={})
        ev(h, E.WorkflowTaskScheduled, task_queue="bench", attempt=1)
        started = ev(h, E.WorkflowTaskStarted, scheduled_event_id=2)
        out = runner.run(task(h, i, 0))
        cmds = out.response.commands  # type: ignore[union-attr]
        done = ev(h, E.WorkflowTaskCompleted, scheduled_event_id=2, started_event_id=started.event_id)
        sched = ev(h, E.ActivityTaskScheduled, **dict(cmds[0].attrs), workflow_task_completed_event_id=done.event_id)
        act = ev(h, E.ActivityTaskStarted, scheduled_event_id=sched.event_id, attempt=1)
        ev(h, E.ActivityTaskCompleted, scheduled_event_id=sched.event_id, started_event_id=act.event_id,
           result={"reserved": True, "sku": f"sku-{i}"})
        s2 = ev(h, E.WorkflowTaskScheduled, task_queue="bench", attempt=1)
        ev(h, E.WorkflowTaskStarted, scheduled_event_id=s2.event_id)
        out = runner.run(task(h, i, started.event_id))
        if i == 0:  # the warm-up run: not counted
            cache.evict("run-00000000")
            gc.collect()
            rss0 = _rss_bytes()
            t0 = time.perf_counter()
            continue
    seconds = time.perf_counter() - t0
    lua = _lua_bytes(cache)
    gc.collect()
    rss = _rss_bytes() - rss0
    cached = len(cache)
    report = CacheReport(runs, cached, seconds, rss / max(cached, 1), lua / max(cached, 1))
    cache.clear()
    return report
