"""The task runner with sticky tasks (only the events after the last task): a cached run goes on
from them; a run not cached, or a task whose WorkflowTaskStarted does not say the history's size,
asks for the whole history instead of guessing."""

from __future__ import annotations

from pathlib import Path

from legato.api import RespondWorkflowTaskCompletedRequest, WorkflowTask
from legato.config import Limits
from legato.events import EventType as E
from legato.events import HistoryEvent
from tests.unit.worker.helpers import History, make_app, types
from worker.cache import WorkflowCache
from worker.task_runner import TaskRunner

CODE = """\
local workflow = require("workflow")
return function()
    local ch = process.listen("next")
    local sizes = {}
    for _ = 1, 2 do
        ch:receive()
        table.insert(sizes, workflow.history_size())
    end
    return sizes
end
"""


def _task(h: History, events: list[HistoryEvent], token: bytes, prev: int) -> WorkflowTask:
    return WorkflowTask(token, "default", "wf-1", "run-1", "app:w", "q", 1, h.started_id, prev, events)


def _sized(h: History, size: int) -> None:
    """The last WorkflowTaskStarted says the history before it is `size` bytes (as the server writes)."""
    h.events[-1].attrs["history_size_bytes"] = size


def _runner(tmp: Path) -> TaskRunner:
    return TaskRunner(make_app(tmp, {"w": CODE}), Limits(), WorkflowCache(10), "w1")


def test_a_cached_run_goes_on_from_the_new_events_alone(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    h = History("app:w")
    first = runner.run(_task(h, list(h.events), b"t1", 0))
    assert isinstance(first.response, RespondWorkflowTaskCompletedRequest) and first.cached
    prev = h.started_id
    h.complete_task(first.response.commands).signal("next", 1).next_task()
    _sized(h, 1234)
    new = [e for e in h.events if e.event_id > prev]
    assert new[0].event_type is E.WorkflowTaskCompleted
    second = runner.run(_task(h, new, b"t2", prev))
    assert second.hit and not second.needs_history and second.cached
    prev = h.started_id
    assert isinstance(second.response, RespondWorkflowTaskCompletedRequest)
    h.complete_task(second.response.commands).signal("next", 2).next_task()
    _sized(h, 5678)
    third = runner.run(_task(h, [e for e in h.events if e.event_id > prev], b"t3", prev))
    assert isinstance(third.response, RespondWorkflowTaskCompletedRequest)
    assert types(third.response.commands) == ["CompleteWorkflowExecution"]
    assert third.response.commands[0].attrs["result"] == [1234, 5678]  # as each WorkflowTaskStarted says


def test_a_run_not_cached_asks_for_the_whole_history(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    h = History("app:w")
    first = runner.run(_task(h, list(h.events), b"t1", 0))
    assert isinstance(first.response, RespondWorkflowTaskCompletedRequest)
    runner.cache.evict("run-1")
    prev = h.started_id
    h.complete_task(first.response.commands).signal("next", 1).next_task()
    _sized(h, 1234)
    out = runner.run(_task(h, [e for e in h.events if e.event_id > prev], b"t2", prev))
    assert out.needs_history and out.response is None and not out.cached
    whole = runner.run(_task(h, list(h.events), b"t2", prev))  # what the worker sends next
    assert isinstance(whole.response, RespondWorkflowTaskCompletedRequest) and not whole.hit


def test_a_sticky_task_that_does_not_say_the_size_asks_for_the_whole_history(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    h = History("app:w")
    first = runner.run(_task(h, list(h.events), b"t1", 0))
    assert isinstance(first.response, RespondWorkflowTaskCompletedRequest)
    prev = h.started_id
    h.complete_task(first.response.commands).signal("next", 1).next_task()  # no history_size_bytes
    out = runner.run(_task(h, [e for e in h.events if e.event_id > prev], b"t2", prev))
    assert out.needs_history
    assert "run-1" not in runner.cache  # dropped: the whole history replays it
