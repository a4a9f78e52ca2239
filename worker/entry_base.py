"""What every registry entry is (`Entry`, `CodeEntry`), the error a registry file gets
(`EntryError`), and the YAML loading that remembers lines: shared by worker/entries.py and the
kinds it hands over to (worker/processes/kinds.py), which must not import each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class EntryError(Exception):
    """A registry file is wrong. The message names the file and line."""


@dataclass(slots=True)
class Entry:
    id: str
    namespace: str
    name: str
    kind: str
    file: Path  # the YAML file that defines it
    line: int  # 1-based line of the entry in that file
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class CodeEntry(Entry):
    source_path: Path = Path()
    chunk_name: str = ""  # what Lua messages call the file ("order.lua", "flows/order.lua")
    method: str = "main"
    modules: tuple[str, ...] = ()
    worker: str | None = None  # id of the temporal.worker entry it is bound to
    bytecode: bytes = field(default=b"", repr=False)
    # the bytecode starts with WORKFLOW_PRELUDE (a workflow entry's: one chunk shared by its runs)
    prelude: bool = False


class _Map(dict):
    """A YAML mapping that remembers its line and the line of each key."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    m = _Map()
    m.line = node.start_mark.line + 1
    m.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        m[key] = loader.construct_object(value_node, deep=True)
        if isinstance(key, str):
            m.key_lines[key] = key_node.start_mark.line + 1
    return m


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)


def line_of(m: Any, key: str | None = None) -> int:
    """The line of mapping `m` (or of its `key`) in its file; 0 when unknown."""
    if isinstance(m, _Map):
        if key is not None and key in m.key_lines:
            return m.key_lines[key]
        return m.line
    return 0


def entry_ref(ns: str, ref: str | None) -> str | None:
    """A reference to an entry, with the namespace added when it has none."""
    if ref is None or ":" in ref:
        return ref
    return f"{ns}:{ref}"
