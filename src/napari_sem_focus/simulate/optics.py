"""Electron-optical geometry: magnification <-> pixel size, probe size vs defocus, blur kernels.

Formulas (units in names; see docs/simulator.md):

- Horizontal field width ``HFW = W_ref / M`` with ``W_ref = 127 mm`` (the reference display width, as FEI/Thermo).
  The simulator images a frame ``REFERENCE_FRAME_WIDTH_PX = 1024`` pixels wide, so the pixel size is
  ``p = W_ref / (M * 1024)``: 24.8 nm at 5,000x, 248 nm at 500x, 1.24 nm at 100,000x.
- Probe diameter vs defocus: ``d(df) = sqrt(d0^2 + (2 * alpha * df)^2)`` with in-focus probe size ``d0`` (nm)
  and beam convergence semi-angle ``alpha`` (rad): a defocus ``df`` turns the focused spot into a disc of
  diameter ``2 alpha df`` (geometric optics), added in quadrature to the in-focus size.
- The probe profile is a Gaussian whose FWHM is ``d``: sigma_px = d / (2.3548 * p). Real probes have tails;
  ``tail_fraction`` of the current goes into a Gaussian three times wider.
- Astigmatism: two focal lines ``+- astig_um / 2`` around the mean focus, at angle ``astig_angle_deg``: the probe
  is an ellipse with diameters ``d(df + a/2)`` and ``d(df - a/2)`` along the rotated axes.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# The magnification <-> pixel size conversions live with the metadata (the score path uses them); the simulator
# speaks of them as optics too.
from ..io.metadata import REFERENCE_FRAME_WIDTH_PX as REFERENCE_FRAME_WIDTH_PX
from ..io.metadata import REFERENCE_WIDTH_MM as REFERENCE_WIDTH_MM
from ..io.metadata import magnification_from_pixel_size as magnification_from_pixel_size
from ..io.metadata import pixel_size_nm as pixel_size_nm

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548


def probe_diameter_nm(defocus_um: float, d0_nm: float, alpha_mrad: float) -> float:
    """Probe diameter (FWHM, nm) at defocus ``defocus_um`` (µm): sqrt(d0^2 + (2 alpha df)^2)."""
    disc_nm = 2.0 * (alpha_mrad * 1e-3) * (defocus_um * 1e3)
    return math.sqrt(d0_nm**2 + disc_nm**2)


def defocus_for_diameter_um(diameter_nm: float, d0_nm: float, alpha_mrad: float) -> float:
    """Defocus (µm, >= 0) at which the probe reaches ``diameter_nm``; 0 if that is below ``d0_nm``."""
    if diameter_nm <= d0_nm:
        return 0.0
    return math.sqrt(diameter_nm**2 - d0_nm**2) / (2.0 * alpha_mrad * 1e-3) / 1e3


def gauss_blur(image: np.ndarray, sigma_x: float, sigma_y: float | None = None) -> np.ndarray:
    """Gaussian blur (sigmas in px) that stays fast for wide kernels.

    Above 6 px the image is first reduced by an integer factor k = sigma // 3 (area average; at most a
    reduction to 16 px on the short side), blurred with sigma/k, and enlarged back (bilinear): the result differs
    from the direct blur by well under 1 % of the signal range, at a fraction of the cost — also for blurs
    wider than the frame, which a direct kernel would make take seconds.
    """
    sigma_y = sigma_x if sigma_y is None else sigma_y
    if sigma_x < 0.05 and sigma_y < 0.05:
        return image
    rows, cols = image.shape
    k = _reduction_factor(min(sigma_x, sigma_y), (rows, cols))
    if k >= 2:
        small = cv2.resize(image, (cols // k, rows // k), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma_x / k, sigmaY=sigma_y / k, borderType=cv2.BORDER_REFLECT)
        return cv2.resize(small, (cols, rows), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(
        image, (0, 0), sigmaX=max(sigma_x, 0.05), sigmaY=max(sigma_y, 0.05), borderType=cv2.BORDER_REFLECT
    )


def _reduction_factor(sigma_px: float, shape: tuple[int, int]) -> int:
    """Integer down-sampling factor for a blur of ``sigma_px``: sigma // 3, keeping >= 16 px on the short side."""
    return max(1, min(int(sigma_px // 3), min(shape) // 16))


def _rotated_gauss_kernel(sigma_u: float, sigma_v: float, angle_deg: float) -> np.ndarray:
    radius = math.ceil(3.5 * max(sigma_u, sigma_v, 0.5))
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float32)
    t = math.radians(angle_deg)
    u = x * math.cos(t) + y * math.sin(t)
    v = -x * math.sin(t) + y * math.cos(t)
    kernel = np.exp(-0.5 * ((u / max(sigma_u, 0.3)) ** 2 + (v / max(sigma_v, 0.3)) ** 2))
    return (kernel / kernel.sum()).astype(np.float32)


def apply_probe(
    image: np.ndarray,
    diameter_u_px: float,
    diameter_v_px: float | None = None,
    angle_deg: float = 0.0,
    tail_fraction: float = 0.0,
) -> np.ndarray:
    """Blur ``image`` with the probe: a Gaussian of FWHM ``diameter_u_px`` (x ``diameter_v_px`` when astigmatic,
    rotated by ``angle_deg``), plus ``tail_fraction`` of the signal blurred three times wider."""
    su = diameter_u_px / FWHM_PER_SIGMA
    sv = su if diameter_v_px is None else diameter_v_px / FWHM_PER_SIGMA
    image = np.ascontiguousarray(image, dtype=np.float32)
    if abs(su - sv) < 0.05 * max(su, sv, 1e-6) or max(su, sv) < 0.3:
        core = gauss_blur(image, su, sv)
        # the tail (3x wider) = the core blurred by a further sqrt(8) x sigma: Gaussians add in quadrature
        tail = gauss_blur(core, math.sqrt(8) * su, math.sqrt(8) * sv) if tail_fraction > 0 else None
    else:
        # a rotated ellipse, at most a quarter of the frame wide; wide ones on a reduced image as in gauss_blur
        limit = 0.25 * min(image.shape)
        su, sv = min(su, limit), min(sv, limit)
        rows, cols = image.shape
        k = _reduction_factor(min(su, sv), (rows, cols))
        small = cv2.resize(image, (cols // k, rows // k), interpolation=cv2.INTER_AREA) if k > 1 else image
        kernel = _rotated_gauss_kernel(su / k, sv / k, angle_deg)
        core = cv2.filter2D(small, -1, kernel, borderType=cv2.BORDER_REFLECT)
        if k > 1:
            core = cv2.resize(core, (cols, rows), interpolation=cv2.INTER_LINEAR)
        tail = gauss_blur(image, 3 * math.sqrt(su * sv)) if tail_fraction > 0 else None
    if tail is None:
        return core
    return (1.0 - tail_fraction) * core + tail_fraction * tail
