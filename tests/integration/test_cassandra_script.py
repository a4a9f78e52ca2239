"""deploy/cassandra/cassandra.sh refuses a bad setting of its environment with one line naming
it, before it touches the node (so these run whether a node is up or not)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import CASSANDRA_SH


@pytest.mark.parametrize(("name", "value", "says"), [
    ("CASSANDRA_COMMITLOG_SYNC", "batch", "it can be group (the default) or periodic"),
    ("CASSANDRA_COMMITLOG_GROUP_WINDOW", "10", "it is a duration such as 2ms or 1s"),
    ("CASSANDRA_COMMITLOG_GROUP_WINDOW", "2ms: x", "it is a duration such as 2ms or 1s"),
])
def test_a_bad_commit_log_setting_is_refused_with_one_line(name: str, value: str, says: str) -> None:
    r = subprocess.run(["bash", str(CASSANDRA_SH), "status"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, name: value})
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{name} is '{value}'" in lines[0] and says in lines[0], r.stderr
