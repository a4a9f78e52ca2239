"""Cluster membership in ZooKeeper (docs/cluster.md): who is in the cluster, what it serves, and
which history node the shards are assigned to.

The cluster's znodes, under `cluster.zookeeper_root` (e.g. /legato/default):

    cluster              persistent  {"num_shards": N, "created_ms": ...}: fixed when the cluster is made
    members/<identity>   ephemeral   one per process: its roles and their gRPC addresses, metrics
                                     address, start time (MemberInfo)
    election/n_<seq>     ephemeral   history nodes; the lowest sequence number is the leader, which
                                     writes the assignment
    assignment           persistent  the leader's shard assignment: {"version", "members", "owners"}
                                     (owners[shard] is an index into members, -1 for none)
    shards/<shard id>    ephemeral   held by the history node that serves the shard; made before it
                                     acquires the shard in the store, deleted after it released it

`Membership` registers this process and keeps live views of the members and the assignment,
refreshed by watches (never a lookup per request). `read_cluster` reads it all once, for
`legato cluster describe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from legato import metrics
from legato.config import ClusterConfig
from legato.errors import FailedPrecondition
from legato.zk import CONNECTED, LOST, NodeExistsError, NoNodeError, Zk, dumps, loads

log = logging.getLogger("legato.membership")

HISTORY, MATCHING, FRONTEND = "history", "matching", "frontend"


def new_identity(roles: str) -> str:
    """Unique per process start: a restarted process is a new member."""
    return f"{roles}-{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


@dataclass(frozen=True, slots=True)
class MemberInfo:
    identity: str
    roles: dict[str, str]  # role -> the gRPC address it serves
    metrics_address: str = ""
    started_ms: int = 0
    host: str = ""
    pid: int = 0

    def to_json(self) -> bytes:
        return dumps({"identity": self.identity, "roles": self.roles, "metrics_address": self.metrics_address,
                      "started_ms": self.started_ms, "host": self.host, "pid": self.pid})

    @classmethod
    def from_json(cls, raw: bytes) -> MemberInfo:
        d = loads(raw) or {}
        return cls(str(d.get("identity", "")), {str(k): str(v) for k, v in (d.get("roles") or {}).items()},
                   str(d.get("metrics_address", "")), int(d.get("started_ms", 0)), str(d.get("host", "")),
                   int(d.get("pid", 0)))

    def address(self, role: str) -> str:
        return self.roles.get(role, "")


@dataclass(frozen=True, slots=True)
class Assignment:
    """Which member each shard is assigned to; `owners[s]` indexes `members`, -1: nobody."""

    version: int = 0
    members: tuple[str, ...] = ()
    owners: tuple[int, ...] = ()

    def owner(self, shard_id: int) -> str | None:
        if shard_id >= len(self.owners):
            return None
        i = self.owners[shard_id]
        return self.members[i] if 0 <= i < len(self.members) else None

    def owner_list(self) -> list[str | None]:
        return [self.owner(s) for s in range(len(self.owners))]

    def shards_of(self, identity: str) -> set[int]:
        try:
            i = self.members.index(identity)
        except ValueError:
            return set()
        return {s for s, o in enumerate(self.owners) if o == i}

    def to_json(self) -> bytes:
        return dumps({"version": self.version, "members": list(self.members), "owners": list(self.owners)})

    @classmethod
    def from_json(cls, raw: bytes | None) -> Assignment:
        d = loads(raw) or {}
        return cls(int(d.get("version", 0)), tuple(d.get("members") or ()), tuple(d.get("owners") or ()))

    @classmethod
    def of(cls, version: int, owners: list[str | None]) -> Assignment:
        members = sorted({o for o in owners if o is not None})
        index = {m: i for i, m in enumerate(members)}
        return cls(version, tuple(members), tuple(-1 if o is None else index[o] for o in owners))


class Paths:
    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.cluster = f"{self.root}/cluster"
        self.members = f"{self.root}/members"
        self.election = f"{self.root}/election"
        self.assignment = f"{self.root}/assignment"
        self.shards = f"{self.root}/shards"

    def member(self, identity: str) -> str:
        return f"{self.members}/{identity}"

    def shard(self, shard_id: int) -> str:
        return f"{self.shards}/{shard_id}"


async def ensure_cluster(zk: Zk, paths: Paths, num_shards: int) -> None:
    """Create the cluster's znodes with `num_shards` if it is new; refuse a different value."""
    for p in (paths.members, paths.election, paths.shards):
        await zk.ensure_path(p)
    try:
        await zk.create(paths.cluster, dumps({"num_shards": num_shards, "created_ms": int(time.time() * 1000)}),
                        makepath=True)
    except NodeExistsError:
        pass
    raw, _ = await zk.get(paths.cluster)
    stored = int((loads(raw) or {}).get("num_shards", 0))
    if stored != num_shards:
        raise FailedPrecondition(
            f"the cluster at {zk.hosts}{paths.root} was created with {stored} shards, but this node is configured with "
            f"history.num_shards = {num_shards}; the number of shards is fixed when a cluster is created (set "
            f"history.num_shards: {stored}, or use another cluster.zookeeper_root)", reason="NumShardsMismatch")


class _Watched:
    """A value read from ZooKeeper and read again whenever its watch fires or the session
    reconnects; `changed` is set (and replaced) after every new value."""

    def __init__(self, zk: Zk, name: str, read: Callable[[Callable[[Any], None]], Any],
                 publish: Callable[[Any], None]) -> None:
        self._zk = zk
        self._name = name
        self._read = read
        self._publish = publish
        self._again = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._zk.on_state(self._on_state)
        self._task = asyncio.create_task(self._run(), name=f"zk-watch-{self._name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])

    def _on_state(self, state: str) -> None:
        if state in (CONNECTED, LOST):
            self._again.set()

    def poke(self) -> None:
        self._again.set()

    async def _run(self) -> None:
        watch = self._zk.watcher(lambda _event: self._again.set())
        while True:
            self._again.clear()
            try:
                value = await self._zk.retrying(lambda: self._read(watch), f"reading {self._name}")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("reading %s from ZooKeeper failed (retrying): %s", self._name, e)
                await asyncio.sleep(0.5)
                continue
            self._publish(value)
            await self._again.wait()


@dataclass
class ClusterView:
    """What this process knows of the cluster, kept current by watches."""

    members: dict[str, MemberInfo] = field(default_factory=dict)
    assignment: Assignment = field(default_factory=Assignment)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        metrics.membership_changes.inc()
        old, self.changed = self.changed, asyncio.Event()
        old.set()

    def with_role(self, role: str) -> list[MemberInfo]:
        """Members serving `role`, ordered by identity (every process sees the same order)."""
        return [m for _, m in sorted(self.members.items()) if role in m.roles]

    def shard_owner(self, shard_id: int) -> MemberInfo | None:
        """The live history member the shard is assigned to."""
        owner = self.assignment.owner(shard_id)
        return self.members.get(owner) if owner is not None else None

    def member_by_address(self, role: str, address: str) -> MemberInfo | None:
        for m in self.members.values():
            if m.roles.get(role) == address:
                return m
        return None


class Membership:
    """This process in the cluster: its member znode, and the live `view` of members and
    assignment. `start()` after the process serves its gRPC addresses; `stop()` leaves."""

    def __init__(self, zk: Zk, cluster: ClusterConfig, info: MemberInfo, num_shards: int) -> None:
        self.zk = zk
        self.paths = Paths(cluster.zookeeper_root)
        self.info = info
        self.num_shards = num_shards
        self.view = ClusterView()
        self._member_data: dict[str, tuple[int, MemberInfo]] = {}  # name -> (czxid, info)
        self._watches = [_Watched(zk, "members", self._read_members, self._set_members),
                         _Watched(zk, "assignment", self._read_assignment, self._set_assignment)]
        self._registered = False
        self._joined = False
        self._register_task: asyncio.Task[None] | None = None

    @property
    def identity(self) -> str:
        return self.info.identity

    async def start(self) -> None:
        """Check (or make) the cluster and start watching it; `join()` once this process serves."""
        await self.zk.retrying(lambda: ensure_cluster(self.zk, self.paths, self.num_shards), "creating the cluster",
                               self.zk.session_timeout_s * 3)
        self.zk.on_state(self._on_state)
        for w in self._watches:
            w.start()

    async def join(self) -> None:
        """Register this process (its member znode): the others see it and send it work."""
        await self.zk.retrying(self._register, "registering this process")
        self._joined = True

    async def stop(self) -> None:
        """Leave: delete the member znode (the others see this process go at once)."""
        if self._register_task is not None:
            self._register_task.cancel()
        for w in self._watches:
            await w.stop()
        await self.leave()

    async def leave(self) -> None:
        self._joined = False
        if not self._registered:
            return
        self._registered = False
        with contextlib.suppress(NoNodeError, Exception):
            await self.zk.delete(self.paths.member(self.identity))

    async def _register(self) -> None:
        path = self.paths.member(self.identity)
        try:
            await self.zk.create(path, self.info.to_json(), ephemeral=True)
        except NodeExistsError:
            # Made by this session before a reconnection that Zk reported as LOST (see legato.zk).
            _, stat = await self.zk.get(path)
            if stat.ephemeralOwner != self.zk.session_id:
                raise FailedPrecondition(f"another live process registered as {self.identity}",
                                         reason="DuplicateIdentity") from None
        self._registered = True

    def _on_state(self, state: str) -> None:
        if state == LOST:
            self._registered = False
        elif state == CONNECTED and self._joined and not self._registered and self._register_task is None:
            self._register_task = asyncio.create_task(self._reregister(), name="zk-reregister")

    async def _reregister(self) -> None:
        try:
            await self.zk.retrying(self._register, "registering this process again")
            log.info("registered again in ZooKeeper as %s after a new session", self.identity)
        finally:
            self._register_task = None

    # ------------------------------------------------------------ views

    async def _read_members(self, watch: Callable[[Any], None]) -> dict[str, MemberInfo]:
        names = await self.zk.children(self.paths.members, watch)
        out: dict[str, MemberInfo] = {}
        for name in names:
            try:
                raw, stat = await self.zk.get(self.paths.member(name))
            except NoNodeError:
                continue
            cached = self._member_data.get(name)
            if cached is not None and cached[0] == stat.czxid:
                out[name] = cached[1]
                continue
            info = MemberInfo.from_json(raw)
            self._member_data[name] = (stat.czxid, info)
            out[name] = info
        for gone in set(self._member_data) - set(out):
            del self._member_data[gone]
        return out

    def _set_members(self, members: dict[str, MemberInfo]) -> None:
        if members != self.view.members:
            self.view.members = members
            self.view.notify()

    async def _read_assignment(self, watch: Callable[[Any], None]) -> Assignment:
        try:
            raw, _ = await self.zk.get(self.paths.assignment, watch)
        except NoNodeError:
            if await self.zk.exists(self.paths.assignment, watch) is not None:
                self._watches[1].poke()  # made in between: read it again
            return Assignment()
        return Assignment.from_json(raw)

    def _set_assignment(self, assignment: Assignment) -> None:
        if assignment != self.view.assignment:
            self.view.assignment = assignment
            self.view.notify()

    async def wait_change(self, timeout_s: float) -> None:
        """Wait until the view changes, or `timeout_s` passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.view.changed.wait()


# ---------------------------------------------------------------- describe

@dataclass
class ClusterState:
    num_shards: int
    members: list[MemberInfo]
    shard_owners: dict[int, dict[str, Any]]  # shard -> the data of its shards/<id> znode
    assignment: Assignment


async def read_cluster(zk: Zk, root: str) -> ClusterState:
    """Everything `legato cluster describe` shows, read once."""
    paths = Paths(root)
    try:
        raw, _ = await zk.get(paths.cluster)
    except NoNodeError:
        raise FailedPrecondition(f"no Legato cluster at {zk.hosts}{paths.root} (no node has started there yet; "
                                 "check --zookeeper and --root)", reason="NoCluster") from None
    num_shards = int((loads(raw) or {}).get("num_shards", 0))
    members: list[MemberInfo] = []
    with contextlib.suppress(NoNodeError):
        for name in sorted(await zk.children(paths.members)):
            with contextlib.suppress(NoNodeError):
                members.append(MemberInfo.from_json((await zk.get(paths.member(name)))[0]))
    owners: dict[int, dict[str, Any]] = {}
    with contextlib.suppress(NoNodeError):
        names = [n for n in await zk.children(paths.shards) if n.isdigit()]
        results = await asyncio.gather(*(zk.get(paths.shard(int(n))) for n in names), return_exceptions=True)
        for n, r in zip(names, results, strict=True):
            if isinstance(r, tuple):
                owners[int(n)] = loads(r[0]) or {}
    assignment = Assignment()
    with contextlib.suppress(NoNodeError):
        assignment = Assignment.from_json((await zk.get(paths.assignment))[0])
    return ClusterState(num_shards, members, owners, assignment)
