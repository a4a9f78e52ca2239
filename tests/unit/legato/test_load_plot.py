"""`legato load`'s plot: a run against a server elsewhere has no store file, so no store panel."""

from __future__ import annotations

import struct
from pathlib import Path

from legato.load.report import LoadReport, Sample, write_plot

DPI = 80  # write_plot's


def _height_px(png: Path) -> int:
    (height,) = struct.unpack(">I", png.read_bytes()[20:24])  # the IHDR chunk: width, then height
    return int(height)


def _report(store_bytes: int | None) -> LoadReport:
    r = LoadReport("children", "load-children-x", "embedded", {}, 10)
    r.series = [Sample(t, 5 * t, 0, 3, 5.0, 10.0, 20.0, {"load": 50 << 20}, store_bytes) for t in range(3)]
    return r


def test_the_store_panel_is_drawn_only_when_there_is_a_store_file(tmp_path: Path) -> None:
    with_store, without = tmp_path / "with.png", tmp_path / "without.png"
    write_plot(_report(1 << 20), str(with_store))
    write_plot(_report(None), str(without))
    assert _height_px(with_store) == 14 * DPI  # five panels
    assert _height_px(without) == int(11.5 * DPI)  # four
