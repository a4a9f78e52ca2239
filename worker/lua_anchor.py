"""Host functions get their Lua arguments as objects of the main Lua thread (lupa issue #84).

lupa wraps a Lua value handed to Python together with the `lua_State` it came through. Workflow
code runs in coroutines, so a table passed to a host function (the arguments of an activity, a
child's options, a signal's payload...) is tied to the coroutine's state. Python keeps some of
them after the call: a command's arguments stay until the task's commands are built. Once the
coroutine has ended and Lua has collected it, any use of such a wrapper, and even releasing it
(`luaL_unref` through the freed state), writes into freed memory: the Lua host of the 1M-children
run died with SIGSEGV and "corrupted double-linked list" replaying parents that had spawned
hundreds of coroutines.

`anchor_host` wraps every host function so that each Lua object argument is wrapped again on the
main thread (one Lua call per table or function argument; scalars pass as they are) before the
function sees it; the coroutine's wrapper is released at once, while its coroutine lives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def anchor_host(lua: Any, host: dict[str, Any]) -> dict[str, Any]:
    """`host` with each callable wrapped by `anchored` (other values unchanged)."""
    to_main = lua.eval("function(x) return x end")  # made, and so called, on the main thread
    lua_object = type(lua.table()).__mro__[1]  # lupa's _LuaObject, base of every Lua wrapper
    return {name: anchored(fn, to_main, lua_object) if callable(fn) else fn for name, fn in host.items()}


def anchored(fn: Callable[..., Any], to_main: Any, lua_object: type) -> Callable[..., Any]:
    def host_function(*args: Any) -> Any:
        for a in args:
            if isinstance(a, lua_object):
                return fn(*[to_main(x) if isinstance(x, lua_object) else x for x in args])
        return fn(*args)

    host_function.__name__ = getattr(fn, "__name__", "host_function")
    return host_function
