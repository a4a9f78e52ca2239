"""A fake history for matching tests: records `record_*_task_started` calls; a test can make the
call for one workflow fail or block."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from legato import api


class FakeHistory:
    """Records every record_*_task_started call; `behaviour[workflow_id]` can make one fail or block."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []  # (kind, workflow_id, identity)
        self.request_ids: list[str] = []  # of every call, in order
        self.behaviour: dict[str, Callable[[], Any]] = {}

    async def _record(self, kind: str, t: api.TaskInfo, request_id: str, identity: str) -> None:
        self.calls.append((kind, t.workflow_id, identity))
        self.request_ids.append(request_id)
        action = self.behaviour.pop(t.workflow_id, None)
        if action is not None:
            result = action()
            if asyncio.iscoroutine(result):
                await result

    async def record_workflow_task_started(self, t: api.TaskInfo, request_id: str, identity: str) -> api.WorkflowTask:
        assert request_id
        await self._record("workflow", t, request_id, identity)
        return api.WorkflowTask(f"token-{t.workflow_id}".encode(), t.namespace, t.workflow_id, t.run_id, "type",
                                t.task_queue, t.attempt, t.scheduled_event_id + 1, 0, [])

    async def record_activity_task_started(self, t: api.TaskInfo, request_id: str, identity: str) -> api.ActivityTask:
        await self._record("activity", t, request_id, identity)
        return api.ActivityTask(f"token-{t.workflow_id}".encode(), t.namespace, t.workflow_id, t.run_id, "type",
                                "1", "act", t.task_queue, [], t.attempt, 0, 0, 1000)


def raiser(exc: BaseException) -> Callable[[], None]:
    def action() -> None:
        raise exc
    return action
