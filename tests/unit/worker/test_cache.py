"""The workflow cache: LRU by count and by Lua memory; evicted runs are disposed of."""

from __future__ import annotations

from pathlib import Path

from legato.config import Limits
from tests.unit.worker.helpers import History, make_app
from worker.cache import WorkflowCache
from worker.replay import WorkflowExecution
from worker.runtime import LuaVM


def running(tmp_path: Path, n: int) -> list[WorkflowExecution]:
    """n runs, each after its first task, in a Lua state of their own whose collector is stopped:
    the memory each is measured to hold (around its task) is then its own, whatever other tests
    left in the thread's shared state for a collection to free meanwhile."""
    reg = make_app(tmp_path, {"w": "return function() time.sleep('1s') end"})
    vm = LuaVM()
    vm.lua.execute("collectgarbage('stop')")
    out = []
    for i in range(n):
        entry = reg.workflow_for_type("app:w")
        assert entry is not None
        ex = WorkflowExecution(entry, reg, Limits(), workflow_id=f"w{i}", run_id=f"r{i}", vm=vm)
        ex.process(History("app:w").events)
        out.append(ex)
    return out


def test_lru_by_count(tmp_path: Path) -> None:
    exs = running(tmp_path, 3)
    c = WorkflowCache(max_entries=2)
    c.put("r0", exs[0])
    c.put("r1", exs[1])
    assert c.take("r0") is exs[0]
    c.put("r0", exs[0])  # r0 is now the most recent
    c.put("r2", exs[2])
    assert "r1" not in c and "r0" in c and "r2" in c
    assert exs[1].run is None  # disposed of
    assert c.take("r1") is None and c.misses == 1


def test_lru_by_memory(tmp_path: Path) -> None:
    exs = running(tmp_path, 3)
    one = exs[0].memory_used()
    assert one > 0
    c = WorkflowCache(max_entries=100, max_bytes=int(one * 2.5))
    for i, ex in enumerate(exs):
        c.put(f"r{i}", ex)
    assert len(c) == 2 and "r0" not in c and c.bytes_used <= one * 2.5


def test_closed_or_broken_runs_are_not_kept(tmp_path: Path) -> None:
    exs = running(tmp_path, 2)
    exs[0].closed = True
    exs[1].broken = True
    c = WorkflowCache(max_entries=10)
    c.put("r0", exs[0])
    c.put("r1", exs[1])
    assert len(c) == 0
    assert WorkflowCache(max_entries=0).take("x") is None
