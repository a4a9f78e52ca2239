"""`legato bench cluster` and `legato bench assignment`: the figures of a cluster (docs/cluster.md).

`bench assignment` simulates the shard assignment (legato.assignment) for N nodes and S shards:
the spread of shards per node, and how many move when one node joins and when one leaves.

`bench cluster` starts a cluster on this machine (history, matching and frontend processes and a
worker, on the running ZooKeeper, Cassandra and Kafka) and measures:

* `bench hello` throughput through the frontend with 1, 2 and 3 history nodes (one matching
  node), then with a second matching node;
* shard handoff time after a SIGKILL and after a graceful stop (SIGTERM) of a history node: from
  the signal to the moment each of its shards answers again (a request per shard, sent through
  the frontend at the signal, completes when a node serves the shard), p50/p99 over the moved
  shards of every repetition.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from legato.assignment import moves, rebalance
from legato.bench import BenchError, BenchReport, Child, Load, drive, free_port, legato_command, write_app
from legato.config import ClusterConfig
from legato.ids import shard_for
from legato.zk import Zk

# ---------------------------------------------------------------- bench assignment


@dataclass
class AssignmentReport:
    nodes: int
    shards: int
    min_per_node: int
    max_per_node: int
    join_moves: int
    leave_moves: int
    seconds: float

    def text(self) -> str:
        n, s = self.nodes, self.shards
        return (f"{n} nodes, {s} shards: each node owns {self.min_per_node}..{self.max_per_node} "
                f"(mean {s / n:.2f})\n"
                f"a node joins: {self.join_moves} shards move (S/(N+1) = {s / (n + 1):.1f})\n"
                f"a node leaves: {self.leave_moves} shards move (its own; S/N = {s / n:.1f})\n"
                f"computed in {self.seconds:.2f}s")


def simulate_assignment(nodes: int, shards: int) -> AssignmentReport:
    """Nodes join one by one; then one more joins, and one of the first leaves."""
    t0 = time.perf_counter()
    names = [f"node-{i}" for i in range(nodes)]
    owners: list[str | None] = [None] * shards
    for i in range(1, nodes + 1):
        owners = rebalance(owners, names[:i])
    counts = [owners.count(n) for n in names]
    joined = rebalance(owners, [*names, "newcomer"])
    left = rebalance(owners, names[1:])
    return AssignmentReport(nodes, shards, min(counts), max(counts), moves(owners, joined), moves(owners, left),
                            time.perf_counter() - t0)


# ---------------------------------------------------------------- bench cluster


@dataclass
class ClusterBenchReport:
    num_shards: int
    workflows: int
    throughput: dict[int, float] = field(default_factory=dict)  # history nodes -> workflows/s
    hello: dict[int, BenchReport] = field(default_factory=dict)
    kill_handoff_ms: list[float] = field(default_factory=list)
    graceful_handoff_ms: list[float] = field(default_factory=list)
    join_ms: list[float] = field(default_factory=list)  # a new history process started -> it owns its share
    two_matching: BenchReport | None = None  # 3 history nodes, 2 matching nodes

    def text(self) -> str:
        lines = [f"cluster bench: {self.num_shards} shards, 1 frontend, 1 worker, 1 matching node unless said"]
        for n, r in sorted(self.hello.items()):
            lines.append(f"  {n} history node(s): {r.workflows_per_second:.1f} workflows/s "
                         f"({r.workflows} workflows, p50 {r.p50_ms:.0f} ms, p99 {r.p99_ms:.0f} ms, {r.failed} failed)")
        if self.two_matching is not None:
            r = self.two_matching
            lines.append(f"  3 history, 2 matching nodes: {r.workflows_per_second:.1f} workflows/s "
                         f"(p50 {r.p50_ms:.0f} ms, p99 {r.p99_ms:.0f} ms, {r.failed} failed)")
        for name, values in (("SIGKILL", self.kill_handoff_ms), ("graceful stop", self.graceful_handoff_ms)):
            if values:
                lines.append(f"  handoff after {name}: p50 {_pct(values, 0.5):.0f} ms, p99 {_pct(values, 0.99):.0f} ms "
                             f"over {len(values)} moved shards")
        if self.join_ms:
            lines.append(f"  a new history process owns its share {_pct(self.join_ms, 0.5):.0f} ms (p50), "
                         f"{max(self.join_ms):.0f} ms (max) after it was started ({len(self.join_ms)} joins)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"num_shards": self.num_shards, "workflows": self.workflows,
                "throughput": {str(n): round(r.workflows_per_second, 1) for n, r in self.hello.items()},
                "throughput_two_matching": round(self.two_matching.workflows_per_second, 1)
                if self.two_matching is not None else None,
                "kill_handoff_ms": {"p50": _pct(self.kill_handoff_ms, 0.5), "p99": _pct(self.kill_handoff_ms, 0.99),
                                    "samples": len(self.kill_handoff_ms)},
                "graceful_handoff_ms": {"p50": _pct(self.graceful_handoff_ms, 0.5),
                                        "p99": _pct(self.graceful_handoff_ms, 0.99),
                                        "samples": len(self.graceful_handoff_ms)},
                "join_ms": {"p50": _pct(self.join_ms, 0.5), "max": max(self.join_ms, default=0.0),
                            "samples": len(self.join_ms)}}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if q < 1 else ordered[-1]


@dataclass
class ClusterSetup:
    zookeeper: str
    cassandra_hosts: str
    keyspace: str
    kafka_bootstrap: str
    num_shards: int = 16
    session_timeout_ms: int = 3000


class _Cluster:
    """The processes of one cluster, started by the bench."""

    def __init__(self, setup: ClusterSetup, tmp: Path, prefix: str, root: str) -> None:
        self.setup = setup
        self.root = root
        self.prefix = prefix
        self.config = tmp / "cluster.yaml"
        self.config.write_text(yaml.safe_dump({
            "store": {"kind": "cassandra", "cassandra_hosts": setup.cassandra_hosts,
                      "cassandra_keyspace": setup.keyspace},
            "queues": {"kind": "kafka", "kafka_bootstrap": setup.kafka_bootstrap, "topic_prefix": prefix},
            "history": {"num_shards": setup.num_shards},
            "cluster": {"zookeeper_hosts": setup.zookeeper, "zookeeper_root": root,
                        "zookeeper_session_timeout_ms": setup.session_timeout_ms},
        }))
        self.app = write_app(tmp / "app")
        self.children: dict[str, Child] = {}
        self.addresses: dict[str, str] = {}
        self._n = 0
        self._zk: Zk | None = None  # reads the shard locks (opened on first use)

    async def add(self, role: str) -> str:
        self._n += 1
        name = f"{role}-{self._n}"
        address = f"127.0.0.1:{free_port()}"
        child = Child(name, legato_command("server", "start", "--role", role, f"--{role}-address", address,
                                           "--config", str(self.config)))
        self.children[name] = child
        self.addresses[name] = address
        await child.start("listening")
        return name

    async def add_worker(self, frontend: str) -> None:
        child = Child("worker", legato_command("worker", "--entries", str(self.app), "--address",
                                               self.addresses[frontend], "--config", str(self.config)))
        self.children["worker"] = child
        await child.start("worker polling")

    def signal(self, name: str, sig: int) -> None:
        proc = self.children[name].proc
        assert proc is not None
        proc.send_signal(sig)

    async def stop(self) -> None:
        for child in reversed(list(self.children.values())):
            await child.stop()
        if self._zk is not None:
            await self._zk.stop()

    async def shard_owners(self) -> dict[int, str]:
        """shard -> the history address holding its lock, read from ZooKeeper now."""
        from legato.membership import read_cluster

        if self._zk is None:
            self._zk = Zk(ClusterConfig(zookeeper_hosts=self.setup.zookeeper))
            await self._zk.start()
        state = await read_cluster(self._zk, self.root)
        return {s: str(d.get("address", "")) for s, d in state.shard_owners.items()}

    async def until_balanced(self, nodes: int, timeout_s: float = 60.0) -> None:
        """Until the shards are spread over `nodes` history nodes, each within one of the others."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            counts: dict[str, int] = {}
            owners = await self.shard_owners()
            for a in owners.values():
                counts[a] = counts.get(a, 0) + 1
            spread = max(counts.values()) - min(counts.values()) if counts else 0
            if len(owners) == self.setup.num_shards and len(counts) == nodes and spread <= 1:
                return
            if loop.time() > deadline:
                raise BenchError(f"the shards did not spread over {nodes} history nodes within {timeout_s:g}s: "
                                 f"{counts}")
            await asyncio.sleep(0.1)  # polling ZooKeeper, with the deadline above as safety net


def _probe_ids(num_shards: int) -> dict[int, str]:
    """A workflow id in each shard (never started: describing it is answered NotFound by the owner)."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < num_shards:
        wid = f"probe-{i}"
        out.setdefault(shard_for("default", wid, num_shards), wid)
        i += 1
    return out


async def _handoff(cluster: _Cluster, victim: str, sig: int, address: str) -> list[float]:
    """Signal `victim`; ms until each shard it owned answered again."""
    from legato.api import ExecutionRef
    from legato.client import GrpcClient
    from legato.errors import NotFound

    owners = await cluster.shard_owners()
    moved = [s for s, a in owners.items() if a == cluster.addresses[victim]]
    probes = _probe_ids(cluster.setup.num_shards)

    async with GrpcClient(address, call_timeout_s=120.0) as client:
        async def served(shard: int, t0: float) -> float:
            with contextlib.suppress(NotFound):
                await client.describe_workflow(ExecutionRef(probes[shard]))
            return (time.perf_counter() - t0) * 1000

        t0 = time.perf_counter()
        cluster.signal(victim, sig)
        return list(await asyncio.gather(*(served(s, t0) for s in moved)))


async def run_cluster_bench(setup: ClusterSetup, workflows: int, handoffs: int) -> ClusterBenchReport:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    root = f"/legato-bench/{prefix}"
    report = ClusterBenchReport(setup.num_shards, workflows)
    await _run_cli("schema", "setup", "--store", "cassandra", "--hosts", setup.cassandra_hosts,
                   "--keyspace", setup.keyspace)
    await _run_cli("kafka", "setup", "--bootstrap", setup.kafka_bootstrap, "--prefix", prefix)
    with tempfile.TemporaryDirectory(prefix="legato-bench-cluster-") as tmp:
        cluster = _Cluster(setup, Path(tmp), prefix, root)
        try:
            history = [await cluster.add("history")]
            await cluster.add("matching")
            frontend = await cluster.add("frontend")
            address = cluster.addresses[frontend]
            await cluster.add_worker(frontend)
            async def join() -> None:
                t0 = time.perf_counter()
                history.append(await cluster.add("history"))
                await cluster.until_balanced(len(history))
                report.join_ms.append((time.perf_counter() - t0) * 1000)

            await cluster.until_balanced(1)
            for n in (1, 2, 3):
                while len(history) < n:
                    await join()
                report.hello[n] = await _hello(address, workflows)
            await cluster.add("matching")  # its share of the task partitions, and polls round robin
            report.two_matching = await _hello(address, workflows)
            for _ in range(handoffs):
                report.kill_handoff_ms += await _handoff(cluster, history.pop(0), signal.SIGKILL, address)
                await join()
                report.graceful_handoff_ms += await _handoff(cluster, history.pop(0), signal.SIGTERM, address)
                await join()
        finally:
            await cluster.stop()
    return report


async def _hello(address: str, workflows: int) -> BenchReport:
    from legato.client import GrpcClient

    async with GrpcClient(address, call_timeout_s=120.0) as client:
        return await drive(client, Load(workflows), f"cluster via {address}")


async def _run_cli(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(*legato_command(*args), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise BenchError(f"legato {' '.join(args)} failed: {out.decode(errors='replace').strip()}")


__all__ = ["AssignmentReport", "ClusterBenchReport", "ClusterSetup", "run_cluster_bench", "simulate_assignment"]
