"""`legato load --address` against a real cluster: two history nodes, a matching and a frontend
process (`server start --role ... --zookeeper`) on Cassandra, Kafka and ZooKeeper, and a worker on
the load app. Each scenario at a small size with its report and plot; a children run stopped and
resumed (the generator reattaches to its root workflow); a mix run stopped and resumed (from its
state file beside the report); failures counted and listed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from legato.config import QueuesConfig, StoreConfig
from legato.load.app import write_app
from tests.integration.cluster_procs import ClusterProcs
from tests.integration.procs import legato
from tests.integration.test_load import PNG_SIGNATURE
from tests.zookeeper_fixtures import zk_root

NUM_SHARDS = 4
LOAD_TIMEOUT_S = 180  # safety net of one `legato load` run (a few seconds each here)
VISIBLE_WITHIN_S = 30  # safety net of the wait for visibility to show the closed leaves


@pytest.fixture
def load_cluster(tmp_path: Path, zookeeper_node: str, cassandra: StoreConfig,
                 kafka_queues: QueuesConfig) -> Iterator[ClusterProcs]:
    queues = kafka_queues.model_dump(mode="json")
    queues["matching_session_timeout_ms"] = 3000
    c = ClusterProcs(tmp_path, write_app(tmp_path / "app"), zookeeper_node, zk_root(),
                     cassandra.model_dump(mode="json"), queues, num_shards=NUM_SHARDS)
    try:
        for role in ("history", "history", "matching", "frontend"):
            c.add(role)
        c.start_worker()
        yield c
    finally:
        c.stop()


def _load(c: ClusterProcs, out: Path, *args: str, expect: int = 0) -> dict[str, Any]:
    """Run `legato load ARGS --address` (its report and plot in `out`); the report."""
    out.mkdir()
    report, plot = out / "report.json", out / "plot.png"
    r = legato("load", *args, "--address", c.address, "--config", str(c.config), "--report", str(report),
               "--plot", str(plot), "--interval", "0.2s", timeout=LOAD_TIMEOUT_S)
    assert r.returncode == expect, r.stdout + r.stderr
    data = json.loads(report.read_text())
    assert data["mode"] == f"server at {c.address}, gRPC", data["mode"]
    assert plot.read_bytes().startswith(PNG_SIGNATURE) and plot.stat().st_size > 1000
    assert data["series"] and data["series"][-1]["rss_bytes"].get("load", 0) > 0, data["series"][-1:]
    return data


def _leaf_counts(c: ClusterProcs, run_id: str) -> dict[str, int]:
    """Visibility's count of the run's leaves by status, through the cluster's frontend."""
    query = (f"WorkflowType = 'load:leaf' AND WorkflowId >= '{run_id}-' AND WorkflowId < '{run_id}.' "
             "GROUP BY ExecutionStatus")
    r = legato("workflow", "count", "--query", query, "--address", c.address, "--output", "json", timeout=60)
    assert r.returncode == 0, r.stderr
    groups: dict[str, int] = json.loads(r.stdout)["groups"]
    return groups


def _assert_leaves_completed(c: ClusterProcs, run_id: str, n: int) -> None:
    """Visibility shows exactly `n` leaves of the run, every one completed (its upserts are written
    after each change, so this polls until they are in, with VISIBLE_WITHIN_S as the safety net)."""
    deadline = time.monotonic() + VISIBLE_WITHIN_S
    while (counts := _leaf_counts(c, run_id)) != {"COMPLETED": n}:
        assert time.monotonic() < deadline, f"visibility shows {counts}, not {n} completed leaves"
        time.sleep(0.2)  # polling a condition, not a synchronisation


@pytest.mark.timeout(600)
def test_every_scenario_completes_against_a_cluster(load_cluster: ClusterProcs, tmp_path: Path) -> None:
    c = load_cluster
    data = _load(c, tmp_path / "children", "children", "--total", "40", "--fanout", "10", "--window", "4",
                 "--per-run", "6")
    assert data["completed"] == 40 and data["failed"] == 0 and data["failures"] == [] and data["finished"], data
    assert data["p99_ms"] >= data["p50_ms"] > 0
    _assert_leaves_completed(c, data["run_id"], 40)

    data = _load(c, tmp_path / "mix", "mix", "--total", "4", "--concurrency", "2", "--sleep", "50ms")
    assert data["completed"] == 4 and data["failed"] == 0 and data["finished"], data
    assert not list((tmp_path / "mix").glob("*.load-state.json"))  # a finished run leaves no state behind

    data = _load(c, tmp_path / "timers", "timers", "--total", "3", "--timers", "10", "--max-timer", "200ms",
                 "--rate", "20")
    assert data["completed"] == 3 and data["failed"] == 0 and data["finished"], data

    data = _load(c, tmp_path / "idle", "idle", "--total", "10", "--hold", "0.5s")
    assert data["started"] == 10 and data["completed"] == 10 and data["failed"] == 0, data
    assert max(s["open"] for s in data["series"]) == 10  # sampled while all were open


@pytest.mark.timeout(600)
def test_stopped_runs_resume_against_a_cluster_and_failures_are_counted(load_cluster: ClusterProcs,
                                                                        tmp_path: Path) -> None:
    c = load_cluster
    first = _load(c, tmp_path / "children", "children", "--total", "30", "--fanout", "10", "--window", "3",
                  "--concurrency", "1", "--stop-after", "5")
    assert not first["finished"] and first["stopped"] == "stop-after" and first["completed"] < 30, first
    command = first["resume_command"].split()
    assert command[:5] == ["legato", "load", "children", "--resume", first["run_id"]], command
    assert "--address" in command, command
    r = legato(*command[1:], "--output", "json", "--interval", "0.2s", timeout=LOAD_TIMEOUT_S)
    assert r.returncode == 0, r.stdout + r.stderr
    final = json.loads(r.stdout)
    assert final["finished"] and final["resumed"] and final["completed"] == 30 and final["failed"] == 0, final
    _assert_leaves_completed(c, first["run_id"], 30)  # each leaf ran once, none twice

    first = _load(c, tmp_path / "mix", "mix", "--total", "8", "--concurrency", "2", "--sleep", "50ms",
                  "--stop-after", "2")
    assert not first["finished"] and first["stopped"] == "stop-after", first
    assert list((tmp_path / "mix").glob(f"{first['run_id']}.load-state.json"))
    r = legato(*first["resume_command"].split()[1:], "--output", "json", "--interval", "0.2s",
               timeout=LOAD_TIMEOUT_S)
    assert r.returncode == 0, r.stdout + r.stderr
    final = json.loads(r.stdout)
    assert final["finished"] and final["resumed"] and final["completed"] == 8 and final["failed"] == 0, final

    data = _load(c, tmp_path / "fail", "children", "--total", "6", "--fanout", "3", "--child-work", "fail",
                 expect=1)
    assert data["failed"] == 6 and data["completed"] == 0 and len(data["failures"]) == 6, data
    assert all("failed on purpose" in f["message"] for f in data["failures"]), data["failures"]
