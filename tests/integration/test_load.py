"""`legato load`: each scenario at a small size on the embedded default (a SQLite file), its
report and plot; stop and resume; failures counted; the pending-children limit refused up front;
--processes once."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.integration.procs import LEGATO, legato

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run_load(tmp: Path, *args: str, expect: int = 0) -> dict[str, Any]:
    report, plot = tmp / "report.json", tmp / "plot.png"
    r = legato("load", *args, "--report", str(report), "--plot", str(plot), "--interval", "0.2s", timeout=120)
    assert r.returncode == expect, r.stdout + r.stderr
    data = json.loads(report.read_text())
    assert plot.read_bytes().startswith(PNG_SIGNATURE) and plot.stat().st_size > 1000
    assert data["series"], data
    point = data["series"][-1]
    for key in ("t", "completed", "failed", "open", "completions_per_s", "p50_ms", "p99_ms", "rss_bytes",
                "store_bytes"):
        assert key in point, point
    assert point["rss_bytes"].get("load", 0) > 0, point
    return data


def _statuses(db: Path) -> dict[tuple[str, str], int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as c:
        return {(t, s): n for t, s, n in c.execute(
            "SELECT workflow_type, status, COUNT(*) FROM visibility GROUP BY workflow_type, status")}


def test_children_tree_completes_with_continue_as_new(tmp_path: Path) -> None:
    db = tmp_path / "load.db"
    data = _run_load(tmp_path, "children", "--total", "40", "--fanout", "10", "--window", "4", "--per-run", "6",
                     "--db", str(db))
    assert data["completed"] == 40 and data["failed"] == 0 and data["failures"] == [], data
    assert data["finished"] and data["p99_ms"] >= data["p50_ms"] > 0
    assert data["store_bytes"] > 0 and data["series"][-1]["store_bytes"] > 0
    counts = _statuses(db)
    assert counts[("load:leaf", "COMPLETED")] == 40
    assert counts[("load:parent", "COMPLETED")] == 4 and counts[("load:parent", "CONTINUED_AS_NEW")] == 4, counts


def test_children_count_comes_from_the_root_when_retention_deletes_the_leaves(tmp_path: Path) -> None:
    """history.retention 1ms: leaves are deleted as soon as they close (so visibility no longer
    counts them); the report's counts are the root's."""
    config = tmp_path / "retention.yaml"
    config.write_text("history:\n  retention: 1ms\n")
    db = tmp_path / "load.db"
    data = _run_load(tmp_path, "children", "--total", "40", "--fanout", "10", "--window", "4", "--per-run", "6",
                     "--db", str(db), "--config", str(config))
    assert data["completed"] == 40 and data["failed"] == 0 and data["finished"], data


def test_mix_completes(tmp_path: Path) -> None:
    db = tmp_path / "load.db"
    data = _run_load(tmp_path, "mix", "--total", "6", "--concurrency", "3", "--sleep", "50ms", "--db", str(db))
    assert data["completed"] == 6 and data["failed"] == 0 and data["finished"], data
    counts = _statuses(db)
    assert counts[("load:mix", "COMPLETED")] == 6 and counts[("load:mix", "CONTINUED_AS_NEW")] == 6
    assert counts[("load:leaf", "COMPLETED")] == 6
    assert not list(tmp_path.glob("*.load-state.json"))  # a finished run leaves no state behind


def test_timers_complete(tmp_path: Path) -> None:
    data = _run_load(tmp_path, "timers", "--total", "4", "--timers", "20", "--max-timer", "200ms", "--rate", "20")
    assert data["completed"] == 4 and data["failed"] == 0 and data["finished"], data


def test_idle_holds_them_open_then_wakes_them(tmp_path: Path) -> None:
    data = _run_load(tmp_path, "idle", "--total", "20", "--hold", "0.5s")
    assert data["started"] == 20 and data["completed"] == 20 and data["failed"] == 0, data
    assert max(s["open"] for s in data["series"]) == 20  # sampled while all were open
    assert data["peak_rss_bytes"]["load"] > 0
    assert data["cpu_seconds"]["load"] > 0


def test_children_stop_and_resume_finish_exactly_the_total(tmp_path: Path) -> None:
    db = tmp_path / "load.db"
    r = legato("load", "children", "--total", "60", "--fanout", "20", "--window", "3", "--concurrency", "2",
               "--db", str(db), "--stop-after", "10", "--interval", "0.2s", "--output", "json", timeout=120)
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert not first["finished"] and first["stopped"] == "stop-after" and first["completed"] < 60, first
    root = first["run_id"]
    assert first["resume_command"] == f"legato load children --resume {root} --db {db}"
    r = legato("load", "children", "--resume", root, "--db", str(db), "--output", "json", "--interval", "0.2s",
               timeout=120)
    assert r.returncode == 0, r.stderr
    final = json.loads(r.stdout)
    assert final["finished"] and final["resumed"] and final["completed"] == 60 and final["failed"] == 0, final
    assert _statuses(db)[("load:leaf", "COMPLETED")] == 60


def test_mix_stopped_by_sigint_resumes(tmp_path: Path) -> None:
    db = tmp_path / "load.db"
    p = subprocess.Popen([LEGATO, "load", "mix", "--total", "16", "--concurrency", "2", "--sleep", "50ms",
                          "--db", str(db), "--interval", "0.2s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            if db.exists() and _statuses(db).get(("load:mix", "COMPLETED"), 0) >= 3:
                break
            time.sleep(0.1)  # polling a condition, not a synchronisation
        else:
            raise AssertionError(f"no completions within 60 s (exit {p.poll()})")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, out + err
    assert "stopped (signal); to continue: legato load mix --resume load-mix-" in out, out
    command = out.split("to continue: ", 1)[1].split()
    assert command[:4] == ["legato", "load", "mix", "--resume"]
    r = legato(*command[1:], "--output", "json", timeout=120)
    assert r.returncode == 0, r.stderr
    final = json.loads(r.stdout)
    assert final["finished"] and final["completed"] == 16 and final["failed"] == 0, final
    assert _statuses(db)[("load:mix", "COMPLETED")] == 16


def test_failures_are_counted_and_listed(tmp_path: Path) -> None:
    data = _run_load(tmp_path, "children", "--total", "12", "--fanout", "6", "--child-work", "fail", expect=1)
    assert data["failed"] == 12 and data["completed"] == 0, data
    assert len(data["failures"]) == 12
    assert all(f["id"].startswith(data["run_id"] + "-p") and "failed on purpose" in f["message"]
               for f in data["failures"]), data["failures"]


def test_window_above_the_pending_children_limit_is_refused(tmp_path: Path) -> None:
    r = legato("load", "children", "--total", "10", "--window", "2001", timeout=60)
    assert r.returncode == 3 and "limits.max_pending_children (2000)" in r.stderr, r.stderr
    config = tmp_path / "legato.yaml"
    config.write_text("limits:\n  max_pending_children: 5\n")
    r = legato("load", "children", "--total", "10", "--window", "6", "--config", str(config), timeout=60)
    assert r.returncode == 3 and "--window 6 is above limits.max_pending_children (5)" in r.stderr, r.stderr


def test_resume_embedded_needs_the_db() -> None:
    r = legato("load", "children", "--resume", "load-children-x", timeout=60)
    assert r.returncode == 3 and "--resume needs --db" in r.stderr, r.stderr


def test_children_with_processes(tmp_path: Path) -> None:
    data = _run_load(tmp_path, "children", "--processes", "--total", "12", "--fanout", "6")
    assert data["completed"] == 12 and data["failed"] == 0 and data["finished"], data
    assert data["mode"].startswith("server + worker processes")
    assert data["peak_rss_bytes"]["server"] > 0 and data["peak_rss_bytes"]["worker"] > 0, data["peak_rss_bytes"]
    assert data["cpu_seconds"]["server"] > 0 and data["cpu_seconds"]["worker"] > 0, data["cpu_seconds"]
