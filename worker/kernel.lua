-- Legato's Lua kernel: loaded (as bytecode) into every workflow and activity runtime by the host.
--
-- It sees the real standard library; the code of an entry only sees the sandboxed environment
-- built here.  In workflow mode it holds the deterministic scheduler (every workflow coroutine,
-- FIFO by readiness), Go-like channels, signals, timers and activity futures; every command goes
-- to the host (Python) through the functions in `H`.  In activity mode it builds an environment
-- with the standard library and the activity flavour of the modules, and runs each call on a small
-- cooperative scheduler of its own (coroutine.spawn, the same channels, the real clock).
--
-- Called as: kernel(mode, H) -> K (a table of functions for the host)
--
-- This file loads the kernel's modules (worker/kernel/*.lua, one per concern), once per Lua state,
-- in the order below: the ones both modes use, then the mode's own. The host hands their bytecode
-- in H.kernel_modules (name -> bytecode, worker/runtime.py). Each module is called as
-- module(S, H, K, MODE): S holds what the modules share (each exports its functions and
-- metatables into S, and takes what it needs from S into locals when it loads); K is the table
-- of functions for the host. Neither S nor the modules are reachable from entry code: they are
-- not in package.loaded (the sandbox's require serves only the modules an entry lists) and no
-- global, module or metatable code can see leads to them.

local MODE, H = ...
local K, S = {}, {}
local type, ipairs, next, tostring, error, rawget, rawset, select, setmetatable, getmetatable, load =
    type, ipairs, next, tostring, error, rawget, rawset, select, setmetatable, debug.getmetatable, load
local getinfo, concat, ssub = debug.getinfo, table.concat, string.sub

local COMMON = { "errors", "time", "codecs", "text", "payload" }
local BY_MODE = {
    activity = { "coop", "channels", "activity" },
    workflow = { "scheduler", "channels", "process", "timers", "funcs", "workflow", "sandbox", "run" },
}

-- Frames of Legato's own Lua (this file, its modules, patterns.lua): never "where the code is".
local OWN = { [getinfo(1, "S").source] = true, ["=legato/patterns.lua"] = true }
function S.own_source(src) return OWN[src] == true end

-- A module's globals: none. Each takes the library functions it uses into locals before it sets
-- `local _ENV = S.NO_GLOBALS`, so a global it forgot (or a stray global function) fails loudly
-- instead of reaching a library function the kernel must not use (getmetatable is the raw one).
local function no_global(_, k)
    error("Legato's kernel: a kernel module uses the undeclared global " .. tostring(k), 2)
end
S.NO_GLOBALS = setmetatable({}, { __index = no_global, __newindex = no_global })

-- Code may not reach the kernel's metatables: they are shared by every run of the Lua state, so
-- through one, code could change the methods of every other run's values (errors, channels...),
-- add a finalizer (__gc) to every error object, or an __index that loops where the kernel reads
-- its own objects. getmetatable(v) gives the type's name instead (and setmetatable(v) is refused),
-- and a metatable that is its own __index (`mt.__index = mt`, so `v.__index` would be the
-- metatable) serves its methods from a table of their own instead: `v.__index` is then nil. The
-- metatable keeps its methods too (the kernel may call them as MT.method).
function S.protect(...)
    for i = 1, select("#", ...) do
        local mt = select(i, ...)
        if rawget(mt, "__index") == mt then
            local methods = {}
            for k, v in next, mt do
                if type(k) ~= "string" or ssub(k, 1, 2) ~= "__" then methods[k] = v end
            end
            rawset(mt, "__index", methods)
        end
        rawset(mt, "__metatable", rawget(mt, "__name") or "protected")
    end
end

-- A module's table and the tables in it, copied: each run (each activity call) gets its own, as
-- code may change them, and the originals are shared by every run of the Lua state. A copy keeps
-- its original's metatable (time.utc is a location with methods).
local function copy_module(t)
    local c = {}
    for k, v in next, t do
        if type(v) == "table" then v = copy_module(v) end
        c[k] = v
    end
    return setmetatable(c, getmetatable(t))
end
S.copy_module = copy_module

-- A load() chunk given as a reader function, as one string (so that the binary check applies).
function S.read_chunk(chunk)
    if type(chunk) ~= "function" then return chunk end
    local parts = {}
    while true do
        local p = chunk()
        if p == nil or p == "" then break end
        parts[#parts + 1] = p
    end
    return concat(parts)
end

local function load_module(name)
    local bytecode = H.kernel_modules[name]
    if bytecode == nil then error("Legato's kernel: module " .. name .. " is missing", 0) end
    local chunk, err = load(bytecode, "=legato/kernel/" .. name .. ".lua", "b")
    if not chunk then error("Legato's kernel: module " .. name .. ": " .. tostring(err), 0) end
    OWN[getinfo(chunk, "S").source] = true
    chunk(S, H, K, MODE)
end

local modes = BY_MODE[MODE]
if modes == nil then error("Legato's kernel: unknown mode " .. tostring(MODE), 0) end
for _, list in ipairs({ COMMON, modes }) do
    for i = 1, #list do load_module(list[i]) end
end
S.protect(getmetatable(""))
-- Python objects (the host's functions in H, any value the host would hand over unconverted)
-- share one metatable, lupa's: through it, code could replace every host call of the Lua state.
-- No Python object is given to code; should one be, getmetatable gives its name.
for _, v in next, H do
    if type(v) == "userdata" then
        S.protect(getmetatable(v))
        break
    end
end
H.kernel_modules = nil -- the bytecode strings: loaded, no longer needed

-- String patterns for code: C's matcher when a cheap bound says a call ends soon, else a Lua
-- matcher of the same semantics that the instruction hook can stop (worker/patterns.lua). The
-- real string table is changed (methods on strings go through it); the modules, loaded above,
-- keep the C functions in their locals.
do
    local P = load(H.patterns, "=legato/patterns.lua", "b")(string)
    string.find, string.match, string.gmatch, string.gsub = P.find, P.match, P.gmatch, P.gsub
end
-- table.create(narr, nhash), which Wippy's base library lists: Lua 5.4 cannot preallocate from
-- Lua, so it is an empty table (the sizes are only checked). Every run's table library is a copy
-- of this one. (table.freeze is not offered: Lua 5.4 has no frozen tables, and a read-only proxy
-- is not the table itself: rawset, next, # and pairs would not see or guard its contents.)
do
    local mtype = math.type
    table.create = function(narr, nhash)
        for i, n in ipairs({ narr or 0, nhash or 0 }) do
            if mtype(n) ~= "integer" or n < 0 then
                error(string.format("table.create: argument #%d must be a whole number >= 0, got %s", i,
                    tostring(n)), 2)
            end
        end
        return {}
    end
end
python = nil -- lupa's bridge table: never reachable from entry code
return K
