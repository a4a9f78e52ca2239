"""Lua objects that Python keeps outlive the coroutine that handed them over (worker.lua_anchor).

lupa ties each wrapper to the `lua_State` the value came through; a wrapper kept past its
coroutine's collection writes into freed memory when used or released. Such a crash takes the
whole process, so each scenario runs in a child process and the test reads its exit code.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# Many coroutines each hand a table to a host function that keeps it, then end; Lua collects them
# and reuses their memory; then Python reads every kept table and drops it.
KEEPER = """\
from worker.lua_anchor import anchor_host
from worker.runtime import new_lua

lua = new_lua(1 << 62)
kept = []
host = anchor_host(lua, {"keep": kept.append})
run = lua.eval('''function(keep, n)
  for i = 1, n do
    local co = coroutine.create(function(v) keep({v, tostring(v)}) end)
    coroutine.resume(co, i)
  end
  collectgarbage(); collectgarbage()
  local junk = {}
  for i = 1, n do
    local co = coroutine.create(function() end); coroutine.resume(co)
    junk[i] = {i, i, i, i, i, i, i, i}
  end
  return #junk
end''')
run(host["keep"], 3000)
print(sum(t[1] for t in kept), all(t[2] == str(t[1]) for t in kept))
kept.clear()
"""

# The same through a workflow: coroutines that start an activity with a table argument and end;
# the task's commands are built from those tables after Lua collected the coroutines.
SPAWNER = """\
import sys
from pathlib import Path
from legato.config import Limits
from tests.unit.worker.helpers import History, make_app
from worker.replay import new_execution

reg = make_app(Path(sys.argv[1]), {"w": '''
return function()
    for i = 1, 400 do
        coroutine.spawn(function() funcs.async("app:f", {i = i, text = string.rep("x", 40)}) end)
    end
    return process.listen("go"):receive()
end'''}, {"f": "return function(x) return x end"})
h = History("app:w", [])
ex = new_execution(reg, "app:w", Limits(max_commands_per_task=1000), workflow_id="w", run_id="r", task_queue="q")
cmds = ex.process(h.events)
print(len(cmds), sorted(c.attrs["input"][0]["i"] for c in cmds) == list(range(1, 401)))
# the coroutines are collected and their memory reused; then the run lets go of its commands
ex.run.lua.execute('''collectgarbage(); collectgarbage()
    local junk = {}
    for i = 1, 3000 do
        local co = coroutine.create(function() end); coroutine.resume(co)
        junk[i] = {i, i, i, i, i, i, i, i}
    end''')
ex.dispose()
print("disposed")
"""


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_tables_kept_by_a_host_function_outlive_their_coroutines() -> None:
    p = run_child(KEEPER)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == [str(3000 * 3001 // 2), "True"]


def test_commands_built_after_their_coroutines_were_collected(tmp_path: Path) -> None:
    p = run_child(SPAWNER, str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["400", "True", "disposed"]
