"""The `hash`, `base64` and `uuid` modules' operations, and `time`'s Go layouts and time zones (Wippy's API):
pure functions of their arguments, so workflows call them without recording anything.

The kernel calls them as `H.crypto(op, ...)` with string arguments tagged (worker/host_args.py);
each returns a value or raises OpError (the code gets `nil, err`). New uuids of versions 1, 4
and 7 depend on the clock and on randomness: `new_uuid` makes them from what it is given (a
workflow passes its own clock and its seeded random source, an activity the real ones).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import random
import uuid
import zlib
from collections.abc import Callable
from typing import Any

from worker import go_time, time_zones
from worker.host_args import OpError, binary, text, whole

# FNV-1 and FNV-1a (http://www.isthe.com/chongo/tech/comp/fnv/): offset basis and prime per width.
_FNV = {32: (0x811C9DC5, 0x01000193), 64: (0xCBF29CE484222325, 0x100000001B3)}
# Lua integers are signed 64-bit: a 64-bit hash at or above 2^63 reads as negative (same bits).
_INT64 = 1 << 64
_INT63 = 1 << 63
# uuid v1 counts 100 ns steps since the Gregorian reform (1582-10-15); Unix time starts this many later.
_GREGORIAN_OFFSET_100NS = 0x01B21DD213814000
NAMESPACES = {"dns": uuid.NAMESPACE_DNS, "url": uuid.NAMESPACE_URL, "oid": uuid.NAMESPACE_OID,
              "x500": uuid.NAMESPACE_X500}
# As Wippy (Go's google/uuid) names them: the NCS-reserved variant is "Reserved".
VARIANTS = {uuid.RESERVED_NCS: "Reserved", uuid.RFC_4122: "RFC4122", uuid.RESERVED_MICROSOFT: "Microsoft",
            uuid.RESERVED_FUTURE: "Future"}
UUID_STYLES = ("standard", "simple", "urn")


# ---------------------------------------------------------------- hash

def _digest(name: str) -> Callable[..., str | bytes]:
    def op(data: Any, raw: Any = None) -> str | bytes:
        h = hashlib.new(name, binary(data, f"hash.{name}"))
        return h.digest() if raw else h.hexdigest()
    return op


def _fnv(bits: int, alternate: bool) -> Callable[[Any], int]:
    basis, prime = _FNV[bits]
    mask = (1 << bits) - 1
    name = f"hash.fnv{bits}{'a' if alternate else ''}"

    def op(data: Any) -> int:
        h = basis
        for byte in binary(data, name):
            if alternate:
                h = ((h ^ byte) * prime) & mask
            else:
                h = ((h * prime) & mask) ^ byte
        return h - _INT64 if h >= _INT63 else h
    return op


def _crc32(data: Any) -> int:
    return zlib.crc32(binary(data, "hash.crc32"))


# ---------------------------------------------------------------- base64

def _b64_encode(url: bool) -> Callable[[Any], str]:
    name = "base64.url_encode" if url else "base64.encode"

    def op(data: Any) -> str:
        raw = binary(data, name)
        return (base64.urlsafe_b64encode(raw) if url else base64.b64encode(raw)).decode("ascii")
    return op


def _b64_decode(url: bool) -> Callable[[Any], bytes]:
    name = "base64.url_decode" if url else "base64.decode"

    def op(data: Any) -> bytes:
        s = text(data, name).strip()
        if url:
            s += "=" * (-len(s) % 4)  # unpadded URL-safe text (JWTs) decodes too
        try:
            return base64.urlsafe_b64decode(s) if url else base64.b64decode(s, validate=True)
        except (binascii.Error, ValueError) as err:
            raise OpError(f"{name}: not valid base64: {err}") from None
    return op


# ---------------------------------------------------------------- uuid

def _parse(value: Any, what: str) -> uuid.UUID:
    s = text(value, what)
    try:
        return uuid.UUID(s)
    except ValueError:
        raise OpError(f"{what}: {s[:64]!r} is not a uuid") from None


def _namespace(value: Any, what: str) -> uuid.UUID:
    if isinstance(value, str) and value[:1] == "u" and value[1:].lower() in NAMESPACES:
        return NAMESPACES[value[1:].lower()]
    return _parse(value, what)


def _name_based(version: int) -> Callable[[Any, Any], str]:
    what = f"uuid.v{version}"
    make = uuid.uuid3 if version == 3 else uuid.uuid5

    def op(namespace: Any, name: Any) -> str:
        ns = _namespace(namespace, f"{what} namespace")
        return str(make(ns, binary(name, f"{what} name").decode("utf-8", "surrogateescape")))
    return op


def _validate(value: Any) -> bool:
    if not (isinstance(value, str) and value[:1] == "u"):
        return False
    try:
        uuid.UUID(value[1:])
    except ValueError:
        return False
    return True


def _parsed(value: Any) -> dict[str, Any]:
    """uuid.parse: {version, variant}, and for v1 and v7 `timestamp` (Unix seconds), for v1 `node`."""
    u = _parse(value, "uuid.parse")
    version = (u.int >> 76) & 0xF
    out: dict[str, Any] = {"version": version, "variant": VARIANTS[u.variant]}
    if version == 1:
        out["timestamp"] = (u.time - _GREGORIAN_OFFSET_100NS) // 10_000_000
        out["node"] = f"{u.node:012x}"
    elif version == 7:
        out["timestamp"] = (u.int >> 80) // 1000
    return out


def _format(value: Any, style: Any = None) -> str:
    u = _parse(value, "uuid.format")
    s = "standard" if style is None else text(style, "uuid.format style")
    if s not in UUID_STYLES:
        raise OpError(f"uuid.format: style {s!r} is not one of {', '.join(UUID_STYLES)}")
    return {"standard": str(u), "simple": u.hex, "urn": u.urn}[s]


def _version(value: Any) -> int:
    return (_parse(value, "uuid.version").int >> 76) & 0xF


def _variant(value: Any) -> str:
    return VARIANTS[_parse(value, "uuid.variant").variant]


def new_uuid(version: Any, now_ms: int, rng: random.Random | None) -> str:
    """A new uuid of version 1, 4 or 7 at `now_ms`, its random bits from `rng` (None: the OS's)."""
    v = whole(version, "uuid")
    if v not in (1, 4, 7):
        raise OpError(f"uuid: no version {v} here (new uuids are v1, v4 and v7; v3 and v5 take a name)")

    def bits(n: int) -> int:
        return rng.getrandbits(n) if rng is not None else random.SystemRandom().getrandbits(n)
    if v == 4:
        return str(uuid.UUID(int=bits(128), version=4))
    if v == 7:  # RFC 9562: 48-bit Unix ms, version, 12 random bits, variant, 62 random bits
        return str(uuid.UUID(int=(now_ms & 0xFFFF_FFFF_FFFF) << 80 | 7 << 76 | bits(12) << 64 | 0b10 << 62 | bits(62)))
    ticks = now_ms * 10_000 + _GREGORIAN_OFFSET_100NS
    node = bits(48) | 1 << 40  # a random node has the multicast bit set (RFC 4122 4.5)
    return str(uuid.UUID(fields=(ticks & 0xFFFF_FFFF, ticks >> 32 & 0xFFFF, ticks >> 48 & 0x0FFF,
                                 0x80 | bits(6), bits(8), node), version=1))


def _time_format(ms: Any, layout: Any, offset: Any = 0, abbr: Any = "uUTC") -> str:
    return go_time.format_ms(whole(ms, "time:format"), text(layout, "time:format layout"),
                             whole(offset, "time:format offset"), text(abbr, "time:format zone"))


def _time_parse(layout: Any, value: Any) -> int:
    return go_time.parse_ms(text(layout, "time.parse layout"), text(value, "time.parse"))


# Time zones (worker/time_zones.py): a location comes as its name and, for a fixed zone, its offset.

def _fixed(offset: Any) -> int | None:
    return None if offset is None else whole(offset, "time: a fixed zone's offset")


def _time_parse_in(layout: Any, value: Any, name: Any, fixed: Any) -> list[Any]:
    return list(go_time.parse_in(text(layout, "time.parse layout"), text(value, "time.parse"),
                                 text(name, "time.parse location"), _fixed(fixed)))


def _zone_load(name: Any) -> str:
    zone_name = text(name, "time.load_location")
    time_zones.zone(zone_name)
    return zone_name


def _zone_at(name: Any, ms: Any) -> list[Any]:
    return list(time_zones.offset_at(text(name, "time: a location"), whole(ms, "time: an instant")))


def _zone_wall(name: Any, wall_ms: Any) -> int:
    return time_zones.wall_to_ms(text(name, "time: a location"), whole(wall_ms, "time: a wall-clock time"))


OPS: dict[str, Callable[..., Any]] = {
    **{f"hash.{n}": _digest(n) for n in ("md5", "sha1", "sha256", "sha512")},
    **{f"hash.fnv{b}{'a' if a else ''}": _fnv(b, a) for b in (32, 64) for a in (False, True)},
    "hash.crc32": _crc32,
    "base64.encode": _b64_encode(False),
    "base64.decode": _b64_decode(False),
    "base64.url_encode": _b64_encode(True),
    "base64.url_decode": _b64_decode(True),
    "uuid.v3": _name_based(3),
    "uuid.v5": _name_based(5),
    "uuid.validate": _validate,
    "uuid.parse": _parsed,
    "uuid.format": _format,
    "uuid.version": _version,
    "uuid.variant": _variant,
    "time.format": _time_format,
    "time.parse": _time_parse,
    "time.parse_in": _time_parse_in,
    "time.zone_load": _zone_load,
    "time.zone_at": _zone_at,
    "time.zone_wall": _zone_wall,
}
