"""`legato bench cassandra-profile` records the test run's Cassandra node with Java Flight Recorder
and splits its CPU by what the samples' stacks show."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from history.store.base import CurrentRunRow, CurrentRunWrite, RunWrite, ShardWrite
from history.store.cassandra import CassandraStore
from legato.bench_cassandra import default_pidfile, jvm_process
from legato.cassandra_profile import CATEGORIES, REQUEST_THREADS, profile_node
from legato.cli.main import main
from legato.config import StoreConfig

NS = "ns"
RECORD_S = 4.0  # long enough for tens of samples of a busy node
LANES = 8  # shards written at once (a shard writes one batch at a time)
LWT = [name for name, _ in CATEGORIES if name.startswith("LWT")]

pytestmark = pytest.mark.skipif(bool(os.environ.get("LEGATO_TEST_CASSANDRA")),
                                reason="the node is not this run's (LEGATO_TEST_CASSANDRA): no pid to record")


async def test_a_node_busy_with_conditional_writes_spends_its_cpu_on_paxos(cassandra: StoreConfig,
                                                                             tmp_path: Path) -> None:
    store = CassandraStore(cassandra)
    await store.open()
    written = 0
    try:
        shards = [await store.acquire_shard(shard, "profiled") for shard in range(LANES)]
        recording = tmp_path / "node.jfr"
        profiling = asyncio.create_task(profile_node(jvm_process(None, default_pidfile()), RECORD_S, recording))

        async def lane(shard: int, range_id: int) -> None:
            nonlocal written
            i = 0
            while not profiling.done():  # conditional batches, one after another, until the recording ends
                wid = f"wf-{shard}-{i}"
                await store.write(ShardWrite(shard, range_id, [RunWrite(NS, wid, "r", 2, "{}", None)],
                                             [CurrentRunWrite(CurrentRunRow(NS, wid, "r", "running"), None)]))
                i += 1
                written += 1

        await asyncio.gather(*(lane(info.shard_id, info.range_id) for info in shards))
        profile = await profiling
    finally:
        await store.close()
    assert written > 10 and recording.stat().st_size > 0  # the recording is kept where asked
    assert profile.cpu_s > 0 and profile.seconds >= RECORD_S
    requests = profile.samples[REQUEST_THREADS]  # the request threads ran little but Paxos rounds
    lwt = sum(requests[c] for c in LWT)
    assert lwt >= max((n for c, n in requests.items() if c not in LWT), default=0) and lwt > 0
    split = profile.category_cpu_s()
    assert 0.95 * profile.cpu_s <= sum(split.values()) <= 1.05 * profile.cpu_s + 0.1
    assert sum(split[c] for c in LWT if c in split) > 0
    out = profile.to_json()
    assert set(out["categories"]) == set(split) and out["samples"] == profile.total_samples
    assert "LWT: Paxos" in profile.text()


def test_a_pid_that_is_no_process_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "cassandra-profile", "--pid", "999999999", "--seconds", "1"]) == 3
    err = capsys.readouterr().err
    assert "cannot read the CPU time of process 999999999" in err and "Traceback" not in err


def test_a_process_that_is_no_jvm_is_refused_and_left_alone(capsys: pytest.CaptureFixture[str]) -> None:
    # jcmd would ask it to attach with SIGQUIT, which ends a process that is no JVM
    other = subprocess.Popen(["sleep", "60"])
    try:
        assert main(["bench", "cassandra-profile", "--pid", str(other.pid), "--seconds", "1"]) == 3
        err = capsys.readouterr().err
        assert f"process {other.pid} runs 'sleep', not a Java virtual machine" in err and "Traceback" not in err
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_no_jdk_tools_on_the_path_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # the node runs on; jcmd and jfr are not to be found
    assert main(["bench", "cassandra-profile", "--pidfile", str(default_pidfile()), "--seconds", "1"]) == 3
    err = capsys.readouterr().err
    assert "`jcmd` (the JDK's) is not on PATH" in err and "Traceback" not in err
