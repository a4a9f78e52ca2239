"""The operator commands of the CLI against a real dev server and worker: `workflow show --follow`,
`workflow trace`, `workflow replay`, `workflow stack` and the batch forms of terminate / signal
(`--query`)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.integration.conftest import fast_config
from tests.integration.procs import Cluster, Proc

T = TypeVar("T")

APP = """\
version: "1.0"
namespace: ops
entries:
  - {name: w, kind: temporal.worker, task_queue: ops}
  - {name: waits, kind: workflow.lua, source: file://waits.lua, method: main,
     meta: {temporal: {workflow: {worker: ops:w}}}}
  - {name: quick, kind: workflow.lua, source: file://quick.lua, method: main,
     meta: {temporal: {workflow: {worker: ops:w}}}}
  - {name: parent, kind: workflow.lua, source: file://parent.lua, method: main, modules: [workflow],
     meta: {temporal: {workflow: {worker: ops:w}}}}
  - {name: flow, kind: workflow.lua, source: file://flow.lua, modules: [funcs],
     meta: {temporal: {workflow: {worker: ops:w}}}}
  - {name: two, kind: workflow.lua, source: file://two.lua, method: main,
     meta: {temporal: {workflow: {worker: ops:w}}}}
  - {name: a, kind: function.lua, source: file://acts.lua, method: a, meta: {temporal: {activity: {worker: ops:w}}}}
  - {name: b, kind: function.lua, source: file://acts.lua, method: b, meta: {temporal: {activity: {worker: ops:w}}}}
"""
WAITS = """\
local function main()
    process.listen("go"):receive()
    return "done"
end
return { main = main }
"""
TWO = """\
local function main()
    local ch = channel.new()
    coroutine.spawn(function()
        ch:receive()
    end)
    process.listen("go"):receive()
    ch:send(1)
    return "done"
end
return { main = main }
"""
QUICK = 'return { main = function(n) return n end }\n'
PARENT = """\
local workflow = require("workflow")
local function main()
    local events = process.events()
    for i = 1, 3 do
        local _, err = workflow.exec("ops:quick", i)
        if err then return nil, err end
    end
    process.spawn("ops:waits", "ops:w")
    events:receive()
    return "all done"
end
return { main = main }
"""
FLOW_V1 = """\
local funcs = require("funcs")
local function main()
    local x = funcs.call("ops:a")
    process.listen("go"):receive()
    local y = funcs.call("ops:b")
    return x .. y
end
return main
"""
FLOW_V2 = """\
local funcs = require("funcs")
local function main()
    local y = funcs.call("ops:b")
    process.listen("go"):receive()
    local x = funcs.call("ops:a")
    return x .. y
end
return main
"""
ACTS = 'return { a = function() return "a" end, b = function() return "b" end }\n'


def write_app(folder: Path, flow: str) -> Path:
    folder.mkdir()
    for name, text in {"app.yaml": APP, "waits.lua": WAITS, "quick.lua": QUICK, "parent.lua": PARENT,
                       "flow.lua": flow, "acts.lua": ACTS, "two.lua": TWO}.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path]]:
    tmp = tmp_path_factory.mktemp("ops")
    app = write_app(tmp / "app", FLOW_V1)
    changed = write_app(tmp / "changed", FLOW_V2)  # the same app with its flow's commands reordered
    c = Cluster(tmp, app, fast_config(tmp)).start()
    try:
        yield c, changed
    finally:
        c.stop()


def ok(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p.stdout


def eventually(fn: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if done(got):
            return got
        assert time.monotonic() < deadline, f"condition not reached in time; last: {got!r}"


def start(c: Cluster, wtype: str, wid: str, *extra: str) -> None:
    ok(c.cli("workflow", "start", "--type", wtype, "--task-queue", "ops", "--id", wid, *extra))


def history(c: Cluster, wid: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(ok(c.cli("workflow", "show", "--id", wid, "--output", "json")))
    return out


def types(c: Cluster, wid: str) -> list[str]:
    return [e["event_type"] for e in history(c, wid)]


def count(c: Cluster, query: str) -> int:
    return int(json.loads(ok(c.cli("workflow", "count", "--query", query, "--output", "json")))["count"])


def test_show_follow_prints_new_events_and_ends_with_the_run(ops: tuple[Cluster, Path]) -> None:
    c, _ = ops
    wid = f"follow-{uuid.uuid4().hex[:8]}"
    start(c, "ops:waits", wid)
    follow = Proc(["workflow", "show", "--id", wid, "--follow", "--output", "jsonl", "--address", c.address]).start()
    try:
        follow.wait_for("WorkflowTaskCompleted")  # the old events, then it waits for more
        assert follow.alive()
        ok(c.cli("workflow", "signal", "--id", wid, "--name", "go"))
        follow.wait_for("WorkflowExecutionCompleted")
        assert follow.popen is not None and follow.popen.wait(30) == 0
        events = [json.loads(line) for line in follow.lines if line.startswith("{")]
        assert [e["event_id"] for e in events] == list(range(1, len(events) + 1))  # each once, in order
        assert "WorkflowExecutionSignaled" in [e["event_type"] for e in events]
    finally:
        follow.stop()
    # a closed run: the history, and the exit code of its end (terminated: 1)
    wid2 = f"follow-{uuid.uuid4().hex[:8]}"
    start(c, "ops:waits", wid2)
    ok(c.cli("workflow", "terminate", "--id", wid2))
    p = c.cli("workflow", "show", "--id", wid2, "--follow")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "WorkflowExecutionTerminated" in p.stdout


def test_trace_shows_children_and_folds_completed_ones(ops: tuple[Cluster, Path]) -> None:
    c, _ = ops
    wid = f"parent-{uuid.uuid4().hex[:8]}"
    start(c, "ops:parent", wid)

    def tree() -> dict[str, Any]:
        out: dict[str, Any] = json.loads(ok(c.cli("workflow", "trace", "--id", wid, "--output", "json")))
        return out

    t = eventually(tree, lambda t: len(t["children"] or []) == 4 and t["children"][3]["status"] == "RUNNING")
    assert t["status"] == "RUNNING" and t["workflow_type"] == "ops:parent"
    assert [k["status"] for k in t["children"]] == ["COMPLETED"] * 3 + ["RUNNING"]
    assert [k["workflow_type"] for k in t["children"]] == ["ops:quick"] * 3 + ["ops:waits"]
    waiting = t["children"][3]["workflow_id"]
    text = ok(c.cli("workflow", "trace", "--id", wid))
    assert "✓ 3 completed" in text and f"▶ {waiting} (ops:waits) RUNNING" in text, text
    assert text.count("ops:quick") == 0
    assert ok(c.cli("workflow", "trace", "--id", wid, "--no-fold")).count("ops:quick") == 3
    assert json.loads(ok(c.cli("workflow", "trace", "--id", wid, "--depth", "0", "--output", "json")))[
        "children"] is None
    # --follow redraws until the parent closes: the waiting child gets its signal, the parent ends
    follow = Proc(["workflow", "trace", "--id", wid, "--follow", "--output", "jsonl", "--interval", "500ms",
                   "--address", c.address]).start()
    try:
        follow.wait_for("RUNNING")
        ok(c.cli("workflow", "signal", "--id", waiting, "--name", "go"))
        assert follow.popen is not None and follow.popen.wait(30) == 0
        last = json.loads([x for x in follow.lines if x.startswith("{")][-1])
        assert last["status"] == "COMPLETED" and [k["status"] for k in last["children"]] == ["COMPLETED"] * 4
    finally:
        follow.stop()


def test_replay_ok_and_non_determinism(ops: tuple[Cluster, Path], tmp_path: Path) -> None:
    c, changed = ops
    wid = f"flow-{uuid.uuid4().hex[:8]}"
    start(c, "ops:flow", wid)
    eventually(lambda: types(c, wid), lambda t: "ActivityTaskCompleted" in t and t[-1] == "WorkflowTaskCompleted")
    ok(c.cli("workflow", "signal", "--id", wid, "--name", "go"))
    ok(c.cli("workflow", "result", "--id", wid, "--timeout", "30s"))
    saved = tmp_path / "history.json"
    saved.write_text(ok(c.cli("workflow", "show", "--id", wid, "--output", "json")))
    app = Path(c.worker.args[c.worker.args.index("--entries") + 1])

    good = c.cli("workflow", "replay", "--history-file", str(saved), "--entries", str(app))
    assert good.returncode == 0 and good.stdout.startswith("OK"), (good.stdout, good.stderr)
    assert ok(c.cli("workflow", "replay", "--id", wid, "--entries", str(app))).startswith("OK")

    bad = c.cli("workflow", "replay", "--id", wid, "--entries", str(changed), "--output", "json")
    assert bad.returncode == 2, (bad.stdout, bad.stderr)
    report = json.loads(bad.stdout)
    assert report["ok"] is False and report["cause"] == "NON_DETERMINISTIC"
    assert report["event_type"] == "ActivityTaskScheduled" and report["event_id"] > 0
    assert report["source"] and report["source"].startswith("flow.lua:3"), report
    text = c.cli("workflow", "replay", "--history-file", str(saved), "--entries", str(changed))
    assert text.returncode == 2 and "NON_DETERMINISTIC (event" in text.stdout and "flow.lua:3" in text.stdout

    (tmp_path / "junk.json").write_text("{not json")
    junk = c.cli("workflow", "replay", "--history-file", str(tmp_path / "junk.json"), "--entries", str(app))
    assert junk.returncode == 3 and "Traceback" not in junk.stderr and junk.stderr.startswith("error:")


def test_stack_shows_each_coroutine_where_it_waits(ops: tuple[Cluster, Path]) -> None:
    c, _ = ops
    wid = f"two-{uuid.uuid4().hex[:8]}"
    start(c, "ops:two", wid)
    eventually(lambda: types(c, wid), lambda t: t[-1] == "WorkflowTaskCompleted")
    app = Path(c.worker.args[c.worker.args.index("--entries") + 1])
    # no code here: the worker that has the run cached answers (issue 14)
    report = json.loads(ok(c.cli("workflow", "stack", "--id", wid, "--output", "json")))
    assert report["source"] == "worker-cache" and report["worker"], report
    cos = report["coroutines"]
    assert [(x["id"], x["main"], x["status"]) for x in cos] == [(1, True, "suspended"), (2, False, "suspended")]
    assert (cos[0]["frames"][0]["source"], cos[0]["frames"][0]["line"]) == ("two.lua", 6)  # the signal wait
    assert (cos[1]["frames"][0]["source"], cos[1]["frames"][0]["line"]) == ("two.lua", 4)  # the channel receive
    assert report["status"] == "RUNNING" and report["workflow_type"] == "ops:two"
    text = ok(c.cli("workflow", "stack", "--id", wid, "--entries", str(app)))  # a worker answers all the same
    assert "2 coroutine(s)" in text and "two.lua:6" in text and "two.lua:4" in text and "worker-cache" in text
    lines = ok(c.cli("workflow", "stack", "--id", wid, "--entries", str(app), "--output", "jsonl")).splitlines()
    assert [json.loads(line)["id"] for line in lines] == [1, 2]

    ok(c.cli("workflow", "signal", "--id", wid, "--name", "go"))
    ok(c.cli("workflow", "result", "--id", wid, "--timeout", "30s"))
    done = json.loads(ok(c.cli("workflow", "stack", "--id", wid, "--output", "json")))
    assert done["coroutines"] == [] and done["status"] == "COMPLETED" and done["source"] == "worker-replay"
    missing = c.cli("workflow", "stack", "--id", "no-such-workflow")
    assert missing.returncode != 0 and "Traceback" not in missing.stderr and "no-such-workflow" in missing.stderr


def test_batch_terminate_over_a_query_and_again(ops: tuple[Cluster, Path]) -> None:
    c, _ = ops
    b = "b" + uuid.uuid4().hex[:8]
    for i in range(4):
        start(c, "ops:waits", f"{b}-{i}", "--search-attribute", f"batch={b}")
    start(c, "ops:waits", f"{b}-other", "--search-attribute", f"batch={b}x")
    q = f"batch = '{b}' AND ExecutionStatus = 'Running'"
    eventually(lambda: count(c, q), lambda n: n == 4)

    refused = c.cli("workflow", "terminate", "--query", q)  # no --yes, no terminal to ask on
    assert refused.returncode == 3 and "--yes" in refused.stderr and "4 workflow(s)" in refused.stderr
    both = c.cli("workflow", "terminate", "--query", q, "--id", "x")
    assert both.returncode == 3 and "either --id" in both.stderr

    p = c.cli("workflow", "terminate", "--query", q, "--yes", "--rps", "50", "--reason", "batch", "--output", "json")
    summary = json.loads(ok(p))
    assert (summary["matched"], summary["done"], summary["failed"]) == (4, 4, 0), summary
    assert "4 workflow(s) match" in p.stderr and summary["batch_id"] in p.stderr
    for i in range(4):
        assert types(c, f"{b}-{i}")[-1] == "WorkflowExecutionTerminated"
    assert types(c, f"{b}-other")[-1] != "WorkflowExecutionTerminated"
    # again: nothing left to do (what visibility still lists as running is skipped as closed)
    again = json.loads(ok(c.cli("workflow", "terminate", "--query", q, "--yes", "--output", "json")))
    assert again["done"] == 0 and again["failed"] == 0 and again["skipped"] == again["matched"]
    eventually(lambda: count(c, q), lambda n: n == 0)
    assert "0 matched" in ok(c.cli("workflow", "terminate", "--query", q, "--yes"))
    ok(c.cli("workflow", "terminate", "--id", f"{b}-other"))  # the single form still works


def test_batch_signal_is_sent_once_per_batch_id(ops: tuple[Cluster, Path]) -> None:
    c, _ = ops
    b = "s" + uuid.uuid4().hex[:8]
    for i in range(2):
        start(c, "ops:waits", f"{b}-{i}", "--search-attribute", f"batch={b}")
    q = f"batch = '{b}'"
    eventually(lambda: count(c, q), lambda n: n == 2)
    args = ("workflow", "signal", "--query", q, "--name", "poke", "--input", '{"n": 1}', "--yes")
    first = c.cli(*args, "--batch-id", f"{b}-batch", "--output", "jsonl")
    lines = [json.loads(x) for x in ok(first).splitlines()]
    assert sorted(x["outcome"] for x in lines[:-1]) == ["done", "done"] and lines[-1]["summary"]["done"] == 2
    ok(c.cli(*args, "--batch-id", f"{b}-batch"))  # a re-run of the same batch: deduplicated
    for i in range(2):
        assert types(c, f"{b}-{i}").count("WorkflowExecutionSignaled") == 1
    ok(c.cli(*args))  # a new batch signals again
    for i in range(2):
        assert types(c, f"{b}-{i}").count("WorkflowExecutionSignaled") == 2
    assert "2 signaled" in ok(c.cli("workflow", "signal", "--query", q, "--name", "go", "--yes"))
    ok(c.cli("workflow", "result", "--id", f"{b}-0", "--timeout", "30s"))
