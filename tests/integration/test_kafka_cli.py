"""`legato kafka setup|describe` and the Kafka flags of `legato run` / `server start-dev`, as a
user runs them, against the real broker (topics of a prefix of each test's own)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest

from legato.config import QueuesConfig
from legato.kafka_admin import delete_topics
from tests.integration.conftest import BASIC
from tests.integration.procs import free_port, legato


@pytest.fixture
async def prefix(kafka_node: str) -> AsyncIterator[str]:
    name = f"cli-{uuid.uuid4().hex[:12]}"
    yield name
    await delete_topics(QueuesConfig(kind="kafka", kafka_bootstrap=[kafka_node], topic_prefix=name))


def run(*args: str) -> tuple[int, str, str]:
    p = legato(*args, timeout=60)
    return p.returncode, p.stdout, p.stderr


def test_setup_makes_the_topics_once_and_describe_shows_them(kafka_node: str, prefix: str) -> None:
    code, out, err = run("kafka", "setup", "--bootstrap", kafka_node, "--prefix", prefix)
    assert code == 0, err
    assert out.startswith("created Kafka topics") and f"{prefix}.workflow-tasks (8 partitions)" in out
    assert f"{prefix}.timers (4 partitions)" in out and len(out.splitlines()) == 1
    code, out, err = run("kafka", "setup", "--bootstrap", kafka_node, "--prefix", prefix)
    assert code == 0, err
    assert out.strip() == f"Kafka topics of prefix {prefix} exist at {kafka_node}; nothing to do"
    code, out, err = run("kafka", "describe", "--bootstrap", kafka_node, "--prefix", prefix, "--output", "json")
    assert code == 0, err
    topics = {t["topic"]: t for t in json.loads(out)}
    assert len(topics[f"{prefix}.activity-tasks"]["partitions"]) == 8
    assert all(t["exists"] for t in topics.values())


def test_a_run_on_kafka_commits_what_it_consumed(kafka_node: str, prefix: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("kafka", "setup", "--bootstrap", kafka_node, "--prefix", prefix)[0] == 0
    monkeypatch.setenv("LEGATO_QUEUES__TOPIC_PREFIX", prefix)
    code, out, err = run("run", "--entries", str(BASIC), "basic:hello", "--input", '"Ada"', "--queues", "kafka",
                         "--kafka-bootstrap", kafka_node)
    assert code == 0, err
    assert json.loads(out) == {"greeting": "hello, Ada"}
    code, out, err = run("kafka", "describe", "--bootstrap", kafka_node)
    assert code == 0, err
    assert f"{prefix}.matching at" in out and "(lag 0)" in out
    assert "lag 1" not in out


def test_unreachable_broker_and_bad_flags_are_one_line_errors(prefix: str) -> None:
    port = free_port()
    code, out, err = run("kafka", "setup", "--bootstrap", f"127.0.0.1:{port}", "--prefix", prefix)
    assert code == 3 and out == ""
    assert err.strip() == err.strip().splitlines()[0] and f"cannot reach Kafka at 127.0.0.1:{port}" in err
    code, _, err = run("kafka", "describe", "--prefix", "no spaces allowed")
    assert code == 3 and "topic_prefix" in err


def test_missing_topics_or_other_partition_counts_are_refused(
        kafka_node: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGATO_QUEUES__TOPIC_PREFIX", prefix)
    code, _, err = run("server", "start-dev", "--port", "0", "--queues", "kafka", "--kafka-bootstrap", kafka_node)
    assert code == 3
    assert f"legato kafka setup --bootstrap {kafka_node} --prefix {prefix}" in err and "Traceback" not in err
    code, out, err = run("kafka", "describe", "--bootstrap", kafka_node)
    assert code == 3 and f"{prefix}.workflow-tasks: missing" in out
    assert run("kafka", "setup", "--bootstrap", kafka_node)[0] == 0
    monkeypatch.setenv("LEGATO_QUEUES__TASK_PARTITIONS", "2")
    code, _, err = run("kafka", "setup", "--bootstrap", kafka_node)
    assert code == 3 and "has 8 partitions, the configuration says 2" in err


@pytest.mark.parametrize("mode", [[], ["--processes"]], ids=["in-process", "processes"])
def test_bench_hello_on_kafka(kafka_node: str, prefix: str, monkeypatch: pytest.MonkeyPatch, mode: list[str]) -> None:
    assert run("kafka", "setup", "--bootstrap", kafka_node, "--prefix", prefix)[0] == 0
    monkeypatch.setenv("LEGATO_QUEUES__TOPIC_PREFIX", prefix)
    code, out, err = run("bench", "hello", "--workflows", "5", "--queues", "kafka", "--kafka-bootstrap", kafka_node,
                         *mode)
    assert code == 0, err
    assert "5 workflows in" in out and "0 failed" in out, out
    code, out, err = run("kafka", "describe", "--bootstrap", kafka_node)
    assert code == 0 and f"{prefix}.matching at" in out, out + err
