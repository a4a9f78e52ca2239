"""Running a load: where the engine is (this process, child processes, or a running server),
starting and watching the workflows (at a rate or a concurrency), sampling, stopping and resuming.

What a run knows survives the generator: the children tree is durable (its root holds the counts,
its memo the parameters); the generated scenarios keep a small state file (parameters and the
next index to start) next to the SQLite file, the report or in the current folder, and everything
else is read back from visibility (ids carry the run id as a prefix).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from legato.api import (
    CountWorkflowsRequest,
    DescribeWorkflowResponse,
    ExecutionRef,
    GetResultRequest,
    IdConflictPolicy,
    IdReusePolicy,
    ListWorkflowsRequest,
    SignalWorkflowRequest,
    StartWorkflowRequest,
    WorkflowService,
    WorkflowStatus,
)
from legato.config import Config
from legato.errors import AlreadyStarted, NotFound, ServiceError
from legato.load.app import TASK_QUEUE, write_app
from legato.load.leaf_counts import LeafCounts, count_by_status
from legato.load.progress import ProcessWatch, Progress, store_bytes
from legato.load.report import LISTED_FAILURES, LoadReport, Sample, percentile
from legato.load.scenarios import Generated, LoadError, Params, children_root_input, generated
from legato.tls import ClientSecurity

log = logging.getLogger(__name__)

RESULT_WAIT_MS = 30_000
FAILED_STATUSES = (WorkflowStatus.FAILED, WorkflowStatus.TIMED_OUT, WorkflowStatus.TERMINATED,
                   WorkflowStatus.CANCELED)
DRAIN_TIMEOUT_S = 60.0  # after --duration: what runs may finish within this
STOP_DRAIN_TIMEOUT_S = 10.0  # after a signal or --stop-after
MAX_IN_FLIGHT = 10_000  # with --rate and no --concurrency: workflows awaited at once, at most
DEFAULT_CONCURRENCY = 50
# The generator's own reads of visibility (counts, latencies) grow with the workflows it made: it
# samples less often as they get dearer, so that they take at most this share of the time.
MAX_SAMPLING_SHARE = 0.05


@dataclass
class Where:
    """Where the engine runs: `embedded` (this process), `processes` (a dev server and a worker as
    child processes) or `address` (a running server, with a worker for the load app)."""

    mode: str
    config: Config
    config_path: str | None = None
    db_path: str | None = None
    entries_dir: str | None = None
    address: str | None = None
    security: ClientSecurity | None = None


@dataclass
class Target:
    service: WorkflowService
    description: str
    db_path: str | None
    children: list[Any] = field(default_factory=list)  # legato.bench.Child, watched for an early exit


@contextlib.asynccontextmanager
async def _app_dir(entries_dir: str | None) -> AsyncIterator[Path]:
    if entries_dir:
        yield write_app(Path(entries_dir))
        return
    with tempfile.TemporaryDirectory(prefix="legato-load-") as tmp:
        yield write_app(Path(tmp))


@contextlib.asynccontextmanager
async def open_target(where: Where, watch: ProcessWatch) -> AsyncIterator[Target]:
    if where.mode == "address":
        from legato.client import GrpcClient

        assert where.address
        async with GrpcClient(where.address, call_timeout_s=60.0, security=where.security) as client:
            try:  # a server that cannot be reached is one error, not one failure per workflow
                await client.count_workflows(CountWorkflowsRequest(query="WorkflowId = 'legato-load-probe'"))
            except ServiceError as e:
                raise LoadError(f"cannot use the server at {where.address}: {e.message}") from None
            yield Target(client, f"server at {where.address}, gRPC", where.db_path)
        return
    async with _app_dir(where.entries_dir) as root:
        with tempfile.TemporaryDirectory(prefix="legato-load-db-") as tmp:
            db = where.db_path or str(Path(tmp) / "load.db")
            if where.mode == "embedded":
                async with _embedded(where.config, root, db) as target:
                    yield target
            else:
                async with _processes(where, root, db, watch) as target:
                    yield target


@contextlib.asynccontextmanager
async def _embedded(config: Config, root: Path, db: str) -> AsyncIterator[Target]:
    from legato.server import Engine
    from worker.entries import load_registry
    from worker.worker import Worker

    registry = load_registry(root)
    async with Engine(config, db) as engine:
        worker = Worker(engine.frontend, registry, config, identity="load")
        await worker.start()
        try:
            yield Target(engine.frontend, f"embedded, {engine.data_description}", db)
        finally:
            await worker.stop()


@contextlib.asynccontextmanager
async def _processes(where: Where, root: Path, db: str, watch: ProcessWatch) -> AsyncIterator[Target]:
    from legato.bench import BenchError, Child, free_port, legato_command
    from legato.client import GrpcClient

    extra = ["--config", where.config_path] if where.config_path else []
    address = f"127.0.0.1:{free_port()}"
    server = Child("server", legato_command("server", "start-dev", "--db", db, "--port", address.split(":")[1],
                                            *extra))
    worker = Child("worker", legato_command("worker", "--entries", str(root), "--address", address, *extra))
    try:
        try:
            await server.start("listening")
            assert server.proc is not None
            watch.name(server.proc.pid, "server")
            await worker.start("worker polling")
            assert worker.proc is not None
            watch.name(worker.proc.pid, "worker")
        except BenchError as e:
            raise LoadError(str(e).replace("the bench's", "the load's")) from None
        async with GrpcClient(address, call_timeout_s=60.0) as client:
            yield Target(client, "server + worker processes, gRPC", db, [server, worker])
    finally:
        await worker.stop()
        await server.stop()


# ---------------------------------------------------------------- the state file (generated scenarios)

def state_path(run_id: str, db_path: str | None, report_path: str | None) -> Path:
    folder = Path(db_path).parent if db_path else Path(report_path).parent if report_path else Path(".")
    return folder / f"{run_id}.load-state.json"


def read_state(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise LoadError(f"no state file {path} for this run: resume with the --db (or --report) of the "
                        "run that wrote it, from the same folder") from None
    except (OSError, ValueError) as e:
        raise LoadError(f"cannot read the state file {path}: {e}") from None


# ---------------------------------------------------------------- the run

class Runner:
    def __init__(self, target: Target, params: Params, *, resume: bool, interval_s: float, progress: bool,
                 watch: ProcessWatch, state_file: Path | None, resume_command: str,
                 stop_after: int | None = None) -> None:
        self.t = target
        self.svc = target.service
        self.p = params
        self.resume = resume
        self.interval_s = interval_s
        self.watch = watch
        self.state_file = state_file
        self.stop_after = stop_after
        self.stop = asyncio.Event()
        self.stop_reason = ""
        self.report = LoadReport(params.scenario, params.run_id, target.description, params.to_dict(), params.total,
                                 resumed=resume, resume_command=resume_command)
        self.progress = Progress(params.total, f"load {params.scenario}", progress)
        self.t0 = time.monotonic()
        # counters (generated scenarios; children reads them from visibility)
        self.started = 0
        self.completed = 0
        self.failed = 0
        self.open = 0
        self.new_latencies: list[float] = []
        self.latencies: list[float] = []
        self.next_index = 0
        self.pending: set[int] = set()
        self._last_completed = 0
        self._last_t = 0.0
        self._last_close_ms = 0
        self._base_completed = 0  # what earlier invocations of a resumed run completed
        self._leaves = LeafCounts(self.svc, self._prefix_query("load:leaf"))  # (children)
        self._newest_leaf_start_ms = 0  # the latest start of a leaf seen in the latency samples

    # ------------------------------------------------------------ shared

    def request_stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.stop.set()

    def fail(self, wid: str, message: str) -> None:
        self.failed += 1
        if len(self.report.failures) < LISTED_FAILURES:
            self.report.failures.append({"id": wid, "message": message})

    async def run(self) -> LoadReport:
        sampler = asyncio.create_task(self._sampler(), name="load-sampler")
        try:
            if self.p.scenario == "children":
                await self._children()
            else:
                await self._generated(generated(self.p))
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sampler
            self.progress.close()
        await self._sample()  # the last point
        self._finish()
        return self.report

    def _finish(self) -> None:
        r = self.report
        r.seconds = time.monotonic() - self.t0
        r.started, r.completed, r.failed, r.open = self.started, self.completed, self.failed, self.open
        r.completions_per_s = (self.completed - self._base_completed) / r.seconds if r.seconds else 0.0
        lat = sorted(self.latencies)
        if lat:
            r.p50_ms, r.p99_ms = statistics.median(lat), percentile(lat, 0.99)
        peaks: dict[str, int] = {}
        for s in r.series:
            for k, v in s.rss_bytes.items():
                peaks[k] = max(peaks.get(k, 0), v)
        r.peak_rss_bytes = peaks
        r.cpu_seconds = {k: round(v, 2) for k, v in self.watch.cpu_seconds().items()}
        r.store_bytes = store_bytes(self.t.db_path)
        r.stopped = "" if r.finished else self.stop_reason
        if self.state_file is not None:
            if r.finished:
                self.state_file.unlink(missing_ok=True)
            else:
                self._save_state()

    async def _sampler(self) -> None:
        next_sample = 0.0
        while True:
            await asyncio.sleep(self.interval_s)
            for c in self.t.children:
                if c.proc is not None and c.proc.returncode is not None:
                    raise LoadError(f"the load's {c.name} exited with status {c.proc.returncode}{c.tail()}")
            started = time.monotonic()
            if started >= next_sample:
                try:
                    await self._sample()
                except ServiceError as e:
                    log.warning("load: sampling failed: %s", e)
                cost = time.monotonic() - started
                next_sample = started + cost / MAX_SAMPLING_SHARE
            if self.state_file is not None:
                self._save_state()
            if self.stop_after is not None and self.completed + self.failed >= self.stop_after:
                self.request_stop("stop-after")

    async def _sample(self) -> None:
        if self.p.scenario == "children":
            await self._observe_tree()
        now = time.monotonic() - self.t0
        dt = now - self._last_t
        rate = (self.completed - self._last_completed) / dt if dt > 0 else 0.0
        lat, self.new_latencies = sorted(self.new_latencies), []
        self.report.series.append(Sample(
            t=round(now, 3), completed=self.completed, failed=self.failed, open=self.open,
            completions_per_s=round(rate, 2), p50_ms=statistics.median(lat) if lat else None,
            p99_ms=percentile(lat, 0.99) if lat else None, rss_bytes=self.watch.rss(),
            store_bytes=store_bytes(self.t.db_path)))
        self._last_t, self._last_completed = now, self.completed
        done = self.started if self.p.scenario == "idle" and self.completed == 0 else self.completed
        self.progress.update(done + self.failed, self.open, self.failed)

    def _save_state(self) -> None:
        assert self.state_file is not None
        low = min(self.pending) if self.pending else self.next_index
        state = {"run_id": self.p.run_id, "params": self.p.to_dict(), "next_index": low}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_file)

    def _prefix_query(self, wtype: str | None = None) -> str:
        rid = self.p.run_id
        q = f"WorkflowId >= '{rid}-' AND WorkflowId < '{rid}.'"
        return f"WorkflowType = '{wtype}' AND {q}" if wtype else q

    async def _count_by_status(self, query: str) -> dict[str, int]:
        return await count_by_status(self.svc, query)

    # ------------------------------------------------------------ children

    async def _children(self) -> None:
        root = self.p.run_id
        if self.resume:
            with contextlib.suppress(ServiceError):  # closed already: nothing to resume, the result tells
                await self.svc.signal_workflow(SignalWorkflowRequest(ExecutionRef(root), "resume", True))
            counts = await self._count_by_status(self._prefix_query("load:leaf"))
            self._base_completed = counts.get(WorkflowStatus.COMPLETED.value, 0)
        else:
            await self.svc.start_workflow(StartWorkflowRequest(
                root, "load:root", TASK_QUEUE, [children_root_input(self.p)], request_id=root,
                memo={"load": self.p.to_dict()}, id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE))
        result = asyncio.create_task(self._await(root), name="load-root")
        stopper = asyncio.create_task(self._stop_timer(), name="load-duration")
        try:
            await asyncio.wait([result, asyncio.create_task(self.stop.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
            if not result.done():
                with contextlib.suppress(ServiceError):
                    await self.svc.signal_workflow(SignalWorkflowRequest(ExecutionRef(root), "pause", True))
                # Let the open children finish (none start now), so that no workflow task is cut
                # short (a resume would wait for its timeout); a second signal stops at once.
                await self._drain_tree(result)
            if result.done():
                status, value, message = result.result()
                await self._observe_tree()
                if status == WorkflowStatus.COMPLETED and isinstance(value, dict):
                    self.completed = int(value.get("completed", 0))
                    self.failed = int(value.get("failed", 0))
                    self.started = self.completed + self.failed
                    self.report.failures = list(value.get("failures") or [])[:LISTED_FAILURES]
                    self.report.finished = True
                else:
                    self.fail(root, f"the root workflow {status.value}: {message}")
        finally:
            for t in (result, stopper):
                t.cancel()
            await asyncio.gather(result, stopper, return_exceptions=True)

    async def _drain_tree(self, result: asyncio.Task[Any]) -> None:
        deadline = time.monotonic() + (DRAIN_TIMEOUT_S if self.stop_reason == "duration" else STOP_DRAIN_TIMEOUT_S)
        quiet = 0  # consecutive quiet looks (visibility is written just after the state)
        while time.monotonic() < deadline and not result.done():
            counts = await self._leaves.counts()
            if counts.get(WorkflowStatus.RUNNING.value, 0) == 0 and await self._tree_quiet():
                quiet += 1
                if quiet >= 2:
                    return
            else:
                quiet = 0
            await asyncio.sleep(min(0.2, self.interval_s))

    async def _tree_quiet(self) -> bool:
        """No workflow task of the root or an open parent is pending (they took in the pause)."""
        rid = self.p.run_id
        page = await self.svc.list_workflows(ListWorkflowsRequest(
            query=f"WorkflowId >= '{rid}' AND WorkflowId < '{rid}.' AND ExecutionStatus = 'Running'",
            page_size=1000))
        for e in page.executions:
            with contextlib.suppress(NotFound):
                d = await self.svc.describe_workflow(ExecutionRef(e.workflow_id))
                if d.info.status == WorkflowStatus.RUNNING and d.pending_workflow_task is not None:
                    return False
        return not page.next_page_token

    async def _observe_tree(self) -> None:
        # A sample of the latency: leaves that completed since the last look (start to close). None
        # started before the counts' boundary (it passes only leaves that were all closed).
        since = max(self._last_close_ms, int(time.time() * 1000) - 600_000)
        settled = self._leaves.frozen_before
        page = await self.svc.list_workflows(ListWorkflowsRequest(
            query=self._prefix_query("load:leaf") + f" AND ExecutionStatus = 'Completed' AND CloseTime > {since}"
            + (f" AND StartTime >= {settled}" if settled else ""),
            page_size=500))
        for e in page.executions:
            self.new_latencies.append(float(e.close_time_ms - e.start_time_ms))
            self.latencies.append(float(e.close_time_ms - e.start_time_ms))
            self._last_close_ms = max(self._last_close_ms, e.close_time_ms)
            self._newest_leaf_start_ms = max(self._newest_leaf_start_ms, e.start_time_ms)
        counts = await self._leaves.counts(self._newest_leaf_start_ms)
        if not self.report.finished:  # then the root's result has the counts (visibility may not:
            # with a short history.retention, closed leaves are deleted during the run)
            self.completed = counts.get(WorkflowStatus.COMPLETED.value, 0)
            self.failed = sum(counts.get(s.value, 0) for s in FAILED_STATUSES)
            self.started = sum(counts.values())
        rid = self.p.run_id
        self.open = (await self.svc.count_workflows(CountWorkflowsRequest(
            query=f"WorkflowId >= '{rid}' AND WorkflowId < '{rid}.' AND ExecutionStatus = 'Running'"))).count

    async def _await(self, wid: str) -> tuple[WorkflowStatus, Any, str]:
        while True:
            r = await self.svc.get_workflow_result(GetResultRequest(ExecutionRef(wid), RESULT_WAIT_MS))
            if r.status != WorkflowStatus.RUNNING:
                return r.status, r.result, (r.failure.message if r.failure else "")

    async def _stop_timer(self) -> None:
        if self.p.duration_s is not None:
            await asyncio.sleep(self.p.duration_s)
            self.request_stop("duration")

    # ------------------------------------------------------------ mix, timers, idle

    async def _generated(self, g: Generated) -> None:
        p = self.p
        attach: list[str] = []
        if self.resume:
            attach = await self._resume_counts(g)
        concurrency = p.concurrency or (None if p.rate else DEFAULT_CONCURRENCY)
        limit = asyncio.Semaphore(concurrency or MAX_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()
        stopper = asyncio.create_task(self._stop_timer(), name="load-duration")
        opened: list[str] = []

        def launch(coro: Any) -> None:
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(done)

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            limit.release()

        try:
            for wid in attach:
                await limit.acquire()
                launch(self._attach(g, wid, opened))
            i0, t_start = self.next_index, time.monotonic()
            i = i0
            while (p.total is None or i < p.total) and not self.stop.is_set():
                if p.rate:
                    delay = t_start + (i - i0) / p.rate - time.monotonic()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.stop.wait(), delay)
                        if self.stop.is_set():
                            break
                acquire = asyncio.create_task(limit.acquire())
                stopped = asyncio.create_task(self.stop.wait())
                await asyncio.wait([acquire, stopped], return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if not acquire.done():
                    acquire.cancel()
                    break
                if self.stop.is_set():
                    limit.release()
                    break
                self.pending.add(i)
                launch(self._one(g, i, opened))
                i += 1
                self.next_index = i
            if tasks:  # let what runs finish (nothing new starts); a second signal stops at once
                timeout = {"": None, "duration": DRAIN_TIMEOUT_S}.get(self.stop_reason, STOP_DRAIN_TIMEOUT_S)
                await asyncio.wait(tasks, timeout=timeout)
            if self.stop_reason in ("", "duration"):
                if not g.awaits_result:
                    await self._idle_finish(opened)
                self.report.finished = (p.total is None or self.next_index >= p.total) and not self.pending \
                    and all(t.done() for t in tasks)
        finally:
            stopper.cancel()
            for t in list(tasks):
                t.cancel()
            await asyncio.gather(stopper, *tasks, return_exceptions=True)

    async def _one(self, g: Generated, i: int, opened: list[str]) -> None:
        wid = g.workflow_id(i)
        t0 = time.perf_counter()
        # A start cut short (the generator stopped) keeps its index pending: a resume starts it
        # again, and the start is idempotent (a running one is reattached, a closed one refused).
        try:
            await self.svc.start_workflow(StartWorkflowRequest(
                wid, g.workflow_type, TASK_QUEUE, g.input(i, wid), request_id=wid,
                id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE, id_conflict_policy=IdConflictPolicy.USE_EXISTING))
        except AlreadyStarted:  # it ran and closed before a resume: visibility counted it
            self.pending.discard(i)
            return
        except Exception as e:
            self.pending.discard(i)
            self.fail(wid, f"could not start: {e}")
            return
        self.pending.discard(i)
        self.started += 1
        await self._follow(g, wid, t0, opened)

    async def _attach(self, g: Generated, wid: str, opened: list[str]) -> None:
        await self._follow(g, wid, time.perf_counter(), opened, attached=True)

    async def _follow(self, g: Generated, wid: str, t0: float, opened: list[str], attached: bool = False) -> None:
        try:
            await g.after_start(self.svc, wid)
        except Exception as e:
            self.fail(wid, f"after the start: {e}")
            return
        if not g.awaits_result:
            opened.append(wid)
            self.open += 1
            if not attached:
                self._latency(t0)
            return
        self.open += 1
        try:
            status, value, message = await self._await(wid)
        except Exception as e:
            self.fail(wid, f"waiting for the result: {e}")
            return
        finally:
            self.open -= 1
        if status != WorkflowStatus.COMPLETED:
            self.fail(wid, f"{status.value}: {message}")
            return
        problem = g.check(wid, value)
        if problem:
            self.fail(wid, problem)
            return
        self.completed += 1
        if not attached:
            self._latency(t0)

    def _latency(self, t0: float) -> None:
        ms = (time.perf_counter() - t0) * 1000
        self.new_latencies.append(ms)
        self.latencies.append(ms)

    async def _resume_counts(self, g: Generated) -> list[str]:
        """What earlier invocations did (from visibility), and the open workflows to reattach to."""
        counts = await self._count_by_status(self._prefix_query(g.workflow_type))
        # mix continues as new once: count its last runs only
        self.completed = self._base_completed = counts.get(WorkflowStatus.COMPLETED.value, 0)
        self.failed = sum(counts.get(s.value, 0) for s in FAILED_STATUSES)
        if self.failed:
            await self._list_failures(g.workflow_type)
        running: list[str] = []
        token = b""
        while True:
            page = await self.svc.list_workflows(ListWorkflowsRequest(
                query=self._prefix_query(g.workflow_type) + " AND ExecutionStatus = 'Running'", page_size=1000,
                next_page_token=token))
            running.extend(e.workflow_id for e in page.executions)
            token = page.next_page_token
            if not token:
                break
        known = {g.workflow_id(i) for i in range(self.next_index)} if self.next_index < 1_000_000 else None
        attach = [w for w in running if known is None or w in known]
        self.started = self.completed + self.failed + len(attach)
        if not g.awaits_result:
            self.started = sum(counts.values())
        return attach

    async def _list_failures(self, wtype: str) -> None:
        statuses = ", ".join(f"'{s.value}'" for s in FAILED_STATUSES)
        page = await self.svc.list_workflows(ListWorkflowsRequest(
            query=self._prefix_query(wtype) + f" AND ExecutionStatus IN ({statuses})", page_size=LISTED_FAILURES))
        for e in page.executions:
            try:
                d: DescribeWorkflowResponse = await self.svc.describe_workflow(ExecutionRef(e.workflow_id, e.run_id))
                message = d.failure.message if d.failure else e.status.value
            except ServiceError as err:
                message = f"{e.status.value} ({err})"
            if len(self.report.failures) < LISTED_FAILURES:
                self.report.failures.append({"id": e.workflow_id, "message": message})

    async def _idle_finish(self, opened: list[str]) -> None:
        """Hold the idle workflows open (--hold, sampled), then wake them all and await them
        (unless --leave-open)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self.p.hold_s)
        if self.p.leave_open or self.stop_reason == "signal":
            self.report.notes.append(f"{len(opened)} idle workflows left open (wake them with the signal 'wake')")
            return
        limit = asyncio.Semaphore(self.p.concurrency or DEFAULT_CONCURRENCY)

        async def wake(wid: str) -> None:
            async with limit:
                t0 = time.perf_counter()
                try:
                    await self.svc.signal_workflow(SignalWorkflowRequest(ExecutionRef(wid), "wake", True,
                                                                         request_id=f"{wid}-wake"))
                    status, value, message = await self._await(wid)
                except Exception as e:
                    self.fail(wid, f"waking it: {e}")
                    return
                finally:
                    self.open -= 1
                if status != WorkflowStatus.COMPLETED or not (isinstance(value, dict) and value.get("woken")):
                    self.fail(wid, f"{status.value}: {message or value!r}")
                    return
                self.completed += 1
                self._latency(t0)

        await asyncio.gather(*(wake(w) for w in opened))


def install_signal_handlers(runner: Runner, main: asyncio.Task[Any]) -> None:
    """SIGINT / SIGTERM: stop starting work and report (a second one: stop at once)."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if runner.stop.is_set():
            main.cancel()
        else:
            runner.request_stop("signal")

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)


async def root_params(service: WorkflowService, root: str) -> Params:
    """The parameters of a children run, from its root's memo."""
    try:
        d = await service.describe_workflow(ExecutionRef(root))
    except NotFound:
        raise LoadError(f"no load run with root workflow {root!r} in this store: give the --db (or --address) "
                        "it ran on") from None
    load = d.info.memo.get("load")
    if not isinstance(load, dict) or load.get("scenario") != "children":
        raise LoadError(f"workflow {root!r} is not the root of a `legato load children` run")
    return Params.from_dict(load)
