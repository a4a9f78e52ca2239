"""Activities: `function.lua` entries run for activity tasks.

Each thread keeps one Lua runtime per function entry and reuses it for later calls (the code is
loaded once). Activity code has the standard library (activities do the side effects) plus the
modules its entry lists: `time` (real clock and real sleep), `json`, `uuid` (real random), `crypto`,
`errors`, `ctx`, `activity` and `funcs` (`funcs.call` runs another function entry directly, in this
thread; `funcs.new():with_context{...}` adds to the context it sees). As Wippy's functions, it
also has the `channel` global and `coroutine.spawn`: each call runs its function and the coroutines
it spawns on a cooperative scheduler of its own (worker/kernel/coop.lua), which sleeps the thread
(`_sleep`) when every coroutine waits for a deadline.

Heartbeats and cancellation: `activity.heartbeat(details)` records progress (throttled to
`worker.heartbeat_throttle_ms`); `activity.heartbeat_details()` is the latest details, starting
with those the previous attempt recorded. Once the workflow asks to cancel the activity (or the
activity is no longer pending), `activity.heartbeat` raises an error of kind CANCELED and
`activity.is_canceled()` is true; an attempt that then ends with a CANCELED error is reported as
canceled (RespondActivityTaskCanceled), one that returns normally as completed.

Result conventions:
* returned value -> completed with it;
* `return nil, "text"` -> failed: kind UNKNOWN, not retryable (a returned error is a business result);
* `return nil, errors.new{...}` -> failed with that kind/message/details (retryable only if it says so);
* a raised Lua error -> kind INTERNAL (or the raised error object's kind), retryable, the Lua message;
* an activity type that is not in the registry -> NOT_FOUND, not retryable.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lupa import lua54

from legato.config import Limits
from legato.errors import Failure, Kind, NotFound
from worker import crypto_host
from worker.codec_ops import new_uuid
from worker.convert import ConversionError, args_to_python, json_decode_to_lua, to_lua, to_python
from worker.entries import FunctionEntry, Registry
from worker.runtime import duration_ms, json_encode, load_kernel, new_lua

log = logging.getLogger("legato.worker.activity")

HeartbeatFn = Callable[[bytes, Any], bool]  # (task_token, details) -> cancel requested

MAX_CALL_DEPTH = 32
# History times an attempt out at its start-to-close or heartbeat timeout; the worker stops the
# code this long after (history's timeout is the one recorded; a heartbeat or a result on its way
# is not cut short), which frees its thread.
TIMEOUT_GRACE_MS = 1_000


@dataclass(slots=True)
class HeartbeatState:
    """One attempt's heartbeats, shared by the nested calls of that attempt."""

    details: Any = None  # the latest details (the previous attempt's until this one records some)
    unsent: bool = False  # details recorded but throttled away
    last_sent: float | None = None  # time.monotonic() of the last heartbeat sent
    last_beat: float | None = None  # time.monotonic() of the last activity.heartbeat() call
    cancel_requested: bool = False


@dataclass(slots=True)
class CallContext:
    """What the host functions of an activity call need to know."""

    task_token: bytes = b""
    activity_id: str = ""
    activity_type: str = ""
    workflow_id: str = ""
    run_id: str = ""
    workflow_type: str = ""
    task_queue: str = ""
    attempt: int = 1
    context: dict[str, Any] = field(default_factory=dict)
    heartbeat_details: Any = None
    depth: int = 0
    heartbeat_timeout_ms: int = 0
    beat: HeartbeatState = field(default_factory=HeartbeatState)
    # time.monotonic() after which the attempt is stopped (its start-to-close timeout), or None
    deadline: float | None = None
    start_to_close_timeout_ms: int = 0
    started: float = field(default_factory=time.monotonic)

    def interrupted(self, stopping: threading.Event | None = None) -> str | None:
        """Why the attempt must stop now, or None: the activity's code is stopped by its
        instruction hook, which asks this every few thousand instructions."""
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline + TIMEOUT_GRACE_MS / 1000:
            return (f"the activity ran past its start-to-close timeout ({self.start_to_close_timeout_ms} ms) "
                    "and was stopped")
        hb = self.heartbeat_timeout_ms
        if hb and (now - (self.beat.last_beat or self.started)) * 1000 >= hb + TIMEOUT_GRACE_MS:
            return f"the activity sent no heartbeat within its heartbeat timeout ({hb} ms) and was stopped"
        if stopping is not None and stopping.is_set():
            return "the worker is stopping"
        return None

    def remaining_s(self) -> float | None:
        """Until the code is stopped (its deadline and the grace)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline + TIMEOUT_GRACE_MS / 1000 - time.monotonic())


@dataclass(slots=True)
class ActivityOutcome:
    ok: bool
    result: Any = None
    failure: Failure | None = None
    canceled: bool = False  # ended with a CANCELED error after the cancellation reached it


class _FunctionRuntime:
    def __init__(self, entry: FunctionEntry, runner: ActivityRunner) -> None:
        self.entry = entry
        self.runner = runner
        self.ctx = CallContext()
        self.lua = new_lua(runner.memory_bytes)
        host = {
            "now_ms": lambda: int(time.time() * 1000),
            "sleep": self._sleep,
            "monotonic_ms": lambda: time.monotonic() * 1000.0,  # the deadlines of sleeping coroutines
            "interrupted": self._interrupted,
            "uuid4": lambda: str(uuid.uuid4()),
            "uuid_new": lambda v: new_uuid(v, time.time_ns() // 1_000_000, None),
            "random_hex": lambda n, *_: os.urandom(int(n)).hex(),
            **crypto_host.host_functions(self.lua),
            "context": self._context,
            "heartbeat": self._heartbeat,
            "heartbeat_details": self._heartbeat_details,
            "is_canceled": self._is_canceled,
            "activity_info": self._info,
            "call_function": self._call_function,
            "duration_ms": duration_ms,
            "json_encode": json_encode,
            "json_decode": self._json_decode,
            "log": self._log,
            "warn": self._warn,
        }
        self.k = load_kernel(self.lua, "activity", host)
        ok, err = self.k.setup(entry.id, self.lua.table_from(list(entry.modules)), entry.method, entry.bytecode,
                               entry.chunk_name)
        self.setup_error: str | None = None if ok else str(err)
        self._call = self.k.call

    def call(self, args: list[Any], ctx: CallContext) -> ActivityOutcome:
        if self.setup_error is not None:
            return ActivityOutcome(False, failure=Failure(self.setup_error, Kind.INTERNAL, True))
        saved = self.ctx
        self.ctx = ctx
        try:
            packed = self.lua.table_from([to_lua(self.lua, a) for a in args])
            packed["n"] = len(args)
            r = self._call(packed)
        except lua54.LuaMemoryError:
            self.runner.discard(self.entry)  # its heap may hold what the code built: start afresh
            return ActivityOutcome(False, failure=Failure(
                f"{self.entry.id}: the activity ran out of Lua memory (limits.activity_lua_memory_bytes = "
                f"{self.runner.memory_bytes} bytes)", Kind.LIMIT_EXCEEDED, False))
        except lua54.LuaError as err:
            return ActivityOutcome(False, failure=Failure(str(err), Kind.INTERNAL, True))
        finally:
            self.ctx = saved
        status = r[0] if isinstance(r, tuple) else r
        if status == "ok":
            try:
                return ActivityOutcome(True, result=to_python(r[1]))
            except ConversionError as err:
                return ActivityOutcome(False, failure=Failure(
                    f"{self.entry.id}: the result cannot be recorded: {err}", Kind.INVALID, False))
        padded: tuple[Any, ...] = (*r, None, None, None, None, None) if isinstance(r, tuple) else (r, None, None,
                                                                                                  None, None, None)
        message, kind, retryable, details = padded[1], padded[2], padded[3], padded[4]
        rest = padded[5:6]
        try:
            det = to_python(details)
        except ConversionError:
            det = None
        if status == "returned_error":
            return ActivityOutcome(False, failure=Failure(str(message), str(kind or Kind.UNKNOWN),
                                                          bool(retryable) if retryable is not None else False, det))
        source = rest[0] if rest else None
        return ActivityOutcome(False, failure=Failure(str(message), Kind.INTERNAL if kind is None else str(kind),
                                                      bool(retryable) if retryable is not None else True, det,
                                                      source=source or None))

    # host callbacks
    def _interrupted(self) -> str | None:
        return self.ctx.interrupted(self.runner.stopping)

    def _sleep(self, ms: Any) -> None:
        """time.sleep: real, but it ends at the attempt's deadline or when the worker stops (the
        hook then stops the code)."""
        if not ms or ms <= 0:
            return
        wait = float(ms) / 1000.0
        left = self.ctx.remaining_s()
        if left is not None:
            wait = min(wait, left)
        self.runner.stopping.wait(wait)

    def _log(self, message: str) -> None:
        log.info("[activity %s %s] %s", self.ctx.activity_type, self.ctx.activity_id, message)

    def _warn(self, message: str) -> None:
        """What the code cannot be told (a coroutine.spawn'd coroutine failed): the worker's log."""
        log.warning("[activity %s %s] %s: %s", self.ctx.activity_type, self.ctx.activity_id, self.entry.id, message)

    def _context(self) -> Any:
        return to_lua(self.lua, dict(self.ctx.context))

    def _heartbeat(self, details: Any) -> bool:
        try:
            d = to_python(details)
        except ConversionError:
            d = None
        return self.runner.heartbeat(self.ctx, d)

    def _heartbeat_details(self) -> Any:
        return to_lua(self.lua, self.ctx.beat.details)

    def _is_canceled(self) -> bool:
        return self.ctx.beat.cancel_requested

    def _info(self) -> Any:
        c = self.ctx
        return to_lua(self.lua, {"activity_id": c.activity_id, "activity_type": c.activity_type,
                                 "workflow_id": c.workflow_id, "run_id": c.run_id,
                                 "workflow_type": c.workflow_type, "task_queue": c.task_queue,
                                 "attempt": c.attempt, "heartbeat_details": c.heartbeat_details,
                                 "heartbeat_timeout_ms": c.heartbeat_timeout_ms})

    def _call_function(self, entry_id: str, packed: Any, context: Any = None) -> tuple[Any, ...]:
        try:
            args = args_to_python(packed)
            extra = to_python(context) if context is not None else None
        except ConversionError as err:
            return False, f"funcs.call({entry_id}): {err}", Kind.INVALID, False, None
        if self.ctx.depth >= MAX_CALL_DEPTH:
            return False, f"funcs.call({entry_id}): calls nested more than {MAX_CALL_DEPTH} deep", Kind.INTERNAL, \
                False, None
        merged = {**self.ctx.context, **extra} if isinstance(extra, dict) and extra else self.ctx.context
        ctx = CallContext(self.ctx.task_token, self.ctx.activity_id, entry_id, self.ctx.workflow_id, self.ctx.run_id,
                          self.ctx.workflow_type, self.ctx.task_queue, self.ctx.attempt, merged,
                          self.ctx.heartbeat_details, self.ctx.depth + 1, self.ctx.heartbeat_timeout_ms,
                          self.ctx.beat, self.ctx.deadline, self.ctx.start_to_close_timeout_ms, self.ctx.started)
        out = self.runner.call(entry_id, args, ctx)
        if out.ok:
            return True, to_lua(self.lua, out.result)
        f = out.failure or Failure("failed")
        return False, f.message, f.kind, f.retryable, to_lua(self.lua, f.details)

    def _json_decode(self, text: str) -> tuple[Any, Any]:
        return json_decode_to_lua(self.lua, text)



class ActivityRunner:
    """Runs function entries; safe to call from many threads (each has its own runtimes)."""

    def __init__(self, registry: Registry, heartbeat: Callable[[CallContext, Any], bool] | None = None,
                 heartbeat_throttle_ms: int = 1_000, memory_bytes: int | None = None) -> None:
        self.registry = registry
        self._heartbeat = heartbeat
        self.heartbeat_throttle_ms = heartbeat_throttle_ms
        self.memory_bytes = memory_bytes or Limits().activity_lua_memory_bytes
        self._local = threading.local()
        # set when the worker stops: running activities are stopped by their hook, sleeps end
        self.stopping = threading.Event()

    def heartbeat(self, ctx: CallContext, details: Any) -> bool:
        """Record `details`; send them unless throttled. Returns whether cancellation was requested."""
        beat = ctx.beat
        beat.details = details
        beat.last_beat = time.monotonic()
        interval_ms: float = self.heartbeat_throttle_ms
        if ctx.heartbeat_timeout_ms:
            interval_ms = min(interval_ms, ctx.heartbeat_timeout_ms * 0.8)
        now = time.monotonic()
        if beat.last_sent is not None and (now - beat.last_sent) * 1000 < interval_ms:
            beat.unsent = True
            return beat.cancel_requested
        self._send(ctx, details)
        return beat.cancel_requested

    def _send(self, ctx: CallContext, details: Any) -> None:
        beat = ctx.beat
        beat.last_sent = time.monotonic()
        beat.unsent = False
        if self._heartbeat is None:
            return
        try:
            if self._heartbeat(ctx, details):
                beat.cancel_requested = True
        except NotFound:  # no longer pending (timed out, canceled, run closed): stop working on it
            beat.cancel_requested = True
        except Exception as err:
            log.warning("heartbeat of activity %s (%s) failed: %s: %s", ctx.activity_id, ctx.activity_type,
                        type(err).__name__, err)

    def discard(self, entry: FunctionEntry) -> None:
        """Drop this thread's runtime of `entry` (the next call makes a new one)."""
        rts: dict[str, _FunctionRuntime] | None = getattr(self._local, "runtimes", None)
        if rts is not None:
            rts.pop(entry.id, None)

    def _runtime(self, entry: FunctionEntry) -> _FunctionRuntime:
        rts: dict[str, _FunctionRuntime] | None = getattr(self._local, "runtimes", None)
        if rts is None:
            rts = self._local.runtimes = {}
        rt = rts.get(entry.id)
        if rt is None or rt.entry is not entry:
            rt = rts[entry.id] = _FunctionRuntime(entry, self)
        return rt

    def call(self, activity_type: str, args: list[Any], ctx: CallContext | None = None) -> ActivityOutcome:
        entry = self.registry.function(activity_type)
        if entry is None:
            return ActivityOutcome(False, failure=Failure(
                f"activity {activity_type!r} is not registered on this worker (no function.lua entry with that id)",
                Kind.NOT_FOUND, True))  # retryable, as in Wippy and Temporal: it may be registered later
        try:
            return self._runtime(entry).call(args, ctx or CallContext(activity_type=activity_type))
        except Exception as err:
            return ActivityOutcome(False, failure=Failure(f"{activity_type}: {type(err).__name__}: {err}",
                                                          Kind.INTERNAL, True))

    def execute(self, task: Any) -> ActivityOutcome:
        """Run an `ActivityTask`."""
        timeout_ms = int(task.start_to_close_timeout_ms or 0)
        started = time.monotonic()
        ctx = CallContext(task.task_token, task.activity_id, task.activity_type, task.workflow_id, task.run_id,
                          task.workflow_type, task.task_queue, task.attempt, dict(task.context or {}),
                          task.heartbeat_details, 0, int(task.heartbeat_timeout_ms or 0),
                          HeartbeatState(details=task.heartbeat_details),
                          started + timeout_ms / 1000 if timeout_ms > 0 else None, timeout_ms, started)
        args = task.input if isinstance(task.input, list) else [task.input]
        out = self.call(task.activity_type, args, ctx)
        if out.ok:
            return out
        if ctx.beat.cancel_requested and out.failure is not None and out.failure.kind == Kind.CANCELED:
            out.canceled = True
        elif ctx.beat.unsent:
            self._send(ctx, ctx.beat.details)  # the next attempt starts from the latest details
        return out




