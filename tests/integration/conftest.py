from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture(params=["in-process", "grpc"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test of the in-process engine twice: the worker and the test call the engine's
    frontend directly, then over its gRPC API (see engine_harness.Harness)."""
    monkeypatch.setenv("LEGATO_TEST_GRPC", "1" if request.param == "grpc" else "0")
    return str(request.param)
