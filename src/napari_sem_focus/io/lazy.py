"""Lazy views of a focus series for a viewer: a dask stack of its raw frames, and for frames above 64 Mpx a
multiscale pyramid read band by band, so that a giant mosaic is never loaded whole.

Each pyramid level halves the one below (by area averaging, which also averages the SE noise down) until the
longer side is at most :data:`PYRAMID_TOP_PX`; every level is cut into bands of at most :data:`BAND_BYTES` of
its source rows. A viewer computes only the bands it shows: the coarsest level reads the frame once, band by band
(a 40,000 x 40,000 px 8-bit mosaic: 1.6 GB decoded in ~40 MB pieces); the full-resolution level reads the bands
under the view.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any

import numpy as np

#: The coarsest pyramid level's longer side is at most this (pixels).
PYRAMID_TOP_PX = 2048
#: Raw bytes of the source rows behind one band of a pyramid level (one dask chunk).
BAND_BYTES = 64 * 2**20
#: Levels of at most this many bytes keep their bands once read: a viewer asks for the coarsest level more than
#: once (the view, the thumbnail), and each time it would read the whole frame again.
KEPT_LEVEL_BYTES = 16 * 2**20


def lazy_stack(series: Any) -> Any:
    """The series' raw frames as a dask array: (rows, cols) for one frame, (frames, rows, cols) for more; a frame
    is read when a chunk of it is computed."""
    import dask
    import dask.array as da

    frames = [
        da.from_delayed(dask.delayed(series.raw_frame)(i), shape=series.shape, dtype=series.dtype)
        for i in range(len(series))
    ]
    return frames[0] if len(frames) == 1 else da.stack(frames)


def pyramid_factors(shape: tuple[int, int], top_px: int | None = None) -> list[int]:
    """Downsampling factors 1, 2, 4, ... of a pyramid over ``shape`` (rows, cols), the last one bringing the longer
    side to at most ``top_px`` (default :data:`PYRAMID_TOP_PX`)."""
    top_px = top_px or PYRAMID_TOP_PX
    factors = [1]
    while max(shape) / factors[-1] > top_px:
        factors.append(factors[-1] * 2)
    return factors


def _level_band(series: Any, index: int, factor: int, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of frame ``index`` at 1/``factor`` resolution (area average; every ``factor``-th
    pixel for dtypes OpenCV cannot resize), read from the frame's raw bands."""
    import cv2

    rows, cols = series.shape
    (band,) = series.raw_bands(index, [(start * factor, min(stop * factor, rows))])
    if factor == 1:
        return band
    size = (math.ceil(cols / factor), stop - start)  # (width, height) for OpenCV
    if band.dtype in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        return cv2.resize(band, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(band[::factor, ::factor])


class _KeptBands:
    """:func:`_level_band`, each band kept once read (the small levels of one pyramid)."""

    def __init__(self, series: Any):
        self.series, self.bands, self.lock = series, {}, threading.Lock()

    def __call__(self, index: int, factor: int, start: int, stop: int) -> np.ndarray:
        key = (index, factor, start, stop)
        with self.lock:
            if key in self.bands:
                return self.bands[key]
        band = _level_band(self.series, index, factor, start, stop)
        with self.lock:
            self.bands[key] = band
        return band


def lazy_pyramid(series: Any) -> list[Any]:
    """A multiscale pyramid of the series' raw frames (module docstring): one dask array per level, full resolution
    first, each (rows, cols) or (frames, rows, cols) like :func:`lazy_stack`."""
    import dask
    import dask.array as da

    kept = _KeptBands(series)

    rows, cols = series.shape
    itemsize = np.dtype(series.dtype).itemsize
    levels = []
    for factor in pyramid_factors((rows, cols)):
        level_rows, level_cols = math.ceil(rows / factor), math.ceil(cols / factor)
        band_rows = max(1, BAND_BYTES // (cols * itemsize * factor))  # of the level
        small = level_rows * level_cols * itemsize * len(series) <= KEPT_LEVEL_BYTES
        read = kept if small else functools.partial(_level_band, series)
        frames = []
        for i in range(len(series)):
            bands = [
                da.from_delayed(
                    dask.delayed(read)(i, factor, a, min(a + band_rows, level_rows)),
                    shape=(min(a + band_rows, level_rows) - a, level_cols),
                    dtype=series.dtype,
                )
                for a in range(0, level_rows, band_rows)
            ]
            frames.append(da.concatenate(bands))
        levels.append(frames[0] if len(frames) == 1 else da.stack(frames))
    return levels
