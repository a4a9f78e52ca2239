"""Wippy's typed Lua: erased to plain Lua 5.4 keeping every line, run in lupa; plain Lua untouched;
what cannot be parsed refused with its line; a typed app run end to end by `legato run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lupa import lua54

from worker.entries import EntryError, compile_lua, load_registry
from worker.typed_lua import TypedLuaError, compile_source, erase

ROOT = Path(__file__).resolve().parents[3]

_lua = lua54.LuaRuntime(register_eval=False)
_run_chunk = _lua.eval(
    "function(src) local f, err = load(src, '@t.lua', 't') if not f then return false, err end "
    "return pcall(f) end")


def run(typed: str) -> Any:
    """Erase, check the shape is kept, run in Lua; the chunk's result (or raise its error)."""
    plain = erase(typed)
    assert plain.count("\n") == typed.count("\n")
    ok, value = _run_chunk(plain)
    if not ok:
        raise RuntimeError(value)
    return value


def lua_error(typed: str) -> str:
    with pytest.raises(RuntimeError) as e:
        run(typed)
    return str(e.value)


# ---------------------------------------------------------------- each form, erased and run

FORMS: list[tuple[str, str, Any]] = [
    ("local primitives",
     'local n: number = 3.5 local i: integer = 2 local s: string = "a" local b: boolean = true\n'
     "local a: any = 1 local u: unknown = 2 local z: nil = nil\n"
     "return n * i .. s .. tostring(b) .. a + u", "7.0a" "true3"),
    ("optional, union, intersection, literal",
     'local x: number? = nil local v: number | string = "s" local p: Named & Aged = {}\n'
     'local st: "pending" | "active" = "active" local t: true = true\n'
     "return tostring(x) .. v .. st", "nilsactive"),
    ("several names, some typed", 'local a: number, b, c: string = 1, 2, "c"\nreturn a + b .. c', "3c"),
    ("table types",
     "local arr: {number} = {1, 2} local map: {[string]: number} = {a = 1}\n"
     "local rec: {name: string, age?: number, [string]: any} = {name = 'n'}\n"
     "local nested: {items: {{id: integer}}, empty: {}} = {items = {{id = 7}}}\n"
     "local arr2: number[] = {3} local ro: readonly {number} = {4}\n"
     "return #arr + map.a + nested.items[1].id + arr2[1] + ro[1] .. rec.name", "17n"),
    ("function types",
     "local f: (number, number) -> number = function(a, b) return a + b end\n"
     "local g: (x: number) -> (number, string) = function(x) return x, 'y' end\n"
     "local h: () -> () = function() end local k: fun(n: number): string = tostring\n"
     "local cb: ((string) -> number)? = nil\n"
     "local a, b = g(2) return f(1, 2) .. a .. b .. k(5)", "32y5"),
    ("typed parameters and return types",
     "local function add(a: number, b: number?): number\n    return a + (b or 0)\nend\n"
     "local function div_mod(a: integer, b: integer): (integer, integer)\n    return a // b, a % b\nend\n"
     "local function pair(): number, string return 1, 'x' end\n"
     "local function fetch(url: string): (string?, error?) return nil, nil end\n"
     "local q, r = div_mod(7, 2) local one, x = pair()\nreturn add(1) + add(1, 2) + q + r + one .. x", "9x"),
    ("varargs", "local function sum(...: number): number\n  local t: number = 0\n"
                "  for _, v in ipairs({...}) do t = t + v end return t\nend\nreturn sum(1, 2, 3)", 6),
    ("anonymous functions and table fields",
     "local m = {f = function(x: number): number return x * 2 end}\n"
     "local double: (number) -> number = function(x: number): number\n    return x * 2\nend\n"
     "return m.f(2) + double(3)", 10),
    ("generics",
     "local function identity<T>(x: T): T return x end\n"
     "function first<T, U: HasName>(arr: {T}, u: U?): T? return arr[1] end\n"
     "local anon = function<T>(x: T): {T} return {x} end\n"
     "local b: Box<string> = {value = 'v'} local bb: Box<Box<number>> = {}\n"
     "local m: Map<string, {integer}>= {}\n"
     "return identity(1) + first({2}) + anon(3)[1] .. b.value", "6v"),
    ("type declarations",
     "type Point = {x: number, y: number}\nexport type Box<T> = {value: T}\n"
     "type Result<T, E> =\n    {ok: true, value: T}\n    | {ok: false, error: E}\n"
     "type Status = \"pending\" | \"active\" | \"done\"\ntype StringMap = {[string]: number}\n"
     "type Fn = (number) -> number\ntype Config = {\n    host: string,\n    timeout?: number,\n}\n"
     "local p: Point = {x = 1, y = 2}\nreturn p.x + p.y", 3),
    ("a declaration between a call and a parenthesised statement stays a separate statement",
     "local r = {} local function f() return function() r[#r + 1] = 'called' end end\n"
     "local g = function() r[#r + 1] = 'g' end\n"
     "f()\ntype T = number\n(g)()\nreturn table.concat(r, ',')", "g"),
    ("interfaces",
     "interface Shape\n    function area(self): number\n    function name(self, upper: boolean?): string\nend\n"
     "interface Circle: Shape, Named\n    radius: number\nend\n"
     "local c: Circle = {radius = 2}\nreturn c.radius", 2),
    ("casts with as and ::",
     "local data: any = {name = 'x', n = 2}\nlocal user = data as User\nlocal u2 = data :: {name: string}\n"
     "local n = (data.n as number) + 1\nlocal c = data as any as User\n"
     "local f = get and (get as (string) -> number)\nreturn user.name .. u2.name .. n .. c.n", "xx32"),
    ("a cast continued on the next line",
     "local data = {v = 4}\nlocal user = data\n    as User\nreturn user.v", 4),
    ("non-nil assertion", "local user: {name: string}? = {name = 'ann'}\n"
                          "local a = (user!).name local b = user!.name\nreturn a .. b", "annann"),
    ("validators",
     "local x: number @min(0) = 1\nlocal y: number @min(0) @max(100) = 50\n"
     "local e: string @pattern(\"^.+@.+$\") = 'a@b'\nlocal s: {number @min(0) @max(100)} = {85}\n"
     "local id: number @min(1) | string @min_len(1) = 1\n"
     "type User = {\n    age: number @min(0) @max(150),\n    name: string @min_len(1)\n}\n"
     "return x + y + s[1] + id .. e", "137a@b"),
    ("never, conditional, typeof and keyof types",
     "local function fail(msg: string): never error(msg) end\n"
     "type K = keyof(Point) type C = T extends string ? number : boolean\n"
     "local v = 1 local w: typeof(v) = 2\nreturn w", 2),
    ("methods", "local A = {v = 3}\nfunction A:get(x: integer): integer return self.v + x end\n"
                "function A.static(x: number): number return x end\nreturn A:get(1) + A.static(1)", 5),
    ("typed for names", "local t = 0\nfor k: string, v: number in pairs({a = 1}) do t = t + v end\n"
                        "for i: integer = 1, 3 do t = t + i end\nreturn t", 7),
    ("Lua 5.4 attributes with types",
     "local a <const>: number = 1\nlocal b: number <const> = 2\nlocal c <const> = 3\nreturn a + b + c", 6),
    ("labels, goto and method calls beside types",
     "local n: integer = 0\n::top::\nn = n + 1\nif n < 3 then goto top end\n"
     "local s = ('x'):rep(n)\nreturn s:upper()", "XXX"),
    ("as used as an identifier where it cannot be a cast",
     "local as = 1\nlocal t = {as = 2}\nt.as = as + t.as\nlocal o = {}\nfunction o:as(): number return 10 end\n"
     "local as2: number = as\nas = as + 1\nreturn o:as() + t.as + as + as2", 16),
    ("annotation-like text in strings and comments is left alone",
     "local s: string = 'local x: number = 1' -- x as T, type X = {}\n"
     "local l = [==[\n function f(a: T): U ]] end\n]==] --[[ local y: number ]]\n"
     "return s .. #l", "local x: number = 128"),
    ("numbers in every form", "local a: number = 0x10 + 0xA.8p1 + 1e2 + .5 + 3. + 0x.1P4\n"
                              "local i: integer = 7 // 2\nreturn a + i", 16 + 21 + 100 + 0.5 + 3 + 1 + 3),
]


@pytest.mark.parametrize(("typed", "expected"), [(src, exp) for _, src, exp in FORMS],
                         ids=[name for name, _, _ in FORMS])
def test_each_form_erases_compiles_and_runs(typed: str, expected: Any) -> None:
    assert run(typed) == expected


BUILTIN_CASTS: list[tuple[str, Any]] = [
    ("local x: any = 'hi' return string(x)", "hi"),
    ("local x: any = 2.5 return number(x)", 2.5),
    ("local x: any = 42 return integer(x)", 42),
    ("local x: any = 42.0 return math.type(integer(x))", "integer"),
    ("local x: any = false return boolean(x)", False),
    ("return int(3) + (bool(true) and 1 or 0)", 4),
    ("local d: any = {a = '1', b = 2, c = true}\nlocal s, n, b = string(d.a), integer(d.b), boolean(d.c)\n"
     "return s .. n .. tostring(b) .. string.upper('ok')", "12trueOK"),
]


@pytest.mark.parametrize(("typed", "expected"), BUILTIN_CASTS)
def test_builtin_casts_validate_and_return_the_value(typed: str, expected: Any) -> None:
    assert run(typed) == expected


@pytest.mark.parametrize(("typed", "message"), [
    ("local x = 1\n\nlocal s = string(x)\nreturn s", "t.lua:3: cannot cast integer to string"),
    ("local x = '5'\nreturn number(x)", "t.lua:2: cannot cast string to number"),
    ("local x = 2.5\nreturn integer(x)", "t.lua:2: cannot cast float to integer"),
    ("return boolean(nil)", "t.lua:1: cannot cast nil to boolean"),
])
def test_a_failed_builtin_cast_raises_at_the_callers_line(typed: str, message: str) -> None:
    assert message in lua_error(typed)


def test_a_function_or_variable_named_like_a_cast_is_not_a_cast() -> None:
    src = ("local function integer(v) return v * 2 end\nlocal number = tostring\n"
           "return integer(4) .. number(1)")
    assert erase(src) is src
    assert run(src) == "81"
    field = "local t = {number = 5, string = 'x'}\nlocal n: number = number(t.number)\nreturn n"
    assert run(field) == 5  # a table field named `number` does not shadow the cast


# ---------------------------------------------------------------- lines and columns kept

LINE_CASES = [
    ("type Point = {\n    x: number,\n    y: number,\n}\nlocal p: Point = {x = 1}\n"
     "local function f(a: number,\n                 b: number?): number\n    return a + b\nend\nreturn f(p.x)", 8),
    ("local function g<T>(x: T): T\n  return x\nend\nlocal v = g(nil) as {n: number}\nreturn v.n.m", 5),
    ("interface I\n  function m(self): number\nend\nlocal u: I? = nil\nlocal n = (u!).x", 5),
    ("local a: {\n  [string]: number\n} = {}\nlocal s = string(1)\n", 4),
    ("--[[ long\ncomment ]] local x: integer = 1\nlocal y = [[\n\n]] .. x\nerror('boom')", 6),
]


@pytest.mark.parametrize(("typed", "line"), LINE_CASES)
def test_an_error_on_line_n_of_the_typed_source_is_reported_on_line_n(typed: str, line: int) -> None:
    assert f"t.lua:{line}:" in lua_error(typed)


def test_a_lua_syntax_error_after_types_keeps_its_line() -> None:
    typed = "local x: number = 1\ntype T = {a: string}\nlocal function f(a: T): number\n  return 1 +\nend\n"
    ok, err = _run_chunk(erase(typed))
    assert not ok and "t.lua:5:" in err


def test_columns_outside_annotations_are_kept() -> None:
    typed = ("local a: number = 1\nlocal function f(x: integer, y: string?): number return x end\n"
             "local b = a as number + f(2) :: integer")
    plain = erase(typed)
    for t_line, p_line in zip(typed.splitlines(), plain.splitlines(), strict=True):
        assert len(t_line) == len(p_line)
        for word in ("local", "= 1", "return x end", "+ f(2)"):
            if word in t_line:
                assert p_line.index(word) == t_line.index(word)


def test_crlf_and_cr_line_endings_are_kept() -> None:
    typed = "local a: number = 1\r\nlocal b: string = 'x'\r\nerror('here')\r\n"
    plain = erase(typed)
    assert plain.count("\r\n") == 3 and plain.replace(" ", "") == "locala=1\r\nlocalb='x'\r\nerror('here')\r\n"
    assert "t.lua:3:" in lua_error(typed)


# ---------------------------------------------------------------- plain Lua passes through

def _lua_files() -> list[Path]:
    """Every plain Lua file of the project (examples/typed and files named typed*.lua are typed on purpose)."""
    files = [*sorted((ROOT / "examples").rglob("*.lua")), *sorted((ROOT / "tests" / "apps").rglob("*.lua")),
             ROOT / "worker" / "kernel.lua", *sorted((ROOT / "worker" / "kernel").glob("*.lua")),
             ROOT / "worker" / "patterns.lua"]
    return [f for f in files if f.exists() and f.parent.name != "typed" and not f.name.startswith("typed")]


@pytest.mark.parametrize("path", _lua_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_plain_lua_files_pass_through_byte_for_byte(path: Path) -> None:
    text = path.read_text()
    assert erase(text) is text


PLAIN = [
    "local obj = {v = 1}\nfunction obj:get(x) return self.v + x end\nreturn obj:get(1), obj.get(obj, 2)",
    "local t = {a = 1, b = 2; [3] = 4, 'x'}\nreturn t",
    "for i = 1, 3 do\n  if i == 2 then goto continue end\n  ::continue::\nend",
    "local s = \"x: number\" .. 'y as T' .. [[type X = {}]] -- local z: integer\n--[==[ f(a: T): U ]==]",
    "local t = type\nPoint = {}\nreturn type(t)",  # `type` a variable ending the line above
    "local as = 1\nlocal export, interface = 2, 3\nreturn as + export + interface",
    "local x = 1 local y = x >= 1 and x >> 1 or x << 2",
    "local s = 'a\\z\n   b\\\nc\\'d\\\"' local n = 0xA.8p1 + 1e-3 + .5",
    "local a = f\n(g)()",  # Lua's own reading: a call
]


@pytest.mark.parametrize("src", PLAIN)
def test_plain_lua_snippets_pass_through(src: str) -> None:
    assert erase(src) is src


# ---------------------------------------------------------------- refused, with the line

REFUSED = [
    ("local a = 1\nlocal x: = 5", 2, "expected a type"),
    ("local a = 1\n\nlocal t: {number = 5}", 3, "to close the table type"),
    ("type X =\n", 2, "expected a type"),
    ("local function f(a: number,\n  b: ): number end", 2, "expected a type"),
    ("local p: Box<number = 1", 1, "to close the type list"),
    ("if a != b then end", 1, "'!=' is not Lua: use '~='"),
    ("local y = 1\nif !y then end", 2, "'!' is not Lua: use 'not'"),
    ("local v = ?", 1, "unexpected '?'"),
    ("local v = x\n:: number", 2, None),  # ... accepted: a cast continued on the next line
    ("local v = :: number", 1, "unexpected '::'"),
    ("local f: (number, string) = nil", 1, "needs '->'"),
    ("type Point = {x: number}\nlocal data = {}\n\nlocal p = Point(data)", 4, "type 'Point' used as a value"),
    ("type Point = {x: number}\nif Point:is({}) then end", 2, "type 'Point' used as a value"),
    ("interface I\n  x = 1\nend", 2, "expected a method or a field"),
]


@pytest.mark.parametrize(("typed", "line", "message"), REFUSED)
def test_unparseable_type_syntax_is_refused_with_its_line(typed: str, line: int, message: str | None) -> None:
    if message is None:
        erase(typed)
        return
    with pytest.raises(TypedLuaError) as e:
        erase(typed)
    assert e.value.line == line and message in e.value.message, (e.value.line, e.value.message)
    assert e.value.column >= 1


def test_compile_source_uses_lua_for_plain_sources_and_names_file_and_line_for_typed_ones() -> None:
    plain = "return function(x) return x end\n"
    assert compile_source(plain, "p.lua", compile_lua) == compile_lua(plain, "p.lua")
    broken = "local function main()\n  return 1 +\nend\n"
    assert compile_source(broken, "b.lua", compile_lua) == compile_lua(broken, "b.lua")  # Lua's own message
    bytecode, err = compile_source("local x: number = 1\nlocal y: {number = 2\n", "t.lua", compile_lua)
    assert bytecode is None and err is not None and err.startswith("t.lua:2: ")
    bytecode, err = compile_source("local x: number = 1\nlocal y = x + )\n", "t.lua", compile_lua)
    assert bytecode is None and err is not None and err.startswith("t.lua:2: ")  # Lua's, on the erased text
    bytecode, err = compile_source("local x: number = 1\nreturn x\n", "t.lua", compile_lua)
    assert bytecode is not None and err is None


def test_the_loader_refuses_a_bad_annotation_naming_the_lua_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.lua").write_text("local function main(x: number): number\n  local y: {string = x\nend\n"
                                    "return {main = main}\n")
    (tmp_path / "app.yaml").write_text("namespace: x\nentries:\n  - {name: w, kind: temporal.worker, task_queue: q}\n"
                                       "  - {name: a, kind: workflow.lua, source: file://a.lua}\n")
    with pytest.raises(EntryError) as e:
        load_registry(tmp_path / "app.yaml")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'app.yaml'}:4:") and "a.lua:2:" in msg and "syntax error" in msg


# ---------------------------------------------------------------- speed

def _typed_program(lines: int) -> str:
    block = ("type Item{n} = {{id: integer, name: string, tags: {{string}}?}}\n"
             "local function price{n}(item: Item{n}, qty: integer?, ...: number): (number, string?)\n"
             "    local total: number = (item.id as number) * (qty or 1)\n"
             "    local names: {{[string]: number}} = {{a = 1, b = 2}}\n"
             "    if item.tags ~= nil then total = total + #(item.tags!) end\n"
             "    for k: string, v: number in pairs(names) do total = total + v end\n"
             "    return total, obj:method(item.name, {{x = 1}})\n"
             "end\n"
             "local v{n}: Box<{{number}}> = {{value = {{price{n}({{id = 1, name = 'x'}}, 2)}}}}\n"
             "-- a comment with local x: number in it\n")
    return "".join(block.format(n=i) for i in range(lines // 10))


def test_a_1000_line_typed_file_erases_to_lua_that_compiles() -> None:
    """(Its speed is measured, not asserted: about 4-7 ms for 1,000 lines on 2 cores.)"""
    src = _typed_program(1000)
    assert src.count("\n") == 1000
    out = erase(src)
    assert out.count("\n") == 1000
    _, err = compile_lua(out, "big.lua")
    assert err is None


# ---------------------------------------------------------------- end to end: `legato run`

TYPED_YAML = """\
version: "1.0"
namespace: typed
entries:
  - {name: worker, kind: temporal.worker, task_queue: typed}
  - {name: quote, kind: workflow.lua, source: file://workflow.lua, method: main, modules: [funcs],
     meta: {temporal: {workflow: {worker: typed:worker}}}}
  - {name: price, kind: function.lua, source: file://function.lua, method: price,
     meta: {temporal: {activity: {worker: typed:worker}}}}
  - {name: broken, kind: workflow.lua, source: file://broken.lua, method: main,
     meta: {temporal: {workflow: {worker: typed:worker}}}}
"""

TYPED_WORKFLOW = """\
local funcs = require("funcs")

type Line = {sku: string, qty: integer}
type Order = {lines: {Line}, coupon?: string}
export type Quote = {total: number, lines: integer, note: string}

local function main(order: Order): (Quote?, error?)
    local total: number = 0
    for _, line: Line in ipairs(order.lines) do
        local price, err = funcs.call("typed:price", line.sku, integer(line.qty))
        if err then return nil, err end
        total = total + (price as number)
    end
    local note: string = order.coupon and string(order.coupon) or "none"
    return {total = total, lines = #order.lines, note = note} :: Quote
end

return {main = main}
"""

TYPED_FUNCTION = """\
type Prices = {[string]: number}
local PRICES: Prices = {book = 12, lamp = 30}

local function price<T>(sku: string, qty: integer): number
    local unit: number? = PRICES[sku]
    if unit == nil then error("no such sku: " .. sku) end
    return (unit!) * qty
end

return {price = price}
"""

TYPED_BROKEN = """\
local function main(n: integer): integer
    local doubled: integer = n * 2

    return doubled + nil_value.field
end
return {main = main}
"""


@pytest.fixture(scope="module")
def typed_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    app = tmp_path_factory.mktemp("typed")
    for name, text in {"app.yaml": TYPED_YAML, "workflow.lua": TYPED_WORKFLOW, "function.lua": TYPED_FUNCTION,
                       "broken.lua": TYPED_BROKEN}.items():
        (app / name).write_text(text)
    return app


def test_legato_run_runs_a_typed_workflow_calling_a_typed_activity(typed_app: Path) -> None:
    from tests.integration.procs import legato

    order = {"lines": [{"sku": "book", "qty": 2}, {"sku": "lamp", "qty": 1}], "coupon": "SPRING"}
    p = legato("run", "--entries", str(typed_app), "typed:quote", "--input", json.dumps(order), "--timeout", "60s")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"total": 54, "lines": 2, "note": "SPRING"}
    p = legato("run", "--entries", str(typed_app), "typed:broken", "--input", "3", "--timeout", "60s")
    assert p.returncode == 2 and "broken.lua:4" in p.stderr, p.stderr  # the typed source's own line
