from __future__ import annotations

import numpy as np
import pytest

from napari_sem_focus.focus_curve import find_best_focus


def test_parabola_vertex_between_frames():
    x = np.linspace(4.9, 5.1, 11)  # working distance, mm
    y = 8 - 400 * (x - 5.013) ** 2
    peak = find_best_focus(y, x)
    assert peak.index == 6
    assert peak.method == "parabola"
    assert peak.position == pytest.approx(5.013, abs=1e-6)
    assert peak.position_sigma < 1e-3


def test_noisy_curve_gives_finite_uncertainty():
    rng = np.random.default_rng(0)
    x = np.arange(15.0)
    y = 9 - 0.2 * (x - 7.3) ** 2 + rng.normal(0, 0.3, x.size)
    peak = find_best_focus(y, x)
    assert abs(peak.position - 7.3) < 1.0
    assert 0 < peak.position_sigma < 2


def test_edge_peak_and_single_frame_fall_back_to_frame():
    assert find_best_focus([5, 4, 3]).method == "frame"
    single = find_best_focus([2.0])
    assert (single.index, single.position, single.method) == (0, 0.0, "frame")


def test_nan_values_skipped_and_bad_input():
    assert find_best_focus([1.0, np.nan, 3.0, 2.0]).index == 2
    with pytest.raises(ValueError, match="NaN"):
        find_best_focus([np.nan, np.nan])
    with pytest.raises(ValueError, match="positions"):
        find_best_focus([1, 2], [0.0])
