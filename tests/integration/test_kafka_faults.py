"""The Kafka broker killed and restarted in the middle of a run of many workflows (the twin of
test_cassandra_faults): the server and the worker ride it out, every workflow completes, and no
step is recorded twice."""

from __future__ import annotations

from pathlib import Path

import yaml

from legato.config import QueuesConfig
from tests.conftest import kafka_script
from tests.integration.conftest import BASIC
from tests.integration.procs import Cluster
from tests.integration.test_cassandra_faults import run_through_a_restart


def restart_kafka() -> None:
    """SIGKILL the broker (what it acknowledged is in its log) and start it again."""
    for cmd in ("kill", "start"):
        r = kafka_script(cmd)
        assert r.returncode == 0, f"kafka.sh {cmd} failed:\n{r.stderr[-2000:]}"


def kafka_config(tmp: Path, queues: QueuesConfig) -> Path:
    p = tmp / "legato.yaml"
    p.write_text(yaml.safe_dump({
        "history": {"workflow_task_timeout_ms": 2000, "workflow_task_retry_initial_ms": 100},
        "queues": queues.model_dump(mode="json"),
    }))
    return p


def test_kafka_restart_mid_run(tmp_path: Path, kafka_queues: QueuesConfig) -> None:
    run_through_a_restart(Cluster(tmp_path, BASIC, kafka_config(tmp_path, kafka_queues)), tmp_path, restart_kafka)
