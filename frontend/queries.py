"""Delivering a query to a worker (issue 14), as Temporal's QueryWorkflow does.

1. History says where the run is: its task queue, status and sticky worker (the one that
   completed its last workflow task, which has it cached).
2. A running run with a sticky worker: matching hands the query (`cache_only`) to a poll of that
   worker, which answers from its cache. It gets `frontend.query_sticky_timeout_ms`; when it does
   not answer in time (it is gone or busy), or no longer has the run cached, go on.
3. Any worker polling the run's task queue takes the query, reads the history and replays it
   (or answers from its cache if it has the run), until `frontend.query_timeout_ms` (or the
   request's own timeout) has passed since the request came: then DEADLINE_EXCEEDED naming the
   task queue. A closed run goes straight to this step (Temporal answers queries of closed runs
   by replay too).

Nothing is written anywhere: a query changes neither the run, nor its history, nor the cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

from legato import api
from legato.config import FrontendConfig
from legato.errors import DeadlineExceeded, FailedPrecondition


async def run_query(history: api.HistoryService, matching: api.MatchingService, cfg: FrontendConfig,
                    req: api.QueryWorkflowRequest) -> api.QueryWorkflowResponse:
    loop = asyncio.get_running_loop()
    total_ms = req.timeout_ms or cfg.query_timeout_ms
    deadline = loop.time() + total_ms / 1000.0
    target = await history.get_query_target(req.ref)
    ns, tq = req.ref.namespace, target.task_queue
    base = api.QueryTaskRequest(ns, tq, req.ref.workflow_id, target.run_id, target.workflow_type,
                                api.QueryTask("", req.query_type, req.args))
    answer: api.RespondQueryTaskCompletedRequest | None = None
    if target.sticky_identity and target.status is api.WorkflowStatus.RUNNING:
        sticky = _attempt(base, min(cfg.query_sticky_timeout_ms, total_ms), cache_only=True,
                          sticky_identity=target.sticky_identity)
        try:
            answer = await matching.query_workflow(sticky)
        except DeadlineExceeded:
            answer = None  # the sticky worker is gone or busy: any worker replays
        if answer is not None and answer.not_cached:
            answer = None
    if answer is None:
        remaining_ms = int((deadline - loop.time()) * 1000)
        try:
            if remaining_ms <= 0:
                raise DeadlineExceeded("no time left", reason="QueryTimeout")
            answer = await matching.query_workflow(_attempt(base, remaining_ms, cache_only=False))
        except DeadlineExceeded:
            setting = "the request's timeout_ms" if req.timeout_ms else "frontend.query_timeout_ms"
            raise DeadlineExceeded(
                f"no worker answered the query {req.query_type} of workflow {req.ref.workflow_id} within "
                f"{total_ms} ms ({setting}): is a worker polling task queue {ns}/{tq}?",
                reason="QueryTimeout") from None
    if answer.failure is not None:
        who = f" on worker {answer.identity}" if answer.identity else ""
        raise FailedPrecondition(f"the query {req.query_type} of workflow {req.ref.workflow_id} failed{who}: "
                                 f"{answer.failure}", reason="QueryFailed")
    return api.QueryWorkflowResponse(target.run_id, target.status, answer.result, answer.source, answer.identity, tq)


def _attempt(base: api.QueryTaskRequest, timeout_ms: int, cache_only: bool,
             sticky_identity: str = "") -> api.QueryTaskRequest:
    """One delivery of the query: a query id of its own (an answer to an earlier attempt that
    arrives late finds nobody waiting for it, and is dropped)."""
    query = dataclasses.replace(base.query, query_id=uuid.uuid4().hex, cache_only=cache_only)
    return dataclasses.replace(base, query=query, sticky_identity=sticky_identity, timeout_ms=max(1, timeout_ms))
