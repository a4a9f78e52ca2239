"""The Lua host process: runs a worker's workflow tasks away from its event loop.

Workflow code runs inside this child process (`python -m worker.lua_host`), one task at a time,
with the workflow cache (its runs share the process's one Lua state, `worker.runtime.LuaVM`). The
worker (`worker.lua_isolation`) sends tasks and reads outcomes in order over the child's stdin and
stdout, and kills the child when a task runs past the watchdog:
code stuck in C (a pattern that backtracks for hours, a library call nobody foresaw) can then
cost the runs cached here, never the worker's ability to serve other workflows or to stop.

Messages are frames (`worker.frames`: a 4-byte length, then a pickle). To the child: ("init", Init),
("task", WorkflowTask), ("query", QueryJob), ("evict", run_id), ("stop",). From the child:
("ready",) once, then ("done", TaskOutcome) per task and ("done", QueryOutcome) per query
(worker.queries), in the order they came.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import IO, Any

from legato.config import Limits
from legato.gc_tuning import tune_gc
from worker.entries import Registry
from worker.frames import LENGTH_BYTES, decode_body, decode_length, encode_frame


@dataclass(slots=True)
class Init:
    registry: Registry
    limits: Limits
    cache_size: int
    cache_bytes: int
    identity: str
    log_level: int


def _read_exactly(stream: IO[bytes], n: int) -> bytes | None:
    data = stream.read(n)
    if data is None or len(data) < n:
        return None
    return data


def _read_message(stream: IO[bytes]) -> Any:
    header = _read_exactly(stream, LENGTH_BYTES)
    if header is None:
        return None
    body = _read_exactly(stream, decode_length(header))
    return None if body is None else decode_body(body)


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the worker dies, even while Lua is stuck in C."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a parent's exit closes stdin, which ends the loop
        pass


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    from worker.cache import WorkflowCache
    from worker.queries import answer_query
    from worker.runtime import thread_vm
    from worker.task_runner import TaskRunner

    init = _read_message(inp)
    if not isinstance(init, tuple) or init[0] != "init":
        return
    cfg: Init = init[1]
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s[lua-host]: %(message)s")
    runner = TaskRunner(cfg.registry, cfg.limits, WorkflowCache(cfg.cache_size, cfg.cache_bytes), cfg.identity)
    thread_vm()  # the Lua state and its kernel, before "ready": starting up is not a task's time
    out.write(encode_frame(("ready",)))
    out.flush()
    while True:
        msg = _read_message(inp)
        if msg is None or msg[0] == "stop":
            break
        if msg[0] == "task":
            out.write(encode_frame(("done", runner.run(msg[1]))))
            out.flush()
        elif msg[0] == "query":
            out.write(encode_frame(("done", answer_query(runner.cache, cfg.registry, cfg.limits, msg[1]))))
            out.flush()
        elif msg[0] == "evict":
            runner.cache.evict(msg[1])
    runner.cache.clear()


def main() -> None:
    # A crash in C (lupa, Lua) prints the Python stack of every thread to stderr (the worker's log)
    # before the process dies: the worker restarts the host, the log says where it was.
    faulthandler.enable()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the worker, which stops this process
    # The protocol owns the original stdout; anything printed goes to stderr with the logs.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    tune_gc()  # a bad LEGATO_GC_THRESHOLDS stopped the worker that started this host already
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
