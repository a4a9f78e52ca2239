"""worker/patterns.lua: Lua 5.4's pattern functions, bounded by the instruction hook.

The module must give exactly what the C library gives (results, and errors with their position),
whichever matcher runs: with a budget of 0 every call runs the Lua matcher, which the differential
tests compare with the C library on hand-picked and seeded random cases.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from lupa import lua54

SRC = (Path(__file__).resolve().parents[3] / "worker" / "patterns.lua").read_text()

# Runs the C library and the module the same way, from the same line (so errors carry the same
# position prefix), and returns the mismatches as readable strings.  The harness and the cases are
# Lua so that thousands of cases take a fraction of a second.
HARNESS = r"""
local P0, P1 = ...
local pack, unpack, concat = table.pack, table.unpack, table.concat

local function show(v)
    if type(v) == "string" then return string.format("%q", v) end
    return tostring(v)
end

local function collect(it, limit)
    local out = {}
    for _ = 1, limit do
        local r = pack(it())  -- the iterators are called from this line whichever the library
        if r[1] == nil then break end
        out[#out + 1] = r
    end
    return out
end

-- one call of lib[name], as a list of strings: "ok" and the values, or "error" and the message
local function run(lib, name, args)
    local f = lib[name]
    local function go()
        if name == "gmatch" then
            local it = f(unpack(args, 1, args.n))  -- all the calls are made from this line
            local rows = collect(it, 50)
            local flat = {}
            for _, r in ipairs(rows) do
                for i = 1, r.n do flat[#flat + 1] = show(r[i]) end
                flat[#flat + 1] = "|"
            end
            return flat
        end
        local r = pack(f(unpack(args, 1, args.n)))
        local flat = {}
        for i = 1, r.n do flat[i] = show(r[i]) end
        return flat
    end
    local ok, res = pcall(go)
    if ok then return "ok " .. concat(res, " ") end
    return "error " .. show(res)
end

-- C's errors without their position ("where: message")
local function unplaced(s) return (s:gsub('^error ".-:%d+: ', 'error "')) end

-- the fast path calls C from patterns.lua, and C places a bad replacement value there
local function same_fast(got, want)
    if got == want then return true end
    return got:find('^error "legato/patterns%.lua:%d+: invalid replacement value') and unplaced(got) == unplaced(want)
end

return function(cases)
    local bad = {}
    for i = 1, #cases do
        local case = cases[i]
        local name, args = case[1], case[2]
        local want = run(string, name, args)
        local got0 = run(P0, name, args)
        local got1 = run(P1, name, args)
        -- the Lua matcher reproduces even the position prefix of C's errors
        if got0 ~= want or not same_fast(got1, want) then
            local shown = {}
            for j = 1, args.n do shown[j] = show(args[j]) end
            bad[#bad + 1] = name .. "(" .. concat(shown, ", ") .. ")\n  C:      " .. want ..
                "\n  lua:    " .. got0 .. "\n  budget: " .. got1
            if #bad >= 10 then break end
        end
    end
    return concat(bad, "\n")
end
"""

# Lua expressions used as replacement values (functions and tables built in Lua)
REPL_EXPRS = {
    "fn_cat": "function(...) local t = table.pack(...) for i = 1, t.n do t[i] = tostring(t[i]) end "
              "return table.concat(t, '/') end",
    "fn_nil": "function() return nil end",
    "fn_false": "function() return false end",
    "fn_num": "function(a) return 42.5 end",
    "fn_int": "function(a) return 7 end",
    "fn_table": "function() return {} end",
    "fn_true": "function() return true end",
    "fn_err": "function(a) error('boom: ' .. tostring(a)) end",
    "tbl": "{a = 'A', b = 1, ['('] = false, x = true, [1] = 'one', [3] = {}, ab = 'AB'}",
    "tbl_meta": "setmetatable({}, {__index = function(_, k) return type(k) == 'string' and k:upper() or nil end})",
}


def load_module(lua: Any, budget: float | None = None) -> Any:
    loader = lua.eval("function(src, b) return load(src, '=legato/patterns.lua', 't')(string, b) end")
    return loader(SRC, budget)


@pytest.fixture(scope="module")
def lua() -> Any:
    return lua54.LuaRuntime(unpack_returned_tuples=True)


@pytest.fixture(scope="module")
def check(lua: Any) -> Any:
    p0 = load_module(lua, 0)
    p1 = load_module(lua)
    compare = lua.execute(HARNESS, p0, p1)
    repls = {k: lua.eval(v) for k, v in REPL_EXPRS.items()}
    nil = object()

    def run(cases: list[tuple[Any, ...]]) -> None:
        table = []
        for name, *args in cases:
            while args and args[-1] is nil:
                args.pop()
            # strings as bytes: lupa would encode str to UTF-8, and the cases mean single bytes
            vals = [repls[a[1:]] if isinstance(a, str) and a.startswith("@")
                    else a.encode("latin-1") if isinstance(a, str) else a for a in args]
            row = lua.table_from({i + 1: (None if v is nil else v) for i, v in enumerate(vals)})
            row["n"] = len(vals)
            table.append(lua.table_from([name, row]))
        bad = compare(lua.table_from(table))
        assert not bad, bad

    run.nil = nil  # type: ignore[attr-defined]
    return run


# ------------------------------------------------------------------ hand-picked cases

HAND: list[tuple[Any, ...]] = [
    # find: plain, specials, init
    ("find", "hello world", "o w"),
    ("find", "hello world", "o", 6),
    ("find", "hello world", "o", -3),
    ("find", "hello world", "o", -100),
    ("find", "hello world", "o", 0),
    ("find", "hello world", "", 12),
    ("find", "hello world", "", 13),
    ("find", "hello world", "", 100),
    ("find", "hello world", "%", 100),  # init past the end: no error, as in C
    ("find", "a.b", ".", 1, True),
    ("find", "a.b", "%.", 1, False),
    ("find", "a)b", "a)"),  # no special character: a plain search
    ("find", "a+b", "a+b", 1, True),
    ("find", "a+b", "a+b"),
    ("find", "abc", "^b"),
    ("find", "abc", "^a"),
    ("find", "abc", "c$"),
    ("find", "abc", "b$"),
    ("find", "a$c", "$c"),
    ("find", "a^c", "a^c"),
    ("find", "abc", "^"),
    ("find", "abc", "$"),
    ("find", "", ""),
    ("find", "", "^$"),
    ("find", 12345, 34),
    ("find", 1.5, "%."),
    ("find", "aaa", "a-", 2),
    ("find", "  x  ", "()x()"),
    # match and captures
    ("match", "  trim me  ", "^%s*(.-)%s*$"),
    ("match", "key = value", "(%w+)%s*=%s*(%w+)"),
    ("match", "hello", "()ll()"),
    ("match", "hello", "(h)(e)(l)(l)(o)"),
    ("match", "hello", "((h)(e(l)))"),
    ("match", "abcabc", "(abc)%1"),
    ("match", "abcabd", "(abc)%1"),
    ("match", "xyxy", "(()x(y))%1"),
    ("match", "xx", "()x%1"),  # a back-reference to a position capture never matches
    ("match", "date: 2024-01-31", "(%d+)-(%d+)-(%d+)"),
    ("match", "f(a(b)c)d", "%b()"),
    ("match", "f(a(b)c", "%b()"),
    ("match", "[[x]]", "%b[]"),
    ("match", "''x'", "%b''"),
    ("match", "THE (quick) fox", "%f[%a]%a+"),
    ("match", "THE (quick) fox", "%f[%a]%a+", 5),
    ("match", "hello world", "%f[%w]%w+$"),
    ("match", "x", "%f[%z]"),
    ("match", "x", "x%f[%z]"),
    ("match", "x", "%f[%Z]"),
    ("match", "a]b", "[]]"),
    ("match", "a]b", "[^]]+"),
    ("match", "a-b", "[a-]+"),
    ("match", "a-b", "[-a]+"),
    ("match", "%x", "[%%]"),
    ("match", "a1_", "[%w_]+"),
    ("match", "a1_", "[%a-z]+"),
    ("match", "abc", "[a-%z]+"),
    ("match", "A\x00B", "%z"),
    ("match", "A\x00B", "%Z+"),
    ("match", "caf\xe9 \xff", "%a+"),
    ("match", "caf\xe9 \xff", "[\xe0-\xff]+"),
    ("match", "a\x00b", "a%zb"),
    ("match", "a\x00b", "a\x00b"),
    ("match", "a.b", "a%.b"),
    ("match", "a%b", "a%%b"),
    ("match", "2+2=4", "%d%+%d"),
    ("match", "aaab", "a-b"),
    ("match", "aaab", "a*"),
    ("match", "aaab", "a+?"),
    ("match", "aaab", "a**"),
    ("match", "b", "a?b"),
    ("match", "ab", "a?b"),
    ("match", "abc", ".-c"),
    ("match", "abc", "(.-)c"),
    ("match", "abc", "(.*)()"),
    ("match", "hello", ".", -1),
    ("match", "hello", "()", 10),
    ("match", "hello", "()", 6),
    # gmatch: init, empty matches, '^' (an ordinary character in gmatch)
    ("gmatch", "one two  three", "%a+"),
    ("gmatch", "one two  three", "%a*"),
    ("gmatch", "one two three", "%a+", 5),
    ("gmatch", "one two three", "%a+", -5),
    ("gmatch", "one two three", "%a+", 100),
    ("gmatch", "abc", ""),
    ("gmatch", "abc", "()"),
    ("gmatch", "abc", "x*"),
    ("gmatch", "^a^a", "^a"),
    ("gmatch", "aaa", "^a"),
    ("gmatch", "k1=v1, k2=v2", "(%w+)=(%w+)"),
    ("gmatch", "a,b,,c", "([^,]*)"),
    # gsub
    ("gsub", "hello world", "o", "0"),
    ("gsub", "hello world", "(o)", "[%1%0%%]"),
    ("gsub", "hello world", "%w+", "%0 %0", 1),
    ("gsub", "hello world", "%w+", "<%1>"),
    ("gsub", "hello world", "", "-"),
    ("gsub", "hello world", "x*", "-"),
    ("gsub", "hello world", "^h", "H"),
    ("gsub", "hello world", "^", ">"),
    ("gsub", "hello world", "$", "<"),
    ("gsub", "hello world", "o", "0", 0),
    ("gsub", "hello world", "o", "0", -1),
    ("gsub", "hello world", "o", "0", 1.0),
    ("gsub", "hello world", "o", 5),
    ("gsub", "hello world", "o", 5.5),
    ("gsub", "abc", "%w", "@fn_cat"),
    ("gsub", "abc", "(%w)()", "@fn_cat"),
    ("gsub", "abc", "()", "@fn_cat"),
    ("gsub", "abc", "%w", "@fn_nil"),
    ("gsub", "abc", "%w", "@fn_false"),
    ("gsub", "abc", "%w", "@fn_num"),
    ("gsub", "abc", "%w", "@fn_int"),
    ("gsub", "abc", "%w", "@fn_table"),
    ("gsub", "abc", "%w", "@fn_true"),
    ("gsub", "abc", "%w", "@fn_err"),
    ("gsub", "abc", "%w", "@tbl"),
    ("gsub", "xab", "%w", "@tbl"),
    ("gsub", "abc", "()%w", "@tbl"),
    ("gsub", "abc", "(%w)", "@tbl_meta"),
    ("gsub", "abc", "()", "[%1]"),
    ("gsub", "abc", "%w", "%1"),
    ("gsub", "abc", "%w", "%2"),
    ("gsub", "abc", "(%w)", "%2"),
    ("gsub", "abc", "%w", "%x"),
    ("gsub", "abc", "%w", "x%"),
    ("gsub", "abc", "z", "%x"),  # a bad replacement that is never used
    ("gsub", "abc", "(b)(c)", "%2%1"),
    ("gsub", "abc", "(b", "x"),
    ("gsub", "abc", "(b", "%0"),
    # errors of patterns
    ("find", "a", "%"),
    ("find", "a", "a%"),
    ("find", "abc", "[a"),
    ("find", "abc", "[a%"),
    ("find", "abc", "[]"),
    ("find", "abc", "[^]"),
    ("find", "abc", "x["),  # never reached: no error
    ("find", "abc", "(b"),
    ("find", "abc", "b)"),
    ("match", "abc", "b)"),
    ("match", "abc", ")"),
    ("match", "abc", "(()"),
    ("find", "xa", "x%1"),
    ("find", "aa", "(a)%2"),
    ("find", "aa", "(a%1)"),
    ("find", "aa", "(a)%0"),
    ("find", "aa", "%b"),
    ("find", "aa", "%ba"),
    ("find", "aa", "a%b"),
    ("find", "aa", "%f"),
    ("find", "aa", "%fa"),
    ("find", "aa", "%f[a"),
    ("find", "aaa", "(" * 32 + ")" * 32),
    ("find", "aaa", "(" * 33 + ")" * 33),
    ("find", "aaa", "()" * 32),
    ("find", "aaa", "()" * 33),
    ("find", "a" * 250, "a?" * 199),
    ("find", "a" * 250, "a?" * 200),
    ("find", "a" * 250, "a?" * 300),
    ("find", "a" * 250, "(" * 30 + "a*" * 170 + ")" * 30),
    ("find", "a" * 250, "(" * 31 + "a*" * 170 + ")" * 31),
    ("find", "a" * 250, "a-" * 199 + "$"),
    ("find", "a" * 250, "a-" * 200 + "$"),
    ("match", "a" * 10, "(a-)" * 66 + "$"),
    ("match", "a" * 10, "(a-)" * 67 + "$"),
    ("match", "a" * 5 + "b", "^" + "a-" * 199 + "b"),  # the Lua matcher skips calls that fail at once,
    ("match", "a" * 5 + "b", "^" + "a-" * 200 + "b"),  # but not those that would be too deep
    ("match", "a" * 5 + "b", "^(" + "a-" * 197 + ")b"),
    ("match", "a" * 5 + "b", "^(" + "a-" * 198 + ")b"),
    ("match", "a" * 5 + "b", "^" + "a*" * 199 + "b"),
    ("match", "a" * 5 + "b", "^" + "a*" * 200 + "b"),
    ("gmatch", "a" * 250, "a?" * 200),
    ("gsub", "a" * 250, "a?" * 200, "x"),
    # errors of arguments
    ("find",),
    ("find", "x"),
    ("find", None, "x"),
    ("find", True, "x"),
    ("find", "x", {}),
    ("find", "x", "x", "2"),
    ("find", "x", "x", "0x1"),
    ("find", "x", "x", "a"),
    ("find", "x", "x", 1.5),
    ("find", "x", "x", 2.0**63),
    ("find", "x", "x", {}),
    ("match", "x"),
    ("gmatch", "x"),
    ("gmatch", "x", "x", "y"),
    ("gsub", "x", "x"),
    ("gsub", "x", "x", None),
    ("gsub", "x", "x", True),
    ("gsub", "x", "x", True, "n"),
    ("gsub", "x", "x", "y", 1.5),
    ("gsub", "x", "(", True),
    ("gsub", "x"),
]


def test_hand_picked_cases_equal_the_c_library(check: Any) -> None:
    check(HAND)


# ------------------------------------------------------------------ seeded random cases

SUBJECT_CHARS = "aab b(c)[]%-.^$AZ09_ \t\n\x00\xe9\xff,"
PATTERN_CHARS = "ab()[]%-.^$*+?AZ09_ \x00\xe9,"
CLASSES = "acdglpsuwxzACDGLPSUWXZ.%-]()[^$*+?b0f1"


def rand_class(r: random.Random) -> str:
    k = r.random()
    if k < 0.3:
        return r.choice("aabbc ()^$_Z9")
    if k < 0.45:
        return "."
    if k < 0.75:
        return "%" + r.choice(CLASSES)
    parts = []
    if r.random() < 0.3:
        parts.append("^")
    if r.random() < 0.15:
        parts.append("]")
    for _ in range(r.randint(0, 4)):
        k = r.random()
        if k < 0.4:
            parts.append(r.choice("abc-()%^]. \xe9"))
        elif k < 0.7:
            lo, hi = sorted(r.sample("abcxyz019", 2))
            parts.append(lo + "-" + hi)
        else:
            parts.append("%" + r.choice(CLASSES))
    body = "[" + "".join(parts)
    return body if r.random() < 0.05 else body + "]"


def rand_pattern(r: random.Random, depth: int = 0) -> str:
    out = []
    if r.random() < 0.2:
        out.append("^")
    quantified = 0
    for _ in range(r.randint(0, 6)):
        k = r.random()
        if k < 0.55:
            item = rand_class(r)
            if quantified < 3 and r.random() < 0.4:
                item += r.choice("*+-?")
                quantified += 1
            out.append(item)
        elif k < 0.65 and depth < 2:
            out.append("(" + rand_pattern(r, depth + 1).lstrip("^") + (")" if r.random() < 0.92 else ""))
        elif k < 0.7:
            out.append("()")
        elif k < 0.76:
            out.append("%b" + "".join(r.sample("()ab[]", 2)))
        elif k < 0.82:
            out.append("%f" + rand_class(r) if r.random() < 0.9 else "%f")
        elif k < 0.88:
            out.append("%" + r.choice("0123"))
        elif k < 0.94:
            out.append(r.choice(PATTERN_CHARS))
        else:
            out.append(r.choice(["$", ")", "%", "[", "(", "%b", "%b("]))
    if r.random() < 0.15:
        out.append("$")
    return "".join(out)


def rand_subject(r: random.Random) -> str:
    return "".join(r.choice(SUBJECT_CHARS) for _ in range(r.randint(0, 10)))


def rand_init(r: random.Random, nil: object) -> object:
    return r.choice([nil, nil, nil, 1, 2, 0, -1, -3, -20, 5, 11, 12, 100])


def rand_repl(r: random.Random) -> object:
    k = r.random()
    if k < 0.5:
        return "".join(r.choice(["x", "%0", "%1", "%2", "%%", "-", "%", "%a", "%9"]) for _ in range(r.randint(0, 3)))
    if k < 0.55:
        return r.choice([3, 2.5])
    return "@" + r.choice(list(REPL_EXPRS))


def random_cases(seed: int, count: int, nil: object) -> list[tuple[Any, ...]]:
    r = random.Random(seed)
    cases: list[tuple[Any, ...]] = []
    for _ in range(count):
        op = r.choice(["find", "find", "match", "gmatch", "gsub"])
        s, p = rand_subject(r), rand_pattern(r)
        if op == "find":
            cases.append((op, s, p, rand_init(r, nil), r.choice([nil, nil, nil, True, False])))
        elif op in ("match", "gmatch"):
            cases.append((op, s, p, rand_init(r, nil)))
        else:
            cases.append((op, s, p, rand_repl(r), r.choice([nil, nil, nil, 0, 1, 2, -1])))
    return cases


@pytest.mark.parametrize("seed", range(4))
def test_random_cases_equal_the_c_library(check: Any, seed: int) -> None:
    check(random_cases(seed, 2500, check.nil))


def test_random_subjects_with_every_class_equal_the_c_library(check: Any) -> None:
    # every byte against every class item, alone, negated, in sets and in frontiers
    r = random.Random(7)
    subject = bytes(range(256)).decode("latin-1")
    items = ["%" + c for c in "acdglpsuwxzACDGLPSUWXZ"] + [".", "[%w_]", "[^%s%p]", "[\x80-\xff]", "[a-f%d]"]
    cases: list[tuple[Any, ...]] = []
    for it in items:
        frontier = "%f[" + it.strip("[]") + "]"
        cases += [("gsub", subject, it, "."), ("gsub", subject, it + "+", "<%0>"), ("find", subject, frontier)]
        cases += [("gmatch", subject, "()" + it), ("match", subject, it + "-$", r.randint(1, 256))]
    check(cases)


# ------------------------------------------------------------------ behaviour around the matcher

def test_error_positions_and_names_follow_the_callers_line(lua: Any) -> None:
    # the Lua matcher raises at the caller's line, like C, and argument errors name the function as
    # the caller called it (also for method calls on strings).  Not after a tail call ("return
    # s:find(p)"): a Lua function tail-called replaces its caller's frame, so its errors name the
    # line of the caller's caller, where C names the line of the return.
    p0 = load_module(lua, 0)
    run = lua.execute(r"""
        local P = ...
        local mt = getmetatable("")
        local saved = mt.__index
        local function both(code)
            local out = {}
            for i, lib in ipairs({string, P}) do
                mt.__index = setmetatable({find = lib.find, gsub = lib.gsub}, {__index = string})
                local f = load("local string = ...; " .. code, "=case")
                local ok, err = pcall(f, lib)
                out[i] = tostring(err)
            end
            mt.__index = saved
            return out[1], out[2]
        end
        local rows = {}
        for _, code in ipairs({
            "local r = ('a'):find('%')",
            "local r = string.find('a', '(')",
            "local r = ('a'):find(nil)",
            "local r = ('a'):find('a', {})",
            "local r = string.find()",
            "local o = {find = string.find}; local r = o:find('a')",
            "local r = ('aaa'):gsub('a', '%2')",
            "local r = ('aaa'):gsub('a', {a = {}})",
            "local r = ('aaa'):gsub('a', true)",
            "local r = ('" .. string.rep("a", 300) .. "'):find('" .. string.rep("a?", 250) .. "')",
            "for x in string.gmatch('abc', '(b') do end",
        }) do
            local c, l = both(code)
            rows[#rows + 1] = {c, l}
        end
        return rows
    """, p0)
    for row in run.values():
        c, mine = row[1], row[2]
        assert c == mine
        assert c.startswith("case:1:")


def test_lua_matcher_is_bounded_by_the_instruction_hook(lua: Any) -> None:
    p = load_module(lua)  # the default budget: this call is far over it
    run = lua.execute(r"""
        local P = ...
        local co = coroutine.create(function()
            return P.find(string.rep("a", 20000), ".-.-.-.-.-b")
        end)
        debug.sethook(co, function() error("instruction limit reached", 0) end, "", 10000000)
        local t0 = os.clock()
        local ok, err = coroutine.resume(co)
        return ok, err, os.clock() - t0
    """, p)
    ok, err, elapsed = run
    print(f"interrupted after {elapsed:.2f}s of CPU")
    assert ok is False
    assert err == "instruction limit reached"


def test_the_estimate_of_a_backtracking_pattern_is_over_budget(lua: Any) -> None:
    p = load_module(lua)
    s = "a" * 20000
    assert p.estimate("find", s, ".-.-.-.-.-b") > p.budget()
    assert p.estimate("find", s, "(.*)%1") > p.budget()
    assert p.estimate("find", "a" * 100, "a?" * 250) == float("inf")  # could raise: never C
    # the count of repetitions drives the bound: one repetition before a fallible item is quadratic
    assert p.estimate("find", "a" * 100, "a*b") < p.estimate("find", "a" * 100, "a*a*b")


def count_instructions(lua: Any, p: Any, code: str, *args: Any) -> tuple[int, Any]:
    """Runs `code` (a function body with P and the args as `...`) counting the VM instructions."""
    run = lua.execute(r"""
        local P, code = ...
        local f = load(code, "=count")
        local n = 0
        local co = coroutine.create(function(...) return f(P, ...) end)
        debug.sethook(co, function() n = n + 1 end, "", 1)
        local r = table.pack(coroutine.resume(co, select(3, ...)))
        assert(r[1], r[2])
        return n, r[2]
    """, p, code, *args)
    return run[0], run[1]


def test_ordinary_calls_run_the_c_function(lua: Any) -> None:
    p = load_module(lua)
    text = ("lorem ipsum  dolor\t sit amet,\n consectetur " * 250)[:10240]
    config = "".join(f"key{i} = value{i}\n" for i in range(600))
    calls = [
        ("find", "hello world", "o w"),
        ("gsub", text, "%s+"),
        ("gmatch", text, "%a+"),
        ("match", text, "^%s*(.-)%s*$"),
        ("gmatch", config, "(%w+)%s*=%s*(%w+)"),
        ("gsub", config, "(%w+)=(%w+)"),
        ("find", text, "%f[%w]%w+$"),
    ]
    for op, s, pat in calls:
        assert p.estimate(op, s, pat) <= p.budget(), (op, pat)
    # few instructions whatever the subject's length: the C function did the matching (the first
    # call of a pattern compiles it, hence a warm-up)
    code = """
        local P, op, s, pat = ...
        if op == "gmatch" then
            local k = 0
            for _ in P.gmatch(s, pat) do k = k + 1 end
            return k
        elseif op == "gsub" then
            return select(2, P.gsub(s, pat, "%0"))
        end
        return P[op](s, pat) ~= nil
    """
    for op, s, pat in calls:
        count_instructions(lua, p, code, op, s, pat)
        n, r = count_instructions(lua, p, code, op, s, pat)
        # hundreds of instructions (checks, estimate, measuring the subject's runs), where the Lua
        # matcher would take hundreds of thousands; the loop of gmatch is the caller's
        limit = 1000 + (10 * r if op == "gmatch" else 0)
        assert n < limit, (op, pat, n)
    # the same gsub through the Lua matcher takes instructions in proportion to the subject
    p0 = load_module(lua, 0)
    n0, _ = count_instructions(lua, p0, code, "gsub", text, "%s+")
    assert n0 > 10 * len(text), n0


def test_budget_can_be_changed(lua: Any) -> None:
    p = load_module(lua)
    assert p.budget() == 1e7
    code = "local P, s = ...; return (P.gsub(s, '%s+', ' '))"
    few, _ = count_instructions(lua, p, code, "a b " * 100)
    p.set_budget(0)
    many, _ = count_instructions(lua, p, code, "a b " * 100)
    p.set_budget(1e7)
    again, _ = count_instructions(lua, p, code, "a b " * 100)
    # (each count includes compiling the pattern: set_budget drops the compiled patterns)
    assert few < 1000 and many > 20 * few and again < 1000, (few, many, again)


def test_replacement_functions_cannot_yield_on_either_path(lua: Any) -> None:
    for budget in (0, None):
        p = load_module(lua, budget)
        ok, err = lua.execute(r"""
            local P = ...
            local co = coroutine.create(function()
                return P.gsub("abc", "%w", function(c) coroutine.yield(c) end)
            end)
            return coroutine.resume(co)
        """, p)
        assert ok is False and "attempt to yield across a C-call boundary" in err, (budget, err)


def test_errors_of_replacement_functions_pass_through_unchanged(lua: Any) -> None:
    for budget in (0, None):
        p = load_module(lua, budget)
        same = lua.execute(r"""
            local P = ...
            local e = {}
            local ok, got = pcall(P.gsub, "abc", "%w", function() error(e) end)
            return not ok and got == e
        """, p)
        assert same, budget


def test_reentrant_calls_from_replacement_functions(lua: Any) -> None:
    p = load_module(lua, 0)
    r = lua.execute(r"""
        local P = ...
        return (P.gsub("ab cd", "%w+", function(w)
            return (P.gsub(w, "%w", function(c) return P.gsub(c, ".", "%0%0") end))
        end))
    """, p)
    assert r == "aabb ccdd"


def test_large_inputs_on_the_lua_path(lua: Any) -> None:
    # the Lua matcher on subjects over the budget: the same results, in reasonable time
    p0 = load_module(lua, 0)
    text = ("  key_%d = value %d ;  " * 400) % tuple(range(800))
    t0 = time.perf_counter()
    got = lua.execute(r"""
        local P, s = ...
        local out = {}
        for _, lib in ipairs({string, P}) do
            local r = {}
            for k, v in lib.gmatch(s, "(%w+)%s*=%s*(%w+)") do r[#r + 1] = k .. "=" .. v end
            r[#r + 1] = lib.match(s, "^%s*(.-)%s*$")
            r[#r + 1] = lib.gsub(s, "%s+", " ")
            r[#r + 1] = select(2, lib.find(s, "value 799", 1, true))
            r[#r + 1] = select(2, lib.find(s, "(%d+) ;%s*$"))
            out[#out + 1] = table.concat(r, "\n")
        end
        return out[1] == out[2]
    """, p0, text)
    elapsed = time.perf_counter() - t0
    print(f"Lua path on {len(text)} bytes: {elapsed:.2f}s")
    assert got is True


# ------------------------------------------------------------------ soundness of the estimate

# Counters of the work of the Lua matcher, which follows lstrlib.c step by step: one unit per call
# of match() and per character tested or compared.  The skips that the Lua matcher adds over C are
# turned off, and the estimate always measures the subject.  Each patch: a line of patterns.lua
# (found by a unique part of it), and the Lua code put before it.
STEP_PATCHES = [
    ("    local d = ms.depth", "STEPS = STEPS + 1"),
    ("            local ok = s <= len and", "STEPS = STEPS + 1"),
    ("                    if s <= len and (k == K_ANY or (k == K_LIT", "STEPS = STEPS + 1"),
    ("    if k == K_ANY then return len + 1 end", "local s0 = s; if k == K_ANY then STEPS = STEPS + len + 1 - s end"),
    ("                local c = byte(S, t)", "STEPS = STEPS + 1"),
    ("            local prev = s > 1", "STEPS = STEPS + 2"),
    ("            if cl < 0 or len - s + 1 < cl", "STEPS = STEPS + (cl > 0 and cl or 0)"),
    ("    return g ~= nil and ms.depth > ms.H[j]", "do return false end"),
    ("    local g = cp.G[1]", "do return s end"),
    ("function P.budget() return budget end", "function P.steps() return STEPS end"),
]


def counting_source() -> str:
    """patterns.lua with a global STEPS counting the work of its matcher."""
    lines = SRC.split("\n")
    for part, code in STEP_PATCHES:
        found = [i for i, line in enumerate(lines) if part in line]
        assert len(found) == 1, part
        indent = lines[found[0]][: len(lines[found[0]]) - len(lines[found[0]].lstrip())]
        lines.insert(found[0], indent + code)
    src = "STEPS = 0\n" + "\n".join(lines)
    # the end of a run: one test per character and the failing one
    old = "    end\n    return s\nend\n\n-- Compares"
    assert src.count(old) == 1
    src = src.replace(old, "    end\n    STEPS = STEPS + (s - s0) + 1\n    return s\nend\n\n-- Compares")
    old = "    if cost > budget and cp.measurable then"
    assert src.count(old) == 1
    return src.replace(old, "    if cp.measurable then")


def test_the_estimate_bounds_the_work_of_the_c_matcher(lua: Any) -> None:
    src = counting_source()
    loader = lua.eval("function(src, b) return load(src, '=steps', 't')(string, b) end")
    counted, estimator = loader(src, 0), loader(src, float("inf"))
    run = lua.eval(r"""function(P, E, cases)
        local bad, n = {}, 0
        for _, c in ipairs(cases) do
            local op, s, p, init = c[1], c[2], c[3], c[4]
            local est = E.estimate(op, s, p, init)
            if est < math.huge then
                local before = P.steps()
                local ok = pcall(function()
                    if op == "gmatch" then for _ in P.gmatch(s, p, init) do end
                    elseif op == "gsub" then P.gsub(s, p, "%0")
                    else P[op](s, p, init) end
                end)
                local steps = P.steps() - before
                if ok then n = n + 1 end
                if ok and steps > est then
                    bad[#bad + 1] = string.format("%s(%q, %q, %s): %d steps, estimate %g", op, s, p, init, steps, est)
                end
            end
        end
        return table.concat(bad, "\n", 1, math.min(#bad, 10)), n
    end""")
    r = random.Random(11)
    items = ["a", "b", ".", "%a", "[ab]", "[^a]", "%s", "=", "(", ")", "()", "%b()", "%f[a]", "%1"]
    cases = []
    for i in range(6000):
        k = r.random()
        if k < 0.4:
            s = "".join(r.choice("ab") for _ in range(r.randint(0, 40)))
        elif k < 0.7:
            s = "a" * r.randint(0, 60) + r.choice(["", "b", "ab", "()"])
        else:
            s = "".join(r.choice("ab() x\n=") for _ in range(r.randint(0, 60)))
        if i % 2:
            p = rand_pattern(r)
        else:
            p = r.choice(["", "^"]) + "".join(r.choice(items) + r.choice(["", "", "*", "+", "-", "?"])
                                             for _ in range(r.randint(1, 5))) + r.choice(["", "$"])
        op = r.choice(["find", "match", "gmatch", "gsub"])
        cases.append(lua.table_from([op, s.encode("latin-1"), p.encode("latin-1"), r.choice([None, 1, 3, -5])]))
    bad, n = run(counted, estimator, lua.table_from(cases))
    assert n > 2000
    assert not bad, bad
