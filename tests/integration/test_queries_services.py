"""Queries (issue 14) with the services in separate processes: a frontend process reaching history
and matching (one `legato server start --role history,matching` process, the in-process task bus)
over their internal gRPC APIs, and `legato worker` processes; then the three roles in three
processes with Kafka matching. `legato workflow stack` without
--entries: answered from the sticky worker's cache, by replay on a restarted worker, and a clear
error naming the task queue when no worker polls. The app: tests/apps/queries."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from legato.config import QueuesConfig
from tests.integration.engine_harness import APPS
from tests.integration.procs import Proc, Services, free_port, legato

pytestmark = pytest.mark.timeout(180)
APP = APPS / "queries"


class Processes:
    def __init__(self, tmp: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        cluster = {"frontend_address": self.address, "history_address": f"127.0.0.1:{free_port()}",
                   "matching_address": f"127.0.0.1:{free_port()}"}
        config = tmp / "services.yaml"
        config.write_text(yaml.safe_dump({"cluster": cluster, "frontend": {"query_sticky_timeout_ms": 500,
                                                                           "query_timeout_ms": 5_000}}))
        self.backend = Proc(["server", "start", "--role", "history,matching", "--db", str(tmp / "legato.db"),
                             "--config", str(config)])
        self.frontend = Proc(["server", "start", "--role", "frontend", "--db", str(tmp / "legato.db"),
                              "--config", str(config)])
        self.worker = Proc(["worker", "--entries", str(APP), "--address", self.address, "--config", str(config)])

    def start(self) -> Processes:
        self.backend.start().wait_for("listening", 60)
        self.frontend.start().wait_for("listening", 60)
        self.worker.start().wait_for("worker polling", 60)
        return self

    def stop(self) -> None:
        for p in (self.worker, self.frontend, self.backend):
            p.stop()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return legato(*args, "--address", self.address)


def ok(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    p = Processes(tmp_path_factory.mktemp("queries"))
    try:
        yield p.start()
    finally:
        p.stop()


def stack(p: Processes, wid: str, *extra: str) -> dict[str, object]:
    report: dict[str, object] = json.loads(ok(p.cli("workflow", "stack", "--id", wid, "--output", "json", *extra)))
    return report


def waits_at(report: dict[str, object]) -> list[tuple[str, int]]:
    cos = report["coroutines"]
    assert isinstance(cos, list)
    return [(c["frames"][0]["source"], c["frames"][0]["line"]) for c in cos]


def test_stack_from_the_cache_by_replay_and_without_a_worker(procs: Processes) -> None:
    ok(procs.cli("workflow", "start", "--id", "sq1", "--type", "qs:two", "--task-queue", "qs"))
    # the run's code waits once its first workflow task completed; until then the stack is empty
    for _ in range(100):
        report = stack(procs, "sq1")
        if report["coroutines"]:
            break
    assert report["source"] == "worker-cache" and waits_at(report) == [("two.lua", 7), ("two.lua", 5)], report
    events = ok(procs.cli("workflow", "show", "--id", "sq1", "--output", "json"))

    procs.worker.stop()  # a new worker process (a new identity, an empty cache)
    procs.worker.start().wait_for("worker polling", 60)
    report = stack(procs, "sq1")
    assert report["source"] == "worker-replay" and waits_at(report) == [("two.lua", 7), ("two.lua", 5)], report
    assert ok(procs.cli("workflow", "show", "--id", "sq1", "--output", "json")) == events  # nothing written

    procs.worker.stop()
    timed_out = procs.cli("workflow", "stack", "--id", "sq1", "--timeout", "300ms")
    assert timed_out.returncode != 0 and "Traceback" not in timed_out.stderr
    assert "default/qs" in timed_out.stderr and "300 ms" in timed_out.stderr, timed_out.stderr
    replayed = stack(procs, "sq1", "--timeout", "300ms", "--entries", str(APP))  # the CLI replays it itself
    assert replayed["source"] == "client-replay" and waits_at(replayed) == [("two.lua", 7), ("two.lua", 5)]

    procs.worker.start().wait_for("worker polling", 60)
    ok(procs.cli("workflow", "signal", "--id", "sq1", "--name", "go"))
    assert json.loads(ok(procs.cli("workflow", "result", "--id", "sq1", "--timeout", "30s", "--output", "json")))


@pytest.fixture
def kafka_services(tmp_path: Path, kafka_queues: QueuesConfig) -> Iterator[Services]:
    """Frontend, history and matching (KafkaMatching) in three processes, tasks on the real Kafka
    broker: a query still goes through matching's memory, never through a topic."""
    s = Services(tmp_path, APP, kafka_queues.model_dump(mode="json"),
                 {"frontend": {"query_sticky_timeout_ms": 500, "query_timeout_ms": 5_000}})
    try:
        s.start()
        s.start_worker()
        yield s
    finally:
        s.stop()


def test_stack_with_kafka_matching_in_its_own_process(kafka_services: Services) -> None:
    def cli(*args: str) -> str:
        return ok(legato(*args, "--address", kafka_services.address))

    cli("workflow", "start", "--id", "kq1", "--type", "qs:two", "--task-queue", "qs")
    for _ in range(100):
        report = json.loads(cli("workflow", "stack", "--id", "kq1", "--output", "json"))
        if report["coroutines"]:
            break
    assert report["source"] == "worker-cache" and waits_at(report) == [("two.lua", 7), ("two.lua", 5)], report
    cli("workflow", "signal", "--id", "kq1", "--name", "go")
    cli("workflow", "result", "--id", "kq1", "--timeout", "60s")
    done = json.loads(cli("workflow", "stack", "--id", "kq1", "--output", "json"))
    assert done["status"] == "COMPLETED" and done["coroutines"] == [] and done["source"] == "worker-replay"
