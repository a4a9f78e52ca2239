"""`Node.cluster_view`: what the web UI's cluster page shows (GET /api/v1/cluster), for a process
of a cluster (members and shard owners from its ZooKeeper view) and for one that is alone."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiohttp import web

from legato.config import Config
from legato.membership import Assignment, ClusterView, MemberInfo
from legato.roles import FRONTEND, HISTORY, MATCHING, Node


def _member(identity: str, **roles: str) -> MemberInfo:
    return MemberInfo(identity, roles, metrics_address="", started_ms=1, host="h", pid=7)


METRICS = """# HELP legato_matching_backlog Tasks waiting
# TYPE legato_matching_backlog gauge
legato_matching_backlog{kind="workflow",task_queue="shop"} 7.0
legato_matching_backlog{kind="activity",task_queue="shop"} 0.0
# HELP legato_matching_pollers Long polls waiting
# TYPE legato_matching_pollers gauge
legato_matching_pollers{kind="activity",task_queue="shop"} 3.0
# HELP legato_up up
# TYPE legato_up gauge
legato_up{roles="matching"} 1.0
"""


async def test_a_cluster_member_shows_the_view_of_zookeeper_and_the_matching_members_backlogs() -> None:
    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(text=METRICS)

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    metrics = f"127.0.0.1:{runner.addresses[0][1]}"
    try:
        config = Config()
        config.history.num_shards = 4
        node = Node(config, frozenset({FRONTEND}), identity="frontend-1")
        view = ClusterView()
        me = _member("frontend-1", frontend="10.0.0.1:7233")
        view.members = {"frontend-1": me,
                        "history-1": _member("history-1", history="10.0.0.2:7234"),
                        "history-2": _member("history-2", history="10.0.0.3:7234"),
                        "matching-1": MemberInfo("matching-1", {"matching": "10.0.0.4:7235"}, metrics),
                        "matching-2": _member("matching-2", matching="10.0.0.5:7235"),  # no metrics port
                        "matching-3": MemberInfo("matching-3", {"matching": "10.0.0.6:7235"}, "127.0.0.1:1")}
        view.assignment = Assignment.of(3, ["history-1", "history-2", "history-1", None])  # shard 3: moving
        node.membership = SimpleNamespace(view=view, info=me)  # type: ignore[assignment]
        got: dict[str, Any] = await node.cluster_view()
    finally:
        await runner.cleanup()
    assert got["mode"] == "cluster" and got["num_shards"] == 4 and got["identity"] == "frontend-1"
    assert [m["identity"] for m in got["members"]] == ["frontend-1", "history-1", "history-2", "matching-1",
                                                       "matching-2", "matching-3"]
    assert [m["self"] for m in got["members"]] == [True, False, False, False, False, False]
    assert got["shards"] == {"0": "10.0.0.2:7234", "1": "10.0.0.3:7234", "2": "10.0.0.2:7234", "3": None}
    matching = {"namespace": "", "task_queue": "shop", "member": "10.0.0.4:7235"}
    assert got["queues"] == [{**matching, "kind": "activity", "backlog": 0, "pollers": 3},
                             {**matching, "kind": "workflow", "backlog": 7, "pollers": 0}]
    notes = "\n".join(got["notes"])
    assert "10.0.0.5:7235 serves no metrics" in notes and "10.0.0.6:7235: its /metrics is unreachable" in notes


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
    assert got["queues"][0]["backlog"] == 5 and got["queues"][0]["member"] == "this process"
    assert got["notes"] == []
