"""The `text` module (issue 15): RE2 regular expressions with Go's regexp semantics, diff-match-patch
diffs and patches, and the recursive and markdown splitters, in activities and workflows (a workflow
also checks that a full replay computes the same), with errors as `nil, err`."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from tests.unit.worker.helpers import PROBE_MAIN, PROBE_MODES, make_app, probe_in
from worker import text_ops
from worker.activity import ActivityRunner
from worker.entries import Registry

MODULES = "[time, text, errors]"
PROBE = """\
local function out(v, e) return {value = v, err = e and {kind = e:kind(), message = e:message()}} end
local CASES = {
    regexp = function()
        local re = text.regexp.compile("([a-z]+)=([0-9]+)")
        local named = text.regexp.compile("(?P<key>\\\\w+)@(?P<host>[\\\\w.]+)")
        local digits = text.regexp.compile("[0-9]+")
        local star = text.regexp.compile("a*")
        local comma = text.regexp.compile(",")
        return {
            match = re:match_string("x a=1"), no_match = re:match_string("nothing"),
            find = digits:find_string("abc123def"), find_none = digits:find_string("abc") == nil,
            all = digits:find_all_string("a1b22c333"), all_none = #digits:find_all_string("abc"),
            sub = re:find_string_submatch("x a=1 b=2"), sub_none = re:find_string_submatch("zz") == nil,
            all_sub = re:find_all_string_submatch("a=1 bb=22"),
            index = digits:find_string_index("abc123"), index_none = digits:find_string_index("abc") == nil,
            all_index = digits:find_all_string_index("a1b2c3"),
            all_index_none = digits:find_all_string_index("abc") == nil,
            replace = digits:replace_all_string("a1b22", "X"),
            replace_groups = re:replace_all_string("a=1 b=2", "$2:$1 ${1}x $$"),
            replace_named = named:replace_all_string("joe@example.com", "${host}/${key}"),
            star_all = star:find_all_string("baaab"), star_replace = star:replace_all_string("baaab", "-"),
            split = comma:split("a,b,c", -1), split_two = comma:split("a,b,c", 2), split_default = comma:split("a,b"),
            split_empty = comma:split("", -1), split_zero = #comma:split("a,b", 0),
            split_star = star:split("baaac", -1),
            num = re:num_subexp(), names = named:subexp_names(), pattern = named:string(),
            email = named:find_string_submatch("mail user@example.com now"),
            utf8 = text.regexp.compile("."):find_all_string("añ€"),
            binary = digits:find_all_string("\\255\\0011\\254 22"),
            binary_index = digits:find_string_index("\\255\\254 7"),
        }
    end,
    regexp_bad = function(a)
        local re, err = text.regexp.compile(a.pattern)
        return out(re, err)
    end,
    regexp_args = function()
        local re = text.regexp.compile("x")
        local r = {}
        r.find = out(re:find_string(42))
        r.dot = out(re.find_string("x"))
        r.split = out(re:split("a", "b"))
        r.compile = out(text.regexp.compile(nil))
        r.repl = out(re:replace_all_string("x", {}))
        return r
    end,
    pathological = function(a)
        local re = text.regexp.compile("(a+)+$")
        local s = string.rep("a", a.n) .. "!"
        local evil = text.regexp.compile("(x+x+)+y")
        return {re:match_string(s), evil:match_string(string.rep("x", a.n))}
    end,
    bounds = function(a)
        local many = out(text.regexp.compile(""):find_all_string(string.rep("a", a.n)))
        local s = text.splitter.recursive({chunk_size = 100000, chunk_overlap = 99999})
        local cut = text.splitter.recursive({chunk_size = 1000, chunk_overlap = 0})
        local blob = cut:split_text(string.rep("x", a.n * 10))
        return {many = many, overlap = out(s:split_text(string.rep("x", a.n * 10))), blob = #blob,
                blob_size = #blob[1]}
    end,
    diff = function()
        local d = text.diff.new()
        local diffs = d:compare("hello world", "hello there")
        local t1 = "The quick brown fox jumps over the lazy dog"
        local t2 = "The quick red fox jumps over the lazy cat"
        local patches = d:patch_make(t1, t2)
        local applied, ok = d:patch_apply(patches, t1)
        local fuzzy, fuzzy_ok = d:patch_apply(patches, "Oh. The quick brown fox jumps over the lazy dog")
        local miss, miss_ok = d:patch_apply(patches, "something else entirely, nothing alike")
        return {diffs = diffs, summary = d:summarize(diffs), html = d:pretty_html(diffs),
                ansi = d:pretty_text(diffs), patches = patches, applied = applied, ok = ok,
                fuzzy = fuzzy, fuzzy_ok = fuzzy_ok, miss_ok = miss_ok,
                html_escape = d:pretty_html({{operation = "insert", text = "<b>&"}}),
                unicode = d:summarize(d:compare("añb", "a€b")),
                same = #d:compare("same", "same")}
    end,
    diff_options = function()
        local d = text.diff.new({diff_timeout = 0, diff_edit_cost = 6, match_threshold = 0.3, match_distance = 100,
                                 patch_delete_threshold = 0.4, patch_margin = 2})
        local huge = text.diff.new({diff_timeout = math.huge})
        return {diffs = d:compare("abc", "abd"), huge = #huge:compare("abc", "abd")}
    end,
    diff_bad = function()
        local d = text.diff.new()
        return {
            opts = out(text.diff.new(5)), unknown = out(text.diff.new({bogus = 1})),
            range = out(text.diff.new({match_threshold = 2})), kind = out(text.diff.new({patch_margin = "x"})),
            margin = out(text.diff.new({patch_margin = 1e12})), whole = out(text.diff.new({match_distance = 1.5})),
            compare = out(d:compare("a", nil)), summarize = out(d:summarize("x")),
            op = out(d:pretty_html({{operation = "swap", text = "x"}})),
            patch = out(d:patch_apply({{text = "not a patch"}}, "abc")),
            dot = out(d.compare("a", "b")),
        }
    end,
    diff_big = function(a)
        local d = text.diff.new({diff_timeout = a.timeout})
        local x, y = {}, {}
        for i = 1, a.n do x[i] = string.char(97 + (i * 7) % 26); y[i] = string.char(97 + (i * 11) % 26) end
        local t1, t2 = table.concat(x), table.concat(y)
        local diffs = d:compare(t1, t2)
        local patches = d:patch_make(t1, t2)
        local back, ok = d:patch_apply(patches, t1)
        return {n = #diffs, back = back == t2, ok = ok, summary = d:summarize(diffs)}
    end,
    recursive = function(a)
        local s = text.splitter.recursive(a.opts)
        return {chunks = s:split_text(a.text)}
    end,
    markdown = function(a)
        local s = text.splitter.markdown(a.opts)
        return {chunks = s:split_text(a.text)}
    end,
    batch = function()
        local s = text.splitter.recursive({chunk_size = 10, chunk_overlap = 0})
        local pages = {{content = "one two three four", metadata = {page = 1}},
                       {content = "five six", metadata = {page = 2}}}
        return {chunks = s:split_batch(pages), bad = out(s:split_batch({{content = 5}}))}
    end,
    splitter_bad = function()
        local s = text.splitter.recursive()
        return {
            size = out(text.splitter.recursive({chunk_size = 0})),
            overlap = out(text.splitter.recursive({chunk_size = 10, chunk_overlap = 10})),
            unknown = out(text.splitter.markdown({separators = {"x"}})),
            flag = out(text.splitter.markdown({code_blocks = "yes"})),
            seps = out(text.splitter.recursive({separators = {}})),
            text = out(s:split_text(42)), batch = out(s:split_batch("x")), dot = out(s.split_text("x")),
            opts = out(text.splitter.recursive("big")),
        }
    end,
}
""" + PROBE_MAIN
MODES = PROBE_MODES


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    tmp = tmp_path_factory.mktemp("text")
    return make_app(tmp, workflows={"wprobe": PROBE}, functions={"probe": PROBE},
                    modules=MODULES[:-1] + ", workflow]", function_modules=MODULES[:-1] + ", activity]")



def probe(mode: str, reg: Registry, runner: ActivityRunner, case: str, args: dict[str, Any] | None = None) -> Any:
    return probe_in(mode, reg, runner, [case, args or {}])


@pytest.mark.parametrize("mode", MODES)
def test_regexp_known_answers(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    r = probe(mode, reg, runner, "regexp")
    assert r["match"] is True and r["no_match"] is False
    assert r["find"] == "123" and r["find_none"] is True
    assert r["all"] == ["1", "22", "333"] and r["all_none"] == 0
    assert r["sub"] == ["a=1", "a", "1"] and r["sub_none"] is True
    assert r["all_sub"] == [["a=1", "a", "1"], ["bb=22", "bb", "22"]]
    assert r["index"] == [4, 6] and r["index_none"] is True  # 1-based, inclusive
    assert r["all_index"] == [[2, 2], [4, 4], [6, 6]] and r["all_index_none"] is True
    assert r["replace"] == "aXbX"
    # Go's template: $1x is the group named "1x" (none: empty); ${1}x is group 1 then x; $$ is $
    assert r["replace_groups"] == "1:a ax $ 2:b bx $"
    assert r["replace_named"] == "example.com/joe"
    # Go: an empty match right after a match does not count
    assert r["star_all"] == ["", "aaa", ""] and r["star_replace"] == "-b-b-"
    assert r["split"] == ["a", "b", "c"] and r["split_two"] == ["a", "b,c"] and r["split_default"] == ["a", "b"]
    assert r["split_empty"] == [""] and r["split_zero"] == 0
    assert r["split_star"] == ["b", "c"]
    assert r["num"] == 2 and r["names"] == ["", "key", "host"] and r["pattern"] == "(?P<key>\\w+)@(?P<host>[\\w.]+)"
    assert r["email"] == ["user@example.com", "user", "example.com"]
    assert r["utf8"] == ["a", "ñ", "€"]
    assert r["binary"] == ["1", "22"] and r["binary_index"] == [4, 4]  # bytes: Lua's string indexes


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("pattern", "says"), [("(a)\\1", "invalid escape sequence"),
                                               ("(?=x)", "invalid perl operator"),
                                               ("(unclosed", "missing )")])
def test_regexp_refuses_what_re2_cannot_do(mode: str, pattern: str, says: str, reg: Registry,
                                           runner: ActivityRunner) -> None:
    r = probe(mode, reg, runner, "regexp_bad", {"pattern": pattern})
    assert r.get("value") is None and r["err"]["kind"] == "Invalid"
    assert r["err"]["message"].startswith("text.regexp.compile: invalid pattern") and says in r["err"]["message"]


@pytest.mark.parametrize("mode", MODES)
def test_regexp_bad_arguments(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    r = probe(mode, reg, runner, "regexp_args")
    assert r["find"]["err"] == {"kind": "Invalid", "message": "re:find_string: expected a string, got number"}
    assert r["dot"]["err"]["message"] == "re:find_string: call it as a method (with a colon)"
    assert r["split"]["err"]["message"].startswith("re:split: n must be a whole number")
    assert r["compile"]["err"]["message"] == "text.regexp.compile: expected a string, got nil"
    assert r["repl"]["err"]["kind"] == "Invalid"


@pytest.mark.parametrize("mode", MODES)
def test_pathological_pattern_is_linear(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    started = time.monotonic()
    r = probe(mode, reg, runner, "pathological", {"n": 100_000})
    assert r == [False, False]
    assert time.monotonic() - started < 5  # a backtracking engine would not end


@pytest.mark.parametrize("mode", MODES)
def test_bounds_are_errors_not_short_answers(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    started = time.monotonic()
    r = probe(mode, reg, runner, "bounds", {"n": 200_000})
    assert r["many"]["err"] == {"kind": "Invalid", "message": f"text.regexp: more than {text_ops.MAX_MATCHES} matches"}
    assert r["overlap"]["err"]["message"].startswith("splitter:split_text: the chunks would be more than")
    assert r["blob"] == 2000 and r["blob_size"] == 1000  # no separator in 2,000,000 characters: cut at 1000
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("mode", MODES)
def test_diff_compare_summarize_pretty_and_patches(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    r = probe(mode, reg, runner, "diff")
    assert r["diffs"] == [{"operation": "equal", "text": "hello "}, {"operation": "delete", "text": "world"},
                          {"operation": "insert", "text": "there"}]
    assert r["summary"] == {"equals": 6, "deletions": 5, "insertions": 5}
    assert r["html"] == "hello <del>world</del><ins>there</ins>"
    assert r["ansi"] == "hello \x1b[31mworld\x1b[0m\x1b[32mthere\x1b[0m"
    assert r["html_escape"] == "<ins>&lt;b&gt;&amp;</ins>"
    assert all(set(p) == {"text"} and p["text"].startswith("@@ -") for p in r["patches"])
    assert r["applied"] == "The quick red fox jumps over the lazy cat" and r["ok"] is True
    assert r["fuzzy"] == "Oh. The quick red fox jumps over the lazy cat" and r["fuzzy_ok"] is True
    assert r["miss_ok"] is False
    assert r["unicode"] == {"equals": 2, "deletions": 1, "insertions": 1}  # characters, not bytes
    assert r["same"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_diff_options(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    r = probe(mode, reg, runner, "diff_options")
    assert [d["operation"] for d in r["diffs"]] == ["equal", "delete", "insert"]
    assert r["huge"] == 3  # a timeout of math.huge is the step budget's maximum


@pytest.mark.parametrize("mode", MODES)
def test_diff_bad_arguments(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    r = probe(mode, reg, runner, "diff_bad")
    for key in r:
        assert r[key].get("value") is None and r[key]["err"]["kind"] == "Invalid", (key, r[key])
    assert r["opts"]["err"]["message"] == "text.diff.new: options must be a table, got number"
    assert r["unknown"]["err"]["message"].startswith("text.diff.new: unknown option 'bogus'")
    assert r["compare"]["err"]["message"] == "diff:compare text2: expected a string, got nil"
    assert r["margin"]["err"]["message"] == "text.diff.new: patch_margin must be between 0 and 64, got 1e+12"
    assert r["range"]["err"]["message"] == "text.diff.new: match_threshold must be between 0 and 1, got 2"
    assert r["whole"]["err"]["message"] == "text.diff.new: match_distance must be a whole number"
    assert r["op"]["err"]["message"].startswith("diff:pretty_html: operation must be equal, delete or insert")
    assert r["patch"]["err"]["message"].startswith("diff:patch_apply: not a patch")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("timeout", [0, 0.1])
def test_diff_of_large_unlike_texts_is_bounded_and_round_trips(mode: str, timeout: float, reg: Registry,
                                                               runner: ActivityRunner) -> None:
    """Two unlike 20,000-character texts: the diff stops at its step budget (the same on every
    machine: the workflow's replay agrees), still transforms one text into the other, and ends fast."""
    started = time.monotonic()
    r = probe(mode, reg, runner, "diff_big", {"n": 20_000, "timeout": timeout})
    assert r["back"] is True and r["ok"] is True
    assert r["summary"]["equals"] + r["summary"]["deletions"] == 20_000
    assert r["summary"]["equals"] + r["summary"]["insertions"] == 20_000
    assert time.monotonic() - started < 10


def test_diff_budget_is_deterministic() -> None:
    a = "".join(chr(97 + (i * 7) % 26) for i in range(5000))
    b = "".join(chr(97 + (i * 13) % 26) for i in range(5000))
    first = text_ops._differ(None).diff_main(a, b, False)
    assert text_ops._differ(None).diff_main(a, b, False) == first
    assert "".join(t for op, t in first if op <= 0) == a and "".join(t for op, t in first if op >= 0) == b


LOREM = ("Alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu.\n\n"
         "Nu xi omicron pi rho sigma tau upsilon phi chi psi omega.\nOne two three four five six seven eight.")


@pytest.mark.parametrize("mode", MODES)
def test_recursive_splitter_sizes_and_overlap(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    r = probe(mode, reg, runner, "recursive", {"opts": {"chunk_size": 30, "chunk_overlap": 10}, "text": LOREM})
    chunks = r["chunks"]
    assert len(chunks) > 4 and all(len(c) <= 30 for c in chunks)
    # every word is kept, in order; adjacent chunks of a paragraph share words (the overlap)
    words = LOREM.split()
    joined = " ".join(chunks).split()
    assert [w for w in words if w in joined] == words
    shared = [set(a.split()) & set(b.split()) for a, b in itertools.pairwise(chunks)]
    assert sum(1 for s in shared if s) >= 2
    assert all(sum(len(w) + 1 for w in s) - 1 <= 10 for s in shared if s)
    none = probe(mode, reg, runner, "recursive", {"opts": {"chunk_size": 30, "chunk_overlap": 0}, "text": LOREM})
    assert " ".join(none["chunks"]).split() == words  # no overlap: each word once


@pytest.mark.parametrize("mode", MODES)
def test_recursive_splitter_separators(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    r = probe(mode, reg, runner, "recursive", {"opts": {"chunk_size": 5, "chunk_overlap": 0, "separators": ["|"]},
                                               "text": "ab|cd|efghijk|l"})
    assert r["chunks"] == ["ab|cd", "efghijk", "l"]  # a piece with no smaller separator stays whole
    r = probe(mode, reg, runner, "recursive", {"opts": {"chunk_size": 6, "chunk_overlap": 0, "separators": ["|"],
                                                        "keep_separator": True}, "text": "ab|cd|ef"})
    assert r["chunks"] == ["ab|cd", "|ef"]
    r = probe(mode, reg, runner, "recursive", {"opts": {"chunk_size": 4, "chunk_overlap": 0}, "text": "abcdefghij"})
    assert r["chunks"] == ["abcd", "efgh", "ij"]
    r = probe(mode, reg, runner, "recursive", {"opts": {}, "text": "short text"})
    assert r["chunks"] == ["short text"]  # defaults: 512 and 100


MARKDOWN = """\
# Guide

Intro paragraph about the guide.

## Install

Run the installer. It takes a while to finish.

```sh
make install
make test
make clean
```

## Table

| name | value |
| ---- | ----- |
| a    | 1     |
| b    | 2     |
| c    | 3     |

See [the docs][docs] for more.

[docs]: https://example.com/docs
"""


@pytest.mark.parametrize("mode", MODES)
def test_markdown_splitter(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    opts = {"chunk_size": 60, "chunk_overlap": 0, "heading_hierarchy": True, "code_blocks": True,
            "join_table_rows": True, "reference_links": True}
    chunks = probe(mode, reg, runner, "markdown", {"opts": opts, "text": MARKDOWN})["chunks"]
    code = [c for c in chunks if "```sh" in c]
    # the code block is longer than a chunk: split at lines, each part fenced, under its headings
    assert len(code) >= 2 and all(c.startswith("# Guide\n## Install\n\n```sh") and c.endswith("```") for c in code)
    assert "make install" in code[0] and "make clean" in code[-1]
    tables = [c for c in chunks if "| name | value |" in c]
    assert len(tables) >= 2 and all(c.startswith("# Guide\n## Table\n\n| name") for c in tables)
    assert all("| ---- | ----- |" in c for c in tables)  # the header repeats in each part
    assert [r for c in tables for r in ("| a", "| b", "| c") if r in c] == ["| a", "| b", "| c"]
    links = [c for c in chunks if "[the docs][docs]" in c]
    assert links and links[0].endswith("[docs]: https://example.com/docs")
    assert chunks[0] == "# Guide\n\nIntro paragraph about the guide." or chunks[0].startswith("# Guide")
    # without the options: plain blocks, never over the size
    plain = probe(mode, reg, runner, "markdown", {"opts": {"chunk_size": 60, "chunk_overlap": 0},
                                                  "text": MARKDOWN})["chunks"]
    assert all(len(c) <= 60 for c in plain)
    assert "Run the installer." in " ".join(plain)


@pytest.mark.parametrize("mode", MODES)
def test_split_batch_keeps_metadata(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    r = probe(mode, reg, runner, "batch")
    assert r["chunks"] == [{"content": "one two", "metadata": {"page": 1}},
                           {"content": "three four", "metadata": {"page": 1}},
                           {"content": "five six", "metadata": {"page": 2}}]
    assert r["bad"]["err"] == {"kind": "Invalid",
                               "message": "page 1: splitter:split_text: expected a string, got number"}


@pytest.mark.parametrize("mode", MODES)
def test_splitter_bad_arguments(mode: str, reg: Registry, runner: ActivityRunner) -> None:
    r = probe(mode, reg, runner, "splitter_bad")
    for key in r:
        assert r[key].get("value") is None and r[key]["err"]["kind"] == "Invalid", (key, r[key])
    assert r["size"]["err"]["message"] == "text.splitter.recursive: chunk_size must be between 1 and 1000000, got 0"
    assert r["overlap"]["err"]["message"] == "text.splitter.recursive: chunk_overlap must be between 0 and 9, got 10"
    assert r["unknown"]["err"]["message"].startswith("text.splitter.markdown: unknown option 'separators'")
    assert r["text"]["err"]["message"] == "splitter:split_text: expected a string, got number"


def test_fuzzy_patch_matching_is_bounded() -> None:
    """A patch whose text is not where it was is searched for (Bitap) within a budget of cells:
    with options that would scan a whole 1,000,000-character text per patch, it ends at once."""
    d = text_ops._differ(None)
    d.Match_Distance, d.Match_Threshold = 10**9, 1.0
    patches = d.patch_make("x" * 20 + "1" + "y" * 20, "x" * 20 + "2" + "y" * 20) * 50
    started = time.monotonic()
    result, applied = d.patch_apply(patches, "ab" * 500_000)
    assert not any(applied) and result == "ab" * 500_000
    assert time.monotonic() - started < 2
    # under the default options, fuzzy patches still apply
    d = text_ops._differ(None)
    patches = d.patch_make("the quick brown fox", "the quick red fox")
    assert d.patch_apply(patches, "so the quick brown fox") == ("so the quick red fox", [True])
