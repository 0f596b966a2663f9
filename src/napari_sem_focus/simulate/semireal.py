"""Semi-real focus series: real in-focus SEM images degraded with the simulator's probe and detector.

Public real focus series are scarce; in-focus real images are not. A real image already carries its own
probe blur and shot noise; this module turns it into a focus series with a known order:

1. **Clean source** (:func:`clean_source`): the source's own shot noise is removed with non-local means
   (OpenCV, filter strength ``1.0 x`` the image's noise sigma estimated by Immerkaer's method), so that each frame
   gets fresh noise of a chosen dose instead of a blurred copy of the source's noise. Its resolution is taken as
   ``SOURCE_RESOLUTION_PX`` (FWHM, px): the sharpest the microscope delivered.
2. **Defocus** (:func:`degrade`): the probe of focus step ``k`` (of ``step_px`` FWHM per step, px) is
   ``d_u,v = |k -/+ a/2| * step_px`` along two astigmatic axes (``a`` = focal-line separation in steps) — the
   extra blur on top of the source's own, added in quadrature as Gaussians do (``optics.apply_probe``).
3. **Detector** (:mod:`.detector`): Poisson shot noise of ``electrons_per_px`` on average (yield = the clean
   image's grey value, so black stays black), amplifier noise (relative std ``amplifier_sigma`` of the mean),
   bandwidth blur and per-line gain, then the source's grey scale again, clipped to [0, 1], 8 bits.

The true order is the effective probe diameter ``sqrt(d_src^2 + (d_u^2 + d_v^2) / 2)``: frame ``k = 0`` is the
sharpest and frames ``+-k`` tie. :func:`semireal_score` gives each frame a label with the simulator's score
function (:mod:`.labels`), with the feature size of the texture estimated from its autocorrelation
(:func:`feature_size_px`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..scoring.structure import noise_sigma
from . import detector, labels, optics

#: Assumed resolution (probe FWHM, px) of a cleaned in-focus source image.
SOURCE_RESOLUTION_PX = 1.5


def clean_source(image: np.ndarray) -> np.ndarray:
    """The source's own shot noise removed (non-local means, strength = its noise sigma); float32 [0, 1]."""
    img = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    strength = max(2.0, 255.0 * noise_sigma(img))
    u8 = np.round(img * 255.0).astype(np.uint8)
    out = cv2.fastNlMeansDenoising(u8, None, h=strength, templateWindowSize=7, searchWindowSize=21)
    return out.astype(np.float32) / np.float32(255.0)


def feature_size_px(clean: np.ndarray) -> float:
    """Characteristic feature size (px) of a texture: the lag at which its radially averaged
    autocorrelation falls to 1/2, times 2.6 (calibrated on random discs: discs of diameter 16-32 px give 16-31 px)."""
    img = np.asarray(clean, np.float64)
    img = img - img.mean()
    rows, cols = img.shape
    spectrum = np.abs(np.fft.rfft2(img, s=(2 * rows, 2 * cols))) ** 2
    acf = np.fft.irfft2(spectrum, s=(2 * rows, 2 * cols))
    acf = np.fft.fftshift(acf)
    cy, cx = rows, cols
    if acf[cy, cx] <= 0:
        return float("nan")
    y, x = np.indices(acf.shape)
    r = np.hypot(y - cy, x - cx).astype(np.int64)
    limit = min(rows, cols) // 2
    radial = np.bincount(r.ravel(), acf.ravel(), minlength=limit)[:limit] / np.maximum(
        np.bincount(r.ravel(), minlength=limit)[:limit], 1
    )
    radial /= radial[0]
    below = np.nonzero(radial < 0.5)[0]
    lag = float(below[0]) if below.size else float(limit)
    return 2.6 * lag


@dataclass(frozen=True)
class FocusStep:
    """The probe of one frame of a semi-real series (lengths in pixels of the source).

    Attributes:
        step: focus step k (0 = in focus).
        blur_u_px, blur_v_px: extra probe FWHM along the two astigmatic axes.
        angle_deg: orientation of the astigmatism.
    """

    step: float
    blur_u_px: float
    blur_v_px: float
    angle_deg: float = 0.0

    @property
    def axis_diameters_px(self) -> tuple[float, float]:
        """Probe FWHM (px) along the two astigmatic axes, source resolution included."""
        base = SOURCE_RESOLUTION_PX**2
        return math.sqrt(base + self.blur_u_px**2), math.sqrt(base + self.blur_v_px**2)

    @property
    def effective_diameter_px(self) -> float:
        """RMS probe FWHM (px), source resolution included: the quantity that orders the series."""
        return math.sqrt(SOURCE_RESOLUTION_PX**2 + (self.blur_u_px**2 + self.blur_v_px**2) / 2)


@dataclass(frozen=True)
class SemiRealSettings:
    """How a semi-real series is made from one clean source.

    Attributes:
        steps: frames (odd: the middle one is in focus).
        step_px: extra probe FWHM per focus step (px).
        astig_steps: focal-line separation, in focus steps (0 = round probe).
        astig_angle_deg: orientation of the astigmatism.
        electrons_per_px: mean detected electrons per pixel.
        excess_noise: detector excess-noise factor.
        amplifier_sigma: amplifier noise, relative to the mean signal.
        bandwidth_px, line_gain: scan artefacts (see :mod:`.detector`).
        seed: seed of the noise.
    """

    steps: int = 11
    step_px: float = 2.5
    astig_steps: float = 0.0
    astig_angle_deg: float = 30.0
    electrons_per_px: float = 30.0
    excess_noise: float = 1.5
    amplifier_sigma: float = 0.01
    bandwidth_px: float = 0.3
    line_gain: float = 0.01
    seed: int = 0

    def focus_steps(self) -> list[FocusStep]:
        half = (self.steps - 1) / 2
        out = []
        for i in range(self.steps):
            k = i - half
            a = self.astig_steps / 2
            out.append(FocusStep(k, abs(k + a) * self.step_px, abs(k - a) * self.step_px, self.astig_angle_deg))
        return out


def degrade(clean: np.ndarray, probe: FocusStep, settings: SemiRealSettings, rng: np.random.Generator) -> np.ndarray:
    """One frame: ``clean`` (float32 [0, 1]) seen through ``probe`` and the detector of ``settings`` (uint8)."""
    blurred = optics.apply_probe(clean, probe.blur_u_px, probe.blur_v_px, probe.angle_deg)
    mean = max(float(blurred.mean()), 1e-3)
    signal = detector.shot_noise(
        rng, np.maximum(blurred, np.float32(1e-4)), settings.electrons_per_px, settings.excess_noise
    )
    if settings.amplifier_sigma > 0:
        signal += np.float32(settings.amplifier_sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    signal = detector.scan_artefacts(rng, signal, settings.bandwidth_px, settings.line_gain, 0.0, 0.0)
    out = np.clip(signal * np.float32(mean), 0.0, 1.0)
    return np.round(out * 255.0).astype(np.uint8)


def semireal_score(
    probe: FocusStep,
    pixel_nm: float,
    feature_px: float,
    electrons_per_px: float,
    contrast: float,
    saturated: float = 0.0,
) -> float:
    """The simulator's score (:func:`.labels.focus_score`) of one semi-real frame."""
    return labels.focus_score(
        probe.effective_diameter_px * pixel_nm,
        SOURCE_RESOLUTION_PX * pixel_nm,
        pixel_nm,
        feature_px * pixel_nm,
        electrons_per_px,
        contrast,
        saturated,
    )


@dataclass
class SemiRealFrame:
    """A semi-real frame (uint8) with its probe and label."""

    image: np.ndarray
    probe: FocusStep
    score: float


def semireal_series(
    clean: np.ndarray, pixel_nm: float, settings: SemiRealSettings, feature_px: float | None = None
) -> list[SemiRealFrame]:
    """A focus series of ``settings.steps`` frames from a clean in-focus source (see module docstring)."""
    feature = feature_size_px(clean) if feature_px is None else feature_px
    contrast = float(clean.std() / max(float(clean.mean()), 1e-6))
    frames = []
    for i, probe in enumerate(settings.focus_steps()):
        rng = np.random.default_rng([settings.seed, i])
        image = degrade(clean, probe, settings, rng)
        # black holes and white edges of a real source are signal, not display clipping: no saturation factor
        score = semireal_score(probe, pixel_nm, feature, settings.electrons_per_px, contrast, 0.0)
        frames.append(SemiRealFrame(image, probe, score))
    return frames
