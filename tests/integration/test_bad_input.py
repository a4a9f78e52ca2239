"""Bad input: a clear one-paragraph error and a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import BASIC
from tests.integration.procs import free_port, legato


def assert_clean_error(p, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert p.returncode not in (0, None), p.stdout
    assert "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert n in p.stderr, p.stderr
    assert p.stderr.startswith("error:") or "Error" in p.stderr, p.stderr


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: '1.0'\nnamespace: x\nentries:\n  - name: a\n    kind: [unclosed\n")
    p = legato("run", "--entries", str(bad), "x:a")
    assert_clean_error(p, "bad.yaml", "line")


def test_unknown_entry() -> None:
    p = legato("run", "--entries", str(BASIC), "basic:nope")
    assert_clean_error(p, "basic:nope")


def test_lua_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text(
        "version: '1.0'\nnamespace: x\nentries:\n"
        "  - {name: w, kind: temporal.worker, task_queue: q}\n"
        "  - {name: a, kind: workflow.lua, source: file://a.lua, method: main,"
        " meta: {temporal: {workflow: {worker: x:w}}}}\n")
    (tmp_path / "a.lua").write_text("local function main()\n  return 1 +\nend\nreturn main\n")
    p = legato("run", "--entries", str(tmp_path), "x:a")
    assert_clean_error(p, "a.lua:3")


def test_invalid_json_input() -> None:
    p = legato("run", "--entries", str(BASIC), "basic:hello", "--input", "{not json")
    assert_clean_error(p, "--input", "JSON")


def test_server_not_reachable() -> None:
    port = free_port()
    p = legato("workflow", "describe", "--id", "x", "--address", f"127.0.0.1:{port}", timeout=30)
    assert_clean_error(p, f"127.0.0.1:{port}")


def test_missing_entries_path(tmp_path: Path) -> None:
    p = legato("run", "--entries", str(tmp_path / "nowhere"), "x:a")
    assert_clean_error(p, "nowhere")
