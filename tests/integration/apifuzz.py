"""A seeded fuzzer of the public gRPC API (`legato.v1.WorkflowService`), used by test_fuzz_api.py.

Requests are sent as raw bytes through a generic channel (identity serializers), so that the
server sees exactly what a hostile or broken client could send:

* random bytes as the protobuf body;
* a valid request (built from what the server knows: real workflow ids, real task tokens from
  real polls) with a few fields replaced by random values of the field's type, or with random
  bytes flipped, cut or inserted in its encoding;
* requests with every field random.

The values are drawn from pools of the inputs that broke servers before: deep JSON, huge and
negative integers, 2^63, NaN and Infinity, lone surrogates, cron schedules that never fire, bad
durations, long strings, malformed task tokens, and random visibility queries (`random_query`).
Everything is decided by one `random.Random(seed)`, so a run can be replayed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import string
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor as pb_descriptor
from google.protobuf.message import Message

from legato.proto import legato_pb2 as pb

SERVICE = "legato.v1.WorkflowService"
_SERVICE_DESC = pb.DESCRIPTOR.services_by_name["WorkflowService"]
RPCS: dict[str, type[Message]] = {
    m.name: getattr(pb, m.input_type.name) for m in _SERVICE_DESC.methods
}
# Calls that may wait for something to happen; the fuzzer keeps their waits short (see _short_waits).
LONG_POLLS = frozenset({"PollWorkflowTask", "PollActivityTask", "PollMailbox", "GetWorkflowResult",
                        "GetWorkflowHistory"})
TASK_QUEUE = "fuzz-q"

F = pb_descriptor.FieldDescriptor

# ---------------------------------------------------------------- value pools


def _deep_list(n: int) -> str:
    return "[" * n + "]" * n


def _deep_object(n: int) -> str:
    return '{"a":' * n + "1" + "}" * n


INTS = [0, 1, -1, 2, 7, 100, 1000, 30_000, 2**31 - 1, 2**31, -2**31, 2**32, 2**53, 2**62, 2**63 - 1, -2**63,
        3_153_600_000_000, 3_153_600_000_001, 600_000, 600_001]
JSON_TEXTS = [
    "", "null", "1", "-1", "1.5", "true", '"text"', "[]", "{}", "[1,2,3]", '{"a":1}', '["x"]', '[{"a":[1,{"b":2}]}]',
    "NaN", "Infinity", "-Infinity", "[NaN]", '{"a":Infinity}', "1e400", "[1e400]", "-1e400", "[-0.0]",
    "9" * 30, "[" + "9" * 30 + "]", "[" + "9" * 5000 + "]", '"\\ud800"', '["\\udfff"]', '{"\\ud800":1}',
    '{"a":', "[1,", "{'a':1}", "[1,]", '{"a":1,"a":2}', "\x00", "[\"\x00\"]", '"' + "x" * 70_000 + '"',
    _deep_list(10), _deep_list(63), _deep_list(64), _deep_list(65), _deep_list(101), _deep_list(600),
    _deep_list(1000), _deep_list(5000), _deep_object(65), _deep_object(5000), "[" * 5000,
    '{"CustomKeyword":"x","CustomInt":1,"flag":true}', '{"n":' + str(2**63) + "}", '{"n":-' + str(2**63 + 1) + "}",
    '{"n":1e308}', '{"s":["a",1,true,null,{"x":1}]}', '{"":1}', '{"' + "k" * 2000 + '":1}',
    '{"initial_interval_ms":1,"maximum_attempts":2}', '{"initial_interval_ms":9223372036854775807}',
    '{"initial_interval_ms":1,"backoff_coefficient":1000,"maximum_interval_ms":9223372036854775807}',
    '{"maximum_attempts":9223372036854775807}', '{"backoff_coefficient":1e308}', '{"unknown":1}',
    '{"initial_interval_ms":-5}', '{"non_retryable_error_types":[1]}',
]
TEXTS = [
    "", "a", "x" * 100, "x" * 1001, "x" * 10_000, "é漢字🙂", "\x00", "a\nb", " ", "..", "/", "a/b", "@", "@p", "@@",
    "@" + "p" * 2000, "default", "fuzz", TASK_QUEUE, "fuzz:w", "%s%n", "'; DROP TABLE runs; --", "\u202e", "\ufeff",
    "\U0010ffff", "-1", "0", "null", "true", "*", "?", "\\", "'", '"',
]
CRONS = ["", "* * * * *", "0 0 30 2 *", "0 0 31 4 *", "0 0 31 2 *", "61 * * * *", "* * * *", "@daily", "@yearly",
         "0 */6 * * *", "*/0 * * * *", "0 0 29 2 1", "1-0 * * * *", "0 0 * * 8", "0 0 L * *", "0 0 ? * *",
         "0 0 1 1 * 2099", "a b c d e", "9999999999 * * * *", "0 0 29 2 *", "0 0 1-31/40 * *", "-1 * * * *",
         "* * * * * * *"]
ENUMS = {
    "id_reuse_policy": ["", "allow_duplicate", "allow_duplicate_failed_only", "reject_duplicate", "bogus"],
    "id_conflict_policy": ["", "fail", "use_existing", "terminate_existing", "bogus"],
    "parent_close_policy": ["", "terminate", "abandon", "request_cancel", "bogus"],
    "cause": ["WORKFLOW_ERROR", "NON_DETERMINISTIC", "FORBIDDEN_CALL", "LIMIT_EXCEEDED", "BAD_COMMAND", "", "bogus"],
    "command_type": ["ScheduleActivityTask", "StartTimer", "CancelTimer", "RecordMarker", "CompleteWorkflowExecution",
                     "FailWorkflowExecution", "CancelWorkflowExecution", "ContinueAsNewWorkflowExecution",
                     "UpsertWorkflowSearchAttributes", "ModifyWorkflowProperties", "RequestCancelActivityTask",
                     "StartChildWorkflowExecution", "SignalExternalWorkflowExecution",
                     "RequestCancelExternalWorkflowExecution", "TerminateExternalWorkflowExecution",
                     "MonitorExternalWorkflowExecution", "", "bogus"],
    "kind": ["", "UNKNOWN", "INVALID", "INTERNAL", "LIMIT_EXCEEDED", "bogus kind"],
}
ATTR_VALUES: list[Any] = [
    *INTS, "x", "", "a" * 2000, None, True, [], {}, [1], {"a": 1}, 1.5, -0.5, 1e308, "1s", "é",
    {"message": "m", "kind": "INTERNAL"}, {"message": 1}, {"cause": {"cause": {"message": "m"}}},
    {"initial_interval_ms": 2**63 - 1, "maximum_attempts": 2**63 - 1}, {"backoff_coefficient": 1000,
                                                                          "initial_interval_ms": 1},
    {"initial_interval_ms": 0}, {"maximum_interval_ms": 1, "initial_interval_ms": 5}, {"CustomInt": 2**63},
    {"CustomInt": 10**400}, {"x": [1, "a", None, {"b": 1}]}, [{"topic": "t", "payload": 1}] * 3,
    json.loads(_deep_list(60)), json.loads(_deep_list(70)), {"k" * 300: 1}, ["x"] * 3000,
]
CHILD_OPTION_KEYS = ["execution_timeout_ms", "run_timeout_ms", "task_timeout_ms", "id_reuse_policy",
                     "id_conflict_policy", "execution_error_when_already_started", "retry_policy", "cron_schedule",
                     "memo", "search_attributes", "start_delay_ms", "context", "start_messages",
                     "parent_close_policy", "wait_for_cancellation", "enable_eager_start", "bogus"]
_QUERY_FIELDS = ["WorkflowId", "WorkflowType", "RunId", "TaskQueue", "ExecutionStatus", "StartTime", "CloseTime",
                 "CustomKeyword", "CustomInt", "flag", "SearchAttributes.x", "`odd name`", "`a``b`", "Unknown.x",
                 "SearchAttributes.", "``"]
_QUERY_VALUES = ["'x'", "'fuzz:w'", "'Running'", "'COMPLETED'", "'bogus'", "'2026-11-21T10:00:00Z'", "'2026-11-21'",
                 "'9999-12-31T23:59:59Z'", "'0001-01-01'", "'not a time'", "0", "-1", "1.5", str(2**63),
                 str(2**64), "1e308", "1e400", "-1e400", "true", "FALSE", "'it''s'", '"dq"', "''",
                 "'" + "v" * 300 + "'", "9" * 400, "9" * 5000, ".5", "5.", "0x10", "NaN"]
_QUERY_OPS = ["=", "!=", "<>", "<", ">", "<=", ">=", "==", "LIKE", "IN", "NOT IN", "BETWEEN", "IS"]


def random_query(rng: random.Random, depth: int = 0) -> str:
    """A visibility query: mostly grammatical, with random damage (see legato/query.py)."""
    roll = rng.random()
    if roll < 0.05:
        return "".join(rng.choice("()'\"`=<>!,.ANDORNTI x1") for _ in range(rng.randint(0, 30)))
    if roll < 0.08:
        return rng.choice(["(" * 200 + "WorkflowId='x'" + ")" * 200, "NOT " * 300 + "WorkflowId='x'",
                           " OR ".join(["WorkflowId='x'"] * 600), "WorkflowId IN (" + ",".join(["'x'"] * 2000) + ")",
                           "ORDER BY StartTime", "GROUP BY ExecutionStatus", "ORDER BY CloseTime",
                           "WorkflowId = 'x' ORDER BY StartTime ASC", "GROUP BY WorkflowId", ""])
    expr = _query_expr(rng, depth)
    tail = rng.choice(["", "", "", " ORDER BY StartTime", " ORDER BY StartTime DESC", " ORDER BY StartTime ASC",
                       " GROUP BY ExecutionStatus", " ORDER BY RunId", " GROUP BY", " ORDER"])
    return expr + tail


def _query_expr(rng: random.Random, depth: int) -> str:
    if depth < 3 and rng.random() < 0.4:
        op = rng.choice([" AND ", " OR ", " and ", " Or "])
        left, right = _query_expr(rng, depth + 1), _query_expr(rng, depth + 1)
        out = left + op + right
        return f"({out})" if rng.random() < 0.3 else out
    if depth < 3 and rng.random() < 0.1:
        return "NOT " + _query_expr(rng, depth + 1)
    f = rng.choice(_QUERY_FIELDS)
    op = rng.choice(_QUERY_OPS)
    if op in ("IN", "NOT IN"):
        values = ", ".join(rng.choice(_QUERY_VALUES) for _ in range(rng.randint(0, 4)))
        return f"{f} {op} ({values})"
    if op == "BETWEEN":
        return f"{f} BETWEEN {rng.choice(_QUERY_VALUES)} AND {rng.choice(_QUERY_VALUES)}"
    return f"{f} {op} {rng.choice(_QUERY_VALUES)}"


# ---------------------------------------------------------------- what the server knows


@dataclass
class Known:
    """Real things the requests can point at, so that mutated requests get past the first checks."""

    workflow_ids: list[str] = field(default_factory=lambda: ["fuzz-wf"])
    run_ids: list[str] = field(default_factory=list)
    workflow_tokens: list[bytes] = field(default_factory=list)
    activity_tokens: list[bytes] = field(default_factory=list)
    pids: list[str] = field(default_factory=lambda: ["@fuzz-caller"])


def _fake_tokens(rng: random.Random, known: Known) -> bytes:
    """A task token that decodes (base64 JSON) but says something odd."""
    d: dict[str, Any] = {"kind": rng.choice(["workflow", "activity", "", "bogus", 1]),
                         "namespace": rng.choice(["default", "", 1, None, "x" * 2000]),
                         "workflow_id": rng.choice([*known.workflow_ids, "", None, "x" * 2000]),
                         "run_id": rng.choice([*known.run_ids, "", "r", None]),
                         "scheduled_event_id": rng.choice([*INTS, None, "1", 1.5, 2**70]),
                         "started_event_id": rng.choice([*INTS, None, "1"]),
                         "attempt": rng.choice([*INTS, None, True, 2**70])}
    if rng.random() < 0.2:
        d.pop(rng.choice(list(d)))
    if rng.random() < 0.1:
        d["extra"] = 1
    text = json.dumps(d) if rng.random() < 0.9 else rng.choice(["[]", "1", "null", _deep_list(3000), "{"])
    return base64.urlsafe_b64encode(text.encode())


class Seeder:
    """Keeps `known` supplied with fresh things through the real API: new workflows on
    `TASK_QUEUE`, their workflow tasks (polled, so their tokens are live), activity tasks (from
    workflow tasks completed with an activity), and an open caller mailbox."""

    def __init__(self, client: Any, known: Known, keep: int = 20) -> None:
        self.client = client
        self.known = known
        self.keep = keep
        self._n = 0

    async def __call__(self) -> None:
        from legato import api
        from legato.commands import Command, CommandType
        from legato.errors import ServiceError

        k, c = self.known, self.client
        try:
            for _ in range(3):
                self._n += 1
                wid = f"fuzz-seed-{self._n}-{time.monotonic_ns()}"
                r = await c.start_workflow(api.StartWorkflowRequest(wid, "fuzz:w", TASK_QUEUE, input=[1]))
                k.workflow_ids.append(wid)
                k.run_ids.append(r.run_id)
            for i in range(3):
                t = await c.poll_workflow_task(api.PollRequest(TASK_QUEUE, timeout_ms=100))
                if t is None:
                    break
                if i == 0:  # one schedules an activity, so that there are activity tasks
                    await c.respond_workflow_task_completed(api.RespondWorkflowTaskCompletedRequest(
                        t.task_token, [Command(CommandType.ScheduleActivityTask, {
                            "activity_id": "a", "activity_type": "fuzz:a", "task_queue": TASK_QUEUE})]))
                else:
                    k.workflow_tokens.append(t.task_token)
            a = await c.poll_activity_task(api.PollRequest(TASK_QUEUE, timeout_ms=100))
            if a is not None:
                k.activity_tokens.append(a.task_token)
            await c.open_mailbox(k.pids[0])
        except ServiceError:
            pass  # the fuzzed requests may have closed what this touches: the next round does better
        for items in (k.workflow_ids, k.run_ids, k.workflow_tokens, k.activity_tokens):
            del items[:-self.keep]


# ---------------------------------------------------------------- generation


class Generator:
    """Random requests for the rpcs of `RPCS`, from one seeded `random.Random`."""

    def __init__(self, rng: random.Random, known: Known) -> None:
        self.rng = rng
        self.known = known

    # -- field values

    def text(self, name: str) -> str:
        rng = self.rng
        if name.endswith("_json"):
            return rng.choice(JSON_TEXTS)
        if name == "cron_schedule":
            return rng.choice(CRONS)
        if name == "query":
            return random_query(rng)
        if name in ENUMS and rng.random() < 0.8:
            return rng.choice(ENUMS[name])
        if name in ("workflow_id", "target") and rng.random() < 0.5:
            return rng.choice(self.known.workflow_ids + self.known.pids)
        if name in ("run_id",) and self.known.run_ids and rng.random() < 0.5:
            return rng.choice(self.known.run_ids)
        if name in ("pid", "monitor_pid", "monitors") and rng.random() < 0.6:
            return rng.choice([*self.known.pids, "@" + str(rng.randint(0, 5))])
        if name == "task_queue" and rng.random() < 0.5:
            return TASK_QUEUE
        if rng.random() < 0.1:
            return "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 40)))
        return rng.choice(TEXTS)

    def integer(self, f: F) -> int:
        rng = self.rng
        v = rng.choice(INTS) if rng.random() < 0.8 else rng.randint(-2**63, 2**63 - 1)
        if f.type in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
            v = max(-2**31, min(2**31 - 1, v))
        elif f.type in (F.TYPE_UINT32, F.TYPE_FIXED32):
            v = max(0, min(2**32 - 1, v))
        elif f.type in (F.TYPE_UINT64, F.TYPE_FIXED64):
            v = max(0, v)
        return v

    def blob(self, name: str) -> bytes:
        rng = self.rng
        roll = rng.random()
        tokens = self.known.activity_tokens if "Activity" in name else self.known.workflow_tokens
        pool = self.known.workflow_tokens + self.known.activity_tokens
        if roll < 0.4 and (tokens or pool):
            return rng.choice(tokens or pool)
        if roll < 0.7:
            return _fake_tokens(rng, self.known)
        if roll < 0.8:
            return b""
        return rng.randbytes(rng.randint(1, 64))

    def value(self, f: F, rpc: str, depth: int) -> Any:
        if f.type == F.TYPE_STRING:
            return self.text(f.name)
        if f.type == F.TYPE_BYTES:
            return self.blob(rpc if f.name == "task_token" else f.name)
        if f.type == F.TYPE_BOOL:
            return self.rng.random() < 0.5
        if f.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            return self.rng.choice([0.0, -1.0, 1e308, float("inf"), float("nan")])
        return self.integer(f)

    # -- messages

    def fill(self, m: Message, rpc: str, depth: int = 0, every: bool = False) -> None:
        """Set random values in `m`: every field (`every`), else each with probability 1/2."""
        for f in m.DESCRIPTOR.fields:
            if not every and self.rng.random() < 0.5:
                continue
            self.set_random(m, f, rpc, depth)

    def set_random(self, m: Message, f: F, rpc: str, depth: int) -> None:
        rng = self.rng
        if f.is_repeated:
            m.ClearField(f.name)
            n = rng.choice([0, 1, 1, 2, 3, 50]) if rng.random() < 0.98 else 2000
            for _ in range(n):
                if f.type == F.TYPE_MESSAGE and f.message_type.name == "Command" and rng.random() < 0.8:
                    getattr(m, f.name).append(self._command())
                elif f.type == F.TYPE_MESSAGE:
                    self.fill(getattr(m, f.name).add(), rpc, depth + 1)
                else:
                    getattr(m, f.name).append(self.value(f, rpc, depth))
            return
        if f.type == F.TYPE_MESSAGE:
            sub = getattr(m, f.name)
            if depth > 4 or rng.random() < 0.15:
                m.ClearField(f.name)
            elif f.message_type.name == "Failure" and rng.random() < 0.05:
                self._deep_failure(sub, rng.choice([40, 99, 150, 1000]))
            else:
                sub.SetInParent()
                self.fill(sub, rpc, depth + 1)
            return
        setattr(m, f.name, self.value(f, rpc, depth))

    def _deep_failure(self, m: Message, n: int) -> None:
        cur = m
        for i in range(n):
            cur.message = f"level {i}"
            cur = cur.cause

    def template(self, rpc: str) -> Message:
        """A request that a server would accept (given what `known` has)."""
        rng, k = self.rng, self.known
        wid = rng.choice(k.workflow_ids)
        ref = pb.ExecutionRef(workflow_id=wid, run_id=rng.choice(["", *k.run_ids[-3:]]))
        cls = RPCS[rpc]
        wtoken = rng.choice(k.workflow_tokens) if k.workflow_tokens else b""
        atoken = rng.choice(k.activity_tokens) if k.activity_tokens else b""
        build: dict[str, Callable[[], Message]] = {
            "StartWorkflow": lambda: pb.StartWorkflowRequest(
                workflow_id=f"fuzz-{rng.randint(0, 50)}", workflow_type="fuzz:w", task_queue=TASK_QUEUE,
                input_json='[{"n":1}]', request_id=str(rng.random())),
            "SignalWorkflow": lambda: pb.SignalWorkflowRequest(ref=ref, signal_name="s", input_json='{"a":1}'),
            "TerminateWorkflow": lambda: pb.TerminateWorkflowRequest(ref=ref, reason="fuzz"),
            "RequestCancelWorkflow": lambda: pb.RequestCancelWorkflowRequest(ref=ref, reason="fuzz"),
            "DescribeWorkflow": lambda: pb.DescribeWorkflowRequest(ref=ref),
            "GetWorkflowHistory": lambda: pb.GetWorkflowHistoryRequest(ref=ref, first_event_id=1, page_size=10),
            "GetWorkflowResult": lambda: pb.GetWorkflowResultRequest(ref=ref, timeout_ms=1),
            "ListWorkflows": lambda: pb.ListWorkflowsRequest(query=random_query(rng), page_size=10),
            "CountWorkflows": lambda: pb.CountWorkflowsRequest(query=random_query(rng)),
            "PollWorkflowTask": lambda: pb.PollWorkflowTaskRequest(task_queue=TASK_QUEUE, timeout_ms=1),
            "RespondWorkflowTaskCompleted": lambda: pb.RespondWorkflowTaskCompletedRequest(
                task_token=wtoken, commands=[self._command()]),
            "RespondWorkflowTaskFailed": lambda: pb.RespondWorkflowTaskFailedRequest(
                task_token=wtoken, cause="WORKFLOW_ERROR", failure=pb.Failure(message="m", kind="INTERNAL")),
            "PollActivityTask": lambda: pb.PollActivityTaskRequest(task_queue=TASK_QUEUE, timeout_ms=1),
            "RespondActivityTaskCompleted": lambda: pb.RespondActivityTaskCompletedRequest(
                task_token=atoken, result_json="1"),
            "RespondActivityTaskFailed": lambda: pb.RespondActivityTaskFailedRequest(
                task_token=atoken, failure=pb.Failure(message="m", kind="INTERNAL", retryable=True)),
            "RecordActivityHeartbeat": lambda: pb.RecordActivityHeartbeatRequest(task_token=atoken, details_json="1"),
            "RespondActivityTaskCanceled": lambda: pb.RespondActivityTaskCanceledRequest(task_token=atoken),
            "SendMessage": lambda: pb.SendMessageRequest(target=rng.choice(k.pids + k.workflow_ids), topic="t",
                                                         payload_json='"hi"'),
            "OpenMailbox": lambda: pb.OpenMailboxRequest(pid=rng.choice(k.pids)),
            "CloseMailbox": lambda: pb.CloseMailboxRequest(pid=rng.choice(k.pids)),
            "PollMailbox": lambda: pb.PollMailboxRequest(pid=rng.choice(k.pids), timeout_ms=1, max_messages=5),
            "MonitorWorkflow": lambda: pb.MonitorWorkflowRequest(ref=ref, monitor_pid=rng.choice(k.pids)),
        }
        return build.get(rpc, cls)()

    def _command(self) -> pb.Command:
        """A command: valid attributes for its type (see legato/commands.py) with, often, one
        replaced by an extreme value, an unknown key, or text that is not a JSON object."""
        rng = self.rng
        ctype = rng.choice(ENUMS["command_type"][:-2])
        attrs = self._valid_attrs(ctype)
        if rng.random() < 0.6:
            key = rng.choice([*attrs, "unknown_key"]) if attrs else "unknown_key"
            attrs[key] = rng.choice(ATTR_VALUES)
        if rng.random() < 0.2 and isinstance(attrs.get("options"), dict):
            attrs["options"][rng.choice(CHILD_OPTION_KEYS)] = rng.choice(ATTR_VALUES)
        text = json.dumps(attrs) if rng.random() < 0.95 else rng.choice(JSON_TEXTS)
        return pb.Command(command_type=ctype, attrs_json=text)

    def _valid_attrs(self, ctype: str) -> dict[str, Any]:
        rng = self.rng
        uid = str(rng.randint(0, 10**9))
        target = rng.choice(self.known.workflow_ids)
        table: dict[str, dict[str, Any]] = {
            "ScheduleActivityTask": {"activity_id": uid, "activity_type": "fuzz:a", "task_queue": TASK_QUEUE,
                                     "input": [1], "start_to_close_timeout_ms": 10_000,
                                     "retry_policy": {"initial_interval_ms": 1000, "maximum_attempts": 3}},
            "StartTimer": {"timer_id": uid, "start_to_fire_timeout_ms": 60_000},
            "CancelTimer": {"timer_id": uid},
            "RecordMarker": {"marker_name": "m", "details": {"a": 1}},
            "CompleteWorkflowExecution": {"result": {"ok": True}},
            "FailWorkflowExecution": {"failure": {"message": "m", "kind": "INTERNAL", "retryable": False}},
            "CancelWorkflowExecution": {"details": None},
            "ContinueAsNewWorkflowExecution": {"input": [1], "run_timeout_ms": 60_000},
            "UpsertWorkflowSearchAttributes": {"search_attributes": {"CustomKeyword": "x", "CustomInt": 3}},
            "ModifyWorkflowProperties": {"memo": {"note": "x"}},
            "RequestCancelActivityTask": {"scheduled_event_id": rng.choice([1, 5, 2**63 - 1])},
            "StartChildWorkflowExecution": {"seq": 1, "workflow_id": "fuzz-child-" + uid, "workflow_type": "fuzz:w",
                                            "task_queue": TASK_QUEUE, "input": [], "options": {
                                                "execution_timeout_ms": 60_000, "memo": {"a": 1}}},
            "SignalExternalWorkflowExecution": {"seq": 1, "workflow_id": target, "signal_name": "s", "input": 1},
            "RequestCancelExternalWorkflowExecution": {"seq": 1, "workflow_id": target, "deadline_ms": 1000},
            "TerminateExternalWorkflowExecution": {"seq": 1, "workflow_id": target, "reason": "fuzz"},
            "MonitorExternalWorkflowExecution": {"seq": 1, "workflow_id": target, "link": False},
        }
        return dict(table.get(ctype, {}))

    # -- one request

    def request(self, rpc: str) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.08:
            return rng.randbytes(rng.randint(0, 300))
        if roll < 0.18:
            return self._damaged(self.template(rpc).SerializeToString())
        if roll < 0.30:
            m = RPCS[rpc]()
            self.fill(m, rpc, every=True)
        else:
            m = self.template(rpc)
            for f in rng.sample(list(m.DESCRIPTOR.fields), min(len(m.DESCRIPTOR.fields), rng.randint(1, 3))):
                self.set_random(m, f, rpc, 0)
        _short_waits(m, rng)
        return m.SerializeToString()

    def _damaged(self, data: bytes) -> bytes:
        rng = self.rng
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randint(0, len(b)) if b else 0
            if op < 0.4 and b:
                b[min(pos, len(b) - 1)] = rng.randint(0, 255)
            elif op < 0.7:
                b[pos:pos] = rng.randbytes(rng.randint(1, 8))
            elif b:
                del b[pos:pos + rng.randint(1, 8)]
        return bytes(b)


def _short_waits(m: Message, rng: random.Random) -> None:
    """Long polls wait at most a second, mostly: a fuzz run is about answers, not about waiting.
    (A few keep a long wait, to check the server ends it before the caller's deadline.)"""
    if "timeout_ms" in m.DESCRIPTOR.fields_by_name and rng.random() < 0.995:
        m.timeout_ms = min(abs(m.timeout_ms), 1000)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- running


@dataclass
class Outcome:
    """What a fuzz run saw: status codes per rpc, and the requests that got a forbidden answer."""

    requests: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    per_rpc: Counter[tuple[str, str]] = field(default_factory=Counter)
    bad: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # rpc, code, details, request
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.requests} requests in {self.seconds:.1f} s: "
                + ", ".join(f"{c} {n}" for c, n in self.codes.most_common()))


def raw_stub(channel: grpc.aio.Channel, rpc: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A call that sends and returns raw bytes (no protobuf on the client side)."""
    return channel.unary_unary(f"/{SERVICE}/{rpc}", request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)


ALLOWED_CODES = frozenset({
    "OK", "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED",
})


async def send(channel: grpc.aio.Channel, rpc: str, body: bytes, deadline_s: float) -> tuple[str, str]:
    try:
        await raw_stub(channel, rpc)(body, timeout=deadline_s)
        return "OK", ""
    except grpc.aio.AioRpcError as e:
        return e.code().name, e.details() or ""


async def run(address: str, known: Known, seed: int, requests: int, *, concurrency: int = 8,
              deadline_s: float = 5.0, refresh: Callable[[], Awaitable[None]] | None = None,
              refresh_every: int = 250) -> Outcome:
    """Send `requests` fuzzed requests (spread over every rpc) from `concurrency` senders, each
    call with a deadline; `refresh` renews `known` (fresh tokens) every `refresh_every` requests.
    The requests are generated in one seeded sequence (what the server answered to earlier ones
    changes only the tokens and ids that `refresh` adds)."""
    rng = random.Random(seed)
    gen = Generator(rng, known)
    out = Outcome()
    names = sorted(RPCS)
    start = time.monotonic()
    lock = asyncio.Lock()

    async def sender(channel: grpc.aio.Channel) -> None:
        while True:
            async with lock:  # one generator, one order of requests
                if out.requests >= requests:
                    return
                if refresh is not None and out.requests % refresh_every == 0:
                    await refresh()
                out.requests += 1
                rpc = rng.choice(names)
                body = gen.request(rpc)
            code, details = await send(channel, rpc, body, deadline_s)
            out.codes[code] += 1
            out.per_rpc[rpc, code] += 1
            if code not in ALLOWED_CODES:
                out.bad.append((rpc, code, details, body))

    async with grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", -1)]) as channel:
        await asyncio.gather(*(sender(channel) for _ in range(concurrency)))
    out.seconds = time.monotonic() - start
    return out
