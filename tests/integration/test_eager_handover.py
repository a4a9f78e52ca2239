"""Tasks handed over with responses (worker.eager_tasks): a workflow task's activity and the
workflow task its completion schedules come back with the answers instead of through polls; with
the switch off, everything goes through polls. The results are the same either way."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest

from legato import api
from legato.api import ExecutionRef, GetResultRequest, StartWorkflowRequest, WorkflowStatus
from legato.bench import TASK_QUEUE, WORKFLOW_TYPE, write_app
from legato.config import Config
from legato.server import Engine
from worker.entries import load_registry
from worker.worker import Worker


class Counting:
    """A WorkflowService in front of another, counting calls and the tasks handed out."""

    def __init__(self, inner: api.WorkflowService) -> None:
        self.inner = inner
        self.calls: collections.Counter[str] = collections.Counter()
        self.handed: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)

        async def call(req: Any) -> Any:
            self.calls[name] += 1
            r = await target(req)
            if name.startswith("poll_") and r is not None:
                self.handed[name] += 1
            for attr in ("activity_tasks", "workflow_task"):
                v = getattr(r, attr, None)
                self.handed[f"{name}.{attr}"] += len(v) if isinstance(v, list) else int(v is not None)
            return r
        return call


async def _run(tmp: Path, eager: bool, count: int) -> Counting:
    config = Config()
    config.worker.eager_tasks = eager
    registry = load_registry(write_app(tmp / "app"))
    async with Engine(config, str(tmp / "db.sqlite")) as engine:
        svc = Counting(engine.frontend)
        w = Worker(svc, registry, config, identity="w")  # type: ignore[arg-type]
        await w.start()
        try:
            ids = [f"h-{i}" for i in range(count)]
            for wid in ids:
                await engine.frontend.start_workflow(StartWorkflowRequest(wid, WORKFLOW_TYPE, TASK_QUEUE, [wid]))
            results = await asyncio.gather(*(engine.frontend.get_workflow_result(
                GetResultRequest(ExecutionRef(wid), 30_000)) for wid in ids))
        finally:
            await w.stop()
    assert [(r.status, r.result) for r in results] == [(WorkflowStatus.COMPLETED, f"hello, {wid}") for wid in ids]
    return svc


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "polls"])
async def test_hello_workflows_with_and_without_hand_overs(tmp_path: Path, eager: bool) -> None:
    svc = await _run(tmp_path, eager, 20)
    handed = svc.handed
    if eager:
        assert handed["poll_activity_task"] == 0  # every activity came with its workflow task's answer
        assert handed["respond_workflow_task_completed.activity_tasks"] == 20
        # the second workflow task of each run came with its activity's answer (the run was cached)
        assert handed["respond_activity_task_completed.workflow_task"] == 20
        assert handed["poll_workflow_task"] == 20  # only the first one of each run is polled
    else:
        assert handed["poll_activity_task"] == 20 and handed["poll_workflow_task"] == 40
        assert sum(v for k, v in handed.items() if "." in k) == 0
