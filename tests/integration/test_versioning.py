"""workflow.version end to end (issue 3, point 5): a run started under code without the version
call resumes, after the code changed and the worker restarted with an empty cache, on the `min`
branch; a new run takes `max`; and a code change whose range excludes a recorded version fails
the workflow task as NON_DETERMINISTIC, naming the change id, until the code is fixed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from legato.api import StartWorkflowRequest
from legato.events import EventType as E
from tests.integration.engine_harness import Harness, of_type
from worker.entries import load_registry
from worker.replay import replay

APP = """\
version: "1.0"
namespace: vt
entries:
  - {name: w, kind: temporal.worker, task_queue: vt}
  - {name: checkout, kind: workflow.lua, source: file://checkout.lua, modules: [funcs, workflow],
     meta: {temporal: {workflow: {worker: vt:w}}}}
  - {name: step, kind: function.lua, source: file://acts.lua, method: step,
     meta: {temporal: {activity: {worker: vt:w}}}}
"""
ACTS = 'return { step = function(what) return "did " .. what end }\n'

# Before the change: no version call. The run pays, then waits for "approve", then ships.
V0 = """\
local funcs = require("funcs")
local function main()
    local pay = funcs.call("vt:step", "old payment")
    process.listen("approve"):receive()
    local ship = funcs.call("vt:step", "ship")
    return {pay = pay, ship = ship}
end
return main
"""
# After the change: the payment step is guarded by workflow.version.
V1 = """\
local funcs = require("funcs")
local workflow = require("workflow")
local function main()
    local v = workflow.version("payment-v2", MIN, MAX)
    local pay
    if v == 1 then
        pay = funcs.call("vt:step", "old payment")
    else
        pay = funcs.call("vt:step", "new payment")
    end
    process.listen("approve"):receive()
    local ship = funcs.call("vt:step", "ship")
    return {pay = pay, ship = ship, v = v}
end
return main
"""


def app(tmp: Path, name: str, code: str) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "app.yaml").write_text(APP)
    (d / "acts.lua").write_text(ACTS)
    (d / "checkout.lua").write_text(code)
    return d


async def start(h: Harness, wid: str) -> None:
    await h.api.start_workflow(StartWorkflowRequest(workflow_id=wid, workflow_type="vt:checkout",
                                                    task_queue="vt", input=[]))


def markers(events: list[Any]) -> list[Any]:
    return [e.attrs["details"] for e in of_type(events, E.MarkerRecorded) if e.attrs.get("marker_name") == "version"]


async def test_running_run_keeps_min_new_run_gets_max_and_excluded_range_is_nondeterministic(
        tmp_path: Path) -> None:
    v0 = app(tmp_path, "v0", V0)
    v1 = app(tmp_path, "v1", V1.replace("MIN", "1").replace("MAX", "2"))
    narrowed = app(tmp_path, "narrowed", V1.replace("MIN", "1").replace("MAX", "1"))

    async with Harness(tmp_path, v0) as h:
        # Under the old code: the payment ran, the run waits for "approve".
        await start(h, "old-run")
        await h.wait_type("old-run", E.ActivityTaskCompleted)
        await h.wait_idle("old-run")

        # The code changes; the worker restarts with an empty cache, so the run is replayed with
        # the new code: there is no version marker before the payment, so it takes `min`.
        await h.stop_worker()
        await h.start_worker(load_registry(v1))
        await h.signal("old-run", "approve")
        assert await h.value("old-run") == {"pay": "did old payment", "ship": "did ship", "v": 1}
        old_events = await h.history("old-run")
        assert markers(old_events) == []  # `min` is taken without recording anything
        assert not of_type(old_events, E.WorkflowTaskFailed)
        assert replay(load_registry(v1), old_events) == []

        # A new run under the new code records and takes `max`.
        await start(h, "new-run")
        await h.wait_type("new-run", E.ActivityTaskCompleted)
        await h.wait_idle("new-run")  # waits for "approve", version 2 recorded
        new_events = await h.history("new-run")
        assert markers(new_events) == [{"change_id": "payment-v2", "version": 2}]
        assert of_type(new_events, E.ActivityTaskCompleted)[0].attrs["result"] == "did new payment"

        # The range is narrowed to exclude the recorded version: the next task fails on replay.
        await h.stop_worker()
        await h.start_worker(load_registry(narrowed))
        await h.signal("new-run", "approve")
        failed = await h.wait_type("new-run", E.WorkflowTaskFailed)
        assert failed.attrs["cause"] == "NON_DETERMINISTIC", failed.attrs
        message = failed.attrs["failure"]["message"]
        assert "payment-v2" in message and "version 2" in message, message
        d = await h.describe("new-run")
        assert d.last_workflow_task_failure is not None
        assert d.last_workflow_task_failure.kind == "NonDeterministic"

        # Restoring the range lets the run finish on the branch it recorded.
        await h.stop_worker()
        await h.start_worker(load_registry(v1))
        assert await h.value("new-run") == {"pay": "did new payment", "ship": "did ship", "v": 2}
