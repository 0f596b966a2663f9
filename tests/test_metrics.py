"""Each classic metric's known behaviour, on synthetic blur and on the real through-focus series."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_sem_focus.io.series import read_series
from napari_sem_focus.scoring.metrics import METRICS, compute_metrics

from .conftest import SHARED_DATA, shared, texture


@pytest.mark.parametrize("name", list(METRICS))
def test_blur_lowers_every_metric(name):
    values = [METRICS[name](texture(blur_px=b)) for b in (0.0, 1.0, 2.0, 4.0)]
    assert all(a > b for a, b in itertools.pairwise(values)), values


@pytest.mark.parametrize("name", list(METRICS))
def test_constant_image_scores_zero(name):
    assert METRICS[name](np.full((64, 64), 0.5, np.float32)) == pytest.approx(0.0, abs=1e-9)


def test_formulas_match_definitions():
    img = texture()
    mu = img.mean()
    assert METRICS["absolute_variance"](img) == pytest.approx(np.abs(img - mu).mean(), rel=1e-5)
    assert METRICS["normalized_variance"](img) == pytest.approx(img.var() / mu, rel=1e-4)
    assert METRICS["brenner"](img) == pytest.approx(((img[:, 2:] - img[:, :-2]) ** 2).mean(), rel=1e-4)
    assert METRICS["normalized_variance"](np.zeros((32, 32), np.float32)) == 0.0


def test_compute_metrics_unknown_name():
    with pytest.raises(KeyError, match="unknown metric"):
        compute_metrics(texture(), ["sharpness"])


def _optical_series():
    """The smear through-focus series in physical order (-9 ... +9)."""
    shared("optical_through_focus")
    names = [f"smear_defocus_m{n:02d}.png" for n in range(9, 0, -1)]
    names += [f"smear_defocus_p{n:02d}.png" for n in range(10)]
    return read_series([SHARED_DATA / "optical_through_focus" / n for n in names], common_crop=True)


@pytest.mark.parametrize("name", ["normalized_variance", "variance_of_laplacian", "tenengrad", "brenner"])
def test_peak_at_defocus_zero_on_optical_series(name):
    series = _optical_series()
    values = [METRICS[name](f) for f in series.frames()]
    assert int(np.argmax(values)) == 9  # defocus 0
    # falls on both sides over the near-focus range (|n| <= 4)
    assert all(values[i] < values[i + 1] for i in range(5, 9))
    assert all(values[i] > values[i + 1] for i in range(9, 13))


def test_laplacian_is_fooled_by_noise_on_deepfocus_and_smoothing_fixes_it():
    """The documented failure: raw variance of the Laplacian ranks the DeepFocus series backwards."""
    folder = shared("deepfocus")
    stem = "series_0_def-13324_astx-466_asty219_"
    order = [folder / f"{stem}{s}.png" for s in ("pert5000", "base", "pert-5000")]  # sharpest first
    frames = list(read_series(order).frames())
    raw = [METRICS["variance_of_laplacian"](f) for f in frames]
    smooth = [METRICS["tenengrad"](f, smooth_sigma_px=1.0) for f in frames]
    assert raw[0] < raw[2] < raw[1]  # backwards: the sharpest frame ranks last
    assert smooth[0] > smooth[1] > smooth[2]  # a 1 px pre-filter restores the true order
