"""The CLI against a dev server and a worker running as separate processes."""

from __future__ import annotations

import asyncio
import json

from legato.api import ExecutionRef
from legato.cli.workflow_cmds import wait_result
from legato.client import GrpcClient
from tests.integration.procs import Cluster


def start(cluster: Cluster, wf_type: str, wid: str, input_json: str | None = None) -> None:
    args = ["workflow", "start", "--type", wf_type, "--task-queue", "basic", "--id", wid]
    if input_json is not None:
        args += ["--input", input_json]
    p = cluster.cli(*args)
    assert p.returncode == 0, p.stderr
    assert wid in p.stdout


def result_json(cluster: Cluster, wid: str) -> object:
    p = cluster.cli("workflow", "result", "--id", wid, "--timeout", "60s", "--output", "json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_start_and_result(cluster: Cluster) -> None:
    start(cluster, "basic:hello", "c-hello", '"Grace"')
    assert result_json(cluster, "c-hello") == {"greeting": "hello, Grace"}


def test_signals_via_cli_reach_inbox_and_listen(cluster: Cluster) -> None:
    start(cluster, "basic:waits", "c-waits")
    p = cluster.cli("workflow", "signal", "--id", "c-waits", "--name", "other", "--input", "1")
    assert p.returncode == 0, p.stderr
    p = cluster.cli("workflow", "signal", "--id", "c-waits", "--name", "go", "--input", '{"x": 1}')
    assert p.returncode == 0, p.stderr
    r = result_json(cluster, "c-waits")
    assert r == {"go": {"x": 1}, "from": "legato-cli", "before": ["other"]}


def test_show_json_has_event_type_names(cluster: Cluster) -> None:
    start(cluster, "basic:hello", "c-show", '"x"')
    result_json(cluster, "c-show")
    p = cluster.cli("workflow", "show", "--id", "c-show", "--output", "json")
    assert p.returncode == 0, p.stderr
    types = [e["event_type"] for e in json.loads(p.stdout)]
    assert types == [
        "WorkflowExecutionStarted", "WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted",
        "ActivityTaskScheduled", "ActivityTaskStarted", "ActivityTaskCompleted",
        "WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted", "WorkflowExecutionCompleted",
    ]
    text = cluster.cli("workflow", "show", "--id", "c-show")
    assert "ActivityTaskCompleted" in text.stdout


def test_describe_and_list(cluster: Cluster) -> None:
    start(cluster, "basic:waits", "c-desc")
    p = cluster.cli("workflow", "describe", "--id", "c-desc", "--output", "json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["info"]["status"] == "RUNNING" and d["info"]["workflow_type"] == "basic:waits"
    p = cluster.cli("workflow", "list", "--output", "json")
    assert p.returncode == 0, p.stderr
    assert "c-desc" in {i["workflow_id"] for i in json.loads(p.stdout)}


def test_describe_and_list_text_show_status_and_the_task_failure(cluster: Cluster) -> None:
    start(cluster, "basic:buggy", "c-buggy")
    start(cluster, "basic:hello", "c-done", '"Ada"')
    assert result_json(cluster, "c-done") == {"greeting": "hello, Ada"}

    async def task_failure() -> None:  # a long-poll that returns once a workflow task has failed
        async with GrpcClient(cluster.address) as client:
            r = await wait_result(client, ExecutionRef("c-buggy"), 30_000, return_on_task_failure=True)
            assert r.task_failure is not None, r

    asyncio.run(task_failure())
    p = cluster.cli("workflow", "describe", "--id", "c-buggy")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "Status:         RUNNING" in lines, p.stdout
    assert "Type:           basic:buggy" in lines, p.stdout
    failure = [line for line in lines if line.startswith("Last workflow task failure: ")]
    assert failure == ["Last workflow task failure: Internal: buggy.lua:3: attempt to index a nil value "
                       "(local 't')"], p.stdout
    assert any(line.startswith("Workflow task:  ") and "attempt" in line for line in lines), p.stdout

    p = cluster.cli("workflow", "describe", "--id", "c-done")
    assert "Status:         COMPLETED" in p.stdout.splitlines(), p.stdout
    assert 'Result:         {"greeting": "hello, Ada"}' in p.stdout.splitlines(), p.stdout
    assert "Last workflow task failure" not in p.stdout

    p = cluster.cli("workflow", "list")
    assert p.returncode == 0, p.stderr
    rows = {line.split()[0]: line.split()[1:3] for line in p.stdout.splitlines() if line.strip()}
    assert rows["c-buggy"] == ["basic:buggy", "RUNNING"], p.stdout
    assert rows["c-done"] == ["basic:hello", "COMPLETED"], p.stdout
    p = cluster.cli("workflow", "list", "--query", "ExecutionStatus = 'Running' AND WorkflowType = 'basic:buggy'")
    assert [line.split()[0] for line in p.stdout.splitlines()] == ["c-buggy"], p.stdout


def test_terminate(cluster: Cluster) -> None:
    start(cluster, "basic:waits", "c-term")
    p = cluster.cli("workflow", "terminate", "--id", "c-term", "--reason", "enough")
    assert p.returncode == 0, p.stderr
    p = cluster.cli("workflow", "result", "--id", "c-term", "--timeout", "30s")
    assert p.returncode == 1 and "enough" in p.stderr
    d = json.loads(cluster.cli("workflow", "describe", "--id", "c-term", "--output", "json").stdout)
    assert d["info"]["status"] == "TERMINATED"


def test_cancel_ends_a_workflow_that_does_not_handle_it(cluster: Cluster) -> None:
    start(cluster, "basic:waits", "c-cancel")
    p = cluster.cli("workflow", "cancel", "--id", "c-cancel")
    assert p.returncode == 0, p.stderr
    p = cluster.cli("workflow", "result", "--id", "c-cancel", "--timeout", "30s")
    assert p.returncode == 1
    d = json.loads(cluster.cli("workflow", "describe", "--id", "c-cancel", "--output", "json").stdout)
    assert d["info"]["status"] == "CANCELED"


def test_unknown_workflow_id_is_a_clear_error(cluster: Cluster) -> None:
    for cmd in (["describe"], ["show"], ["result", "--timeout", "1s"], ["signal", "--name", "x"],
                ["terminate"], ["cancel"]):
        p = cluster.cli("workflow", cmd[0], "--id", "no-such-workflow", *cmd[1:])
        assert p.returncode == 3, (cmd, p.stdout, p.stderr)
        assert "no-such-workflow" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_result_timeout_on_running_workflow(cluster: Cluster) -> None:
    start(cluster, "basic:waits", "c-running")
    p = cluster.cli("workflow", "result", "--id", "c-running", "--timeout", "200ms")
    assert p.returncode == 4 and "still running" in p.stderr


def test_duplicate_start_is_refused(cluster: Cluster) -> None:
    start(cluster, "basic:waits", "c-dup")
    p = cluster.cli("workflow", "start", "--type", "basic:waits", "--task-queue", "basic", "--id", "c-dup")
    assert p.returncode == 3 and "c-dup" in p.stderr
