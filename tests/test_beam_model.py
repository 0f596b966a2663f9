"""The beam read from the frames' spectra: blur differences of known Gaussian probes (whatever the specimen), and
the beam model's focus and stigmators fitted to frames of the virtual SEM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_sem_focus.focusing.beam_model import BeamFrame, _map, _map_times, fit_beam, stigmators_from_astigmatism
from napari_sem_focus.focusing.blur_spectrum import blur_difference, frame_spectrum, noise_floor
from napari_sem_focus.simulate.frame import FrameParams
from napari_sem_focus.simulate.virtual_sem import VirtualSEM

from .conftest import shared


def _texture(seed: int = 0, size: int = 512) -> np.ndarray:
    """A specimen with structure at every scale (1/f² power), mean 0.5."""
    rng = np.random.default_rng(seed)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size)))
    field = np.fft.ifft2(np.fft.fft2(rng.normal(size=(size, size))) / np.maximum(k, 1.0 / size)).real
    return 0.5 + 0.15 * field / field.std()


def _blurred(image: np.ndarray, cov: tuple[float, float, float], noise: float, seed: int) -> np.ndarray:
    """``image`` blurred by a Gaussian of covariance (xx, yy, xy) px² (exact, in Fourier space), plus white noise."""
    size = image.shape[0]
    ky, kx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    xx, yy, xy = cov
    otf = np.exp(-2 * math.pi**2 * (xx * kx**2 + yy * ky**2 + 2 * xy * kx * ky))
    out = np.fft.ifft2(np.fft.fft2(image) * otf).real
    return out + noise * np.random.default_rng(seed).normal(size=out.shape)


@pytest.mark.parametrize("cov_a", [(20.0, 20.0, 0.0), (30.0, 10.0, 6.0), (8.0, 14.0, -4.0)])
def test_blur_difference_is_the_difference_of_the_probes_whatever_the_specimen(cov_a):
    cov_b = (4.0, 4.0, 0.0)
    for seed in (0, 1):  # two specimens, the same answer
        specimen = _texture(seed)
        a, b = _blurred(specimen, cov_a, 0.01, seed + 10), _blurred(specimen, cov_b, 0.01, seed + 20)
        spectra = [frame_spectrum(a), frame_spectrum(b)]
        diff = blur_difference(*spectra, noise_floor(spectra))
        assert diff is not None and diff.bins > 200
        expected = np.subtract(cov_a, cov_b)
        assert [diff.xx, diff.yy, diff.xy] == pytest.approx(expected, abs=0.12 * np.abs(expected).max() + 0.5)
        swapped = blur_difference(spectra[1], spectra[0], noise_floor(spectra))
        assert swapped.xx == pytest.approx(-diff.xx, abs=0.5)  # antisymmetric


def test_a_frame_drowned_in_noise_gives_no_blur_difference():
    specimen = _texture(3)
    sharp, lost = _blurred(specimen, (2.0, 2.0, 0.0), 0.01, 1), _blurred(specimen, (900.0, 900.0, 0.0), 0.05, 2)
    spectra = [frame_spectrum(sharp), frame_spectrum(lost)]
    assert blur_difference(*spectra, noise_floor(spectra)) is None


def test_frame_spectrum_bins_a_large_frame_and_refuses_a_stack():
    assert frame_spectrum(np.zeros((2048, 3000), np.uint8)).shape == (512, 512)  # binned by 2, centre cropped
    with pytest.raises(ValueError, match="64 px"):
        frame_spectrum(np.zeros((32, 900)))
    assert frame_spectrum(np.ones((300, 200))).shape == (200, 200)
    with pytest.raises(ValueError, match="2-D"):
        frame_spectrum(np.zeros((3, 64, 64)))


def _sem() -> VirtualSEM:
    frame = FrameParams("particles", 2000.0, electrons_per_px=300, astig_um=60.0, astig_angle_deg=35.0, seed=4)
    return VirtualSEM(frame, true_wd_mm=5.0, shape=(512, 512), stig_gain_um=150.0, stig_rotation_deg=50.0)


def test_fit_beam_finds_focus_and_astigmatism_from_the_working_distance_alone():
    sem = _sem()
    dof = sem.depth_of_field_um()
    wds = [5.0 + k * dof * 1e-3 for k in (-2.0, -0.5, 1.0, 2.5)]  # around the circle of least confusion
    frames = [BeamFrame((wd - 5.0) * 1e3, (0.0, 0.0), frame_spectrum(sem(wd, 0.0, 0.0))) for wd in wds]
    fit = fit_beam(frames)
    assert fit is not None and fit.best_stig is None and fit.stig_map is None
    assert abs(fit.best_wd_um) < dof  # the best working distance, µm from 5 mm
    assert math.hypot(*fit.astig_um) == pytest.approx(60.0, rel=0.35)  # the focal-line separation
    assert fit_beam(frames[:2]) is None  # two working distances cannot say


def test_fit_beam_with_stigmator_probes_points_at_the_stigmators_that_cancel_the_astigmatism():
    sem = _sem()
    dof = sem.depth_of_field_um()
    settings = [(5.0 + k * dof * 1e-3, (0.0, 0.0)) for k in (-2.0, -0.5, 1.0, 2.5)]
    settings += [(5.0 + 2 * dof * 1e-3, (0.25, 0.0)), (5.0 - 2 * dof * 1e-3, (0.0, 0.25))]
    frames = [BeamFrame((wd - 5.0) * 1e3, stig, frame_spectrum(sem(wd, *stig))) for wd, stig in settings]
    fit = fit_beam(frames)
    assert fit is not None and fit.best_stig is not None
    best = np.array(sem.best_stigmator())
    start_error = sem.residual_astigmatism((0.0, 0.0))[0]
    assert sem.residual_astigmatism(fit.best_stig)[0] < 0.4 * start_error  # most of the astigmatism corrected
    assert np.linalg.norm(np.array(fit.best_stig) - best) < 0.4 * np.linalg.norm(best)
    assert fit.stig_map_kind == "rotation"
    # the same frames on an instrument whose stig y turns the other way: a reflection, the mirrored setting
    mirrored = fit_beam([BeamFrame(f.wd_um, (f.stig[0], -f.stig[1]), f.spectrum) for f in frames])
    assert mirrored.stig_map_kind == "reflection"
    assert mirrored.best_stig == pytest.approx((fit.best_stig[0], -fit.best_stig[1]), abs=0.01)


@pytest.mark.parametrize("kind", ["rotation", "reflection"])
def test_a_stigmator_maps_action_is_linear_in_its_gain_and_angle(kind):
    rng = np.random.default_rng(1)
    for _ in range(5):
        (a, b), moved = rng.normal(size=2), rng.normal(size=2)
        assert _map_times(moved, kind) @ [a, b] == pytest.approx(_map(a, b, kind) @ moved)


def test_real_sem_focus_series_blur_grows_away_from_the_sharpest_frame():
    """The DeepFocus series in ../shared/data (real SE frames at working-distance perturbations -5, 0, +5 µm from a
    base 13.3 µm under focus; +5 is the sharpest): the spectra say each frame further from focus is more blurred,
    and the beam model puts the best focus beyond +5 µm."""
    from napari_sem_focus.io.series import load_frame

    stem = "deepfocus/series_0_def-13324_astx-466_asty219_"
    paths = {-5.0: shared(stem + "pert-5000.png"), 0.0: shared(stem + "base.png"), 5.0: shared(stem + "pert5000.png")}
    frames = [BeamFrame(wd, (0.0, 0.0), frame_spectrum(load_frame(path))) for wd, path in sorted(paths.items())]
    noise = noise_floor([f.spectrum for f in frames])
    far, middle = (blur_difference(f.spectrum, frames[2].spectrum, noise) for f in frames[:2])
    assert far.isotropic > middle.isotropic > 5.0  # px² more than the sharpest frame
    fit = fit_beam(frames)
    assert fit is not None and fit.best_wd_um > 5.0


@pytest.mark.parametrize("kind", ["rotation", "reflection"])
def test_stigmators_from_the_astigmatism_measured_at_a_few_settings(kind):
    a, b = 120.0 * math.cos(0.7), 120.0 * math.sin(0.7)  # 120 µm per unit, axes turned by 40°
    g = np.array([[a, -b], [b, a]]) if kind == "rotation" else np.array([[a, b], [b, -a]])
    best = np.array([0.31, -0.47])
    stigs = [np.array([0.0, 0.0]), np.array([0.2, -0.6])]
    astigs = [g @ (best - s) for s in stigs]
    solved, g_fit = stigmators_from_astigmatism(stigs, astigs, kind)
    assert solved == pytest.approx(best, abs=1e-9) and g_fit == pytest.approx(g)
    noisy = [r + np.array([1.0, -1.5]) for r in astigs] + [g @ (best - np.array([0.5, 0.1]))]
    solved, _ = stigmators_from_astigmatism([*stigs, np.array([0.5, 0.1])], noisy, kind)
    assert np.linalg.norm(solved - best) < 0.02  # 1.8 µm of error on 120 µm/unit
    assert stigmators_from_astigmatism(stigs[:1], astigs[:1], kind) is None
    assert stigmators_from_astigmatism([stigs[0], stigs[0]], [astigs[0], astigs[0]], kind) is None
