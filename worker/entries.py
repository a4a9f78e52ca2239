"""Registry entries: Wippy-style YAML (`version`, `namespace`, `entries`) loaded into a `Registry`.

Kinds understood here:

* ``workflow.lua`` / ``function.lua``: Lua code (``source: file://path.lua`` relative to the YAML
  file, ``method`` (default ``main``), ``modules``); bound to a ``temporal.worker`` entry through
  ``meta.temporal.workflow.worker`` / ``meta.temporal.activity.worker``.
* ``temporal.worker``: ``client``, ``task_queue`` (plus ``lifecycle`` etc., ignored).
* ``temporal.client``: ``address``, ``namespace`` (both optional).
* ``process.lua``, ``process.host``, ``process.service``: Wippy's processes (`worker.processes.kinds`).

Every problem raises `EntryError` whose message starts with ``file:line:``.  Lua sources are
compiled once here (syntax errors are reported with the Lua file and line) and kept as bytecode,
which each workflow run loads without parsing the text again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lupa import lua54

from legato import DEFAULT_NAMESPACE
from worker import typed_lua
from worker.entry_base import CodeEntry, Entry, EntryError, _Loader
from worker.entry_base import entry_ref as _ref
from worker.entry_base import line_of as _line
from worker.processes import kinds

WORKFLOW_KIND = "workflow.lua"
FUNCTION_KIND = "function.lua"
WORKER_KIND = "temporal.worker"
CLIENT_KIND = "temporal.client"
PROCESS_KINDS = ("process.lua", "process.host", "process.service")  # worker/processes/kinds.py
KINDS = (WORKFLOW_KIND, FUNCTION_KIND, WORKER_KIND, CLIENT_KIND, *PROCESS_KINDS)

# Modules a workflow / an activity may list (and then `require`). The always-available ones
# (`process`, `channel`, ... and Lua's own libraries) may be listed by any entry, as Wippy code
# does: listing one is harmless.
ALWAYS_AVAILABLE = frozenset({"process", "channel", "coroutine", "errors", "payload", "string", "table", "math",
                              "utf8"})
_SHARED_MODULES = frozenset({"funcs", "time", "uuid", "crypto", "json", "ctx", "hash", "base64", "text"})
WORKFLOW_MODULES = _SHARED_MODULES | {"workflow"} | ALWAYS_AVAILABLE
FUNCTION_MODULES = _SHARED_MODULES | {"activity"} | ALWAYS_AVAILABLE
PROCESS_MODULES = _SHARED_MODULES | ALWAYS_AVAILABLE
# Wippy modules that need Wippy's own infrastructure (its HTTP server, databases, file systems,
# registry, security): Legato does not provide them, and says so instead of "unknown module".
WIPPY_ONLY_MODULES = frozenset({"http", "http_client", "sql", "fs", "registry", "security", "store", "env",
                                "exec", "events", "websocket", "cloudstorage"})


# ---------------------------------------------------------------- entries

@dataclass(slots=True)
class WorkflowEntry(CodeEntry):
    workflow_type: str = ""  # entry id, or meta.temporal.workflow.name


@dataclass(slots=True)
class FunctionEntry(CodeEntry):
    pass


@dataclass(slots=True)
class WorkerEntry(Entry):
    client: str | None = None
    task_queue: str = ""


@dataclass(slots=True)
class ClientEntry(Entry):
    address: str | None = None
    client_namespace: str | None = None  # the Legato namespace (not the registry namespace)


class Registry:
    """All entries by id, plus the lookups the worker needs."""

    def __init__(self, entries: list[Entry]) -> None:
        self._by_id: dict[str, Entry] = {e.id: e for e in entries}
        self._by_type: dict[str, WorkflowEntry] = {}
        for e in entries:
            if isinstance(e, WorkflowEntry):
                self._by_type[e.workflow_type] = e

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, entry_id: str) -> Entry:
        """The entry with that id; KeyError if there is none."""
        try:
            return self._by_id[entry_id]
        except KeyError:
            raise KeyError(f"no entry {entry_id!r} in the registry") from None

    def find(self, entry_id: str) -> Entry | None:
        return self._by_id.get(entry_id)

    def entries(self) -> list[Entry]:
        return list(self._by_id.values())

    def workflows(self) -> list[WorkflowEntry]:
        return [e for e in self._by_id.values() if isinstance(e, WorkflowEntry)]

    def functions(self) -> list[FunctionEntry]:
        return [e for e in self._by_id.values() if isinstance(e, FunctionEntry)]

    def workers(self) -> list[WorkerEntry]:
        return [e for e in self._by_id.values() if isinstance(e, WorkerEntry)]

    def clients(self) -> list[ClientEntry]:
        return [e for e in self._by_id.values() if isinstance(e, ClientEntry)]

    def workflow_for_type(self, workflow_type: str) -> WorkflowEntry | None:
        """The workflow entry whose type is `workflow_type` (its id or meta.temporal.workflow.name)."""
        e = self._by_type.get(workflow_type)
        if e is None:
            found = self._by_id.get(workflow_type)
            if isinstance(found, WorkflowEntry):
                return found
        return e

    def function(self, entry_id: str) -> FunctionEntry | None:
        e = self._by_id.get(entry_id)
        return e if isinstance(e, FunctionEntry) else None

    def workflows_for_worker(self, worker_id: str) -> list[WorkflowEntry]:
        return [e for e in self.workflows() if e.worker == worker_id]

    def activities_for_worker(self, worker_id: str) -> list[FunctionEntry]:
        """Function entries bound to the worker (unbound ones run on any worker's queues)."""
        return [e for e in self.functions() if e.worker == worker_id]

    def unbound_activities(self) -> list[FunctionEntry]:
        return [e for e in self.functions() if e.worker is None]

    def namespace_of_worker(self, worker_id: str) -> str:
        """The Legato namespace a temporal.worker polls in (its client's `namespace`)."""
        w = self._by_id.get(worker_id)
        if isinstance(w, WorkerEntry) and w.client:
            c = self._by_id.get(w.client)
            if isinstance(c, ClientEntry) and c.client_namespace:
                return c.client_namespace
        return DEFAULT_NAMESPACE

    def task_queues(self) -> list[tuple[str, str]]:
        """Distinct (namespace, task_queue) pairs of all temporal.worker entries, in file order."""
        out: list[tuple[str, str]] = []
        for w in self.workers():
            key = (self.namespace_of_worker(w.id), w.task_queue)
            if key not in out:
                out.append(key)
        return out

    def activity_task_queue(self, activity_type: str) -> str | None:
        """The task queue of the worker an activity is bound to (None: unbound or unknown)."""
        f = self.function(activity_type)
        if f is None or f.worker is None:
            return None
        w = self._by_id.get(f.worker)
        return w.task_queue if isinstance(w, WorkerEntry) else None


# ---------------------------------------------------------------- YAML with line numbers

# ---------------------------------------------------------------- Lua compilation

_compile_lock = threading.Lock()
_compiler: Any = None


def compile_lua(text: str, chunk_name: str, strip: bool = False) -> tuple[bytes | None, str | None]:
    """Compile Lua source; return (bytecode, None) or (None, "file.lua:LINE: message").

    `strip` drops debug information (smaller, faster to load; no line numbers in messages).
    """
    global _compiler
    with _compile_lock:
        if _compiler is None:
            rt = lua54.LuaRuntime(encoding=None, register_eval=False, register_builtins=False)
            _compiler = rt.eval(
                "function(src, name, strip) local f, err = load(src, '@' .. name, 't') "
                "if not f then return nil, err end return string.dump(f, strip), nil end")
        bc, err = _compiler(text.encode(), chunk_name.encode(), strip)
    if bc is None:
        return None, err.decode(errors="replace") if isinstance(err, bytes) else str(err)
    return bytes(bc), None


# A workflow's code starts with this statement, on its first line (line numbers stay): the kernel
# loads the chunk once per Lua state and calls it once per run, the runs sharing its function
# prototypes, each run's closures seeing its own globals (worker/kernel/run.lua, shared_chunk).
WORKFLOW_PRELUDE = "local _ENV = __legato_env(); "


def compile_workflow(text: str, chunk_name: str) -> tuple[bytes | None, str | None]:
    """compile_lua for a workflow entry: with WORKFLOW_PRELUDE."""
    return compile_lua(WORKFLOW_PRELUDE + text, chunk_name)


# ---------------------------------------------------------------- loading

def load_registry(path: str | Path) -> Registry:
    """Load a registry YAML file, or every *.yaml / *.yml file under a folder (recursively),
    skipping hidden files and folders (a Kubernetes ConfigMap volume keeps its files twice: in
    a hidden `..<timestamp>` folder and as links beside it)."""
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not files:
            raise EntryError(f"{root}: no registry files (*.yaml) in this folder")
        folder = True
    elif root.is_file():
        files = [root]
        folder = False
    else:
        raise EntryError(f"{root}: no such file or folder")
    raw: list[Entry] = []
    for f in files:
        raw.extend(_load_file(f, skip_foreign=folder))
    return _link(raw)


def _load_file(path: Path, skip_foreign: bool) -> list[Entry]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EntryError(f"{path}: cannot read: {e}") from e
    try:
        doc = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise EntryError(f"{path}:{line}: invalid YAML (line {line}): {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise EntryError(f"{path}:1: invalid YAML: {e}") from e
    if doc is None and skip_foreign:
        return []
    if not isinstance(doc, dict):
        raise EntryError(f"{path}:1: expected a mapping with `version`, `namespace` and `entries`")
    if skip_foreign and "entries" not in doc and "namespace" not in doc:
        return []  # some other YAML file in the folder
    ns = doc.get("namespace")
    if not isinstance(ns, str) or not ns:
        raise EntryError(f"{path}:{_line(doc, 'namespace')}: missing field `namespace` (a non-empty string)")
    entries = doc.get("entries")
    if entries is None:
        raise EntryError(f"{path}:{_line(doc)}: missing field `entries` (a list)")
    if not isinstance(entries, list):
        raise EntryError(f"{path}:{_line(doc, 'entries')}: `entries` must be a list")
    return [_entry(path, ns, item, i) for i, item in enumerate(entries)]


def _req_str(path: Path, m: dict[str, Any], key: str, what: str) -> str:
    v = m.get(key)
    if v is None:
        raise EntryError(f"{path}:{_line(m)}: {what}: missing field `{key}`")
    if not isinstance(v, str) or not v:
        raise EntryError(f"{path}:{_line(m, key)}: {what}: `{key}` must be a non-empty string, got {v!r}")
    return v


def _opt_str(path: Path, m: dict[str, Any], key: str, what: str) -> str | None:
    v = m.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        raise EntryError(f"{path}:{_line(m, key)}: {what}: `{key}` must be a non-empty string, got {v!r}")
    return v


def _dig(m: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(m, dict):
            return None
        m = m.get(k)
    return m


def _entry(path: Path, ns: str, item: Any, index: int) -> Entry:
    if not isinstance(item, dict):
        raise EntryError(f"{path}:{_line(item) or 1}: entry #{index + 1} must be a mapping with `name` and `kind`")
    line = _line(item)
    name = _req_str(path, item, "name", f"entry #{index + 1}")
    eid = f"{ns}:{name}"
    kind = _req_str(path, item, "kind", f"entry {eid}")
    if kind not in KINDS:
        raise EntryError(f"{path}:{_line(item, 'kind')}: entry {eid}: unknown kind {kind!r} "
                         f"(known: {', '.join(KINDS)})")
    meta = item.get("meta") or {}
    if not isinstance(meta, dict):
        raise EntryError(f"{path}:{_line(item, 'meta')}: entry {eid}: `meta` must be a mapping")
    what = f"entry {eid}"
    if kind == WORKER_KIND:
        return WorkerEntry(eid, ns, name, kind, path, line, dict(meta),
                           client=_ref(ns, _opt_str(path, item, "client", what)),
                           task_queue=_req_str(path, item, "task_queue", what))
    if kind in ("process.host", "process.service"):
        parse = kinds.parse_host if kind == "process.host" else kinds.parse_service
        return parse(path, ns, name, item, meta, line)
    if kind == CLIENT_KIND:
        return ClientEntry(eid, ns, name, kind, path, line, dict(meta),
                           address=_opt_str(path, item, "address", what),
                           client_namespace=_opt_str(path, item, "namespace", what))
    return _code_entry(path, ns, name, eid, kind, item, meta, line)


def _code_entry(path: Path, ns: str, name: str, eid: str, kind: str, item: dict[str, Any],
                meta: dict[str, Any], line: int) -> CodeEntry:
    what = f"entry {eid}"
    source = _req_str(path, item, "source", what)
    rel = source[len("file://"):] if source.startswith("file://") else source
    if not rel:
        raise EntryError(f"{path}:{_line(item, 'source')}: {what}: empty source path")
    src_path = (path.parent / rel).resolve()
    try:
        text = src_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EntryError(f"{path}:{_line(item, 'source')}: {what}: source file not found: {src_path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EntryError(f"{path}:{_line(item, 'source')}: {what}: cannot read source {src_path}: {e}") from e
    method = item.get("method", "main")
    if not isinstance(method, str) or not method:
        raise EntryError(f"{path}:{_line(item, 'method')}: {what}: `method` must be a non-empty string")
    modules_raw = item.get("modules") or []
    if not isinstance(modules_raw, list) or not all(isinstance(x, str) for x in modules_raw):
        raise EntryError(f"{path}:{_line(item, 'modules')}: {what}: `modules` must be a list of module names")
    known = (WORKFLOW_MODULES if kind == WORKFLOW_KIND else PROCESS_MODULES if kind == "process.lua"
             else FUNCTION_MODULES)
    for mod in modules_raw:
        if mod in WIPPY_ONLY_MODULES:
            raise EntryError(f"{path}:{_line(item, 'modules')}: {what}: module {mod!r} is Wippy's and needs its "
                             "infrastructure (HTTP server, databases, file systems, registry, security): Legato does "
                             f"not provide it (the modules here: {', '.join(sorted(known))})")
        if mod not in known:
            raise EntryError(f"{path}:{_line(item, 'modules')}: {what}: unknown module {mod!r} for {kind} "
                             f"(available: {', '.join(sorted(known))})")
    chunk_name = Path(rel).as_posix().lstrip("./") or src_path.name
    prelude = kind == WORKFLOW_KIND
    bytecode, err = typed_lua.compile_source(text, chunk_name,
                                             compile_workflow if prelude else compile_lua)  # Wippy's types erased
    if bytecode is None:
        raise EntryError(f"{path}:{_line(item, 'source')}: {what}: Lua syntax error in {err}")
    role = "workflow" if kind == WORKFLOW_KIND else "activity"
    worker_ref = _dig(meta, "temporal", role, "worker")
    if worker_ref is not None and (not isinstance(worker_ref, str) or not worker_ref):
        raise EntryError(f"{path}:{_line(item, 'meta')}: {what}: meta.temporal.{role}.worker must be an entry id")
    common: dict[str, Any] = dict(source_path=src_path, chunk_name=chunk_name, method=method,
                                  modules=tuple(modules_raw), worker=_ref(ns, worker_ref), bytecode=bytecode,
                                  prelude=prelude)
    if kind == WORKFLOW_KIND:
        wf_name = _dig(meta, "temporal", "workflow", "name")
        if wf_name is not None and (not isinstance(wf_name, str) or not wf_name):
            raise EntryError(f"{path}:{_line(item, 'meta')}: {what}: meta.temporal.workflow.name must be a string")
        return WorkflowEntry(eid, ns, name, kind, path, line, dict(meta), workflow_type=wf_name or eid, **common)
    if kind == "process.lua":
        return kinds.ProcessEntry(eid, ns, name, kind, path, line, dict(meta), **common)
    return FunctionEntry(eid, ns, name, kind, path, line, dict(meta), **common)


def _link(entries: list[Entry]) -> Registry:
    seen: dict[str, Entry] = {}
    for e in entries:
        if e.id in seen:
            raise EntryError(f"{e.where}: duplicate entry id {e.id} (first defined at {seen[e.id].where})")
        seen[e.id] = e
    types: dict[str, Entry] = {}
    for e in entries:
        if isinstance(e, CodeEntry) and e.worker is not None:
            w = seen.get(e.worker)
            if not isinstance(w, WorkerEntry):
                role = "workflow" if isinstance(e, WorkflowEntry) else "activity"
                why = "does not exist" if w is None else f"is a {w.kind}, not a {WORKER_KIND}"
                raise EntryError(f"{e.where}: entry {e.id}: meta.temporal.{role}.worker refers to {e.worker}, "
                                 f"which {why}")
        if isinstance(e, WorkerEntry) and e.client is not None:
            c = seen.get(e.client)
            if not isinstance(c, ClientEntry):
                why = "does not exist" if c is None else f"is a {c.kind}, not a {CLIENT_KIND}"
                raise EntryError(f"{e.where}: entry {e.id}: client refers to {e.client}, which {why}")
        if isinstance(e, WorkflowEntry):
            other = types.get(e.workflow_type)
            if other is not None:
                raise EntryError(f"{e.where}: entry {e.id}: workflow type {e.workflow_type!r} is also the type of "
                                 f"{other.id} ({other.where})")
            types[e.workflow_type] = e
    kinds.check_links(seen)
    return Registry(entries)
