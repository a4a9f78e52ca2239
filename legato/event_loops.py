"""Which asyncio event loop Legato's processes run on.

uvloop (libuv, in C) by default: the engine hops between tasks several hundred times per
workflow (futures, wake-ups, call_soon), and asyncio's loop is written in Python. On
`legato load children --total 5000` the engine process used 1.70 to 1.73 ms of CPU per child on
uvloop against 1.82 to 2.02 ms on asyncio's own loop. LEGATO_EVENT_LOOP=asyncio chooses the
standard loop (the test suite's in-process engines run on it, so both are exercised)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

EVENT_LOOP_ENV = "LEGATO_EVENT_LOOP"
EVENT_LOOPS = ("uvloop", "asyncio")
DEFAULT_EVENT_LOOP = "uvloop"

T = TypeVar("T")


class EventLoopSettingError(ValueError):
    pass


def event_loop_name(env: dict[str, str] | None = None) -> str:
    name = (os.environ if env is None else env).get(EVENT_LOOP_ENV, "").strip() or DEFAULT_EVENT_LOOP
    if name not in EVENT_LOOPS:
        raise EventLoopSettingError(f"{EVENT_LOOP_ENV}={name!r} is not an event loop Legato knows: "
                                    f"choose one of {', '.join(EVENT_LOOPS)}")
    return name


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(coro: Coroutine[Any, Any, T], name: str) -> T:
    """asyncio.run on the named loop."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(coro)
