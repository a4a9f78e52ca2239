"""`legato bench cassandra-cost`: the Cassandra JVM's CPU per `bench hello` workflow, and what it
is spent on.

1. The hello workflows run in this process on a Cassandra store (after a warm-up run: the JVM's
   JIT compiles its hot paths in the first thousands of requests). The JVM's CPU time (user +
   system, read from its pid with psutil: the machine may be shared, so wall time says nothing)
   is read before and after, and every request the store sends is counted by kind
   (`history.store.cql.StatementStats`), with a sample of each kind kept.
2. Each kind's cost per request is then measured on its own, against the same node: its sampled
   requests are sent again (`replay` of them, `REPLAY_CONCURRENCY` in flight) and the JVM's CPU
   over that replay, less its idle rate, divided by the requests. Reads and plain writes are
   replayed as they were (the writes are upserts: writing them again changes nothing). Conditional
   batches cannot be (their conditions no longer hold), so the shard writes sampled are written
   again on calibration shards of their own (`CALIBRATION_SHARD`: once creating their runs, once
   updating them) and the ack flushes and shard takes likewise; the calibration partitions are
   deleted afterwards.
3. The report: requests per workflow by kind, the estimated ms of JVM CPU per workflow of each
   (requests per workflow x cost per request), and the measured total, whose remainder
   (compaction, memtable flushes, garbage collection of the run itself) is shown as such, with the
   CPU of the JVM's background threads over the run by thread name.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from legato.bench import BenchError, Load, drive, write_app
from legato.config import Config

WARMUP_WORKFLOWS = 1000  # default warm-up run (not measured): the JIT compiles for longer than a few hundred
REPLAY_REQUESTS = 2000  # requests replayed per kind, at most
REPLAY_MIN_REQUESTS = 200  # ... and at least (a kind seldom sent is still measured on enough)
REPLAY_CONCURRENCY = 32  # replayed requests in flight
SAMPLES_PER_KIND = 500  # requests of each kind kept for the replay
IDLE_WINDOWS = 3  # the JVM's idle CPU rate before the run: the least of this many windows (a flush or a
IDLE_WINDOW_S = 1.0  # compilation in one of them is not idleness) of this long each
QUIET_S = 1.0  # after the last result, the run ends once no request was sent for this long
QUIET_MAX_S = 30.0  # ... or after this long at most
LWT_LANES = 4  # conditional writes replayed at once, each lane on a shard of its own (a shard writes one at a time)
CALIBRATION_SHARD = 1_000_000_000  # calibration shard ids start here (far above any num_shards)
# JVM threads that run no request: their CPU over the run is shown by name (request threads are
# shared between Cassandra's stages and renamed as they move, so their names say nothing).
BACKGROUND_THREADS = {"CompactionExecu": "compaction", "MemtableFlushWr": "memtable flush",
                      "PerDiskMemtable": "memtable flush", "COMMIT-LOG-WRI": "commit log",
                      "GROUP-COMMIT-LO": "commit log", "COMMIT-LOG-ALLO": "commit log",
                      "GC Thread": "garbage collection", "G1 ": "garbage collection", "VM Thread": "garbage collection",
                      "C1 CompilerThre": "JIT compiler", "C2 CompilerThre": "JIT compiler"}


def default_pidfile() -> Path:
    """deploy/cassandra/cassandra.sh's pidfile: $LEGATO_DEPLOY_DIR or <repo>/.deploy."""
    root = os.environ.get("LEGATO_DEPLOY_DIR") or str(Path(__file__).resolve().parent.parent / ".deploy")
    return Path(root) / "cassandra" / "cassandra.pid"


def jvm_process(pid: int | None, pidfile: Path) -> psutil.Process:
    """The Cassandra JVM: `pid`, or the one deploy/cassandra/cassandra.sh's pidfile names."""
    if pid is None:
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError) as e:
            raise BenchError(f"cannot read the Cassandra pid from {pidfile} ({e}): start the node with "
                             "deploy/cassandra/cassandra.sh start, or name its process with --pid") from None
    try:
        proc = psutil.Process(pid)
        proc.cpu_times()
    except psutil.Error as e:
        raise BenchError(f"cannot read the CPU time of process {pid} (the Cassandra JVM?): {e}") from None
    return proc


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def idle_rate(proc: psutil.Process) -> float:
    """The JVM's CPU seconds per second with no request: the least of IDLE_WINDOWS windows."""
    rates = []
    for _ in range(IDLE_WINDOWS):
        c0 = cpu_s(proc)
        await asyncio.sleep(IDLE_WINDOW_S)  # a measurement window, not a wait for anything
        rates.append((cpu_s(proc) - c0) / IDLE_WINDOW_S)
    return min(rates)


def thread_times(proc: psutil.Process) -> dict[int, tuple[str, float]]:
    """Thread id -> (its name as Linux keeps it: 15 characters at most, its CPU seconds so far)."""
    out = {}
    for t in proc.threads():
        try:
            name = Path(f"/proc/{proc.pid}/task/{t.id}/comm").read_text().strip()
        except OSError:  # it ended
            continue
        out[t.id] = (name, t.user_time + t.system_time)
    return out


def thread_cpu(proc: psutil.Process) -> Counter[str]:
    """CPU seconds of the JVM's background threads so far, by BACKGROUND_THREADS name."""
    out: Counter[str] = Counter()
    for name, cpu in thread_times(proc).values():
        group = next((g for prefix, g in BACKGROUND_THREADS.items() if name.startswith(prefix)), None)
        if group:
            out[group] += cpu  # type: ignore[assignment]  # seconds: Counter is typed for ints only
    return out


@dataclass
class KindCost:
    kind: str
    requests: int  # in the measured run
    statements: int  # statements those requests carried (a batch carries several)
    cost_us: float | None = None  # JVM CPU per request, measured by the replay (None: not replayed)
    replayed: int = 0

    def per_workflow(self, workflows: int) -> float:
        return self.requests / workflows

    def ms_per_workflow(self, workflows: int) -> float | None:
        return None if self.cost_us is None else self.per_workflow(workflows) * self.cost_us / 1000


@dataclass
class CostReport:
    workflows: int
    seconds: float
    failed: int
    cpu_ms: float  # JVM CPU over the run (and its quiet tail)
    idle_ms_per_s: float  # the JVM's CPU rate before the run, with no request
    kinds: list[KindCost] = field(default_factory=list)
    background_ms: dict[str, float] = field(default_factory=dict)  # by thread group, over the run
    lwts: int = 0
    transitions: int = 0

    @property
    def cpu_ms_per_workflow(self) -> float:
        return self.cpu_ms / self.workflows

    @property
    def estimated_ms_per_workflow(self) -> float:
        return sum(k.ms_per_workflow(self.workflows) or 0.0 for k in self.kinds)

    def to_json(self) -> dict[str, Any]:
        n = self.workflows
        return {
            "workflows": n, "seconds": round(self.seconds, 2), "failed": self.failed,
            "cassandra_cpu_ms": round(self.cpu_ms, 1), "cassandra_cpu_ms_per_workflow": round(self.cpu_ms / n, 3),
            "idle_cpu_ms_per_s": round(self.idle_ms_per_s, 1),
            "estimated_ms_per_workflow": round(self.estimated_ms_per_workflow, 3),
            "lwts_per_workflow": round(self.lwts / n, 3),
            "transitions_per_lwt": round(self.transitions / self.lwts, 2) if self.lwts else None,
            "kinds": [{"kind": k.kind, "requests_per_workflow": round(k.per_workflow(n), 3),
                       "statements_per_request": round(k.statements / k.requests, 2) if k.requests else 0,
                       "cpu_us_per_request": None if k.cost_us is None else round(k.cost_us, 1),
                       "ms_per_workflow": None if (ms := k.ms_per_workflow(n)) is None else round(ms, 3)}
                      for k in self.kinds],
            "background_ms_per_workflow": {g: round(ms / n, 3) for g, ms in self.background_ms.items()},
        }

    def text(self) -> str:
        n = self.workflows
        lines = [f"{n} workflows in {self.seconds:.1f}s ({self.failed} failed); "
                 f"Cassandra JVM CPU {self.cpu_ms:.0f} ms: "
                 f"{self.cpu_ms_per_workflow:.2f} ms per workflow (its idle rate, {self.idle_ms_per_s:.0f} ms/s, "
                 f"is {self.idle_ms_per_s * self.seconds / n:.2f} of them)",
                 f"{self.lwts / n:.2f} LWTs per workflow, "
                 f"{self.transitions / self.lwts if self.lwts else 0:.1f} state transitions per LWT", "",
                 f"{'kind':<26}{'req/wf':>8}{'stmts/req':>11}{'µs/req':>9}{'ms/wf':>8}"]
        for k in sorted(self.kinds, key=lambda k: -(k.ms_per_workflow(n) or 0.0)):
            ms = k.ms_per_workflow(n)
            lines.append(f"{k.kind:<26}{k.per_workflow(n):>8.2f}{k.statements / max(k.requests, 1):>11.1f}"
                         f"{'-' if k.cost_us is None else f'{k.cost_us:.0f}':>9}"
                         f"{'-' if ms is None else f'{ms:.2f}':>8}")
        est = self.estimated_ms_per_workflow
        lines += [f"{'requests (estimated)':<54}{est:>8.2f}",
                  f"{'rest: background, idle, estimate error':<54}{self.cpu_ms_per_workflow - est:>8.2f}",
                  f"{'measured total':<54}{self.cpu_ms_per_workflow:>8.2f}"]
        if self.background_ms:
            by_cpu = sorted(self.background_ms.items(), key=lambda kv: -kv[1])
            parts = ", ".join(f"{g} {ms / n:.2f}" for g, ms in by_cpu)
            lines.append(f"background threads over the run, ms per workflow: {parts}")
        return "\n".join(lines)


# ---------------------------------------------------------------- the run

@dataclass
class _Recorded:
    """What the store was asked to do, sampled, for the replay of conditional writes."""

    writes: list[Any] = field(default_factory=list)  # ShardWrite


def _record_writes(store: Any, recorded: _Recorded) -> None:
    """Keep the shard writes the store is given (up to SAMPLES_PER_KIND), by wrapping its `write`
    on this instance only."""
    write: Callable[[Any], Awaitable[None]] = store.write

    async def recording_write(w: Any) -> None:
        if len(recorded.writes) < SAMPLES_PER_KIND:
            recorded.writes.append(w)
        await write(w)

    store.write = recording_write


def _stop_recording(store: Any) -> None:
    vars(store).pop("write", None)


def _writes(stats: Any) -> dict[str, tuple[int, int]]:
    """The counts of the workflows' own writes: neither reads nor ack flushes (the queues' polls
    and the flush of the timer level, which follows the clock, go on while nothing happens)."""
    from history.store.cassandra import KIND_ACK_FLUSH

    return {k: v for k, v in stats.counts().items() if not k.startswith("read") and k != KIND_ACK_FLUSH}


async def _quiet(stats: Any) -> None:
    """Wait until the workflows wrote nothing for QUIET_S (the closes' visibility upserts are sent
    after the results), QUIET_MAX_S at most."""
    deadline = time.monotonic() + QUIET_MAX_S
    last = _writes(stats)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = _writes(stats)
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET_S:
            return


async def prepare_keyspace(config: Config) -> None:
    """Set the bench's keyspace up (replication factor 1) or move it to this build's schema, and
    empty it: runs left by an earlier bench would fire their timers during this one."""
    from history.store.cassandra_schema import read_schema_version, setup_schema, truncate_all, upgrade_schema
    from history.store.cql import Cql, connect

    cluster, session = await asyncio.to_thread(connect, config.store)
    try:
        cql = Cql(session)
        keyspace = config.store.cassandra_keyspace
        found = await read_schema_version(cql, keyspace)
        if found is None:
            await setup_schema(cql, keyspace, replication_factor=1)
        else:
            await upgrade_schema(cql, keyspace)
        await truncate_all(cql, keyspace)
    finally:
        await asyncio.to_thread(cluster.shutdown)


async def run_cost(config: Config, workflows: int, warmup: int, proc: psutil.Process) -> CostReport:
    """Empty the keyspace, run `warmup` then `workflows` hello workflows (the second run measured)
    and replay each kind of request."""
    from history.store.cassandra import CassandraStore
    from legato.server import Engine
    from worker.entries import load_registry
    from worker.worker import Worker

    await prepare_keyspace(config)
    with tempfile.TemporaryDirectory(prefix="legato-bench-cost-") as tmp:
        root = write_app(Path(tmp))
        async with Engine(config, str(root / "unused.db")) as engine:
            store = engine.execution_store
            if not isinstance(store, CassandraStore):
                raise BenchError("bench cassandra-cost needs the Cassandra store (--store cassandra)")
            worker = Worker(engine.frontend, load_registry(root), config, identity="bench")
            await worker.start()
            try:
                if warmup:
                    await drive(engine.frontend, Load(warmup), "warm-up")
                    await _quiet(store.cql.stats)
                recorded = _Recorded()
                report = await _measured_run(engine, store, workflows, proc, recorded)
            finally:
                await worker.stop()
            await _replay_all(store, report, recorded, proc)
            return report


async def _measured_run(engine: Any, store: Any, workflows: int, proc: psutil.Process,
                        recorded: _Recorded) -> CostReport:
    stats = store.cql.stats
    idle = await idle_rate(proc)
    _record_writes(store, recorded)
    stats.sample = SAMPLES_PER_KIND
    for k in stats.kinds.values():
        k.samples.clear()
    before = stats.counts()
    lwt0, tr0 = store.lwt_count, store.run_write_count
    threads0 = thread_cpu(proc)
    t0, c0 = time.perf_counter(), cpu_s(proc)
    result = await drive(engine.frontend, Load(workflows), "cost")
    await _quiet(stats)
    seconds, cpu = time.perf_counter() - t0, cpu_s(proc) - c0
    background = thread_cpu(proc) - threads0
    stats.sample = 0
    _stop_recording(store)
    after = stats.counts()
    kinds = [KindCost(kind, n - before.get(kind, (0, 0))[0], s - before.get(kind, (0, 0))[1])
             for kind, (n, s) in after.items() if n > before.get(kind, (0, 0))[0]]
    return CostReport(workflows, seconds, result.failed, cpu * 1000, idle * 1000, kinds,
                      {g: v * 1000 for g, v in background.items()}, store.lwt_count - lwt0,
                      store.run_write_count - tr0)


# ---------------------------------------------------------------- the replay

async def _measure(proc: psutil.Process, idle_per_s: float, requests: int,
                   send: Callable[[int], Awaitable[None]], concurrency: int = REPLAY_CONCURRENCY) -> float:
    """µs of JVM CPU per request for `requests` calls of send(i), `concurrency` at a time: lane j
    sends i = j, j + concurrency, ... in turn (so i % concurrency is never in flight twice)."""
    lanes = min(concurrency, requests)

    async def lane(j: int) -> None:
        for i in range(j, requests, lanes):
            await send(i)

    t0, c0 = time.perf_counter(), cpu_s(proc)
    await asyncio.gather(*(lane(j) for j in range(lanes)))
    cpu, elapsed = cpu_s(proc) - c0, time.perf_counter() - t0
    return max(cpu - idle_per_s * elapsed, 0.0) * 1e6 / requests


def _replay_count(k: KindCost) -> int:
    return max(REPLAY_MIN_REQUESTS, min(REPLAY_REQUESTS, k.requests))


async def _replay_all(store: Any, report: CostReport, recorded: _Recorded, proc: psutil.Process) -> None:
    from history.store.cassandra import KIND_ACK_FLUSH, KIND_SHARD_TAKE, KIND_SHARD_WRITE

    idle = report.idle_ms_per_s / 1000
    stats = store.cql.stats
    shard = _Calibration(store)
    try:
        for k in report.kinds:
            n = _replay_count(k)
            if k.kind == KIND_SHARD_WRITE and recorded.writes:
                k.cost_us = await shard.shard_writes(proc, idle, recorded.writes, n)
            elif k.kind == KIND_ACK_FLUSH:
                k.cost_us = await shard.ack_flushes(proc, idle, n)
            elif k.kind == KIND_SHARD_TAKE:
                k.cost_us = await shard.takes(proc, idle, REPLAY_MIN_REQUESTS)
            elif not k.kind.startswith("LWT") and stats.kinds[k.kind].samples:
                k.cost_us = await _measure(proc, idle, n, _replayer(store, stats.kinds[k.kind].samples))
            else:
                continue
            k.replayed = n
    finally:
        await shard.drop()


def _replayer(store: Any, samples: list[Any]) -> Callable[[int], Awaitable[None]]:
    """send(i): the i-th request of the replay, cycling through the samples."""

    async def send(i: int) -> None:
        await store.cql.execute(samples[i % len(samples)], kind="replay")

    return send


class _Calibration:
    """Shards of their own (ids from CALIBRATION_SHARD) to replay conditional writes on."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.used: list[int] = []

    async def _take(self, n: int = 1) -> list[tuple[int, int]]:
        """n fresh calibration shards, acquired: (shard_id, range_id) each."""
        out = []
        for _ in range(n):
            shard_id = CALIBRATION_SHARD + len(self.used)
            self.used.append(shard_id)
            await self.drop_one(shard_id)  # a calibration shard left by a run that was cut short
            info = await self.store.acquire_shard(shard_id, f"bench-cost-{os.getpid()}")
            out.append((shard_id, info.range_id))
        return out

    async def shard_writes(self, proc: psutil.Process, idle: float, writes: list[Any], n: int) -> float:
        """The sampled shard writes again, each twice (creating its runs under fresh workflow ids,
        then updating them), LWT_LANES at once."""
        from history.store.base import CurrentRunWrite, RunWrite

        shards = await self._take(LWT_LANES)

        def fresh(w: Any, i: int, create: bool) -> Any:
            shard_id, range_id = shards[i % LWT_LANES]
            runs = [RunWrite(r.namespace, f"{r.workflow_id}~{i}", r.run_id, r.next_event_id, r.state,
                             None if create else r.next_event_id) for r in w.runs]
            currents = [CurrentRunWrite(replace(c.row, workflow_id=f"{c.row.workflow_id}~{i}"),
                                        None if create else c.row.run_id) for c in w.current_runs]
            return replace(w, shard_id=shard_id, range_id=range_id, runs=runs, current_runs=currents)

        async def send_pair(i: int) -> None:  # the update follows its create
            w = writes[i % len(writes)]
            await self.store.write(fresh(w, i, True))
            await self.store.write(fresh(w, i, False))

        return await _measure(proc, idle, (n + 1) // 2, send_pair, LWT_LANES) / 2

    async def ack_flushes(self, proc: psutil.Process, idle: float, n: int) -> float:
        shards = await self._take(LWT_LANES)
        levels = [0] * LWT_LANES

        async def send(i: int) -> None:
            lane = i % LWT_LANES
            shard_id, range_id = shards[lane]
            levels[lane] += 10
            await self.store.update_shard(shard_id, range_id, levels[lane], [], levels[lane])

        return await _measure(proc, idle, n, send, LWT_LANES)

    async def takes(self, proc: psutil.Process, idle: float, n: int) -> float:
        shards = await self._take(LWT_LANES)
        owner = f"bench-cost-take-{os.getpid()}"

        async def send(i: int) -> None:
            await self.store.acquire_shard(shards[i % LWT_LANES][0], owner)

        return await _measure(proc, idle, n, send, LWT_LANES)

    async def drop_one(self, shard_id: int) -> None:
        await self.store.cql.execute(f"DELETE FROM {self.store.keyspace}.executions WHERE shard_id = ?", [shard_id],
                                     kind="replay")

    async def drop(self) -> None:
        for shard_id in self.used:
            await self.drop_one(shard_id)
