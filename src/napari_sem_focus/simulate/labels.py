"""The focus score 0-10 with the paper's meaning, as one documented monotone function.

The paper's scale: 10 = perfect focus, 1 = the specimen just becomes recognisable, 0 = noise, white or black.
We define it from three lengths (all in nm):

- ``d``: the effective probe diameter (FWHM) at this defocus; with astigmatism the RMS of the two axes;
- ``r0 = sqrt(d0^2 + (k_px * p)^2)``: the sharpest image the microscope can give at this magnification — the
  in-focus probe ``d0`` combined with the pixel sampling (``k_px = 1.5`` pixels of pixel size ``p``). A blur at or
  below ``r0`` is invisible: score 10. At high magnification ``d0`` spans several pixels and is still perfect;
- ``F``: the specimen's characteristic feature size (tin-ball diameter, grid-bar width...): when the blur reaches
  it, the specimen just becomes recognisable: score 1.

Blur score, log-linear between the two anchors and falling to 0 at ``3 F``::

    s_blur = 10 - 9 * ln(max(d, r0) / r0) / ln(F / r0)      while d <= F
    s_blur = max(0, 1 - ln(d / F) / ln(3))                   beyond

(``F`` is kept at least ``4 r0`` so the scale never degenerates.) So the same blur in *pixels* scores higher at
high magnification, where ``d0`` covers more pixels, than at low magnification.

Visibility factor for noise (Rose criterion): a feature of ``A = (F/p)^2`` pixels with contrast ``C`` imaged with
``n_e`` electrons per pixel has ``SNR = C * sqrt(n_e * A)``; below ``SNR = 5`` it is no longer reliably seen.
``q_noise = clip((SNR - 1) / 4, 0, 1)``. Saturation factor: ``q_sat = 1 - clip((f_sat - 0.2) / 0.8, 0, 1)`` for a
fraction ``f_sat`` of clipped pixels. Final score ``s = s_blur * q_noise * q_sat``, kept as a float (and rounded).
"""

from __future__ import annotations

import math

PIXEL_BLUR_LIMIT_PX = 1.5  # blur below ~1.5 pixels cannot be seen


def resolution_limit_nm(d0_nm: float, pixel_nm: float) -> float:
    """``r0``: the sharpest visible blur (nm) at this pixel size: sqrt(d0^2 + (1.5 p)^2)."""
    return math.hypot(d0_nm, PIXEL_BLUR_LIMIT_PX * pixel_nm)


def blur_score(diameter_nm: float, d0_nm: float, pixel_nm: float, feature_nm: float) -> float:
    """The blur part of the score (module docstring), in [0, 10]."""
    r0 = resolution_limit_nm(d0_nm, pixel_nm)
    feature = max(feature_nm, 4.0 * r0)
    d = max(diameter_nm, r0)
    if d <= feature:
        return 10.0 - 9.0 * math.log(d / r0) / math.log(feature / r0)
    return max(0.0, 1.0 - math.log(d / feature) / math.log(3.0))


def diameter_for_blur_score(score: float, d0_nm: float, pixel_nm: float, feature_nm: float) -> float:
    """Inverse of :func:`blur_score`: the probe diameter (nm) that gives ``score`` (0 < score <= 10)."""
    r0 = resolution_limit_nm(d0_nm, pixel_nm)
    feature = max(feature_nm, 4.0 * r0)
    if score >= 1.0:
        return r0 * math.exp((10.0 - score) / 9.0 * math.log(feature / r0))
    return feature * math.exp((1.0 - score) * math.log(3.0))


def noise_factor(electrons_per_px: float, contrast: float, feature_px: float) -> float:
    """Rose-criterion visibility of features of ``feature_px`` pixels: clip((SNR - 1) / 4, 0, 1)."""
    snr = contrast * math.sqrt(max(electrons_per_px, 0.0) * feature_px**2)
    return min(1.0, max(0.0, (snr - 1.0) / 4.0))


def saturation_factor(saturated_fraction: float) -> float:
    """1 below 20 % clipped pixels, falling linearly to 0 at 100 %."""
    return 1.0 - min(1.0, max(0.0, (saturated_fraction - 0.2) / 0.8))


def focus_score(
    diameter_nm: float,
    d0_nm: float,
    pixel_nm: float,
    feature_nm: float,
    electrons_per_px: float = math.inf,
    contrast: float = 1.0,
    saturated_fraction: float = 0.0,
) -> float:
    """The full score in [0, 10] (module docstring)."""
    feature_px = feature_nm / pixel_nm
    q_noise = 1.0 if math.isinf(electrons_per_px) else noise_factor(electrons_per_px, contrast, feature_px)
    return blur_score(diameter_nm, d0_nm, pixel_nm, feature_nm) * q_noise * saturation_factor(saturated_fraction)
