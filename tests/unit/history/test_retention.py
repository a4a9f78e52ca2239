"""Retention (issue 13): a closed run is deleted once its namespace's retention has passed: its
history, mutable state, visibility record and current-run pointer (if it still names the run).
On SQLite and on the real Cassandra node (`history_store`). The fake clock makes the deletion
timer due; `fire` waits for its effect, so every check after it is deterministic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from history.api import delete_run as delete_run_module
from history.queues import TimerTask
from history.state import TM_DELETE_HISTORY
from legato import codec
from legato.api import (
    ExecutionRef,
    GetHistoryRequest,
    ListWorkflowsRequest,
    StartWorkflowRequest,
    TerminateWorkflowRequest,
    WorkflowExecutionInfo,
    WorkflowStatus,
)
from legato.commands import CommandType as C
from legato.config import Config, ConfigError, load_config
from legato.errors import NotFound, Unavailable
from tests.unit.history.conftest import Env, FakeClock, close_env, cmd, complete_wf, make_config, make_env

SECOND = 1000


@pytest.fixture
async def env(history_store: str) -> AsyncIterator[Env]:
    """Retention 1 s by default; namespace "keep" keeps for ever, "long" keeps an hour."""
    e = await make_env(None, make_config(retention="1s", namespace_retention={"keep": 0, "long": "1h"}))
    try:
        yield e
    finally:
        await close_env(e)


async def start(env: Env, wf: str, ns: str = "default") -> str:
    resp = await env.history.start_workflow(StartWorkflowRequest(wf, "app:order", "q", namespace=ns))
    return resp.run_id


async def terminate(env: Env, wf: str, ns: str = "default") -> None:
    await env.history.terminate_workflow(TerminateWorkflowRequest(ExecutionRef(wf, namespace=ns), reason="done"))
    await env.settle()  # the visibility record of the close is written


async def listed(env: Env, ns: str = "default") -> list[tuple[str, str]]:
    page = await env.visibility.list(ListWorkflowsRequest(ns, "", 1000))
    return sorted((e.workflow_id, e.run_id) for e in page.executions)


async def gone(env: Env, wf: str, run_id: str, ns: str = "default") -> bool:
    """Whether the run is deleted everywhere: describe, history, visibility, store rows."""
    ref = ExecutionRef(wf, run_id, ns)
    for read in (env.history.describe_workflow(ref), env.history.get_workflow_history(GetHistoryRequest(ref))):
        try:
            await read
        except NotFound as e:
            assert e.reason == "WorkflowNotFound" and "not found" in e.message
        else:
            return False
    sid = env.history.shard_for(ns, wf)
    assert await env.store.get_run(sid, ns, wf, run_id) is None
    assert await env.store.read_history(ns, wf, run_id, 1, 1000, 1000) == []
    assert (wf, run_id) not in await listed(env, ns)
    return True


async def exists(env: Env, wf: str, run_id: str, ns: str = "default") -> bool:
    d = await env.history.describe_workflow(ExecutionRef(wf, run_id, ns))
    events = (await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef(wf, run_id, ns)))).events
    listed_now = await listed(env, ns)
    return d.info.run_id == run_id and len(events) == d.info.history_length > 0 and (wf, run_id) in listed_now


async def test_a_closed_run_is_deleted_once_its_retention_has_passed(env: Env) -> None:
    run = await start(env, "wf")
    await env.run_wf("wf", complete_wf("ok"))
    await env.settle()
    assert await exists(env, "wf", run)
    await env.fire(SECOND - 1)  # not yet
    assert await exists(env, "wf", run)
    await env.fire(1)
    assert await gone(env, "wf", run)
    with pytest.raises(NotFound, match="workflow 'wf' not found in namespace 'default'"):
        await env.history.describe_workflow(ExecutionRef("wf"))  # the current-run pointer went too
    sid = env.history.shard_for("default", "wf")
    assert await env.store.get_current_run(sid, "default", "wf") is None
    await env.history.flush()  # the fired timer row is deleted like any other
    left = [codec.loads(r.data)["k"] for r in await env.store.read_timer_tasks(sid, (0, 0), 1 << 60, 100)]
    assert TM_DELETE_HISTORY not in left
    # The id is free again.
    again = await start(env, "wf")
    assert (await env.history.describe_workflow(ExecutionRef("wf"))).info.run_id == again


@pytest.mark.parametrize("close", ["completed", "failed", "terminated", "continued_as_new"])
async def test_every_way_of_closing_schedules_the_deletion(env: Env, close: str) -> None:
    run = await start(env, "wf")
    if close == "terminated":
        await terminate(env, "wf")
    elif close == "failed":
        await env.run_wf("wf", cmd(C.FailWorkflowExecution, failure={"message": "boom"}))
    elif close == "continued_as_new":
        await env.run_wf("wf", cmd(C.ContinueAsNewWorkflowExecution, input=[]))
    else:
        await env.run_wf("wf", complete_wf())
    await env.settle()
    await env.fire(SECOND)
    assert await gone(env, "wf", run)
    if close == "continued_as_new":  # the run that continues it is open: it stays, and stays current
        d = await env.history.describe_workflow(ExecutionRef("wf"))
        assert d.info.run_id != run and d.info.status == WorkflowStatus.RUNNING
        await env.fire(3600 * SECOND)
        assert await exists(env, "wf", d.info.run_id)


async def test_an_open_run_is_never_deleted(env: Env) -> None:
    run = await start(env, "wf")
    await env.settle()
    await env.fire(100 * 3600 * SECOND)
    assert await exists(env, "wf", run)
    # Even a deletion timer naming it (it cannot exist: only a close writes one) deletes nothing.
    await env.history.run_timer_task(TimerTask(env.clock.now, 1 << 62, {
        "k": TM_DELETE_HISTORY, "ns": "default", "wf": "wf", "run": run, "st": 0}))
    assert await exists(env, "wf", run)
    sid = env.history.shard_for("default", "wf")
    cur = await env.store.get_current_run(sid, "default", "wf")
    assert cur is not None and cur.run_id == run


async def test_a_newer_run_of_the_same_workflow_id_survives_the_old_runs_deletion(env: Env) -> None:
    old = await start(env, "wf")
    await terminate(env, "wf")
    new = await start(env, "wf")  # started before the old run's retention passed
    await env.settle()
    await env.fire(SECOND)
    assert await gone(env, "wf", old)
    assert await exists(env, "wf", new)
    d = await env.history.describe_workflow(ExecutionRef("wf"))
    assert (d.info.run_id, d.info.status) == (new, WorkflowStatus.RUNNING)
    sid = env.history.shard_for("default", "wf")
    cur = await env.store.get_current_run(sid, "default", "wf")
    assert cur is not None and cur.run_id == new


async def test_the_namespace_retention_overrides_the_default(env: Env) -> None:
    runs = {ns: await start(env, "wf", ns) for ns in ("default", "keep", "long")}
    for ns in runs:
        await terminate(env, "wf", ns)
    await env.fire(SECOND)
    assert await gone(env, "wf", runs["default"])
    assert await exists(env, "wf", runs["long"], "long")
    await env.fire(3600 * SECOND - SECOND - 1)
    assert await exists(env, "wf", runs["long"], "long")
    await env.fire(1)
    assert await gone(env, "wf", runs["long"], "long")
    await env.fire(10 * 365 * 86_400 * SECOND)  # "keep": retention 0, kept for ever
    assert await exists(env, "wf", runs["keep"], "keep")


async def _deletion_timer(env: Env, wf: str) -> TimerTask:
    sid = env.history.shard_for("default", wf)
    for r in await env.store.read_timer_tasks(sid, (0, 0), 1 << 60, 1000):
        data = codec.loads(r.data)
        if data["k"] == TM_DELETE_HISTORY and data["wf"] == wf:
            return TimerTask(r.fire_time_ms, r.task_id, data)
    raise AssertionError(f"no deletion timer for {wf}")


async def test_a_deletion_that_runs_twice_is_harmless(env: Env) -> None:
    run = await start(env, "wf")
    await terminate(env, "wf")
    other = await start(env, "other")
    t = await _deletion_timer(env, "wf")
    await env.fire(SECOND)
    assert await gone(env, "wf", run)
    await env.history.run_timer_task(t)  # fired again (a redelivered timer, a new shard owner)
    assert await gone(env, "wf", run)
    assert await exists(env, "other", other)


async def test_a_deletion_cut_short_is_finished_by_the_retried_timer(env: Env,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    run = await start(env, "wf")
    await terminate(env, "wf")
    real = env.store.delete_run
    calls: list[str] = []

    async def crash_once(*args: Any) -> None:
        calls.append(args[4])
        if len(calls) == 1:  # the visibility record is deleted already; the store fails now
            raise Unavailable("the store went away", reason="StoreError")
        await real(*args)

    monkeypatch.setattr(env.store, "delete_run", crash_once)
    await env.fire(SECOND)
    assert calls == [run]
    d = await env.history.describe_workflow(ExecutionRef("wf", run))  # half deleted: the run row is there
    assert d.info.status == WorkflowStatus.TERMINATED
    await env.fire(60 * SECOND)  # the timer queue retries the failed timer after a backoff
    assert calls == [run, run]
    assert await gone(env, "wf", run)


async def test_the_deletion_waits_for_the_runs_visibility_record(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The close's visibility upsert (a transfer task) is done before the run is deleted: a late
    upsert would bring the record back."""
    monkeypatch.setattr(delete_run_module, "RETENTION_TRANSFER_WAIT_S", 0.01)
    vis = env.history._visibility
    release = asyncio.Event()
    real_upsert = vis.upsert

    async def slow_upsert(info: WorkflowExecutionInfo) -> None:
        if info.status != WorkflowStatus.RUNNING:
            await release.wait()
        await real_upsert(info)

    monkeypatch.setattr(vis, "upsert", slow_upsert)
    run = await start(env, "wf")
    await env.history.terminate_workflow(TerminateWorkflowRequest(ExecutionRef("wf"), reason="done"))
    await env.fire(SECOND)  # due, but the visibility upsert is still in flight: the timer waits
    assert (await env.history.describe_workflow(ExecutionRef("wf", run))).info.run_id == run
    release.set()
    await env.settle()
    page = await env.visibility.list(ListWorkflowsRequest("default", "", 10))
    assert [(e.run_id, e.status) for e in page.executions] == [(run, WorkflowStatus.TERMINATED)]
    await env.fire(60 * SECOND)
    assert await gone(env, "wf", run)


async def test_no_deletion_timer_when_retention_is_zero(history_store: str) -> None:
    env = await make_env(None, make_config(retention=0))
    try:
        run = await start(env, "wf")
        await terminate(env, "wf")
        sid = env.history.shard_for("default", "wf")
        kinds = [codec.loads(r.data)["k"] for r in await env.store.read_timer_tasks(sid, (0, 0), 1 << 62, 1000)]
        assert TM_DELETE_HISTORY not in kinds
        await env.fire(100 * 365 * 86_400 * SECOND)
        assert await exists(env, "wf", run)
    finally:
        await close_env(env)


class WallClock(FakeClock):
    def __call__(self) -> int:
        return int(time.time() * 1000)


async def test_with_the_real_clock_the_run_is_gone_after_a_second(history_store: str) -> None:
    """No fake clock: the timer queue fires the deletion by itself; poll until it happened."""
    env = await make_env(None, make_config(retention="1s"), clock=WallClock())
    try:
        run = await start(env, "wf")
        await terminate(env, "wf")
        assert await exists(env, "wf", run)
        closed = time.monotonic()
        deadline = closed + 30.0
        while not await _gone_quietly(env, "wf", run):
            assert time.monotonic() < deadline, "the run was not deleted within 30 s of a 1 s retention"
            await asyncio.sleep(0.05)
        assert time.monotonic() - closed >= 0.9  # not before its retention passed
        assert await gone(env, "wf", run)
    finally:
        await close_env(env)


async def _gone_quietly(env: Env, wf: str, run_id: str) -> bool:
    try:
        await env.history.describe_workflow(ExecutionRef(wf, run_id))
    except NotFound:
        return True
    return False


# ---------------------------------------------------------------------- configuration

def test_retention_configuration() -> None:
    h = Config().history
    assert h.retention == 72 * 3600 * SECOND and h.retention_ms("any") == h.retention
    c = load_config(None, {"LEGATO_HISTORY__RETENTION": "30d", "LEGATO_HISTORY__NAMESPACE_RETENTION": "a=1h, b=0"})
    assert (c.history.retention_ms("x"), c.history.retention_ms("a"), c.history.retention_ms("b")) == (
        30 * 86_400 * SECOND, 3600 * SECOND, 0)
    assert make_config(retention=5000).history.retention == 5000  # a bare number is milliseconds


@pytest.mark.parametrize(("env_vars", "message"), [
    ({"LEGATO_HISTORY__RETENTION": "3 days"}, "history.retention: .*'3 days' is not a duration"),
    ({"LEGATO_HISTORY__RETENTION": "-5"}, "history.retention: .*not a duration"),
    ({"LEGATO_HISTORY__RETENTION": "200000d"}, "history.retention: .*too long"),
    ({"LEGATO_HISTORY__NAMESPACE_RETENTION": "orders"}, "history.namespace_retention: .*namespace=duration"),
    ({"LEGATO_HISTORY__NAMESPACE_RETENTION": "orders=soon"},
     "history.namespace_retention: .*retention of namespace 'orders': 'soon' is not a duration"),
])
def test_invalid_retention_is_refused_naming_the_key(env_vars: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, env_vars)


def test_invalid_retention_in_yaml(tmp_path: Any) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("history:\n  retention: 72h\n  namespace_retention:\n    orders: -1\n")
    with pytest.raises(ConfigError, match=r"in .*c\.yaml: history\.namespace_retention: .*cannot be negative"):
        load_config(path)
    path.write_text("history:\n  retention: 72h\n  namespace_retention:\n    orders: 30d\n")
    assert load_config(path).history.retention_ms("orders") == 30 * 86_400 * SECOND
