"""Changed workflow code is caught on replay: the task fails, the workflow waits, fixed code resumes it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from legato.api import ExecutionRef, WorkflowStatus
from legato.cli.workflow_cmds import wait_result
from legato.client import GrpcClient
from tests.integration.conftest import fast_config
from tests.integration.procs import Cluster

APP = """\
version: "1.0"
namespace: nd
entries:
  - {name: w, kind: temporal.worker, task_queue: nd}
  - {name: flow, kind: workflow.lua, source: file://flow.lua, modules: [funcs],
     meta: {temporal: {workflow: {worker: nd:w}}}}
  - {name: a, kind: function.lua, source: file://acts.lua, method: a, meta: {temporal: {activity: {worker: nd:w}}}}
  - {name: b, kind: function.lua, source: file://acts.lua, method: b, meta: {temporal: {activity: {worker: nd:w}}}}
"""
V1 = """\
local funcs = require("funcs")
local function main()
    local x = funcs.call("nd:a")
    process.listen("go"):receive()
    local y = funcs.call("nd:b")
    return x .. y
end
return main
"""
V2 = """\
local funcs = require("funcs")
local function main()
    local y = funcs.call("nd:b")
    process.listen("go"):receive()
    local x = funcs.call("nd:a")
    return x .. y
end
return main
"""
ACTS = 'return { a = function() return "a" end, b = function() return "b" end }\n'


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def describe(c: Cluster, wid: str) -> dict:  # type: ignore[type-arg]
    p = c.cli("workflow", "describe", "--id", wid, "--output", "json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)  # type: ignore[no-any-return]


def test_reordered_commands_are_detected_and_fixed_code_resumes(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.yaml").write_text(APP)
    (app / "acts.lua").write_text(ACTS)
    (app / "flow.lua").write_text(V1)
    c = Cluster(tmp_path, app, fast_config(tmp_path)).start()
    try:
        assert c.cli("workflow", "start", "--type", "nd:flow", "--task-queue", "nd", "--id", "nd-1").returncode == 0
        # Wait until it has run nd:a and is blocked on the signal.
        eventually(lambda: describe(c, "nd-1")["info"]["history_length"] >= 10)

        c.worker.kill()
        (app / "flow.lua").write_text(V2)
        c.start_worker()
        assert c.cli("workflow", "signal", "--id", "nd-1", "--name", "go").returncode == 0
        eventually(lambda: describe(c, "nd-1")["last_workflow_task_failure"] is not None)
        d = describe(c, "nd-1")
        failure = d["last_workflow_task_failure"]
        assert d["info"]["status"] == "RUNNING"
        assert failure["kind"] == "NonDeterministic", failure
        assert "flow.lua:3" in (failure.get("source") or "") + failure["message"], failure
        assert "nd:a" in failure["message"] and "nd:b" in failure["message"], failure

        c.worker.kill()
        (app / "flow.lua").write_text(V1)
        c.start_worker()

        async def result() -> object:
            async with GrpcClient(c.address) as client:
                r = await wait_result(client, ExecutionRef("nd-1"), 60_000)
                assert r.status == WorkflowStatus.COMPLETED, r
                return r.result

        assert asyncio.run(result()) == "ab"
    finally:
        c.stop()
