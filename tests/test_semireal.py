"""Semi-real focus series: real textures degraded with the simulator's probe and detector, in a known order."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from napari_sem_focus.scoring.structure import noise_sigma
from napari_sem_focus.simulate.semireal import (
    FocusStep,
    SemiRealSettings,
    clean_source,
    degrade,
    feature_size_px,
    semireal_series,
)

from .conftest import texture


def _discs(diameter: int, size: int = 384, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 0.2, np.float32)
    for _ in range(int(size * size / diameter**2 * 0.3)):
        y, x = rng.integers(0, size, 2)
        cv2.circle(img, (int(x), int(y)), diameter // 2, 0.8, -1)
    return img


@pytest.mark.parametrize("diameter", [12, 24])
def test_feature_size_of_discs_is_their_diameter(diameter):
    assert feature_size_px(_discs(diameter)) == pytest.approx(diameter, rel=0.3)


def test_clean_source_removes_the_sources_own_noise():
    sharp = _discs(20)
    noisy = np.clip(sharp + np.random.default_rng(1).normal(0, 0.08, sharp.shape), 0, 1).astype(np.float32)
    cleaned = clean_source(noisy)
    assert noise_sigma(cleaned) < 0.3 * noise_sigma(noisy)
    assert np.abs(cleaned - sharp).mean() < 0.5 * np.abs(noisy - sharp).mean()


def test_focus_steps_order_and_astigmatism():
    round_probe = SemiRealSettings(steps=5, step_px=2.0).focus_steps()
    assert [s.step for s in round_probe] == [-2, -1, 0, 1, 2]
    assert [s.blur_u_px for s in round_probe] == [4.0, 2.0, 0.0, 2.0, 4.0]
    astig = SemiRealSettings(steps=5, step_px=2.0, astig_steps=1.0).focus_steps()
    middle = astig[2]
    assert middle.blur_u_px == middle.blur_v_px == 1.0  # circle of least confusion
    assert astig[1].blur_u_px != astig[1].blur_v_px  # a line focus on either side
    diameters = [s.effective_diameter_px for s in astig]
    assert int(np.argmin(diameters)) == 2 and diameters[0] == pytest.approx(diameters[4])


def test_semireal_series_blurs_and_labels_in_order():
    clean = texture((240, 320), seed=4)
    settings = SemiRealSettings(steps=7, step_px=3.0, electrons_per_px=1e4, seed=2)
    frames = semireal_series(clean, pixel_nm=20.0, settings=settings)
    assert len(frames) == 7 and all(f.image.dtype == np.uint8 and f.image.shape == (240, 320) for f in frames)
    labels = [f.score for f in frames]
    assert int(np.argmax(labels)) == 3 and labels[0] < labels[2] < labels[3]
    detail = [float(cv2.Laplacian(f.image.astype(np.float32), cv2.CV_32F).var()) for f in frames]
    assert int(np.argmax(detail)) == 3  # at high dose the in-focus frame has the most detail
    again = semireal_series(clean, pixel_nm=20.0, settings=settings)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, again, strict=True))  # seeded


def test_degrade_keeps_black_black_and_the_grey_scale():
    clean = np.full((64, 64), 0.5, np.float32)
    clean[:, :32] = 0.0  # a black hole: no electrons, no signal
    settings = SemiRealSettings(electrons_per_px=50.0, amplifier_sigma=0.0, line_gain=0.0, bandwidth_px=0.0)
    image = degrade(clean, FocusStep(0, 0.0, 0.0), settings, np.random.default_rng(0)).astype(np.float32) / 255
    assert image[:, :24].mean() < 0.02
    assert image[:, 40:].mean() == pytest.approx(0.5, abs=0.05)
