from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import use_queues, use_store
from tests.integration.procs import Cluster

APPS = Path(__file__).resolve().parent.parent / "apps"
BASIC = APPS / "basic"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def fast_config(tmp: Path) -> Path:
    """Short workflow-task timeouts so lost tasks come back quickly in crash tests."""
    p = tmp / "legato.yaml"
    p.write_text("history:\n  workflow_task_timeout_ms: 2000\n  workflow_task_retry_initial_ms: 100\n")
    return p


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One server + worker for a whole test module (starting processes is slow)."""
    tmp = tmp_path_factory.mktemp("cluster")
    c = Cluster(tmp, BASIC, fast_config(tmp)).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(params=["in-process/sqlite", "grpc/sqlite", "in-process/cassandra", "in-process/sqlite/kafka"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test of the engine four ways: the worker and the test call the engine's frontend
    directly, then over its gRPC API, each on a SQLite file; then in-process on the real Cassandra
    node of the test run (an emptied keyspace); then with the tasks going through the real Kafka
    broker (topics of the test's own). See engine_harness.Harness."""
    transport, store, *queues = str(request.param).split("/")
    monkeypatch.setenv("LEGATO_TEST_GRPC", "1" if transport == "grpc" else "0")
    use_store(store, request, monkeypatch)
    use_queues(queues[0] if queues else "inprocess", request, monkeypatch)
    return str(request.param)
