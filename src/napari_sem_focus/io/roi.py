"""Regions of interest: the rectangle of a frame that is scored (x, y, width, height in pixels of the raw frame)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidImageError


def clip_roi(
    roi: Sequence[float], image: tuple[int, int], min_shape: tuple[int, int], above_databar: bool = False
) -> tuple[tuple[int, int, int, int], list[str]]:
    """``roi`` = (x, y, width, height) in pixels rounded and clipped to an ``image`` of (rows, cols) — the part of
    the frame above its data bar (``above_databar``: say so in messages). Returns the region and the notes for
    the user (one when it was clipped).

    A region that lies wholly outside, or whose clipped size is below ``min_shape`` (rows, cols), raises
    :class:`~napari_sem_focus.errors.InvalidImageError`.
    """
    if len(roi) != 4:
        raise InvalidImageError(f"a region of interest is X Y WIDTH HEIGHT (4 numbers), got {list(roi)}")
    x, y, w, h = (float(v) for v in roi)
    if w <= 0 or h <= 0:
        raise InvalidImageError(f"the region of interest must have a positive size, got {w:g}x{h:g} px")
    rows, cols = image
    x0, y0 = max(0, round(x)), max(0, round(y))
    x1, y1 = min(cols, round(x + w)), min(rows, round(y + h))
    if x1 <= x0 or y1 <= y0:
        raise InvalidImageError(
            f"the region of interest (x {x:g}, y {y:g}, {w:g}x{h:g} px) lies outside the {cols}x{rows} px image"
            + (" above the data bar" if above_databar else "")
        )
    notes = []
    if (x0, y0, x1, y1) != (round(x), round(y), round(x + w), round(y + h)):
        notes.append(f"region of interest clipped to the image: x {x0}, y {y0}, {x1 - x0}x{y1 - y0} px")
    if y1 - y0 < min_shape[0] or x1 - x0 < min_shape[1]:
        clipped = " (clipped to the image)" if notes else ""
        raise InvalidImageError(
            f"the region of interest is {x1 - x0}x{y1 - y0} px{clipped}, smaller than the "
            f"{min_shape[1]}x{min_shape[0]} px the score needs: draw a larger region"
        )
    return (x0, y0, x1 - x0, y1 - y0), notes


def roi_from_vertices(vertices: Any) -> tuple[float, float, float, float]:
    """The region of interest (x, y, width, height; pixels) bounding a shape's (row, col) vertices, e.g. a
    rectangle drawn in napari. Pixel ``i`` spans ``[i - 0.5, i + 0.5]`` in napari's data coordinates, so a
    rectangle from (-0.5, -0.5) to (239.5, 319.5) is the 320x240 region at x 0, y 0."""
    points = np.asarray(vertices, dtype=float).reshape(-1, 2)
    if points.size == 0 or not np.isfinite(points).all():
        raise InvalidImageError("the region of interest has no (finite) vertices")
    (r0, c0), (r1, c1) = points.min(axis=0) + 0.5, points.max(axis=0) + 0.5
    return float(c0), float(r0), float(c1 - c0), float(r1 - r0)
