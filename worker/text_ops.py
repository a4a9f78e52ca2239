"""The `text` module's operations (Wippy's API): RE2 regular expressions, diff-match-patch diffs
and patches, and text splitters.

Every operation is a pure function of its arguments, so workflows call them without recording
anything and a replay computes the same values. Two things make that hold:

* regular expressions are RE2's (google-re2): matching takes time linear in the input, so a
  hostile pattern cannot backtrack for ever, and syntax that needs backtracking (backreferences,
  lookaround) is refused when the pattern is compiled;
* diff-match-patch bounds a diff by a clock (`diff_timeout`), which would make a diff depend on
  the machine's speed. Here the clock is a step budget instead (`_Budget`): the diff's search
  stops after a number of steps derived from `diff_timeout`, the same on every machine, and
  capped (`MAX_DIFF_STEPS`) so a diff ends well inside a workflow task's watchdog.

The kernel calls them as `H.crypto("text....", ...)` with string arguments tagged (worker/host_args.py);
each returns a value or raises OpError (the code gets `nil, err`). Regexp objects are Lua tables
holding their pattern: each method passes it again, and compiled patterns stay in a bounded LRU.
"""

from __future__ import annotations

import html
import re
from collections import deque
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import re2
from diff_match_patch import diff_match_patch
from lupa import lua54

from legato.errors import Kind
from worker.host_args import OpError, binary, text, type_name

# ---------------------------------------------------------------- bounds

MAX_PATTERN_BYTES = 16 * 1024  # a pattern's length
MAX_SUBJECT_BYTES = 4 * 1024 * 1024  # a string searched, replaced or split
MAX_MATCHES = 100_000  # matches (and split parts) one call returns
MAX_OUTPUT_BYTES = 16 * 1024 * 1024  # what replace_all_string may make
REGEXP_CACHE = 256  # compiled patterns kept
RE2_MAX_MEM = 32 * 1024 * 1024  # memory RE2 may use for one compiled pattern
MAX_DIFF_CHARS = 1024 * 1024  # each text compared, patched or summarized
MAX_DIFF_ITEMS = 1_000_000  # entries of a diff or patch list given back
# The step budget stands in for diff_timeout's seconds (a step: one round of the bisection, whose
# cost grows with the round): diff_timeout 1.0 (Wippy's default) is DIFF_STEPS_PER_SECOND steps,
# and no diff gets more than MAX_DIFF_STEPS, whatever diff_timeout says (0, "no limit", too).
# MAX_DIFF_STEPS: some 0.2 s of Python on two unlike 20,000-character texts (the cost of a round
# grows with its number), far inside worker.lua_watchdog_ms (5 s by default).
DIFF_STEPS_PER_SECOND = 1_000
MAX_DIFF_STEPS = 1_000
# Cells of fuzzy matching (Bitap) one patch_apply may search, some 1 s at most: a fuzzy patch
# under the default options costs about 34,000.
MAX_MATCH_CELLS = 4_000_000
MAX_CHUNK_SIZE = 1_000_000  # a splitter's chunk_size
MAX_SPLIT_CHARS = 8 * 1024 * 1024  # a text given to a splitter
MAX_SEPARATORS = 64
MAX_SPLIT_OUTPUT = 64 * 1024 * 1024  # characters of chunks one split may make (overlap repeats text)


def _subject(value: Any, what: str, limit: int = MAX_SUBJECT_BYTES) -> bytes:
    b = binary(value, what)
    if len(b) > limit:
        raise OpError(f"{what}: the string is {len(b)} bytes, more than the {limit} allowed")
    return b


# ---------------------------------------------------------------- regexp (Go's regexp semantics on RE2)

class _Compiled:
    __slots__ = ("names", "ngroups", "re")

    def __init__(self, re_: Any, ngroups: int, names: list[str]) -> None:
        self.re, self.ngroups, self.names = re_, ngroups, names


@lru_cache(maxsize=REGEXP_CACHE)
def _compile(pattern: bytes) -> _Compiled:
    opts = re2.Options()
    opts.log_errors = False
    opts.max_mem = RE2_MAX_MEM
    compiled = re2._re2.RE2(pattern, opts)
    if not compiled.ok():
        err = compiled.error()
        err = err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)
        raise OpError(f"text.regexp.compile: invalid pattern {pattern[:200].decode('utf-8', 'replace')!r}: {err}"
                      " (RE2 syntax: no backreferences or lookaround)")
    n = compiled.NumberOfCapturingGroups()
    names = [""] * (n + 1)
    for name, index in compiled.NamedCapturingGroups():
        names[index] = name.decode("utf-8") if isinstance(name, bytes) else name
    return _Compiled(compiled, n, names)


def _regexp(pattern: Any) -> _Compiled:
    p = binary(pattern, "text.regexp.compile")
    if len(p) > MAX_PATTERN_BYTES:
        raise OpError(f"text.regexp.compile: the pattern is {len(p)} bytes, more than the {MAX_PATTERN_BYTES} allowed")
    return _compile(p)


_UNANCHORED = re2._re2.RE2.Anchor.UNANCHORED


def _search(c: _Compiled, s: bytes, pos: int) -> list[tuple[int, int]] | None:
    spans = c.re.Match(_UNANCHORED, s, pos, len(s))
    return None if spans[0][0] < 0 else spans


def _rune_width(s: bytes, pos: int) -> int:
    """The length of the UTF-8 character at pos (1 for an invalid byte; 1 at the end)."""
    if pos >= len(s):
        return 1
    b = s[pos]
    n = 1 if b < 0xC0 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4
    try:
        s[pos:pos + n].decode("utf-8")
    except UnicodeDecodeError:
        return 1
    return n


def _all(c: _Compiled, s: bytes, n: int = -1) -> Iterator[list[tuple[int, int]]]:
    """Successive matches as Go's regexp finds them: an empty match right after the previous
    match does not count; at most n (n < 0: all). More than MAX_MATCHES is an error (not a
    silently short answer)."""
    limit = n if 0 <= n <= MAX_MATCHES else MAX_MATCHES + 1
    pos, prev_end, found = 0, -1, 0
    while found < limit and pos <= len(s):
        spans = _search(c, s, pos)
        if spans is None:
            return
        start, end = spans[0]
        accept = True
        if end == pos:  # an empty match
            accept = start != prev_end
            pos += _rune_width(s, pos)
        else:
            pos = end
        prev_end = end
        if accept:
            found += 1
            if found > MAX_MATCHES:
                raise OpError(f"text.regexp: more than {MAX_MATCHES} matches")
            yield spans


def _groups(s: bytes, spans: list[tuple[int, int]]) -> list[bytes]:
    return [s[a:b] if a >= 0 else b"" for a, b in spans]


def _re_compile(pattern: Any) -> bool:
    _regexp(pattern)
    return True


def _re_op(name: str, fn: Callable[[_Compiled, bytes], Any]) -> Callable[[Any, Any], Any]:
    what = f"re:{name}"

    def op(pattern: Any, s: Any) -> Any:
        return fn(_regexp(pattern), _subject(s, what))
    return op


def _find_string(c: _Compiled, s: bytes) -> bytes | None:
    spans = _search(c, s, 0)
    if spans is None or spans[0][0] == spans[0][1]:
        return None  # as Wippy: an empty match reads as none
    return s[spans[0][0]:spans[0][1]]


def _find_string_index(c: _Compiled, s: bytes) -> list[int] | None:
    spans = _search(c, s, 0)
    return None if spans is None else [spans[0][0] + 1, spans[0][1]]  # 1-based, inclusive


def _find_string_submatch(c: _Compiled, s: bytes) -> list[bytes] | None:
    spans = _search(c, s, 0)
    return None if spans is None else _groups(s, spans)


def _find_all_string_index(c: _Compiled, s: bytes) -> list[list[int]] | None:
    out = [[m[0][0] + 1, m[0][1]] for m in _all(c, s)]
    return out or None  # as Wippy: nil when nothing matches


def _expand(template: bytes, c: _Compiled, s: bytes, spans: list[tuple[int, int]], out: bytearray) -> None:
    """Go's Regexp.Expand: $1, ${1}, $name, ${name}; $$ is a $; a group that is not there is empty."""
    i, n = 0, len(template)
    while i < n:
        j = template.find(b"$", i)
        if j < 0:
            out += template[i:]
            return
        out += template[i:j]
        i = j + 1
        if i < n and template[i:i + 1] == b"$":
            out += b"$"
            i += 1
            continue
        name: bytes
        if i < n and template[i:i + 1] == b"{":
            close = template.find(b"}", i + 1)
            name = template[i + 1:close] if close > 0 else b""
            if close < 0 or not _NAME.fullmatch(name):
                out += b"$"
                continue
            i = close + 1
        else:
            m = _NAME.match(template, i)
            if not m:
                out += b"$"
                continue
            name = m.group()
            i = m.end()
        if name.isdigit():
            k = int(name)
        else:
            text_name = name.decode("ascii")
            k = c.names.index(text_name) if text_name in c.names[1:] else -1
        if 0 <= k < len(spans) and spans[k][0] >= 0:
            out += s[spans[k][0]:spans[k][1]]


_NAME = re.compile(rb"[A-Za-z0-9_]+")


def _replace_all_string(pattern: Any, s: Any, repl: Any) -> bytes:
    c = _regexp(pattern)
    src = _subject(s, "re:replace_all_string")
    template = _subject(repl, "re:replace_all_string replacement")
    out = bytearray()
    last_end, pos, count = 0, 0, 0
    while pos <= len(src):
        spans = _search(c, src, pos)
        if spans is None:
            break
        start, end = spans[0]
        out += src[last_end:start]
        if end > last_end or start == 0:  # not an empty match right after the previous one
            _expand(template, c, src, spans, out)
            count += 1
        last_end = end
        width = _rune_width(src, pos)
        pos = pos + width if pos + width > end else max(end, pos + 1)
        if len(out) > MAX_OUTPUT_BYTES or count > MAX_MATCHES:
            raise OpError(f"re:replace_all_string: the result passes the bounds ({MAX_OUTPUT_BYTES} bytes,"
                          f" {MAX_MATCHES} replacements)")
    out += src[last_end:]
    if len(out) > MAX_OUTPUT_BYTES:
        raise OpError(f"re:replace_all_string: the result is more than {MAX_OUTPUT_BYTES} bytes")
    return bytes(out)


def _split(pattern: Any, s: Any, n: Any) -> list[bytes]:
    c = _regexp(pattern)
    src = _subject(s, "re:split")
    if n is None:
        count = -1
    elif isinstance(n, bool) or not isinstance(n, int | float) or not float(n).is_integer():
        raise OpError(f"re:split: n must be a whole number (-1: all), got {type_name(n)}")
    else:
        count = int(n)
    if count == 0:
        return []
    if not src and binary(pattern, "re:split"):
        return [b""]  # as Go: a non-empty pattern splits "" into one empty part
    parts: list[bytes] = []
    begin = end = 0
    for spans in _all(c, src, count):
        if count > 0 and len(parts) == count - 1:
            break
        end = spans[0][0]
        if spans[0][1] != 0:
            parts.append(src[begin:end])
        begin = spans[0][1]
    if end != len(src):
        parts.append(src[begin:])
    return parts


def _num_subexp(pattern: Any) -> int:
    return _regexp(pattern).ngroups


def _subexp_names(pattern: Any) -> list[str]:
    return list(_regexp(pattern).names)


# ---------------------------------------------------------------- diff (diff-match-patch, deterministic)

class _Budget:
    """diff-match-patch's deadline, compared with the clock once per bisection round (`time.time()
    > deadline`): each comparison spends one step, and the budget reads as passed once they are
    spent, so a diff stops at the same point on every machine and in every replay."""

    __slots__ = ("left",)

    def __init__(self, steps: int) -> None:
        self.left = steps

    def __lt__(self, _now: object) -> bool:  # `now > deadline` asks deadline.__lt__(now)
        self.left -= 1
        return self.left < 0

    def __gt__(self, _now: object) -> bool:
        return self.left < 0


class _Differ(diff_match_patch):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.match_cells = MAX_MATCH_CELLS

    def match_bitap(self, text: str, pattern: str, loc: int) -> int:
        """The fuzzy search a patch does when its text is not where it was: within a budget of
        cells (its worst case: each error level scans the reach match_threshold x match_distance
        on either side of loc). Past the budget, a patch that does not apply exactly is reported
        not applied, the same on every machine."""
        reach = 2 * self.Match_Threshold * self.Match_Distance + 2 * len(pattern) + 1
        self.match_cells -= len(pattern) * int(min(len(text) + len(pattern), reach))
        if self.match_cells < 0:
            return -1
        return int(super().match_bitap(text, pattern, loc))

    def diff_main(self, text1: str, text2: str, checklines: bool = True, deadline: Any = None) -> Any:
        if deadline is None:
            deadline = _Budget(self.steps)
        return super().diff_main(text1, text2, checklines, deadline)


# option -> (dmp attribute, Wippy's default, whole number?, lowest, highest allowed). A patch's
# margin is context on each side and its padding made of that many characters: it stays small.
MAX_PATCH_MARGIN = 64
_DIFF_OPTIONS: dict[str, tuple[str, float, bool, float, float]] = {
    "diff_timeout": ("Diff_Timeout", 1.0, False, 0, float("inf")),
    "diff_edit_cost": ("Diff_EditCost", 4, True, 0, 1_000_000),
    "match_threshold": ("Match_Threshold", 0.5, False, 0, 1),
    "match_distance": ("Match_Distance", 1000, True, 0, 1_000_000_000),
    "patch_delete_threshold": ("Patch_DeleteThreshold", 0.5, False, 0, 1),
    "patch_margin": ("Patch_Margin", 4, True, 0, MAX_PATCH_MARGIN),
}


def _lua_table(value: Any) -> bool:
    return lua54.lua_type(value) == "table"


def _diff_new(options: Any) -> dict[str, float]:
    """The differ's options, checked, with Wippy's defaults for the ones not given."""
    out = {name: spec[1] for name, spec in _DIFF_OPTIONS.items()}
    if options is None:
        return out
    if not _lua_table(options):
        raise OpError(f"text.diff.new: options must be a table, got {type_name(options)}")
    for key, value in options.items():
        spec = _DIFF_OPTIONS.get(key) if isinstance(key, str) else None
        if spec is None:
            raise OpError(f"text.diff.new: unknown option {key!r} (options: {', '.join(_DIFF_OPTIONS)})")
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise OpError(f"text.diff.new: {key} must be a number, got {type_name(value)}")
        if not spec[3] <= value <= spec[4]:
            raise OpError(f"text.diff.new: {key} must be between {spec[3]:g} and {spec[4]:g}, got {value:g}")
        if spec[2] and not float(value).is_integer():
            raise OpError(f"text.diff.new: {key} must be a whole number")
        out[key] = int(value) if spec[2] else float(value)
    return out


def _differ(options: Any) -> _Differ:
    opts = _diff_new(options)
    timeout = opts["diff_timeout"]
    steps = MAX_DIFF_STEPS if timeout <= 0 else max(1, int(min(MAX_DIFF_STEPS, timeout * DIFF_STEPS_PER_SECOND)))
    d = _Differ(steps)
    for name, spec in _DIFF_OPTIONS.items():
        setattr(d, spec[0], opts[name])
    d.Diff_Timeout = 1.0  # > 0: the half-match speedup on, as with a time limit (the budget is the limit)
    return d


def _diff_text(value: Any, what: str) -> str:
    s = text(value, what)
    if len(s) > MAX_DIFF_CHARS:
        raise OpError(f"{what}: the text is {len(s)} characters, more than the {MAX_DIFF_CHARS} allowed")
    return s


_OP_NAMES = {0: "equal", -1: "delete", 1: "insert"}
_OP_CODES = {v: k for k, v in _OP_NAMES.items()}


def _compare(options: Any, text1: Any, text2: Any) -> list[dict[str, Any]]:
    d = _differ(options)
    diffs = d.diff_main(_diff_text(text1, "diff:compare text1"), _diff_text(text2, "diff:compare text2"), False)
    d.diff_cleanupSemantic(diffs)  # whole words changed, as people read a diff (Wippy's example)
    return [{"operation": _OP_NAMES[op], "text": t} for op, t in diffs]


def _lua_list(value: Any, what: str, limit: int = MAX_DIFF_ITEMS) -> list[Any]:
    if not _lua_table(value):
        raise OpError(f"{what}: expected a table, got {type_name(value)}")
    n = len(value)
    if n > limit:
        raise OpError(f"{what}: more than {limit} entries")
    return [value[i] for i in range(1, n + 1)]


def _field_text(entry: Any, key: str, what: str) -> str:
    v = entry[key] if _lua_table(entry) else None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if not isinstance(v, str):
        raise OpError(f"{what}: each entry needs a string {key}, got {type_name(v)}")
    return v


def _diff_list(value: Any, what: str) -> list[tuple[int, str]]:
    out, total = [], 0
    for entry in _lua_list(value, what):
        op = _field_text(entry, "operation", what)
        if op not in _OP_CODES:
            raise OpError(f"{what}: operation must be equal, delete or insert, got {op[:40]!r}")
        t = _field_text(entry, "text", what)
        total += len(t)
        if total > 2 * MAX_DIFF_CHARS:
            raise OpError(f"{what}: the diff's texts are more than {2 * MAX_DIFF_CHARS} characters")
        out.append((_OP_CODES[op], t))
    return out


def _summarize(diffs: Any) -> dict[str, int]:
    counts = {"insertions": 0, "deletions": 0, "equals": 0}
    key = {1: "insertions", -1: "deletions", 0: "equals"}
    for op, t in _diff_list(diffs, "diff:summarize"):
        counts[key[op]] += len(t)  # characters, not bytes
    return counts


_ANSI = {1: ("\x1b[32m", "\x1b[0m"), -1: ("\x1b[31m", "\x1b[0m"), 0: ("", "")}
_HTML = {1: ("<ins>", "</ins>"), -1: ("<del>", "</del>"), 0: ("", "")}


def _pretty(table: dict[int, tuple[str, str]], escape: bool, what: str) -> Callable[[Any], str]:
    def op(diffs: Any) -> str:
        parts = []
        for code, t in _diff_list(diffs, what):
            before, after = table[code]
            parts.append(before + (html.escape(t, quote=False) if escape else t) + after)
        return "".join(parts)
    return op


def _patch_make(options: Any, text1: Any, text2: Any) -> list[dict[str, str]]:
    d = _differ(options)
    patches = d.patch_make(_diff_text(text1, "diff:patch_make text1"), _diff_text(text2, "diff:patch_make text2"))
    return [{"text": d.patch_toText([p])} for p in patches]


def _patch_apply(options: Any, patches: Any, target: Any) -> list[Any]:
    d = _differ(options)
    what = "diff:patch_apply"
    parsed = []
    for entry in _lua_list(patches, what):
        body = _field_text(entry, "text", what)
        if len(body) > 4 * MAX_DIFF_CHARS:
            raise OpError(f"{what}: a patch is more than {4 * MAX_DIFF_CHARS} characters")
        try:
            parsed.extend(d.patch_fromText(body))
        except ValueError as err:
            raise OpError(f"{what}: not a patch: {err}") from None
    result, applied = d.patch_apply(parsed, _diff_text(target, "diff:patch_apply text"))
    return [result, all(applied)]


# ---------------------------------------------------------------- splitters

def _whole(options: Any, key: str, default: int, low: int, high: int, what: str) -> int:
    v = options[key] if options is not None else None
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float) or not float(v).is_integer():
        raise OpError(f"{what}: {key} must be a whole number, got {type_name(v)}")
    if not low <= v <= high:
        raise OpError(f"{what}: {key} must be between {low} and {high}, got {int(v)}")
    return int(v)


def _flag(options: Any, key: str, what: str) -> bool:
    v = options[key] if options is not None else None
    if v is None:
        return False
    if not isinstance(v, bool):
        raise OpError(f"{what}: {key} must be a boolean, got {type_name(v)}")
    return v


_RECURSIVE_KEYS = ("chunk_size", "chunk_overlap", "keep_separator", "separators")
_MARKDOWN_KEYS = ("chunk_size", "chunk_overlap", "code_blocks", "reference_links", "heading_hierarchy",
                  "join_table_rows")
DEFAULT_SEPARATORS = ("\n\n", "\n", " ", "")


def _splitter_options(kind: Any, options: Any) -> dict[str, Any]:
    """A splitter's options, checked, with Wippy's defaults (chunk_size 512, chunk_overlap 100)."""
    if kind not in ("recursive", "markdown"):
        raise OpError(f"text.splitter: no splitter {kind!r}")
    what = f"text.splitter.{kind}"
    if options is not None and not _lua_table(options):
        raise OpError(f"{what}: options must be a table, got {type_name(options)}")
    keys = _RECURSIVE_KEYS if kind == "recursive" else _MARKDOWN_KEYS
    for key in options.keys() if options is not None else ():
        if key not in keys:
            raise OpError(f"{what}: unknown option {key!r} (options: {', '.join(keys)})")
    size = _whole(options, "chunk_size", 512, 1, MAX_CHUNK_SIZE, what)
    overlap = _whole(options, "chunk_overlap", min(100, size - 1), 0, size - 1, what)
    out: dict[str, Any] = {"kind": kind, "chunk_size": size, "chunk_overlap": overlap}
    if kind == "recursive":
        out["keep_separator"] = _flag(options, "keep_separator", what)
        seps = options["separators"] if options is not None else None
        if seps is not None:
            items = _lua_list(seps, f"{what}: separators", MAX_SEPARATORS)
            if not items or not all(isinstance(s, str) for s in items):
                raise OpError(f"{what}: separators must be a non-empty list of strings")
            out["separators"] = items
    else:
        for key in _MARKDOWN_KEYS[2:]:
            out[key] = _flag(options, key, what)
    return out


class _Output:
    """What a split has made so far, in characters: a large overlap repeats text, so it is bounded."""

    __slots__ = ("made",)

    def __init__(self) -> None:
        self.made = 0

    def spend(self, n: int) -> None:
        self.made += n
        if self.made > MAX_SPLIT_OUTPUT:
            raise OpError(f"splitter:split_text: the chunks would be more than {MAX_SPLIT_OUTPUT} characters"
                          " (a smaller chunk_overlap repeats less)")


def _merge(splits: list[str], sep: str, size: int, overlap: int, budget: _Output) -> list[str]:
    """Pieces joined with sep into chunks of at most size characters, each chunk starting with
    the last pieces (at most overlap characters of them) of the one before."""
    docs: list[str] = []
    current: deque[str] = deque()
    total = 0
    for piece in splits:
        n = len(piece)
        if current and total + n + len(sep) > size:
            budget.spend(total)
            doc = sep.join(current).strip()
            if doc:
                docs.append(doc)
            while current and (total > overlap or total + n + (len(sep) if current else 0) > size):
                total -= len(current[0]) + (len(sep) if len(current) > 1 else 0)
                current.popleft()
        current.append(piece)
        total += n + (len(sep) if len(current) > 1 else 0)
    doc = sep.join(current).strip()
    if doc:
        docs.append(doc)
    return docs


def _windows(s: str, size: int, overlap: int, budget: _Output) -> list[str]:
    """Cut at any character (no separator left): what merging single characters gives, in slices."""
    out, start, step = [], 0, max(1, size - overlap)
    while True:
        budget.spend(min(size, len(s) - start))
        piece = s[start:start + size].strip()
        if piece:
            out.append(piece)
        if start + size >= len(s):
            return out
        start += step


def _recursive(s: str, separators: list[str], size: int, overlap: int, keep: bool, budget: _Output) -> list[str]:
    sep, rest = separators[-1], list[str]()
    for i, candidate in enumerate(separators):
        if candidate == "":
            sep, rest = "", []
            break
        if candidate in s:
            sep, rest = candidate, separators[i + 1:]
            break
    if sep == "":
        return _windows(s, size, overlap, budget)
    if keep:
        raw = s.split(sep)
        pieces = [raw[0]] + [sep + p for p in raw[1:]]
    else:
        pieces = s.split(sep)
    pieces = [p for p in pieces if p != ""]
    join = "" if keep else sep
    out: list[str] = []
    good: list[str] = []
    for piece in pieces:
        if len(piece) <= size:
            good.append(piece)
            continue
        if good:
            out.extend(_merge(good, join, size, overlap, budget))
            good = []
        out.extend(_recursive(piece, rest, size, overlap, keep, budget) if rest else [piece])
    if good:
        out.extend(_merge(good, join, size, overlap, budget))
    return out


def _split_recursive(opts: Any, s: str) -> list[str]:
    given = opts["separators"]
    seps = [str(x) for x in _lua_list(given, "splitter")] if given is not None else list(DEFAULT_SEPARATORS)
    return _recursive(s, seps, opts["chunk_size"], opts["chunk_overlap"], bool(opts["keep_separator"]), _Output())


# -- markdown: the text as blocks (headings, fenced code, tables, reference definitions, paragraphs)

_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]|$)")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_TABLE_ROW = re.compile(r"^\s*\|")
_REF_DEF = re.compile(r"^ {0,3}\[([^\]]+)\]:\s*\S")
# a bracketed label (CommonMark: at most 999 characters); no "[" inside, so a scan is linear
_LABEL = re.compile(r"\[([^\[\]\n]{1,999})\]")


def _blocks(s: str) -> Iterator[tuple[str, str, int]]:
    """(kind, text, heading level) per block: heading, code, table, ref, text."""
    lines = s.split("\n")
    i, para = 0, list[str]()

    def flush() -> Iterator[tuple[str, str, int]]:
        if para:
            yield "text", "\n".join(para), 0
            para.clear()
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            yield from flush()
            mark, j = fence.group(1), i + 1
            while j < len(lines) and not lines[j].lstrip().startswith(mark[0] * len(mark)):
                j += 1
            yield "code", "\n".join(lines[i:j + 1]), 0
            i = j + 1
            continue
        heading = _HEADING.match(line)
        if heading:
            yield from flush()
            yield "heading", line.strip(), len(heading.group(1))
        elif _TABLE_ROW.match(line):
            yield from flush()
            j = i
            while j < len(lines) and _TABLE_ROW.match(lines[j]):
                j += 1
            yield "table", "\n".join(lines[i:j]), 0
            i = j
            continue
        elif _REF_DEF.match(line):
            yield from flush()
            yield "ref", line.strip(), 0
        elif line.strip() == "":
            yield from flush()
        else:
            para.append(line)
        i += 1
    yield from flush()


def _split_markdown(opts: Any, s: str) -> list[str]:
    size, overlap = opts["chunk_size"], opts["chunk_overlap"]
    hierarchy, code_whole, tables, refs = (bool(opts["heading_hierarchy"]), bool(opts["code_blocks"]),
                                           bool(opts["join_table_rows"]), bool(opts["reference_links"]))
    blocks = list(_blocks(s))
    definitions = {}
    if refs:
        for kind, body, _ in blocks:
            if kind == "ref":
                m = _REF_DEF.match(body)
                if m:
                    definitions[m.group(1).lower()] = body
        blocks = [b for b in blocks if b[0] != "ref"]
    chunks: list[str] = []
    path: list[tuple[int, str]] = []  # the headings above the current block
    current: list[str] = []
    length = [0]  # of "\n\n".join(current)
    budget = _Output()

    def prefix() -> str:  # at most half a chunk (a huge heading is cut, not repeated whole)
        return "\n".join(h for _, h in path)[:size // 2] if hierarchy else ""

    def close() -> None:
        if current:
            budget.spend(length[0])
            chunks.append("\n\n".join(current).strip())
            current.clear()
            length[0] = 0

    def push(piece: str) -> None:
        length[0] += len(piece) + (2 if current else 0)
        current.append(piece)

    def add(piece: str) -> None:
        if current and length[0] + 2 + len(piece) > size:
            close()
        if not current and hierarchy and path:
            push(prefix())
        push(piece)

    for kind, body, level in blocks:
        if kind == "heading":
            if hierarchy:
                close()
                while path and path[-1][0] >= level:
                    path.pop()
                path.append((level, body))
                continue
            add(body)
            continue
        head = len(prefix()) + 2 if hierarchy and path else 0
        room = max(1, size - head)
        if len(body) <= room:
            add(body)
            continue
        if (kind == "code" and code_whole) or (kind == "table" and tables):
            close()
            rows = body.split("\n")
            keep = rows[:1] if kind == "code" else rows[:2]  # the opening fence, or the header row and rule
            tail = rows[-1:] if kind == "code" and len(rows) > 1 and _FENCE.match(rows[-1]) else []
            middle = rows[len(keep):len(rows) - len(tail)]
            fixed = len("\n".join(keep + tail)) + 1  # what every part has, and a newline
            part: list[str] = []
            part_len = fixed
            for row in middle:
                if part and part_len + len(row) + 1 > room:
                    add("\n".join(keep + part + tail))
                    close()
                    part, part_len = [], fixed
                part.append(row)
                part_len += len(row) + 1
            add("\n".join(keep + part + tail))
            continue
        close()
        for piece in _recursive(body, list(DEFAULT_SEPARATORS[1:]), room, min(overlap, room - 1), False, budget):
            add(piece)
            close()
    close()
    if refs and definitions:  # each chunk carries the definitions of the reference links it uses
        out = []
        for chunk in chunks:
            used: dict[str, None] = {}  # in the order the chunk uses them
            for m in _LABEL.finditer(chunk):
                d = definitions.get(m.group(1).lower())
                if d:
                    used[d] = None
            out.append(chunk + ("\n\n" + "\n".join(used) if used else ""))
        chunks = out
    return [c for c in chunks if c]


def _splitter_new(kind: Any, options: Any) -> dict[str, Any]:
    return _splitter_options(kind, options)


def _split_text(opts: Any, value: Any) -> list[str]:
    s = text(value, "splitter:split_text")
    if len(s) > MAX_SPLIT_CHARS:
        raise OpError(f"splitter:split_text: the text is {len(s)} characters, more than the {MAX_SPLIT_CHARS} allowed")
    if not _lua_table(opts):
        raise OpError("splitter:split_text: not a splitter")
    if opts["kind"] == "markdown":
        return _split_markdown(opts, s)
    return _split_recursive(opts, s)


def _guarded(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """An operation whose unexpected failure is an INTERNAL error for the code, not a traceback."""
    def op(*args: Any) -> Any:
        try:
            return fn(*args)
        except (OpError, TypeError):  # TypeError: called with the wrong arguments (crypto_host reports it)
            raise
        except RecursionError:
            raise OpError(f"{name}: the input nests too deeply", Kind.INTERNAL) from None
        except Exception as err:
            raise OpError(f"{name}: internal error: {type(err).__name__}: {err}", Kind.INTERNAL) from None
    return op


_OPS: dict[str, Callable[..., Any]] = {
    "text.re.compile": _re_compile,
    "text.re.match_string": _re_op("match_string", lambda c, s: _search(c, s, 0) is not None),
    "text.re.find_string": _re_op("find_string", _find_string),
    "text.re.find_all_string": _re_op("find_all_string",
                                      lambda c, s: [s[m[0][0]:m[0][1]] for m in _all(c, s)]),
    "text.re.find_string_submatch": _re_op("find_string_submatch", _find_string_submatch),
    "text.re.find_all_string_submatch": _re_op("find_all_string_submatch",
                                               lambda c, s: [_groups(s, m) for m in _all(c, s)]),
    "text.re.find_string_index": _re_op("find_string_index", _find_string_index),
    "text.re.find_all_string_index": _re_op("find_all_string_index", _find_all_string_index),
    "text.re.replace_all_string": _replace_all_string,
    "text.re.split": _split,
    "text.re.num_subexp": _num_subexp,
    "text.re.subexp_names": _subexp_names,
    "text.diff.new": _diff_new,
    "text.diff.compare": _compare,
    "text.diff.summarize": _summarize,
    "text.diff.pretty_text": _pretty(_ANSI, False, "diff:pretty_text"),
    "text.diff.pretty_html": _pretty(_HTML, True, "diff:pretty_html"),
    "text.diff.patch_make": _patch_make,
    "text.diff.patch_apply": _patch_apply,
    "text.splitter.new": _splitter_new,
    "text.splitter.split_text": _split_text,
}
OPS: dict[str, Callable[..., Any]] = {name: _guarded(name, fn) for name, fn in _OPS.items()}
