"""Where a worker's workflow tasks run: Lua host processes behind a watchdog, or inline.

`IsolatedTasks` (the default, `worker.lua_isolation: process`) keeps `worker.lua_processes` Lua
host processes (`worker.lua_host`); a run's tasks always go to the same one (its cache is there).
Each host runs its tasks in order; when the task at the head has run for `worker.lua_watchdog_ms`
the host is killed and started again: that task fails with LIMIT_EXCEEDED naming the setting,
the tasks queued behind it are sent to the new host (a task is pure: history in, commands out,
so sending it twice is safe), and the runs cached there are replayed on their next tasks.

Why a process and not a thread: Lua stuck in C cannot be interrupted, and an abandoned thread
would spin on a core for as long as the process lives; a thread hop per task also cost about a
third of the throughput (GIL hand-offs on every call into Python), while a process runs Lua on
the second core. `InlineTasks` (`worker.lua_isolation: inline`) runs tasks on the event loop as
before, for tests and tools that want no child process; it has no watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import sys
import time
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any

from legato.api import RespondWorkflowTaskFailedRequest, WorkflowTask
from legato.config import Config
from legato.errors import Failure, Kind
from worker.cache import WorkflowCache
from worker.entries import Registry
from worker.frames import LENGTH_BYTES, decode_body, decode_length, encode_frame
from worker.lua_host import Init
from worker.queries import QueryJob, QueryOutcome, answer_query
from worker.task_runner import TaskOutcome, TaskRunner

log = logging.getLogger("legato.worker")

# The watchdog looks at the task at the head of a host's queue this often (at most).
_WATCHDOG_CHECK_S = 0.25
# On stop, a host gets this long to leave by itself before it is killed.
_STOP_GRACE_S = 2.0


class CachedRuns:
    """The worker's view of the runs cached in its Lua hosts (for eager workflow tasks)."""

    def __init__(self) -> None:
        self._runs: set[str] = set()
        self._bytes: dict[str, int] = {}  # Lua host -> the Lua memory of the runs it caches
        self.hits = 0
        self.misses = 0

    @property
    def bytes_used(self) -> int:
        return sum(self._bytes.values())

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def __len__(self) -> int:
        return len(self._runs)

    def record(self, run_id: str, outcome: TaskOutcome, host: str = "") -> None:
        self._bytes[host] = outcome.cache_bytes
        if outcome.hit:
            self.hits += 1
        else:
            self.misses += 1
        self._runs.difference_update(outcome.evicted)
        if outcome.cached:
            self._runs.add(run_id)
        else:
            self._runs.discard(run_id)

    def forget(self, run_ids: set[str] | None = None, host: str | None = None) -> None:
        if host is not None:
            self._bytes.pop(host, None)
        if run_ids is None:
            self._runs.clear()
        else:
            self._runs -= run_ids

    def discard(self, run_id: str) -> None:
        self._runs.discard(run_id)


class InlineTasks:
    """Workflow tasks on the event loop (no isolation)."""

    def __init__(self, registry: Registry, config: Config, identity: str) -> None:
        wc = config.worker
        self.cache = WorkflowCache(wc.workflow_cache_size, wc.workflow_cache_bytes)
        self._runner = TaskRunner(registry, config.limits, self.cache, identity)

    async def start(self) -> None:
        pass

    async def run(self, task: WorkflowTask) -> TaskOutcome:
        return self._runner.run(task)

    async def query(self, job: QueryJob) -> QueryOutcome:
        return answer_query(self.cache, self._runner.registry, self._runner.limits, job)

    def evict(self, run_id: str) -> None:
        self.cache.evict(run_id)

    async def stop(self) -> None:
        self.cache.clear()


@dataclass(slots=True)
class _Pending:
    """A workflow task or a query (issue 14) sent to the host; answered in the order sent."""

    task: WorkflowTask | QueryJob
    future: asyncio.Future[Any]

    def frame(self) -> tuple[str, WorkflowTask | QueryJob]:
        return ("query" if isinstance(self.task, QueryJob) else "task", self.task)


class LuaHost:
    """One Lua host process and the tasks sent to it, answered in order."""

    def __init__(self, name: str, init: Init, watchdog_s: float, cache: CachedRuns) -> None:
        self.name = name
        self._init = init
        self._watchdog_s = watchdog_s
        self._cache = cache
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: deque[_Pending] = deque()
        self._head_since = 0.0  # when the task at the head of _pending started running
        self._ready = False  # the host has started (Python and the Lua state): tasks run from then
        self._write_lock = asyncio.Lock()
        self._runs: set[str] = set()  # runs whose tasks went to this host (cached here, maybe)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.restarts = 0

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._watchdog(), name=f"{self.name}-watchdog"))
        await self._spawn()

    async def _spawn(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker.lua_host",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None, limit=1 << 20)
        self._tasks.append(asyncio.create_task(self._read(proc), name=f"{self.name}-reader"))
        stdin = proc.stdin
        assert stdin is not None
        async with self._write_lock:
            # No await between taking the pending tasks (those of the host this one replaces) and
            # making this the host: a task that `run` queues meanwhile is either in this batch or
            # written by `run` itself, never both (a task sent twice would shift every answer).
            frames = [encode_frame(("init", self._init))]
            frames += [encode_frame(p.frame()) for p in self._pending]
            self._proc = proc
            self._ready = False
            stdin.write(b"".join(frames))
            with contextlib.suppress(ConnectionError):
                await stdin.drain()
        self._head_since = time.monotonic()

    async def run(self, task: WorkflowTask) -> TaskOutcome:
        self._runs.add(task.run_id)
        outcome: TaskOutcome = await self._send(_Pending(task, asyncio.get_running_loop().create_future()))
        return outcome

    async def query(self, job: QueryJob) -> QueryOutcome:
        """A query, answered after the tasks sent before it (so from the cache as they left it)."""
        outcome: QueryOutcome = await self._send(_Pending(job, asyncio.get_running_loop().create_future()))
        return outcome

    async def _send(self, p: _Pending) -> Any:
        if not self._pending:
            self._head_since = time.monotonic()
        self._pending.append(p)
        proc = self._proc
        if proc is not None:
            await self._write(proc, p.frame())
        return await p.future

    async def evict(self, run_id: str) -> None:
        self._runs.discard(run_id)
        if self._proc is not None:
            await self._write(self._proc, ("evict", run_id))

    async def _write(self, proc: asyncio.subprocess.Process, message: object) -> None:
        stdin = proc.stdin
        assert stdin is not None
        async with self._write_lock:
            if proc is not self._proc or stdin.is_closing():
                return  # the host was replaced: _spawn resends what is pending
            stdin.write(encode_frame(message))
            with contextlib.suppress(ConnectionError):
                await stdin.drain()

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        stdout = proc.stdout
        assert stdout is not None
        try:
            while True:
                header = await stdout.readexactly(LENGTH_BYTES)
                body = await stdout.readexactly(decode_length(header))
                msg = decode_body(body)
                if proc is not self._proc:
                    # the host was replaced: its pending tasks went to the new one, whose answers
                    # are the ones that count (this one's would be matched to the wrong tasks)
                    return
                if msg[0] == "done":
                    self._finish_head(msg[1])
                elif msg[0] == "ready":  # the host has started: the head's time runs from now
                    self._ready = True
                    self._head_since = time.monotonic()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, pickle.UnpicklingError):
            pass
        if proc is self._proc and not self._stopping:
            code = await proc.wait()
            log.error("the Lua host process %s ended unexpectedly (exit code %s); starting it again",
                      self.name, code)
            await self._replace(proc, f"the worker's Lua process ended while running this task (exit code {code})",
                                Kind.INTERNAL, "WORKFLOW_ERROR")

    def _finish_head(self, outcome: Any) -> None:
        if not self._pending:
            return
        p = self._pending.popleft()
        self._head_since = time.monotonic()
        if isinstance(p.task, QueryJob):  # a query changes nothing in the cache
            if not p.future.done():
                p.future.set_result(outcome)
            return
        self._cache.record(p.task.run_id, outcome, self.name)
        if not outcome.cached:
            self._runs.discard(p.task.run_id)
        if not p.future.done():
            p.future.set_result(outcome)

    async def _watchdog(self) -> None:
        # A periodic check, not a wake-up per task: the hot path only stamps _head_since.
        interval = min(self._watchdog_s / 4, _WATCHDOG_CHECK_S)
        while not self._stopping:
            due = time.monotonic() + interval
            await asyncio.sleep(interval)
            if time.monotonic() - due > interval:
                # The event loop itself was stalled (a busy worker): the host's answers may sit
                # unread in the pipe. Judge the head once the reader has had its turn.
                continue
            if not self._pending or self._proc is None or not self._ready:
                continue
            head = self._pending[0]
            if time.monotonic() - self._head_since < self._watchdog_s:
                continue
            ms = int(self._watchdog_s * 1000)
            what = "query" if isinstance(head.task, QueryJob) else "workflow task"
            log.error("%s of %s/%s ran longer than worker.lua_watchdog_ms (%d ms): stopping the Lua host process "
                      "%s", what, head.task.workflow_id, head.task.run_id, ms, self.name)
            await self._replace(self._proc, (
                f"the workflow task ran longer than worker.lua_watchdog_ms ({ms} ms) without returning "
                "(its Lua code was stuck where the instruction limit cannot stop it, e.g. in a C function); "
                "the worker stopped the process running it"), Kind.LIMIT_EXCEEDED, "LIMIT_EXCEEDED")

    async def _replace(self, proc: asyncio.subprocess.Process, message: str, kind: str, cause: str) -> None:
        """Kill `proc`, fail the task at the head with `message`, and start a new host for the rest."""
        if proc is not self._proc:
            return
        self._proc = None
        self.restarts += 1
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        self._cache.forget(self._runs, self.name)
        self._runs.clear()
        if self._pending:
            p = self._pending.popleft()
            if isinstance(p.task, QueryJob):
                if not p.future.done():
                    p.future.set_result(QueryOutcome(failure=Failure(message, kind, False)))
            elif not p.future.done():
                resp = RespondWorkflowTaskFailedRequest(p.task.task_token, cause, Failure(message, kind, False),
                                                        self._init.identity)
                p.future.set_result(TaskOutcome(resp, False))
        if not self._stopping:
            await self._spawn()

    async def stop(self) -> None:
        self._stopping = True
        proc, self._proc = self._proc, None
        if proc is not None:
            stdin = proc.stdin
            if stdin is not None and not stdin.is_closing():
                with contextlib.suppress(ConnectionError):
                    stdin.write(encode_frame(("stop",)))
                    stdin.close()
            try:
                async with asyncio.timeout(_STOP_GRACE_S):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for p in self._pending:
            if not p.future.done():
                p.future.cancel()
        self._pending.clear()


class IsolatedTasks:
    """Workflow tasks in `worker.lua_processes` Lua host processes, by run."""

    def __init__(self, registry: Registry, config: Config, identity: str) -> None:
        wc = config.worker
        n = wc.lua_processes
        init = Init(registry, config.limits, wc.workflow_cache_size // n, wc.workflow_cache_bytes // n, identity,
                    logging.getLogger().getEffectiveLevel())
        self.cache = CachedRuns()
        self._evicting: set[asyncio.Task[None]] = set()
        self._hosts = [LuaHost(f"lua-{i}", init, wc.lua_watchdog_ms / 1000, self.cache) for i in range(n)]

    def _host(self, run_id: str) -> LuaHost:
        return self._hosts[zlib.crc32(run_id.encode()) % len(self._hosts)]

    @property
    def restarts(self) -> int:
        return sum(h.restarts for h in self._hosts)

    async def start(self) -> None:
        await asyncio.gather(*(h.start() for h in self._hosts))

    async def run(self, task: WorkflowTask) -> TaskOutcome:
        return await self._host(task.run_id).run(task)

    async def query(self, job: QueryJob) -> QueryOutcome:
        return await self._host(job.run_id).query(job)

    def evict(self, run_id: str) -> None:
        self.cache.discard(run_id)
        t = asyncio.get_running_loop().create_task(self._host(run_id).evict(run_id))
        self._evicting.add(t)
        t.add_done_callback(self._evicting.discard)

    async def stop(self) -> None:
        await asyncio.gather(*(h.stop() for h in self._hosts))
        self.cache.forget()


WorkflowTasks = InlineTasks | IsolatedTasks


def workflow_tasks(registry: Registry, config: Config, identity: str) -> WorkflowTasks:
    if config.worker.lua_isolation == "inline":
        return InlineTasks(registry, config, identity)
    return IsolatedTasks(registry, config, identity)
