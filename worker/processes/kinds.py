"""Registry kinds of processes: `process.lua`, `process.host`, `process.service`.

    - name: session_handler          # a process definition (Lua, like function.lua)
      kind: process.lua
      source: file://session_handler.lua
      method: main
      modules: [time, json]

    - name: processes                # a host inside `legato worker` that runs processes
      kind: process.host
      max_processes: 1000            # optional (default 1000)

    - name: session_manager          # a supervised process
      kind: process.service
      process: app:session_handler
      host: app:processes
      input: [..]                    # optional: the arguments the process gets
      lifecycle:
        auto_start: true             # start with the worker (default false)
        restart:                     # restart after an abnormal end (default: 5 attempts)
          max_attempts: 10           # 0: never restart
          initial_delay: 1s          # a duration string (default 1s)
          max_delay: 1m              # (default 30s)
          backoff: 2.0               # multiplier per attempt (default 2.0)

The entries of the other kinds are in `worker.entries`, which calls `parse` here for these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from legato.durations import parse_duration_ms
from worker.entry_base import CodeEntry, Entry, EntryError
from worker.entry_base import entry_ref as _ref
from worker.entry_base import line_of as _line

PROCESS_KIND = "process.lua"
HOST_KIND = "process.host"
SERVICE_KIND = "process.service"
KINDS = (PROCESS_KIND, HOST_KIND, SERVICE_KIND)

DEFAULT_MAX_PROCESSES = 1000


@dataclass(slots=True)
class RestartPolicy:
    max_attempts: int = 5
    initial_delay_ms: int = 1000
    max_delay_ms: int = 30_000
    backoff: float = 2.0

    def delay_ms(self, attempt: int) -> int:
        """The wait before restart number `attempt` (1-based)."""
        return int(min(self.max_delay_ms, self.initial_delay_ms * self.backoff ** (attempt - 1)))


@dataclass(slots=True)
class Lifecycle:
    auto_start: bool = False
    restart: RestartPolicy = field(default_factory=RestartPolicy)


# ---------------------------------------------------------------- entries


@dataclass(slots=True)
class ProcessEntry(CodeEntry):
    """A `process.lua` entry: Lua code run as a non-durable process."""


@dataclass(slots=True)
class HostEntry(Entry):
    max_processes: int = DEFAULT_MAX_PROCESSES


@dataclass(slots=True)
class ServiceEntry(Entry):
    process: str = ""
    host: str = ""
    input: list[Any] = field(default_factory=list)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    key_lines: dict[str, int] = field(default_factory=dict)  # line of `process` / `host` in the file


def _where(path: Path, m: Any, key: str | None = None) -> str:
    return f"{path}:{_line(m, key)}"


def _positive_int(path: Path, m: dict[str, Any], key: str, what: str, default: int, minimum: int) -> int:
    v = m.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise EntryError(f"{_where(path, m, key)}: {what}: `{key}` must be a whole number >= {minimum}, got {v!r}")
    return v


def _known_keys(path: Path, m: dict[str, Any], known: tuple[str, ...], what: str) -> None:
    for k in m:
        if k not in known:
            raise EntryError(f"{_where(path, m, str(k))}: {what}: unknown field `{k}` (known: {', '.join(known)})")


def parse_host(path: Path, ns: str, name: str, item: dict[str, Any], meta: dict[str, Any], line: int) -> HostEntry:
    eid = f"{ns}:{name}"
    what = f"entry {eid}"
    return HostEntry(eid, ns, name, HOST_KIND, path, line, dict(meta),
                     max_processes=_positive_int(path, item, "max_processes", what, DEFAULT_MAX_PROCESSES, 1))


def _duration(path: Path, m: dict[str, Any], key: str, what: str, default: int) -> int:
    if key not in m:
        return default
    if not isinstance(m[key], str):  # a bare number: milliseconds or nanoseconds? say it in words
        raise EntryError(f"{_where(path, m, key)}: {what}: `{key}` must be a duration string such as \"500ms\", "
                         f"\"1s\" or \"1m\", got {m[key]!r}")
    try:
        return parse_duration_ms(m[key], f"{what}: `{key}`")
    except ValueError as e:
        raise EntryError(f"{_where(path, m, key)}: {e}") from None


def _lifecycle(path: Path, item: dict[str, Any], what: str) -> Lifecycle:
    lc = item.get("lifecycle")
    if lc is None:
        return Lifecycle()
    if not isinstance(lc, dict):
        raise EntryError(f"{_where(path, item, 'lifecycle')}: {what}: `lifecycle` must be a mapping "
                         "(auto_start, restart)")
    what = f"{what}: lifecycle"
    _known_keys(path, lc, ("auto_start", "restart", "depends_on", "security"), what)
    auto = lc.get("auto_start", False)
    if not isinstance(auto, bool):
        raise EntryError(f"{_where(path, lc, 'auto_start')}: {what}: `auto_start` must be true or false, got {auto!r}")
    r = lc.get("restart")
    policy = RestartPolicy()
    if r is not None:
        if not isinstance(r, dict):
            raise EntryError(f"{_where(path, lc, 'restart')}: {what}: `restart` must be a mapping "
                             "(max_attempts, initial_delay, max_delay, backoff)")
        rw = f"{what}.restart"
        _known_keys(path, r, ("max_attempts", "initial_delay", "max_delay", "backoff"), rw)
        backoff = r.get("backoff", policy.backoff)
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or backoff < 1:
            raise EntryError(f"{_where(path, r, 'backoff')}: {rw}: `backoff` must be a number >= 1 "
                             f"(the delay's multiplier per attempt), got {backoff!r}")
        policy = RestartPolicy(
            max_attempts=_positive_int(path, r, "max_attempts", rw, policy.max_attempts, 0),
            initial_delay_ms=_duration(path, r, "initial_delay", rw, policy.initial_delay_ms),
            max_delay_ms=_duration(path, r, "max_delay", rw, policy.max_delay_ms),
            backoff=float(backoff))
        if policy.max_delay_ms < policy.initial_delay_ms:
            raise EntryError(f"{_where(path, r, 'max_delay')}: {rw}: `max_delay` ({policy.max_delay_ms} ms) is "
                             f"shorter than `initial_delay` ({policy.initial_delay_ms} ms)")
    return Lifecycle(auto_start=auto, restart=policy)


def parse_service(path: Path, ns: str, name: str, item: dict[str, Any], meta: dict[str, Any],
                  line: int) -> ServiceEntry:
    eid = f"{ns}:{name}"
    what = f"entry {eid}"
    refs = {}
    for key in ("process", "host"):
        v = item.get(key)
        if not isinstance(v, str) or not v:
            raise EntryError(f"{_where(path, item, key)}: {what}: `{key}` must be an entry id "
                             f"(the {'process.lua' if key == 'process' else 'process.host'} entry), got {v!r}")
        refs[key] = _ref(ns, v) or v
    inp = item.get("input", [])
    if not isinstance(inp, list):
        inp = [inp]
    return ServiceEntry(eid, ns, name, SERVICE_KIND, path, line, dict(meta), process=refs["process"],
                        host=refs["host"], input=list(inp), lifecycle=_lifecycle(path, item, what),
                        key_lines={k: _line(item, k) for k in ("process", "host")})


def check_links(entries: dict[str, Entry]) -> None:
    """A service's `process` must be a process.lua entry and its `host` a process.host entry."""
    for e in entries.values():
        if not isinstance(e, ServiceEntry):
            continue
        for key, want, cls in (("process", PROCESS_KIND, ProcessEntry), ("host", HOST_KIND, HostEntry)):
            ref = getattr(e, key)
            target = entries.get(ref)
            if not isinstance(target, cls):
                why = "does not exist" if target is None else f"is a {target.kind}, not a {want}"
                raise EntryError(f"{e.file}:{e.key_lines.get(key, e.line)}: entry {e.id}: `{key}` refers to "
                                 f"{ref}, which {why}")
