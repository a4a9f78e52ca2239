"""`json.validate` (JSON Schema) and the `payload` module's transcoding (Wippy's API): pure
operations of their arguments, so workflows call them without recording anything.

The kernel calls them as `H.crypto(op, ...)` (worker/host_args.py for the tagged string
arguments; Lua tables arrive as tables). Values going back to Lua are wrapped as {"v": value}:
only a dict result is turned into a Lua table by the host door.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import jsonschema
import msgpack
import yaml
from jsonschema.exceptions import SchemaError

from legato.errors import Kind
from worker.convert import ConversionError, lua_type, map_or_value, to_python
from worker.host_args import OpError, binary, text

# Compiled schemas kept for reuse, keyed by their JSON text (Wippy caches by content too).
SCHEMA_CACHE_SIZE = 128
# The formats of payload.format (Wippy's values).
JSON, YAML, STRING, BYTES, MSGPACK = "json/plain", "yaml/plain", "text/plain", "application/octet-stream", \
    "application/msgpack"
LUA, GOLANG, ERROR = "lua/any", "golang/any", "golang/error"
ENCODED = (JSON, YAML, STRING, BYTES, MSGPACK)


# ---------------------------------------------------------------- json.validate

@functools.lru_cache(maxsize=SCHEMA_CACHE_SIZE)
def _validator(schema_text: str) -> Any:
    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as err:
        raise OpError(f"json.validate: the schema is not valid: {err.message}") from None
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _schema_text(schema: Any, what: str) -> str:
    if isinstance(schema, str):
        raw = text(schema, what)
        try:
            json.loads(raw)
        except ValueError as err:
            raise OpError(f"{what}: the schema is not JSON: {err}") from None
        return raw
    if lua_type(schema) != "table":
        raise OpError(f"{what}: the schema must be a table or a JSON string")
    try:
        return json.dumps(map_or_value(to_python(schema)), sort_keys=True)
    except ConversionError as err:
        raise OpError(f"{what}: the schema: {err}") from None


def _check(what: str, schema: Any, value: Any) -> dict[str, Any]:
    validator = _validator(_schema_text(schema, what))
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return {"v": True}
    where = "/".join(str(p) for p in error.absolute_path)
    raise OpError(f"{what}: {'at ' + where + ': ' if where else ''}{error.message}")


def _validate(schema: Any, data: Any) -> dict[str, Any]:
    try:
        value = to_python(data)
    except ConversionError as err:
        raise OpError(f"json.validate: the data: {err}") from None
    return _check("json.validate", schema, value)


def _validate_string(schema: Any, raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(text(raw, "json.validate_string"))
    except ValueError as err:
        raise OpError(f"json.validate_string: not JSON: {err}") from None
    return _check("json.validate_string", schema, value)


# ---------------------------------------------------------------- payload

def _decode(fmt: Any, data: Any) -> dict[str, Any]:
    """The Lua value an encoded payload holds."""
    f = text(fmt, "payload")
    raw = binary(data, f"payload ({f})")
    try:
        if f == JSON:
            return {"v": json.loads(raw)}
        if f == YAML:
            return {"v": yaml.safe_load(raw)}
        if f == MSGPACK:
            return {"v": msgpack.unpackb(raw, raw=False, strict_map_key=False)}
    except (ValueError, yaml.YAMLError, msgpack.UnpackException) as err:
        raise OpError(f"payload: the {f} data cannot be read: {err}", Kind.INTERNAL) from None
    return {"v": raw}  # text and bytes are their own value


def _encode(fmt: Any, value: Any) -> dict[str, Any]:
    """A Lua value encoded in `fmt` (the kernel tags a string value, worker/host_args.py)."""
    f = text(fmt, "payload:transcode")
    if f in (STRING, BYTES):
        if isinstance(value, str):
            return {"v": binary(value, f"payload:transcode to {f}")}
        raise OpError(f"payload:transcode: only a string can become {f}", Kind.INTERNAL)
    encoders: dict[str, Callable[[Any], str | bytes]] = {
        JSON: lambda x: json.dumps(x, separators=(",", ":"), ensure_ascii=False),
        YAML: lambda x: yaml.safe_dump(x, allow_unicode=True, sort_keys=False),
        MSGPACK: msgpack.packb,
    }
    if f not in encoders:
        raise OpError(f"payload:transcode: {f!r} is not a format a payload can be transcoded to "
                      f"(payload.format: {', '.join((*ENCODED, LUA))})", Kind.INTERNAL)
    return {"v": encoders[f](_plain(value, f))}


def _plain(value: Any, f: str) -> Any:
    if isinstance(value, str):
        try:
            return binary(value, "payload:transcode").decode()
        except UnicodeDecodeError:
            raise OpError(f"payload:transcode to {f}: a binary string has no {f} form", Kind.INTERNAL) from None
    try:
        return to_python(value, json_arrays=True)
    except ConversionError as err:
        raise OpError(f"payload:transcode to {f}: {err}", Kind.INTERNAL) from None


OPS: dict[str, Callable[..., Any]] = {
    "json.validate": _validate,
    "json.validate_string": _validate_string,
    "payload.decode": _decode,
    "payload.encode": _encode,
}
