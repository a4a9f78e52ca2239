"""Payload and record encoding: compact JSON, with the size checks every limit relies on."""

from __future__ import annotations

import json
from typing import Any

from legato.errors import InvalidArgument

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder()


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def loads(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        text = text.decode()
    return _DECODER.decode(text)


def encode_payload(value: Any, limit: int, what: str = "payload") -> str:
    """Encode a user value, refusing one larger than `limit` bytes or not representable as JSON."""
    try:
        text = dumps(value)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"{what} cannot be encoded as JSON: {e}") from e
    if len(text) > limit and len(text.encode()) > limit:
        raise InvalidArgument(f"{what} is {len(text.encode())} bytes; the limit is {limit} bytes",
                              reason="PayloadTooLarge")
    return text


def parse_json_input(text: str, what: str = "--input") -> Any:
    try:
        return loads(text)
    except ValueError as e:
        raise InvalidArgument(f"{what} is not valid JSON: {e}") from e
