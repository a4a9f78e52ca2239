"""A real cluster (docs/cluster.md): history, matching and frontend processes joined through a real
ZooKeeper, state in the real Cassandra node, tasks and timers on the real Kafka broker, a worker
reaching every frontend; and what happens when its processes come, go, die or freeze.

Every client call goes through the frontends (`--address f1,f2`) and must succeed: retries inside
the system are fine, an error reaching the client is a failure. Every workflow (an activity, a
durable timer, a signal, a child workflow with an activity) must complete once, with each step
recorded once, no timer lost or early.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from legato.api import ExecutionRef, SignalWorkflowRequest, StartWorkflowRequest, WorkflowStatus
from legato.cli.workflow_cmds import read_history, wait_result
from legato.client import GrpcClient
from legato.config import QueuesConfig, StoreConfig
from legato.events import EventType as E
from legato.events import HistoryEvent
from tests.integration.cluster_procs import ClusterProcs
from tests.integration.histories import assert_steps_recorded_once
from tests.integration.procs import legato
from tests.tcp_proxy import TcpProxy
from tests.zookeeper_fixtures import ZooKeeperEnsemble, zk_root

APP = Path(__file__).resolve().parent.parent / "apps" / "cluster"
NUM_SHARDS = 8
WAIT_S = 60.0  # safety net of every wait on a condition
T = TypeVar("T")


def make_cluster(tmp: Path, zookeeper: str, store: StoreConfig, queues: QueuesConfig,
                 **kw: Any) -> ClusterProcs:
    q = queues.model_dump(mode="json")
    q["matching_session_timeout_ms"] = 3000
    return ClusterProcs(tmp, APP, zookeeper, zk_root(), store.model_dump(mode="json"), q,
                        num_shards=NUM_SHARDS, **kw)


async def eventually(cond: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str,
                     timeout: float = WAIT_S) -> None:
    """Wait until `cond()` holds (checked every 100 ms, with `timeout` as the safety net)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = cond()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.1)


def balanced(owners: dict[int, str], members: int) -> bool:
    counts: dict[str, int] = {}
    for a in owners.values():
        counts[a] = counts.get(a, 0) + 1
    return (len(owners) == NUM_SHARDS and len(counts) == members
            and max(counts.values()) - min(counts.values()) <= 1)


# ---------------------------------------------------------------------- the client's side

class Driver:
    """Starts workflows, signals them and collects their results, through the frontends."""

    def __init__(self, address: str, concurrency: int = 64) -> None:
        self.address = address
        self.done: dict[str, Any] = {}
        self.started = 0  # started and signaled
        self.latest_due_s: list[float] = []  # when each workflow's timer is due at the latest
        self._slots = asyncio.Semaphore(concurrency)
        self.errors: list[BaseException] = []

    async def run(self, ids: list[str], sleeps_ms: dict[str, int]) -> None:
        async with GrpcClient(self.address, call_timeout_s=90) as c:
            await asyncio.gather(*(self._one(c, wid, i, sleeps_ms[wid]) for i, wid in enumerate(ids)))

    def timers_due_by(self, now_s: float) -> bool:
        """Every workflow started so far has its timer due by `now_s` (it sleeps after one activity)."""
        return bool(self.latest_due_s) and now_s >= max(self.latest_due_s)

    async def _one(self, c: GrpcClient, wid: str, n: int, sleep_ms: int) -> None:
        async with self._slots:
            try:
                self.latest_due_s.append(time.time() + sleep_ms / 1000.0 + 1.0)
                await c.start_workflow(StartWorkflowRequest(wid, "cluster:order", "cluster",
                                                            [{"n": n, "sleep": f"{sleep_ms}ms"}], request_id=wid))
                await c.signal_workflow(SignalWorkflowRequest(ExecutionRef(wid), "go", [n],
                                                              request_id=f"{wid}-go"))
                self.started += 1
            except BaseException as e:
                self.errors.append(e)
                raise
        try:
            self.done[wid] = await wait_result(c, ExecutionRef(wid), 240_000)
        except BaseException as e:
            self.errors.append(e)
            raise


def expected(n: int) -> dict[str, Any]:
    return {"n": n, "worked": 2 * n, "go": [n], "part": 2 * (n + 1000)}


async def check_histories(address: str, ids: list[str], results: dict[str, Any]) -> None:
    async with GrpcClient(address, call_timeout_s=90) as c:
        for i, wid in enumerate(ids):
            r = results[wid]
            events = await read_history(c, ExecutionRef(wid))
            assert (r.status, r.result) == (WorkflowStatus.COMPLETED, expected(i)), (
                wid, r, [(e.event_id, e.event_type.name, e.timestamp_ms) for e in events])
            assert_steps_recorded_once(events)
            assert_timer_on_time(events, wid)


def assert_timer_on_time(events: list[HistoryEvent], wid: str) -> None:
    started = [e for e in events if e.event_type == E.TimerStarted]
    fired = [e for e in events if e.event_type == E.TimerFired]
    assert len(started) == 1 and len(fired) == 1, (wid, len(started), len(fired))
    due = started[0].timestamp_ms + started[0].attrs["start_to_fire_timeout_ms"]
    assert fired[0].timestamp_ms >= due, f"{wid}: the timer fired {due - fired[0].timestamp_ms} ms early"


def workload(prefix: str, count: int, seed: int) -> tuple[list[str], dict[str, int]]:
    rnd = random.Random(seed)
    ids = [f"{prefix}-{i}" for i in range(count)]
    return ids, {wid: rnd.randint(500, 2500) for wid in ids}


# ---------------------------------------------------------------------- fixtures

@pytest.fixture
def small_cluster(tmp_path: Path, zookeeper_node: str, cassandra: StoreConfig,
                  kafka_queues: QueuesConfig) -> Iterator[ClusterProcs]:
    c = make_cluster(tmp_path, zookeeper_node, cassandra, kafka_queues)
    try:
        yield c
    finally:
        c.stop()


# ---------------------------------------------------------------------- membership, scale out, describe

@pytest.mark.timeout(300)
async def test_describe_scale_out_and_graceful_handover(small_cluster: ClusterProcs) -> None:
    c = small_cluster
    for role in ("history", "history", "matching", "frontend", "frontend"):
        c.add(role)
    c.start_worker()
    await eventually(lambda: balanced(c.shard_owners(), 2), "two history nodes own 4 shards each")

    p = legato("cluster", "describe", "--zookeeper", c.zookeeper, "--root", c.root, "--output", "json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert set(d) == {"members", "shards", "num_shards"} and d["num_shards"] == NUM_SHARDS
    assert sorted((m["role"], m["address"]) for m in d["members"]) == sorted(
        (name.split("-")[0], c.addresses[name]) for name in c.procs)
    assert all(set(m) == {"role", "address", "identity", "metrics_address", "health"} for m in d["members"])
    assert set(d["shards"]) == {str(s) for s in range(NUM_SHARDS)}
    assert set(d["shards"].values()) == {c.addresses["history-1"], c.addresses["history-2"]}
    text = legato("cluster", "describe", "--zookeeper", c.zookeeper, "--root", c.root)
    assert text.returncode == 0 and c.addresses["history-1"] in text.stdout and "owns shards" in text.stdout

    ids, sleeps = workload("scale", 60, 1)
    driver = Driver(c.address)
    run = asyncio.create_task(driver.run(ids, sleeps))
    await eventually(lambda: len(driver.done) >= 10, "a first few workflows done")
    c.add("history")  # scale out at run time: it takes its share
    await eventually(lambda: balanced(c.shard_owners(), 3), "three history nodes own 2 or 3 shards each")
    moving = c.owned_by("history-1")
    code = await asyncio.to_thread(c.terminate, "history-1")  # graceful: drain, release, exit
    assert code == 0, c.output("history-1")[-3000:]
    owners = c.shard_owners()
    assert balanced(owners, 2) and not moving & {s for s, a in owners.items() if a == c.addresses["history-1"]}
    await asyncio.wait_for(run, 240)
    assert driver.errors == []
    await check_histories(c.address, ids, driver.done)
    out = c.output("history-1")
    assert "ownership lost" not in out  # handed over, never fenced


# ---------------------------------------------------------------------- split brain

@pytest.mark.timeout(300)
async def test_a_frozen_node_that_wakes_up_owning_nothing_writes_nothing(small_cluster: ClusterProcs) -> None:
    """history-1 is frozen (SIGSTOP) until its session expires and its shards move; it is resumed
    (SIGCONT) while its ZooKeeper connection is still cut (a proxy the test controls), so it
    believes it owns its shards and fires the timers that came due meanwhile: every write it
    attempts is rejected by the range_id fence, nothing it wrote becomes visible, it drops them."""
    c = small_cluster
    host, port = c.zookeeper.split(":")
    proxy = TcpProxy(host, int(port))
    proxied = f"127.0.0.1:{await proxy.start()}"
    try:
        # (started from a thread: the proxy runs on this event loop)
        await asyncio.to_thread(c.add, "history", zookeeper=proxied)
        for role in ("history", "matching", "frontend"):
            await asyncio.to_thread(c.add, role)
        await asyncio.to_thread(c.start_worker)
        await eventually(lambda: balanced(c.shard_owners(), 2), "two history nodes own 4 shards each")
        ids, _ = workload("frozen", 40, 2)
        sleeps = {wid: 3000 for wid in ids}  # timers that come due while history-1 is frozen
        driver = Driver(c.address)
        run = asyncio.create_task(driver.run(ids, sleeps))
        await eventually(lambda: driver.started == len(ids), "every workflow started and signaled")
        c.freeze("history-1")  # SIGSTOP: it cannot notice anything
        proxy.blackhole()  # ... nor hear ZooKeeper once it wakes
        await eventually(lambda: c.owned_by("history-2") == set(range(NUM_SHARDS)),
                         "history-2 took every shard once history-1's session expired")
        await eventually(lambda: driver.timers_due_by(time.time()), "the workflows' timers are due")
        c.thaw("history-1")
        await eventually(lambda: "dropping every shard" in c.output("history-1"),
                         "history-1 learns its session is gone and drops what it still had")
        proxy.heal()
        proxy.reset()
        await asyncio.wait_for(run, 240)
        assert driver.errors == []
        await check_histories(c.address, ids, driver.done)  # each timer fired once: history-1's fires are gone
        out = c.output("history-1")
        fenced = [line for line in out.splitlines() if "ownership lost" in line and "session was lost" not in line]
        assert fenced, "history-1 attempted no write after waking up:\n" + out[-3000:]
        assert "dropping every shard" in out
        assert c.procs["history-1"].alive()
        await eventually(lambda: balanced(c.shard_owners(), 2), "history-1 rejoined with a new session")
    finally:
        await proxy.stop()


# ---------------------------------------------------------------------- the big run

@pytest.mark.timeout(1200)
async def test_two_thousand_workflows_through_kills_and_a_new_node(
        tmp_path: Path, zookeeper_ensemble: ZooKeeperEnsemble, cassandra: StoreConfig,
        kafka_queues: QueuesConfig) -> None:
    c = make_cluster(tmp_path, zookeeper_ensemble.hosts, cassandra, kafka_queues, session_timeout_ms=3000)
    killed_zk: int | None = None
    try:
        for role in ("history", "history", "history", "matching", "matching", "frontend", "frontend"):
            c.add(role, wait=False)
        for name in list(c.procs):
            c.wait_serving(name)
        c.start_worker()
        await eventually(lambda: balanced(c.shard_owners(), 3), "three history nodes share the shards")
        ids, sleeps = workload("big", 2000, 3)
        driver = Driver(c.address, concurrency=200)
        run = asyncio.create_task(driver.run(ids, sleeps))

        async def at(done: int, what: str) -> None:
            await eventually(lambda: len(driver.done) >= done or run.done(), what, timeout=600)
            assert not run.done() or run.exception() is None, run.exception()

        await at(300, "300 workflows done")
        c.kill("history-1")
        await at(600, "600 workflows done")
        c.add("history")
        await at(900, "900 workflows done")
        c.kill("matching-1")
        await at(1200, "1200 workflows done")
        killed_zk = 1
        zookeeper_ensemble.kill(killed_zk)
        await asyncio.wait_for(run, 900)
        assert driver.errors == []
        assert len(driver.done) == len(ids)
        await check_histories(c.address, ids, driver.done)
        await eventually(lambda: balanced(c.shard_owners(), 3), "history-2, -3 and -4 share the shards")
    finally:
        c.stop()
        if killed_zk is not None:
            zookeeper_ensemble.start(killed_zk)


# ---------------------------------------------------------------------- the figures

@pytest.mark.timeout(600)
def test_bench_cluster_reports_throughput_and_handoff_times(zookeeper_node: str, cassandra_node: StoreConfig,
                                                            kafka_node: str) -> None:
    p = legato("bench", "cluster", "--zookeeper", zookeeper_node, "--cassandra-hosts",
               ",".join(cassandra_node.cassandra_hosts), "--keyspace", "legato_bench_test", "--kafka-bootstrap",
               kafka_node, "--shards", "8", "--workflows", "20", "--handoffs", "1", "--output", "json", timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout)
    assert set(r["throughput"]) == {"1", "2", "3"} and all(v > 0 for v in r["throughput"].values())
    assert r["throughput_two_matching"] > 0
    for key in ("kill_handoff_ms", "graceful_handoff_ms"):
        assert r[key]["samples"] > 0 and 0 < r[key]["p50"] <= r[key]["p99"], r[key]
    assert r["join_ms"]["samples"] >= 4
