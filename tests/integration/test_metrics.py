"""Metrics and probes proven against a real Prometheus (deploy/prometheus/prometheus.sh): each
test's processes serve /metrics on ports of their own, the test adds them to Prometheus's scrape
targets with a label of its own (`run`), drives workflows through them, and asks Prometheus
with PromQL whether the series exist and move: requests counted, workflows closed, backlogs
drained, shards adding up to num_shards. /healthz and /readyz are asked directly.
"""

from __future__ import annotations

import functools
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from legato import metrics
from legato.config import QueuesConfig, StoreConfig
from tests.integration.cluster_procs import ClusterProcs
from tests.integration.procs import Proc, free_port, legato
from tests.integration.test_cluster_faults import APP, NUM_SHARDS, Driver, check_histories, eventually, workload
from tests.zookeeper_fixtures import zk_root

WAIT_S = 90.0  # safety net of every wait on Prometheus (it scrapes every second)


class Prom:
    """PromQL over Prometheus's HTTP API, for the series of one test (label `run`)."""

    def __init__(self, url: str, targets_dir: Path) -> None:
        self.url = url
        self.run = uuid.uuid4().hex[:12]
        self.file = targets_dir / f"test-{self.run}.json"

    def scrape(self, processes: dict[str, str]) -> None:
        """Make Prometheus scrape these processes (name -> metrics address), labelled with this run."""
        groups = [{"targets": [address], "labels": {"run": self.run, "process": name}}
                  for name, address in processes.items()]
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.file)  # atomically: Prometheus never reads half a file

    def forget(self) -> None:
        self.file.unlink(missing_ok=True)

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's samples; `{run}` in `promql` is this test's label matcher."""
        q = promql.replace("{run}", f'{{run="{self.run}"}}').replace("{run,", f'{{run="{self.run}",')
        with urllib.request.urlopen(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": q}),
                                    timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return [(s["metric"], float(s["value"][1])) for s in body["data"]["result"]]

    def value(self, promql: str) -> float | None:
        samples = self.query(promql)
        return samples[0][1] if len(samples) == 1 else None

    async def until(self, promql: str, ok: Any, what: str) -> None:
        """Wait until the query's single value satisfies `ok(value)`."""
        seen: list[float | None] = []

        def check() -> bool:
            v = self.value(promql)
            seen[:] = [v]
            return v is not None and bool(ok(v))

        try:
            await eventually(check, what, WAIT_S)
        except AssertionError as e:
            raise AssertionError(f"{e}; {promql} was {seen}") from None


def ready(address: str) -> bool:
    return http(address, "/readyz")[0] == 200


def http(address: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def prom(prometheus_node: tuple[str, Path]) -> Iterator[Prom]:
    p = Prom(*prometheus_node)
    try:
        yield p
    finally:
        p.forget()


# ---------------------------------------------------------------------- the dashboard

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "legato.json"


def test_the_dashboard_is_grafana_json_over_exported_metrics_only(prom: Prom) -> None:
    d = json.loads(DASHBOARD.read_text())
    assert d["title"] and d["uid"] and isinstance(d["schemaVersion"], int)
    assert [v["name"] for v in d["templating"]["list"]] == ["datasource"]
    panels = d["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    exported = metrics.metric_names()
    used: set[str] = set()
    for p in panels:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["type"] == "timeseries" and p["targets"], p["title"]
        for t in p["targets"]:
            names = set(re.findall(r"\blegato_[a-z0-9_]+", t["expr"]))
            assert names and names <= exported, (p["title"], names - exported)
            used |= names
            # Prometheus itself parses (and runs) every expression.
            prom.query(t["expr"].replace("$__rate_interval", "1m"))
    families = metrics.families()
    unused = {f for f in families if not any(n == f or n.startswith(f + "_") for n in used)}
    assert not unused, f"metrics no panel shows: {sorted(unused)}"


def test_the_readme_lists_every_metric() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(legato_[a-z0-9_]+)` \| (\w+) \|", section, re.M))
    assert rows == metrics.families(), "the README's metrics table is the list of legato/metrics.py"


# ---------------------------------------------------------------------- one process (SQLite)

@pytest.mark.timeout(300)
async def test_one_process_server_and_worker_metrics_and_probes(prom: Prom, tmp_path: Path) -> None:
    port, server_metrics, worker_metrics = free_port(), f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    address = f"127.0.0.1:{port}"
    server = Proc(["server", "start-dev", "--db", str(tmp_path / "legato.db"), "--port", str(port),
                   "--metrics-address", server_metrics]).start()
    worker: Proc | None = None
    try:
        server.wait_for("listening", 60)
        worker = Proc(["worker", "--entries", str(APP), "--address", address,
                       "--metrics-address", worker_metrics]).start()
        worker.wait_for("worker polling", 60)
        prom.scrape({"server": server_metrics, "worker": worker_metrics})
        for where in (server_metrics, worker_metrics):
            assert http(where, "/healthz") == (200, "ok\n")
        await eventually(lambda: http(worker_metrics, "/readyz")[0] == 200, "the worker is ready")
        assert http(server_metrics, "/readyz") == (200, "ready\n")
        await prom.until("count(legato_up{run})", lambda v: v == 2, "Prometheus scrapes both processes")

        ids, sleeps = workload("metrics", 20, 7)
        driver = Driver(address)
        await driver.run(ids, sleeps)
        assert driver.errors == []
        await check_histories(address, ids, driver.done)

        # Counted where it happened: 20 starts at the frontend, 20 orders and their 20 children
        # completed in history, their activities and workflow tasks in the worker.
        await prom.until('sum(legato_requests_total{run,service="frontend",method="StartWorkflow"})',
                         lambda v: v == 20, "20 StartWorkflow requests")
        await prom.until('sum(legato_workflows_closed_total{run,status="completed"})', lambda v: v == 40,
                         "40 runs completed")
        await prom.until('sum(legato_activity_outcomes_total{run,outcome="completed"})', lambda v: v >= 40,
                         "the activities completed")
        await prom.until("sum(legato_workflow_task_latency_seconds_count{run})", lambda v: v >= 80,
                         "the workflow tasks timed")
        await prom.until("sum(legato_worker_cache_requests_total{run})", lambda v: v >= 80, "cache lookups")
        await prom.until("sum(legato_timer_fire_lag_seconds_count{run})", lambda v: v >= 20, "timers fired")
        await prom.until('sum(legato_store_operations_total{run,store="sqlite",operation="commit"})',
                         lambda v: v > 0, "SQLite commits counted")
        await prom.until("sum(legato_sqlite_commits_total{run})", lambda v: v > 0, "SQLite transactions")
        await prom.until("sum(legato_state_transitions_total{run})", lambda v: v >= 40, "state transitions")
        await prom.until("sum(legato_matching_polls_total{run})", lambda v: v > 0, "polls served")
        await prom.until("sum(legato_shards_owned{run})", lambda v: v > 0, "the shards of the one process")
        # Backlogs drained: nothing waits on a queue or an outbox once every workflow is done.
        await prom.until("sum(legato_matching_backlog{run})", lambda v: v == 0, "no task waits in matching")
        await prom.until("sum(legato_transfer_tasks_pending{run})", lambda v: v == 0, "the outbox is empty")
        # A percentile, as a dashboard computes it.
        p99 = prom.value('histogram_quantile(0.99, sum by (le) (rate(legato_request_latency_seconds_bucket'
                         '{run,service="frontend",method="StartWorkflow"}[5m])))')
        assert p99 is not None and 0 < p99 <= 60

        # The server goes away: the worker is alive but no longer ready, and says why.
        server.stop()
        await eventually(lambda: http(worker_metrics, "/readyz")[0] == 503, "the worker reports not ready")
        _, body = http(worker_metrics, "/readyz")
        assert "polling: the last poll failed" in body, body
        assert http(worker_metrics, "/healthz") == (200, "ok\n")
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def test_a_bad_metrics_address_is_refused_clearly(tmp_path: Path) -> None:
    p = legato("server", "start-dev", "--metrics-address", "nohost")
    assert p.returncode != 0 and "--metrics-address (metrics.address): address = 'nohost' is not valid: " \
        "expected host:port" in p.stderr and "Traceback" not in p.stderr, p.stderr
    busy = Proc(["server", "start-dev", "--port", str(free_port())]).start()
    try:
        line = busy.wait_for("listening", 60)
        found = re.search(r"listening on (\S+?:\d+)", line)  # its gRPC port: bound already
        assert found is not None, line
        taken = found.group(1)
        p = legato("server", "start-dev", "--port", str(free_port()), "--metrics-address", taken)
        assert p.returncode != 0 and f"cannot serve metrics on {taken}" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
    finally:
        busy.stop()


# ---------------------------------------------------------------------- a cluster

@pytest.fixture
def metered_cluster(tmp_path: Path, zookeeper_node: str, cassandra: StoreConfig,
                    kafka_queues: QueuesConfig) -> Iterator[ClusterProcs]:
    q = kafka_queues.model_dump(mode="json")
    q.update(matching_session_timeout_ms=3000, statistics_interval_ms=1000)
    c = ClusterProcs(tmp_path, APP, zookeeper_node, zk_root(), cassandra.model_dump(mode="json"), q,
                     num_shards=NUM_SHARDS, metrics=True)
    try:
        yield c
    finally:
        c.stop()


@pytest.mark.timeout(300)
async def test_cluster_metrics_add_up(prom: Prom, metered_cluster: ClusterProcs) -> None:
    c = metered_cluster
    for role in ("history", "history", "matching", "frontend"):
        c.add(role)
    c.start_worker()
    prom.scrape(c.metrics)
    await prom.until("count(legato_up{run})", lambda v: v == 5, "Prometheus scrapes the five processes")
    # Shards add up to num_shards, spread over both history nodes.
    await prom.until("sum(legato_shards_owned{run})", lambda v: v == NUM_SHARDS, f"{NUM_SHARDS} shards owned")
    await prom.until("count(legato_shards_owned{run} > 0)", lambda v: v == 2, "both history nodes own shards")
    await prom.until('min(legato_cluster_members{run,role="history"})', lambda v: v == 2,
                     "every process sees two history members")
    for name in ("history-1", "history-2", "matching-1", "frontend-1", "worker"):
        await eventually(functools.partial(ready, c.metrics[name]), f"{name} is ready")

    ids, sleeps = workload("metered", 30, 3)
    driver = Driver(c.address)
    await driver.run(ids, sleeps)
    assert driver.errors == []
    await check_histories(c.address, ids, driver.done)

    await prom.until('sum(legato_requests_total{run,service="history"})', lambda v: v > 0, "history requests")
    await prom.until('sum(legato_requests_total{run,service="matching"})', lambda v: v > 0, "matching requests")
    await prom.until('sum(legato_cassandra_lwts_total{run,result="applied"})', lambda v: v > 0, "LWTs applied")
    await prom.until("sum(legato_cassandra_lwt_state_transitions_count{run})", lambda v: v > 0,
                     "state transitions per LWT")
    await prom.until('sum(legato_cassandra_requests_total{run,kind="LWT shard write"})', lambda v: v > 0,
                     "Cassandra requests by kind")
    await prom.until('sum(legato_cassandra_request_statements_total{run,kind="LWT shard write"})'
                     ' - sum(legato_cassandra_requests_total{run,kind="LWT shard write"})', lambda v: v > 0,
                     "statements in those requests: a shard write carries its fence and at least one row")
    await prom.until('sum(legato_workflows_closed_total{run,status="completed"})', lambda v: v == 60,
                     "30 orders and their 30 children completed")
    await prom.until("sum(legato_kafka_produce_latency_seconds_count{run})", lambda v: v > 0, "Kafka produces")
    await prom.until("count(legato_kafka_consumer_lag{run})", lambda v: v > 0, "consumer lag per partition")
    await prom.until('sum(legato_schedule_to_start_latency_seconds_count{run,kind="workflow"})', lambda v: v > 0,
                     "workflow task schedule-to-start latency (activities start eagerly, without matching)")
    await prom.until("sum(legato_matching_backlog{run})", lambda v: v == 0, "matching's backlog drained")
    await prom.until("sum(legato_transfer_tasks_pending{run})", lambda v: v == 0, "the outboxes drained")
    # Every acquisition is a shard owned now or released since (history-1 took all 8 before
    # history-2 joined and took its half).
    balance = "sum(legato_shard_acquisitions_total{run}) - sum(legato_shard_releases_total{run})"
    await prom.until(balance, lambda v: v == NUM_SHARDS, "acquired minus released is owned")

    # Scale out: a third history node takes its share, the moves are counted on both sides.
    c.add("history")
    prom.scrape(c.metrics)
    await prom.until("count(legato_shards_owned{run} > 0)", lambda v: v == 3, "three history nodes own shards")
    await prom.until("sum(legato_shards_owned{run})", lambda v: v == NUM_SHARDS, f"still {NUM_SHARDS} shards")
    moved = prom.value('sum(legato_shards_owned{run,process="history-3"})')
    assert moved is not None and moved >= 2
    await prom.until(balance, lambda v: v == NUM_SHARDS, "acquired minus released is still owned")
    await prom.until('sum(legato_shard_releases_total{run,reason!="handover"})', lambda v: v == 0,
                     "every release was a handover (none fenced, no session lost)")
    await prom.until('sum(legato_shard_release_latency_seconds_count{run})',
                     lambda v: v == prom.value('sum(legato_shard_releases_total{run})'), "every handoff timed")
    await prom.until("sum(legato_membership_changes_total{run})", lambda v: v > 0, "membership changes")
    await eventually(lambda: http(c.metrics["history-3"], "/readyz")[0] == 200, "history-3 is ready")

    # `legato cluster describe` asks every member's /readyz.
    p = legato("cluster", "describe", "--zookeeper", c.zookeeper, "--root", c.root, "--output", "json")
    assert p.returncode == 0, p.stderr
    members = json.loads(p.stdout)["members"]
    assert {(m["role"], m["metrics_address"], m["health"]) for m in members} == {
        (name.split("-")[0], c.metrics[name], "ready") for name in c.procs}
    c.freeze("matching-1")  # its event loop stops answering: describe says so, and does not hang
    try:
        text = legato("cluster", "describe", "--zookeeper", c.zookeeper, "--root", c.root)
        assert text.returncode == 0 and "unreachable" in text.stdout, text.stdout
    finally:
        c.thaw("matching-1")
