"""Cassandra killed and restarted in the middle of a run of many workflows: the server and the
worker ride it out, every workflow completes, and no step is recorded twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from history.store.cql import connect
from legato.api import ExecutionRef
from legato.client import GrpcClient
from legato.config import StoreConfig
from legato.errors import Unavailable
from tests.conftest import cassandra_script
from tests.integration.conftest import BASIC, fast_config
from tests.integration.histories import assert_steps_recorded_once
from tests.integration.procs import Cluster
from tests.integration.test_crash import EXPECTED_TOTAL, STEPS, collect, running, start_all


def store_args(cfg: StoreConfig) -> list[str]:
    return ["--store", "cassandra", "--cassandra-hosts", ",".join(cfg.cassandra_hosts),
            "--keyspace", cfg.cassandra_keyspace]


def restart_cassandra() -> None:
    """SIGKILL the node (acknowledged writes are in its synced commit log) and start it again."""
    for cmd in ("kill", "start"):
        r = cassandra_script(cmd)
        assert r.returncode == 0, f"cassandra.sh {cmd} failed:\n{r.stderr[-2000:]}"


async def until_served(address: str, wid: str, within_s: float = 60.0) -> None:
    """Wait until the server answers from Cassandra again (its driver reconnects on its own);
    polling with a short pause, as a client would: the server offers no event to wait on."""
    deadline = time.monotonic() + within_s
    async with GrpcClient(address) as c:
        while True:
            try:
                await c.describe_workflow(ExecutionRef(wid))
                return
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


def run_through_a_restart(c: Cluster, tmp_path: Path, restart: Callable[[], None]) -> None:
    """Start workflows on `c`, `restart` a component mid-run; every workflow must complete with
    each step recorded once, the server and the worker alive throughout."""
    c.start()
    try:
        ids = asyncio.run(start_all(c.address))
        # The restart must hit workflows in the middle of their run, or this proves nothing.
        assert asyncio.run(running(c.address, ids)) > 0
        restart()
        assert c.server.alive(), c.server.output()
        assert c.worker.alive(), c.worker.output()
        asyncio.run(until_served(c.address, ids[0]))
        done = asyncio.run(collect(c.address, ids))
    finally:
        c.stop()
        (tmp_path / "server.log").write_text(c.server.output())  # for whoever reads a failure
        (tmp_path / "worker.log").write_text(c.worker.output())
    for wid, (result, events) in done.items():
        assert result == {"total": EXPECTED_TOTAL, "n": STEPS, "ids": STEPS}, wid
        assert_steps_recorded_once(events)


def test_cassandra_restart_mid_run(tmp_path: Path, cassandra: StoreConfig) -> None:
    run_through_a_restart(Cluster(tmp_path, BASIC, fast_config(tmp_path), store_args(cassandra)), tmp_path,
                          restart_cassandra)


def test_the_node_acknowledges_only_synced_writes_of_a_compressed_commit_log(cassandra_node: StoreConfig) -> None:
    """What the restart above and the README's cost figures rest on, read from the running node:
    a write is acknowledged once its commit log is synced (`group`), and the log is LZ4-compressed
    (written and fdatasync'ed rather than a memory-mapped segment flushed whole on every sync).
    A connection of its own: the run's shared session may still be reconnecting after the restart."""
    cluster, session = connect(cassandra_node)
    try:
        settings = {r.name: r.value for r in session.execute("SELECT name, value FROM system_views.settings")}
    finally:
        cluster.shutdown()
    assert settings.get("commitlog_sync") == "group"
    assert settings.get("commitlog_compression.class_name") == "LZ4Compressor"
