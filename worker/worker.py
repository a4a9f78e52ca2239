"""The worker: polls task queues, runs workflow tasks (Lua, replayed) and activities.

One `Worker` serves every `temporal.worker` entry of a registry: for each distinct
(namespace, task_queue) it runs `worker.workflow_pollers` workflow-task pollers and
`worker.activity_pollers` activity-task pollers. Workflow tasks run in Lua host processes behind
a watchdog (`worker.lua_isolation`), activities in a thread pool (Lua releases the GIL), bounded
by `max_concurrent_workflow_tasks` / `max_concurrent_activities`; a poller only asks for a task
when a slot is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from legato import metrics
from legato.api import (
    ActivityTask,
    ExecutionRef,
    GetHistoryRequest,
    PollRequest,
    RecordActivityHeartbeatRequest,
    RespondActivityTaskCanceledRequest,
    RespondActivityTaskCompletedRequest,
    RespondActivityTaskFailedRequest,
    RespondWorkflowTaskCompletedRequest,
    WorkflowService,
    WorkflowTask,
)
from legato.commands import CommandType
from legato.config import Config
from legato.errors import Unavailable
from legato.events import HistoryEvent
from legato.metrics import Sample
from worker.activity import ActivityRunner, CallContext
from worker.cache import WorkflowCache
from worker.entries import Registry
from worker.lua_isolation import CachedRuns, workflow_tasks
from worker.processes.host import ProcessHosts
from worker.processes.supervisor import Supervisor
from worker.query_tasks import QueryTasks
from worker.task_runner import is_partial, shortened
from worker.threads import DaemonThreadPool

log = logging.getLogger("legato.worker")
_CACHE_HIT, _CACHE_MISS = metrics.worker_cache_requests.labels("hit"), metrics.worker_cache_requests.labels("miss")
_ACTIVITY_OUTCOMES = {o: metrics.activity_outcomes.labels(o) for o in ("completed", "failed", "canceled")}

T = TypeVar("T")
HISTORY_PAGE = 1000  # events per page when a sticky task's run must be read again


class Backoff:
    """Exponential backoff with jitter (half fixed, half random), reset after a success."""

    def __init__(self, initial: float = 0.1, maximum: float = 10.0, multiplier: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.failures = 0

    def next_delay(self) -> float:
        cap = min(self.maximum, self.initial * (self.multiplier ** self.failures))
        self.failures += 1
        return cap / 2 + random.uniform(0, cap / 2)

    def reset(self) -> None:
        self.failures = 0


async def respond_with_retry(call: Callable[[], Awaitable[T]], budget_s: float, what: str) -> T:
    """`await call()`, again after a backoff while it raises Unavailable, for up to `budget_s`.

    For the responses to tasks: a lost response costs a timeout and a re-run (of an activity's
    side effects, too), while a repeated one is dropped by history (a task token is accepted
    once), so when a history or matching node restarts it pays to keep trying for a while."""
    backoff = Backoff(maximum=1.0)
    deadline = time.monotonic() + budget_s
    while True:
        try:
            return await call()
        except Unavailable as err:
            delay = backoff.next_delay()
            if time.monotonic() + delay > deadline:
                raise
            log.info("%s: %s; sending it again in %.2fs", what, err, delay)
        await asyncio.sleep(delay)


class LogThrottle:
    """At most one log line per `interval_s` for a kind of message; counts the ones held back."""

    def __init__(self, interval_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self._last = -interval_s
        self._held_back = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            return True
        self._held_back += 1
        return False

    def suppressed_note(self) -> str:
        """For the allowed line: how many were held back since the last one (then reset)."""
        n, self._held_back = self._held_back, 0
        return f" ({n} more such failures not logged)" if n else ""


def default_identity() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


class Worker:
    def __init__(self, client: WorkflowService, registry: Registry, config: Config, identity: str = "") -> None:
        self.client = client
        self.registry = registry
        self.config = config
        self.identity = identity or default_identity()
        self.workflow_tasks = workflow_tasks(registry, config, self.identity)
        self.queries = QueryTasks(client, self.workflow_tasks, self.identity)  # query tasks (issue 14)
        self.activities = ActivityRunner(registry, self._heartbeat_from_thread, config.worker.heartbeat_throttle_ms,
                                         config.limits.activity_lua_memory_bytes)
        self.task_queues = registry.task_queues()
        self.processes = ProcessHosts(client, registry, config)  # process.host entries (worker/processes)
        self.supervisor = Supervisor(self.processes)  # their process.service entries
        self._loop: asyncio.AbstractEventLoop | None = None
        self._act_pool: DaemonThreadPool | None = None
        self._wf_slots: asyncio.Semaphore | None = None
        self._act_slots: asyncio.Semaphore | None = None
        self._pollers: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._eager_wft_waiting = 0  # workflow tasks handed to us with an activity's completion, waiting for a slot
        self._stopping = asyncio.Event()
        self._started = False
        self.min_empty_poll_s = 0.05  # an empty poll faster than this (no long-poll) backs off
        self._poll_errors = LogThrottle()
        self._unregister_gauges: Callable[[], None] = lambda: None
        self.poll_error = ""  # why the last poll failed ("": it did not)
        self._running = {"workflow": 0, "activity": 0}  # tasks being handled (a poll holds a slot too)

    def unready(self) -> str | None:
        """Readiness: None while the worker polls and its last poll reached the server."""
        if not self._started:
            return "not polling (starting or stopping)"
        if self.poll_error:
            return f"the last poll failed: {self.poll_error}"
        return None

    def gauges(self) -> Iterator[Sample]:
        """This worker's samples of the gauges read at scrape time (legato/metrics.py)."""
        wc = self.config.worker
        yield "legato_up", ("worker",), 1.0
        yield "legato_worker_cached_workflows", (), float(len(self.cache))
        yield "legato_worker_lua_memory_bytes", (), float(self.cache.bytes_used)
        for host in self.processes.hosts:
            yield "legato_worker_processes", (host,), float(sum(1 for p in self.processes.live.values()
                                                                  if p.host == host))
        for service, st in self.supervisor.states.items():
            yield "legato_worker_service_restarts", (service,), float(st.restarts)
        for kind, size in (("workflow", wc.max_concurrent_workflow_tasks), ("activity", wc.max_concurrent_activities)):
            yield "legato_worker_task_slots", (kind,), float(size)
            yield "legato_worker_task_slots_used", (kind,), float(self._running[kind])

    def process_listing(self) -> dict[str, Any]:
        """The live processes of this worker's process hosts and its services' states
        (`GET /processes` on the status port, `legato process list`)."""
        return {"identity": self.identity, "processes": self.processes.listing(),
                "services": self.supervisor.listing()}

    @property
    def cache(self) -> WorkflowCache | CachedRuns:
        """The runs cached for their next workflow task (in this process, or in the Lua hosts)."""
        return self.workflow_tasks.cache

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.activities.stopping.clear()
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        wc = self.config.worker
        self._act_pool = DaemonThreadPool(wc.max_concurrent_activities, thread_name_prefix="legato-act")
        self._wf_slots = asyncio.Semaphore(wc.max_concurrent_workflow_tasks)
        self._act_slots = asyncio.Semaphore(wc.max_concurrent_activities)
        await self.workflow_tasks.start()
        for namespace, queue in self.task_queues:
            for i in range(wc.workflow_pollers):
                self._pollers.append(asyncio.create_task(
                    self._poll_loop("workflow", namespace, queue, self._wf_slots, self._poll_workflow,
                                    self._run_workflow_task), name=f"wf-poller-{queue}-{i}"))
            for i in range(wc.activity_pollers):
                self._pollers.append(asyncio.create_task(
                    self._poll_loop("activity", namespace, queue, self._act_slots, self._poll_activity,
                                    self._run_activity_task), name=f"act-poller-{queue}-{i}"))
        self._unregister_gauges = metrics.sources.add(self.gauges)
        await self.processes.start()
        await self.supervisor.start()
        log.info("worker polling %s as %s",
                 ", ".join(f"{ns}/{q}" for ns, q in self.task_queues) or "(no task queues)", self.identity)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop polling; wait up to `grace_s` for tasks in flight, then abandon the rest."""
        if not self._started:
            return
        self._started = False
        self._unregister_gauges()
        self._stopping.set()
        await self.supervisor.stop()
        await self.processes.stop()
        for t in self._pollers:
            t.cancel()
        await asyncio.gather(*self._pollers, return_exceptions=True)
        self._pollers.clear()
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace_s)
            self.activities.stopping.set()  # activities still running stop at their next hook (or sleep)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                log.warning("worker stopped with %d task(s) abandoned", len(pending))
        if self._act_pool is not None:
            self._act_pool.shutdown(wait=False, cancel_futures=True)
        self._act_pool = None
        await self.workflow_tasks.stop()

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ polling

    async def _poll_workflow(self, req: PollRequest) -> WorkflowTask | None:
        return await self.client.poll_workflow_task(req)

    async def _poll_activity(self, req: PollRequest) -> ActivityTask | None:
        return await self.client.poll_activity_task(req)

    async def _poll_loop(self, kind: str, namespace: str, queue: str, slots: asyncio.Semaphore,
                         poll: Callable[[PollRequest], Awaitable[Any]],
                         handle: Callable[[Any], Awaitable[None]]) -> None:
        backoff = Backoff()
        empty = Backoff(initial=self.min_empty_poll_s, maximum=1.0)
        req = PollRequest(task_queue=queue, namespace=namespace, identity=self.identity)
        while not self._stopping.is_set():
            await slots.acquire()
            handed_over = False
            try:
                t0 = time.monotonic()
                try:
                    task = await poll(req)
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    self.poll_error = f"{type(err).__name__}: {err}"
                    delay = backoff.next_delay()
                    # Every poller fails at once while the server is away: one line per interval.
                    level = logging.WARNING if self._poll_errors.allow() else logging.DEBUG
                    log.log(level, "%s poll on %s/%s failed (%s: %s); retrying in %.2fs%s", kind, namespace, queue,
                            type(err).__name__, err, delay, self._poll_errors.suppressed_note())
                    await self._sleep(delay)
                    continue
                backoff.reset()
                self.poll_error = ""
                if task is None:
                    if time.monotonic() - t0 < self.min_empty_poll_s:
                        await self._sleep(empty.next_delay())
                    else:
                        empty.reset()
                    continue
                empty.reset()
                handed_over = True
                t = asyncio.create_task(self._guarded(handle, task, slots))
                self._inflight.add(t)
                t.add_done_callback(self._inflight.discard)
            finally:
                if not handed_over:
                    slots.release()

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    async def _guarded(self, handle: Callable[[Any], Awaitable[None]], task: Any, slots: asyncio.Semaphore) -> None:
        kind = "workflow" if slots is self._wf_slots else "activity"
        self._running[kind] += 1
        try:
            await handle(task)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("error while handling a task")
        finally:
            self._running[kind] -= 1
            slots.release()

    # ------------------------------------------------------------ workflow tasks

    async def _run_workflow_task(self, task: WorkflowTask) -> None:
        if task.query is not None:  # a query task: answered, nothing recorded (worker/query_tasks.py)
            await self.queries.handle(task)
            return
        started = time.perf_counter()
        if is_partial(task) and task.run_id not in self.workflow_tasks.cache:
            task = await self._with_full_history(task)
        outcome = await self.workflow_tasks.run(task)
        if outcome.needs_history:  # the run left the cache meanwhile
            task = await self._with_full_history(task)
            outcome = await self.workflow_tasks.run(task)
        metrics.workflow_task_latency.observe(time.perf_counter() - started)
        (_CACHE_HIT if outcome.hit else _CACHE_MISS).inc()
        if outcome.evicted:
            metrics.worker_cache_evictions.inc(len(outcome.evicted))
        resp = outcome.response
        if resp is None:
            raise RuntimeError(f"workflow task of {task.workflow_id}/{task.run_id}: no response from the runner")
        reserved = 0
        try:
            if isinstance(resp, RespondWorkflowTaskCompletedRequest):
                reserved = await self._request_eager(resp, task)
                done = await self._respond(lambda: self.client.respond_workflow_task_completed(resp), task)
                reserved = await self._start_eager(done.activity_tasks if done is not None else [], reserved)
            else:
                await self._respond(lambda: self.client.respond_workflow_task_failed(resp), task)
        except Exception as err:
            self.workflow_tasks.evict(task.run_id)
            log.warning("could not respond to workflow task of %s/%s: %s: %s", task.workflow_id, task.run_id,
                        type(err).__name__, err)
        finally:
            assert self._act_slots is not None
            for _ in range(reserved):
                self._act_slots.release()

    async def _with_full_history(self, task: WorkflowTask) -> WorkflowTask:
        """A sticky task (only the events after the last task) for a run this worker no longer
        has cached: the events before them read from the server (as Temporal's SDKs do)."""
        first = task.history[0].event_id
        ref = ExecutionRef(task.workflow_id, task.run_id, task.namespace)
        events: list[HistoryEvent] = []
        while len(events) < first - 1:
            page = await self.client.get_workflow_history(GetHistoryRequest(
                ref, first_event_id=len(events) + 1, page_size=min(HISTORY_PAGE, first - 1 - len(events))))
            if not page.events:
                raise RuntimeError(f"workflow task of {task.workflow_id}/{task.run_id}: the server returned no "
                                   f"events from {len(events) + 1} (the run has {first - 1} before the task's)")
            events.extend(e for e in page.events if e.event_id < first)
        return dataclasses.replace(task, history=events + task.history)

    async def _request_eager(self, resp: RespondWorkflowTaskCompletedRequest, task: WorkflowTask) -> int:
        """Ask to run the task's new activities here and now (eager execution: no activity poll)
        for those on the workflow's task queue that this worker can run, one free activity slot
        each; return how many slots were taken."""
        slots = self._act_slots
        if not self.config.worker.eager_tasks or slots is None:
            return 0
        taken = 0
        for cmd in resp.commands:
            if cmd.command_type is not CommandType.ScheduleActivityTask or slots.locked():
                continue
            a = cmd.attrs
            if (a.get("task_queue") or task.task_queue) != task.task_queue:
                continue
            if self.registry.function(str(a.get("activity_type"))) is None:
                continue
            await slots.acquire()  # not locked: returns at once
            taken += 1
            a["request_eager_execution"] = True
        return taken

    async def _start_eager(self, tasks: list[ActivityTask], reserved: int) -> int:
        """Run the activities history started for us; return the reserved slots left unused."""
        slots = self._act_slots
        assert slots is not None
        for at in tasks:
            if reserved > 0:
                reserved -= 1
            else:  # more than asked for (not expected): wait for a slot like a poller would
                await slots.acquire()
            t = asyncio.create_task(self._guarded(self._run_activity_task, at, slots))
            self._inflight.add(t)
            t.add_done_callback(self._inflight.discard)
        return reserved

    # ------------------------------------------------------------ activities

    async def _run_activity_task(self, task: ActivityTask) -> None:
        assert self._loop is not None
        started = time.perf_counter()
        out = await self._loop.run_in_executor(self._act_pool, self.activities.execute, task)
        metrics.activity_latency.observe(time.perf_counter() - started)
        _ACTIVITY_OUTCOMES["completed" if out.ok else "canceled" if out.canceled else "failed"].inc()
        if out.failure is not None:
            out.failure = shortened(out.failure)
        try:
            if out.ok:
                await self._complete_activity(task, out.result)
            elif out.canceled and hasattr(self.client, "respond_activity_task_canceled"):
                # (hasattr: WorkflowService implementations gain this call with issue 3)
                assert out.failure is not None
                canceled = RespondActivityTaskCanceledRequest(task.task_token, out.failure.details, self.identity)
                await self._respond(lambda: self.client.respond_activity_task_canceled(canceled), task)
            else:
                assert out.failure is not None
                failed = RespondActivityTaskFailedRequest(task.task_token, out.failure, self.identity)
                await self._respond(lambda: self.client.respond_activity_task_failed(failed), task)
        except Exception as err:
            log.warning("could not respond to activity %s of %s: %s: %s", task.activity_id, task.workflow_id,
                        type(err).__name__, err)

    async def _complete_activity(self, task: ActivityTask, result: Any) -> None:
        """Report the result. When this worker has the run cached, ask for the workflow task the
        completion schedules (history starts it for us in the same write: no poll, no matching)
        and run it as soon as a workflow-task slot is free. At most `max_concurrent_workflow_tasks`
        such tasks wait for a slot at a time."""
        slots = self._wf_slots
        ask = (self.config.worker.eager_tasks and slots is not None and task.run_id in self.cache
               and self._eager_wft_waiting < self.config.worker.max_concurrent_workflow_tasks
               and not self._stopping.is_set())
        if ask:
            self._eager_wft_waiting += 1
        handed_over = False
        try:
            completed = RespondActivityTaskCompletedRequest(task.task_token, result, self.identity,
                                                            return_workflow_task=ask)
            resp = await self._respond(lambda: self.client.respond_activity_task_completed(completed), task)
            wt = resp.workflow_task if resp is not None else None
            if wt is not None:
                # Its own task waits for the slot: this activity's slot is free at once.
                t = asyncio.create_task(self._run_handed_workflow_task(wt, ask))
                self._inflight.add(t)
                t.add_done_callback(self._inflight.discard)
                handed_over = True
        finally:
            if ask and not handed_over:
                self._eager_wft_waiting -= 1

    async def _respond(self, call: Callable[[], Awaitable[T]], task: WorkflowTask | ActivityTask) -> T:
        """Send a task's response, again while the server is unavailable (`respond_with_retry`)."""
        kind = "workflow" if isinstance(task, WorkflowTask) else "activity"
        what = f"the response to a {kind} task of {task.workflow_id} did not reach the server"
        return await respond_with_retry(call, self.config.worker.respond_retry_ms / 1000, what)

    async def _run_handed_workflow_task(self, task: WorkflowTask, counted: bool) -> None:
        slots = self._wf_slots
        assert slots is not None
        try:
            await slots.acquire()
        finally:
            if counted:
                self._eager_wft_waiting -= 1
        await self._guarded(self._run_workflow_task, task, slots)

    def _heartbeat_from_thread(self, ctx: CallContext, details: Any) -> bool:
        loop = self._loop
        if loop is None or not ctx.task_token:
            return False
        fut = asyncio.run_coroutine_threadsafe(self.client.record_activity_heartbeat(
            RecordActivityHeartbeatRequest(ctx.task_token, details, self.identity)), loop)
        resp = fut.result(timeout=30)
        return bool(resp.cancel_requested)
