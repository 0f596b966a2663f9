"""Tile geometry of the scored field: the 320x240 crop the network sees and the grid of crops that covers a frame.

Pure arithmetic on pixel counts (rows, cols); below both :mod:`.infer` and :mod:`.large_frames`.
"""

from __future__ import annotations

import math

#: Rows, cols of one crop: the paper's 320x240 test crop (also for fine-tuning and evaluation), in pixels.
CROP_SIZE = (240, 320)


def tile_axis(length: int, size: int) -> list[int]:
    """Starts of the fewest evenly spaced ``size`` tiles covering ``length`` px (one axis of :func:`tile_origins`)."""
    if length <= size:
        return [0]
    n = math.ceil(length / size)
    return [round(i * (length - size) / (n - 1)) for i in range(n)]


def tile_origins(shape: tuple[int, int], crop: tuple[int, int] = CROP_SIZE) -> list[tuple[int, int]]:
    """Top-left corners of an evenly spaced grid of ``crop`` tiles covering ``shape`` (rows, cols)."""
    return [(r, c) for r in tile_axis(shape[0], crop[0]) for c in tile_axis(shape[1], crop[1])]
