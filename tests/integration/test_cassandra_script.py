"""deploy/cassandra/cassandra.sh refuses a bad setting of its environment with one line naming
it, before it touches the node (so these run whether a node is up or not), and starts the node with
the timer slack it is given."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from legato.config import StoreConfig
from tests.conftest import CASSANDRA_SH, ROOT


@pytest.mark.parametrize(("name", "value", "says"), [
    ("CASSANDRA_COMMITLOG_SYNC", "batch", "it can be group (the default) or periodic"),
    ("CASSANDRA_COMMITLOG_GROUP_WINDOW", "10", "it is a duration such as 2ms or 1s"),
    ("CASSANDRA_COMMITLOG_GROUP_WINDOW", "2ms: x", "it is a duration such as 2ms or 1s"),
    ("CASSANDRA_TIMER_SLACK", "500", "it is a duration such as 500us or 1ms"),
    ("CASSANDRA_TIMER_SLACK", "0.5ms", "it is a duration such as 500us or 1ms"),
    ("CASSANDRA_TIMER_SLACK", "11ms", "at most 10ms"),
])
def test_a_bad_setting_is_refused_with_one_line(name: str, value: str, says: str) -> None:
    r = subprocess.run(["bash", str(CASSANDRA_SH), "status"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, name: value})
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{name} is '{value}'" in lines[0] and says in lines[0], r.stderr


def test_the_node_runs_with_the_timer_slack_it_was_given(cassandra_node: StoreConfig) -> None:
    """Every thread of the node, the shared pool's workers too, sleeps with the script's default timer
    slack (500us): the kernel passes it from the script's shell to java and from thread to thread."""
    if os.environ.get("LEGATO_TEST_CASSANDRA") or os.environ.get("CASSANDRA_TIMER_SLACK"):
        pytest.skip("the node was started elsewhere or with a slack of its own")
    deploy = Path(os.environ.get("LEGATO_DEPLOY_DIR", ROOT / ".deploy"))
    pid = (deploy / "cassandra" / "cassandra.pid").read_text().strip()
    slack = {}
    for thread in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            slack[thread.name] = Path(f"/proc/{thread.name}/timerslack_ns").read_text().strip()
    assert len(slack) > 20 and set(slack.values()) == {"500000"}, (
        f"the node (pid {pid}) runs with the timer slacks {sorted(set(slack.values()))} ns; a node started "
        "before cassandra.sh set it keeps the kernel's 50000 until restarted")
