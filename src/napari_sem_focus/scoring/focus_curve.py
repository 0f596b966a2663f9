"""From per-frame focus scores to the best frame and a sub-step best-focus position.

``find_best_focus`` takes one value per frame (a learned score or a classic metric) and the frame positions
(working distance in mm when known, else the frame index) and returns a :class:`FocusPeak`:

- ``index``: the frame with the highest value (the first one on ties);
- ``position``: the vertex of a least-squares parabola through the peak frame and its neighbours
  (up to ``half_window`` frames each side), when the peak is interior and the parabola opens downwards;
  otherwise the peak frame's own position;
- ``position_sigma``: the standard error of that vertex from the fit's covariance (delta method), or half the
  local step when it cannot be estimated (e.g. three points fit exactly; peak at the series edge);
- ``other_peaks``: other frames that are separate peaks of the curve (topographic prominence at least
  ``min_prominence`` and at least 20 % of the curve's range). A focus curve has one peak; several mean the frames
  are not in focus order (a folder sorted by file name, e.g. ``m01 ... m09, p00 ... p09`` for defocus -1 ... -9,
  0 ... 9) or the field holds more than one focal plane, and the fitted position should not be trusted.
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
        other_peaks: indices of other separate peaks (module docstring); empty for a proper focus curve.
    """

    index: int
    value: float
    position: float
    position_sigma: float
    method: str
    other_peaks: tuple[int, ...] = ()

    def warning(self) -> str | None:
        """A sentence for the user when the curve has several separate peaks, else None."""
        if not self.other_peaks:
            return None
        frames = ", ".join(str(i) for i in (self.index, *self.other_peaks))
        return (
            f"the focus curve has {len(self.other_peaks) + 1} separate peaks (frames {frames}): the frames may not "
            "be in focus order (a folder without working distances is ordered by file name) or the field has more "
            "than one focal plane; the fitted best focus is unreliable"
        )


#: Dips in the 0-10 focus score smaller than this (score units) never split a focus curve into separate peaks.
SCORE_MIN_PROMINENCE = 1.0
#: A secondary peak must rise at least this fraction of the curve's range above the valley beside it.
PEAK_PROMINENCE_FRACTION = 0.2


def separate_peaks(values: Sequence[float], min_prominence: float = 0.0) -> list[int]:
    """Local maxima of ``values`` with a topographic prominence of at least ``min_prominence`` and 20 % of the range.

    The prominence of a maximum is its height above the higher of the two lowest points between it and the
    nearest higher value on each side (a side that reaches the series end without a higher value counts only
    when it holds a point: so an edge frame can be a peak). Equal values count as higher on the left, so a flat
    top (equal scores are common after bf16 rounding) is one peak, at its first frame. NaN values are skipped.
    Sorted by value, highest first.
    """
    y = np.asarray(values, dtype=np.float64)
    idx = np.flatnonzero(np.isfinite(y))
    y = y[idx]
    if y.size < 2:
        return [int(i) for i in idx]
    threshold = max(min_prominence, PEAK_PROMINENCE_FRACTION * float(np.ptp(y)))
    peaks = []
    for i in range(y.size):
        bases = []
        for side, higher_mask in ((y[:i][::-1], y[:i][::-1] >= y[i]), (y[i + 1 :], y[i + 1 :] > y[i])):
            higher = np.flatnonzero(higher_mask)
            if higher.size and higher[0] == 0:
                bases = []  # a neighbour is higher: not a local maximum
                break
            stretch = side[: higher[0]] if higher.size else side
            if stretch.size:
                bases.append(float(stretch.min()))
        if bases and y[i] - max(bases) >= threshold:
            peaks.append(i)
    if not peaks:
        peaks = [int(np.argmax(y))]
    return [int(idx[i]) for i in sorted(peaks, key=lambda i: -y[i])]


def find_best_focus(
    values: Sequence[float],
    positions: Sequence[float] | None = None,
    half_window: int = 2,
    min_prominence: float = 0.0,
) -> FocusPeak:
    """Best frame and sub-step focus position of a focus curve (see module docstring).

    ``min_prominence`` is in the unit of ``values`` (e.g. 1.0 for the 0-10 focus score): dips smaller than this
    never split the curve into separate peaks, whatever its range.
    """
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
    others = tuple(i for i in separate_peaks(y, min_prominence) if i != best)
    step = float(np.median(np.abs(np.diff(x)))) if x.size > 1 else 1.0
    fallback = FocusPeak(best, float(y[best]), float(x[best]), step / 2, "frame", others)
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
    return FocusPeak(best, float(y[best]), float(center + vertex * scale), float(sigma), "parabola", others)
