"""Find the burned-in data bar at the bottom of an SEM frame, so that it is not scored.

Most SEMs burn an information bar (magnification, HV, scale bar...) into the bottom rows of a saved image:
FEI/Thermo ~68-79 rows below the ``ResolutionY`` image rows, TESCAN an "info strip" (``ImageStripSize``),
Zeiss a data zone *inside* the 768 image rows. Its text is sharp whatever the focus, so a focus score that
includes it is wrong. When the metadata states the height we use it; otherwise :func:`detect_databar_rows`
looks at the pixels.

Detection rule (documented, deterministic): a data bar is a block of rows at the bottom whose background is one
grey value. Walking up from the last row, a row is *flat* when at least ``flat_fraction`` of its pixels equal
the bar's background value (the most common value of the bottom rows). Text lines inside the bar break the
flatness for a few rows; up to ``max_gap`` non-flat rows are bridged. The bar ends at the last flat row before a
longer gap; up to three nearly uniform border lines (>= 90 % one value) directly above it are
included. A block shorter than
``min_rows`` or taller than ``max_fraction`` of the frame is not a bar (returns 0).
"""

from __future__ import annotations

import numpy as np


def _row_background_fraction(frame: np.ndarray, value: float) -> np.ndarray:
    """Fraction of each row's pixels equal to ``value``."""
    return (frame == value).mean(axis=1)


def _row_mode_fraction(row: np.ndarray) -> float:
    """Fraction of a row's pixels equal to its most common value."""
    _, counts = np.unique(row, return_counts=True)
    return float(counts.max()) / row.size


def _bar_background(frame: np.ndarray, rows: int) -> float:
    """Most common value among the bottom ``rows`` rows (the candidate bar's background)."""
    values, counts = np.unique(frame[-rows:], return_counts=True)
    return values[np.argmax(counts)]


def detect_databar_rows(
    frame: np.ndarray,
    flat_fraction: float = 0.45,
    max_gap: int = 4,
    min_rows: int = 8,
    max_fraction: float = 0.25,
) -> int:
    """Number of data-bar rows at the bottom of ``frame`` found from its pixels (0 if none).

    Args:
        frame: one 2D grey frame in its stored dtype (exact values matter: do not rescale before).
        flat_fraction: fraction of a row's pixels equal to the bar background for the row to count as bar.
        max_gap: most consecutive non-flat rows (text lines, a noisy last row) bridged inside a bar.
        min_rows: smallest bar height accepted.
        max_fraction: largest bar height accepted, as a fraction of the frame height.
    """
    if frame.ndim != 2 or frame.shape[0] < 4 * min_rows or np.issubdtype(frame.dtype, np.floating):
        return 0
    height = frame.shape[0]
    background = _bar_background(frame, max(min_rows, height // 50))
    flat = _row_background_fraction(frame, background) >= flat_fraction
    top, gap = height, 0
    for row in range(height - 1, int(height * (1 - max_fraction)) - 1, -1):
        if flat[row]:
            top, gap = row, 0
        else:
            gap += 1
            if gap > max_gap:
                break
    else:  # flat all the way up: a uniform image or a large flat area, not a bar
        return 0
    for _ in range(3):  # frame lines drawn around the bar: nearly uniform rows of any value
        if top > 0 and _row_mode_fraction(frame[top - 1]) >= 0.9:
            top -= 1
    rows = height - top
    return rows if min_rows <= rows <= height * max_fraction else 0
