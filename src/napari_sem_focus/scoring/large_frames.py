"""Very large frames (stitched maps, 16k-64k px scans): the structure-aware score in bounded memory.

A frame above :data:`~napari_sem_focus.io.image_files.LARGE_FRAME_PIXELS` is never converted or filtered whole. Two
passes over horizontal bands of it (:meth:`~napari_sem_focus.io.series.FocusSeries.frame_bands`; a TIFF is decoded strip
by strip):

1. one band per row of the 320x240 tile grid, with :data:`MARGIN_PX` rows above and below so that the Gaussian
   low-pass inside the band is exactly the whole frame's: each tile's low-passed variance, and Immerkaer's noise
   sum over the band's own rows. Then the frame's noise residue, every tile's structure, the structure fraction and
   the tiles the mode scores follow exactly as for a normal frame (:mod:`napari_sem_focus.scoring.structure`);
2. the chosen tiles' rows again, to cut their crops.

The one difference from a normal frame: at most :data:`MAX_TILES` tiles are scored, evenly spread over the chosen
ones in reading order (a 16k x 16k map has ~3,500 structured tiles; 1,024 crops are 300 MB as float). Memory: a
band (the frame's width x 256 rows) plus the crops, whatever the frame's size.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .structure import (
    STRUCTURE_FLOOR,
    StructureMap,
    immerkaer_response,
    noise_residue,
    sigma_from_l1,
    spread_sample,
    structured_fraction,
    structured_tiles,
)
from .tiles import tile_axis

#: Rows read beyond a band on each side: the reach of the structure low-pass (2x2 blocks, then a Gaussian of
#: radius 4 binned px: 9 px), rounded up to whole blocks.
MARGIN_PX = 10
#: The most tiles of one large frame the model scores.
MAX_TILES = 1024


def large_frame_crops(series: Any, index: int, mode: str, crop: tuple[int, int]) -> tuple[np.ndarray, list, dict]:
    """What :func:`napari_sem_focus.scoring.infer.frame_crops` returns — (crops, origins, facts) — for frame ``index``
    of a
    series with large frames (module docstring)."""
    rows, cols = series.scored_shape
    row_origins, col_origins = tile_axis(rows, crop[0]), tile_axis(cols, crop[1])
    origins = [(r, c) for r in row_origins for c in col_origins]

    # pass 1: low-passed variance of every tile, noise sum over the interior pixels
    windows = [(max(0, r - MARGIN_PX), min(rows, r + crop[0] + MARGIN_PX)) for r in row_origins]
    cores = [*row_origins[1:], rows]  # band k owns the noise rows [row_origins[k], cores[k])
    variance = np.zeros(len(origins), np.float64)
    noise_l1 = 0.0
    for k, band in enumerate(series.frame_bands(index, windows)):
        start, r = windows[k][0], row_origins[k]
        smooth = StructureMap(band, residue=0.0)  # the grey-value variance; the noise is removed below
        for j, c in enumerate(col_origins):
            variance[k * len(col_origins) + j] = smooth.region(r - start, c, *crop) ** 2
        own = slice(max(r, 1) - start, min(cores[k], rows - 1) - start)  # Immerkaer's sum leaves out the border
        if own.stop > own.start and cols > 2:
            noise_l1 += cv2.norm(immerkaer_response(band)[own, 1:-1], cv2.NORM_L1)
    noise = sigma_from_l1(noise_l1, (rows - 2) * (cols - 2)) if min(rows, cols) >= 3 else 0.0
    residue = noise_residue(noise, smooth.binning)  # every band is binned alike (bands span a tile's rows)
    structure = np.sqrt(np.maximum(variance - residue**2, 0.0)).astype(np.float32)
    facts: dict[str, Any] = {"structure_fraction": structured_fraction((rows, cols), origins, crop, structure)}

    # the tiles to score
    if mode == "center":
        centre = (max((rows - crop[0]) // 2, 0), max((cols - crop[1]) // 2, 0))
        chosen = [centre]
    else:
        keep = structured_tiles(structure) if mode == "structure" else np.ones(len(origins), bool)
        chosen = [o for o, k in zip(origins, keep, strict=True) if k]
        chosen = [chosen[i] for i in spread_sample(len(chosen), MAX_TILES)]
        facts["has_structure"] = bool(structure.max() >= STRUCTURE_FLOOR)

    # pass 2: their crops (the centre crop's structure too, measured on its own band with margins)
    size = (min(crop[0], rows), min(crop[1], cols))
    crops = np.empty((len(chosen), *size), np.float32)  # filled in place: no band outlives its pass
    wanted = sorted({r for r, _ in chosen})
    margin = MARGIN_PX if mode == "center" else 0
    windows = [(max(0, r - margin), min(rows, r + crop[0] + margin)) for r in wanted]
    for (start, _), r, band in zip(windows, wanted, series.frame_bands(index, windows), strict=True):
        for i, (rr, c) in enumerate(chosen):
            if rr == r:
                crops[i] = band[r - start : r - start + size[0], c : c + size[1]]
        if mode == "center":
            centre = StructureMap(band, residue).region(r - start, chosen[0][1], *crop)
            facts["has_structure"] = bool(centre >= STRUCTURE_FLOOR)
    return crops, chosen, facts
