"""The request counts of history/store/cql.py (what `legato bench cassandra-cost` reports) and the
bench's errors when it cannot find the Cassandra JVM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cassandra.query import SimpleStatement

from history.store.cql import StatementStats, default_kind
from legato.bench import BenchError
from legato.bench_cassandra import jvm_process


@pytest.mark.parametrize(("text", "kind"), [
    ("SELECT a FROM ks.runs WHERE x = ?", "select runs"),
    ("SELECT COUNT(*) FROM ks.visibility_runs WHERE a = ?", "select visibility_runs"),
    ("INSERT INTO ks.t (a) VALUES (?) IF NOT EXISTS", "insert t IF"),
    ("INSERT INTO t (a) VALUES (?)", "insert t"),
    ("UPDATE ks.t SET a = ? WHERE b = ? IF a = ?", "update t IF"),
    ("DELETE FROM ks.t WHERE a = ?", "delete t"),
    ("TRUNCATE ks.t", "truncate t"),
    ("CREATE TABLE IF NOT EXISTS ks.t (a int PRIMARY KEY)", "create"),
    ("", "batch"),
])
def test_a_statement_without_a_label_is_counted_by_verb_and_table(text: str, kind: str) -> None:
    assert default_kind(text) == kind


def test_stats_count_requests_and_keep_a_bounded_sample() -> None:
    stats = StatementStats()
    for i in range(10):
        stats.record("read run", SimpleStatement(f"SELECT {i}"))
    assert stats.counts() == {"read run": (10, 10)} and stats.kinds["read run"].samples == []
    stats.sample = 3
    for i in range(50):
        stats.record("read run", SimpleStatement(f"SELECT {i}"))
    samples = stats.kinds["read run"].samples
    assert stats.counts()["read run"] == (60, 60) and len(samples) == 3
    assert len({s.query_string for s in samples}) == 3  # three different requests of the 50


def test_a_missing_pidfile_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"cannot read the Cassandra pid from .*cassandra\.sh start"):
        jvm_process(None, tmp_path / "cassandra.pid")


def test_a_pid_that_names_no_process_is_one_clear_error(tmp_path: Path) -> None:
    pidfile = tmp_path / "cassandra.pid"
    pidfile.write_text("999999999\n")
    with pytest.raises(BenchError, match="cannot read the CPU time of process 999999999"):
        jvm_process(None, pidfile)
    assert jvm_process(os.getpid(), pidfile).pid == os.getpid()  # --pid wins over the file
