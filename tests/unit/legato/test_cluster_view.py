"""`Node.cluster_view`: what the web UI's cluster page shows (GET /api/v1/cluster), for a process
of a cluster (members and shard owners from its ZooKeeper view) and for one that is alone."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from legato.config import Config
from legato.membership import Assignment, ClusterView, MemberInfo
from legato.roles import FRONTEND, HISTORY, MATCHING, Node


def _member(identity: str, **roles: str) -> MemberInfo:
    return MemberInfo(identity, roles, metrics_address="", started_ms=1, host="h", pid=7)


async def test_a_cluster_member_shows_the_view_of_zookeeper() -> None:
    config = Config()
    config.history.num_shards = 4
    node = Node(config, frozenset({FRONTEND}), identity="frontend-1")
    view = ClusterView()
    view.members = {"frontend-1": _member("frontend-1", frontend="10.0.0.1:7233"),
                    "history-1": _member("history-1", history="10.0.0.2:7234"),
                    "history-2": _member("history-2", history="10.0.0.3:7234"),
                    "matching-1": _member("matching-1", matching="10.0.0.4:7235")}
    view.assignment = Assignment.of(3, ["history-1", "history-2", "history-1", None])  # shard 3: moving
    node.membership = SimpleNamespace(view=view)  # type: ignore[assignment]
    got: dict[str, Any] = await node.cluster_view()
    assert got["mode"] == "cluster" and got["num_shards"] == 4 and got["identity"] == "frontend-1"
    assert [m["identity"] for m in got["members"]] == ["frontend-1", "history-1", "history-2", "matching-1"]
    assert [m["self"] for m in got["members"]] == [True, False, False, False]
    assert got["shards"] == {"0": "10.0.0.2:7234", "1": "10.0.0.3:7234", "2": "10.0.0.2:7234", "3": None}
    assert got["queues"] == [] and any("no matching role" in n for n in got["notes"])


async def test_a_process_alone_owns_every_shard_its_history_holds() -> None:
    config = Config()
    config.history.num_shards = 3
    node = Node(config, frozenset({FRONTEND, HISTORY, MATCHING}), identity="legato-dev")
    node._history = SimpleNamespace(owned_shards=lambda: [0, 2])  # type: ignore[assignment]
    node._matching = SimpleNamespace(task_queues=SimpleNamespace(stats=lambda: [  # type: ignore[assignment]
        {"namespace": "ns", "task_queue": "q", "kind": "workflow", "backlog": 5, "pollers": 0}]))
    got = await node.cluster_view({FRONTEND: "127.0.0.1:7233", HISTORY: "in this process"})
    assert got["mode"] == "single process"
    [member] = got["members"]
    assert member["roles"] == {"frontend": "127.0.0.1:7233", "history": "in this process",
                               "matching": config.cluster.matching_address}
    assert got["shards"] == {"0": "in this process", "1": None, "2": "in this process"}
    assert got["queues"][0]["backlog"] == 5 and got["notes"] == []
