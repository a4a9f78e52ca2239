"""Values between Lua and Python (payloads are JSON values).

Lua -> Python: a table whose keys are exactly 1..n becomes a list, any other table a dict (keys
as strings), an empty table an empty dict; an error object becomes a `Failure` dict
(`message`, `kind`, `retryable`, `details`); functions, threads and userdata are refused.
Python -> Lua: dicts and lists become tables (recursively), None becomes nil, an int that does
not fit Lua's 64-bit integers becomes a float.
"""

from __future__ import annotations

from typing import Any

from lupa import lua54

from legato.codec import value_depth
from legato.errors import Failure, Kind

lua_type = lua54.lua_type

_MAX_DEPTH = 100
# Tables and values one conversion visits at most. A value takes at least two bytes of JSON
# ("0,"), so a payload within the default limits.max_payload_bytes (2 MiB) has fewer; it bounds
# the work of a value whose sub-tables are shared (a DAG with 2^60 paths in a few KB of Lua
# memory) to well under a second.
MAX_PAYLOAD_NODES = 1_000_000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class ConversionError(ValueError):
    pass


def lua_map(table: Any, what: str, expected: str) -> tuple[dict[str, Any] | None, str | None]:
    """A Lua table that must be a map: (dict, None), or (None, a message naming `what` and the
    `expected` shape)."""
    try:
        value = map_or_value(to_python(table))
    except ConversionError as err:
        return None, f"{what}: {err}"
    if not isinstance(value, dict):
        return None, f"{what}: expected {expected}"
    return value, None


def map_or_value(value: Any) -> Any:
    """An empty Lua table converts to [] (it could be a list or a map): where a map is expected,
    read it as {}; anything else is returned for the caller to check."""
    return {} if value == [] else value


def to_python(value: Any, depth: int = 0, budget: list[int] | None = None, json_arrays: bool = False) -> Any:
    """Convert a Lua value (as lupa hands it over) into a JSON-able Python value. Tables are
    read raw (no metamethod of the code runs), within MAX_PAYLOAD_NODES values.

    `json_arrays` (json.encode, as Wippy): an empty table is an empty array, and a table with
    number keys that are not 1..n (a sparse array) is an error rather than an object."""
    t = type(value)
    if value is None or t is str or t is int or t is float or t is bool:
        return value
    lt = lua_type(value)
    if lt == "table":
        if budget is None:
            budget = [MAX_PAYLOAD_NODES]
        if depth >= _MAX_DEPTH:
            raise ConversionError(f"a table nested more than {_MAX_DEPTH} levels deep (a cycle?) cannot be a payload")
        try:
            items = list(value.items())
        except UnicodeDecodeError:
            raise ConversionError("a string in the value is not valid UTF-8 (hex-encode binary data)") from None
        n = len(items)
        budget[0] -= n + 1
        if budget[0] < 0:
            raise ConversionError(f"the value has more than {MAX_PAYLOAD_NODES} parts (tables shared many times "
                                  "over count once per use) and cannot be a payload")
        if n == 0:
            return [] if json_arrays else {}
        d1 = depth + 1
        # array part: keys 1..n
        arr: list[Any] | None = [None] * n
        for k, v in items:
            if type(k) is int and 1 <= k <= n:
                arr[k - 1] = v  # type: ignore[index]
            else:
                arr = None
                break
        if arr is not None:
            return [to_python(v, d1, budget, json_arrays) for v in arr]
        out: dict[str, Any] = {}
        for k, v in items:
            if k == "__err" and v is True:
                return _error_dict(dict(items), d1, budget)
            if type(k) is not str:
                if json_arrays and isinstance(k, int | float) and not isinstance(k, bool):
                    raise ConversionError(f"a table with number key {_key(k)} whose number keys are not exactly "
                                          "1..n (a sparse array, or numbers mixed with names) has no JSON form")
                if lua_type(k) is not None:
                    raise ConversionError("a table key must be a string or a number to be a payload")
                k = _key(k)
            out[k] = to_python(v, d1, budget, json_arrays)
        return out
    if t is bytes:
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise ConversionError("a string in the value is not valid UTF-8 (hex-encode binary data)") from None
    if lt is None:
        raise ConversionError(f"a {t.__name__} cannot be a payload")
    raise ConversionError(f"a Lua {lt} cannot be a payload (only nil, booleans, numbers, strings and tables)")


def _key(k: Any) -> str:
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, float) and k.is_integer():
        return str(int(k))
    return str(k)


def lua_text(v: Any, default: str = "") -> str:
    """A Lua value as text, without running its __tostring (which could loop)."""
    if v is None:
        return default
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, str | int | float | bool):
        return str(v)
    return f"(a Lua {lua_type(v) or type(v).__name__})"


def _raw(table: Any) -> dict[Any, Any]:
    """A Lua table's own fields (no __index)."""
    try:
        return dict(table.items())
    except UnicodeDecodeError:
        return {}


def _error_dict(err: dict[Any, Any], depth: int, budget: list[int] | None = None) -> dict[str, Any]:
    retryable = err.get("_retryable")
    out: dict[str, Any] = {"message": lua_text(err.get("_message")), "kind": lua_text(err.get("_kind"), Kind.UNKNOWN),
                           "retryable": bool(retryable) if retryable is not None else False}
    details = err.get("_details")
    if details is not None:
        out["details"] = to_python(details, depth, budget)
    return out


def args_to_python(packed: Any) -> list[Any]:
    """A `table.pack(...)` result -> list of arguments (nil arguments become None)."""
    n = packed["n"] or 0
    return [to_python(packed[i]) for i in range(1, n + 1)]


def failure_from_lua(err: Any, default_kind: str = Kind.UNKNOWN, default_retryable: bool = False) -> Failure:
    """The `err` of `return nil, err` as a Failure: an error object, a string, or a table."""
    if lua_type(err) == "table":
        raw = _raw(err)
        if raw.get("__err") is True:
            r = raw.get("_retryable")
            details = raw.get("_details")
            return Failure(message=lua_text(raw.get("_message")), kind=lua_text(raw.get("_kind"), default_kind),
                           retryable=default_retryable if r is None else bool(r),
                           details=to_python(details) if details is not None else None,
                           source=lua_text(raw.get("_source")) or None)
        d = to_python(err)
        if isinstance(d, dict):
            msg = d.get("message")
            kind = d.get("kind")
            r = d.get("retryable")
            return Failure(message=str(msg) if msg is not None else _compact(d),
                           kind=kind if isinstance(kind, str) else default_kind,
                           retryable=r if isinstance(r, bool) else default_retryable,
                           details=d.get("details"))
        return Failure(message=_compact(d), kind=default_kind, retryable=default_retryable)
    return Failure(message=lua_text(err), kind=default_kind, retryable=default_retryable)


def _compact(v: Any) -> str:
    from legato import codec

    try:
        return codec.dumps(v)
    except (TypeError, ValueError):
        return str(v)


def _sanitize(v: Any) -> Any:
    if type(v) is int:
        return float(v) if (v < _INT64_MIN or v > _INT64_MAX) else v
    if isinstance(v, dict):
        return {k: _sanitize(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_sanitize(x) for x in v]
    return v


def to_lua(lua: Any, value: Any) -> Any:
    """Convert a JSON-able Python value for `lua` (a LuaRuntime)."""
    if isinstance(value, dict | list | tuple):
        try:
            return lua.table_from(value, recursive=True)
        except OverflowError:
            return lua.table_from(_sanitize(value), recursive=True)
    if type(value) is int and (value < _INT64_MIN or value > _INT64_MAX):
        return float(value)
    return value


def json_decode_to_lua(lua: Any, text: Any) -> tuple[Any, Any]:
    """json.decode for Lua code: (value, nil) or (nil, message); nesting is bounded like payloads."""
    import json

    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:
        return None, f"json.decode: {err if not isinstance(err, RecursionError) else 'nested too deeply'}"
    if value_depth(value, _MAX_DEPTH) > _MAX_DEPTH:
        return None, f"json.decode: the value nests more than {_MAX_DEPTH} levels deep"
    return to_lua(lua, value), None


def packed_to_lua(lua: Any, values: list[Any]) -> Any:
    """A list of arguments as a `table.pack`-style table (keeps trailing nils through `n`)."""
    t = lua.table_from([to_lua(lua, v) for v in values])
    t["n"] = len(values)
    return t
