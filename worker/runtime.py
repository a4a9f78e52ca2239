"""The workflow runs' Lua: a shared state with the kernel, the runs' sandboxes, the host callbacks.

A worker's runs share one `lua54.LuaRuntime` per thread (`LuaVM`; a Lua host process has one): the
kernel (`kernel.lua` and its modules, worker/kernel/*.lua, loaded as bytecode) is loaded into it
once and holds the scheduler, channels and modules as functions shared by the runs. Each run has a
state table of its own in the kernel (its coroutines, channels, pending commands, its globals and
its own copies of the module and library tables it can change), made by `K.new_run`; the host
enters a run (`K.enter`) before it feeds it events or runs it, and the kernel's host callbacks
(`H.*`) go to the `WorkflowRun` entered. A workflow entry's code is loaded once per state and
called once per run (a prelude takes the run's globals: worker/entries.py, WORKFLOW_PRELUDE), so
its function prototypes are shared too. A cached run costs about 13 KB of Lua heap (`legato bench
cache`), where a runtime of its own with the kernel cost about 230 KB.

Memory: each task may allocate `limits.lua_memory_bytes` beyond what the state holds when it
starts (`LuaVM.task` raises the state's limit around it); past that the task fails with
LIMIT_EXCEEDED and only its run is dropped (the kernel keeps nothing of a run outside its state
table, so the other runs are intact). What a run holds between tasks is measured around its tasks
(`WorkflowRun.retained`, an estimate: garbage is collected whenever the shared state's collector
runs); a run holding more than its limit is not cached, and its replay, one task, meets the limit.
`worker.replay` drives a run through the batches of a history.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from lupa import lua54

from legato import codec
from legato.api import ParentClosePolicy
from legato.commands import EVENT_OF, Command, CommandType
from legato.config import Limits
from legato.durations import MAX_DURATION_MS, lua_duration_ms, parse_duration_ms
from legato.errors import Failure, Kind
from legato.events import EventType, HistoryEvent
from legato.ids import MAX_ID_LENGTH
from legato.query import check_search_attributes
from legato.retry import RetryPolicy
from legato.wire import max_message_bytes
from worker import crypto_host
from worker.codec_ops import new_uuid
from worker.convert import (
    ConversionError,
    args_to_python,
    failure_from_lua,
    json_decode_to_lua,
    lua_map,
    lua_text,
    map_or_value,
    to_lua,
    to_python,
)
from worker.entries import ClientEntry, Registry, WorkerEntry, WorkflowEntry, compile_lua
from worker.go_time import LAYOUTS
from worker.lua_anchor import anchor_host
from worker.processes.control import SPAWN as SPAWN_TOPIC
from worker.processes.control import host_pid
from worker.processes.kinds import ProcessEntry
from worker.processes.spawning import (
    ProcessSpawn,
    is_process_host,
    process_without_host,
    workflow_process_pid,
    workflow_spawn_refusal,
)
from worker.start_options import SpawnSpec, apply_spawner_call, child_command_attrs, start_request

log = logging.getLogger("legato.worker.lua")

C = CommandType

KERNEL_CHUNK = "legato/kernel.lua"
PATTERNS_CHUNK = "legato/patterns.lua"
# The kernel's modules, one per concern (worker/kernel/<name>.lua, chunk "legato/kernel/<name>.lua");
# kernel.lua loads them in its own order, those of its mode only.
KERNEL_MODULES_DIR = "kernel"

CRYPTO_MARKER = "crypto.random_bytes"
VERSION_MARKER = "version"


def _compiled(file: str, chunk: str) -> bytes:
    text = resources.files("worker").joinpath(file).read_text(encoding="utf-8")
    # stripped: smaller and faster to load, and no kernel file:line in what code sees (an error a
    # kernel function raises names the code's line, from the level it gives)
    bc, err = compile_lua(text, chunk, strip=True)
    if bc is None:  # pragma: no cover - a broken build
        raise RuntimeError(f"{file} does not compile: {err}")
    return bc


@functools.cache
def kernel_bytecode() -> bytes:
    """kernel.lua compiled once per process."""
    return _compiled("kernel.lua", KERNEL_CHUNK)


@functools.cache
def kernel_modules_bytecode() -> dict[str, bytes]:
    """The kernel's modules (worker/kernel/*.lua) compiled once per process: name -> bytecode."""
    folder = resources.files("worker").joinpath(KERNEL_MODULES_DIR)
    names = sorted(f.name.removesuffix(".lua") for f in folder.iterdir() if f.name.endswith(".lua"))
    return {n: _compiled(f"{KERNEL_MODULES_DIR}/{n}.lua", f"legato/kernel/{n}.lua") for n in names}


@functools.cache
def patterns_bytecode() -> bytes:
    """patterns.lua (string patterns bounded by the instruction hook) compiled once per process."""
    return _compiled("patterns.lua", PATTERNS_CHUNK)


def _deny_attributes(obj: Any, name: Any, is_setting: bool) -> Any:
    raise AttributeError("Python attributes are not reachable from Lua")


def new_lua(max_memory: int | None = None) -> Any:
    return lua54.LuaRuntime(max_memory=max_memory, unpack_returned_tuples=True, register_eval=False,
                            register_builtins=False, attribute_filter=_deny_attributes)


def load_kernel(lua: Any, mode: str, host: dict[str, Any]) -> Any:
    loader = lua.eval("function(bc, name) return load(bc, name, 'b') end")
    chunk = loader(kernel_bytecode(), "=" + KERNEL_CHUNK)
    h = lua.table_from(anchor_host(lua, host))
    h["kinds"] = lua.table_from(Kind.BY_NAME)
    h["patterns"] = patterns_bytecode()
    h["kernel_modules"] = lua.table_from(kernel_modules_bytecode())
    h["max_duration_ms"] = MAX_DURATION_MS
    h["time_layouts"] = lua.table_from(LAYOUTS)
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
    context: dict[str, Any] = field(default_factory=dict)  # over the workflow's (funcs.new():with_context)

    def copy(self) -> ActivityOptions:
        return ActivityOptions(self.task_queue, self.retry_policy, dict(self.timeouts), dict(self.context))


def parse_activity_options(opts: Any, base: ActivityOptions | None) -> ActivityOptions:
    """Validate a `with_options{...}` table; ValueError names the offending key."""
    if not isinstance(opts, dict):
        if opts == [] or opts is None:
            opts = {}
        else:
            raise ValueError("with_options: expected a table of options such as {[\"activity.start_to_close_timeout\"]"
                             " = \"30s\"}")
    out = base.copy() if base else ActivityOptions()
    for raw_key, value in opts.items():
        key = raw_key[len("temporal."):] if raw_key.startswith("temporal.activity.") else raw_key
        if key == "activity.retry_policy":
            value = map_or_value(value)
            if not isinstance(value, dict):
                raise ValueError(f"{raw_key}: expected a table (initial_interval, backoff_coefficient, "
                                 "maximum_interval, maximum_attempts, non_retryable_error_types)")
            out.retry_policy = RetryPolicy.from_user(value, raw_key, lua_duration_ms).to_dict()
        elif key == "activity.task_queue":
            if not isinstance(value, str) or not value:
                raise ValueError(f"{raw_key}: expected a non-empty task queue name, got {value!r}")
            out.task_queue = value
        elif key.startswith("activity.") and key[len("activity."):] in _TIMEOUT_KEYS:
            out.timeouts[_TIMEOUT_KEYS[key[len("activity."):]]] = lua_duration_ms(value, raw_key)
        else:
            raise ValueError(f"unknown activity option {raw_key!r} (known: {', '.join(OPTION_KEYS)})")
    return out


def activity_options_from_lua(table: Any, base: Any) -> tuple[Any, Any]:
    """funcs.new():with_options{...} from Lua: (ActivityOptions, nil) or (nil, message)."""
    try:
        return parse_activity_options(to_python(table), base), None
    except (ValueError, ConversionError) as err:
        return None, str(err)


def activity_context_from_lua(table: Any, base: Any) -> tuple[Any, Any]:
    """funcs.new():with_context{...} from Lua: (ActivityOptions, nil) or (nil, message)."""
    ctx, problem = lua_map(table, "with_context", "a table of name = value")
    if ctx is None:
        return None, problem
    out = base.copy() if isinstance(base, ActivityOptions) else ActivityOptions()
    out.context.update(ctx)
    return out, None


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
        name = EVENT_OF[self.ctype][1]
        if name is None:
            return self.ctype.value
        return f"{self.ctype.value}({name}={self.key})"


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


# The host callbacks of the workflow kernel: H.<name> calls WorkflowRun.<method> of the running run.
_HOST_METHODS = {
    "schedule_activity": "_schedule_activity",
    "cancel_activity": "_cancel_activity",
    "activity_context": "_activity_context",
    "start_timer": "_start_timer",
    "cancel_timer": "_cancel_timer",
    "start_child": "_start_child",
    "spawn_spec": "_spawn_spec",
    "signal_external": "_signal_external",
    "cancel_external": "_cancel_external",
    "terminate_external": "_terminate_external",
    "monitor_external": "_monitor_external",
    "version": "_version",
    "attrs": "_attrs",
    "random_hex": "_random_hex",
    "crypto_draw": "_crypto_draw",
    "uuid4": "_uuid4",
    "uuid_new": "_uuid_new",
    "info": "_info",
    "history_length": "_history_len",
    "history_size": "_history_size",
    "context": "_context",
    "activity_options": "_activity_options",
    "json_decode": "_json_decode",
    "log": "_log",
}

# The shared state has no limit of its own: each task gets its run's allowance (LuaVM.task). A
# number (not None) makes lupa count the memory in use.
_NO_LIMIT = 1 << 62


class LuaVM:
    """One Lua state with the workflow kernel loaded once, shared by many runs (one per thread: a
    Lua host process has one). Each run has its own state table in the kernel (its coroutines,
    channels, globals and copies of the modules); the host enters a run before it feeds it events
    or runs it, and the host callbacks go to the run entered. One task at a time: `lock`."""

    def __init__(self) -> None:
        self.lua = new_lua(_NO_LIMIT)
        self.lock = threading.RLock()
        self.current: WorkflowRun | None = None
        host: dict[str, Any] = {name: self._dispatch(attr) for name, attr in _HOST_METHODS.items()}
        host["crypto"] = crypto_host.host_functions(self.lua)["crypto"]
        host["duration_ms"] = duration_ms
        host["json_encode"] = json_encode
        k = load_kernel(self.lua, "workflow", host)
        self.k = k
        self.new_run, self.enter, self.drop, self.fatal = k.new_run, k.enter, k.drop, k.fatal
        self.setup, self.start, self.begin, self.run = k.setup, k.start, k.begin, k.run
        self.cancel_unhandled = k.cancel_unhandled
        self.resolve_activity, self.fail_activity, self.fire_timer = k.resolve_activity, k.fail_activity, k.fire_timer
        self.signal, self.cancel_requested = k.signal, k.cancel_requested
        self.child_started, self.child_start_failed, self.child_closed = (
            k.child_started, k.child_start_failed, k.child_closed)
        self.op_done, self.monitored_closed = k.op_done, k.monitored_closed
        self.lua.execute("collectgarbage()")
        self.baseline = self.memory_used()

    def _dispatch(self, attr: str) -> Any:
        def call(*args: Any) -> Any:
            return getattr(self.current, attr)(*args)
        return call

    def memory_used(self) -> int:
        return int(self.lua.get_memory_used() or 0)

    @contextlib.contextmanager
    def task(self, allowance: int) -> Iterator[None]:
        """One task of a run (under `lock`): Lua may allocate `allowance` bytes more than the state
        holds now, and fails with "not enough memory" past that."""
        with self.lock:
            self.lua.set_max_memory(self.memory_used() + allowance)
            try:
                yield
            finally:
                self.lua.set_max_memory(_NO_LIMIT)


_vms = threading.local()


def thread_vm() -> LuaVM:
    """This thread's shared Lua state (made on first use)."""
    vm: LuaVM | None = getattr(_vms, "vm", None)
    if vm is None:
        vm = _vms.vm = LuaVM()
    return vm


class WorkflowRun:
    """The Lua side of one run: its state in a shared `LuaVM`. Not thread-safe: one batch at a
    time, inside `vm.task(...)` (worker.replay does that)."""

    __slots__ = ("__weakref__", "_commands", "_context_lua", "_history", "_history_length", "_history_size_cache",
                 "_marker_next", "_markers", "_recorded", "_replaying", "_rng", "_seed", "_versions", "entry",
                 "info", "limits", "lua", "registry", "retained", "scheduled_event_of", "state", "vm")

    def __init__(self, entry: WorkflowEntry, registry: Registry, limits: Limits, info: RunInfo,
                 random_seed: str | None, args: list[Any], vm: LuaVM | None = None) -> None:
        self.entry = entry
        self.registry = registry
        self.limits = limits
        self.info = info
        seed = random_seed or info.run_id or info.workflow_id
        try:
            seed_int = int(seed, 16)
        except ValueError:
            seed_int = int.from_bytes(seed.encode()[:64].ljust(8, b"\0"), "big")
        self._seed = seed_int
        self._rng: random.Random | None = None  # made on the first uuid.v4() (its state is ~2.5 KB)
        # per-batch state
        self._commands: list[PendingCommand] = []
        self._recorded: list[HistoryEvent] | None = None
        self._replaying = False
        self._history: list[HistoryEvent] = []
        self._history_length = 0
        self._history_size_cache: int | None = None
        # this batch's recorded markers (random draws, encryptions): details by marker name, in order
        self._markers: dict[str, list[Any]] | None = None
        self._marker_next: dict[str, int] = {}
        self._context_lua: Any = None
        self._versions: dict[str, int] = {}  # change id -> version, for the rest of the run
        # ActivityTaskScheduled event id of each activity id (kept up to date by worker.replay)
        self.scheduled_event_of: dict[str, int] = {}
        # the Lua memory this run holds, as measured around its tasks (an estimate: the state is shared)
        self.retained = 0
        self.vm = vm = vm or thread_vm()
        self.lua = vm.lua
        vm.current = self
        try:
            self.state: Any = vm.new_run(info.workflow_id)
            ok, err = vm.setup(entry.id, self.lua.table_from(list(entry.modules)), entry.method, entry.bytecode,
                               entry.chunk_name, limits.max_commands_per_task, limits.lua_instructions_per_task,
                               entry.prelude)
            if not ok:
                raise TaskFailure("WORKFLOW_ERROR", Failure(str(err), Kind.INTERNAL, False))
            vm.start(packed(self.lua, args))
        except lua54.LuaMemoryError:
            raise TaskFailure("LIMIT_EXCEEDED", Failure(
                "the workflow ran out of Lua memory while starting (limits.lua_memory_bytes)",
                Kind.LIMIT_EXCEEDED, False)) from None

    def dispose(self) -> None:
        """Drop the run's state from the shared Lua state."""
        self._commands = []
        self._context_lua = None
        vm = self.vm
        state, self.state = self.state, None
        if state is not None:
            with vm.lock:
                vm.drop(state)
                if vm.current is self:
                    vm.current = None

    def activate(self) -> None:
        """Make this run the one the kernel and the host callbacks work on."""
        vm = self.vm
        vm.current = self
        vm.enter(self.state)

    # ------------------------------------------------------------ batch driving

    def memory_used(self) -> int:
        """The Lua memory this run holds (estimated: its state shares a Lua state with other runs)."""
        return max(self.retained, 0)

    def begin_batch(self, history: list[HistoryEvent], started: HistoryEvent,
                    recorded: list[HistoryEvent] | None) -> None:
        self._commands = []
        self._recorded = recorded
        self._replaying = recorded is not None
        self._history = history
        self._history_length = started.event_id
        size = started.attrs.get("history_size_bytes")  # written by the server since sticky tasks
        self._history_size_cache = size if type(size) is int else None
        self._markers = None
        self._marker_next = {}
        self.activate()
        self.vm.begin(started.timestamp_ms, self._replaying)

    def end_batch(self) -> None:
        self._history = []
        self._recorded = None
        self._markers = None

    def resolve_activity(self, activity_id: str, result: Any) -> None:
        self.vm.resolve_activity(activity_id, to_lua(self.lua, result))

    def fail_activity(self, activity_id: str, failure: dict[str, Any] | None) -> None:
        f = Failure.from_dict(failure or {"message": "activity failed"})
        self.vm.fail_activity(activity_id, f.message, f.kind, f.retryable, to_lua(self.lua, f.details))

    def fire_timer(self, timer_id: str) -> None:
        self.vm.fire_timer(timer_id)

    def signal(self, name: str, data: Any, sender: Any) -> None:
        self.vm.signal(name, to_lua(self.lua, data), sender)

    def _failure_args(self, failure: Failure | None) -> tuple[Any, Any, Any, Any]:
        if failure is None:
            return None, None, None, None
        return failure.message, failure.kind, failure.retryable, to_lua(self.lua, failure.details)

    def child_started(self, seq: int, workflow_id: str, run_id: str) -> None:
        self.vm.child_started(seq, workflow_id, run_id)

    def child_start_failed(self, seq: int, failure: Failure) -> None:
        self.vm.child_start_failed(seq, *self._failure_args(failure))

    def child_closed(self, seq: int, workflow_id: str, run_id: str, result: Any, failure: Failure | None) -> None:
        self.vm.child_closed(seq, workflow_id, run_id, to_lua(self.lua, result), *self._failure_args(failure))

    def op_done(self, seq: int, failure: Failure | None) -> None:
        """A signal / cancel / terminate / monitor command's outcome (failure None: it worked)."""
        self.vm.op_done(seq, *self._failure_args(failure))

    def monitored_closed(self, workflow_id: str, run_id: str, link: bool, result: Any,
                         failure: Failure | None) -> None:
        self.vm.monitored_closed(workflow_id, run_id, link, to_lua(self.lua, result), *self._failure_args(failure))

    def cancel_requested(self, reason: str) -> None:
        """Deliver a cancel request: to process.events(), now or when the code asks for it in this task."""
        self.vm.cancel_requested(reason)

    def stacks(self) -> list[dict[str, Any]]:
        """The run's live coroutines and where each is in the workflow code (`legato workflow
        stack`): [{"id", "main", "status", "frames": [{"source", "line", "name"}]}], innermost
        frame first."""
        with self.vm.lock:
            self.activate()
            return [to_python(t) for t in self.vm.k.stacks().values()]

    def cancel_unhandled(self) -> bool:
        """After run(): a cancel request arrived and the code has not asked for process.events()."""
        return bool(self.vm.cancel_unhandled())

    def run(self) -> BatchResult:
        """Run ready coroutines until all block. Raises TaskFailure."""
        try:
            status, a, b, c, d, e = pad6(self.vm.run(self.limits.lua_instructions_per_task))
        except lua54.LuaMemoryError:
            raise TaskFailure("LIMIT_EXCEEDED", Failure(
                "the workflow ran out of Lua memory (limits.lua_memory_bytes)", Kind.LIMIT_EXCEEDED, False)) from None
        except lua54.LuaError as err:
            raise self.lua_failure(err) from None
        cmds = self._commands
        if status == "blocked":
            return BatchResult(cmds, "blocked")
        if status == "continue":  # process.upgrade: a, b, c = workflow type or None, args (packed), source
            cmds.append(PendingCommand(C.ContinueAsNewWorkflowExecution, None, c or None, (a, b)))
            return BatchResult(cmds, "done")
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
            kind = {"FORBIDDEN_CALL": Kind.FORBIDDEN, "LIMIT_EXCEEDED": Kind.LIMIT_EXCEEDED,
                    "NON_DETERMINISTIC": Kind.NON_DETERMINISTIC}.get(a, Kind.INTERNAL)
            raise TaskFailure(lua_text(a), Failure(lua_text(b), kind, False, source=lua_text(c) or None))
        # "error": message, kind, retryable, details, source. A raised string (a Lua runtime error, or
        # error("text")) is INTERNAL, as in activities; a raised error object keeps its kind.
        try:
            details = to_python(d)
        except ConversionError:
            details = None
        raise TaskFailure("WORKFLOW_ERROR", Failure(lua_text(a), Kind.INTERNAL if b is None else lua_text(b),
                                                    bool(c) if c is not None else False, details,
                                                    lua_text(e) or None))

    def lua_failure(self, err: Exception) -> TaskFailure:
        """The task failure for an error that left the kernel: a limit the hook enforced on the
        kernel's own thread (while it read a value the code made), or a kernel bug."""
        cause, message, source = pad6(self.vm.fatal())[:3] if self.state is not None else (None, None, None)
        if cause is not None:
            kind = {"FORBIDDEN_CALL": Kind.FORBIDDEN, "LIMIT_EXCEEDED": Kind.LIMIT_EXCEEDED,
                    "NON_DETERMINISTIC": Kind.NON_DETERMINISTIC}.get(str(cause), Kind.INTERNAL)
            return TaskFailure(str(cause), Failure(str(message), kind, False, source=source or None))
        if isinstance(err, lua54.LuaMemoryError):
            return TaskFailure("LIMIT_EXCEEDED", Failure(
                "the workflow ran out of Lua memory (limits.lua_memory_bytes)", Kind.LIMIT_EXCEEDED, False))
        return TaskFailure("WORKFLOW_ERROR", Failure(f"internal error in the Lua kernel: {err}", Kind.INTERNAL, False))

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
                "retry_policy": o.retry_policy if o else None,
                "context": {**self.info.context, **o.context} if o and o.context else self.info.context,
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
        if t is C.CancelWorkflowExecution:
            return Command(t, {"details": cmd.data})
        if t is C.StartChildWorkflowExecution:
            seq, packed, spec, queue, namespace = cmd.data
            args = self._args(packed, f"spawn of {cmd.key}", cmd.line)
            req = start_request(spec or SpawnSpec(), cmd.key, queue, args, namespace=namespace,
                                default_workflow_id=self._child_id(seq), base_context=self.info.context)
            return Command(t, child_command_attrs(req, seq))
        if t is C.SignalExternalWorkflowExecution:
            seq, pid, payload = cmd.data
            if isinstance(payload, ProcessSpawn):  # a spawn of a process (_spawn_process)
                data = {**payload.fields, "args": self._args(payload.packed, f"spawn of {payload.fields['entry']}",
                                                            cmd.line)}
                return Command(t, {"seq": seq, "namespace": self.info.namespace, "workflow_id": pid, "run_id": "",
                                   "signal_name": cmd.key, "input": data, "sender": self.info.workflow_id})
            try:
                data = to_python(payload)
            except ConversionError as err:
                raise TaskFailure("WORKFLOW_ERROR", Failure(
                    f"process.send({pid}, {cmd.key}): the payload cannot be sent: {err}", Kind.INVALID, False,
                    source=cmd.line)) from None
            return Command(t, {"seq": seq, "namespace": self.info.namespace, "workflow_id": pid, "run_id": "",
                               "signal_name": cmd.key, "input": data, "sender": self.info.workflow_id})
        if t is C.RequestCancelExternalWorkflowExecution:
            seq, deadline_ms = cmd.data
            return Command(t, {"seq": seq, "namespace": self.info.namespace, "workflow_id": cmd.key,
                               "reason": f"canceled by workflow {self.info.workflow_id}", "deadline_ms": deadline_ms})
        if t is C.TerminateExternalWorkflowExecution:
            seq, reason = cmd.data
            return Command(t, {"seq": seq, "namespace": self.info.namespace, "workflow_id": cmd.key,
                               "reason": reason or f"terminated by workflow {self.info.workflow_id}"})
        if t is C.MonitorExternalWorkflowExecution:
            seq, link, remove = cmd.data
            return Command(t, {"seq": seq, "namespace": self.info.namespace, "workflow_id": cmd.key,
                               "link": link, "remove": remove})
        if t is C.ContinueAsNewWorkflowExecution:
            source, packed = cmd.data
            args = self._args(packed, "process.upgrade", cmd.line)
            attrs = {"workflow_type": source or self.info.workflow_type, "input": args}
            bound = self._bound_queue(source) if source else None
            if bound is not None:
                attrs["task_queue"] = bound[0]
            return Command(t, attrs)
        if t is C.UpsertWorkflowSearchAttributes:
            return Command(t, {"search_attributes": cmd.data})
        if t is C.ModifyWorkflowProperties:
            return Command(t, {"memo": cmd.data})
        if t is C.RequestCancelActivityTask:
            return Command(t, {"scheduled_event_id": cmd.key})
        raise AssertionError(f"no builder for {t}")  # pragma: no cover

    def _args(self, packed: Any, what: str, line: str | None) -> list[Any]:
        try:
            return args_to_python(packed)
        except ConversionError as err:
            raise TaskFailure("WORKFLOW_ERROR", Failure(f"{what}: an argument cannot be sent: {err}", Kind.INVALID,
                                                         False, source=line)) from None

    def _child_id(self, seq: int) -> str:
        """The workflow id of a child started without an id or name: unique per run and command."""
        i = self.info
        wid = f"{i.workflow_id}/{i.run_id}/{seq}"
        return wid if len(wid) <= MAX_ID_LENGTH else f"{i.run_id}/{seq}"

    def _bound_queue(self, workflow_type: str) -> tuple[str, str | None] | None:
        """(task queue, namespace or None) of the worker a workflow entry is bound to, if known."""
        e = self.registry.workflow_for_type(workflow_type)
        if e is None or e.worker is None:
            return None
        return self._worker_target(e.worker)

    def _worker_target(self, worker_id: str) -> tuple[str, str | None] | None:
        w = self.registry.find(worker_id)
        if not isinstance(w, WorkerEntry):
            return None
        c = self.registry.find(w.client) if w.client else None
        return w.task_queue, c.client_namespace if isinstance(c, ClientEntry) else None

    # ------------------------------------------------------------ host callbacks (called from Lua)

    def _schedule_activity(self, aid: str, activity_type: str, packed: Any, opts: Any, line: Any) -> None:
        self._commands.append(PendingCommand(C.ScheduleActivityTask, activity_type, line, (aid, packed, opts)))

    def _start_timer(self, tid: str, ms: Any, line: Any) -> None:
        self._commands.append(PendingCommand(C.StartTimer, tid, line, int(ms)))

    def _cancel_timer(self, tid: str, line: Any) -> None:
        self._commands.append(PendingCommand(C.CancelTimer, tid, line, None))

    def _next_recorded(self, marker: str) -> Any:
        """The details of the next `marker` of this replayed batch (the n-th call gets the n-th
        recorded one), or None when the batch runs for the first time or recorded fewer."""
        rec = self._recorded
        if rec is None:
            return None
        if self._markers is None:
            self._markers = {}
            for ev in rec:
                if ev.event_type is EventType.MarkerRecorded:
                    self._markers.setdefault(str(ev.attrs.get("marker_name")), []).append(ev.attrs.get("details"))
        i = self._marker_next.get(marker, 0)
        self._marker_next[marker] = i + 1
        recorded = self._markers.get(marker, [])
        return recorded[i] if i < len(recorded) else None

    def _random_hex(self, n: int, line: Any = None) -> str:
        details = self._next_recorded(CRYPTO_MARKER)
        if not isinstance(details, str):
            details = os.urandom(int(n)).hex()
        self._commands.append(PendingCommand(C.RecordMarker, CRYPTO_MARKER, line, details))
        return details

    def _crypto_draw(self, op: str, line: Any, *args: Any) -> tuple[Any, Any, Any, bool]:
        """A crypto random draw or encryption: (value, error message, kind, non-deterministic).
        Recorded as a marker; a replay returns the recorded value, which must be one this call
        could have made (the same length, charset, or plaintext and key)."""
        try:
            draw = crypto_host.prepare_draw(op, args)
        except crypto_host.CryptoError as err:
            return None, str(err), err.kind, False
        details = self._next_recorded(draw.marker)
        if details is None:
            value = draw.make()
            details = draw.record(value)
        else:
            replayed = draw.replay(details)
            if replayed is None:
                return None, (f"crypto.{op}: the {draw.marker} marker in the history does not fit this call "
                              "(other arguments)"), Kind.NON_DETERMINISTIC, True
            value = replayed
        self._commands.append(PendingCommand(C.RecordMarker, draw.marker, line, details))
        return value, None, None, False

    def _random(self) -> random.Random:
        rng = self._rng
        if rng is None:
            rng = self._rng = random.Random(self._seed)
        return rng

    def _uuid4(self) -> str:
        return str(uuid.UUID(int=self._random().getrandbits(128), version=4))

    def _uuid_new(self, version: int, now_ms: int) -> str:
        """uuid.v1 / v7: the workflow's clock and seeded random source, so replays make the same."""
        return new_uuid(version, int(now_ms), self._random())

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
        """In bytes (UTF-8), as history counts them (limits.max_history_bytes): what the batch's
        WorkflowTaskStarted says; for one recorded before it said, the events up to it counted
        here (such a batch only runs in a replay, which has the whole history)."""
        if self._history_size_cache is None:
            self._history_size_cache = sum(len(e.encode().encode()) for e in self._history
                                           if e.event_id <= self._history_length)
        return self._history_size_cache

    def _context(self) -> Any:
        if self._context_lua is None:
            self._context_lua = to_lua(self.lua, dict(self.info.context))
        return self._context_lua

    def _activity_options(self, table: Any, base: Any) -> tuple[Any, Any]:
        return activity_options_from_lua(table, base)

    def _activity_context(self, table: Any, base: Any) -> tuple[Any, Any]:
        return activity_context_from_lua(table, base)

    def _cancel_activity(self, aid: str, line: Any) -> bool:
        """future:cancel(). True: the activity's command was not sent yet and is dropped (the
        future fails at once); False: RequestCancelActivityTask was issued."""
        cmds = self._commands
        for i, c in enumerate(cmds):
            if c.ctype is C.ScheduleActivityTask and c.data[0] == aid:
                del cmds[i]
                return True
        sched = self.scheduled_event_of.get(aid)
        if sched is None:  # pragma: no cover - every sent activity has its event
            raise TaskFailure("WORKFLOW_ERROR", Failure(f"internal: activity {aid} has no scheduled event",
                                                         Kind.INTERNAL, False, source=line or None))
        cmds.append(PendingCommand(C.RequestCancelActivityTask, sched, line, None))
        return False

    # ---- processes (docs/processes.md)

    def _start_child(self, seq: int, workflow_type: str, host: Any, packed: Any, spec: Any, line: Any,
                     monitored: bool = True, linked: bool = False) -> Any:
        """Issue StartChildWorkflowExecution; return (None, whether process.cancel of the child waits for
        it to close: wait_for_cancellation), or a message when host is unusable."""
        if spec is not None and not isinstance(spec, SpawnSpec):
            return "internal: bad spawner"
        if is_process_host(self.registry, host):
            return self._spawn_process(seq, workflow_type, str(host), packed, line, linked, spec)
        refusal = process_without_host(self.registry, workflow_type, host) or \
            workflow_spawn_refusal(self.registry, host, linked)
        if refusal is not None:
            return refusal
        namespace: str | None = None
        queue: str | None = spec.options.task_queue if spec is not None else None
        if host is not None:
            target = self._worker_target(host)
            if target is not None:
                queue, namespace = target
            elif queue is None:  # as Wippy: a host that names no temporal.worker is the task queue itself
                found = self.registry.find(host)
                if found is not None:
                    return (f"host {host!r} is a {found.kind} entry, not a temporal.worker (the host names the "
                            "temporal.worker whose task queue runs the workflow, or is a task queue name)")
                queue = host
        elif queue is None:
            bound = self._bound_queue(workflow_type)
            if bound is not None:
                queue, namespace = bound
        self._commands.append(PendingCommand(
            C.StartChildWorkflowExecution, workflow_type, line,
            (seq, packed, spec, queue or self.info.task_queue, namespace or self.info.namespace)))
        return None, bool(spec is not None and spec.options.wait_for_cancellation)

    def _spawn_process(self, seq: int, entry_id: str, host: str, packed: Any, line: Any, linked: bool,
                       spec: SpawnSpec | None = None) -> Any:
        """A process on a process.host (docs/processes.md): a recorded message to the host's
        mailbox, with the pid chosen here; the spawn returns when the process says it runs (a
        recorded `@legato.spawned` signal from it), or fails when the host did not take it."""
        found = self.registry.find(entry_id)
        if not isinstance(found, ProcessEntry):
            why = "is not in the registry" if found is None else f"is a {found.kind} entry"
            return f"{entry_id!r} {why}: a process.host runs process.lua entries"
        i = self.info
        pid = workflow_process_pid(self._seed, seq)
        # what the run's close does to the process (history/spawned_processes.py), as for a child
        policy = spec.options.parent_close_policy if spec is not None else None
        spawn = ProcessSpawn(packed, {"ref": seq, "entry": entry_id, "reply_to": i.workflow_id, "monitor": True,
                                      "link": linked, "pid": pid, "namespace": i.namespace, "context": i.context,
                                      "parent_close_policy": (policy or ParentClosePolicy.TERMINATE).value})
        self._commands.append(PendingCommand(C.SignalExternalWorkflowExecution, SPAWN_TOPIC, line,
                                             (seq, host_pid(host), spawn)))
        return None, False, pid

    def _spawn_spec(self, op: str, base: Any, a: Any, b: Any) -> tuple[Any, Any]:
        return apply_spawner_call(op, base, a, b)

    def _signal_external(self, seq: int, pid: str, topic: str, payload: Any, line: Any) -> None:
        self._commands.append(PendingCommand(C.SignalExternalWorkflowExecution, topic, line, (seq, pid, payload)))

    def _cancel_external(self, seq: int, pid: str, deadline_ms: Any, line: Any) -> None:
        self._commands.append(PendingCommand(C.RequestCancelExternalWorkflowExecution, pid, line,
                                             (seq, int(deadline_ms or 0))))

    def _terminate_external(self, seq: int, pid: str, reason: Any, line: Any) -> None:
        self._commands.append(PendingCommand(C.TerminateExternalWorkflowExecution, pid, line, (seq, reason)))

    def _monitor_external(self, seq: int, pid: str, link: Any, remove: Any, line: Any) -> None:
        self._commands.append(PendingCommand(C.MonitorExternalWorkflowExecution, pid, line,
                                             (seq, bool(link), bool(remove))))

    def _version(self, change_id: str, lo: int, hi: int, line: Any) -> tuple[Any, bool, Any]:
        """workflow.version (docs/processes.md, Versioning): (version, recorded now, error message)."""
        known = self._versions.get(change_id)
        if known is not None:
            return self._in_range(change_id, known, lo, hi, "was recorded for this run")
        rec = self._recorded
        if rec is None:  # new code running for the first time at this point
            version = hi
        else:
            for ev in rec:
                if ev.event_type is EventType.MarkerRecorded and ev.attrs.get("marker_name") == VERSION_MARKER:
                    d = ev.attrs.get("details")
                    if isinstance(d, dict) and d.get("change_id") == change_id:
                        v = d.get("version")
                        if isinstance(v, bool) or not isinstance(v, int):
                            return None, False, (f"workflow.version({change_id!r}): event {ev.event_id} recorded "
                                                 f"version {v!r}, not a whole number")
                        version = v
                        break
            else:  # the run passed this point before the code had the call
                self._versions[change_id] = lo
                return lo, False, None
        got = self._in_range(change_id, version, lo, hi, "is recorded in the history")
        if got[0] is not None:
            self._versions[change_id] = version
            self._commands.append(PendingCommand(C.RecordMarker, VERSION_MARKER, line,
                                                 {"change_id": change_id, "version": version}))
            return version, True, None
        return got

    @staticmethod
    def _in_range(change_id: str, version: int, lo: int, hi: int, what: str) -> tuple[Any, bool, Any]:
        if lo <= version <= hi:
            return version, False, None
        return None, False, (f"workflow.version({change_id!r}, {lo}, {hi}): version {version} {what}, outside "
                             f"the supported range [{lo}, {hi}] (keep supporting version {version} while runs "
                             "that recorded it exist)")

    def _attrs(self, table: Any, line: Any) -> tuple[Any, Any]:
        """workflow.attrs{search=, memo=}: (number of commands issued, error message)."""
        value, problem = lua_map(table, "workflow.attrs", "a table {search = {...}, memo = {...}}")
        if value is None:
            return None, problem
        unknown = sorted(k for k in value if k not in ("search", "memo"))
        if unknown:
            return None, f"workflow.attrs: unknown key {unknown[0]!r} (known: search, memo)"
        cmds: list[PendingCommand] = []
        search = value.get("search")
        if search is not None:
            search = map_or_value(search)
            problem = check_search_attributes(search, "workflow.attrs: search")
            if problem:
                return None, problem
            if search:
                cmds.append(PendingCommand(C.UpsertWorkflowSearchAttributes, None, line, search))
        memo = value.get("memo")
        if memo is not None:
            memo = map_or_value(memo)
            if not isinstance(memo, dict):
                return None, "workflow.attrs: memo must be a table of name = value"
            if memo:
                cmds.append(PendingCommand(C.ModifyWorkflowProperties, None, line, memo))
        self._commands.extend(cmds)
        return len(cmds), None

    def _json_decode(self, text: str) -> tuple[Any, Any]:
        return json_decode_to_lua(self.lua, text)


    def _log(self, message: str) -> None:
        log.info("[%s %s] %s", self.info.workflow_type, self.info.workflow_id, message)


# The attributes of a command that carry values the code made (each one a payload).
_PAYLOAD_ATTRS = ("input", "result", "failure", "details", "memo", "search_attributes", "context")


def check_payload_sizes(commands: list[Command], pending: list[PendingCommand], limits: Limits) -> None:
    """Fail the task, naming the limit, the size and the Lua line, when a payload the code made is
    larger than limits.max_payload_bytes or the commands together larger than a response may be
    (history would refuse them; the task would time out and run again, forever)."""
    limit = limits.max_payload_bytes
    total = 0
    for cmd, src in zip(commands, pending, strict=False):
        for name in _PAYLOAD_ATTRS:
            value = cmd.attrs.get(name)
            if value is None:
                continue
            # a failure wraps the code's details in one more level
            depth_limit = limits.max_payload_depth + (1 if name == "failure" else 0)
            if codec.value_depth(value, depth_limit) > depth_limit:
                raise TaskFailure("LIMIT_EXCEEDED", Failure(
                    f"{src.describe()}: its {name} nests more than {limits.max_payload_depth} levels deep "
                    "(limits.max_payload_depth)", Kind.LIMIT_EXCEEDED, False, source=src.line))
            try:
                size = len(codec.dumps(value).encode())
            except (TypeError, ValueError) as err:
                raise TaskFailure("WORKFLOW_ERROR", Failure(
                    f"{src.describe()}: its {name} cannot be encoded as JSON: {err}", Kind.INVALID, False,
                    source=src.line)) from None
            if size > limit:
                raise TaskFailure("LIMIT_EXCEEDED", Failure(
                    f"{src.describe()}: its {name} is {size} bytes; the limit is {limit} bytes "
                    "(limits.max_payload_bytes)", Kind.LIMIT_EXCEEDED, False, source=src.line))
            total += size
    cap = max_message_bytes(limits)
    if total > cap:
        raise TaskFailure("LIMIT_EXCEEDED", Failure(
            f"the workflow task's {len(commands)} commands carry {total} bytes of payloads; one task may send at "
            f"most {cap} bytes (from limits.max_payload_bytes and limits.max_history_bytes)",
            Kind.LIMIT_EXCEEDED, False))


def pad6(r: Any) -> tuple[Any, Any, Any, Any, Any, Any]:
    if not isinstance(r, tuple):
        return r, None, None, None, None, None
    return (*r, None, None, None, None, None)[:6]


def packed(lua: Any, values: list[Any]) -> Any:
    t = lua.table_from([to_lua(lua, v) for v in values])
    t["n"] = len(values)
    return t


def duration_ms(value: Any) -> tuple[Any, Any]:
    try:
        return parse_duration_ms(value, "duration"), None
    except ValueError as err:
        return None, str(err)


_SORTED = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True)


def json_encode(value: Any) -> tuple[Any, Any]:
    try:
        v = to_python(value, json_arrays=True)
        try:
            return _SORTED.encode(v), None
        except ValueError:  # NaN or an infinity: null, as Wippy writes them
            return _SORTED.encode(_finite(v)), None
    except (ConversionError, TypeError, ValueError) as err:
        return None, f"json.encode: {err}"


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_finite(x) for x in v]
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v
