"""The shard assignment the leader history node writes (docs/cluster.md, "Assignment").

`rebalance(previous, members)` returns who owns each shard next, given who owned it before and
who is alive now. It is a pure, deterministic function with two promises:

* balance: with N members, each owns floor(S/N) or ceil(S/N) shards (S = number of shards);
* few moves: a shard keeps its owner unless that owner is gone or holds more than its share,
  so a join moves about S/(N+1) shards (all to the newcomer) and a leave moves exactly the
  leaver's shards. No assignment with the balance promise moves fewer.

Ties are broken by rendezvous hashing (the member with the highest hash of (shard, member)
wins), so a fresh cluster's assignment is well mixed and any two nodes compute the same result.
Why a leader and a stored assignment rather than each node hashing on its own: stateless
rendezvous or consistent hashing cannot keep every node within one shard of the mean (with 100
nodes and 16,384 shards they spread by about ±35); the stored assignment can, and still moves only
what must move. `legato bench assignment` simulates it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def score(shard_id: int, member: str) -> int:
    """Rendezvous weight of `member` for `shard_id`: stable across processes and versions."""
    digest = hashlib.blake2b(f"{shard_id}\x00{member}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rebalance(previous: Sequence[str | None], members: Sequence[str]) -> list[str | None]:
    """The next owner of each shard (see the module docstring). `previous[s]` is the shard's
    owner before (None: nobody); `members` are the live ones (order does not matter)."""
    num_shards = len(previous)
    live = sorted(set(members))
    if not live:
        return [None] * num_shards
    kept: dict[str, list[int]] = {m: [] for m in live}
    for s, owner in enumerate(previous):
        if owner in kept:
            kept[owner].append(s)
    capacity = _capacities(num_shards, live, kept)
    owners: list[str | None] = [None] * num_shards
    free: list[int] = []
    for m in live:
        shards = kept[m]
        if len(shards) > capacity[m]:
            # Keep the shards this member ranks highest; the rest move.
            shards.sort(key=lambda s, m=m: score(s, m), reverse=True)  # type: ignore[misc]
            free.extend(shards[capacity[m]:])
            del shards[capacity[m]:]
        for s in shards:
            owners[s] = m
    free.extend(s for s, owner in enumerate(previous) if owner not in kept)
    room = {m: capacity[m] - len(kept[m]) for m in live if capacity[m] > len(kept[m])}
    for s in sorted(free):
        best = max(room, key=lambda m: score(s, m))
        owners[s] = best
        room[best] -= 1
        if room[best] == 0:
            del room[best]
    return owners


def _capacities(num_shards: int, live: list[str], kept: dict[str, list[int]]) -> dict[str, int]:
    """floor(S/N) for each member, +1 for the S mod N members that already hold the most (so
    that the extra shards stay where they are); ties by name."""
    base, extra = divmod(num_shards, len(live))
    by_holding = sorted(live, key=lambda m: (-len(kept[m]), m))
    return {m: base + (1 if i < extra else 0) for i, m in enumerate(by_holding)}


def moves(before: Sequence[str | None], after: Sequence[str | None]) -> int:
    """How many shards change owner (a shard that had none counts when it gets one)."""
    return sum(1 for a, b in zip(before, after, strict=True) if a != b)
