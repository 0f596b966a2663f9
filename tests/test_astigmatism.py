"""Astigmatism seen in the image: a frame's direction of blur, and the focus pair's anisotropy that points along the
beam's residual astigmatism and vanishes at the right stigmators (what the focus + stigmation search steers by)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sem_focus.focusing.astigmatism import focus_pair_anisotropy, image_anisotropy
from napari_sem_focus.simulate.frame import FrameParams
from napari_sem_focus.simulate.virtual_sem import VirtualSEM


def _stripes(angle_deg: float) -> np.ndarray:
    """Stripes whose brightness changes along ``angle_deg`` (0: along x)."""
    y, x = np.mgrid[0:128, 0:128].astype(np.float32)
    t = np.radians(angle_deg)
    return 0.5 + 0.4 * np.sin((x * np.cos(t) + y * np.sin(t)) * 2 * np.pi / 12)


@pytest.mark.parametrize(("angle", "expected"), [(0, (1, 0)), (90, (-1, 0)), (45, (0, 1)), (135, (0, -1))])
def test_anisotropy_of_stripes_is_the_direction_across_them(angle, expected):
    assert image_anisotropy(_stripes(angle)) == pytest.approx(expected, abs=0.05)


def test_anisotropy_of_a_flat_or_isotropic_frame_is_zero():
    assert image_anisotropy(np.full((64, 64), 0.3)) == (0.0, 0.0)
    rng = np.random.default_rng(0)
    assert np.hypot(*image_anisotropy(rng.random((256, 256)))) < 0.05  # white noise has no direction


def test_the_focus_pair_points_along_the_astigmatism_and_vanishes_when_stigmated():
    """Frames 3 depths of field under and over the circle of least confusion of a beam with 8 µm of astigmatism:
    their anisotropies differ along the astigmatism's direction (opposite for the perpendicular astigmatism); at
    the stigmators that cancel it the difference falls to the noise."""
    pair = {}
    for angle in (30.0, 120.0):
        frame = FrameParams("tinball", 5000.0, electrons_per_px=300, astig_um=8.0, astig_angle_deg=angle, seed=1)
        sem = VirtualSEM(frame, true_wd_mm=5.0, shape=(256, 256), stig_gain_um=10.0, stig_rotation_deg=20.0)
        dz = 3 * sem.depth_of_field_um() * 1e-3

        def difference(stig, sem=sem, dz=dz):
            return focus_pair_anisotropy(image_anisotropy(sem(5.0 - dz, *stig)), image_anisotropy(sem(5.0 + dz, *stig)))

        pair[angle] = difference((0.0, 0.0))
        stigmated = difference(sem.best_stigmator())
        assert np.linalg.norm(stigmated) < 0.3 * np.linalg.norm(pair[angle])
    assert np.linalg.norm(pair[30.0]) > 0.1
    cosine = pair[30.0] @ pair[120.0] / (np.linalg.norm(pair[30.0]) * np.linalg.norm(pair[120.0]))
    assert cosine < -0.8  # the perpendicular astigmatism turns the pair's anisotropy round
