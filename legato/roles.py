"""The roles of one process (frontend, history, matching), built from config, each reaching the
others in-process when they share the process and over gRPC (`legato.internal_clients`, at the
addresses of the `cluster` section) when they do not.

    node = Node(config, parse_roles("history,matching"), db_path="legato.db")
    await node.start()      # history owns every shard; matching reads the task topics
    servers = await node.serve()   # each role's gRPC API on its cluster address
    ...
    await node.stop()

`legato.server.Engine` is the case "every role in this process" (`legato server start-dev`,
`legato run`). History and matching in one process may use the in-process task bus; in separate
processes they exchange their tasks through Kafka, so they need `queues.kind: kafka` (a frontend
needs no queues).

With `cluster.zookeeper_hosts` the process is a member of a cluster (docs/cluster.md): it finds
its peers in ZooKeeper and reaches them through routers (`legato.routing`); a history node owns
the shards the assignment gives it (history/ownership.py). Then:

    await node.start()      # ZooKeeper session, the cluster's view; history owns no shard yet
    servers = await node.serve()
    await node.join()       # registered: shards come, frontends route here
    ...
    await node.leave()      # shards handed over (drained first), then unregistered
    await node.stop()
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Self

import grpc

from frontend.service import Frontend
from history.ownership import ShardController
from history.service import HistoryServiceImpl
from history.store.base import ExecutionStore
from history.store.factory import Stores, open_stores
from legato import api, metrics
from legato.access_tokens import InternalToken, read_secret
from legato.config import Config, ConfigError, split_address
from legato.internal_clients import GrpcHistoryClient, GrpcMatchingClient
from legato.membership import MATCHING as MATCHING_ROLE
from legato.membership import MemberInfo, Membership
from legato.metrics import Sample
from legato.routing import HistoryRouter, MatchingRouter
from legato.status_server import Readiness
from legato.task_publisher import KafkaTaskPublisher, open_task_publisher
from legato.tls import ClientSecurity, internal_security
from legato.zk import CONNECTED, Zk
from matching.forwarding import Forwarder
from matching.kafka_matching import KafkaMatching
from matching.service import InProcessMatching

log = logging.getLogger("legato.roles")

FRONTEND, HISTORY, MATCHING = "frontend", "history", "matching"
ALL_ROLES: frozenset[str] = frozenset({FRONTEND, HISTORY, MATCHING})
ROLE_ORDER = (FRONTEND, HISTORY, MATCHING)  # how roles are listed to people


def parse_roles(text: str) -> frozenset[str]:
    """"history,matching" -> {"history", "matching"}; ConfigError naming an unknown role."""
    roles = frozenset(r.strip() for r in text.split(",") if r.strip())
    unknown = sorted(roles - ALL_ROLES)
    if unknown or not roles:
        raise ConfigError(f"--role {text!r}: expected a comma-separated subset of {','.join(ROLE_ORDER)}"
                          + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return roles


def role_list(roles: Iterable[str]) -> str:
    """The roles in their usual order, comma-separated."""
    chosen = set(roles)
    return ",".join(r for r in ROLE_ORDER if r in chosen)


def check_roles(roles: frozenset[str], config: Config, db_path: str | None) -> None:
    """Refuse, with what to change, a set of roles that cannot work with this config."""
    if config.cluster.zookeeper and roles & {HISTORY, MATCHING} and config.queues.kind != "kafka":
        raise ConfigError(
            f"{role_list(roles)} in a cluster (--zookeeper): the history and matching nodes of a cluster exchange "
            "tasks through Kafka; set queues.kind: kafka (--queues kafka) and make the topics with "
            "`legato kafka setup`")
    if len(roles & {HISTORY, MATCHING}) == 1 and config.queues.kind != "kafka":
        raise ConfigError(
            f"{role_list(roles)} without {MATCHING if HISTORY in roles else HISTORY} in this process: history and "
            "matching in separate processes exchange tasks through Kafka; set queues.kind: kafka (--queues kafka) "
            "and make the topics with `legato kafka setup`")
    if FRONTEND in roles and HISTORY not in roles and config.store.kind == "sqlite" and db_path is None:
        raise ConfigError("a frontend without history in its process reads visibility from history's store: "
                          "give --db, the SQLite file of the history role")


def role_address(config: Config, role: str) -> str:
    """Where `role` listens and is reached (the `cluster` section)."""
    c = config.cluster
    return {FRONTEND: c.frontend_address, HISTORY: c.history_address, MATCHING: c.matching_address}[role]


class Node:
    """The roles of this process, started together and stopped in reverse. Peers in other
    processes are gRPC clients: a call to a peer that is down fails with `Unavailable`, which its
    caller retries (workers poll again, matching puts the task back, history's queues retry)."""

    def __init__(self, config: Config, roles: frozenset[str], db_path: str | None = None,
                 identity: str = "legato") -> None:
        self.config = config
        self.roles = roles
        self.db_path = db_path
        self.identity = identity
        self._stores: Stores | None = None
        self._publisher: KafkaTaskPublisher | None = None
        self._history: HistoryServiceImpl | None = None
        self._matching: InProcessMatching | KafkaMatching | None = None
        self._frontend: Frontend | None = None
        self._remote_history: GrpcHistoryClient | HistoryRouter | None = None
        self._remote_matching: GrpcMatchingClient | MatchingRouter | None = None
        # a cluster member (cluster.zookeeper_hosts)
        self._zk: Zk | None = None
        self.membership: Membership | None = None
        self.controller: ShardController | None = None
        self._forwarder: Forwarder | None = None
        self._peer_security_made: tuple[ClientSecurity | None] | None = None
        self._unregister_gauges: Callable[[], None] | None = None

    # ------------------------------------------------------------ what runs here

    @property
    def frontend(self) -> api.WorkflowService:
        assert self._frontend is not None, "no frontend running in this process"
        return self._frontend

    @property
    def matching(self) -> InProcessMatching | KafkaMatching:
        assert self._matching is not None, "no matching running in this process"
        return self._matching

    @property
    def history(self) -> HistoryServiceImpl:
        assert self._history is not None, "no history running in this process"
        return self._history

    @property
    def execution_store(self) -> ExecutionStore:
        assert self._stores is not None, "no store open in this process"
        return self._stores.execution

    @property
    def data_description(self) -> str:
        return self._stores.description if self._stores is not None else "none"

    @property
    def queues_description(self) -> str:
        q = self.config.queues
        if not self.roles & {HISTORY, MATCHING}:
            return "none"
        return f"Kafka {','.join(q.kafka_bootstrap)} prefix {q.topic_prefix}" if q.kind == "kafka" else "in-process"

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        self._unregister_gauges = metrics.sources.add(self.gauges)

    @property
    def in_cluster(self) -> bool:
        return self.config.cluster.zookeeper

    async def _start(self) -> None:
        check_roles(self.roles, self.config, self.db_path)
        if self.in_cluster:
            await self._open_cluster()
        if self.config.queues.kind == "kafka" and self.roles & {HISTORY, MATCHING}:
            self._publisher = await open_task_publisher(self.config.queues)
        if self.roles & {HISTORY, FRONTEND}:
            self._stores = await open_stores(self.config, self.db_path)
        if HISTORY in self.roles:
            self._history = self._make_history()
        if MATCHING in self.roles:
            self._matching = await self._start_matching()
        if self._history is not None:
            self._history.set_matching(self._matching_peer())
            if self.in_cluster:
                self._history.set_history_client(self._history_peer())
            await self._history.start(acquire_all=not self.in_cluster)
        if FRONTEND in self.roles:
            assert self._stores is not None
            self._frontend = Frontend(self._history_peer(), self._matching_peer(), self._stores.visibility,
                                      self.config)

    def _make_history(self) -> HistoryServiceImpl:
        assert self._stores is not None
        return HistoryServiceImpl(self._stores.execution, self._stores.visibility, self.config,
                                  identity=self.identity, task_sink=self._publisher)

    async def _start_matching(self) -> InProcessMatching | KafkaMatching:
        if self._publisher is None:
            return InProcessMatching(self._history_peer(), self.config)
        matching = KafkaMatching(self._history_peer(), self.config, self._publisher)
        await matching.start()
        return matching

    def _history_peer(self) -> api.HistoryService:
        if self.membership is not None:  # a cluster: whichever node owns the shard (maybe this one)
            if self._remote_history is None:
                self._remote_history = HistoryRouter(self.membership, self.config.history.num_shards,
                                                     self.config.cluster.route_timeout_ms, local=self._history,
                                                     security=self._peer_security(), grpc_config=self.config.grpc)
            return self._remote_history
        if self._history is not None:
            return self._history
        if self._remote_history is None:
            self._remote_history = GrpcHistoryClient(self.config.cluster.history_address,
                                                     security=self._peer_security(), grpc_config=self.config.grpc)
        return self._remote_history

    def _peer_security(self) -> ClientSecurity | None:
        """TLS and token of this process's calls to the other services (made once)."""
        if self._peer_security_made is None:
            s = self.config.security
            token = (InternalToken(read_secret(s.token_secret_file), s.internal_token_ttl_ms / 1000)
                     if s.token_secret_file else None)
            self._peer_security_made = (internal_security(s, token),)
        return self._peer_security_made[0]

    def _matching_peer(self) -> api.MatchingService:
        if self.membership is not None:
            if self._remote_matching is None:
                self._remote_matching = MatchingRouter(self.membership, self.config.cluster.route_timeout_ms,
                                                       self.config.matching.long_poll_timeout_ms,
                                                       local=self._matching, security=self._peer_security(),
                                                       grpc_config=self.config.grpc)
            return self._remote_matching
        if self._matching is not None:
            return self._matching
        if self._remote_matching is None:
            self._remote_matching = GrpcMatchingClient(
                self.config.cluster.matching_address, long_poll_timeout_ms=self.config.matching.long_poll_timeout_ms,
                security=self._peer_security(), grpc_config=self.config.grpc)
        return self._remote_matching

    # ------------------------------------------------------------ the cluster

    async def _open_cluster(self) -> None:
        """A ZooKeeper session, and the cluster's view (checked against history.num_shards)."""
        self._zk = Zk(self.config.cluster)
        await self._zk.start()
        c = self.config
        info = MemberInfo(self.identity, {role: c.cluster.advertised(role_address(c, role)) for role in self.roles},
                          c.cluster.advertised(c.metrics.address), int(time.time() * 1000), socket.gethostname(),
                          os.getpid())
        self.membership = Membership(self._zk, self.config.cluster, info, self.config.history.num_shards)
        await self.membership.start()

    async def join(self) -> None:
        """Register in the cluster (after serving): shards come to a history node, frontends
        route here. A no-op outside a cluster."""
        if self.membership is None:
            return
        await self.membership.join()
        if self._history is not None:
            self.controller = ShardController(self._history, self.membership, self.config)
            await self.controller.start()
        if self._matching is not None:
            self._forwarder = Forwarder(self._matching.task_queues, self._matching_peers, self.config.matching)
            self._forwarder.start()

    def _matching_peers(self) -> list[tuple[str, api.MatchingPeer]]:
        assert self.membership is not None
        router = self._matching_peer()
        assert isinstance(router, MatchingRouter)
        return [(m.identity, router.peer(m)) for m in self.membership.view.with_role(MATCHING_ROLE)
                if m.identity != self.identity]

    async def leave(self) -> None:
        """Hand this node's shards over (drained first) and leave the cluster; the node still
        serves meanwhile, so requests in flight finish. A no-op outside a cluster."""
        controller, self.controller = self.controller, None
        if controller is not None:
            await controller.stop()
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            await forwarder.stop()
        if self.membership is not None:
            await self.membership.leave()

    async def stop(self) -> None:
        unregister, self._unregister_gauges = self._unregister_gauges, None
        if unregister is not None:
            unregister()
        await self.leave()
        self._frontend = None
        # History first: with matching gone it would keep retrying its hand-offs.
        history, self._history = self._history, None
        if history is not None:
            await history.stop()
        matching, self._matching = self._matching, None
        if matching is not None:
            await matching.stop()
        for client in (self._remote_history, self._remote_matching):
            if client is not None:
                await client.close()
        self._remote_history = self._remote_matching = None
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.stop()
        stores, self._stores = self._stores, None
        if stores is not None:
            await stores.close()
        membership, self.membership = self.membership, None
        if membership is not None:
            await membership.stop()
        zk, self._zk = self._zk, None
        if zk is not None:
            await zk.stop()

    # ------------------------------------------------------------ status (metrics, probes)

    def readiness(self, serving: Callable[[], bool]) -> Readiness:
        """What /readyz checks: the process serves (`serving()`), its ZooKeeper session is
        connected, a history node owns the shards assigned to it (and holds none it should have
        released), the store answers a read and Kafka its metadata request."""
        r = Readiness()
        r.add("serving", lambda: None if serving() else "not serving yet, or stopping")
        zk = self._zk
        if zk is not None:
            r.add("zookeeper", lambda: None if zk.state == CONNECTED else f"the ZooKeeper connection is {zk.state}")
        if self._history is not None:
            r.add("shards", self._shards_settled)
        if self._stores is not None:
            r.add("store", self._store_answers)
        if self._publisher is not None:
            r.add("kafka", self._publisher.unreachable)
        return r

    def _shards_settled(self) -> str | None:
        controller = self.controller
        return controller.unsettled() if controller is not None else None

    async def _store_answers(self) -> str | None:
        stores = self._stores
        if stores is None:
            return "the store is closed"
        try:
            await stores.execution.get_current_run(0, "legato-readyz", "legato-readyz")
        except Exception as e:
            return f"the store did not answer a read: {e}"
        return None

    async def cluster_view(self, addresses: dict[str, str] | None = None) -> dict[str, Any]:
        """What the web UI's cluster page shows (GET /api/v1/cluster), as this process knows it:
        the members and the history member each shard is assigned to (from ZooKeeper's view in a
        cluster; else this process, owning every shard its history role holds), and the task
        queues of this process's matching role with their backlogs. `addresses`: where this
        process serves each role, when not at its `cluster` address (the dev server)."""
        addresses = addresses or {}
        c = self.config
        num_shards = c.history.num_shards
        notes: list[str] = []
        if self.membership is not None:
            view = self.membership.view
            members = [{"identity": m.identity, "roles": dict(sorted(m.roles.items())), "host": m.host,
                        "pid": m.pid, "started_ms": m.started_ms, "metrics_address": m.metrics_address,
                        "self": m.identity == self.identity}
                       for _, m in sorted(view.members.items())]
            shards: dict[str, str | None] = {}
            for s in range(num_shards):
                owner = view.shard_owner(s)
                shards[str(s)] = owner.address(HISTORY) if owner is not None else None
            mode = "cluster"
        else:
            members = [{"identity": self.identity, "roles": {r: addresses.get(r) or role_address(c, r)
                                                             for r in ROLE_ORDER if r in self.roles},
                        "host": socket.gethostname(), "pid": os.getpid(), "started_ms": 0,
                        "metrics_address": c.metrics.address, "self": True}]
            owned = set(self._history.owned_shards()) if self._history is not None else set()
            here = addresses.get(HISTORY) or role_address(c, HISTORY)
            shards = {str(s): (here if s in owned or self._history is None else None) for s in range(num_shards)}
            mode = "single process" if self.roles == ALL_ROLES else "no cluster membership"
        queues: list[dict[str, Any]] = []
        here = self.membership.info.address(MATCHING) if self.membership is not None else "this process"
        if self._matching is not None:
            queues = [{**q, "member": here or "this process"} for q in self._matching.task_queues.stats()]
        if self.membership is not None:
            # the other matching members' queues: from the backlog gauges of their /metrics
            others = [m for m in self.membership.view.with_role(MATCHING) if m.identity != self.identity]
            for m in others:
                if not m.metrics_address:
                    notes.append(f"matching member {m.address(MATCHING)} serves no metrics (--metrics-address): "
                                 "its backlog is not shown")
            scraped = await asyncio.gather(*(_matching_queues(m.metrics_address) for m in others if m.metrics_address))
            for m, (found, problem) in zip([m for m in others if m.metrics_address], scraped, strict=True):
                queues.extend({**q, "member": m.address(MATCHING)} for q in found)
                if problem:
                    notes.append(f"matching member {m.address(MATCHING)}: {problem}")
        elif self._matching is None:
            notes.append("this process runs no matching role: its task queues are not shown here")
        if c.queues.kind == "kafka":
            notes.append("tasks still on Kafka topics, not yet taken by a matching node, are not counted here "
                         "(`legato kafka describe` shows the consumer groups' lag)")
        return {"mode": mode, "identity": self.identity, "num_shards": num_shards, "members": members,
                "shards": shards, "queues": queues, "notes": notes}

    def gauges(self) -> Iterator[Sample]:
        """This node's samples of the gauges read at scrape time (legato/metrics.py)."""
        yield "legato_up", (role_list(self.roles),), 1.0
        if self._history is not None:
            yield from self._history.gauges()
        if self._matching is not None:
            yield from self._matching.task_queues.gauges()
        if self.membership is not None:
            for role in ROLE_ORDER:
                yield "legato_cluster_members", (role,), float(len(self.membership.view.with_role(role)))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ serving

    async def serve(self) -> dict[str, grpc.aio.Server]:
        """Serve each role of this process on its `cluster` address; the servers by role (the
        caller stops them before `stop()`). OSError when an address cannot be bound."""
        from frontend.grpc_server import serve as serve_frontend
        from history.grpc_server import serve as serve_history
        from matching.grpc_server import serve as serve_matching

        servers: dict[str, grpc.aio.Server] = {}

        def at(role: str) -> tuple[str, int]:
            return split_address(role_address(self.config, role))

        try:
            if self._history is not None:
                servers[HISTORY] = await serve_history(self._history, *at(HISTORY), config=self.config)
            if self._matching is not None:
                servers[MATCHING] = await serve_matching(self._matching, *at(MATCHING), config=self.config)
            if self._frontend is not None:
                servers[FRONTEND] = await serve_frontend(self._frontend, *at(FRONTEND), config=self.config)
        except BaseException:
            for server in servers.values():
                await server.stop(None)
            raise
        return servers


SCRAPE_TIMEOUT_S = 3.0  # a matching member's /metrics, for the web UI's cluster page


async def _matching_queues(metrics_address: str) -> tuple[list[dict[str, Any]], str]:
    """The task queues a matching member holds, from the backlog and poller gauges of its
    /metrics: (queues, "") or ([], what went wrong)."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)) as session, \
                session.get(f"http://{metrics_address}/metrics") as resp:
            if resp.status != 200:
                return [], f"its /metrics answered {resp.status}"
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        return [], f"its /metrics is unreachable ({type(e).__name__}: {e})".replace(" ()", "")
    queues: dict[tuple[str, str], dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        field = {"legato_matching_backlog": "backlog", "legato_matching_pollers": "pollers"}.get(family.name)
        if field is None:
            continue
        for sample in family.samples:
            key = (sample.labels.get("task_queue", ""), sample.labels.get("kind", ""))
            q = queues.setdefault(key, {"namespace": "", "task_queue": key[0], "kind": key[1], "backlog": 0,
                                        "pollers": 0})
            q[field] = int(sample.value)
    return [queues[k] for k in sorted(queues)], ""
