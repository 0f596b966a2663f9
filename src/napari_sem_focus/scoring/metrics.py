"""Classic focus measures (the paper's baselines), vectorised with OpenCV/NumPy.

Every function takes a 2D grey image (ideally float32 in [0, 1], as :meth:`FocusSeries.frame` returns) and
returns one float: larger means sharper. They are "classic" in that they know nothing about noise: on real,
noisy secondary-electron frames the high-frequency ones (Laplacian, Tenengrad, Brenner) rise with shot noise and
can rank a noisy defocused frame above a clean focused one. ``smooth_sigma_px`` (a Gaussian pre-filter, sigma in
pixels) is the usual remedy; 0 (default) gives the textbook formula.

Notation: I(x, y) image, N pixel count, mu = mean(I).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import cv2
import numpy as np


def _as_float(image: np.ndarray, smooth_sigma_px: float = 0.0) -> np.ndarray:
    img = image if image.dtype == np.float32 else np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"focus metrics need a 2D grey image, got shape {img.shape}")
    if smooth_sigma_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), smooth_sigma_px)
    return img


def absolute_variance(image: np.ndarray, smooth_sigma_px: float = 0.0) -> float:
    """Absolute variance, F = (1/N) sum |I - mu|  (Groen, Young & Ligthart 1985; the paper's baseline)."""
    img = _as_float(image, smooth_sigma_px)
    return float(np.abs(img - img.mean()).mean())


def normalized_variance(image: np.ndarray, smooth_sigma_px: float = 0.0) -> float:
    """Normalised variance, F = (1/(N mu)) sum (I - mu)^2  (Groen et al. 1985). 0 for a black image."""
    img = _as_float(image, smooth_sigma_px)
    mu = float(img.mean())
    return float(img.var()) / mu if mu > 0 else 0.0


def variance_of_laplacian(image: np.ndarray, smooth_sigma_px: float = 0.0) -> float:
    """Variance of the Laplacian, F = Var(L * I) with the 3x3 kernel [[0,1,0],[1,-4,1],[0,1,0]]
    (Pech-Pacheco et al. 2000)."""
    img = _as_float(image, smooth_sigma_px)
    return float(cv2.Laplacian(img, cv2.CV_32F, ksize=1).var())


def tenengrad(image: np.ndarray, smooth_sigma_px: float = 0.0) -> float:
    """Tenengrad, F = (1/N) sum (Gx^2 + Gy^2) with 3x3 Sobel gradients, no threshold
    (Tenenbaum 1970; Krotkov 1987)."""
    img = _as_float(image, smooth_sigma_px)
    energy = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    np.multiply(energy, energy, out=energy)  # in place: fewer full-size temporaries
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    energy += np.multiply(gy, gy, out=gy)
    return float(energy.mean())


def brenner(image: np.ndarray, smooth_sigma_px: float = 0.0) -> float:
    """Brenner gradient, F = (1/N) sum (I(x+2, y) - I(x, y))^2 along rows (Brenner et al. 1976)."""
    img = _as_float(image, smooth_sigma_px)
    diff = img[:, 2:] - img[:, :-2]
    return float(np.einsum("ij,ij->", diff, diff)) / diff.size


#: Name -> function, in the order tables print them.
METRICS: dict[str, Callable[..., float]] = {
    "absolute_variance": absolute_variance,
    "normalized_variance": normalized_variance,
    "variance_of_laplacian": variance_of_laplacian,
    "tenengrad": tenengrad,
    "brenner": brenner,
}


def compute_metrics(
    image: np.ndarray, names: Iterable[str] | None = None, smooth_sigma_px: float = 0.0
) -> dict[str, float]:
    """Several metrics of one image: ``{name: value}`` for ``names`` (default: all of :data:`METRICS`)."""
    chosen = list(METRICS) if names is None else list(names)
    unknown = [n for n in chosen if n not in METRICS]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    img = _as_float(image, smooth_sigma_px)
    return {name: METRICS[name](img) for name in chosen}
