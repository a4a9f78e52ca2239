"""The internal gRPC API of matching: serves a `legato.api.MatchingService` (normally
`InProcessMatching`) to history nodes and frontends in other processes.

Each rpc mirrors one protocol method (`MatchingService` in `legato.proto`); requests and answers
are converted by `legato.wire` and `legato.wire_internal`, and errors, unexpected exceptions and
cancellation are handled as by every Legato server (`legato.grpc_serving`).

Long polls honour the caller: a task or mailbox poll is shortened to end, empty, before the
caller's deadline, and a poll whose caller goes away is cancelled, which puts a task it held back
on its queue. `AddTask` waits until the task is handed over, so its caller's deadline bounds that
wait and cancelling it withdraws the task (history redelivers it from its outbox).
"""

from __future__ import annotations

import logging

import grpc

from legato import api, wire
from legato import wire_internal as wi
from legato.config import Config
from legato.grpc_serving import Fit, Rpc, add_service, bound_port, empty, fit_wait, start_server

__all__ = ["bound_port", "rpcs", "serve"]

log = logging.getLogger("legato.matching.grpc")


def _fit_task_poll(long_poll_timeout_ms: int) -> Fit:
    """A task poll with timeout 0 waits the server's long-poll timeout: fit that to the deadline too."""
    def fit(req: api.PollRequest, remaining_s: float) -> api.PollRequest:
        fitted: api.PollRequest = fit_wait(req, remaining_s, long_poll_timeout_ms)
        return fitted
    return fit


def rpcs(config: Config) -> dict[str, Rpc]:
    """The rpc table; task polls are fitted to deadlines with `config.matching.long_poll_timeout_ms`."""
    fit_task_poll = _fit_task_poll(config.matching.long_poll_timeout_ms)
    return {
        "AddTask": Rpc("add_task", wi.add_task_request_from_pb, empty(wire.pb.AddTaskResponse)),
        "PollWorkflowTask": Rpc("poll_workflow_task", wire.poll_workflow_request_from_pb,
                                wire.poll_workflow_response_to_pb, fit=fit_task_poll),
        "PollActivityTask": Rpc("poll_activity_task", wire.poll_activity_request_from_pb,
                                wire.poll_activity_response_to_pb, fit=fit_task_poll),
        "DeliverMessage": Rpc("deliver_message", wi.deliver_message_from_pb, wi.deliver_message_response_to_pb,
                              spread=True),
        "OpenMailbox": Rpc("open_mailbox", wire.open_mailbox_request_from_pb, empty(wire.pb.OpenMailboxResponse)),
        "CloseMailbox": Rpc("close_mailbox", wire.close_mailbox_request_from_pb,
                            empty(wire.pb.CloseMailboxResponse)),
        "PollMailbox": Rpc("poll_mailbox", wire.poll_mailbox_request_from_pb, wire.poll_mailbox_response_to_pb,
                           fit=fit_wait),
        "OfferTask": Rpc("offer_task", wi.offer_task_from_pb, wi.offer_result_to_pb, spread=True),
        "QueryWorkflow": Rpc("query_workflow", wi.query_task_request_from_pb, wire.query_answer_to_pb,
                             fit=fit_wait),
        "RespondQueryTaskCompleted": Rpc("respond_query_task_completed", wire.query_answer_from_pb,
                                         empty(wire.pb.RespondQueryTaskCompletedResponse)),
    }


async def serve(service: api.MatchingService, host: str, port: int, *,
                config: Config | None = None, max_message_bytes: int | None = None) -> grpc.aio.Server:
    """Start serving `service` on host:port and return the started server; the caller stops it
    (`await server.stop(grace)`). Port 0 picks a free port: see `bound_port(server)`.

    Requests up to `max_message_bytes` are accepted (default: derived from `config.limits`, see
    `legato.wire.max_message_bytes`). Raises OSError when the address cannot be bound.
    """
    config = config or Config()
    return await start_server(
        lambda server: add_service(server, "MatchingService", service, rpcs(config), log),
        host, port, config=config, max_message_bytes=max_message_bytes, what="Legato matching gRPC API", log=log)
