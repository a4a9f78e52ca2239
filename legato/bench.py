"""`legato bench hello`: throughput and latency of one-activity workflows.

Three ways to run it:

* in-process (default): engine and worker in this process, no gRPC: what the engine itself costs;
* `--processes`: `legato server start-dev --db <tmp file>` and `legato worker` as child processes,
  the workflows started and awaited over gRPC from this process: the set-up Temporal's dev server
  and a Temporal SDK worker are measured in, for an honest side-by-side figure;
* `--address HOST:PORT`: drive a server that is already running (with a worker that runs the
  bench app; `--entries-dir DIR` writes the app where that worker can load it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from legato.api import (
    ExecutionRef,
    GetHistoryRequest,
    GetResultRequest,
    StartWorkflowRequest,
    WorkflowService,
    WorkflowStatus,
)
from legato.config import Config
from legato.events import EventType
from legato.tls import ClientSecurity

HELLO_YAML = """\
version: "1.0"
namespace: bench
entries:
  - name: worker
    kind: temporal.worker
    task_queue: bench
  - name: hello
    kind: workflow.lua
    source: file://hello.lua
    modules: [funcs, time]
    meta: {temporal: {workflow: {worker: bench:worker}}}
  - name: greet
    kind: function.lua
    source: file://greet.lua
    meta: {temporal: {activity: {worker: bench:worker}}}
"""

HELLO_LUA = """\
local funcs = require("funcs")
local time = require("time")
local function main(name, sleep)
  if sleep then time.sleep(sleep) end  -- a durable timer (bench hello --sleep), to measure timer lag
  local greeting, err = funcs.call("bench:greet", name)
  if err then return nil, err end
  return greeting
end
return { main = main }
"""

GREET_LUA = """\
return { main = function(name) return "hello, " .. name end }
"""

APP_FILES = {"hello.yaml": HELLO_YAML, "hello.lua": HELLO_LUA, "greet.lua": GREET_LUA}
WORKFLOW_TYPE = "bench:hello"
TASK_QUEUE = "bench"
READY_TIMEOUT_S = 60.0
RESULT_WAIT_MS = 60_000


class BenchError(Exception):
    """The bench could not run (a child process failed to start or died)."""


@dataclass
class BenchReport:
    workflows: int
    seconds: float
    workflows_per_second: float
    p50_ms: float
    p99_ms: float
    failed: int
    mode: str = "in-process"
    store: str = ""
    # Conditional writes (Cassandra LWTs) and the state transitions (run writes) they carried,
    # counted by the store during the run; None when the store does not count them.
    lwts: int | None = None
    transitions: int | None = None
    # With --sleep: how late each workflow's timer fired (TimerFired's time minus TimerStarted's
    # time plus the duration), read from the histories after the run.
    timer_lag_p50_ms: float | None = None
    timer_lag_p99_ms: float | None = None

    def text(self) -> str:
        line = (f"{self.workflows} workflows in {self.seconds:.2f}s: {self.workflows_per_second:.1f} workflows/s; "
                f"start-to-result latency p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms; "
                f"{self.failed} failed ({self.mode}{', ' + self.store if self.store else ''})")
        if self.lwts:
            line += (f"\n{self.lwts} LWTs: {self.lwts / self.workflows:.2f} per workflow, "
                     f"{(self.transitions or 0) / self.lwts:.2f} state transitions per LWT")
        if self.timer_lag_p50_ms is not None:
            line += f"\ntimer fire lag (due time to TimerFired): p50 {self.timer_lag_p50_ms:.0f} ms, " \
                    f"p99 {self.timer_lag_p99_ms:.0f} ms"
        return line


@dataclass(frozen=True)
class Load:
    """What the bench runs: `count` workflows at once, each sleeping `sleep` (a duration) first."""

    count: int
    sleep: str | None = None


def write_app(root: Path) -> Path:
    """Write the bench app (registry YAML and Lua sources) into `root`; return `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in APP_FILES.items():
        (root / name).write_text(text)
    return root


@contextlib.contextmanager
def _app_dir(entries_dir: str | None) -> Iterator[Path]:
    if entries_dir:
        yield write_app(Path(entries_dir))
        return
    with tempfile.TemporaryDirectory(prefix="legato-bench-") as tmp:
        yield write_app(Path(tmp))


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def _one(service: WorkflowService, wid: str, args: list[str]) -> tuple[float, bool]:
    t0 = time.perf_counter()
    await service.start_workflow(StartWorkflowRequest(wid, WORKFLOW_TYPE, TASK_QUEUE, args, request_id=wid))
    while True:
        r = await service.get_workflow_result(GetResultRequest(ExecutionRef(wid), RESULT_WAIT_MS))
        if r.status != WorkflowStatus.RUNNING:
            return time.perf_counter() - t0, r.status == WorkflowStatus.COMPLETED


async def drive(service: WorkflowService, load: Load, mode: str) -> BenchReport:
    """Start the load's hello workflows at once through `service` and wait for every result."""
    prefix = f"hello-{uuid.uuid4().hex[:8]}"  # a server that is reused keeps earlier runs' ids
    ids = [f"{prefix}-{i}" for i in range(load.count)]
    extra = [load.sleep] if load.sleep else []
    t0 = time.perf_counter()
    results = await asyncio.gather(*(_one(service, wid, [f"w{i}", *extra]) for i, wid in enumerate(ids)))
    elapsed = time.perf_counter() - t0
    latencies = sorted(r[0] * 1000 for r in results)
    report = BenchReport(
        workflows=load.count, seconds=elapsed, workflows_per_second=load.count / elapsed if elapsed else 0.0,
        p50_ms=statistics.median(latencies), p99_ms=_percentile(latencies, 0.99),
        failed=sum(1 for r in results if not r[1]), mode=mode,
    )
    if load.sleep:
        lags = sorted(await asyncio.gather(*(_timer_lag(service, wid) for wid in ids)))
        report.timer_lag_p50_ms, report.timer_lag_p99_ms = statistics.median(lags), _percentile(lags, 0.99)
    return report


async def _timer_lag(service: WorkflowService, wid: str) -> float:
    """ms from the workflow's timer's due time to its TimerFired event."""
    events = (await service.get_workflow_history(GetHistoryRequest(ExecutionRef(wid)))).events
    started = next(e for e in events if e.event_type == EventType.TimerStarted)
    fired = next(e for e in events if e.event_type == EventType.TimerFired)
    return float(fired.timestamp_ms - started.timestamp_ms - int(started.attrs["start_to_fire_timeout_ms"]))


# ---------------------------------------------------------------- in-process

async def run_hello(config: Config, load: Load, db_path: str | None, entries_dir: str | None = None) -> BenchReport:
    """Engine and worker in this process, no gRPC."""
    from legato.server import Engine
    from worker.entries import load_registry
    from worker.worker import Worker

    with _app_dir(entries_dir) as root:
        registry = load_registry(root)
        async with Engine(config, db_path or str(root / "bench.db")) as engine:
            worker = Worker(engine.frontend, registry, config, identity="bench")
            await worker.start()
            store = engine.execution_store
            lwts0, transitions0 = _write_counts(store)
            try:
                report = await drive(engine.frontend, load, "in-process")
            finally:
                await worker.stop()
            lwts1, transitions1 = _write_counts(store)
            report.store = engine.data_description
            if config.queues.kind == "kafka":
                report.store += f", queues on {engine.queues_description}"
            if lwts0 is not None and lwts1 is not None:
                report.lwts = lwts1 - lwts0
                report.transitions = (transitions1 or 0) - (transitions0 or 0)
            return report


def _write_counts(store: object) -> tuple[int | None, int | None]:
    """(conditional writes, run writes) so far, for stores that count them (Cassandra)."""
    return getattr(store, "lwt_count", None), getattr(store, "run_write_count", None)


# ---------------------------------------------------------------- separate processes over gRPC

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def legato_command(*args: str) -> list[str]:
    """The command line that runs `legato ARGS...` with this interpreter."""
    return [sys.executable, "-m", "legato.cli.main", *args]


class Child:
    """A `legato` child process whose output (stdout and stderr) is read line by line."""

    def __init__(self, name: str, args: Sequence[str]) -> None:
        self.name = name
        self.args = list(args)
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: deque[str] = deque(maxlen=40)
        self._ready: asyncio.Future[str] | None = None
        self._pattern = ""
        self._reader: asyncio.Task[None] | None = None

    async def start(self, ready_pattern: str, timeout_s: float = READY_TIMEOUT_S) -> str:
        """Start the process and return the first line that contains `ready_pattern`."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._pattern = ready_pattern
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        self._reader = asyncio.create_task(self._read(), name=f"bench-{self.name}-output")
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), timeout_s)
        except TimeoutError:
            raise BenchError(f"the bench's {self.name} did not print {ready_pattern!r} within {timeout_s:g}s"
                             f"{self.tail()}") from None

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None and self._ready is not None
        # Keep reading to the end, so that a chatty child never blocks on a full pipe.
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if not self._ready.done() and self._pattern in line:
                self._ready.set_result(line)
        await self.proc.wait()
        if not self._ready.done():
            self._ready.set_exception(BenchError(
                f"the bench's {self.name} exited with status {self.proc.returncode} before it was ready"
                f"{self.tail()}"))
            self._ready.exception()

    async def exited(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    def tail(self) -> str:
        return (":\n  " + "\n  ".join(self.lines)) if self.lines else ""

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL (of its process group) if it does not exit in time."""
        p = self.proc
        if p is None:
            return
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(p.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                await p.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5.0)


async def _drive_watching(address: str, load: Load, mode: str, children: Sequence[Child],
                          security: ClientSecurity | None = None) -> BenchReport:
    """`drive` over gRPC; fails at once (instead of waiting forever) if a child process dies."""
    from legato.client import GrpcClient

    async with GrpcClient(address, call_timeout_s=60.0, security=security) as client:
        bench = asyncio.create_task(drive(client, load, mode))
        watchers = [asyncio.create_task(c.exited()) for c in children]
        try:
            await asyncio.wait([bench, *watchers], return_when=asyncio.FIRST_COMPLETED)
            if not bench.done():
                dead = next(c for c, w in zip(children, watchers, strict=True) if w.done())
                status = dead.proc.returncode if dead.proc else "?"
                raise BenchError(f"the bench's {dead.name} exited with status {status} during the run{dead.tail()}")
            return bench.result()
        finally:
            for t in (bench, *watchers):
                t.cancel()
            await asyncio.gather(bench, *watchers, return_exceptions=True)


async def run_hello_processes(load: Load, db_path: str | None, config_path: str | None = None,
                              entries_dir: str | None = None, store_args: Sequence[str] = ()) -> BenchReport:
    """`legato server start-dev` and `legato worker` as child processes; the bench talks gRPC to them."""
    extra = ["--config", config_path] if config_path else []
    with _app_dir(entries_dir) as root, tempfile.TemporaryDirectory(prefix="legato-bench-db-") as tmp:
        port = free_port()
        address = f"127.0.0.1:{port}"
        db = db_path or str(Path(tmp) / "bench.db")
        server = Child("server", legato_command("server", "start-dev", "--db", db, "--port", str(port),
                                                   *store_args, *extra))
        worker = Child("worker", legato_command("worker", "--entries", str(root), "--address", address, *extra))
        try:
            await server.start("listening")
            await worker.start("worker polling")
            return await _drive_watching(address, load, "server + worker processes, gRPC", [server, worker])
        finally:
            await worker.stop()
            await server.stop()


async def run_hello_remote(address: str, load: Load, security: ClientSecurity | None = None) -> BenchReport:
    """Drive a server that is already running, with a worker for the bench app (TLS and token:
    `security`)."""
    return await _drive_watching(address, load, f"server at {address}, gRPC", [], security)
