"""Monitors and links (docs/processes.md, "Monitors and links"): workflows and caller pids, EXIT on
any close, LINK_DOWN only on an abnormal one, links both ways, monitoring a closed run,
unmonitor, idempotent registration and delivery, the limit."""

from __future__ import annotations

from typing import Any

import pytest

from history.state import T_CLOSE_NOTIFY, T_MONITOR_EXTERNAL
from legato.api import (
    DeliverMonitoredClosedRequest,
    ExecutionClosed,
    ExecutionRef,
    MonitorWorkflowRequest,
    SignalWorkflowRequest,
    StartWorkflowRequest,
    TerminateWorkflowRequest,
    WorkflowStatus,
)
from legato.commands import Command
from legato.commands import CommandType as C
from legato.errors import NotFound, ResourceExhausted
from legato.events import EventType as E
from tests.unit.history.conftest import Env, close_env, cmd, complete_wf, make_config, make_env

FAIL = cmd(C.FailWorkflowExecution, failure={"message": "crashed", "kind": "Internal", "retryable": False})


def monitor(seq: str, target: str, link: bool = False, remove: bool = False) -> Command:
    return cmd(C.MonitorExternalWorkflowExecution, seq=seq, workflow_id=target, link=link, remove=remove)


async def _watch(env: Env, link: bool = False) -> str:
    """`a` monitors (or links to) `b`; both wait. Returns b's run id."""
    b_run = await env.start("b")
    await env.start("a")
    await env.run_wf("b")
    await env.run_wf("a", monitor("1", "b", link=link))
    await env.settle()
    return b_run


async def _wake(env: Env, wf: str) -> None:
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef(wf), "wake"))


async def _closed_events(env: Env, wf: str) -> list[dict[str, Any]]:
    return [e.attrs for e in await env.history_of(wf) if e.event_type == E.MonitoredWorkflowExecutionClosed]


async def test_monitor_gets_exit_on_a_normal_close(env: Env) -> None:
    b_run = await _watch(env)
    init = (await env.history_of("a"))[4]
    assert init.event_type == E.MonitorExternalWorkflowExecutionInitiated
    assert init.attrs == {"seq": "1", "namespace": "default", "workflow_id": "b", "link": False, "remove": False,
                          "workflow_task_completed_event_id": 4}
    ok = await env.last("a", E.ExternalWorkflowExecutionMonitored)
    assert ok.attrs == {"initiated_event_id": 5, "workflow_id": "b", "run_id": b_run}
    b = await env.state("b")
    assert [(r.pid, r.link, r.initiated_event_id) for r in b.monitors] == [("a", False, 5)]
    await env.run_wf("a")
    await _wake(env, "b")
    await env.run_wf("b", complete_wf({"done": True}))
    await env.settle()
    assert await _closed_events(env, "a") == [{"workflow_id": "b", "run_id": b_run, "status": "COMPLETED",
                                               "result": {"done": True}, "failure": None, "link": False}]
    assert (await env.types("a"))[-1] == E.WorkflowTaskScheduled
    # the tasks again: one registration, one EXIT
    assert await env.rerun(T_MONITOR_EXTERNAL) == 1 and await env.rerun(T_CLOSE_NOTIFY) == 1
    assert len(await _closed_events(env, "a")) == 1
    assert (await env.types("a")).count(E.ExternalWorkflowExecutionMonitored) == 1


async def test_terminated_workflow_gives_monitors_an_exit_with_an_error(env: Env) -> None:
    await _watch(env)
    await env.history.terminate_workflow(TerminateWorkflowRequest(ExecutionRef("b"), reason="ops"))
    await env.settle()
    [ev] = await _closed_events(env, "a")
    assert ev["status"] == "TERMINATED" and ev["failure"]["kind"] == "Terminated" and ev["link"] is False


async def test_a_link_tells_of_a_normal_close_and_of_an_abnormal_one(env: Env) -> None:
    """Wippy: a linked process hears of a normal end too (an EXIT in the kernel), and of an
    abnormal one (LINK_DOWN, or the linker's own end)."""
    await _watch(env, link=True)
    b = await env.state("b")
    assert [(r.pid, r.link) for r in b.monitors] == [("a", True)] and [(r.pid, r.link) for r in b.watching] == [
        ("a", True)]
    await _wake(env, "b")
    await env.run_wf("b", complete_wf())
    await env.settle()
    [normal] = await _closed_events(env, "a")
    assert normal["link"] is True and normal["status"] == "COMPLETED"
    assert (await env.state("a")).watching == []  # nothing left to hear about
    await env.start("c")
    await env.run_wf("c")
    await _wake(env, "a")
    await env.run_wf("a", monitor("2", "c", link=True))
    await env.settle()
    await _wake(env, "c")
    await env.run_wf("c", FAIL)
    await env.settle()
    [_, ev] = await _closed_events(env, "a")
    assert ev["link"] is True and ev["status"] == "FAILED" and ev["failure"]["message"] == "crashed"


async def test_links_are_bidirectional(env: Env) -> None:
    await _watch(env, link=True)
    await _wake(env, "a")
    await env.run_wf("a", FAIL)  # the linker dies: the linked workflow hears it
    await env.settle()
    [ev] = await _closed_events(env, "b")
    assert ev["workflow_id"] == "a" and ev["link"] is True and ev["status"] == "FAILED"
    assert await env.rerun(T_CLOSE_NOTIFY) == 1
    assert len(await _closed_events(env, "b")) == 1


async def test_a_link_made_just_before_dying_still_reaches_the_other_side(env: Env) -> None:
    await env.start("b")
    await env.run_wf("b")
    await env.start("a")
    await env.run_wf("a", monitor("1", "b", link=True), FAIL)  # link and fail in the same task
    await env.settle()
    [ev] = await _closed_events(env, "b")
    assert ev["workflow_id"] == "a" and ev["link"] is True
    assert (await env.state("b")).monitors == []  # the dead partner is forgotten


async def test_monitoring_a_closed_run_answers_at_once(env: Env) -> None:
    b_run = await env.start("b")
    await env.run_wf("b", complete_wf(5))
    await env.start("a")
    await env.run_wf("a", monitor("1", "b"), monitor("2", "b", link=True))
    await env.settle()
    hist = [e for e in await env.history_of("a") if e.event_type != E.WorkflowTaskScheduled]
    assert [(e.event_type, e.attrs.get("initiated_event_id")) for e in hist[5:]] == [
        (E.ExternalWorkflowExecutionMonitored, 5), (E.MonitoredWorkflowExecutionClosed, None),
        (E.ExternalWorkflowExecutionMonitored, 6), (E.MonitoredWorkflowExecutionClosed, None)]
    assert hist[6].attrs["result"] == 5 and hist[6].attrs["run_id"] == b_run
    assert hist[8].attrs["link"] is True and hist[8].attrs["status"] == "COMPLETED"  # the link's EXIT
    assert len(await _closed_events(env, "a")) == 2
    await env.rerun(T_MONITOR_EXTERNAL)
    assert len(await _closed_events(env, "a")) == 2


async def test_unmonitor_and_unlink(env: Env) -> None:
    await _watch(env)
    await _wake(env, "a")
    await env.run_wf("a", monitor("2", "b", remove=True))
    await env.settle()
    assert (await env.state("b")).monitors == [] and (await env.state("a")).watching == []
    assert (await env.types("a")).count(E.ExternalWorkflowExecutionMonitored) == 2
    await _wake(env, "b")
    await env.run_wf("b", complete_wf())
    await env.settle()
    assert await _closed_events(env, "a") == []
    # a link, then unlink: neither side keeps anything
    await env.start("c")
    await env.run_wf("c")
    await _wake(env, "a")
    await env.run_wf("a", monitor("3", "c", link=True))
    await env.settle()
    await _wake(env, "a")
    await env.run_wf("a", monitor("4", "c", link=True, remove=True))
    await env.settle()
    assert (await env.state("c")).monitors == [] and (await env.state("c")).watching == []
    assert (await env.state("a")).monitors == [] and (await env.state("a")).watching == []


async def test_a_close_overtaking_the_registration_outcome_is_kept(env: Env) -> None:
    await env.start("b")
    await env.start("a")
    await env.run_wf("a", monitor("1", "b"))
    # b's close reaches a before a recorded the monitor's outcome
    await env.history.deliver_monitored_closed(DeliverMonitoredClosedRequest(
        ExecutionRef("a"), ExecutionClosed("default", "b", "run-b", WorkflowStatus.COMPLETED, result=1)))
    await env.settle()
    types = [t for t in await env.types("a") if t in (E.ExternalWorkflowExecutionMonitored,
                                                      E.MonitoredWorkflowExecutionClosed)]
    assert types == [E.ExternalWorkflowExecutionMonitored, E.MonitoredWorkflowExecutionClosed]


async def test_monitor_failures(env: Env) -> None:
    await env.start("a")
    await env.run_wf("a", monitor("1", "ghost"), monitor("2", "@caller"))
    await env.settle()
    failed = [e.attrs for e in await env.history_of("a") if e.event_type == E.MonitorExternalWorkflowExecutionFailed]
    # carried out concurrently: recorded in either order
    # a caller or process pid is asked in its mailbox; @caller has none
    assert sorted((f["initiated_event_id"], f["failure"]["kind"]) for f in failed) == [(5, "NotFound"), (6, "NotFound")]
    assert (await env.state("a")).watching == []


async def test_a_delivery_to_a_run_that_continued_follows_links(env: Env) -> None:
    await _watch(env, link=True)
    await _wake(env, "a")
    await env.run_wf("a", cmd(C.ContinueAsNewWorkflowExecution, input=[]))
    await env.settle()
    new_a = await env.state("a")
    assert [(r.pid, r.link) for r in new_a.watching] == [("b", True)]
    await _wake(env, "b")
    await env.run_wf("b", FAIL)
    await env.settle()
    [ev] = await _closed_events(env, "a")
    assert ev["link"] is True


# ---------------------------------------------------------------- callers

async def test_caller_monitor_gets_exit_in_its_mailbox(env: Env) -> None:
    env.matching.mailboxes.add("@c1")
    await env.start("b", input=[1])
    await env.history.monitor_workflow(MonitorWorkflowRequest(ExecutionRef("b"), "@c1"))
    await env.history.monitor_workflow(MonitorWorkflowRequest(ExecutionRef("b"), "@c1"))  # once is enough
    assert len((await env.state("b")).monitors) == 1
    await env.run_wf("b", complete_wf({"value": 3}))
    await env.settle()
    [(pid, msg)] = env.matching.delivered
    assert pid == "@c1" and msg.kind == "event"
    assert msg.event == {"kind": "EXIT", "from": "b", "link": False, "result": {"value": {"value": 3}, "error": None}}


async def test_caller_link_and_terminate(env: Env) -> None:
    env.matching.mailboxes.update({"@m", "@l"})
    await env.start("b")
    await env.history.monitor_workflow(MonitorWorkflowRequest(ExecutionRef("b"), "@m"))
    await env.history.monitor_workflow(MonitorWorkflowRequest(ExecutionRef("b"), "@l", link=True))
    await env.history.terminate_workflow(TerminateWorkflowRequest(ExecutionRef("b"), reason="stop"))
    await env.settle()
    got = {pid: msg.event for pid, msg in env.matching.delivered}
    assert got["@m"] is not None and got["@m"]["kind"] == "EXIT"
    assert got["@m"]["result"]["error"]["kind"] == "Terminated"
    assert got["@l"] is not None and got["@l"]["kind"] == "LINK_DOWN"


async def test_caller_link_is_told_of_a_normal_close_and_unmonitor_works(env: Env) -> None:
    env.matching.mailboxes.update({"@l", "@gone-later"})
    await env.start("b")
    await env.history.monitor_workflow(MonitorWorkflowRequest(ExecutionRef("b"), "@l", link=True))
    await env.history.monitor_workflow(MonitorWorkflowRequest(ExecutionRef("b"), "@gone-later"))
    await env.history.monitor_workflow(MonitorWorkflowRequest(ExecutionRef("b"), "@gone-later", remove=True))
    await env.run_wf("b", complete_wf())
    await env.settle()
    [(pid, msg)] = env.matching.delivered  # the link's EXIT; nothing for the monitor taken back
    assert pid == "@l" and msg.event is not None and msg.event["kind"] == "EXIT" and msg.event["link"] is True


async def test_caller_monitoring_a_closed_run_hears_at_once(env: Env) -> None:
    env.matching.mailboxes.add("@c")
    await env.start("b")
    await env.run_wf("b", FAIL)
    await env.history.monitor_workflow(MonitorWorkflowRequest(ExecutionRef("b"), "@c"))
    [(_, msg)] = env.matching.delivered
    assert msg.event is not None and msg.event["result"]["error"]["message"] == "crashed"
    with pytest.raises(NotFound):
        await env.history.monitor_workflow(MonitorWorkflowRequest(ExecutionRef("nobody"), "@c"))
    with pytest.raises(Exception, match="caller pid"):
        await env.history.monitor_workflow(MonitorWorkflowRequest(ExecutionRef("b"), "not-a-caller"))


async def test_monitors_given_at_start(env: Env) -> None:
    env.matching.mailboxes.add("@spawner")
    await env.history.start_workflow(StartWorkflowRequest("b", "app:b", "q", monitors=["@spawner"]))
    await env.run_wf("b", complete_wf("r"))
    await env.settle()
    [(pid, msg)] = env.matching.delivered
    assert pid == "@spawner" and msg.event is not None and msg.event["result"]["value"] == "r"
    with pytest.raises(Exception, match="monitors must be a list of caller pids"):
        await env.history.start_workflow(StartWorkflowRequest("c", "app:b", "q", monitors=["wf"]))


async def test_max_monitors() -> None:
    env = await make_env(None, make_config(limits={"max_monitors": 1}))
    try:
        await env.start("b")
        await env.history.monitor_workflow(MonitorWorkflowRequest(ExecutionRef("b"), "@one"))
        with pytest.raises(ResourceExhausted, match=r"the limit is 1 \(limits.max_monitors\)"):
            await env.history.monitor_workflow(MonitorWorkflowRequest(ExecutionRef("b"), "@two"))
        await env.start("a")
        await env.run_wf("a", monitor("1", "b"))
        await env.settle()
        ev = await env.last("a", E.MonitorExternalWorkflowExecutionFailed)
        assert ev.attrs["failure"]["kind"] == "LimitExceeded"
    finally:
        await close_env(env)
