"""The intensity rule: every frame of a series becomes float32 in [0, 1] by one linear map per series
(``(raw - offset) / scale``), never by per-frame stretching (the rule in full: :mod:`.series`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidImageError

_BIT_DEPTHS = (8, 10, 12, 14, 16, 24, 32)


def white_level(dtype: Any, brightest: float) -> float:
    """The white level of unsigned integer data of ``dtype`` whose brightest pixel is ``brightest``: ``2**b - 1``
    for the smallest ``b`` of 8, 10, 12, 14, 16, 24, 32 (not above the dtype's bits) that holds it (the intensity
    rule of this module: 12-bit data in uint16 is divided by 4095, full-range 16-bit data by 65535)."""
    bits = next((b for b in _BIT_DEPTHS if b <= np.dtype(dtype).itemsize * 8 and brightest <= 2**b - 1), 32)
    return float(2**bits - 1)


@functools.cache
def _uint8_table(offset: float, scale: float) -> np.ndarray:
    """The float32 [0, 1] value of each uint8 grey level under the intensity rule ``(v - offset) / scale``."""
    table = (np.arange(256).astype(np.float32) - np.float32(offset)) * np.float32(1.0 / scale)
    return np.clip(table, 0.0, 1.0, out=table)


def check_finite(raw: np.ndarray, path: Path, index: int) -> None:
    if np.issubdtype(raw.dtype, np.floating) and not np.isfinite(raw).all():
        bad = int((~np.isfinite(raw)).sum())
        raise InvalidImageError(f"'{path}' frame {index}: {bad} pixels are NaN or infinite")


def to_float(raw: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """``raw`` as float32 ``(raw - offset) / scale`` clipped to [0, 1] (an 8-bit frame through a lookup table: the
    same float32 arithmetic, identical values, half the time)."""
    if raw.dtype == np.uint8:
        import cv2

        return cv2.LUT(raw, _uint8_table(float(offset), float(scale)))
    out = raw.astype(np.float32)
    out -= np.float32(offset)
    out *= np.float32(1.0 / scale)
    return np.clip(out, 0.0, 1.0, out=out)


def intensity_map(dtype: Any, value_range: tuple[float, float], notes: list[str]) -> tuple[float, float]:
    """(offset, scale) of a series of ``dtype`` whose pixels span ``value_range`` (lowest, highest): unsigned and
    non-negative integers divided by their white level, signed ones with negative values shifted by the dtype's
    minimum first, floats in [0, 1] kept and other floats min-max scaled over the series (noted in ``notes``)."""
    dtype = np.dtype(dtype)
    lo, hi = value_range
    if np.issubdtype(dtype, np.integer):
        offset = 0.0
        if lo < 0:  # signed data with negative values: shift by the dtype minimum
            offset = float(np.iinfo(dtype).min)
            hi -= offset
        return offset, white_level(dtype, hi)
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    notes.append(f"float data in [{lo:.4g}, {hi:.4g}] min-max scaled to [0, 1] over the series")
    return lo, (hi - lo) if hi > lo else 1.0


def value_range(parts: Iterable[tuple[np.ndarray, Path, int]]) -> tuple[float, float]:
    """(lowest, highest) pixel of ``parts`` = (raw pixels, file, frame index) pieces; NaN or infinite pixels raise
    :class:`~napari_sem_focus.errors.InvalidImageError` naming the file and frame."""
    lo, hi = np.inf, -np.inf
    for raw, path, index in parts:
        check_finite(raw, path, index)
        lo, hi = min(lo, float(raw.min())), max(hi, float(raw.max()))
    return lo, hi
