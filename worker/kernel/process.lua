-- Legato's Lua kernel, workflow mode: signals, cancel requests, and the process module (children,
-- messages, monitors, links, spawners). Loaded by worker/kernel.lua.

local S, H, K = ...
local type, pairs, ipairs, tostring, error, setmetatable, getmetatable =
    type, pairs, ipairs, tostring, error, setmetatable, debug.getmetatable
local pack = table.pack
local sformat, sbyte, ssub = string.format, string.byte, string.sub
local huge, ceil = math.huge, math.ceil
local make_error, KIND, user_frame, new_message = S.make_error, S.KIND, S.user_frame, S.new_message
local new_channel, offer, duration_ms = S.new_channel, S.offer, S.duration_ms
local this_thread, block, wake, count_command = S.this_thread, S.block, S.wake, S.count_command
local R = nil
S.on_run(function(r) R = r end)
local spawn_specs = setmetatable({}, { __mode = "k" })
local _ENV = S.NO_GLOBALS

-- ------------------------------------------------------------------ signals and process


local function deliver(msg)
    local l = R.listeners[msg._topic]
    if l then
        offer(l.ch, l.message and msg or msg._data)
        return
    end
    if R.inbox then offer(R.inbox, msg) return end
    R.pending_signals[#R.pending_signals + 1] = msg
end

function K.signal(name, data, from)
    deliver(new_message(name, data, from))
end

local function emit_event(ev)
    if R.events_ch then
        offer(R.events_ch, ev)
    else
        R.pending_events[#R.pending_events + 1] = ev
    end
end

-- A cancel request goes to process.events() if the code has that channel, or waits for the code
-- to ask for it during this workflow task (the code may not have run yet: a cancel can arrive
-- before the first task). If it has not asked by the end of the task, the host cancels the run.
function K.cancel_requested(reason)
    local ev = { kind = "CANCEL", reason = reason }
    if not R.events_ch then R.pending_cancel = true end
    emit_event(ev)
end

function K.cancel_unhandled()
    return R.pending_cancel ~= nil
end

local process = {}
process.event = { CANCEL = "CANCEL", EXIT = "EXIT", LINK_DOWN = "LINK_DOWN" }
function process.inbox()
    if not R.inbox then
        R.inbox = new_channel(huge)
        local keep = {}
        for _, msg in ipairs(R.pending_signals) do offer(R.inbox, msg) end
        R.pending_signals = keep
    end
    return R.inbox
end
function process.listen(topic, opts)
    if type(topic) ~= "string" then error("process.listen: the topic must be a string", 2) end
    if opts ~= nil and type(opts) ~= "table" then error("process.listen: options must be a table", 2) end
    local l = R.listeners[topic]
    if l then return l.ch end
    l = { ch = new_channel(huge), message = opts ~= nil and opts.message == true }
    R.listeners[topic] = l
    local keep = {}
    for _, msg in ipairs(R.pending_signals) do
        if msg._topic == topic then
            offer(l.ch, l.message and msg or msg._data)
        else
            keep[#keep + 1] = msg
        end
    end
    R.pending_signals = keep
    return l.ch
end
function process.unlisten(ch)
    for topic, l in pairs(R.listeners) do
        if l.ch == ch then R.listeners[topic] = nil end
    end
end
function process.events()
    if not R.events_ch then
        R.events_ch = new_channel(huge)
        R.pending_cancel = nil
        for _, ev in ipairs(R.pending_events) do offer(R.events_ch, ev) end
        R.pending_events = {}
    end
    return R.events_ch
end
function process.pid() return R.workflow_id end

-- ---- R.children, messages, R.monitors and R.links (docs/processes.md)
-- Each operation is a command with a per-run `seq`; the host maps the outcome events back to it.

local function failure_error(message, kind, retryable, details)
    if message == nil then return nil end
    return make_error(message, kind, retryable, details)
end

local function check_pid(fname, pid, level)
    if type(pid) ~= "string" or pid == "" then
        error(make_error(sformat("%s: expected a pid (a workflow id string), got %s", fname,
            pid == nil and "nil" or type(pid)), KIND.INVALID, false, nil, user_frame(level + 1)), level + 1)
    end
end

local function invalid(message, level)
    error(make_error(message, KIND.INVALID, false, nil, user_frame(level + 1)), level + 1)
end

local function emit_exit(pid, run_id, value, err)
    local key = pid .. "\0" .. tostring(run_id)
    if R.exited[key] then return end
    R.exited[key] = true
    emit_event({ kind = "EXIT", from = pid, result = { value = value, error = err } })
end

-- spec: a host spawner spec or nil; mode: "spawn" (pid, err) or "exec" (result, err)
-- monitored: the starter wants the child's EXIT (spawn_monitored, exec); a workflow's R.children
-- always report to it, so only a non-durable caller tells the two apart.
-- linked: spawn_linked*; the host links the two ends and the child's pid joins R.links
local function start_child(fname, spec, mode, id, host, args, monitored, linked)
    if type(id) ~= "string" or id == "" then invalid(fname .. ": the workflow (entry id) must be a non-empty string", 3) end
    if host ~= nil and (type(host) ~= "string" or host == "") then
        invalid(fname .. ": the host must be a temporal.worker entry id (a string)", 3)
    end
    local t = this_thread(fname)
    local seq = R.proc_seq + 1
    -- waits: started with temporal.workflow.wait_for_cancellation = true (see process.cancel)
    -- ppid: a process spawned by a workflow (a recorded message to its host), its pid chosen there
    local err, waits, ppid = H.start_child(seq, id, host, args, spec, user_frame(3),
        monitored == true or mode == "exec", linked == true)
    if err ~= nil then return nil, make_error(fname .. ": " .. err, KIND.INVALID, false) end
    count_command()
    R.proc_seq = seq
    R.children[seq] = { t = t, mode = mode, waits = waits == true, linked = linked == true, seq = seq,
        process_pid = ppid }
    return block()
end

function K.child_started(seq, pid, run_id)
    local c = R.children[seq]
    if c and not c.started then
        c.started = true
        c.pid = pid
        R.child_pids[pid] = c
        if c.linked then R.links[pid] = true end
        if c.mode == "spawn" then wake(c.t, pid) end
    end
end

function K.child_start_failed(seq, message, kind, retryable, details)
    local c = R.children[seq]
    if c then
        R.children[seq] = nil
        wake(c.t, nil, make_error(message, kind, retryable, details))
    end
end

function K.child_closed(seq, pid, run_id, value, message, kind, retryable, details)
    local c = R.children[seq]
    if not c then return end
    R.children[seq] = nil
    if c.pid ~= nil and R.child_pids[c.pid] == c then R.child_pids[c.pid] = nil end
    local err = failure_error(message, kind, retryable, details)
    if c.mode == "exec" then
        wake(c.t, value, err)
    else
        emit_exit(pid, run_id, value, err)
    end
    -- process.cancel calls waiting for this child to close (wait_for_cancellation) return now
    for _, t in ipairs(c.cancel_waiters or {}) do wake(t, true) end
    c.cancel_waiters = nil
end

local function process_op(fname, issue, on_fail)
    local t = this_thread(fname)
    count_command()
    R.proc_seq = R.proc_seq + 1
    local seq = R.proc_seq
    issue(seq, user_frame(3))
    R.pending_proc[seq] = { t = t, on_fail = on_fail }
    return block()
end

function K.op_done(seq, message, kind, retryable, details)
    local p = R.pending_proc[seq]
    if not p then
        -- a workflow's spawn of a process: its host did not take it (it did: the process's
        -- `@legato.spawned` signal starts it, K.child_started)
        local c = R.children[seq]
        if c and c.process_pid and not c.started and message ~= nil then
            K.child_start_failed(seq, message, kind, retryable, details)
        end
        return
    end
    R.pending_proc[seq] = nil
    if message == nil then
        wake(p.t, true)
    else
        if p.on_fail then p.on_fail() end
        wake(p.t, nil, make_error(message, kind, retryable, details))
    end
end

-- A monitored or linked workflow closed (not a child: R.children close through K.child_closed).
function K.monitored_closed(pid, run_id, link, value, message, kind, retryable, details)
    local child = R.child_pids[pid]
    if child ~= nil and child.process_pid == pid and not link then  -- a process this workflow spawned
        return K.child_closed(child.seq, pid, run_id, value, message, kind, retryable, details)
    end
    local err = failure_error(message, kind, retryable, details)
    if link then
        if not R.links[pid] then return end -- unlinked since: dropped, whatever the timing
        R.links[pid] = nil
        if err == nil then -- a normal end: an EXIT, as for a monitor (LINK_DOWN is for abnormal ends)
            emit_exit(pid, run_id, value, nil)
            return
        end
        if R.trap_links then
            emit_event({ kind = "LINK_DOWN", from = pid, result = { value = value, error = err } })
        elseif R.link_down == nil then
            R.link_down = make_error(sformat("linked process %s ended abnormally (%s): %s", pid, tostring(kind),
                tostring(message)), kind, false, details)
        end
    else
        if not R.monitors[pid] then return end
        R.monitors[pid] = nil
        emit_exit(pid, run_id, value, err)
    end
end

-- Another process linked itself to this one (links are both ways), or unlinked (on = false).
function K.linked_by(pid, on)
    if on then R.links[pid] = true else R.links[pid] = nil end
end

function process.send(pid, topic, payload)
    check_pid("process.send", pid, 2)
    if type(topic) ~= "string" or topic == "" then invalid("process.send: the topic must be a non-empty string", 2) end
    if ssub(topic, 1, 8) == "@legato." then invalid("process.send: topics starting with \"@legato.\" are Legato's own", 2) end
    if sbyte(pid, 1) == 64 and not H.caller then
        -- "@...": a non-durable process (a Lua caller). As in Wippy, the send is a recorded side
        -- effect carried out once the task commits, and the sender goes on in the same task (its
        -- outcome, later, is dropped: a process that is gone loses the message).
        count_command()
        R.proc_seq = R.proc_seq + 1
        H.signal_external(R.proc_seq, pid, topic, payload, user_frame(2))
        return true
    end
    return process_op("process.send", function(seq, line) H.signal_external(seq, pid, topic, payload, line) end)
end

function process.monitor(pid)
    check_pid("process.monitor", pid, 2)
    R.monitors[pid] = true
    return process_op("process.monitor", function(seq, line) H.monitor_external(seq, pid, false, false, line) end,
        function() R.monitors[pid] = nil end)
end

function process.unmonitor(pid)
    check_pid("process.unmonitor", pid, 2)
    R.monitors[pid] = nil
    return process_op("process.unmonitor", function(seq, line) H.monitor_external(seq, pid, false, true, line) end)
end

function process.link(pid)
    check_pid("process.link", pid, 2)
    R.links[pid] = true
    return process_op("process.link", function(seq, line) H.monitor_external(seq, pid, true, false, line) end,
        function() R.links[pid] = nil end)
end

function process.unlink(pid)
    check_pid("process.unlink", pid, 2)
    R.links[pid] = nil
    return process_op("process.unlink", function(seq, line) H.monitor_external(seq, pid, true, true, line) end)
end

function process.terminate(pid, reason)
    check_pid("process.terminate", pid, 2)
    if reason ~= nil and type(reason) ~= "string" then invalid("process.terminate: the reason must be a string", 2) end
    return process_op("process.terminate", function(seq, line) H.terminate_external(seq, pid, reason, line) end)
end

-- Returns once the cancel request reached the workflow; for a child started with
-- temporal.workflow.wait_for_cancellation = true, only once that child has closed (its EXIT event
-- still arrives on process.events()).
function process.cancel(pid, deadline)
    check_pid("process.cancel", pid, 2)
    local ms = 0
    if deadline ~= nil then ms = duration_ms(deadline, "process.cancel: the deadline", 2) end
    local ok, err = process_op("process.cancel", function(seq, line) H.cancel_external(seq, pid, ceil(ms), line) end)
    local c = R.child_pids[pid]
    if ok and c ~= nil and c.waits then
        local waiters = c.cancel_waiters or {}
        c.cancel_waiters = waiters
        waiters[#waiters + 1] = this_thread("process.cancel")
        return block()
    end
    return ok, err
end

local OPTION_NAMES = { trap_links = "boolean" }
function process.set_options(opts)
    if type(opts) ~= "table" then invalid("process.set_options: expected a table such as {trap_links = true}", 2) end
    for k, v in pairs(opts) do
        local want = OPTION_NAMES[k]
        if want == nil then
            invalid(sformat("process.set_options: unknown option %q (known: trap_links)", tostring(k)), 2)
        end
        if type(v) ~= want then
            invalid(sformat("process.set_options: %s must be a %s, got %s", k, want, type(v)), 2)
        end
    end
    if opts.trap_links ~= nil then R.trap_links = opts.trap_links end
    return true
end
function process.get_options() return { trap_links = R.trap_links } end

-- process.upgrade(nil, ...): continue as new (same workflow type) with `...` as input;
-- process.upgrade("ns:workflow", ...) continues as that workflow type. Never returns.
function process.upgrade(source, ...)
    if source ~= nil and (type(source) ~= "string" or source == "") then
        invalid("process.upgrade: the first argument must be nil (same workflow) or a workflow entry id", 2)
    end
    this_thread("process.upgrade")
    count_command()
    R.continue_as_new = { source = source, args = pack(...), line = user_frame(2) }
    block()
end

-- ---- spawners: process.with_options{...}, :with_context{...}, :with_name(n), :with_message(t, p)

local SPAWNER = { __name = "spawner" }
SPAWNER.__index = SPAWNER

local function derive(base, op, a, b)
    local spec, err = H.spawn_spec(op, base, a, b)
    if spec == nil then invalid(err, 3) end
    local s = setmetatable({}, SPAWNER)
    spawn_specs[s] = spec
    return s
end

local function spec_of(self, fname)
    if getmetatable(self) ~= SPAWNER then invalid(fname .. ": call it as spawner:" .. fname .. "(...)", 3) end
    return spawn_specs[self]
end

function SPAWNER:with_options(o) return derive(spec_of(self, "with_options"), "options", o) end
function SPAWNER:with_context(c) return derive(spec_of(self, "with_context"), "context", c) end
function SPAWNER:with_name(n) return derive(spec_of(self, "with_name"), "name", n) end
function SPAWNER:with_message(topic, payload) return derive(spec_of(self, "with_message"), "message", topic, payload) end
function SPAWNER:spawn(id, host, ...)
    return start_child("spawner:spawn", spec_of(self, "spawn"), "spawn", id, host, pack(...))
end
function SPAWNER:spawn_monitored(id, host, ...)
    return start_child("spawner:spawn_monitored", spec_of(self, "spawn_monitored"), "spawn", id, host, pack(...), true)
end
function SPAWNER:spawn_linked(id, host, ...)
    return start_child("spawner:spawn_linked", spec_of(self, "spawn_linked"), "spawn", id, host, pack(...), false, true)
end
function SPAWNER:spawn_linked_monitored(id, host, ...)
    return start_child("spawner:spawn_linked_monitored", spec_of(self, "spawn_linked_monitored"), "spawn", id, host,
        pack(...), true, true)
end
function SPAWNER:exec(id, host, ...)
    return start_child("spawner:exec", spec_of(self, "exec"), "exec", id, host, pack(...))
end

local function dot(fname, first)
    if first == process or first == R.modules.process then invalid("process:" .. fname .. ": call it as process." .. fname .. "(...) (a dot)", 3) end
end
function process.with_options(o) dot("with_options", o) return derive(nil, "options", o) end
function process.with_context(c) dot("with_context", c) return derive(nil, "context", c) end
function process.with_name(n) dot("with_name", n) return derive(nil, "name", n) end
function process.with_message(topic, payload) dot("with_message", topic) return derive(nil, "message", topic, payload) end

-- A workflow's R.children are always reported to it, so spawn and spawn_monitored are the same here.
function process.spawn(id, host, ...) return start_child("process.spawn", nil, "spawn", id, host, pack(...)) end
function process.spawn_monitored(id, host, ...)
    return start_child("process.spawn_monitored", nil, "spawn", id, host, pack(...), true)
end
function process.spawn_linked(id, host, ...)
    return start_child("process.spawn_linked", nil, "spawn", id, host, pack(...), false, true)
end
function process.spawn_linked_monitored(id, host, ...)
    return start_child("process.spawn_linked_monitored", nil, "spawn", id, host, pack(...), true, true)
end
function process.exec(id, host, ...) return start_child("process.exec", nil, "exec", id, host, pack(...)) end

S.protect(SPAWNER)
S.process, S.start_child, S.invalid = process, start_child, invalid
