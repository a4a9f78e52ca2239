"""The `crypto` module's cryptography (Wippy's API), for the kernel's crypto tables.

Lua code calls `crypto.random.bytes(n)`, `crypto.encrypt.aes(data, key)`, ...; the kernel passes the
call to the host as an operation name and its arguments (`H.crypto(op, ...)`, or `H.crypto_draw(op,
line, ...)` for the operations that draw randomness) and turns an error into `nil, err`.

Binary strings: lupa hands Lua strings to Python decoded as UTF-8, so the kernel tags each string
argument that may hold bytes: "u" + the string when it is valid UTF-8, else "x" + its hex. Results go
back as `bytes` (a Lua string, byte for byte) or `str`.

Workflows record what depends on randomness (random draws and encryptions, whose nonce is random):
`prepare_draw` checks the arguments and returns a `Draw`, which makes the value, says how it is
recorded in a marker, and reads a recorded one back (refusing one this call could not have made).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from cryptography.x509 import load_pem_x509_certificate
from jwt.algorithms import HMACAlgorithm, RSAAlgorithm
from jwt.api_jws import PyJWS
from jwt.exceptions import PyJWTError
from lupa import lua54

from legato.errors import Kind
from worker import codec_ops, data_ops, text_ops
from worker.convert import ConversionError, map_or_value, to_lua, to_python
from worker.host_args import OpError as CryptoError
from worker.host_args import binary as _binary
from worker.host_args import opt_binary as _opt_binary
from worker.host_args import type_name as _type_name
from worker.host_args import whole as _whole

MAX_RANDOM_BYTES = 1 << 20  # Wippy's bound for random.bytes and random.string
MAX_PBKDF2_ITERATIONS = 10_000_000  # Wippy's bound: more is a CPU exhaustion, not a password hash
MAX_KEY_LENGTH = 1 << 20  # derived keys: Legato's bound (Wippy has none), the random data bound
DEFAULT_CHARSET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
NONCE_BYTES = 12  # AES-GCM and ChaCha20-Poly1305, prepended to the ciphertext as Wippy does
TAG_BYTES = 16
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256")
PBKDF2_HASHES = ("sha256", "sha512")

# The marker each recorded operation writes: random.bytes shares crypto.random_bytes's marker (the
# same draw), so histories of either replay with either.
MARKERS = {
    "random.bytes": "crypto.random_bytes",
    "random.string": "crypto.random.string",
    "random.uuid": "crypto.random.uuid",
    "encrypt.aes": "crypto.encrypt.aes",
    "encrypt.chacha20": "crypto.encrypt.chacha20",
}


def _choice(value: Any, what: str, allowed: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if isinstance(value, str) and value[:1] == "u" and value[1:] in allowed:
        return value[1:]
    shown = repr(value[1:]) if isinstance(value, str) and value[:1] == "u" else _type_name(value)
    raise CryptoError(f"{what}: expected one of {', '.join(allowed)}, got {shown}")


def _length(value: Any, what: str, limit: int) -> int:
    n = _whole(value, what)
    if n <= 0:
        raise CryptoError(f"{what}: length must be a positive integer")
    if n > limit:
        raise CryptoError(f"{what}: length exceeds the maximum ({limit})")
    return n


# ---------------------------------------------------------------- random values

def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def random_string(n: int, charset: bytes) -> bytes:
    """n bytes drawn uniformly from charset (Wippy takes a random byte modulo the charset's length,
    which favours its first characters unless the length divides 256; this draws without bias)."""
    size = len(charset)
    if size > 256:
        return bytes(charset[secrets.randbelow(size)] for _ in range(n))
    limit = 256 - 256 % size  # bytes at or above it would favour the first characters: dropped
    table = bytes(charset[b % size] for b in range(limit)) + bytes(256 - limit)
    dropped = bytes(range(limit, 256))
    out = b""
    while len(out) < n:
        out += os.urandom(n - len(out) + 8).translate(table, dropped)
    return out[:n]


def random_uuid() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------- HMAC, PBKDF2, comparison

def hmac_hex(hash_name: str, key: bytes, data: bytes) -> str:
    if not key:
        raise CryptoError(f"crypto.hmac.{hash_name}: key cannot be empty")
    return hmac.new(key, data, hash_name).hexdigest()


def pbkdf2(password: bytes, salt: bytes, iterations: int, key_length: int, hash_name: str) -> bytes:
    if not password:
        raise CryptoError("crypto.pbkdf2: password cannot be empty")
    if not salt:
        raise CryptoError("crypto.pbkdf2: salt cannot be empty")
    if iterations <= 0:
        raise CryptoError("crypto.pbkdf2: iterations must be positive")
    if iterations > MAX_PBKDF2_ITERATIONS:
        raise CryptoError(f"crypto.pbkdf2: iterations exceeds the maximum ({MAX_PBKDF2_ITERATIONS})")
    if key_length <= 0:
        raise CryptoError("crypto.pbkdf2: key length must be positive")
    if key_length > MAX_KEY_LENGTH:
        raise CryptoError(f"crypto.pbkdf2: key length exceeds the maximum ({MAX_KEY_LENGTH})")
    return hashlib.pbkdf2_hmac(hash_name, password, salt, iterations, key_length)


def constant_time_compare(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


# ---------------------------------------------------------------- AEAD (nonce || ciphertext || tag)

def _aead(alg: str, key: bytes, what: str) -> AESGCM | ChaCha20Poly1305:
    if alg == "aes":
        if len(key) not in (16, 24, 32):
            raise CryptoError(f"{what}: key must be 16, 24, or 32 bytes")
        return AESGCM(key)
    if len(key) != 32:
        raise CryptoError(f"{what}: key must be 32 bytes")
    return ChaCha20Poly1305(key)


def encrypt(alg: str, data: bytes, key: bytes, aad: bytes | None) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _aead(alg, key, f"crypto.encrypt.{alg}").encrypt(nonce, data, aad)


def decrypt(alg: str, data: bytes, key: bytes, aad: bytes | None) -> bytes:
    cipher = _aead(alg, key, f"crypto.decrypt.{alg}")
    if len(data) < NONCE_BYTES + TAG_BYTES:
        raise CryptoError(f"crypto.decrypt.{alg}: encrypted data too short")
    try:
        return cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], aad)
    except InvalidTag:
        raise CryptoError(f"crypto.decrypt.{alg}: decryption failed (wrong key or aad, or the data was altered)",
                          Kind.INTERNAL) from None


# ---------------------------------------------------------------- JWT

class _HMAC(HMACAlgorithm):
    # PyJWT warns (on the worker's stderr) about HMAC secrets shorter than the hash and small RSA
    # keys: the keys are the Lua code's choice, as in Wippy, not the worker's to log about.
    def check_key_length(self, key: Any) -> str | None:
        return None


class _RSA(RSAAlgorithm):
    def check_key_length(self, key: Any) -> str | None:
        return None


def _new_jws() -> PyJWS:
    """A PyJWS that knows Wippy's JWT algorithms only, without key length warnings."""
    jws = PyJWS(algorithms=[])
    for name, hash_alg in (("HS256", HMACAlgorithm.SHA256), ("HS384", HMACAlgorithm.SHA384),
                           ("HS512", HMACAlgorithm.SHA512)):
        jws.register_algorithm(name, _HMAC(hash_alg))
    jws.register_algorithm("RS256", _RSA(RSAAlgorithm.SHA256))
    return jws


_JWS = _new_jws()


def _jwt_key(alg: str, key: bytes, private: bool, what: str) -> Any:
    """The key PyJWT signs or verifies with: the secret's bytes, or the parsed RSA PEM key."""
    if alg != "RS256":
        if not key:
            raise CryptoError(f"{what}: key cannot be empty")
        return key
    try:
        if private:
            parsed: Any = load_pem_private_key(key, password=None)
        elif b"CERTIFICATE" in key:
            parsed = load_pem_x509_certificate(key).public_key()
        else:
            parsed = load_pem_public_key(key)
    except (ValueError, TypeError) as err:
        raise CryptoError(f"{what}: invalid RSA {'private' if private else 'public'} key: {err}") from None
    if not isinstance(parsed, RSAPrivateKey if private else RSAPublicKey):
        raise CryptoError(f"{what}: the key is not an RSA {'private' if private else 'public'} key")
    return parsed


def jwt_encode(claims: dict[str, Any], key: bytes, alg: str) -> str:
    """A signed token. `_header` (a table) adds header fields, as in Wippy; the payload's JSON has
    sorted keys so that a workflow signs the same token on every replay."""
    claims = dict(claims)
    headers = claims.pop("_header") if isinstance(claims.get("_header"), dict) else None
    if headers is not None and headers.get("alg", alg) != alg:
        raise CryptoError("crypto.jwt.encode: _header.alg cannot differ from the alg argument")
    try:
        payload = json.dumps(claims, separators=(",", ":"), sort_keys=True, ensure_ascii=False,
                             allow_nan=False).encode("utf-8")
    except ValueError as err:
        raise CryptoError(f"crypto.jwt.encode: the payload cannot be JSON: {err}") from None
    signing_key = _jwt_key(alg, key, True, "crypto.jwt.encode")
    try:
        return _JWS.encode(payload, signing_key, alg, headers)
    except (PyJWTError, ValueError, TypeError) as err:
        raise CryptoError(f"crypto.jwt.encode: {err}", Kind.INTERNAL) from None


def _signed_payload(token: bytes, key: Any, alg: str) -> Any:
    """The token's payload once its signature checks out with `alg` (the only algorithm accepted)."""
    try:
        return _JWS.decode_complete(token, key, algorithms=[alg])["payload"]
    except (PyJWTError, ValueError, TypeError) as err:
        raise CryptoError(f"crypto.jwt.verify: {err}", Kind.INTERNAL) from None


def _check_times(claims: dict[str, Any], now_s: float, require_exp: bool) -> None:
    """exp and nbf against `now_s` (a workflow's own clock in workflows, so that replays agree)."""
    for name in ("exp", "nbf"):
        v = claims.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
            raise CryptoError(f"crypto.jwt.verify: the {name} claim is not a number", Kind.INTERNAL)
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if exp is None and require_exp:
        raise CryptoError("crypto.jwt.verify: the token has no exp claim", Kind.INTERNAL)
    if exp is not None and now_s >= exp:
        raise CryptoError("crypto.jwt.verify: the token has expired", Kind.INTERNAL)
    if nbf is not None and now_s < nbf:
        raise CryptoError("crypto.jwt.verify: the token is not valid yet", Kind.INTERNAL)


def jwt_verify(token: bytes, key: bytes, alg: str, require_exp: bool, now_s: float) -> dict[str, Any]:
    payload = _signed_payload(token, _jwt_key(alg, key, False, "crypto.jwt.verify"), alg)
    try:
        claims = json.loads(payload)
    except (ValueError, RecursionError):
        raise CryptoError("crypto.jwt.verify: the payload is not JSON", Kind.INTERNAL) from None
    if not isinstance(claims, dict):
        raise CryptoError("crypto.jwt.verify: the payload is not a JSON object", Kind.INTERNAL)
    _check_times(claims, now_s, require_exp)
    return claims


# ---------------------------------------------------------------- operations as Lua calls them

def _hmac_op(hash_name: str) -> Callable[..., Any]:
    what = f"crypto.hmac.{hash_name}"
    return lambda key, data: hmac_hex(hash_name, _binary(key, what), _binary(data, what))


def _decrypt_op(alg: str) -> Callable[..., Any]:
    what = f"crypto.decrypt.{alg}"
    return lambda data, key, aad=None: decrypt(alg, _binary(data, what), _binary(key, what),
                                               _opt_binary(aad, what))


def _jwt_encode_op(payload: Any, key: Any, alg: Any = None) -> str:
    what = "crypto.jwt.encode"
    if lua54.lua_type(payload) != "table":
        raise CryptoError(f"{what}: expected a table of claims, got {_type_name(payload)}")
    try:
        claims = map_or_value(to_python(payload))
    except ConversionError as err:
        raise CryptoError(f"{what}: {err}") from None
    if not isinstance(claims, dict):
        raise CryptoError(f"{what}: expected a table of claims (names to values), got a list")
    return jwt_encode(claims, _binary(key, what), _choice(alg, what, JWT_ALGORITHMS, "HS256"))


def _jwt_verify_op(token: Any, key: Any, alg: Any = None, require_exp: Any = None, now_ms: Any = 0) -> Any:
    what = "crypto.jwt.verify"
    if require_exp is not None and not isinstance(require_exp, bool):
        raise CryptoError(f"{what}: require_exp must be a boolean, got {_type_name(require_exp)}")
    return jwt_verify(_binary(token, what), _binary(key, what), _choice(alg, what, JWT_ALGORITHMS, "HS256"),
                      require_exp is not False, float(now_ms) / 1000)


def _pbkdf2_op(password: Any, salt: Any, iterations: Any, key_length: Any, hash_name: Any = None) -> bytes:
    what = "crypto.pbkdf2"
    return pbkdf2(_binary(password, what), _binary(salt, what), _whole(iterations, what),
                  _whole(key_length, what), _choice(hash_name, what, PBKDF2_HASHES, "sha256"))


def _hash_pbkdf2_op(password: Any, salt: Any, iterations: Any, key_length: Any, hash_name: Any = None) -> bytes:
    """hash.pbkdf2: as crypto.pbkdf2, and Wippy's hash module also refuses an empty password or salt."""
    what = "hash.pbkdf2"
    pw, sa = _binary(password, what), _binary(salt, what)
    if not pw or not sa:
        raise CryptoError(f"{what}: the password and the salt must not be empty")
    return pbkdf2(pw, sa, _whole(iterations, what), _whole(key_length, what),
                  _choice(hash_name, what, PBKDF2_HASHES, "sha256"))


def _hash_hmac_op(hash_name: str) -> Callable[..., Any]:
    """hash.hmac_<name>(data, secret [, raw]): hex, or the raw bytes."""
    what = f"hash.hmac_{hash_name}"

    def op(data: Any, secret: Any, raw: Any = None) -> str | bytes:
        mac = hmac.new(_binary(secret, what), _binary(data, what), hash_name)
        return mac.digest() if raw else mac.hexdigest()
    return op


def _compare_op(a: Any, b: Any) -> bool:
    what = "crypto.constant_time_compare"
    return constant_time_compare(_binary(a, what), _binary(b, what))


# Deterministic operations: no record needed in workflows.
OPS: dict[str, Callable[..., Any]] = {
    "hmac.sha256": _hmac_op("sha256"),
    "hmac.sha512": _hmac_op("sha512"),
    "decrypt.aes": _decrypt_op("aes"),
    "decrypt.chacha20": _decrypt_op("chacha20"),
    "jwt.encode": _jwt_encode_op,
    "jwt.verify": _jwt_verify_op,
    "pbkdf2": _pbkdf2_op,
    "constant_time_compare": _compare_op,
    "hash.pbkdf2": _hash_pbkdf2_op,
    **{f"hash.hmac_{h}": _hash_hmac_op(h) for h in ("md5", "sha1", "sha256", "sha512")},
}


@dataclass(frozen=True, slots=True)
class Draw:
    """One call whose value depends on randomness, its arguments checked."""

    marker: str
    make: Callable[[], bytes | str]
    fits: Callable[[Any], bool]  # whether a recorded value is one this call could have made
    text: bool = False  # recorded as it is (a uuid) rather than as hex

    def record(self, value: bytes | str) -> str:
        return value if isinstance(value, str) else value.hex()

    def replay(self, details: Any) -> bytes | str | None:
        """The recorded value, or None if the history holds something this call could not make."""
        if not isinstance(details, str):
            return None
        try:
            value: bytes | str = details if self.text else bytes.fromhex(details)
        except ValueError:
            return None
        return value if self.fits(value) else None


def _is_uuid(v: Any) -> bool:
    try:
        return isinstance(v, str) and str(uuid.UUID(v)) == v
    except ValueError:
        return False


def _encrypt_draw(alg: str, args: tuple[Any, ...]) -> Draw:
    what = f"crypto.encrypt.{alg}"
    data, key, aad = (*args, None, None, None)[:3]
    data_b, key_b, aad_b = _binary(data, what), _binary(key, what), _opt_binary(aad, what)
    _aead(alg, key_b, what)  # the key's size, checked now: a bad key is an error, not a recorded draw

    def fits(v: Any) -> bool:
        try:
            return decrypt(alg, v, key_b, aad_b) == data_b
        except CryptoError:
            return False
    return Draw(MARKERS[f"encrypt.{alg}"], lambda: encrypt(alg, data_b, key_b, aad_b), fits)


def _bytes_draw(args: tuple[Any, ...]) -> Draw:
    n = _length(args[0] if args else None, "crypto.random.bytes", MAX_RANDOM_BYTES)
    return Draw(MARKERS["random.bytes"], lambda: random_bytes(n), lambda v: len(v) == n)


def _string_draw(args: tuple[Any, ...]) -> Draw:
    what = "crypto.random.string"
    n = _length(args[0] if args else None, what, MAX_RANDOM_BYTES)
    charset = DEFAULT_CHARSET if len(args) < 2 or args[1] is None else _binary(args[1], what)
    if not charset:
        raise CryptoError(f"{what}: charset cannot be empty")
    allowed = frozenset(charset)
    return Draw(MARKERS["random.string"], lambda: random_string(n, charset),
                lambda v: len(v) == n and allowed.issuperset(v))


def prepare_draw(op: str, args: tuple[Any, ...]) -> Draw:
    """Check a random draw's or an encryption's arguments (raises CryptoError)."""
    if op == "random.bytes":
        return _bytes_draw(args)
    if op == "random.string":
        return _string_draw(args)
    if op == "random.uuid":
        return Draw(MARKERS["random.uuid"], random_uuid, _is_uuid, text=True)
    if op in ("encrypt.aes", "encrypt.chacha20"):
        return _encrypt_draw(op.split(".")[1], args)
    raise CryptoError(f"crypto: no such operation {op!r}", Kind.INTERNAL)


def call(op: str, args: tuple[Any, ...]) -> Any:
    """Run an operation (raises CryptoError); draws are not recorded."""
    fn = OPS.get(op) or codec_ops.OPS.get(op) or data_ops.OPS.get(op) or text_ops.OPS.get(op)
    if fn is not None:
        try:
            return fn(*args)
        except TypeError as err:  # the kernel passes a fixed number of arguments: a kernel bug
            raise CryptoError(f"crypto.{op}: {err}", Kind.INTERNAL) from None
    return prepare_draw(op, args).make()


# ---------------------------------------------------------------- host functions

Result = tuple[Any, str | None, str | None]


def lua_result(lua: Any, fn: Callable[[], Any]) -> Result:
    """(value, nil, nil) or (nil, message, kind), the value converted for `lua` (claims, lists: tables)."""
    try:
        value = fn()
    except CryptoError as err:
        return None, str(err), err.kind
    return (to_lua(lua, value) if isinstance(value, dict | list) else value), None, None


def host_functions(lua: Any) -> dict[str, Callable[..., Result]]:
    """H.crypto and H.crypto_draw for a runtime that does not record (activities, callers)."""

    def crypto(op: str, *args: Any) -> Result:
        return lua_result(lua, lambda: call(op, args))

    def crypto_draw(op: str, _line: Any, *args: Any) -> Result:
        return lua_result(lua, lambda: prepare_draw(op, args).make())

    return {"crypto": crypto, "crypto_draw": crypto_draw}
