"""A thread pool whose threads never keep the process alive.

Activities run in threads. An activity stuck in C code (where its instruction hook cannot stop
it) would keep a `ThreadPoolExecutor` thread busy, and Python joins those threads at exit: the
worker would then ignore SIGTERM forever. These threads are daemons: the process exits when the
worker is done, abandoning whatever is still stuck.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadPool(Executor):
    def __init__(self, max_workers: int, thread_name_prefix: str = "pool") -> None:
        self._max = max_workers
        self._prefix = thread_name_prefix
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)  # released by a thread each time it is free again
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        fut: Future[T] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot run new work after shutdown")
            self._queue.put((fut, fn, args, kwargs))
            # a free thread takes it; else a new one, up to the maximum (as ThreadPoolExecutor does)
            if not self._idle.acquire(timeout=0) and len(self._threads) < self._max:
                t = threading.Thread(target=self._run, name=f"{self._prefix}_{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
        return fut

    def _run(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            fut, fn, args, kwargs = work
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args, **kwargs))
                except BaseException as e:  # handed to the caller, like ThreadPoolExecutor
                    fut.set_exception(e)
            del work, fut
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        work = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if work is not None:
                        work[0].cancel()
            for _ in self._threads:
                self._queue.put(None)
        if wait:
            for t in self._threads:
                t.join()
