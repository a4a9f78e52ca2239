"""Lua host processes behind the watchdog (worker.lua_isolation): every answer goes to its own
task, also when hosts are killed and replaced while tasks are queued behind the stuck one, and a
stalled event loop (a busy worker) is not taken for a stuck host."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from legato.api import RespondWorkflowTaskCompletedRequest, RespondWorkflowTaskFailedRequest, WorkflowTask
from legato.config import Config
from tests.unit.worker.helpers import History, make_app
from worker.lua_isolation import IsolatedTasks
from worker.task_runner import TaskOutcome

# Spins for `n` loop rounds, then completes with n: some tasks run past the watchdog, some finish
# just around it, most at once.
SPIN = """\
return function(n)
    local x = 0
    for i = 1, n do x = x + i % 7 end
    return n
end
"""
WATCHDOG_MS = 60
TASKS = 60


def _task(i: int, n: int) -> WorkflowTask:
    h = History("app:spin", [n])
    return WorkflowTask(f"token-{i}".encode(), "default", f"wf-{i}", f"run-{i}", "app:spin", "q", 1, h.started_id,
                        0, list(h.events))


def _tasks(tmp: Path) -> IsolatedTasks:
    config = Config()
    config.worker.lua_processes = 1
    config.worker.lua_watchdog_ms = WATCHDOG_MS
    config.limits.lua_instructions_per_task = 10**10
    return IsolatedTasks(make_app(tmp, {"spin": SPIN}), config, "w1")


def _assert_own_answers(ns: list[int], outcomes: list[TaskOutcome]) -> None:
    for i, (n, outcome) in enumerate(zip(ns, outcomes, strict=True)):
        resp = outcome.response
        assert resp is not None and resp.task_token == f"token-{i}".encode(), (i, resp)
        if isinstance(resp, RespondWorkflowTaskCompletedRequest):
            assert resp.commands[-1].attrs["result"] == n
        else:
            assert isinstance(resp, RespondWorkflowTaskFailedRequest)
            assert "worker.lua_watchdog_ms" in resp.failure.message or "ended" in resp.failure.message, resp


async def test_a_stalled_event_loop_is_not_a_stuck_host(tmp_path: Path) -> None:
    """The loop stalls while the host answers: the answers wait in the pipe, and the watchdog,
    waking late, must let the reader take them instead of killing the host (whose late answers
    the old code then matched to the next tasks)."""
    tasks = _tasks(tmp_path)
    await tasks.start()
    try:
        ns = [0] * 20
        runs = [asyncio.ensure_future(tasks.run(_task(i, n))) for i, n in enumerate(ns)]
        await runs[0]  # the host is serving; the others are written to it
        time.sleep(10 * WATCHDOG_MS / 1000)  # noqa: ASYNC251 - the stall itself, as a busy worker's loop
        outcomes = list(await asyncio.gather(*runs))
    finally:
        await tasks.stop()
    assert tasks.restarts == 0
    _assert_own_answers(ns, outcomes)


async def test_answers_match_their_tasks_across_host_restarts(tmp_path: Path) -> None:
    tasks = _tasks(tmp_path)
    await tasks.start()
    try:
        # A loop round costs about 0.05 µs: most tasks at once, some around the watchdog, some
        # (about 2.5 s) far past it; seeded.
        rng = random.Random(13)
        ns = [rng.choice([0, 0, 0, 0, rng.randrange(0, 4_000_000), 50_000_000]) for _ in range(TASKS)]
        outcomes = await asyncio.gather(*(tasks.run(_task(i, n)) for i, n in enumerate(ns)))
    finally:
        await tasks.stop()
    assert tasks.restarts > 0, "no task ran past the watchdog: the test did not test restarts"
    _assert_own_answers(ns, outcomes)
