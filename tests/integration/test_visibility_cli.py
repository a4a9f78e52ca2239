"""Visibility through the CLI against a real dev server and worker: workflows started with search
attributes and memo, then `legato workflow list --query` (paged) and `legato workflow count`."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from tests.integration.procs import Cluster

T = TypeVar("T")


def ok(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p.stdout


def eventually(fn: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0) -> T:
    """Visibility is written after the close commits (by the transfer queue): ask until it shows.
    Each attempt is a CLI round trip, so this polls at the pace of the CLI, with no sleeps."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if done(got) or time.monotonic() > deadline:
            return got


@pytest.fixture(scope="module")
def batch(cluster: Cluster) -> dict[str, Any]:
    """Six workflows of one batch: three completed, one failed, one terminated, one running."""
    b = "b" + uuid.uuid4().hex[:8]  # never all digits: the CLI would read a number
    wf = {name: f"vis-{b}-{name}" for name in ("h1", "h2", "h3", "fail", "term", "wait")}
    plan = [
        ("h1", "basic:hello", ["customer=ann", "total=10", "vip=true", 'tags=["red","blue"]']),
        ("h2", "basic:hello", ["customer=bob", "total=20.5", "vip=false", "tags=blue"]),
        ("h3", "basic:hello", ["customer=ann", "total=30"]),
        ("fail", "basic:fails", ["customer=cy", "total=40"]),
        ("term", "basic:waits", ["customer=ann", 'total="50"']),
        ("wait", "basic:waits", ["customer=dee", "total=60"]),
    ]
    for key, wf_type, attrs in plan:
        args = ["workflow", "start", "--type", wf_type, "--task-queue", "basic", "--id", wf[key],
                "--search-attribute", f"batch={b}", "--memo", f"key={key}"]
        for a in attrs:
            args += ["--search-attribute", a]
        ok(cluster.cli(*args))
    for key in ("h1", "h2", "h3"):
        ok(cluster.cli("workflow", "result", "--id", wf[key], "--timeout", "60s"))
    assert cluster.cli("workflow", "result", "--id", wf["fail"], "--timeout", "60s").returncode == 1
    ok(cluster.cli("workflow", "terminate", "--id", wf["term"], "--reason", "test"))
    assert cluster.cli("workflow", "result", "--id", wf["term"], "--timeout", "60s").returncode == 1

    def closed() -> int:
        return int(json.loads(ok(cluster.cli("workflow", "count", "--query", f"batch = '{b}' AND CloseTime > 0",
                                             "--output", "json")))["count"])

    assert eventually(closed, lambda n: n == 5) == 5
    return {"batch": b, "ids": wf}


def count(cluster: Cluster, query: str) -> int:
    return int(json.loads(ok(cluster.cli("workflow", "count", "--query", query, "--output", "json")))["count"])


def listed(cluster: Cluster, query: str, *extra: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(ok(cluster.cli("workflow", "list", "--query", query, "--output", "json",
                                                          *extra)))
    return out


def test_count_text_and_json(cluster: Cluster, batch: dict[str, Any]) -> None:
    q = f"batch = '{batch['batch']}'"
    assert ok(cluster.cli("workflow", "count", "--query", q)).strip() == "6"
    assert json.loads(ok(cluster.cli("workflow", "count", "--query", q, "--output", "json"))) == {"count": 6}


def test_count_by_status(cluster: Cluster, batch: dict[str, Any]) -> None:
    q = f"batch = '{batch['batch']}' GROUP BY ExecutionStatus"
    got = json.loads(ok(cluster.cli("workflow", "count", "--query", q, "--output", "json")))
    assert got == {"count": 6, "groups": {"RUNNING": 1, "COMPLETED": 3, "FAILED": 1, "TERMINATED": 1}}
    text = ok(cluster.cli("workflow", "count", "--query", q)).splitlines()
    assert text[0] == "6"
    assert [line.split() for line in text[1:]] == [["RUNNING", "1"], ["COMPLETED", "3"], ["FAILED", "1"],
                                                   ["TERMINATED", "1"]]


def test_queries_over_status_type_and_search_attributes(cluster: Cluster, batch: dict[str, Any]) -> None:
    b, wf = batch["batch"], batch["ids"]
    B = f"batch = '{b}'"

    def ids(query: str) -> set[str]:
        return {e["workflow_id"] for e in listed(cluster, query)}

    assert ids(f"{B} AND ExecutionStatus = 'Completed'") == {wf["h1"], wf["h2"], wf["h3"]}
    assert ids(f"{B} AND ExecutionStatus IN ('Failed', 'TERMINATED')") == {wf["fail"], wf["term"]}
    assert ids(f"{B} AND ExecutionStatus = 'running'") == {wf["wait"]}
    assert ids(f"{B} AND WorkflowType = 'basic:waits'") == {wf["term"], wf["wait"]}
    assert ids(f"{B} AND customer = 'ann'") == {wf["h1"], wf["h3"], wf["term"]}
    assert ids(f"{B} AND total >= 20 AND total < 60") == {wf["h2"], wf["h3"], wf["fail"]}  # "50" is text
    assert ids(f"{B} AND total = '50'") == {wf["term"]}
    assert ids(f"{B} AND vip = true") == {wf["h1"]}
    assert ids(f"{B} AND NOT vip = true") == {wf["h2"], wf["h3"], wf["fail"], wf["term"], wf["wait"]}
    assert ids(f"{B} AND tags = 'blue'") == {wf["h1"], wf["h2"]}
    assert ids(f"{B} AND (customer = 'bob' OR customer = 'dee') AND NOT ExecutionStatus = 'Running'") == {wf["h2"]}
    assert ids(f"{B} AND SearchAttributes.customer != 'ann' AND WorkflowId != '{wf['h2']}'") == {wf["fail"],
                                                                                                  wf["wait"]}
    assert ids(f"{B} AND CloseTime > 0") == set(wf.values()) - {wf["wait"]}
    assert count(cluster, f"{B} AND TaskQueue = 'basic'") == 6
    assert count(cluster, f"{B} AND TaskQueue = 'other'") == 0


def test_list_shows_memo_and_search_attributes_newest_first(cluster: Cluster, batch: dict[str, Any]) -> None:
    b, wf = batch["batch"], batch["ids"]
    rows = listed(cluster, f"batch = '{b}'")
    assert [r["workflow_id"] for r in rows] == [wf[k] for k in ("wait", "term", "fail", "h3", "h2", "h1")]
    starts = [r["start_time_ms"] for r in rows]
    assert starts == sorted(starts, reverse=True)
    h1 = rows[-1]
    assert h1["memo"] == {"key": "h1"}
    assert h1["search_attributes"] == {"batch": b, "customer": "ann", "total": 10, "vip": True,
                                       "tags": ["red", "blue"]}
    assert h1["status"] == "COMPLETED" and h1["close_time_ms"] >= h1["start_time_ms"] > 0
    asc = listed(cluster, f"batch = '{b}' ORDER BY StartTime ASC")
    assert [r["workflow_id"] for r in asc] == [r["workflow_id"] for r in reversed(rows)]

    # a time window, written as ISO-8601 and as milliseconds
    first, third = rows[-1]["start_time_ms"], rows[-3]["start_time_ms"]
    iso = dt.datetime.fromtimestamp(first / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    window = listed(cluster, f"batch = '{b}' AND StartTime BETWEEN '{iso}' AND {third}")
    assert [r["workflow_id"] for r in window] == [wf["h3"], wf["h2"], wf["h1"]]


def test_list_pages_through_the_api_and_stops_at_the_limit(cluster: Cluster, batch: dict[str, Any]) -> None:
    b, wf = batch["batch"], batch["ids"]
    q = f"batch = '{b}'"
    every = [r["workflow_id"] for r in listed(cluster, q)]
    assert [r["workflow_id"] for r in listed(cluster, q, "--page-size", "2")] == every  # three pages
    assert [r["workflow_id"] for r in listed(cluster, q, "--page-size", "4", "--limit", "5")] == every[:5]
    p = cluster.cli("workflow", "list", "--query", q, "--limit", "2")
    lines = ok(p).splitlines()
    assert [line.split()[0] for line in lines] == [wf["wait"], wf["term"]]
    assert lines[0].split()[2] == "RUNNING"
    assert "there are more" in p.stderr


@pytest.mark.parametrize(("args", "needle"), [
    (["list", "--query", "WorkflowType = 'a' OR"], "at position 22: expected a field"),
    (["count", "--query", "ExecutionStatus = 'Sleeping'"], "at position 19: 'Sleeping' is not an ExecutionStatus"),
    (["count", "--query", "StartTime > 'tomorrow'"], "StartTime takes a timestamp"),
    (["list", "--query", "GROUP BY ExecutionStatus"], "GROUP BY is only for counting"),
    (["start", "--type", "basic:hello", "--task-queue", "basic", "--search-attribute", 'a={"b":1}'],
     "search_attributes.a: a search attribute value must be"),
    (["start", "--type", "basic:hello", "--task-queue", "basic", "--search-attribute", "novalue"],
     "--search-attribute takes NAME=VALUE"),
])
def test_bad_queries_are_clear_errors(cluster: Cluster, args: list[str], needle: str) -> None:
    p = cluster.cli("workflow", *args)
    assert p.returncode == 3, (p.stdout, p.stderr)
    assert p.stderr.startswith("error: ") and needle in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
