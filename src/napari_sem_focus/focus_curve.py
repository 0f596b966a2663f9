"""From per-frame focus scores to the best frame and a sub-step best-focus position.

``find_best_focus`` takes one value per frame (a learned score or a classic metric) and the frame positions
(working distance in mm when known, else the frame index) and returns a :class:`FocusPeak`:

- ``index``: the frame with the highest value (the first one on ties);
- ``position``: the vertex of a least-squares parabola through the peak frame and its neighbours
  (up to ``half_window`` frames each side), when the peak is interior and the parabola opens downwards;
  otherwise the peak frame's own position;
- ``position_sigma``: the standard error of that vertex from the fit's covariance (delta method), or half the
  local step when it cannot be estimated (e.g. three points fit exactly; peak at the series edge).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FocusPeak:
    """Best frame and sub-step best focus of a focus curve.

    Attributes:
        index: index of the best frame.
        value: its score/metric value.
        position: fitted best-focus position in the unit of ``positions`` (mm of WD, or frame index).
        position_sigma: uncertainty (1 sigma) of ``position``, same unit.
        method: "parabola" or "frame" (no fit possible).
    """

    index: int
    value: float
    position: float
    position_sigma: float
    method: str


def find_best_focus(
    values: Sequence[float], positions: Sequence[float] | None = None, half_window: int = 2
) -> FocusPeak:
    """Best frame and sub-step focus position of a focus curve (see module docstring)."""
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("need at least one focus value")
    x = np.arange(y.size, dtype=np.float64) if positions is None else np.asarray(positions, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"{y.size} values but {x.size} positions")
    finite = np.isfinite(y)
    if not finite.any():
        raise ValueError("all focus values are NaN")
    best = int(np.nanargmax(np.where(finite, y, -np.inf)))
    step = float(np.median(np.abs(np.diff(x)))) if x.size > 1 else 1.0
    fallback = FocusPeak(best, float(y[best]), float(x[best]), step / 2, "frame")
    lo, hi = best - half_window, best + half_window + 1
    if lo < 0 or hi > y.size:  # the peak is at an edge of the series: a fit would extrapolate
        lo, hi = max(0, lo), min(y.size, hi)
        if best in (0, y.size - 1):
            return fallback
    xs, ys = x[lo:hi], y[lo:hi]
    keep = np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if xs.size < 3 or np.ptp(xs) == 0:
        return fallback
    center, scale = xs.mean(), np.ptp(xs)
    u = (xs - center) / scale
    if xs.size > 3:
        coef, cov = np.polyfit(u, ys, 2, cov=True)
    else:
        coef, cov = np.polyfit(u, ys, 2), None
    a, b, _ = coef
    if a >= 0:  # not a maximum
        return fallback
    vertex = -b / (2 * a)
    if not u.min() <= vertex <= u.max():
        return fallback
    sigma = step / 2
    if cov is not None and np.all(np.isfinite(cov)):
        grad = np.array([b / (2 * a * a), -1 / (2 * a)])  # d(vertex)/d(a, b)
        var = float(grad @ cov[:2, :2] @ grad)
        if var > 0:
            sigma = float(np.sqrt(var)) * scale
    return FocusPeak(best, float(y[best]), float(center + vertex * scale), sigma, "parabola")
