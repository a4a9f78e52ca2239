"""Fixtures shared by every test directory: the real Cassandra node of the test run.

The node is started once per test run by the project's own script (deploy/cassandra/cassandra.sh)
and stopped at the end if this run started it; LEGATO_TEST_CASSANDRA=host:port uses a node that
is already running instead. Tests share one keyspace, set up once and truncated before each test
that asks for it, because creating a keyspace costs about a second and truncating it a fraction.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from legato.config import QueuesConfig, StoreConfig

if TYPE_CHECKING:
    from history.store.base import ExecutionStore
    from history.store.cql import Cql

pytest_plugins = ["tests.zookeeper_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
CASSANDRA_SH = ROOT / "deploy" / "cassandra" / "cassandra.sh"
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
PROMETHEUS_SH = ROOT / "deploy" / "prometheus" / "prometheus.sh"
TEST_KEYSPACE = "legato_test"
# How long the run-wide Cassandra session gets to reconnect after a test restarted the node, in s
# (its reconnection policy backs off to 5 s between attempts).
NODE_RECONNECT_S = 60.0
# The store of the engines a test starts: a StoreConfig as JSON; absent: SQLite. Set by the
# fixtures that run a test on each store (`history_store` here, `transport` for integration tests).
STORE_ENV = "LEGATO_TEST_STORE"
# The task queues of the engines a test starts: a QueuesConfig as JSON; absent: the in-process
# bus. Set by `use_queues` (the `transport` fixture of the integration tests).
QUEUES_ENV = "LEGATO_TEST_QUEUES"


def cassandra_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CASSANDRA_SH), *args], capture_output=True, text=True, timeout=300)


def kafka_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(KAFKA_SH), *args], capture_output=True, text=True, timeout=300)


@contextlib.contextmanager
def _node_for_run(script: Callable[..., subprocess.CompletedProcess[str]], path: Path, given_env: str,
                  keep_env: str) -> Iterator[str]:
    """The address `given_env` names, or "" after starting the node with its deploy script if it is
    not running; a node this run started is stopped afterwards (unless `keep_env` is set)."""
    given = os.environ.get(given_env, "")
    started = False
    if not given and script("status").returncode != 0:
        r = script("start")
        if r.returncode != 0:
            pytest.fail(f"could not start the server with {path}:\n{r.stderr[-3000:]}")
        started = True
    try:
        yield given
    finally:
        if started and not os.environ.get(keep_env):
            script("stop")


@pytest.fixture(scope="session")
def kafka_node() -> Iterator[str]:
    """The bootstrap address of the test run's Kafka broker: LEGATO_TEST_KAFKA=host:port names a
    running one; otherwise deploy/kafka/kafka.sh starts one (stopped at the end if this run
    started it). Tests keep apart by using topic prefixes of their own."""
    with _node_for_run(kafka_script, KAFKA_SH, "LEGATO_TEST_KAFKA", "LEGATO_TEST_KEEP_KAFKA") as given:
        yield given or "127.0.0.1:9092"


@pytest.fixture
async def kafka_queues(kafka_node: str) -> AsyncIterator[QueuesConfig]:
    """A QueuesConfig (kind kafka) with topics of its own (a fresh prefix), deleted after the test.
    Few partitions and frequent commits: quick to make, quick to observe."""
    from legato.kafka import create_topics
    from legato.kafka_admin import delete_topics, wait_for_topics

    cfg = QueuesConfig(kind="kafka", kafka_bootstrap=[kafka_node], topic_prefix=f"test-{uuid.uuid4().hex[:12]}",
                       task_partitions=4, timer_partitions=2, commit_interval_ms=50)
    await create_topics(cfg)
    await wait_for_topics(cfg)
    try:
        yield cfg
    finally:
        await delete_topics(cfg)


def use_queues(kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the engines this test starts use `kind` ("inprocess", or "kafka": fresh topics)."""
    if kind == "kafka":
        cfg: QueuesConfig = request.getfixturevalue("kafka_queues")
        monkeypatch.setenv(QUEUES_ENV, cfg.model_dump_json())
    else:
        monkeypatch.delenv(QUEUES_ENV, raising=False)


def queues_config_from_env() -> QueuesConfig | None:
    """The Kafka QueuesConfig the running test asked for, or None for the in-process bus."""
    raw = os.environ.get(QUEUES_ENV)
    return QueuesConfig.model_validate_json(raw) if raw else None


def prometheus_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(PROMETHEUS_SH), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def prometheus_node() -> Iterator[tuple[str, Path]]:
    """The test run's Prometheus server ("http://127.0.0.1:9090", LEGATO_TEST_PROMETHEUS names
    another) and the folder of its scrape targets (file_sd JSON files, read as they change);
    deploy/prometheus/prometheus.sh starts it, and it is stopped at the end if this run started it."""
    with _node_for_run(prometheus_script, PROMETHEUS_SH, "LEGATO_TEST_PROMETHEUS", "LEGATO_TEST_KEEP_PROMETHEUS") \
            as given:
        targets = Path(prometheus_script("targets").stdout.strip())
        yield (f"http://{given}" if given else "http://127.0.0.1:9090"), targets


@pytest.fixture(scope="session")
def cassandra_node() -> Iterator[StoreConfig]:
    """A StoreConfig (kind cassandra) pointing at the test run's node; keyspace not yet made."""
    with _node_for_run(cassandra_script, CASSANDRA_SH, "LEGATO_TEST_CASSANDRA", "LEGATO_TEST_KEEP_CASSANDRA") as given:
        yield StoreConfig(kind="cassandra", cassandra_hosts=[given or "127.0.0.1"], cassandra_keyspace=TEST_KEYSPACE)


@pytest.fixture(scope="session")
async def cassandra_admin(cassandra_node: StoreConfig) -> AsyncIterator[Cql]:
    """One driver session for the whole run (schema set up on first use), for fixtures and for
    tests that inspect the keyspace directly."""
    from history.store.cassandra_schema import SCHEMA_VERSION, read_schema_version, setup_schema, upgrade_schema
    from history.store.cql import Cql, connect

    cluster, session = await asyncio.to_thread(connect, cassandra_node)
    try:
        cql = Cql(session)
        found = await read_schema_version(cql, TEST_KEYSPACE)
        if found is not None and found < SCHEMA_VERSION:  # a node kept from a run of an older build
            await upgrade_schema(cql, TEST_KEYSPACE)
        await setup_schema(cql, TEST_KEYSPACE, replication_factor=1)
        yield cql
    finally:
        await asyncio.to_thread(cluster.shutdown)


@pytest.fixture
async def cassandra(cassandra_node: StoreConfig, cassandra_admin: Cql) -> StoreConfig:
    """The test keyspace, emptied: a StoreConfig ready for CassandraStore / Engine."""
    from cassandra.cluster import NoHostAvailable

    from history.store.cassandra_schema import truncate_all

    # A test before this one may have killed and restarted the node (test_cassandra_faults): the
    # run-wide session then finds its connection defunct once, and its driver reconnects on its
    # own, offering no event to wait on; so retry, as a client would, until the deadline.
    deadline = time.monotonic() + NODE_RECONNECT_S
    while True:
        try:
            await truncate_all(cassandra_admin, TEST_KEYSPACE)
            break
        except NoHostAvailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    return cassandra_node.model_copy()


def use_store(kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the engines this test starts use `kind` ("sqlite" or "cassandra": the emptied test keyspace)."""
    if kind == "cassandra":
        cfg: StoreConfig = request.getfixturevalue("cassandra")
        monkeypatch.setenv(STORE_ENV, cfg.model_dump_json())
    else:
        monkeypatch.delenv(STORE_ENV, raising=False)


def store_config_from_env() -> StoreConfig | None:
    """The Cassandra StoreConfig the running test asked for, or None for SQLite."""
    raw = os.environ.get(STORE_ENV)
    return StoreConfig.model_validate_json(raw) if raw else None


@pytest.fixture(params=["sqlite", "cassandra"])
def history_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test of the history service once on SQLite and once on the real Cassandra node."""
    use_store(str(request.param), request, monkeypatch)
    return str(request.param)


@pytest.fixture
async def shard_store(history_store: str, tmp_path: Path) -> AsyncIterator[ExecutionStore]:
    """An execution store, opened: a SQLite file, then the real Cassandra node (`history_store`)."""
    from history.store.cassandra import CassandraStore
    from history.store.sqlite import SqliteStore

    cfg = store_config_from_env()
    s: ExecutionStore = CassandraStore(cfg) if cfg is not None else SqliteStore(str(tmp_path / "shard.db"))
    await s.open()
    try:
        yield s
    finally:
        await s.close()
