"""Payload and record encoding: compact JSON, with the size and depth checks every limit relies on.

Depth: Python's JSON decoder and encoder recurse once per level of nesting, so a document nested
thousands of levels deep ends in RecursionError wherever it is decoded, copied or encoded. Every
JSON that comes from outside is therefore measured before it is decoded (`json_depth`, which does
not recurse) and refused beyond `MAX_JSON_DEPTH`; a payload that gets in is then held to the
configured `limits.max_payload_depth` (`encode_payload`), and a value built in memory (a CLI
option, a result of workflow code) is checked with `check_depth`.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

import orjson

from legato.errors import InvalidArgument

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder()

# The deepest JSON any of our decoders accepts, whatever the configuration: well below Python's
# recursion limit (1000 frames, shared with the decoder's own recursion), and above the deepest
# configurable payload plus the records around it (event and command attributes, failures).
MAX_JSON_DEPTH = 512
# The largest `limits.max_payload_depth` a configuration may set, and its default.
MAX_PAYLOAD_DEPTH_CEILING = 256
DEFAULT_MAX_PAYLOAD_DEPTH = 64
# What a too deep payload is refused with (InvalidArgument's reason).
REASON_TOO_DEEP = "PayloadTooDeep"

# A JSON string (escapes included); what is inside one does not nest.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def dumps(value: Any) -> str:
    """Compact JSON; NaN and infinities are refused (ValueError): what comes from outside is
    checked with it."""
    return _ENCODER.encode(value)


# Keys that are not strings (ints, bools, None) become strings, as the standard library does.
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def dump_record(value: Any) -> str:
    """Compact JSON of a record the engine writes (events, mutable state, shard rows), whose
    payloads `encode_payload` checked on their way in: orjson, some 10x faster than `dumps` (the
    encoding was a tenth of the engine's CPU per child workflow). Unlike `dumps` it does not
    refuse NaN (orjson writes null), which such records do not hold. What orjson refuses
    (integers beyond 64 bits, lone surrogates, unknown types) goes through `dumps`."""
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return dumps(value)


def loads(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        text = text.decode()
    return _DECODER.decode(text)


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON `text` (0 for a scalar), without decoding it
    and without recursion. Brackets inside strings do not count. On text that is not JSON the
    answer is an upper bound of what a decoder would reach before failing."""
    if '"' in text:
        text = _JSON_STRING.sub("", text)
    brackets = _NOT_BRACKET.sub("", text)
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets), initial=0))


def value_depth(value: Any, stop_after: int) -> int:
    """How deeply lists (and tuples) and mappings nest in `value` (0 for a scalar), counting at
    most `stop_after` + 1 levels. Walks level by level with each container once per level, so
    that it neither recurses nor explodes on sub-values shared many times (a cycle is infinitely
    deep: the answer is then `stop_after` + 1)."""
    level: list[Any] = [value] if isinstance(value, list | tuple | dict) else []
    depth = 0
    while level and depth <= stop_after:
        depth += 1
        seen: dict[int, Any] = {}
        for container in level:
            for child in (container.values() if isinstance(container, dict) else container):
                if isinstance(child, list | tuple | dict):
                    seen[id(child)] = child
        level = list(seen.values())
    return depth


def _too_deep(what: str, depth: int, limit: int, setting: str, more: bool = False) -> InvalidArgument:
    deep = f"more than {limit}" if more else str(depth)
    if setting:
        text = f"{what} nests arrays and objects {deep} levels deep; the limit ({setting}) is {limit} levels"
    else:  # beyond what any decoder of ours takes (MAX_JSON_DEPTH): name the limit a user can see
        text = (f"{what} nests arrays and objects {deep} levels deep, more than can be decoded ({limit}); a "
                f"payload may nest limits.max_payload_depth levels ({DEFAULT_MAX_PAYLOAD_DEPTH} by default)")
    return InvalidArgument(text, reason=REASON_TOO_DEEP)


def check_depth(value: Any, limit: int, what: str = "payload",
                setting: str = "limits.max_payload_depth") -> None:
    """Refuse (InvalidArgument, reason PayloadTooDeep, naming `what` and `setting`) a value
    whose lists and mappings nest more than `limit` levels deep. Safe on any value: no
    recursion, shared sub-values are not walked again, a cycle counts as too deep."""
    if value_depth(value, limit) > limit:
        raise _too_deep(what, 0, limit, setting, more=True)


def check_json_depth(text: str, limit: int, what: str = "payload",
                     setting: str = "limits.max_payload_depth") -> None:
    """Refuse JSON text nested more than `limit` levels deep, as `check_depth` does a value."""
    if text.count("[") + text.count("{") <= limit:  # cannot nest deeper than it opens (most payloads)
        return
    depth = json_depth(text)
    if depth > limit:
        raise _too_deep(what, depth, limit, setting)


def load_payload(text: str | bytes, what: str = "payload", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode JSON that comes from outside: InvalidArgument naming `what` when it is not UTF-8,
    not JSON, or nested more than `max_depth` levels (measured before decoding)."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as e:
            raise InvalidArgument(f"{what} is not valid UTF-8 (byte {e.start}): JSON must be UTF-8 text") from None
    setting = "" if max_depth == MAX_JSON_DEPTH else "limits.max_payload_depth"
    check_json_depth(text, max_depth, what, setting)
    try:
        return _DECODER.decode(text)
    except RecursionError:  # pragma: no cover - the depth check comes first; a caller deep in its stack
        raise _too_deep(what, json_depth(text), max_depth, setting) from None
    except ValueError as e:
        raise InvalidArgument(f"{what} is not valid JSON: {e}") from None


def encode_payload(value: Any, limit: int, what: str = "payload", max_depth: int | None = None) -> str:
    """Encode a user value, refusing (InvalidArgument naming `what`) one larger than `limit`
    bytes (reason PayloadTooLarge), nested more than `max_depth` levels (reason PayloadTooDeep;
    None: no depth limit beyond what Python can encode), or not representable as JSON in UTF-8.
    The depth is measured on the encoded text, which costs little (see `json_depth`)."""
    try:
        text = dumps(value)
    except RecursionError:
        raise _too_deep(what, 0, MAX_JSON_DEPTH, "", more=True) from None
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"{what} cannot be encoded as JSON: {_why_not_json(e)}") from e
    if max_depth is not None:
        check_json_depth(text, max_depth, what)
    size = len(text) if text.isascii() else _utf8_size(text, what)
    if size > limit:
        raise InvalidArgument(f"{what} is {size} bytes; the limit is {limit} bytes", reason="PayloadTooLarge")
    return text


def _why_not_json(e: Exception) -> str:
    if "Out of range float" in str(e):
        return "it has a number JSON cannot carry (NaN, Infinity, or beyond ±1.8e308)"
    return str(e)


# The most one character of a string can take in JSON (a control character as \u00XX).
_MAX_ESCAPE_CHARS = 6
_BIG_INT = 1 << 64
_SHORT_NUMBER_CHARS = 24  # the longest JSON of an int below _BIG_INT, a float, true, false or null


def check_payload(value: Any, limit: int, what: str = "payload", max_depth: int | None = None) -> None:
    """`encode_payload` without the text: the same refusals, but a short ASCII string, an int, a
    bool, None or a finite float is accepted without encoding it (most command attributes are:
    ids, types, timeouts), so a workflow task's many small attributes cost a type check each."""
    t = type(value)
    if t is str:
        if value.isascii() and len(value) * _MAX_ESCAPE_CHARS + 2 <= limit:
            return
    elif t is bool or value is None:
        if limit >= _SHORT_NUMBER_CHARS:
            return
    elif t is int:
        if -_BIG_INT < value < _BIG_INT and limit >= _SHORT_NUMBER_CHARS:
            return
    elif t is float:
        if math.isfinite(value) and limit >= _SHORT_NUMBER_CHARS:
            return
    encode_payload(value, limit, what, max_depth)


def _utf8_size(text: str, what: str) -> int:
    try:
        return len(text.encode())
    except UnicodeEncodeError as e:
        bad = text[e.start]
        raise InvalidArgument(f"{what} has a lone surrogate ({bad!a}) in a string: text must be valid "
                              "Unicode (a \\ud800-\\udfff escape is half of a character)") from None


def parse_json_input(text: str, what: str = "--input", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON value a user typed (a CLI option): InvalidArgument naming `what` when it is not
    JSON, nested more than `max_depth` levels, or not encodable again (a lone surrogate)."""
    value = load_payload(text, what, max_depth)
    encode_payload(value, 2**63, what)
    return value
