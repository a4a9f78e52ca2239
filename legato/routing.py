"""Calls to the right node of a cluster (docs/cluster.md, "Routing").

`HistoryRouter` is a `legato.api.HistoryService` that sends each call to the history node the
assignment gives the call's shard (from the cluster view, kept current by ZooKeeper watches: no
lookup per request). When the shard is moving it tries again, for up to
`cluster.route_timeout_ms` from the first attempt that failed: a node that no longer owns the
shard names the owner it believes in (tried next), one that is still acquiring it asks for a
moment's patience, an unreachable one (killed: its shards move once its session expires) is tried
again after the view changes.
Clients see a short delay, never an error, unless no node serves the shard for that long.
A long poll keeps its deadline across re-routes: each attempt waits only what is left of it
(a poll re-sent whole to each new owner would wait its full timeout again on every move).

Retrying is safe because every history call is idempotent: starts, signals, cancels and
terminates carry request ids history deduplicates (the router gives one to a request without),
task responses carry task tokens history accepts once, and record-started calls carry the poll's
request id. A call that timed out (the deadline passed) is not retried: its caller decides.

`MatchingRouter` is a `legato.api.MatchingService` over the live matching nodes: polls go round
robin (every node gets polls, and a node without a poll for a task offers it to the others:
matching/forwarding.py), a caller's mailbox lives on the node its pid hashes to (rendezvous).
A query goes to every matching node at once (the worker it is for may poll any of them; a query
reads and changes nothing, so two answers cost only work): the first answer wins and the other
nodes' waits are cancelled. Its query id names the node, where the worker's answer is sent.

Both call a service in this process directly when it is the target.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from legato import api
from legato.assignment import score
from legato.config import GrpcConfig
from legato.errors import DeadlineExceeded, NotFound, ServiceError, ShardOwnershipLost, Unavailable
from legato.ids import new_request_id, shard_for
from legato.internal_clients import GrpcHistoryClient, GrpcMatchingClient
from legato.membership import HISTORY, MATCHING, ClusterView, MemberInfo, Membership
from legato.tls import ClientSecurity
from legato.tokens import TaskToken

log = logging.getLogger("legato.routing")

T = TypeVar("T")
C = TypeVar("C")
R = TypeVar("R", api.GetResultRequest, api.GetHistoryRequest)  # the routed long polls

_BACKOFF_S = 0.02
_BACKOFF_MAX_S = 0.1  # a shard being acquired is asked again this often (its lock is not watched)
# Unavailable reasons after which a call certainly did not take effect (any call may go again).
NOT_APPLIED = frozenset({"ShardNotOwned", "ShardMoving", "ShardOwnershipLost", "ShuttingDown", "NotStarted",
                         "WritesPaused", "MatchingStopped", "ClientClosed"})
# ... and after which it may have, or may not (idempotent calls go again).
UNKNOWN_OUTCOME = frozenset({"ServerUnreachable", "WriteOutcomeUnknown"})


class _Clients(Generic[C]):
    """One client per peer address, made on first use."""

    def __init__(self, factory: Callable[[str], C]) -> None:
        self._factory = factory
        self._by_address: dict[str, C] = {}

    def get(self, address: str) -> C:
        client = self._by_address.get(address)
        if client is None:
            client = self._by_address[address] = self._factory(address)
        return client

    async def close(self) -> None:
        clients, self._by_address = self._by_address, {}
        for c in clients.values():
            await c.close()  # type: ignore[attr-defined]


class _Wait:
    """What is left of a long poll's wait, counted from when the router first received it."""

    def __init__(self, timeout_ms: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + max(0, timeout_ms) / 1000.0

    def left_ms(self) -> int:
        return max(0, int((self._deadline - self._loop.time()) * 1000))


def _retryable(e: ServiceError) -> bool:
    return isinstance(e, Unavailable) and (isinstance(e, ShardOwnershipLost) or e.reason in NOT_APPLIED
                                           or e.reason in UNKNOWN_OUTCOME)


class HistoryRouter:
    """`legato.api.HistoryService` over the cluster's history nodes (see the module docstring)."""

    def __init__(self, membership: Membership, num_shards: int, route_timeout_ms: int,
                 local: api.HistoryService | None = None, security: ClientSecurity | None = None,
                 grpc_config: GrpcConfig | None = None) -> None:
        self._membership = membership
        self._view: ClusterView = membership.view
        self._num_shards = num_shards
        self._timeout_s = route_timeout_ms / 1000.0
        self._local = local
        self._local_identity = membership.identity if local is not None else ""
        self._clients: _Clients[GrpcHistoryClient] = _Clients(
            lambda a: GrpcHistoryClient(a, read_attempts=1, security=security, grpc_config=grpc_config))

    async def close(self) -> None:
        await self._clients.close()

    def _target(self, shard_id: int, hint: str) -> tuple[api.HistoryService, str] | None:
        if hint:
            member = self._view.member_by_address(HISTORY, hint)
            if member is not None and member.identity == self._local_identity and self._local is not None:
                return self._local, hint
            return self._clients.get(hint), hint
        owner = self._view.shard_owner(shard_id)
        if owner is None:
            return None
        if owner.identity == self._local_identity and self._local is not None:
            return self._local, owner.address(HISTORY)
        address = owner.address(HISTORY)
        return (self._clients.get(address), address) if address else None

    async def _route(self, namespace: str, workflow_id: str, call: Callable[[api.HistoryService], Awaitable[T]]) -> T:
        shard_id = shard_for(namespace, workflow_id, self._num_shards)
        loop = asyncio.get_running_loop()
        deadline: float | None = None  # route_timeout_ms counts from the first attempt that failed
        hint, backoff = "", _BACKOFF_S
        last: ServiceError | None = None
        while True:
            target = self._target(shard_id, hint)
            hint = ""
            if target is not None:
                service, address = target
                try:
                    return await call(service)
                except ServiceError as e:
                    if not _retryable(e):
                        raise
                    last = e
                    if deadline is None:
                        deadline = loop.time() + self._timeout_s
                    owner = e.owner if isinstance(e, ShardOwnershipLost) else ""
                    if owner and owner != address and loop.time() < deadline:
                        hint = owner  # the node it went to knows better: go there at once
                        continue
            if deadline is None:  # no node is assigned the shard
                deadline = loop.time() + self._timeout_s
            remaining = deadline - loop.time()
            if remaining <= 0:
                why = f"; last error: {last.message}" if last is not None else "; no history node is assigned it"
                raise Unavailable(f"shard {shard_id} (workflow {workflow_id!r}) was not served by any history node "
                                  f"within {self._timeout_s:g}s (cluster.route_timeout_ms){why}",
                                  reason="ShardUnavailable")
            # Wait for the view to change (a new assignment or member), at most a short backoff.
            await self._membership.wait_change(min(backoff, remaining))
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _route_wait(self, namespace: str, workflow_id: str, timeout_ms: int, req: R,
                          call: Callable[[api.HistoryService, R], Awaitable[T]]) -> T:
        """`_route` for a long poll: each attempt sends `req` with the wait that is left (0, a
        plain read, once it is used up: the owner answers as a wait that timed out does)."""
        wait = _Wait(timeout_ms)
        return await self._route(namespace, workflow_id,
                                 lambda h: call(h, dataclasses.replace(req, timeout_ms=wait.left_ms())))

    def _by_token(self, token: bytes, call: Callable[[api.HistoryService], Awaitable[T]]) -> Awaitable[T]:
        tok = TaskToken.decode(token)
        return self._route(tok.namespace, tok.workflow_id, call)

    # ------------------------------------------------------------ workflow lifecycle

    async def start_workflow(self, req: api.StartWorkflowRequest) -> api.StartWorkflowResponse:
        req.request_id = req.request_id or new_request_id()
        return await self._route(req.namespace, req.workflow_id, lambda h: h.start_workflow(req))

    async def signal_workflow(self, req: api.SignalWorkflowRequest) -> None:
        req.request_id = req.request_id or new_request_id()
        await self._route(req.ref.namespace, req.ref.workflow_id, lambda h: h.signal_workflow(req))

    async def terminate_workflow(self, req: api.TerminateWorkflowRequest) -> None:
        req.request_id = req.request_id or new_request_id()
        await self._route(req.ref.namespace, req.ref.workflow_id, lambda h: h.terminate_workflow(req))

    async def request_cancel_workflow(self, req: api.CancelWorkflowRequest) -> None:
        req.request_id = req.request_id or new_request_id()
        await self._route(req.ref.namespace, req.ref.workflow_id, lambda h: h.request_cancel_workflow(req))

    async def describe_workflow(self, ref: api.ExecutionRef) -> api.DescribeWorkflowResponse:
        return await self._route(ref.namespace, ref.workflow_id, lambda h: h.describe_workflow(ref))

    async def get_workflow_history(self, req: api.GetHistoryRequest) -> api.GetHistoryResponse:
        if not req.wait_new_event:
            return await self._route(req.ref.namespace, req.ref.workflow_id, lambda h: h.get_workflow_history(req))
        return await self._route_wait(req.ref.namespace, req.ref.workflow_id, req.timeout_ms, req,
                                      lambda h, r: h.get_workflow_history(r))

    async def get_workflow_result(self, req: api.GetResultRequest) -> api.GetResultResponse:
        return await self._route_wait(req.ref.namespace, req.ref.workflow_id, req.timeout_ms, req,
                                      lambda h, r: h.get_workflow_result(r))

    # ------------------------------------------------------------ tasks

    async def record_workflow_task_started(self, task: api.TaskInfo, request_id: str,
                                           identity: str) -> api.WorkflowTask:
        return await self._route(task.namespace, task.workflow_id,
                                 lambda h: h.record_workflow_task_started(task, request_id, identity))

    async def record_activity_task_started(self, task: api.TaskInfo, request_id: str,
                                           identity: str) -> api.ActivityTask:
        return await self._route(task.namespace, task.workflow_id,
                                 lambda h: h.record_activity_task_started(task, request_id, identity))

    async def respond_workflow_task_completed(
            self, req: api.RespondWorkflowTaskCompletedRequest) -> api.RespondWorkflowTaskCompletedResponse:
        return await self._by_token(req.task_token, lambda h: h.respond_workflow_task_completed(req))

    async def respond_workflow_task_failed(self, req: api.RespondWorkflowTaskFailedRequest) -> None:
        await self._by_token(req.task_token, lambda h: h.respond_workflow_task_failed(req))

    async def respond_activity_task_completed(
            self, req: api.RespondActivityTaskCompletedRequest) -> api.RespondActivityTaskCompletedResponse:
        return await self._by_token(req.task_token, lambda h: h.respond_activity_task_completed(req))

    async def respond_activity_task_failed(self, req: api.RespondActivityTaskFailedRequest) -> None:
        await self._by_token(req.task_token, lambda h: h.respond_activity_task_failed(req))

    async def record_activity_heartbeat(
            self, req: api.RecordActivityHeartbeatRequest) -> api.RecordActivityHeartbeatResponse:
        return await self._by_token(req.task_token, lambda h: h.record_activity_heartbeat(req))

    async def respond_activity_task_canceled(self, req: api.RespondActivityTaskCanceledRequest) -> None:
        await self._by_token(req.task_token, lambda h: h.respond_activity_task_canceled(req))

    # ------------------------------------------------------------ processes

    async def monitor_workflow(self, req: api.MonitorWorkflowRequest) -> None:
        await self._route(req.ref.namespace, req.ref.workflow_id, lambda h: h.monitor_workflow(req))

    async def register_monitor(self, req: api.RegisterMonitorRequest) -> api.RegisterMonitorResponse:
        return await self._route(req.ref.namespace, req.ref.workflow_id, lambda h: h.register_monitor(req))

    async def record_child_closed(self, req: api.RecordChildClosedRequest) -> None:
        await self._route(req.parent.namespace, req.parent.workflow_id, lambda h: h.record_child_closed(req))

    async def deliver_monitored_closed(self, req: api.DeliverMonitoredClosedRequest) -> None:
        await self._route(req.ref.namespace, req.ref.workflow_id, lambda h: h.deliver_monitored_closed(req))

    async def get_query_target(self, ref: api.ExecutionRef) -> api.QueryTarget:
        return await self._route(ref.namespace, ref.workflow_id, lambda h: h.get_query_target(ref))


class MatchingRouter:
    """`legato.api.MatchingService` over the cluster's matching nodes (see the module docstring)."""

    def __init__(self, membership: Membership, route_timeout_ms: int, long_poll_timeout_ms: int,
                 local: api.MatchingService | None = None, security: ClientSecurity | None = None,
                 grpc_config: GrpcConfig | None = None) -> None:
        self._membership = membership
        self._view = membership.view
        self._timeout_s = route_timeout_ms / 1000.0
        self._long_poll_ms = long_poll_timeout_ms
        self._local = local
        self._local_identity = membership.identity if local is not None else ""
        self._clients: _Clients[GrpcMatchingClient] = _Clients(
            lambda a: GrpcMatchingClient(a, long_poll_timeout_ms=long_poll_timeout_ms, security=security,
                                         grpc_config=grpc_config))
        self._turn = itertools.count()

    async def close(self) -> None:
        await self._clients.close()

    def _service(self, member: MemberInfo) -> api.MatchingService:
        if member.identity == self._local_identity and self._local is not None:
            return self._local
        return self._clients.get(member.address(MATCHING))

    def peer(self, member: MemberInfo) -> api.MatchingPeer:
        """The client another matching node's forwarder offers tasks through."""
        return self._clients.get(member.address(MATCHING))

    async def _members(self, deadline: float) -> list[MemberInfo]:
        loop = asyncio.get_running_loop()
        while True:
            members = self._view.with_role(MATCHING)
            if members:
                return members
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Unavailable(f"no matching node is in the cluster (waited {self._timeout_s:g}s, "
                                  "cluster.route_timeout_ms)", reason="NoMatchingNode")
            await self._membership.wait_change(remaining)

    async def _any(self, call: Callable[[api.MatchingService], Awaitable[T]]) -> T:
        """Round robin over the matching nodes; an unreachable or stopping node's turn goes to the next."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        backoff = _BACKOFF_S
        while True:
            members = await self._members(deadline)
            start = next(self._turn)
            last: ServiceError | None = None
            for i in range(len(members)):
                try:
                    return await call(self._service(members[(start + i) % len(members)]))
                except Unavailable as e:
                    if e.reason not in NOT_APPLIED and e.reason not in UNKNOWN_OUTCOME:
                        raise
                    last = e
            remaining = deadline - loop.time()
            if remaining <= 0:
                assert last is not None
                raise last
            await self._membership.wait_change(min(backoff, remaining))
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _owner_of(self, key: str) -> api.MatchingService:
        """The node a caller's mailbox lives on: the rendezvous winner for its pid."""
        members = await self._members(asyncio.get_running_loop().time() + self._timeout_s)
        return self._service(max(members, key=lambda m: score(0, f"{m.identity}\x00{key}")))

    async def add_task(self, task: api.TaskInfo) -> None:
        await self._any(lambda m: m.add_task(task))

    async def _poll(self, req: api.PollRequest,
                    call: Callable[[api.MatchingService, api.PollRequest], Awaitable[T | None]]) -> T | None:
        """`_any` for a task poll: a poll that goes to another node (its node stopped or was
        killed) waits there only what is left of its wait; none left, no task (a poll timed out)."""
        wait = _Wait(req.timeout_ms or self._long_poll_ms)

        async def attempt(m: api.MatchingService) -> T | None:
            left = wait.left_ms()
            return None if left <= 0 else await call(m, dataclasses.replace(req, timeout_ms=left))

        return await self._any(attempt)

    async def poll_workflow_task(self, req: api.PollRequest) -> api.WorkflowTask | None:
        return await self._poll(req, lambda m, r: m.poll_workflow_task(r))

    async def poll_activity_task(self, req: api.PollRequest) -> api.ActivityTask | None:
        return await self._poll(req, lambda m, r: m.poll_activity_task(r))

    async def query_workflow(self, req: api.QueryTaskRequest) -> api.RespondQueryTaskCompletedRequest:
        members = await self._members(asyncio.get_running_loop().time() + self._timeout_s)

        def on(m: MemberInfo) -> Awaitable[api.RespondQueryTaskCompletedRequest]:
            q = dataclasses.replace(req.query, query_id=f"{m.identity}{QUERY_ID_SEPARATOR}{req.query.query_id}")
            return self._service(m).query_workflow(dataclasses.replace(req, query=q))

        return await first_answer([on(m) for m in members])

    async def respond_query_task_completed(self, req: api.RespondQueryTaskCompletedRequest) -> None:
        node, sep, _ = req.task_token.decode(errors="replace").rpartition(QUERY_ID_SEPARATOR)
        member = next((m for m in self._view.with_role(MATCHING) if m.identity == node), None) if sep else None
        if member is None:
            raise NotFound(f"no query waits for this answer: the matching node {node or '(none named)'} that "
                           "held it is not in the cluster", reason="QueryNotWaiting")
        await self._service(member).respond_query_task_completed(req)

    async def deliver_message(self, pid: str, msg: api.ProcessMessage) -> bool:
        return await (await self._owner_of(pid)).deliver_message(pid, msg)

    async def open_mailbox(self, pid: str) -> None:
        await (await self._owner_of(pid)).open_mailbox(pid)

    async def close_mailbox(self, pid: str) -> None:
        await (await self._owner_of(pid)).close_mailbox(pid)

    async def poll_mailbox(self, req: api.PollMailboxRequest) -> list[api.ProcessMessage]:
        return await (await self._owner_of(req.pid)).poll_mailbox(req)


QUERY_ID_SEPARATOR = "/"  # "<matching node identity>/<query id>" (identities hold no "/")


async def first_answer(calls: list[Awaitable[T]]) -> T:
    """The first of `calls` to succeed (the rest are cancelled); when all fail, a DeadlineExceeded
    if one of them timed out (the query had its chance there), else the first error."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    errors: list[BaseException] = []
    try:
        for done in asyncio.as_completed(tasks):
            try:
                return await done
            except ServiceError as e:
                errors.append(e)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    raise next((e for e in errors if isinstance(e, DeadlineExceeded)), errors[0])


def _implements_the_protocols(h: HistoryRouter, m: MatchingRouter) -> tuple[api.HistoryService, api.MatchingService]:
    """Never called: mypy checks here that the routers implement the protocols they stand for."""
    return h, m
