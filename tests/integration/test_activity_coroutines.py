"""A workflow calls (funcs.call) a function that fans out with coroutine.spawn and channels: the
activity runs its coroutines on its own scheduler and the workflow gets the gathered result."""

from __future__ import annotations

from pathlib import Path

from legato import api
from tests.integration.engine_harness import engine_config, engine_with_worker
from tests.unit.worker.helpers import make_app

WORKFLOW = """\
return function(names)
    local r, err = funcs.call("app:fan_out", names)
    if err then return nil, err end
    -- a raised error is retryable: one attempt is enough to see it
    local once = funcs.new():with_options({["activity.retry_policy"] = {maximum_attempts = 1}})
    local _, dead = once:call("app:stuck")
    return {greetings = r.greetings, first = r.first, timed_out = r.timed_out, stuck = dead:message()}
end
"""
FAN_OUT = """\
return function(names)
    local done = channel.new(#names)
    for i, name in ipairs(names) do
        coroutine.spawn(function()
            time.sleep((#names - i) * 10 * time.MILLISECOND)  -- the last name finishes first
            done:send({i = i, text = "hello, " .. name})
        end)
    end
    local greetings, first = {}, nil
    for _ = 1, #names do
        local r = done:receive()
        first = first or r.i
        greetings[r.i] = r.text
    end
    local r = channel.select{channel.new():case_receive(), time.after("10ms"):case_receive()}
    return {greetings = greetings, first = first, timed_out = r.value ~= nil}
end
"""
STUCK = """\
return function()
    local v = channel.new():receive()
    return v
end
"""


async def test_a_workflow_calls_a_function_that_fans_out_with_coroutines(tmp_path: Path) -> None:
    registry = make_app(tmp_path, workflows={"wf": WORKFLOW}, functions={"fan_out": FAN_OUT, "stuck": STUCK},
                        function_modules="[time]")
    async with engine_with_worker(engine_config(), registry, str(tmp_path / "db.sqlite"), "in-process",
                                  "test-activity-coroutines") as (service, _, _):
        await service.start_workflow(api.StartWorkflowRequest("co-1", "app:wf", "q", [["Ada", "Bo", "Cy"]]))
        done = await service.get_workflow_result(api.GetResultRequest(api.ExecutionRef("co-1"), timeout_ms=20_000))
    assert done.status == api.WorkflowStatus.COMPLETED, done
    assert done.result == {
        "greetings": ["hello, Ada", "hello, Bo", "hello, Cy"], "first": 3, "timed_out": True,
        "stuck": "deadlock: every coroutine of the activity waits on a channel "
                 "(the function waits in channel:receive at stuck.lua:2)"}
