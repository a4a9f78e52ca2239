"""`legato bench hello`: in one process, and as a server and a worker process over gRPC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from legato.config import StoreConfig
from tests.integration.procs import Cluster, legato


@pytest.mark.parametrize("mode", [[], ["--processes"]], ids=["in-process", "processes"])
def test_bench_hello_runs_and_reports_throughput(mode: list[str]) -> None:
    r = legato("bench", "hello", "--workflows", "5", *mode, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "5 workflows in" in r.stdout and "workflows/s" in r.stdout, r.stdout
    assert "0 failed" in r.stdout, r.stdout


def test_bench_hello_json_output_processes() -> None:
    r = legato("bench", "hello", "--workflows", "3", "--processes", "--output", "json", timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["workflows"] == 3 and report["failed"] == 0 and report["workflows_per_second"] > 0
    assert report["p99_ms"] >= report["p50_ms"] > 0


def test_bench_hello_drives_a_running_server(tmp_path: Path) -> None:
    """--entries-dir writes the bench app; a worker runs it; --address drives that server."""
    entries = tmp_path / "bench-app"
    r = legato("bench", "hello", "--workflows", "1", "--entries-dir", str(entries), timeout=120)
    assert r.returncode == 0, r.stderr
    assert (entries / "hello.yaml").is_file()
    c = Cluster(tmp_path, entries).start()
    try:
        for _ in range(2):  # a second run on the same server does not collide with the first one's ids
            r = legato("bench", "hello", "--workflows", "4", "--address", c.address, timeout=120)
            assert r.returncode == 0, r.stderr
            assert "4 workflows in" in r.stdout and "0 failed" in r.stdout, r.stdout
    finally:
        c.stop()


def test_bench_rejects_processes_with_address() -> None:
    r = legato("bench", "hello", "--processes", "--address", "127.0.0.1:1", timeout=60)
    assert r.returncode == 3
    assert "choose one" in r.stderr


def test_bench_reports_a_server_that_does_not_start(tmp_path: Path) -> None:
    r = legato("bench", "hello", "--workflows", "2", "--processes", "--db", str(tmp_path / "no" / "such" / "x.db"),
               timeout=120)
    assert r.returncode == 3, r.stdout
    assert "server exited with status" in r.stderr and "before it was ready" in r.stderr, r.stderr


def test_bench_hello_sleep_reports_timer_lag() -> None:
    r = legato("bench", "hello", "--workflows", "3", "--sleep", "50ms", "--output", "json", timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["failed"] == 0
    assert report["timer_lag_p99_ms"] >= report["timer_lag_p50_ms"] >= 0  # never before the due time
    plain = legato("bench", "hello", "--workflows", "1", "--output", "json", timeout=120)
    assert json.loads(plain.stdout)["timer_lag_p50_ms"] is None  # no timer, no lag


def test_bench_hello_rejects_a_bad_sleep() -> None:
    r = legato("bench", "hello", "--workflows", "1", "--sleep", "soon", timeout=60)
    assert r.returncode == 3 and "--sleep" in r.stderr and "not a duration" in r.stderr, r.stderr


def test_bench_hello_on_cassandra_counts_lwts(cassandra: StoreConfig) -> None:
    r = legato("bench", "hello", "--workflows", "4", "--store", "cassandra", "--cassandra-hosts",
               ",".join(cassandra.cassandra_hosts), "--keyspace", cassandra.cassandra_keyspace, "--output", "json",
               timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["failed"] == 0 and report["lwts"] > 0
    assert report["transitions"] >= 4 * 3  # start, workflow task, activity, close: several per workflow
