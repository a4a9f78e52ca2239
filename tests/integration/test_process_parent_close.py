"""The parent close policy of processes a workflow spawned (issue 15, item 1): when the workflow
closes (completes, fails, is terminated, times out, continues as new), the processes it spawned
without a link and that still run are terminated (`terminate`, the default), asked to cancel
(`request_cancel`) or left alone (`abandon`), as history decides from the recorded spawns, once.
A real engine and worker; the app: tests/apps/supervision (close_with, parent_close)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from legato import api
from legato.events import EventType
from tests.integration.engine_harness import engine_config, engine_with_worker
from tests.integration.test_supervision import APP, Env, ok
from worker.entries import load_registry
from worker.replay import replay


@pytest.fixture
async def env(tmp_path: Any) -> AsyncIterator[Env]:
    registry = load_registry(APP)
    async with engine_with_worker(engine_config(), registry, str(tmp_path / "db.sqlite"), "in-process",
                                  "test-procs") as (service, _, worker):
        yield Env(service, registry, worker)


CLOSES = {  # how the workflow closes -> the status its parent close names
    "complete": "COMPLETED", "fail": "FAILED", "terminate": "TERMINATED", "timeout": "TIMED_OUT",
    "continue": "CONTINUED_AS_NEW",
}


async def parent_close(env: Env, policy: str, how: str, wid: str, stubborn: bool = False) -> dict[str, Any]:
    r = ok(await env.call("parent_close", policy, how, wid, stubborn))
    assert "error" not in r, r
    return dict(r)


@pytest.mark.parametrize("how", list(CLOSES))
async def test_every_close_terminates_the_processes_it_spawned_by_default(env: Env, how: str) -> None:
    r = await parent_close(env, "default", how, f"pc-{how}")
    assert r["process"]["err_kind"] == "Terminated", r
    assert r["process"]["message"] == (f"parent workflow pc-{how} closed ({CLOSES[how]}); "
                                       "parent_close_policy terminate"), r
    if how == "continue":  # the run that continued it ran on and completed
        assert r["workflow"]["value"] == "the new run", r
    assert r["pid"] not in env.worker.processes.live


@pytest.mark.parametrize("how", ["complete", "continue"])
async def test_request_cancel_gives_the_process_a_cancel_event(env: Env, how: str) -> None:
    r = await parent_close(env, "request_cancel", how, f"pc-cancel-{how}")
    assert r["process"].get("err_kind") is None, r  # it returned, as it does on CANCEL
    assert r["process"]["value"] == {"canceled": f"parent workflow pc-cancel-{how} closed ({CLOSES[how]}); "
                                                  "parent_close_policy request_cancel"}, r


@pytest.mark.parametrize("how", ["complete", "fail", "continue"])
async def test_abandon_leaves_the_process_running(env: Env, how: str) -> None:
    r = await parent_close(env, "abandon", how, f"pc-abandon-{how}")
    assert r["alive"]["pid"] == r["pid"] and r["alive"]["cancels"] == 0, r
    assert r["process"]["message"] == "the test cleans up", r  # it ran until the test ended it


async def test_explicit_terminate_policy(env: Env) -> None:
    r = await parent_close(env, "terminate", "complete", "pc-explicit")
    assert r["process"]["err_kind"] == "Terminated" and "parent_close_policy terminate" in r["process"]["message"]


async def test_the_policy_is_applied_once_and_a_replay_does_not_apply_it_again(env: Env) -> None:
    """A stubborn process counts the CANCELs it gets: one at the close. Replaying the closed
    workflow (its recorded history, against the code) issues nothing: still one."""
    r = await parent_close(env, "request_cancel", "complete", "pc-once", stubborn=True)
    assert r["alive"]["cancels"] == 1, r
    assert "parent_close_policy request_cancel" in r["alive"]["reason"]
    hist = await env.service.get_workflow_history(api.GetHistoryRequest(api.ExecutionRef("pc-once"),
                                                                        page_size=1000))
    spawns = spawn_events(hist.events)
    assert len(spawns) == 1 and spawns[0].attrs["input"]["parent_close_policy"] == "request_cancel"
    assert spawns[0].attrs["input"]["run"] == hist.run_id  # the spawning run, sent back in SPAWNED
    replay(env.registry, hist.events)  # the same code gives the same commands; nothing is re-issued


async def test_a_worker_replaying_the_parent_spawns_and_cancels_nothing_again(env: Env) -> None:
    """The worker replays the run from its start (its cache evicted) before it closes: the spawn
    is matched with its recorded event, not made again; the close cancels the one process once."""
    box = Mailbox(env.service, "@test-replayed")
    await box.open()
    run = await env.service.start_workflow(api.StartWorkflowRequest(
        "pc-replayed", "pr:close_with", "procs", ["request_cancel", "wait", box.pid, True]))
    pid = (await box.receive("pid")).payload
    env.worker.workflow_tasks.evict(run.run_id)  # the next task replays the run from its start
    for topic in ("close", "go"):
        await env.service.signal_workflow(api.SignalWorkflowRequest(api.ExecutionRef("pc-replayed"), topic, True))
    res = await env.service.get_workflow_result(api.GetResultRequest(api.ExecutionRef("pc-replayed"), 20_000))
    assert res.status is api.WorkflowStatus.COMPLETED, res
    alive = await box.ping_until_canceled(pid)
    assert alive["cancels"] == 1 and alive["pid"] == pid
    assert [p["pid"] for p in env.worker.process_listing()["processes"] if p["parent"] == "pc-replayed"] == [pid]
    hist = await env.service.get_workflow_history(api.GetHistoryRequest(api.ExecutionRef("pc-replayed"),
                                                                        page_size=1000))
    assert len(spawn_events(hist.events)) == 1


async def test_a_spawn_that_reaches_the_host_after_the_close_is_abandoned_if_so_asked(env: Env) -> None:
    r = ok(await env.call("spawn_after_close", "abandon"))
    assert r == {"workflow": "returned", "from_ok": True, "value": "woke", "alive": True}, r


async def test_listing_shows_a_workflows_process_with_its_parent_and_policy(env: Env) -> None:
    """`legato process list` data: a process a workflow spawned names its parent and policy."""
    box = Mailbox(env.service, "@test-listed")
    await box.open()
    await env.service.start_workflow(api.StartWorkflowRequest(
        "pc-listed", "pr:close_with", "procs", ["abandon", "complete", box.pid, False]))
    pid = (await box.receive("pid")).payload
    await env.service.signal_workflow(api.SignalWorkflowRequest(api.ExecutionRef("pc-listed"), "close", True))
    await env.service.get_workflow_result(api.GetResultRequest(api.ExecutionRef("pc-listed"), 20_000))
    await box.ping_until_canceled(pid, cancels=0)  # it still runs after its parent completed
    listed = [p for p in env.worker.process_listing()["processes"] if p["pid"] == pid]
    assert listed and listed[0]["parent"] == "pc-listed" and listed[0]["parent_close_policy"] == "abandon"
    assert listed[0]["entry"] == "pr:parked" and listed[0]["state"] == "running" and listed[0]["restarts"] == 0


def spawn_events(events: list[Any]) -> list[Any]:
    return [e for e in events if e.event_type is EventType.SignalExternalWorkflowExecutionInitiated
            and e.attrs["signal_name"] == "@legato.spawn"]


class Mailbox:
    """A test's own mailbox (a caller pid): workflows and processes send to it; reads long-poll."""

    def __init__(self, service: api.WorkflowService, pid: str) -> None:
        self.service = service
        self.pid = pid
        self.waiting: list[api.ProcessMessage] = []

    async def open(self) -> None:
        await self.service.open_mailbox(self.pid)

    async def receive(self, topic: str, timeout_s: float = 20) -> api.ProcessMessage:
        async with asyncio.timeout(timeout_s):
            while True:
                for m in self.waiting:
                    if m.topic == topic:
                        self.waiting.remove(m)
                        return m
                self.waiting += await self.service.poll_mailbox(api.PollMailboxRequest(self.pid, 5000))

    async def ping_until_canceled(self, pid: str, cancels: int = 1, rounds: int = 200) -> dict[str, Any]:
        """Ping the parked process until it reports `cancels` CANCELs (each round is a round
        trip to it, so a CANCEL on its way is seen within a few)."""
        alive: dict[str, Any] = {}
        for _ in range(rounds):
            await self.service.send_message(api.SendMessageRequest(pid, "ping", True, sender=self.pid))
            alive = (await self.receive("alive")).payload
            if alive["cancels"] >= cancels:
                return alive
        raise AssertionError(f"{pid}: {alive}")


