"""The cyclic garbage collector's settings for Legato's long-running processes.

CPython's defaults (a young collection every 700 net allocations of container objects, a full
one every 100 young ones, subject to the 25% rule) suit short scripts. A history engine keeps
tens of thousands of long-lived objects (cached mutable states, their events, timers) and makes
a few hundred short-lived containers per state transition, almost none of them in reference
cycles: with the defaults, `legato load children --total 10000` spent 5.6 of its 18.8 s of CPU
in the collector (30 full collections of about 170 ms each). With (10,000, 10, 10), 40,000
children spent 2.8 s of 67 in it: 430 young collections (2.6 ms each: every one traverses the
objects of the few hundred workflows in flight, which outlive 10,000 allocations), 38 middle and
3 full ones (370 ms each), and found 3,250 objects to free in all. With the thresholds below the
same run spends 1.0 s in it (149 young collections of 3.4 ms, 14 middle of 32 ms, one full),
frees the same objects (627 and 609 children/s against 584 and 607: within the spread);
cycles are still collected, a few seconds later at most (a young collection every 100,000 net
allocations).

`gc.freeze()` moves what exists at start-up (modules, classes, functions: about 100,000
objects) out of the collector's sight, so full collections scan only what the service made."""

from __future__ import annotations

import gc
import os

# (young collection after this many net container allocations, then a middle one every this many
# young ones, then a full one every this many middle ones, when the 25% rule allows).
GC_THRESHOLDS: tuple[int, int, int] = (100_000, 5, 10)
GC_THRESHOLDS_ENV = "LEGATO_GC_THRESHOLDS"  # "N0,N1,N2" to try other values; "default": CPython's


class GcSettingError(ValueError):
    pass


def gc_thresholds(env: dict[str, str] | None = None) -> tuple[int, int, int] | None:
    """The thresholds to use (None: keep CPython's), from LEGATO_GC_THRESHOLDS or the default."""
    text = (os.environ if env is None else env).get(GC_THRESHOLDS_ENV, "").strip()
    if not text:
        return GC_THRESHOLDS
    if text == "default":
        return None
    parts = text.split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or values[0] < 1 or min(values) < 0:
        raise GcSettingError(f"{GC_THRESHOLDS_ENV}={text!r} is not three whole numbers N0,N1,N2 with N0 >= 1 "
                             f"(e.g. {','.join(map(str, GC_THRESHOLDS))}), nor 'default'")
    return values[0], values[1], values[2]


def tune_gc() -> None:
    """Apply the thresholds and freeze what start-up made. Called once per process, before its loop."""
    thresholds = gc_thresholds()
    if thresholds is not None:
        gc.set_threshold(*thresholds)
    gc.freeze()
