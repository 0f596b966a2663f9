from __future__ import annotations

import numpy as np
import pytest

from napari_sem_focus.scoring.focus_curve import SCORE_MIN_PROMINENCE, find_best_focus, separate_peaks


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


# A through-focus series -9 ... +9 saved as m01 ... m09, p00 ... p09: file-name order is m01, ..., m09, p00, ...
THROUGH_FOCUS_BY_NAME = [9.0 - 0.7 * k for k in range(1, 10)] + [9.0 - 0.7 * k for k in range(10)]


def test_files_out_of_focus_order_give_two_peaks_and_a_warning():
    peak = find_best_focus(THROUGH_FOCUS_BY_NAME, min_prominence=SCORE_MIN_PROMINENCE)
    assert peak.index == 9  # p00, the true best focus
    assert peak.other_peaks == (0,)  # m01, the sharpest of the other branch
    assert "2 separate peaks (frames 9, 0)" in peak.warning()


def test_one_peaked_curves_give_no_warning():
    rng = np.random.default_rng(1)
    x = np.arange(21.0)
    noisy = 9 - 0.05 * (x - 10.4) ** 2 + rng.normal(0, 0.3, x.size)  # wiggles of a few tenths
    for values in (noisy, [5, 4, 3], [1.0, 2.0, 8.0, 2.0, 1.0], [2.0]):
        peak = find_best_focus(values, min_prominence=SCORE_MIN_PROMINENCE)
        assert peak.other_peaks == () and peak.warning() is None


def test_separate_peaks_thresholds():
    flat = [5.0, 5.4, 5.0, 5.3, 5.0]  # dips of 0.3-0.4 score units
    assert separate_peaks(flat, min_prominence=1.0) == [1]
    assert separate_peaks(flat) == [1, 3]  # relative threshold only (metrics with arbitrary units)
    assert separate_peaks([1.0, np.nan, 4.0, 1.0, 3.0]) == [2, 4]
    assert separate_peaks([1.0, 9.0, 9.0, 1.0]) == [1]  # a flat top (bf16-rounded scores) is one peak
    assert separate_peaks([9.0, 1.0, 9.0]) == [0, 2]
