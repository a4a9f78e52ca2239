"""The collector's settings every Legato process applies at start (legato/gc_tuning.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from legato.gc_tuning import GC_THRESHOLDS, GC_THRESHOLDS_ENV, GcSettingError, gc_thresholds

PROBE = ("import gc; from legato.cli.common import process_start; process_start(); "
         "print(gc.get_threshold(), gc.get_freeze_count() > 1000)")


def _run(code: str, value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != GC_THRESHOLDS_ENV}
    if value is not None:
        env[GC_THRESHOLDS_ENV] = value
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
    assert out.stdout.strip() == f"{GC_THRESHOLDS} True"
    kept = _run(PROBE, "default")
    assert kept.stdout.strip() == "(700, 10, 10) True", kept.stderr


def test_the_cli_refuses_a_bad_value_without_a_traceback() -> None:
    out = subprocess.run([sys.executable, "-m", "legato.cli.main", "workflow", "list"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, GC_THRESHOLDS_ENV: "lots"})
    assert out.returncode != 0
    assert "LEGATO_GC_THRESHOLDS='lots' is not three whole numbers" in out.stderr
    assert "Traceback" not in out.stderr
