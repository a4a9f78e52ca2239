"""What every Legato process does at start: the collector's settings (legato/gc_tuning.py) and
its event loop (legato/event_loops.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from legato.event_loops import EVENT_LOOP_ENV, EventLoopSettingError, event_loop_name
from legato.gc_tuning import GC_THRESHOLDS, GC_THRESHOLDS_ENV, GcSettingError, gc_thresholds

PROBE = ("import asyncio, gc; from legato.cli.common import run_main\n"
         "async def main(): return type(asyncio.get_running_loop()).__module__\n"
         "loop = run_main(main()); print(gc.get_threshold(), gc.get_freeze_count() > 1000, loop)")


def _run(code: str, value: str | None, loop: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (GC_THRESHOLDS_ENV, EVENT_LOOP_ENV)}
    if value is not None:
        env[GC_THRESHOLDS_ENV] = value
    if loop is not None:
        env[EVENT_LOOP_ENV] = loop
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_default_and_override_and_cpython_default() -> None:
    assert gc_thresholds({}) == GC_THRESHOLDS
    assert gc_thresholds({GC_THRESHOLDS_ENV: " 5000,5,20 "}) == (5000, 5, 20)
    assert gc_thresholds({GC_THRESHOLDS_ENV: "default"}) is None


@pytest.mark.parametrize("bad", ["1,2", "x,1,1", "0,10,10", "10,-1,10", "1,2,3,4"])
def test_a_bad_value_names_the_variable_and_the_form(bad: str) -> None:
    with pytest.raises(GcSettingError) as e:
        gc_thresholds({GC_THRESHOLDS_ENV: bad})
    assert GC_THRESHOLDS_ENV in str(e.value) and repr(bad) in str(e.value) and "N0,N1,N2" in str(e.value)


def test_a_process_applies_them_and_freezes_what_start_up_made() -> None:
    out = _run(PROBE, None)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{GC_THRESHOLDS} True uvloop"
    kept = _run(PROBE, "default", "asyncio")
    assert kept.stdout.strip() == "(700, 10, 10) True asyncio.unix_events", kept.stderr


def test_event_loop_names() -> None:
    assert event_loop_name({}) == "uvloop"
    assert event_loop_name({EVENT_LOOP_ENV: "asyncio"}) == "asyncio"
    with pytest.raises(EventLoopSettingError, match="LEGATO_EVENT_LOOP='trio' is not an event loop Legato knows"):
        event_loop_name({EVENT_LOOP_ENV: "trio"})


@pytest.mark.parametrize(("name", "value", "says"), [
    (GC_THRESHOLDS_ENV, "lots", "LEGATO_GC_THRESHOLDS='lots' is not three whole numbers"),
    (EVENT_LOOP_ENV, "trio",
     "LEGATO_EVENT_LOOP='trio' is not an event loop Legato knows: choose one of uvloop, asyncio"),
])
def test_the_cli_refuses_a_bad_value_without_a_traceback(name: str, value: str, says: str) -> None:
    out = subprocess.run([sys.executable, "-m", "legato.cli.main", "workflow", "list"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, name: value})
    assert out.returncode != 0
    assert says in out.stderr
    assert "Traceback" not in out.stderr and "never awaited" not in out.stderr
