"""The paper's evaluation helpers: real focus series with a known order come from the data folder's manifest."""

from __future__ import annotations

import cv2
import pytest

from napari_sem_focus.errors import SemFocusError
from napari_sem_focus.simulate import simulate_series
from napari_sem_focus.training.evaluate import real_series, real_series_picks


def test_known_order_series_are_read_from_the_manifest_and_scored(tmp_path):
    frames, _wds = simulate_series("tinball", 5000.0, steps=5, shape=(240, 320), seed=3)
    best = max(range(5), key=lambda i: frames[i].score)
    lines = ["path,series,position,position_unit,expected_rank_sharpest_first,vendor,notes"]
    for i in reversed(range(5)):  # listed out of order: the position orders them
        cv2.imwrite(str(tmp_path / f"f{i}.png"), (frames[i].image * 255).round().astype("uint8"))
        lines.append(f"f{i}.png,tin,{i - 2},um,{1 + abs(i - best)},,")
    lines.append("single.png,,,,,FEI,an image that is no series")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")

    [(name, files, ranks, _)] = real_series(tmp_path)
    assert name == "tin" and [f.name for f in files] == [f"f{i}.png" for i in range(5)]
    assert ranks.index(1.0) == best
    learned = [r for r in real_series_picks(None, tmp_path, [5000.0], mode="structure") if "learned" in r["method"]]
    assert learned[0]["picked"] == best and learned[0]["correct"] and learned[0]["spearman"] > 0.8

    assert real_series(tmp_path / "nowhere") == []
    (tmp_path / "manifest.csv").write_text("path,series,position,expected_rank_sharpest_first\nx.png,s,near,1\n")
    with pytest.raises(SemFocusError, match="line 2"):
        real_series(tmp_path)
