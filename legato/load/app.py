"""The load app: the registry YAML and the Lua workflows `legato load` runs.

* `load:root` (children): starts the parents (`--concurrency` at a time), collects their counts,
  continues as new after `per_run` parents; forwards `pause` / `resume` signals to its open parents.
* `load:parent` (children): starts its `count` leaves, at most `window` open at once (a sliding
  window, so `limits.max_pending_children` is never reached), continues as new after `per_run`
  leaves (with none open: the parent close policy would end them), returns its counts and its
  first failures.
* `load:leaf`: a child: nothing, one activity, a durable timer, or (tests) a failure.
* `load:mix`: two activities, a timer, a signal round trip (waits for the generator's `ping`,
  returns it), a child, then continue-as-new into a second run with one more activity.
* `load:timers`: many timers at once (`time.after` with the durations the generator drew).
* `load:idle`: waits for a `wake` signal or a long sleep, whichever comes first.
"""

from __future__ import annotations

from pathlib import Path

TASK_QUEUE = "load"
NAMESPACE_PREFIX = "load"  # entry ids: load:root, load:leaf, ...
MAX_LISTED_FAILURES = 20  # failures each parent and the root keep (ids and messages)

LOAD_YAML = """\
version: "1.0"
namespace: load
entries:
  - name: worker
    kind: temporal.worker
    task_queue: load
  - name: root
    kind: workflow.lua
    source: file://tree.lua
    method: root
    meta: {temporal: {workflow: {worker: load:worker}}}
  - name: parent
    kind: workflow.lua
    source: file://tree.lua
    method: parent
    meta: {temporal: {workflow: {worker: load:worker}}}
  - name: leaf
    kind: workflow.lua
    source: file://leaf.lua
    method: leaf
    modules: [funcs, time]
    meta: {temporal: {workflow: {worker: load:worker}}}
  - name: mix
    kind: workflow.lua
    source: file://mix.lua
    method: mix
    modules: [funcs, time, workflow]
    meta: {temporal: {workflow: {worker: load:worker}}}
  - name: timers
    kind: workflow.lua
    source: file://timers.lua
    method: timers
    modules: [time]
    meta: {temporal: {workflow: {worker: load:worker}}}
  - name: idle
    kind: workflow.lua
    source: file://idle.lua
    method: idle
    modules: [time]
    meta: {temporal: {workflow: {worker: load:worker}}}
  - name: work
    kind: function.lua
    source: file://work.lua
    meta: {temporal: {activity: {worker: load:worker}}}
"""

# The tree of the children scenario. State travels in the input, so continue-as-new carries it.
TREE_LUA = """\
local MAX_FAILURES = {max_failures}

local function note_failure(s, id, message)
    s.failed = s.failed + 1
    if #s.failures < MAX_FAILURES then s.failures[#s.failures + 1] = {id = id, message = message} end
end

local function error_message(err)
    if err == nil then return "failed" end
    if type(err) == "table" or type(err) == "userdata" then
        local ok, m = pcall(function() return err:message() end)
        if ok and m then return m end
    end
    return tostring(err)
end

-- Runs `count` units (start(i) starts unit i and returns its pid, or nil, err), at most `window`
-- open at once, `per_run` per run (then continue-as-new, with none open), and handles pause and
-- resume. on_exit(ev) books a closed unit; forward(topic) tells open units of a pause / resume.
local function run_window(s, start, on_exit, forward)
    local events = process.events()
    local pause_ch = process.listen("pause")
    local resume_ch = process.listen("resume")
    local start_failed = channel.new(s.window + 1)
    local open = 0
    local started_in_run = 0
    local open_pids = {}
    while true do
        if not s.paused then
            while open < s.window and s.next < s.count and started_in_run < s.per_run do
                local i = s.next
                s.next = s.next + 1
                started_in_run = started_in_run + 1
                open = open + 1
                coroutine.spawn(function()
                    local pid, err = start(i)
                    if pid == nil then
                        start_failed:send({i = i, message = error_message(err)})
                    else
                        open_pids[pid] = true
                        if s.paused and forward then forward(pid, "pause") end
                    end
                end)
            end
        end
        if open == 0 then
            if s.next >= s.count then return end
            if started_in_run >= s.per_run and not s.paused then
                process.upgrade(nil, s)
            end
        end
        local r = channel.select{events:case_receive(), start_failed:case_receive(),
                                 pause_ch:case_receive(), resume_ch:case_receive()}
        if r.channel == events then
            local ev = r.value
            if ev.kind == process.event.EXIT then
                open = open - 1
                open_pids[ev.from] = nil
                on_exit(ev)
            end
        elseif r.channel == start_failed then
            open = open - 1
            note_failure(s, tostring(r.value.i), "could not start: " .. r.value.message)
        else
            local topic = r.channel == pause_ch and "pause" or "resume"
            s.paused = topic == "pause"
            if forward then
                for pid in pairs(open_pids) do
                    coroutine.spawn(function() forward(pid, topic) end)
                end
            end
        end
    end
end

local function parent(s)
    run_window(s, function(j)
        local id = s.root .. "-p" .. s.index .. "-c" .. j
        return process.with_options({["temporal.workflow.id"] = id})
            :spawn("load:leaf", "load:worker", {work = s.work, sleep = s.sleep, id = id})
    end, function(ev)
        if ev.result.error then
            note_failure(s, ev.from, error_message(ev.result.error))
        else
            s.completed = s.completed + 1
        end
    end, nil)
    return {completed = s.completed, failed = s.failed, failures = s.failures}
end

local function root(s)
    run_window(s, function(i)
        local n = math.min(s.fanout, s.total - i * s.fanout)
        return process.with_options({["temporal.workflow.id"] = s.root .. "-p" .. i})
            :spawn("load:parent", "load:worker", {
                root = s.root, index = i, count = n, window = s.child_window, per_run = s.per_run,
                work = s.work, sleep = s.sleep, next = 0, completed = 0, failed = 0, failures = {},
                paused = s.paused})
    end, function(ev)
        if ev.result.error then
            note_failure(s, ev.from, "parent failed: " .. error_message(ev.result.error))
            return
        end
        local v = ev.result.value or {}
        s.completed = s.completed + (v.completed or 0)
        s.failed = s.failed + (v.failed or 0)
        for _, f in ipairs(v.failures or {}) do
            if #s.failures < MAX_FAILURES then s.failures[#s.failures + 1] = f end
        end
    end, function(pid, topic)
        process.send(pid, topic, true)
    end)
    return {completed = s.completed, failed = s.failed, failures = s.failures, parents = s.count}
end

return { root = root, parent = parent }
""".replace("{max_failures}", str(MAX_LISTED_FAILURES))

LEAF_LUA = """\
local funcs = require("funcs")
local time = require("time")

local function leaf(input)
    local work = input.work
    if work == "activity" then
        local v, err = funcs.call("load:work", input.id)
        if err then return nil, err end
        return true
    elseif work == "timer" then
        time.sleep(input.sleep)
        return true
    elseif work == "fail" then
        return nil, errors.new({kind = errors.INTERNAL, message = "failed on purpose: " .. tostring(input.id),
                                retryable = false})
    end
    return true
end

return { leaf = leaf }
"""

MIX_LUA = """\
local funcs = require("funcs")
local time = require("time")
local workflow = require("workflow")

local function mix(input)
    if input.phase == 2 then
        local v, err = funcs.call("load:work", input.id .. "/3")
        if err then return nil, err end
        return {id = input.id, ping = input.ping, child = input.child, runs = 2}
    end
    local ping_ch = process.listen("ping")
    for k = 1, 2 do
        local v, err = funcs.call("load:work", input.id .. "/" .. k)
        if err then return nil, err end
    end
    time.sleep(input.sleep)
    local ping = ping_ch:receive()
    local child, err = process.with_options({["temporal.workflow.id"] = input.id .. "-child"})
        :exec("load:leaf", "load:worker", {work = input.child_work, sleep = input.sleep, id = input.id .. "-child"})
    if err then return nil, err end
    process.upgrade(nil, {phase = 2, id = input.id, ping = ping, child = child})
end

return { mix = mix }
"""

TIMERS_LUA = """\
local time = require("time")

local function timers(input)
    local chans = {}
    for k, ms in ipairs(input.durations_ms) do
        chans[k] = time.after(ms * time.MILLISECOND)
    end
    for k = 1, #chans do chans[k]:receive() end
    return #chans
end

return { timers = timers }
"""

IDLE_LUA = """\
local time = require("time")

local function idle(input)
    local wake = process.listen("wake")
    local r = channel.select{wake:case_receive(), time.after(input.sleep):case_receive()}
    return {woken = r.channel == wake}
end

return { idle = idle }
"""

WORK_LUA = """\
return { main = function(x) return x end }
"""

APP_FILES = {"load.yaml": LOAD_YAML, "tree.lua": TREE_LUA, "leaf.lua": LEAF_LUA, "mix.lua": MIX_LUA,
             "timers.lua": TIMERS_LUA, "idle.lua": IDLE_LUA, "work.lua": WORK_LUA}


def write_app(root: Path) -> Path:
    """Write the load app (registry YAML and Lua sources) into `root`; return `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in APP_FILES.items():
        (root / name).write_text(text)
    return root
