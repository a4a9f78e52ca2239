"""The shard assignment (legato/assignment.py): a deterministic simulation of 100 nodes and 16,384
shards, and the properties the cluster relies on."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from legato.assignment import moves, rebalance
from legato.bench_cluster import simulate_assignment
from legato.cli.main import main

SHARDS = 16_384
NODES = 100


@pytest.fixture(scope="module")
def hundred() -> list[str | None]:
    """The assignment after 100 nodes joined one by one."""
    names = [f"node-{i}" for i in range(NODES)]
    owners: list[str | None] = [None] * SHARDS
    for i in range(1, NODES + 1):
        owners = rebalance(owners, names[:i])
    return owners


def spread(owners: list[str | None]) -> tuple[int, int]:
    counts = Counter(owners)
    assert None not in counts
    return min(counts.values()), max(counts.values())


def test_every_node_owns_its_share_within_one(hundred: list[str | None]) -> None:
    assert spread(hundred) == (SHARDS // NODES, SHARDS // NODES + 1)
    assert len(set(hundred)) == NODES


def test_a_join_moves_only_the_newcomers_share(hundred: list[str | None]) -> None:
    after = rebalance(hundred, [*{o for o in hundred if o}, "newcomer"])
    moved = moves(hundred, after)
    assert moved == after.count("newcomer")  # every move is to the newcomer
    assert SHARDS // (NODES + 1) <= moved <= SHARDS // (NODES + 1) + 1  # about 1/(N+1) of the shards
    assert spread(after) in ((162, 163), (162, 162), (163, 163))


def test_a_leave_moves_exactly_the_leavers_shards(hundred: list[str | None]) -> None:
    leaver = "node-42"
    had = hundred.count(leaver)
    after = rebalance(hundred, [f"node-{i}" for i in range(NODES) if i != 42])
    assert moves(hundred, after) == had
    assert all(a == b for a, b in zip(hundred, after, strict=True) if a != leaver)
    assert spread(after) == (SHARDS // (NODES - 1), SHARDS // (NODES - 1) + 1)


def test_deterministic_whatever_the_order_of_members() -> None:
    prev: list[str | None] = [None] * 64
    assert rebalance(prev, ["a", "b", "c"]) == rebalance(prev, ["c", "a", "b", "a"])


def test_a_fresh_assignment_is_mixed_not_blocks() -> None:
    owners = rebalance([None] * 64, ["a", "b"])
    runs = sum(1 for x, y in itertools.pairwise(owners) if x != y)
    assert runs > 10  # rendezvous ranking, not the first half to one node


def test_no_members_owns_nothing_and_an_unchanged_cluster_moves_nothing(hundred: list[str | None]) -> None:
    assert rebalance(hundred[:10], []) == [None] * 10
    assert rebalance(hundred, [o for o in set(hundred) if o]) == hundred


def test_more_nodes_than_shards() -> None:
    owners = rebalance([None] * 3, [f"n{i}" for i in range(5)])
    assert len(set(owners)) == 3


def test_bench_assignment_reports_the_simulation(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate_assignment(10, 1000)
    assert (r.min_per_node, r.max_per_node) == (100, 100)
    assert r.join_moves == 90 and r.leave_moves == 100
    assert main(["bench", "assignment", "--nodes", "10", "--shards", "1000"]) == 0
    out = capsys.readouterr().out
    assert "each node owns 100..100" in out and "a node joins: 90 shards move" in out
