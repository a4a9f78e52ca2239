"""`legato bench cassandra-cost` says what is wrong when it cannot find the Cassandra JVM (the
measurement itself runs against the real node: tests/integration/test_cassandra_stats.py covers
the counts it reports)."""

from __future__ import annotations

from pathlib import Path

import pytest

from legato.cli.main import main


def test_no_cassandra_pid_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "cassandra-cost", "--pidfile", str(tmp_path / "none.pid")]) == 3
    err = capsys.readouterr().err
    assert "cannot read the Cassandra pid from" in err and "deploy/cassandra/cassandra.sh start" in err
    assert "Traceback" not in err


def test_a_pid_that_is_no_process_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "cassandra-cost", "--pid", "999999999"]) == 3
    assert "cannot read the CPU time of process 999999999" in capsys.readouterr().err
