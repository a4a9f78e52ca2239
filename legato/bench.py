"""`legato bench hello`: throughput and latency of one-activity workflows on the embedded default."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from legato.api import ExecutionRef, GetResultRequest, StartWorkflowRequest, WorkflowService, WorkflowStatus
from legato.config import Config

HELLO_YAML = """\
version: "1.0"
namespace: bench
entries:
  - name: worker
    kind: temporal.worker
    task_queue: bench
  - name: hello
    kind: workflow.lua
    source: file://hello.lua
    modules: [funcs]
    meta: {temporal: {workflow: {worker: bench:worker}}}
  - name: greet
    kind: function.lua
    source: file://greet.lua
    meta: {temporal: {activity: {worker: bench:worker}}}
"""

HELLO_LUA = """\
local funcs = require("funcs")
local function main(name)
  local greeting, err = funcs.call("bench:greet", name)
  if err then return nil, err end
  return greeting
end
return { main = main }
"""

GREET_LUA = """\
return { main = function(name) return "hello, " .. name end }
"""


@dataclass
class BenchReport:
    workflows: int
    seconds: float
    workflows_per_second: float
    p50_ms: float
    p99_ms: float
    failed: int

    def text(self) -> str:
        return (f"{self.workflows} workflows in {self.seconds:.2f}s: {self.workflows_per_second:.1f} workflows/s; "
                f"start-to-result latency p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms; "
                f"{self.failed} failed")


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def _one(frontend: WorkflowService, i: int) -> tuple[float, bool]:
    t0 = time.perf_counter()
    wid = f"hello-{i}"
    await frontend.start_workflow(StartWorkflowRequest(wid, "bench:hello", "bench", [f"w{i}"], request_id=wid))
    while True:
        r = await frontend.get_workflow_result(GetResultRequest(ExecutionRef(wid), 60_000))
        if r.status != WorkflowStatus.RUNNING:
            return time.perf_counter() - t0, r.status == WorkflowStatus.COMPLETED


async def run_hello(config: Config, count: int, db_path: str | None) -> BenchReport:
    from legato.server import Engine
    from worker.entries import load_registry
    from worker.worker import Worker

    with tempfile.TemporaryDirectory(prefix="legato-bench-") as tmp:
        root = Path(tmp)
        (root / "hello.yaml").write_text(HELLO_YAML)
        (root / "hello.lua").write_text(HELLO_LUA)
        (root / "greet.lua").write_text(GREET_LUA)
        registry = load_registry(root)
        async with Engine(config, db_path or str(root / "bench.db")) as engine:
            worker = Worker(engine.frontend, registry, config, identity="bench")
            await worker.start()
            try:
                t0 = time.perf_counter()
                results = await asyncio.gather(*(_one(engine.frontend, i) for i in range(count)))
                elapsed = time.perf_counter() - t0
            finally:
                await worker.stop()
    latencies = sorted(r[0] * 1000 for r in results)
    return BenchReport(
        workflows=count, seconds=elapsed, workflows_per_second=count / elapsed if elapsed else 0.0,
        p50_ms=statistics.median(latencies), p99_ms=_percentile(latencies, 0.99),
        failed=sum(1 for r in results if not r[1]),
    )
