"""The `crypto` module (Wippy's API) in activities and workflows: known answers against Python's
hashlib/hmac/PyJWT/cryptography, AEAD round trips and tampering, errors as `nil, err`, and the
workflow's recording and replay of random draws and encryptions."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from legato.errors import Kind
from tests.unit.worker.helpers import PROBE_MAIN, PROBE_MODES, Sim, make_app, probe_in, types
from worker import crypto_host
from worker.activity import ActivityRunner
from worker.entries import Registry
from worker.replay import replay
from worker.runtime import TaskFailure

# One Lua program, run as an activity (function entry app:probe) and as a workflow (app:wprobe):
# probe(case, args) with binary arguments and results in hex, errors as {kind, message, retryable}.
PROBE = """\
local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
local function unhex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end
local function out(v, e)
    if type(v) == "string" then v = hex(v) end
    local err = nil
    if e ~= nil then err = {kind = e:kind(), message = e:message(), retryable = e:retryable()} end
    return {value = v, err = err, is_invalid = errors.is(e, errors.INVALID),
            is_internal = errors.is(e, errors.INTERNAL)}
end
local function opt(h) if h == nil then return nil end return unhex(h) end
local CASES = {
    hmac = function(a) return out(crypto.hmac[a.hash](unhex(a.key), unhex(a.data))) end,
    hmac_raw = function(a) return out(crypto.hmac.sha256(a.key, a.data)) end,
    pbkdf2 = function(a)
        return out(crypto.pbkdf2(opt(a.password), opt(a.salt), a.iterations, a.key_length, a.hash))
    end,
    encrypt = function(a) return out(crypto.encrypt[a.alg](unhex(a.data), unhex(a.key), opt(a.aad))) end,
    decrypt = function(a) return out(crypto.decrypt[a.alg](unhex(a.data), unhex(a.key), opt(a.aad))) end,
    round_trip = function(a)
        local key, data, aad = unhex(a.key), unhex(a.data), opt(a.aad)
        local c1, e1 = crypto.encrypt[a.alg](data, key, aad)
        local c2 = crypto.encrypt[a.alg](data, key, aad)
        local p, e2 = crypto.decrypt[a.alg](c1, key, aad)
        return {c1 = hex(c1), c2 = hex(c2), back = p == data, e1 = e1 == nil and e2 == nil}
    end,
    jwt_encode = function(a) return out(crypto.jwt.encode(a.payload, a.key, a.alg)) end,
    jwt_verify = function(a) return out(crypto.jwt.verify(a.token, a.key, a.alg, a.require_exp)) end,
    random = function(a)
        local b, e1 = crypto.random.bytes(a.n)
        local s, e2 = crypto.random.string(a.n)
        local h, e3 = crypto.random.string(a.n, "0123456789abcdef")
        local u, e4 = crypto.random.uuid()
        local u2 = crypto.random.uuid()
        return {bytes = hex(b), s = s, h = h, uuid = u, other = u2 ~= u, legacy = #crypto.random_bytes(a.n),
                ok = e1 == nil and e2 == nil and e3 == nil and e4 == nil}
    end,
    random_bytes = function(a) return out(crypto.random.bytes(a.n)) end,
    random_string = function(a) return out(crypto.random.string(a.n, a.charset)) end,
    compare = function(a)
        return {same = crypto.constant_time_compare(a.a, a.a), differ = crypto.constant_time_compare(a.a, a.b),
                bin = crypto.constant_time_compare(unhex("00ff"), unhex("00ff"))}
    end,
}
""" + PROBE_MAIN

MODES = PROBE_MODES
START_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    tmp = tmp_path_factory.mktemp("crypto")
    return make_app(tmp, workflows={"wprobe": PROBE}, functions={"probe": PROBE})



def probe(mode: str, reg: Registry, runner: ActivityRunner, case: str, args: dict[str, Any]) -> Any:
    return probe_in(mode, reg, runner, [case, args])


def value(r: dict[str, Any]) -> bytes:
    assert r.get("err") is None, r["err"]
    return bytes.fromhex(r["value"])


def error_of(r: dict[str, Any], kind: str) -> str:
    assert r.get("value") is None and r["err"] is not None, r
    assert r["err"]["kind"] == kind and r["err"]["retryable"] is False, r["err"]
    assert r["is_invalid" if kind == Kind.INVALID else "is_internal"] is True
    return str(r["err"]["message"])


# ---------------------------------------------------------------- HMAC, PBKDF2, comparison

@pytest.mark.parametrize("mode", MODES)
def test_hmac_matches_python_and_is_hex(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    for hash_name in ("sha256", "sha512"):
        for key, data in ((b"secret", b"payload"), (b"\x00\xff\x80k", b"\xfe\x00binary"), (b"k", b"")):
            r = probe(mode, reg, runner, "hmac", {"hash": hash_name, "key": key.hex(), "data": data.hex()})
            assert value(r).decode() == hmac.new(key, data, hash_name).hexdigest()
    r = probe(mode, reg, runner, "hmac_raw", {"key": "api_secret_key", "data": "request_data"})
    assert value(r).decode() == hmac.new(b"api_secret_key", b"request_data", "sha256").hexdigest()


@pytest.mark.parametrize("mode", MODES)
def test_hmac_errors(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    r = probe(mode, reg, runner, "hmac", {"hash": "sha256", "key": "", "data": "00"})
    assert "key cannot be empty" in error_of(r, Kind.INVALID)
    r = probe(mode, reg, runner, "hmac_raw", {"key": "k", "data": 42})
    assert "expected a string, got number" in error_of(r, Kind.INVALID)


@pytest.mark.parametrize("mode", MODES)
def test_pbkdf2_matches_hashlib(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    r = probe(mode, reg, runner, "pbkdf2", {"password": b"master_secret".hex(), "salt": b"\x00salt\xff".hex(),
                                            "iterations": 1000, "key_length": 32})
    assert value(r) == hashlib.pbkdf2_hmac("sha256", b"master_secret", b"\x00salt\xff", 1000, 32)
    r = probe(mode, reg, runner, "pbkdf2", {"password": b"pw".hex(), "salt": b"salt".hex(), "iterations": 10,
                                            "key_length": 80, "hash": "sha512"})
    assert value(r) == hashlib.pbkdf2_hmac("sha512", b"pw", b"salt", 10, 80)


@pytest.mark.parametrize("mode", MODES)
def test_pbkdf2_errors(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    ok = {"password": b"pw".hex(), "salt": b"salt".hex(), "iterations": 10, "key_length": 16}
    for change, text in (({"password": ""}, "password cannot be empty"), ({"salt": None}, "expected a string"),
                         ({"iterations": 0}, "iterations must be positive"),
                         ({"iterations": 10_000_001}, "iterations exceeds"),
                         ({"key_length": 0}, "key length must be positive"),
                         ({"key_length": 1.5}, "expected a whole number"),
                         ({"hash": "md5"}, "expected one of sha256, sha512")):
        r = probe(mode, reg, runner, "pbkdf2", {**ok, **change})
        assert text in error_of(r, Kind.INVALID)


@pytest.mark.parametrize("mode", MODES)
def test_constant_time_compare(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    r = probe(mode, reg, runner, "compare", {"a": "abc", "b": "abd"})
    assert r == {"same": True, "differ": False, "bin": True}


# ---------------------------------------------------------------- AEAD

KEYS = {"aes": [b"k" * 16, b"\x01" * 24, bytes(range(32))], "chacha20": [bytes(range(100, 132))]}


def python_decrypt(alg: str, key: bytes, blob: bytes, aad: bytes | None) -> bytes:
    cipher = AESGCM(key) if alg == "aes" else ChaCha20Poly1305(key)
    return cipher.decrypt(blob[:12], blob[12:], aad)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("alg", ["aes", "chacha20"])
def test_aead_round_trips_and_interoperates(mode: str, alg: str, reg: Registry, runner: ActivityRunner) -> None:
    data = "sécret \x00 data".encode() + bytes(range(256))
    for key in KEYS[alg]:
        for aad in (None, b"header\xff"):
            a = {"alg": alg, "key": key.hex(), "data": data.hex(), "aad": aad.hex() if aad else None}
            r = probe(mode, reg, runner, "round_trip", a)
            assert r["back"] is True and r["e1"] is True
            c1, c2 = bytes.fromhex(r["c1"]), bytes.fromhex(r["c2"])
            assert c1 != c2, "a fresh nonce for each encryption"
            assert len(c1) == 12 + len(data) + 16  # nonce || ciphertext || tag, as Wippy (Go's Seal)
            assert python_decrypt(alg, key, c1, aad) == data
            # and what Python encrypts the same way, the Lua code decrypts
            nonce = bytes(12)
            blob = nonce + (AESGCM(key) if alg == "aes" else ChaCha20Poly1305(key)).encrypt(nonce, data, aad)
            r = probe(mode, reg, runner, "decrypt", {**a, "data": blob.hex()})
            assert value(r) == data


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("alg", ["aes", "chacha20"])
def test_aead_detects_tampering_and_refuses_bad_keys(mode: str, alg: str, reg: Registry,
                                                     runner: ActivityRunner) -> None:
    key = bytes(range(32))
    blob = bytearray(bytes(12) + (AESGCM(key) if alg == "aes" else ChaCha20Poly1305(key)).encrypt(
        bytes(12), b"pay me 10", b"aad"))
    for i in (0, 15, len(blob) - 1):  # the nonce, the ciphertext, the tag
        bad = bytearray(blob)
        bad[i] ^= 1
        r = probe(mode, reg, runner, "decrypt", {"alg": alg, "key": key.hex(), "data": bad.hex(), "aad": b"aad".hex()})
        assert "decryption failed" in error_of(r, Kind.INTERNAL)
    r = probe(mode, reg, runner, "decrypt", {"alg": alg, "key": key.hex(), "data": blob.hex(), "aad": b"other".hex()})
    error_of(r, Kind.INTERNAL)
    r = probe(mode, reg, runner, "decrypt", {"alg": alg, "key": key.hex(), "data": blob.hex()})
    error_of(r, Kind.INTERNAL)
    r = probe(mode, reg, runner, "decrypt", {"alg": alg, "key": key.hex(), "data": blob[:20].hex()})
    assert "too short" in error_of(r, Kind.INVALID)
    for op in ("encrypt", "decrypt"):
        r = probe(mode, reg, runner, op, {"alg": alg, "key": b"short".hex(), "data": blob.hex()})
        assert "key must be" in error_of(r, Kind.INVALID)


# ---------------------------------------------------------------- JWT

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PRIVATE = RSA_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
RSA_PUBLIC = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()


SECRET = "0123456789abcdef" * 4  # PyJWT, used to check, warns about shorter secrets


def far_exp() -> int:
    return int(time.time()) + 3600 * 24 * 365 * 50  # valid by the real clock and the tests' workflow clock


@pytest.mark.parametrize("mode", MODES)
def test_jwt_encode_is_verified_by_pyjwt(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    claims = {"sub": "user123", "exp": far_exp(), "roles": ["a", "b"], "n": 1.5, "name": "Zoë"}
    for alg in (None, "HS256", "HS384", "HS512"):
        a: dict[str, Any] = {"payload": {**claims, "_header": {"kid": "k1"}}, "key": SECRET, "alg": alg}
        token = value(probe(mode, reg, runner, "jwt_encode", a)).decode()
        header = jwt.get_unverified_header(token)
        assert header == {"alg": alg or "HS256", "typ": "JWT", "kid": "k1"}
        assert jwt.decode(token, SECRET, algorithms=[alg or "HS256"]) == claims
    token = value(probe(mode, reg, runner, "jwt_encode", {"payload": claims, "key": RSA_PRIVATE,
                                                           "alg": "RS256"})).decode()
    assert jwt.decode(token, RSA_PUBLIC, algorithms=["RS256"]) == claims


@pytest.mark.parametrize("mode", MODES)
def test_jwt_verify_accepts_pyjwt_tokens(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    claims = {"sub": "user123", "exp": far_exp(), "aud": "someone", "iat": 1}
    for alg in ("HS256", "HS512"):
        token = jwt.encode(claims, SECRET, algorithm=alg)
        r = probe(mode, reg, runner, "jwt_verify", {"token": token, "key": SECRET, "alg": alg})
        assert r.get("err") is None and r["value"] == claims
    token = jwt.encode(claims, RSA_PRIVATE, algorithm="RS256")
    r = probe(mode, reg, runner, "jwt_verify", {"token": token, "key": RSA_PUBLIC, "alg": "RS256"})
    assert r.get("err") is None and r["value"] == claims
    no_exp = jwt.encode({"sub": "x"}, SECRET, algorithm="HS256")
    r = probe(mode, reg, runner, "jwt_verify", {"token": no_exp, "key": SECRET, "require_exp": False})
    assert r["value"] == {"sub": "x"}


@pytest.mark.parametrize("mode", MODES)
def test_jwt_errors(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    good = jwt.encode({"sub": "x", "exp": far_exp()}, SECRET, algorithm="HS256")
    internal = [
        ({"token": jwt.encode({"exp": 1000}, SECRET, algorithm="HS256"), "key": SECRET}, "expired"),
        ({"token": jwt.encode({"sub": "x"}, SECRET, algorithm="HS256"), "key": SECRET}, "no exp claim"),
        ({"token": jwt.encode({"exp": far_exp(), "nbf": far_exp()}, SECRET, algorithm="HS256"), "key": SECRET},
         "not valid yet"),
        ({"token": good, "key": SECRET + "x"}, "Signature verification failed"),
        ({"token": good, "key": SECRET, "alg": "HS512"}, "alg"),
        ({"token": "not.a.token", "key": SECRET}, ""),
    ]
    for a, text in internal:
        assert text in error_of(probe(mode, reg, runner, "jwt_verify", a), Kind.INTERNAL)
    invalid: list[tuple[str, dict[str, Any], str]] = [
        ("jwt_verify", {"token": good, "key": SECRET, "alg": "none"}, "expected one of HS256"),
        ("jwt_verify", {"token": good, "key": ""}, "key cannot be empty"),
        ("jwt_verify", {"token": good, "key": SECRET, "alg": "RS256"}, "invalid RSA public key"),
        ("jwt_encode", {"payload": {"a": 1}, "key": "k", "alg": "XS1"}, "expected one of HS256"),
        ("jwt_encode", {"payload": {"a": 1}, "key": "k", "alg": "RS256"}, "invalid RSA private key"),
        ("jwt_encode", {"payload": {"a": 1, "_header": {"alg": "none"}}, "key": "k"}, "_header.alg"),
        ("jwt_encode", {"payload": [1, 2], "key": "k"}, "expected a table of claims"),
        ("jwt_encode", {"payload": "x", "key": "k"}, "expected a table of claims"),
    ]
    for case, a, text in invalid:
        assert text in error_of(probe(mode, reg, runner, case, a), Kind.INVALID)


def test_jwt_with_a_short_secret_warns_nothing(reg: Registry, runner: ActivityRunner,
                                              recwarn: pytest.WarningsRecorder) -> None:
    token = value(probe("activity", reg, runner, "jwt_encode", {"payload": {"exp": far_exp()}, "key": "k"})).decode()
    assert probe("activity", reg, runner, "jwt_verify", {"token": token, "key": "k"}).get("err") is None
    assert not [w for w in recwarn if "key" in str(w.message).lower()]


# ---------------------------------------------------------------- random values

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.mark.parametrize("mode", MODES)
def test_random_values(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    r = probe(mode, reg, runner, "random", {"n": 64})
    assert r["ok"] and r["other"] and r["legacy"] == 64
    assert len(bytes.fromhex(r["bytes"])) == 64
    assert re.fullmatch(r"[A-Za-z0-9]{64}", r["s"]) and re.fullmatch(r"[0-9a-f]{64}", r["h"])
    assert UUID4.match(r["uuid"])
    r = probe(mode, reg, runner, "random_string", {"n": 300, "charset": "ab"})
    assert set(value(r)) == {ord("a"), ord("b")} and len(value(r)) == 300


@pytest.mark.parametrize("mode", MODES)
def test_random_errors(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    for n, text in ((0, "positive"), (-1, "positive"), ((1 << 20) + 1, "maximum"), ("ten", "got string"),
                    (1.5, "whole number"), (None, "got nil")):
        assert text in error_of(probe(mode, reg, runner, "random_bytes", {"n": n}), Kind.INVALID)
        assert text in error_of(probe(mode, reg, runner, "random_string", {"n": n}), Kind.INVALID)
    r = probe(mode, reg, runner, "random_string", {"n": 4, "charset": ""})
    assert "charset cannot be empty" in error_of(r, Kind.INVALID)


def test_random_string_has_no_modulo_bias() -> None:
    # 200 characters: a byte modulo 200 would draw the first 56 twice as often as the others
    charset = bytes(range(200))
    counts = Counter(crypto_host.random_string(200_000, charset))
    first, rest = sum(counts[b] for b in range(56)) / 56, sum(counts[b] for b in range(56, 200)) / 144
    assert 0.9 < first / rest < 1.1


def test_a_recorded_value_this_call_could_not_make_is_refused() -> None:
    draw = crypto_host.prepare_draw("random.bytes", (4,))
    assert draw.replay("00112233") == bytes.fromhex("00112233")
    assert draw.replay("0011") is None and draw.replay("zz") is None and draw.replay(None) is None
    uuid_draw = crypto_host.prepare_draw("random.uuid", ())
    assert uuid_draw.replay("not a uuid") is None
    value = uuid_draw.make()
    assert uuid_draw.replay(uuid_draw.record(value)) == value


# ---------------------------------------------------------------- workflows: recorded, replayed

RECORDING = """\
local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
local function main(key_hex)
    local key = (key_hex:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
    local b = crypto.random.bytes(16)
    local s = crypto.random.string(12, "xyz")
    local u = crypto.random.uuid()
    local c1 = crypto.encrypt.aes("the plaintext", key)
    local c2 = crypto.encrypt.chacha20("the plaintext", key, "aad")
    local _, bad = crypto.random.bytes(0)        -- an error: nothing recorded
    local _, bad_key = crypto.encrypt.aes("x", "short")
    local mac = crypto.hmac.sha256(key, "data")  -- deterministic: nothing recorded
    time.sleep("1s")
    local p1 = crypto.decrypt.aes(c1, key)
    local p2 = crypto.decrypt.chacha20(c2, key, "aad")
    return {b = hex(b), s = s, u = u, c1 = hex(c1), c2 = hex(c2), p1 = p1, p2 = p2, mac = mac,
            errors = {bad:kind(), bad_key:kind()}}
end
return main
"""

KEY = bytes(range(32))
DRAW_MARKERS = ["crypto.random_bytes", "crypto.random.string", "crypto.random.uuid", "crypto.encrypt.aes",
                "crypto.encrypt.chacha20"]


def recorded_run(tmp_path: Path) -> tuple[Sim, list[Any]]:
    reg = make_app(tmp_path, {"w": RECORDING})
    sim = Sim(reg, "app:w", [KEY.hex()], check_replay=False)  # a first task's draws differ on every run
    cmds = sim.step()
    assert types(cmds) == ["RecordMarker"] * 5 + ["StartTimer"]
    assert [c.attrs["marker_name"] for c in cmds[:5]] == DRAW_MARKERS
    sim.complete(cmds)
    sim.h.tick(1000).timer_fired("1").next_task()
    sim.check_replay = True
    return sim, [c.attrs["details"] for c in cmds[:5]]


def test_workflow_draws_and_encryptions_are_recorded_and_replayed(tmp_path: Path) -> None:
    sim, details = recorded_run(tmp_path)
    result = sim.step()[0].attrs["result"]
    assert result == replay(sim.registry, sim.h.events)[0].attrs["result"]  # a fresh replay: the same values
    assert [result["b"], result["s"].encode().hex(), result["u"], result["c1"], result["c2"]] == details
    assert set(result["s"]) <= set("xyz") and len(result["s"]) == 12 and UUID4.match(result["u"])
    assert python_decrypt("aes", KEY, bytes.fromhex(result["c1"]), None) == b"the plaintext"
    assert python_decrypt("chacha20", KEY, bytes.fromhex(result["c2"]), b"aad") == b"the plaintext"
    assert result["p1"] == result["p2"] == "the plaintext"
    assert result["mac"] == hmac.new(KEY, b"data", "sha256").hexdigest()
    assert result["errors"] == [Kind.INVALID, Kind.INVALID]


def test_random_bytes_and_random_dot_bytes_share_their_marker(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = make_app(tmp_path / "old", {"w": """\
        local function main()
            local b = crypto.random_bytes(8)
            time.sleep("1s")
            return #b
        end
        return main
        """})
    sim = Sim(old, "app:w", check_replay=False)
    cmds = sim.step()
    sim.complete(cmds)
    sim.h.timer_fired("1").next_task()
    new = make_app(tmp_path / "new", {"w": """\
        local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
        local function main()
            local b = crypto.random.bytes(8)
            time.sleep("1s")
            return hex(b)
        end
        return main
        """})
    assert replay(new, sim.h.events)[0].attrs["result"] == cmds[0].attrs["details"]


@pytest.mark.parametrize(("old", "new", "marker"), [
    ('crypto.encrypt.aes("the plaintext", key)', 'crypto.encrypt.aes("another plaintext", key)', "encrypt.aes"),
    ('crypto.encrypt.chacha20("the plaintext", key, "aad")', 'crypto.encrypt.chacha20("the plaintext", key, "b")',
     "encrypt.chacha20"),
    ("crypto.random.bytes(16)", "crypto.random.bytes(32)", "random_bytes"),
    ('crypto.random.string(12, "xyz")', 'crypto.random.string(12, "abc")', "random.string"),
])
def test_replay_of_a_changed_call_is_non_determinism(tmp_path: Path, old: str, new: str, marker: str) -> None:
    sim, _ = recorded_run(tmp_path)
    changed = make_app(tmp_path, {"w": RECORDING.replace(old, new)})
    with pytest.raises(TaskFailure) as info:
        replay(changed, sim.h.events)
    f = info.value.failure
    assert info.value.cause == "NON_DETERMINISTIC" and f.kind == Kind.NON_DETERMINISTIC
    assert f"crypto.{marker}" in f.message and f.source is not None and f.source.startswith("w.lua:")


def test_jwt_verify_in_a_workflow_uses_the_workflow_clock(tmp_path: Path) -> None:
    exp = START_MS // 1000 + 10
    token = jwt.encode({"sub": "x", "exp": exp}, SECRET, algorithm="HS256")
    reg = make_app(tmp_path, {"w": """\
        local function main(token, key)
            local before, e1 = crypto.jwt.verify(token, key)
            time.sleep("20s")
            local after, e2 = crypto.jwt.verify(token, key)
            return {before = before and before.sub, e1 = e1 and e1:kind(), e2 = e2 and e2:message()}
        end
        return main
        """})
    sim = Sim(reg, "app:w", [token, SECRET], start_ms=START_MS)
    sim.complete(sim.step())
    sim.h.tick(20_000).timer_fired("1").next_task()
    result = sim.step()[0].attrs["result"]
    assert result == {"before": "x", "e2": "crypto.jwt.verify: the token has expired"}
    assert replay(reg, sim.h.events)[0].attrs["result"] == result
