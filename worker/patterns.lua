-- Bounded Lua patterns: string.find / match / gmatch / gsub with Lua 5.4's exact semantics, whose
-- running time is bounded by the caller's instruction-count hook.
--
-- Why: the C matcher of lstrlib.c backtracks, and `string.rep("a", 20000):find(".-.-.-.-.-b")` runs
-- for practically forever inside one C call, where no debug hook fires.  So each call first bounds
-- the work of the C matcher from the subject length and the shape of the pattern; when that bound is
-- within the budget the C function runs (fast, and exact by definition); otherwise a port of the
-- same algorithm, written in plain Lua, runs instead, and the hook interrupts it like any user code.
--
-- Loaded as:  local P = load(src, "=legato/patterns.lua", "t")(string [, budget])
-- P.find, P.match, P.gmatch, P.gsub: drop-in replacements for the string library's functions.
-- P.set_budget(n) / P.budget(): the largest estimated C cost (one unit per character test, default
--   1e7) allowed to run in C; 0 sends every call to the Lua matcher (the differential tests do).
-- P.estimate(op, s, p [, init [, plain]]): the estimated cost of a call (op: "find", "match",
--   "gmatch", "gsub"), or math.huge when the call cannot go to C (it could raise an error there).
--
-- Known differences from C, all in where an error says it happened: a caller that tail-calls these
-- functions (`return s:find(p)`) is no longer on the stack, so an error names the line of the
-- caller's caller; on the C path, "invalid replacement value" names this file; on the Lua path, a
-- replacement function that raises at level 2 names this file (C has no line there).

local string, budget = ...
if type(string) ~= "table" then error("patterns.lua: expected the string library as argument", 2) end

local type, tonumber, error, select, rawget, ipairs = type, tonumber, error, select, rawget, ipairs
local getmetatable = getmetatable
local mtype, tointeger, huge = math.type, math.tointeger, math.huge
local unpack, concat = table.unpack, table.concat
local getinfo = debug and debug.getinfo
local rawmeta = debug and debug.getmetatable or getmetatable

local sfind, smatch, sgmatch, sgsub = string.find, string.match, string.gmatch, string.gsub
local byte, char, sub, rep = string.byte, string.char, string.sub, string.rep
local sformat = string.format -- not ("..."):format: methods on strings find the running code's string table

-- One unit of the estimate is one call of match() or one character test of the C matcher, about a
-- nanosecond (0.1 to 2 ns measured, the bound being loose or tight): 1e7 units keep a C call within
-- ~10-20 ms, so that the hook (and a watchdog) still act promptly, while everyday calls on texts of
-- tens of KB stay in C.
budget = budget or 1e7

local MAXCCALLS = 200    -- lstrlib.c: nesting of match() before "pattern too complex"
local MAXCAPTURES = 32   -- LUA_MAXCAPTURES
local CAP_UNF, CAP_POS = -1, -2
local CACHE_MAX = 256    -- entries per cache before it is dropped (bounds memory, not correctness)
local CACHE_LEN = 1024   -- longer patterns and replacements are not kept

-- item kinds of a compiled pattern (one item per pattern element, in the order match() meets them)
local K_LIT, K_ANY, K_SET = 1, 2, 3  -- single-character classes (may carry a quantifier)
local K_OPEN, K_POS, K_CLOSE, K_DOLLAR, K_BAL, K_FRONT, K_BREF, K_ERR = 4, 5, 6, 7, 8, 9, 10, 11
local Q_NONE, Q_STAR, Q_PLUS, Q_MINUS, Q_OPT = 0, 1, 2, 3, 4
local QUANT = { [42] = Q_STAR, [43] = Q_PLUS, [45] = Q_MINUS, [63] = Q_OPT }
local SPECIALS = "[%^%$%*%+%?%.%(%[%%%-]" -- lstrlib.c SPECIALS, as a set

-- ------------------------------------------------------------------ character classes

-- Every byte, so that the C matcher itself tells which bytes a class or a set accepts: the tables
-- then agree with C in every locale and for every quirk of set syntax ("[a-]", "[%a-z]", "[]]").
local ALL
do
    local t = {}
    for i = 0, 255 do t[i + 1] = i end
    ALL = char(unpack(t, 1, 256))
end

local class_cache, class_count = {}, 0

local function class_table(text)
    local t = class_cache[text]
    if t then return t end
    t = {}
    for pos in sgmatch(ALL, "()" .. text) do t[pos - 1] = true end
    if class_count >= CACHE_MAX then class_cache, class_count = {}, 0 end
    class_cache[text] = t
    class_count = class_count + 1
    return t
end

local function is_letter(c) return c and ((c >= 65 and c <= 90) or (c >= 97 and c <= 122)) end

-- a pattern matching byte c only
local function literal(c)
    if is_letter(c) or (c >= 48 and c <= 57) then return char(c) end
    return "%" .. char(c)
end

-- ------------------------------------------------------------------ compiling a pattern

-- lstrlib.c's classEnd: the index just after the single-character class starting at i, or nil and
-- the error C raises there.
local function class_end(p, i, m)
    local c = byte(p, i)
    i = i + 1
    if c == 37 then -- '%'
        if i > m then return nil, "malformed pattern (ends with '%')" end
        return i + 1
    elseif c == 91 then -- '['
        if byte(p, i) == 94 then i = i + 1 end
        repeat -- the first character after '[' or '[^' is never the closing ']'
            if i > m then return nil, "malformed pattern (missing ']')" end
            local cc = byte(p, i)
            i = i + 1
            if cc == 37 and i <= m then i = i + 1 end
        until byte(p, i) == 93
        return i + 1
    end
    return i
end

-- What the estimate and the Lua matcher need to know of a parsed pattern.  `closed`: no capture is
-- left open at its end.
local function analyse(cp, closed)
    local kind, Q, W, n = cp.kind, cp.Q, cp.W, cp.n
    -- inf[j]: the items from j to the end cannot fail (each may match the empty string), so
    -- whatever precedes them succeeds on its first attempt at them: no backtracking into it.
    local inf = { [n + 1] = true }
    local recursive = 0 -- items after which match() recurses: bounds the nesting depth
    for j = n, 1, -1 do
        local k, q = kind[j], Q[j]
        inf[j] = inf[j + 1] and (k == K_OPEN or k == K_POS or k == K_CLOSE or
            (k <= K_SET and (q == Q_STAR or q == Q_MINUS or q == Q_OPT)))
        if k == K_OPEN or k == K_POS or k == K_CLOSE or (k <= K_SET and q ~= Q_NONE) then
            recursive = recursive + 1
        end
    end
    cp.inf = inf
    -- G[j]: an item that must match the character at s for items j.. to match at s, after H[j]
    -- captures: the Lua matcher tests it before recursing (an optimisation only).
    local G, H = {}, {}
    for j = 1, n do
        local x = j
        while kind[x] == K_OPEN or kind[x] == K_POS or kind[x] == K_CLOSE do x = x + 1 end
        if x <= n and kind[x] <= K_SET and (Q[x] == Q_NONE or Q[x] == Q_PLUS) then
            G[j], H[j] = x, x - j
        end
    end
    cp.G, cp.H = G, H
    for j = 1, n do
        if kind[j] <= K_SET and Q[j] ~= Q_NONE then cp.j0 = j break end
    end
    local cmax = 1
    for j = cp.j0 or n + 1, n do
        if W[j] > cmax then cmax = W[j] end
    end
    cp.cmax = cmax
    for j = 1, n do
        local k = kind[j]
        if k == K_LIT or k == K_SET or k == K_BAL then cp.measurable = true end
        -- every match of the pattern takes at least one character: no empty matches
        if k == K_BAL or (k <= K_SET and (Q[j] == Q_NONE or Q[j] == Q_PLUS)) then cp.consumes = true end
    end
    -- C only runs patterns that cannot raise an error there: then every error comes from the Lua
    -- matcher, with the message and the position of C's.
    cp.safe = kind[n] ~= K_ERR and recursive + 1 <= MAXCCALLS and closed
    return cp
end

-- The pattern, read the way match() walks it.  match() only moves forward through the pattern (no
-- alternation, no repeated groups), so the capture state at each item is known statically: errors
-- that C raises when it reaches an item (bad back-reference, ')' closing nothing, too many captures,
-- malformed class) become an ERR item, raised only if matching gets there, as in C.
local function compile(p)
    local m = #p
    local kind, A, B, Q, W, T = {}, {}, {}, {}, {}, {}
    local n = 0
    local level, state = 0, {} -- capture index -> "open" | "closed" | "pos"
    -- T: a pattern of one item matching the same characters (to measure the subject in C)
    local function add(k, a, b, q, w, t)
        n = n + 1
        kind[n], A[n], B[n], Q[n], W[n], T[n] = k, a, b, q or Q_NONE, w or 1, t
    end
    local i = 1
    while i <= m do
        local c = byte(p, i)
        local d = byte(p, i + 1)
        if c == 40 then -- '('
            if level >= MAXCAPTURES then add(K_ERR, "too many captures") break end
            level = level + 1
            if d == 41 then
                state[level] = "pos"
                add(K_POS, level)
                i = i + 2
            else
                state[level] = "open"
                add(K_OPEN, level)
                i = i + 1
            end
        elseif c == 41 then -- ')'
            local l = level
            while l >= 1 and state[l] ~= "open" do l = l - 1 end
            if l < 1 then add(K_ERR, "invalid pattern capture") break end
            state[l] = "closed"
            add(K_CLOSE, l)
            i = i + 1
        elseif c == 36 and i == m then -- '$' at the very end
            add(K_DOLLAR)
            i = i + 1
        elseif c == 37 and d == 98 then -- '%b'
            if i + 2 >= m then add(K_ERR, "malformed pattern (missing arguments to '%b')") break end
            add(K_BAL, byte(p, i + 2), byte(p, i + 3), nil, nil, literal(byte(p, i + 2)))
            i = i + 4
        elseif c == 37 and d == 102 then -- '%f'
            i = i + 2
            if byte(p, i) ~= 91 then add(K_ERR, "missing '[' after '%f' in pattern") break end
            local ep, err = class_end(p, i, m)
            if not ep then add(K_ERR, err) break end
            add(K_FRONT, class_table(sub(p, i, ep - 1)), nil, nil, ep - i)
            i = ep
        elseif c == 37 and d and d >= 48 and d <= 57 then -- back-reference '%0'..'%9'
            local l = d - 48
            if l < 1 or l > level or state[l] == "open" then
                add(K_ERR, "invalid capture index %" .. l)
                break
            end
            add(K_BREF, l)
            i = i + 2
        else
            local ep, err = class_end(p, i, m)
            if not ep then add(K_ERR, err) break end
            local q = QUANT[byte(p, ep)]
            local text = sub(p, i, ep - 1)
            if c == 46 then
                add(K_ANY, nil, nil, q, 1, text)
            elseif c == 91 then
                add(K_SET, class_table(text), nil, q, ep - i, text)
            elseif c == 37 and is_letter(d) then
                add(K_SET, class_table(text), nil, q, 1, text)
            elseif c == 37 then
                add(K_LIT, d, nil, q, 1, literal(d))
            else
                add(K_LIT, c, nil, q, 1, literal(c))
            end
            i = q and ep + 1 or ep
        end
    end
    local closed = true
    for l = 1, level do
        if state[l] == "open" then closed = false end
    end
    return analyse({ kind = kind, A = A, B = B, Q = Q, W = W, T = T, n = n, ncap = level }, closed)
end

local caches = { {}, {} } -- [1]: anchor stripped (find, match, gsub); [2]: gmatch (no anchor)
local cache_count = { 0, 0 }

local function compiled(p, mode)
    local cache = caches[mode]
    local cp = cache[p]
    if cp then return cp end
    local anchored = mode == 1 and byte(p, 1) == 94
    cp = compile(anchored and sub(p, 2) or p)
    cp.anchored = anchored
    if #p > CACHE_LEN then return cp end
    if cache_count[mode] >= CACHE_MAX then
        cache = {}
        caches[mode], cache_count[mode] = cache, 0
    end
    cache[p] = cp
    cache_count[mode] = cache_count[mode] + 1
    return cp
end

-- ------------------------------------------------------------------ cost of the C matcher

-- Upper bounds of the work of lstrlib.c's match(), in units of one character test, for a subject
-- of N - 1 characters (from init).  Read from the end of the pattern, for the items j..:
--   w: the work of one match() call from one position;
--   t: the sum of that work over all positions.
-- A repetition tries the rest at up to r + 1 positions from a start, r being the longest run of its
-- class (N - 1 when unknown); a position q is then reached from at most r + 1 starts, so the sum
-- over all starts is (r + 1) times the rest's sum.  When the rest cannot fail it succeeds at the
-- first try.  A fixed item only continues at positions holding its class (`cnt` of them, N - 1 when
-- unknown).  Both bounds hold because lstrlib.c's work from a position depends on that position
-- only, back-references aside (they have no `t`).  Floats: these saturate to inf, never wrap.
-- `data`: nil, or what measure() found in the subject: runs R[j] and counts C[j] per item.
local function bounds(cp, N, data)
    local kind, Q, W, inf = cp.kind, cp.Q, cp.W, cp.inf
    local R, CNT = data and data.R, data and data.C
    local w, t = 1.0, N
    for j = cp.n, 1, -1 do
        local k, c = kind[j], W[j]
        if k <= K_SET then
            local q, once = Q[j], inf[j + 1]
            if q == Q_NONE then
                local rest = (CNT and CNT[j] or N) * w
                w, t = c + w, c * N + (rest < t and rest or t)
            else
                -- each form starts with one test of the first character; each try of the rest
                -- is a call of match()
                local r1 = (R and R[j] or N - 1) + 1
                if q == Q_STAR or q == Q_PLUS then
                    w, t = c * (r1 + 1) + (once and 1 + w or r1 * (1 + w)), c * N + r1 * ((c + 1) * N + t)
                elseif q == Q_MINUS then
                    if once then w, t = c + 1 + w, (c + 1) * N + t
                    else w, t = c + r1 * (c + 1 + w), c * N + r1 * ((c + 1) * N + t) end
                else
                    w, t = c + 1 + (once and w or 2 * w), (c + 1) * N + 2 * t
                end
            end
        elseif k == K_BAL then
            -- a scan from each opening character; the end of a balanced match determines its start
            w, t = N + w, (CNT and CNT[j] or N) * N + N + t
        elseif k == K_BREF then
            w, t = N + w, huge
        elseif k == K_FRONT then
            w, t = 2 * c + w, 2 * c * N + t
        elseif k == K_DOLLAR then
            w, t = 1.0, N
        else
            w, t = 1 + w, N + t
        end
    end
    return w, t
end

-- The cost of the items before the first repetition (they never backtrack).
local function prefix_cost(cp, N)
    local kind, W = cp.kind, cp.W
    local w = 0.0
    for j = 1, cp.j0 - 1 do
        local k = kind[j]
        if k == K_BAL or k == K_BREF then w = w + N
        elseif k == K_FRONT then w = w + 2 * W[j]
        else w = w + W[j] end
    end
    return w
end

-- An upper bound of the work of a whole call on a subject of n characters (from init), the least
-- of three.  `many`: gsub and gmatch, which try a position twice when an empty match ends there.  The third is for the shape of most everyday patterns, "fixed items, a repetition, then
-- only items that cannot fail" ("%s+", "(%w+)%s*", "[^,]*"): a start either fails in the fixed
-- items or the match succeeds, and successful matches scan disjoint stretches of the subject.
local function total_cost(cp, n, many, data)
    local N = n + 1.0
    local w, t = bounds(cp, N, data)
    w, t = w + 1, t + N -- the call of match() at each start
    if cp.anchored then return w end
    local again = many and not cp.consumes -- a position is tried again only after an empty match
    local starts = again and 2 * N or N
    local cost = starts * w
    if again then t = 2 * t end
    if t < cost then cost = t end
    local j0 = cp.j0
    if j0 and cp.inf[j0 + 1] then
        local linear = starts * (prefix_cost(cp, N) + cp.cmax * (cp.n - j0 + 4)) + cp.cmax * N
        if linear < cost then cost = linear end
    end
    return cost
end

-- The longest run of the class of `text` in s from init (nil: unknown), and what remains of the
-- allowance: searches for k characters of the class in a row, k doubling then bisected, each a C
-- call that costs about n * k, as long as the allowance covers them.
local function longest_run(s, init, n, text, c, allow)
    local lo, hi = 0, 4 -- there is a run of lo; is there one of hi?
    while true do
        local cost = (n + 1.0) * hi * c
        if cost > allow then return nil, allow end
        allow = allow - cost
        if not sfind(s, rep(text, hi), init) then break end
        lo, hi = hi, hi * 2
    end
    while hi - lo > 1 do
        local mid = (lo + hi) // 2
        local cost = (n + 1.0) * mid * c
        if cost > allow then return hi - 1, allow end
        allow = allow - cost
        if sfind(s, rep(text, mid), init) then lo = mid else hi = mid end
    end
    return lo, allow
end

-- Measures the subject for the classes of the pattern, for bounds(): at most MEASURED classes, and
-- C searches that cost about a budget in all, so that measuring stays cheaper than what it saves.
local MEASURED = 6
local function measure(cp, s, init, n)
    local kind, Q, T, W = cp.kind, cp.Q, cp.T, cp.W
    local R, CNT, runs, counts, classes = {}, {}, {}, {}, 0
    local allow = budget
    for j = 1, cp.n do
        local k, text = kind[j], T[j]
        if k == K_LIT or k == K_SET or k == K_BAL then
            if k == K_BAL or Q[j] == Q_NONE then
                if counts[text] == nil then
                    classes = classes + 1
                    if classes > MEASURED then return nil end
                    local _, cnt = sgsub(s, text, "")
                    counts[text] = cnt
                end
                CNT[j] = counts[text]
            else
                if runs[text] == nil then
                    classes = classes + 1
                    if classes > MEASURED then return nil end
                    local r
                    r, allow = longest_run(s, init, n, text, W[j], allow)
                    runs[text] = r or false
                end
                R[j] = runs[text] or nil
            end
        end
    end
    return { R = R, C = CNT }
end

-- Whether a call on n characters from init may run in C.  Without looking at the subject, the cost
-- grows with n: each compiled pattern remembers the largest n known to fit and the smallest known
-- not to, so that most calls decide in O(1).  Over that, the subject's runs and counts may show
-- that this call is cheap after all.
local function fits(cp, s, init, n, many)
    local lo, hi = many and "ok_many" or "ok_one", many and "bad_many" or "bad_one"
    local ok, bad = cp[lo], cp[hi]
    if ok and n <= ok then return true end
    if not (bad and n >= bad) then
        if total_cost(cp, n, many, nil) <= budget then
            cp[lo] = n
            return true
        end
        cp[hi] = n
    end
    if not cp.measurable then return false end
    local data = measure(cp, s, init, n)
    return data ~= nil and total_cost(cp, n, many, data) <= budget
end

local function plain_cost(n, m)
    if m > n then return 1.0 end
    return (n - m + 1.0) * (m + 1.0)
end

-- ------------------------------------------------------------------ argument checking

-- The C library's messages (lauxlib.c luaL_argerror / luaL_typeerror).  `level` is the level, seen
-- from argerror, of the API function whose argument is wrong.
local function argerror(level, arg, fname, msg)
    local name, method = nil, false
    if getinfo then
        local ar = getinfo(level, "n")
        if ar then name, method = ar.name, ar.namewhat == "method" end
    end
    if method then
        arg = arg - 1
        if arg == 0 then error(sformat("calling '%s' on bad self (%s)", name, msg), level + 1) end
    end
    error(sformat("bad argument #%d to '%s' (%s)", arg, name or "string." .. fname, msg), level + 1)
end

local function typename(v, present)
    if not present then return "no value" end
    local mt = rawmeta(v)
    local name = type(mt) == "table" and rawget(mt, "__name")
    if type(name) == "string" then return name end
    return type(v)
end

-- luaL_checklstring: strings, and numbers converted as Lua converts them.  `lvl`: the level of the
-- API function seen from here.
local function check_string(v, arg, fname, nargs, lvl)
    local t = type(v)
    if t == "string" then return v end
    if t == "number" then return v .. "" end
    argerror(lvl + 1, arg, fname, "string expected, got " .. typename(v, arg <= nargs))
end

-- luaL_optinteger
local function opt_integer(v, arg, fname, default, lvl)
    if v == nil then return default end
    if mtype(v) == "integer" then return v end
    local t = type(v)
    local x = (t == "number" or t == "string") and tonumber(v) or nil
    if x == nil then argerror(lvl + 1, arg, fname, "number expected, got " .. typename(v, true)) end
    local i = tointeger(x)
    if i == nil then argerror(lvl + 1, arg, fname, "number has no integer representation") end
    return i
end

-- lstrlib.c posrelatI, 1-based: the start position for an `init` argument.
local function start_pos(init, len)
    if init > 0 then return init end
    if init == 0 or init < -len then return 1 end
    return len + init + 1
end

-- ------------------------------------------------------------------ the Lua matcher

-- State of one matching (lstrlib.c's MatchState): the subject, the compiled pattern, the captures
-- (ci: start, cl: length or CAP_UNF / CAP_POS), and the remaining nesting depth.  `up` is the number
-- of stack frames above the outermost do_match up to the user's frame, so that errors are reported
-- at the user's line as C does.
local function new_state(S, cp, up)
    return { S = S, len = #S, kind = cp.kind, A = cp.A, B = cp.B, Q = cp.Q, G = cp.G, H = cp.H,
        ci = {}, cl = {}, level = 0, depth = MAXCCALLS, up = up }
end

-- k: the number of do_match frames on the stack
local function raise(ms, msg, k)
    error(msg, k + ms.up + 1)
end

-- Whether the single-character item (k, a) matches at s.
local function single(S, len, s, k, a)
    if s > len then return false end
    if k == K_LIT then return byte(S, s) == a end
    return k == K_ANY or a[byte(S, s)] == true
end

-- Whether match(items j.., s) would fail at once on its guard item (see compile), its captures
-- aside; only when the calls skipped this way could not have raised "pattern too complex".
local function hopeless(ms, S, len, s, j)
    local g = ms.G[j]
    return g ~= nil and ms.depth > ms.H[j] and not single(S, len, s, ms.kind[g], ms.A[g])
end

-- The first position at or after s whose character item j does not match (the end of a run).
local function run_end(S, len, s, k, a)
    if k == K_ANY then return len + 1 end
    if k == K_LIT then
        while s <= len and byte(S, s) == a do s = s + 1 end
    else
        while s <= len and a[byte(S, s)] do s = s + 1 end
    end
    return s
end

-- Compares S[x .. x+l-1] with S[y .. y+l-1] a slice at a time, so that no single C call between two
-- instructions does unbounded work.
local SLICE = 4096
local function same(S, x, y, l)
    while l > 0 do
        local c = l < SLICE and l or SLICE
        if sub(S, x, x + c - 1) ~= sub(S, y, y + c - 1) then return false end
        x, y, l = x + c, y + c, l - c
    end
    return true
end

-- lstrlib.c's match(): the position after the match of items j.. from position s, or nil.  Recurses
-- where C recurses (so that the depth limit and its error are the same), loops where C loops.
-- No tail calls: the error levels count these frames.
local do_match
do_match = function(ms, s, j)
    local d = ms.depth
    if d == 0 then raise(ms, "pattern too complex", MAXCCALLS + 1) end
    ms.depth = d - 1
    local kind, A, Q = ms.kind, ms.A, ms.Q
    local S, len = ms.S, ms.len
    local res = nil
    while true do
        local k = kind[j]
        if k == nil then -- end of pattern
            res = s
            break
        elseif k <= K_SET then
            local a, q = A[j], Q[j]
            local ok = s <= len and (k == K_ANY or (k == K_LIT and byte(S, s) == a) or
                (k == K_SET and a[byte(S, s)] == true))
            if not ok then
                if q == Q_STAR or q == Q_OPT or q == Q_MINUS then
                    j = j + 1 -- accept the empty repetition and go on
                else
                    break
                end
            elseif q == Q_NONE then
                s, j = s + 1, j + 1
            elseif q == Q_OPT then
                local r = do_match(ms, s + 1, j + 1)
                if r then res = r break end
                j = j + 1
            elseif q == Q_MINUS then -- min_expand: the rest first, then one more repetition
                while true do
                    local r = not hopeless(ms, S, len, s, j + 1) and do_match(ms, s, j + 1)
                    if r then res = r break end
                    if s <= len and (k == K_ANY or (k == K_LIT and byte(S, s) == a) or
                            (k == K_SET and a[byte(S, s)] == true)) then
                        s = s + 1
                    else
                        break
                    end
                end
                break
            else -- max_expand: the longest run first, then shorter ones
                local base = q == Q_PLUS and s + 1 or s
                local i = run_end(S, len, base, k, a)
                while i >= base do
                    local r = not hopeless(ms, S, len, i, j + 1) and do_match(ms, i, j + 1)
                    if r then res = r break end
                    i = i - 1
                end
                break
            end
        elseif k == K_OPEN or k == K_POS then
            local l = ms.level + 1
            ms.ci[l], ms.cl[l] = s, k == K_POS and CAP_POS or CAP_UNF
            ms.level = l
            local r = do_match(ms, s, j + 1)
            if not r then ms.level = l - 1 end
            res = r
            break
        elseif k == K_CLOSE then
            local l = A[j]
            ms.cl[l] = s - ms.ci[l]
            local r = do_match(ms, s, j + 1)
            if not r then ms.cl[l] = CAP_UNF end
            res = r
            break
        elseif k == K_DOLLAR then
            if s == len + 1 then res = s end
            break
        elseif k == K_BAL then -- matchbalance
            local open, close = A[j], ms.B[j]
            if s > len or byte(S, s) ~= open then break end
            local depth, t, found = 1, s + 1, nil
            while t <= len do
                local c = byte(S, t)
                if c == close then
                    depth = depth - 1
                    if depth == 0 then found = t + 1 break end
                elseif c == open then
                    depth = depth + 1
                end
                t = t + 1
            end
            if not found then break end
            s, j = found, j + 1
        elseif k == K_FRONT then -- the string is seen as framed by '\0' on both sides
            local set = A[j]
            local prev = s > 1 and byte(S, s - 1) or 0
            local cur = s <= len and byte(S, s) or 0
            if set[prev] or not set[cur] then break end
            j = j + 1
        elseif k == K_BREF then
            local l = A[j]
            local cl = ms.cl[l]
            -- a position capture has no text: C compares a huge length and never matches
            if cl < 0 or len - s + 1 < cl or not same(S, ms.ci[l], s, cl) then break end
            s, j = s + cl, j + 1
        else -- K_ERR
            raise(ms, A[j], MAXCCALLS - d + 1)
        end
    end
    ms.depth = d
    return res
end

local function reset(ms)
    ms.level, ms.depth = 0, MAXCCALLS
end

-- lstrlib.c get_onecapture: capture i (1-based), or the whole match s..e-1 when there is no capture.
-- `lvl`: the error level of the user's frame seen from here.
local function get_capture(ms, i, s, e, lvl)
    if i > ms.level then
        if i ~= 1 then error("invalid capture index %" .. i, lvl) end
        return sub(ms.S, s, e - 1)
    end
    local l = ms.cl[i]
    if l == CAP_UNF then error("unfinished capture", lvl) end
    if l == CAP_POS then return ms.ci[i] end
    local init = ms.ci[i]
    return sub(ms.S, init, init + l - 1)
end

-- lstrlib.c push_captures, as a table and a count.  Called directly by a driver (lvl 4: here,
-- get_capture, the driver, the user).
local function captures(ms, s, e)
    local n = (ms.level == 0 and s) and 1 or ms.level
    local t = {}
    for i = 1, n do t[i] = get_capture(ms, i, s, e, 4) end
    return t, n
end

-- ------------------------------------------------------------------ plain search in Lua

-- lstrlib.c lmemfind for the Lua path: candidates by their first byte (a memchr in C, linear over
-- the whole search), then a comparison by slices.
local function plain_find(S, p, init)
    local m, len = #p, #S
    if m == 0 then return init, init - 1 end
    local first = sub(p, 1, 1)
    local last = len - m + 1
    local at = init
    while at <= last do
        local i = sfind(S, first, at, true)
        if not i or i > last then return nil end
        local ok
        if m <= SLICE then
            ok = sub(S, i, i + m - 1) == p
        else
            ok = true
            for x = 1, m, SLICE do
                local y = x + SLICE - 1
                if sub(S, i + x - 1, i + y - 1) ~= sub(p, x, y) then ok = false break end
            end
        end
        if ok then return i, i + m - 1 end
        at = i + 1
    end
    return nil
end

-- ------------------------------------------------------------------ drivers

-- These run with the user's frame right above them (the API functions tail-call them), which the
-- error levels below count on.

-- The first position from s where the pattern may match: where its guard item matches (found in
-- C: a linear search), or s.  nil when there is none.
local function next_start(S, cp, s)
    local g = cp.G[1]
    if not g then return s end
    return (sfind(S, cp.T[g], s))
end

-- lstrlib.c str_find_aux
local function find_lua(find, S, p, init, plain)
    local len = #S
    if plain then return plain_find(S, p, init) end
    local cp = compiled(p, 1)
    local ms = new_state(S, cp, 2)
    local s1 = init
    repeat
        if not cp.anchored then
            s1 = next_start(S, cp, s1)
            if not s1 then break end
        end
        reset(ms)
        local e = do_match(ms, s1, 1)
        if e then
            if find then
                local t, n = captures(ms, nil, nil)
                return s1, e - 1, unpack(t, 1, n)
            end
            local t, n = captures(ms, s1, e)
            return unpack(t, 1, n)
        end
        s1 = s1 + 1
    until s1 > len + 1 or cp.anchored
    return nil
end

-- lstrlib.c gmatch / gmatch_aux
local function gmatch_lua(S, p, init)
    local cp = compiled(p, 2)
    local ms = new_state(S, cp, 2)
    local len = #S
    local src, lastmatch = init, nil
    return function()
        local s = src
        while s <= len + 1 do
            s = next_start(S, cp, s)
            if not s then break end
            reset(ms)
            local e = do_match(ms, s, 1)
            if e and e ~= lastmatch then
                src, lastmatch = e, e
                local t, n = captures(ms, s, e)
                return unpack(t, 1, n)
            end
            s = s + 1
        end
    end
end

-- A replacement string, parsed once: literal strings, capture numbers 0..9, and false where C
-- raises "invalid use of '%'" (everything before it is still used for each match, as in C).
local repl_cache, repl_count = {}, 0

local function parse_repl(r)
    local cached = repl_cache[r]
    if cached then return cached end
    local parts, maxref, bad = {}, 0, false
    local i, m = 1, #r
    while true do
        local pct = sfind(r, "%", i, true)
        if not pct then
            if i <= m then parts[#parts + 1] = sub(r, i) end
            break
        end
        if pct > i then parts[#parts + 1] = sub(r, i, pct - 1) end
        local d = byte(r, pct + 1)
        if d == 37 then
            parts[#parts + 1] = "%"
        elseif d and d >= 48 and d <= 57 then
            parts[#parts + 1] = d - 48
            if d - 48 > maxref then maxref = d - 48 end
        else
            parts[#parts + 1] = false
            bad = true
            break
        end
        i = pct + 2
    end
    cached = { parts = parts, maxref = maxref, bad = bad }
    if m > CACHE_LEN then return cached end
    if repl_count >= CACHE_MAX then repl_cache, repl_count = {}, 0 end
    repl_cache[r] = cached
    repl_count = repl_count + 1
    return cached
end

-- Calls f(...) from inside a C function, as lstrlib.c does, so that a yield from a replacement
-- function (or an __index) fails the same way whichever matcher runs.  Reentrant: the values are
-- taken before f runs and the result is read as soon as the C call returns.
local tr_f, tr_args, tr_n, tr_res
local function trampoline()
    local f, args, n = tr_f, tr_args, tr_n
    tr_res = f(unpack(args, 1, n))
end
local function call_in_c(f, args, n)
    tr_f, tr_args, tr_n = f, args, n
    sgsub("x", "x", trampoline)
    local r = tr_res
    tr_f, tr_args, tr_res = nil, nil, nil
    return r
end
local function index(t, k) return t[k] end

-- lstrlib.c add_s / add_value: the text that replaces the match s..e-1.  Called directly by
-- gsub_lua (error level 3: here, gsub_lua, the user; 4 from get_capture).
local function replacement(ms, s, e, repl, tr)
    if tr == "string" then
        local out = {}
        for i, part in ipairs(repl.parts) do
            if part == false then error("invalid use of '%' in replacement string", 3) end
            if part == 0 then
                out[i] = sub(ms.S, s, e - 1)
            elseif type(part) == "number" then
                local v = get_capture(ms, part, s, e, 4)
                out[i] = type(v) == "number" and v .. "" or v
            else
                out[i] = part
            end
        end
        return concat(out)
    end
    local v
    if tr == "function" then
        local args, n = {}, (ms.level == 0) and 1 or ms.level
        for i = 1, n do args[i] = get_capture(ms, i, s, e, 4) end
        v = call_in_c(repl, args, n)
    else
        local key = get_capture(ms, 1, s, e, 4)
        if getmetatable(repl) == nil then
            v = rawget(repl, key)
        else
            v = call_in_c(index, { repl, key }, 2)
        end
    end
    if v == nil or v == false then return sub(ms.S, s, e - 1) end
    local t = type(v)
    if t == "string" then return v end
    if t == "number" then return v .. "" end
    error("invalid replacement value (a " .. t .. ")", 3)
end

-- lstrlib.c str_gsub
local function gsub_lua(S, p, repl, tr, max_n)
    local cp = compiled(p, 1)
    local ms = new_state(S, cp, 2)
    local len = #S
    local src, lastmatch, copied = 1, nil, 1
    local out, nout, count = {}, 0, 0
    while count < max_n do
        if not cp.anchored then
            src = next_start(S, cp, src)
            if not src then break end
        end
        reset(ms)
        local e = do_match(ms, src, 1)
        if e and e ~= lastmatch then
            count = count + 1
            if src > copied then
                nout = nout + 1
                out[nout] = sub(S, copied, src - 1)
            end
            local v = replacement(ms, src, e, repl, tr)
            nout = nout + 1
            out[nout] = v
            src, lastmatch, copied = e, e, e
        elseif src <= len then
            src = src + 1
        else
            break
        end
        if cp.anchored then break end
    end
    if count == 0 then return S, 0 end
    nout = nout + 1
    out[nout] = sub(S, copied)
    return concat(out, "", 1, nout), count
end

-- ------------------------------------------------------------------ the API

local P = {}

-- The checks of the first three arguments, called by the API functions (lvl 2 from the checks),
-- for arguments other than two strings and an integer or nil.
local function check3(fname, nargs, s, p, init)
    s = check_string(s, 1, fname, nargs, 3)
    p = check_string(p, 2, fname, nargs, 3)
    return s, p, opt_integer(init, 3, fname, 1, 3)
end

-- The API functions do their checks themselves (argument errors name them through debug.getinfo)
-- and tail-call the Lua drivers (which must be right below the user's frame).

function P.find(...)
    local s, p, init, plain = ...
    if type(s) ~= "string" or type(p) ~= "string" or (init ~= nil and mtype(init) ~= "integer") then
        s, p, init = check3("find", select("#", ...), s, p, init)
    end
    local len = #s
    init = init == nil and 1 or start_pos(init, len)
    if init > len + 1 then return nil end
    if plain or not sfind(p, SPECIALS) then -- lstrlib.c nospecials: a plain search (not compiled)
        if plain_cost(len - init + 1, #p) <= budget then return sfind(s, p, init, true) end
        return find_lua(true, s, p, init, true)
    end
    local cp = compiled(p, 1)
    if cp.safe and fits(cp, s, init, len - init + 1, false) then return sfind(s, p, init) end
    return find_lua(true, s, p, init, false)
end

function P.match(...)
    local s, p, init = ...
    if type(s) ~= "string" or type(p) ~= "string" or (init ~= nil and mtype(init) ~= "integer") then
        s, p, init = check3("match", select("#", ...), s, p, init)
    end
    local len = #s
    init = init == nil and 1 or start_pos(init, len)
    if init > len + 1 then return nil end
    local cp = compiled(p, 1)
    if cp.safe and fits(cp, s, init, len - init + 1, false) then return smatch(s, p, init) end
    return find_lua(false, s, p, init, false)
end

function P.gmatch(...)
    local s, p, init = ...
    if type(s) ~= "string" or type(p) ~= "string" or (init ~= nil and mtype(init) ~= "integer") then
        s, p, init = check3("gmatch", select("#", ...), s, p, init)
    end
    local len = #s
    init = init == nil and 1 or start_pos(init, len)
    if init > len + 1 then init = len + 2 end
    local cp = compiled(p, 2)
    if cp.safe and fits(cp, s, init, len + 1 - init, true) then return sgmatch(s, p, init) end
    return gmatch_lua(s, p, init)
end

function P.gsub(...)
    local s, p, repl, max_n = ...
    local tr = type(repl)
    if type(s) ~= "string" or type(p) ~= "string" or (max_n ~= nil and mtype(max_n) ~= "integer") or
            (tr ~= "string" and tr ~= "function" and tr ~= "table") then
        local nargs = select("#", ...)
        s = check_string(s, 1, "gsub", nargs, 2)
        p = check_string(p, 2, "gsub", nargs, 2)
        max_n = opt_integer(max_n, 4, "gsub", nil, 2)
        if tr == "number" then
            repl, tr = repl .. "", "string"
        elseif tr ~= "string" and tr ~= "function" and tr ~= "table" then
            argerror(2, 3, "gsub", "string/function/table expected, got " .. typename(repl, nargs >= 3))
        end
    end
    local cp = compiled(p, 1)
    local parsed = tr == "string" and parse_repl(repl)
    local ok = cp.safe and fits(cp, s, 1, #s, true)
    -- a replacement string C could reject ('%' misused, a capture the pattern lacks) goes to Lua
    if ok and parsed then ok = not parsed.bad and parsed.maxref <= (cp.ncap > 0 and cp.ncap or 1) end
    if ok then return sgsub(s, p, repl, max_n) end
    return gsub_lua(s, p, parsed or repl, tr, max_n or #s + 1)
end

function P.set_budget(n)
    if type(n) ~= "number" or n ~= n or n < 0 then error("set_budget: expected a number >= 0", 2) end
    budget = n
    caches, cache_count = { {}, {} }, { 0, 0 } -- the remembered decisions depend on the budget
end

function P.budget() return budget end

function P.estimate(op, s, p, init, plain)
    local len = #s
    init = op == "gsub" and 1 or start_pos(init or 1, len)
    local n = len + 1 - init
    if n < 0 then return 0.0 end
    if op == "find" and (plain or not sfind(p, SPECIALS)) then return plain_cost(n, #p) end
    local cp = compiled(p, op == "gmatch" and 2 or 1)
    if not cp.safe then return huge end
    local many = op == "gsub" or op == "gmatch"
    local cost = total_cost(cp, n, many, nil)
    if cost > budget and cp.measurable then
        local data = measure(cp, s, init, n)
        if data then
            local c2 = total_cost(cp, n, many, data)
            if c2 < cost then cost = c2 end
        end
    end
    return cost
end

return P
