"""The worker's side of query tasks (issue 14): a workflow-task poll that returned a task with
`query` set. Nothing was recorded in history for it, and nothing is: the answer goes back with
`respond_query_task_completed`, and the run's cached execution is only looked at.

* the run is cached here (in the Lua host that runs it): answered from the cache ("worker-cache");
* not cached and the query is `cache_only` (the sticky attempt): `not_cached`, and the frontend
  asks any worker of the task queue instead;
* otherwise the run's history is read and replayed apart from the cache ("worker-replay").
"""

from __future__ import annotations

import logging

from legato import api
from legato.errors import Failure, InvalidArgument, Kind, NotFound, ServiceError
from legato.lineage import read_history
from worker.lua_isolation import WorkflowTasks
from worker.queries import QueryJob, QueryOutcome

log = logging.getLogger("legato.worker")
PAYLOAD_TOO_LARGE = "PayloadTooLarge"  # the reason legato.codec gives a payload over the limit


class QueryTasks:
    def __init__(self, client: api.WorkflowService, runs: WorkflowTasks, identity: str) -> None:
        self.client = client
        self.runs = runs
        self.identity = identity

    async def handle(self, task: api.WorkflowTask) -> None:
        q = task.query
        assert q is not None
        try:
            answer = await self._answer(task, q)
        except ServiceError as e:  # the history could not be read
            answer = self._failed(q, Failure(f"cannot read the history of run {task.run_id}: {e.message}",
                                             Kind.UNAVAILABLE, True))
        try:
            await self.client.respond_query_task_completed(answer)
        except InvalidArgument as e:  # the answer is larger than limits.max_payload_bytes (short: it must fit)
            limit = " (limits.max_payload_bytes)" if e.reason == PAYLOAD_TOO_LARGE else ""
            await self._send_quietly(self._failed(q, Failure(f"the answer was refused: {e.message}{limit}",
                                                             Kind.LIMIT_EXCEEDED, False)))
        except NotFound:
            log.debug("query %s of %s: its caller stopped waiting", q.query_type, task.workflow_id)

    async def _answer(self, task: api.WorkflowTask, q: api.QueryTask) -> api.RespondQueryTaskCompletedRequest:
        job = QueryJob(task.run_id, task.workflow_type, q.query_type, task.namespace, task.workflow_id,
                       task.task_queue, q.args)
        if task.run_id in self.runs.cache:
            out = await self.runs.query(job)
            if not out.not_cached:
                return self._answered(q, out)
        if q.cache_only:
            return api.RespondQueryTaskCompletedRequest(q.query_id.encode(), not_cached=True, identity=self.identity)
        job.events = await read_history(self.client, api.ExecutionRef(task.workflow_id, task.run_id, task.namespace))
        return self._answered(q, await self.runs.query(job))

    def _answered(self, q: api.QueryTask, out: QueryOutcome) -> api.RespondQueryTaskCompletedRequest:
        if out.not_cached:  # (a cache_only job only)
            return api.RespondQueryTaskCompletedRequest(q.query_id.encode(), not_cached=True, identity=self.identity)
        if out.failure is not None:
            return self._failed(q, out.failure)
        source = api.QuerySource.WORKER_CACHE if out.from_cache else api.QuerySource.WORKER_REPLAY
        return api.RespondQueryTaskCompletedRequest(q.query_id.encode(), out.result, source=source.value,
                                                    identity=self.identity)

    def _failed(self, q: api.QueryTask, failure: Failure) -> api.RespondQueryTaskCompletedRequest:
        return api.RespondQueryTaskCompletedRequest(q.query_id.encode(), failure=failure, identity=self.identity)

    async def _send_quietly(self, answer: api.RespondQueryTaskCompletedRequest) -> None:
        try:
            await self.client.respond_query_task_completed(answer)
        except ServiceError as e:
            log.debug("could not answer a query: %s", e)
