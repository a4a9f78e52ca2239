"""One workflow run's Lua runtime: the sandbox, the kernel and the host callbacks.

Each run gets its own `lua54.LuaRuntime` (about 26 KB and 60 µs; it supports `max_memory`, so a run
that allocates too much fails its own task and nothing else). The kernel (`kernel.lua`, loaded as
bytecode) holds the scheduler, channels and modules; it calls back into `WorkflowRun` for commands
and deterministic values. `worker.replay` drives a run through the batches of a history.
"""

from __future__ import annotations

import json
import logging
import os
import random
import uuid
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from lupa import lua54

from legato.commands import Command, CommandType
from legato.config import Limits
from legato.durations import parse_duration_ms
from legato.errors import Failure, Kind
from legato.events import HistoryEvent
from legato.retry import RetryPolicy
from worker.convert import ConversionError, args_to_python, failure_from_lua, to_lua, to_python
from worker.entries import Registry, WorkflowEntry, compile_lua

log = logging.getLogger("legato.worker.lua")

C = CommandType

KERNEL_CHUNK = "legato/kernel.lua"
_kernel_bytecode: bytes | None = None

CRYPTO_MARKER = "crypto.random_bytes"


def kernel_bytecode() -> bytes:
    """kernel.lua compiled once per process."""
    global _kernel_bytecode
    if _kernel_bytecode is None:
        text = resources.files("worker").joinpath("kernel.lua").read_text(encoding="utf-8")
        bc, err = compile_lua(text, KERNEL_CHUNK, strip=True)
        if bc is None:  # pragma: no cover - a broken build
            raise RuntimeError(f"kernel.lua does not compile: {err}")
        _kernel_bytecode = bc
    return _kernel_bytecode


def _deny_attributes(obj: Any, name: Any, is_setting: bool) -> Any:
    raise AttributeError("Python attributes are not reachable from Lua")


def new_lua(max_memory: int | None = None) -> Any:
    return lua54.LuaRuntime(max_memory=max_memory, unpack_returned_tuples=True, register_eval=False,
                            register_builtins=False, attribute_filter=_deny_attributes)


def load_kernel(lua: Any, mode: str, host: dict[str, Any]) -> Any:
    loader = lua.eval("function(bc, name) return load(bc, name, 'b') end")
    chunk = loader(kernel_bytecode(), "=" + KERNEL_CHUNK)
    h = lua.table_from(host)
    h["kinds"] = lua.table_from(list(Kind.ALL))
    return chunk(mode, h)


class TaskFailure(Exception):
    """The workflow task fails: `cause` is a RespondWorkflowTaskFailed cause."""

    def __init__(self, cause: str, failure: Failure) -> None:
        super().__init__(f"{cause}: {failure}")
        self.cause = cause
        self.failure = failure


# ---------------------------------------------------------------- activity options

_TIMEOUT_KEYS = {
    "start_to_close_timeout": "start_to_close_timeout_ms",
    "schedule_to_close_timeout": "schedule_to_close_timeout_ms",
    "schedule_to_start_timeout": "schedule_to_start_timeout_ms",
    "heartbeat_timeout": "heartbeat_timeout_ms",
}
OPTION_KEYS = ("activity.retry_policy", "activity.task_queue", *(f"activity.{k}" for k in _TIMEOUT_KEYS))


@dataclass(slots=True)
class ActivityOptions:
    task_queue: str | None = None
    retry_policy: dict[str, Any] | None = None
    timeouts: dict[str, int] = field(default_factory=dict)


def parse_activity_options(opts: Any, base: ActivityOptions | None) -> ActivityOptions:
    """Validate a `with_options{...}` table; ValueError names the offending key."""
    if not isinstance(opts, dict):
        if opts == [] or opts is None:
            opts = {}
        else:
            raise ValueError("with_options: expected a table of options such as {[\"activity.start_to_close_timeout\"]"
                             " = \"30s\"}")
    out = ActivityOptions(base.task_queue, base.retry_policy, dict(base.timeouts)) if base else ActivityOptions()
    for raw_key, value in opts.items():
        key = raw_key[len("temporal."):] if raw_key.startswith("temporal.activity.") else raw_key
        if key == "activity.retry_policy":
            if value == []:
                value = {}
            if not isinstance(value, dict):
                raise ValueError(f"{raw_key}: expected a table (initial_interval, backoff_coefficient, "
                                 "maximum_interval, maximum_attempts, non_retryable_error_types)")
            out.retry_policy = RetryPolicy.from_user(value, raw_key).to_dict()
        elif key == "activity.task_queue":
            if not isinstance(value, str) or not value:
                raise ValueError(f"{raw_key}: expected a non-empty task queue name, got {value!r}")
            out.task_queue = value
        elif key.startswith("activity.") and key[len("activity."):] in _TIMEOUT_KEYS:
            out.timeouts[_TIMEOUT_KEYS[key[len("activity."):]]] = parse_duration_ms(value, raw_key)
        else:
            raise ValueError(f"unknown activity option {raw_key!r} (known: {', '.join(OPTION_KEYS)})")
    return out


# ---------------------------------------------------------------- pending commands

class PendingCommand:
    """A command issued by Lua code during a batch; built into a `Command` only when it is new."""

    __slots__ = ("ctype", "data", "key", "line")

    def __init__(self, ctype: CommandType, key: Any, line: str | None, data: Any) -> None:
        self.ctype = ctype
        self.key = key
        self.line = line
        self.data = data

    def describe(self) -> str:
        if self.ctype is C.ScheduleActivityTask:
            return f"ScheduleActivityTask(activity_type={self.key})"
        if self.ctype in (C.StartTimer, C.CancelTimer):
            return f"{self.ctype.value}(timer_id={self.key})"
        if self.ctype is C.RecordMarker:
            return f"RecordMarker(marker_name={self.key})"
        return self.ctype.value


@dataclass(slots=True)
class RunInfo:
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    attempt: int = 1
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class BatchResult:
    commands: list[PendingCommand]
    status: str  # "blocked" | "done" | "canceled"


class WorkflowRun:
    """The Lua side of one run. Not thread-safe: one batch at a time."""

    def __init__(self, entry: WorkflowEntry, registry: Registry, limits: Limits, info: RunInfo,
                 random_seed: str | None, args: list[Any]) -> None:
        self.entry = entry
        self.registry = registry
        self.limits = limits
        self.info = info
        seed = random_seed or info.run_id or info.workflow_id
        try:
            seed_int = int(seed, 16)
        except ValueError:
            seed_int = int.from_bytes(seed.encode()[:64].ljust(8, b"\0"), "big")
        self._rng = random.Random(seed_int)
        # per-batch state
        self._commands: list[PendingCommand] = []
        self._recorded: list[HistoryEvent] | None = None
        self._replaying = False
        self._history: list[HistoryEvent] = []
        self._history_length = 0
        self._context_lua: Any = None
        self.lua = new_lua(limits.lua_memory_bytes)
        host = {
            "schedule_activity": self._schedule_activity,
            "start_timer": self._start_timer,
            "cancel_timer": self._cancel_timer,
            "random_hex": self._random_hex,
            "uuid4": self._uuid4,
            "info": self._info,
            "history_length": self._history_len,
            "history_size": self._history_size,
            "context": self._context,
            "duration_ms": _duration_ms,
            "activity_options": self._activity_options,
            "json_encode": _json_encode,
            "json_decode": self._json_decode,
            "log": self._log,
            "workflow_id": info.workflow_id,
        }
        try:
            self.k = load_kernel(self.lua, "workflow", host)
            ok, err = self.k.setup(entry.id, self.lua.table_from(list(entry.modules)), entry.method, entry.bytecode,
                                   entry.chunk_name, limits.max_commands_per_task)
            if not ok:
                raise TaskFailure("WORKFLOW_ERROR", Failure(str(err), Kind.INTERNAL, False))
            self.k.start(_packed(self.lua, args))
        except lua54.LuaMemoryError:
            raise TaskFailure("LIMIT_EXCEEDED", Failure(
                "the workflow ran out of Lua memory while starting (limits.lua_memory_bytes)",
                Kind.LIMIT_EXCEEDED, False)) from None
        self._resolve_activity = self.k.resolve_activity
        self._fail_activity = self.k.fail_activity
        self._fire_timer = self.k.fire_timer
        self._signal = self.k.signal
        self._cancel_requested = self.k.cancel_requested
        self._run = self.k.run
        self._begin = self.k.begin

    def dispose(self) -> None:
        """Drop the Lua runtime now (breaks the runtime <-> callbacks cycle instead of waiting for the GC)."""
        self._commands = []
        self._context_lua = None
        self._resolve_activity = self._fail_activity = self._fire_timer = None
        self._signal = self._cancel_requested = self._run = self._begin = None
        self.k = None
        self.lua = None

    # ------------------------------------------------------------ batch driving

    def memory_used(self) -> int:
        try:
            return int(self.lua.get_memory_used())
        except Exception:
            return 0

    def begin_batch(self, history: list[HistoryEvent], started: HistoryEvent,
                    recorded: list[HistoryEvent] | None) -> None:
        self._commands = []
        self._recorded = recorded
        self._replaying = recorded is not None
        self._history = history
        self._history_length = started.event_id
        self._begin(started.timestamp_ms, self._replaying)

    def end_batch(self) -> None:
        self._history = []
        self._recorded = None

    def resolve_activity(self, activity_id: str, result: Any) -> None:
        self._resolve_activity(activity_id, to_lua(self.lua, result))

    def fail_activity(self, activity_id: str, failure: dict[str, Any] | None) -> None:
        f = Failure.from_dict(failure or {"message": "activity failed"})
        self._fail_activity(activity_id, f.message, f.kind, f.retryable, to_lua(self.lua, f.details))

    def fire_timer(self, timer_id: str) -> None:
        self._fire_timer(timer_id)

    def signal(self, name: str, data: Any, sender: Any) -> None:
        self._signal(name, to_lua(self.lua, data), sender)

    def cancel_requested(self, reason: str) -> bool:
        """Deliver a cancel request; True when the code has no events channel (cancel the run)."""
        return bool(self._cancel_requested(reason))

    def run(self) -> BatchResult:
        """Run ready coroutines until all block. Raises TaskFailure."""
        try:
            status, a, b, c, d, e = _pad6(self._run(self.limits.lua_instructions_per_task))
        except lua54.LuaMemoryError:
            raise TaskFailure("LIMIT_EXCEEDED", Failure(
                "the workflow ran out of Lua memory (limits.lua_memory_bytes)", Kind.LIMIT_EXCEEDED, False)) from None
        except lua54.LuaError as err:
            raise TaskFailure("WORKFLOW_ERROR", Failure(f"internal error in the Lua kernel: {err}",
                                                         Kind.INTERNAL, False)) from None
        cmds = self._commands
        if status == "blocked":
            return BatchResult(cmds, "blocked")
        if status == "done":
            try:
                if b is not None:
                    failure = failure_from_lua(b)
                    cmds.append(PendingCommand(C.FailWorkflowExecution, None, None, failure.to_dict()))
                else:
                    cmds.append(PendingCommand(C.CompleteWorkflowExecution, None, None, to_python(a)))
            except ConversionError as err:
                raise TaskFailure("WORKFLOW_ERROR", Failure(f"the workflow's result cannot be recorded: {err}",
                                                             Kind.INVALID, False)) from None
            return BatchResult(cmds, "done")
        if status == "fatal":
            kind = {"FORBIDDEN_CALL": Kind.FORBIDDEN, "LIMIT_EXCEEDED": Kind.LIMIT_EXCEEDED}.get(a, Kind.INTERNAL)
            raise TaskFailure(str(a), Failure(str(b), kind, False, source=c or None))
        # "error": message, kind, retryable, details, source
        try:
            details = to_python(d)
        except ConversionError:
            details = None
        raise TaskFailure("WORKFLOW_ERROR", Failure(str(a), str(b) if b else Kind.UNKNOWN,
                                                    bool(c) if c is not None else False, details, e or None))

    def cancel_command(self) -> PendingCommand:
        return PendingCommand(C.CancelWorkflowExecution, None, None, None)

    # ------------------------------------------------------------ building commands

    def build(self, cmd: PendingCommand) -> Command:
        t = cmd.ctype
        if t is C.ScheduleActivityTask:
            aid, packed, opts = cmd.data
            try:
                args = args_to_python(packed)
            except ConversionError as err:
                raise TaskFailure("WORKFLOW_ERROR", Failure(
                    f"funcs.call({cmd.key}): an argument cannot be sent: {err}", Kind.INVALID, False,
                    source=cmd.line)) from None
            o: ActivityOptions | None = opts
            queue = (o.task_queue if o else None) or self.registry.activity_task_queue(cmd.key) or self.info.task_queue
            attrs: dict[str, Any] = {
                "activity_id": aid, "activity_type": cmd.key, "task_queue": queue, "input": args,
                "schedule_to_close_timeout_ms": 0, "schedule_to_start_timeout_ms": 0,
                "start_to_close_timeout_ms": 0, "heartbeat_timeout_ms": 0,
                "retry_policy": o.retry_policy if o else None, "context": self.info.context,
            }
            if o and o.timeouts:
                attrs.update(o.timeouts)
            return Command(t, attrs)
        if t is C.StartTimer:
            return Command(t, {"timer_id": cmd.key, "start_to_fire_timeout_ms": cmd.data})
        if t is C.CancelTimer:
            return Command(t, {"timer_id": cmd.key})
        if t is C.RecordMarker:
            return Command(t, {"marker_name": cmd.key, "details": cmd.data})
        if t is C.CompleteWorkflowExecution:
            return Command(t, {"result": cmd.data})
        if t is C.FailWorkflowExecution:
            return Command(t, {"failure": cmd.data})
        return Command(t, {"details": cmd.data})

    # ------------------------------------------------------------ host callbacks (called from Lua)

    def _schedule_activity(self, aid: str, activity_type: str, packed: Any, opts: Any, line: Any) -> None:
        self._commands.append(PendingCommand(C.ScheduleActivityTask, activity_type, line, (aid, packed, opts)))

    def _start_timer(self, tid: str, ms: Any, line: Any) -> None:
        self._commands.append(PendingCommand(C.StartTimer, tid, line, int(ms)))

    def _cancel_timer(self, tid: str, line: Any) -> None:
        self._commands.append(PendingCommand(C.CancelTimer, tid, line, None))

    def _random_hex(self, n: int, line: Any = None) -> str:
        idx = len(self._commands)
        details: str | None = None
        rec = self._recorded
        if rec is not None and idx < len(rec):
            ev = rec[idx]
            if ev.attrs.get("marker_name") == CRYPTO_MARKER and isinstance(ev.attrs.get("details"), str):
                details = ev.attrs["details"]
        if details is None:
            details = os.urandom(int(n)).hex()
        self._commands.append(PendingCommand(C.RecordMarker, CRYPTO_MARKER, line, details))
        return details

    def _uuid4(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _info(self) -> Any:
        i = self.info
        return self.lua.table_from({
            "workflow_id": i.workflow_id, "run_id": i.run_id, "workflow_type": i.workflow_type,
            "task_queue": i.task_queue, "namespace": i.namespace, "attempt": i.attempt,
            "history_length": self._history_length, "history_size": self._history_size(),
        })

    def _history_len(self) -> int:
        return self._history_length

    def _history_size(self) -> int:
        return sum(len(e.encode()) for e in self._history[:self._history_length])

    def _context(self) -> Any:
        if self._context_lua is None:
            self._context_lua = to_lua(self.lua, dict(self.info.context))
        return self._context_lua

    def _activity_options(self, table: Any, base: Any) -> tuple[Any, Any]:
        try:
            return parse_activity_options(to_python(table), base), None
        except (ValueError, ConversionError) as err:
            return None, str(err)

    def _json_decode(self, text: str) -> tuple[Any, Any]:
        try:
            return to_lua(self.lua, json.loads(text)), None
        except ValueError as err:
            return None, f"json.decode: {err}"

    def _log(self, message: str) -> None:
        log.info("[%s %s] %s", self.info.workflow_type, self.info.workflow_id, message)


def _pad6(r: Any) -> tuple[Any, Any, Any, Any, Any, Any]:
    if not isinstance(r, tuple):
        return r, None, None, None, None, None
    return (*r, None, None, None, None, None)[:6]


def _packed(lua: Any, values: list[Any]) -> Any:
    t = lua.table_from([to_lua(lua, v) for v in values])
    t["n"] = len(values)
    return t


def _duration_ms(value: Any) -> tuple[Any, Any]:
    try:
        return parse_duration_ms(value, "duration"), None
    except ValueError as err:
        return None, str(err)


_SORTED = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True)


def _json_encode(value: Any) -> tuple[Any, Any]:
    try:
        return _SORTED.encode(to_python(value)), None
    except (ConversionError, TypeError, ValueError) as err:
        return None, f"json.encode: {err}"
