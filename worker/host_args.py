"""Arguments of the kernel's pure host operations (`H.crypto(op, ...)`: crypto, hash, base64,
uuid), and the error such an operation fails with.

lupa hands Lua strings to Python decoded as UTF-8, so the kernel tags each string argument that
may hold bytes: "u" + the string when it is valid UTF-8, else "x" + its hex (worker/kernel/codecs.lua,
`crypto_arg`). Results go back as `bytes` (a Lua string, byte for byte) or `str`.
"""

from __future__ import annotations

from typing import Any

from lupa import lua54

from legato.errors import Kind


class OpError(Exception):
    """A call that fails: the Lua code gets `nil, err` with this message and kind (never retryable)."""

    def __init__(self, message: str, kind: str = Kind.INVALID) -> None:
        super().__init__(message)
        self.kind = kind


def type_name(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return str(lua54.lua_type(value) or type(value).__name__)


def binary(value: Any, what: str) -> bytes:
    """A string argument as the kernel tags it ("u" + UTF-8 text, or "x" + hex)."""
    if isinstance(value, str) and value[:1] == "u":
        return value[1:].encode("utf-8")
    if isinstance(value, str) and value[:1] == "x":
        return bytes.fromhex(value[1:])
    raise OpError(f"{what}: expected a string, got {type_name(value)}")


def opt_binary(value: Any, what: str) -> bytes | None:
    return None if value is None else binary(value, what)


def text(value: Any, what: str) -> str:
    """A string argument that must be UTF-8 text (an id, a name)."""
    if isinstance(value, str) and value[:1] == "u":
        return value[1:]
    if isinstance(value, str) and value[:1] == "x":
        raise OpError(f"{what}: expected text, got a binary string")
    raise OpError(f"{what}: expected a string, got {type_name(value)}")


def whole(value: Any, what: str) -> int:
    """A whole number (a float such as 32.0 too, as Lua code may compute one)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise OpError(f"{what}: expected a whole number, got {type_name(value)}")
    return int(value)
