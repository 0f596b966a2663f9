"""Where a frame shows specimen structure: which tiles the learned score should look at.

A focus score needs something to focus on. Smooth surfaces, empty background, black holes, saturated areas and
noise carry no structure: the model rightly scores them low *whatever the focus* (the paper's 0 class), so
averaging them in pulls every frame down and makes the frame's score depend on where the structure happens to
lie (the paper's centre crop on the smooth face of one large tin ball scores a sharp frame 1.9/10).

**Structure of a region** (:func:`region_structure`): the standard deviation of the frame's grey values
(float, [0, 1]) inside the region after a Gaussian low-pass of ``STRUCTURE_SIGMA_PX`` = 2 px, which removes most
of the pixel noise; the part that white noise of the frame's estimated sigma (Immerkaer 1996) would leave is
subtracted in quadrature. Grey-value contrast at the 2-8 px scale survives defocus much better than the high
frequencies a focus measure uses, so the same regions count as structured through a focus series.
The low-pass is computed on the frame averaged over ``STRUCTURE_BINNING`` x ``STRUCTURE_BINNING`` = 2x2 pixel
blocks, with the Gaussian narrowed so that block and Gaussian together smooth by 2 px (variances add), and the
noise residue computed for that filter: 4x cheaper (1024x768: 0.5 instead of 2.2 ms) and the same values. On every
tile of the 462 frames of the real-texture benchmark, in two noise draws, the median difference from the
full-resolution low-pass is 0.0 % and the 1st/99th percentiles -1.2 % / +0.6 %; 3 and 1 frames of 462 keep one
tile more or less, and no series' pick, rank correlation or in-focus score changed (docs/benchmarks.md
"Performance table").

**Structure-aware score** (mode ``structure``, the default of :mod:`napari_sem_focus.scoring.infer`): the frame's score
is the mean of the 320x240 tiles whose structure is at least ``RELATIVE_THRESHOLD`` = 0.4 of the frame's most structured
tile. Chosen on the real-texture benchmark (docs/benchmarks.md "Real textures", 30 semi-real series from held-out real
images, default weights v12, two independent noise draws of every series): 0.4 picks the in-focus frame in 30 of 30
series in both draws, 0.3 and 0.5 in 29 (both miss an astigmatic Thermo Fisher series whose source has structure in only
3-4 of 25 tiles: averaging one tile more outweighs one tile's noise), 0.6-0.7 in 26-28; worst Spearman 0.915 / 0.878
(0.5: 0.915 / 0.805). It keeps more tiles than a stricter threshold (less noise; one tile of outlying contrast, such as
a dark crevice, does not decide alone). Earlier, with the v4 weights, 0.4-0.7 performed alike (38-39 of 42). Weighting
tiles by their structure, measuring structure by a band-pass (difference of Gaussians) or the gradient, the mean of all
tiles, their upper quartile (mode ``tiles``) and the centre crop all picked fewer. When no region reaches
``STRUCTURE_FLOOR`` = 0.04 (4 % of the grey range), the frame has no structure (pure noise, blank, flat): it is scored
on all tiles and flagged.

**How many of them** (``SCORED_SHARE``): at most 5 per 16 tiles of the frame's grid (5 of a 1024x768 frame's 16; never
fewer than 4, so a small frame keeps all of its few), evenly spread in reading order over the structured ones — the
network's cost is per crop, and a 1024x768 frame had 13.4 structured tiles on average. Measured with every tile of the
real-texture benchmark scored once and pooled by each rule (``benchmarks/fewer_tiles.py``, v12, two noise draws): 5
spread tiles per 16 pick the in-focus frame in 30 / 29 of 30 series (all structured tiles: 30 / 30), Spearman >= 0.9 in
30 / 28 (30 / 28), the public series right; the in-focus vendor and FEI images' lowest score rises from 7.32 to 8.11
(fewer of an overlay's or a hole's tiles averaged in). The 5 most structured tiles did alike (30 / 29 picks; in-focus
images 7.64 at the lowest); 3-4 tiles lost picks in both draws.

**Structure fraction** (:meth:`StructureMap.fraction`): the fraction of the scored region covered by 320x240
tiles whose structure reaches ``STRUCTURE_FLOOR`` — how much of the image shows specimen structure.

Measured floors (scripts in benchmarks/): pure noise of every kind, flat, black and white frames and the
simulator's blank frames reach at most 0.027; every real image of ../shared/data reaches 0.094 or more.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence

import cv2
import numpy as np

STRUCTURE_SIGMA_PX = 2.0
STRUCTURE_BINNING = 2
RELATIVE_THRESHOLD = 0.4
STRUCTURE_FLOOR = 0.04
#: The structure mode scores at most this share (numerator, denominator) of a frame's tile grid, evenly spread over
#: its structured tiles: 5 of a 1024x768 frame's 16 (module docstring; benchmarks/fewer_tiles.py).
SCORED_SHARE = (5, 16)
#: ... and never fewer than this many (when the frame has them): a small frame's few tiles are all its evidence.
MIN_SCORED_TILES = 4


#: Immerkaer's (1996) 3x3 Laplacian-difference mask: its response to a smooth image is ~0, to white noise of
#: sigma s it has mean absolute value 6 s sqrt(2 / pi).
IMMERKAER_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


_scratch = threading.local()


def scratch_array(name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """An array of ``shape`` (float32 unless ``dtype``) that the calling thread reuses for ``name`` (its contents
    are whatever the last use left). For arrays that never leave the function filling them: a fresh frame-sized
    array per frame costs more in page faults than the filter that fills it (1024x768: structure map 6.8 ms with
    fresh arrays, 2.7 ms with reused ones, measured on this project's 2-core machine)."""
    buffers = _scratch.__dict__.setdefault("buffers", {})
    array = buffers.get(name)
    if array is None or array.shape != tuple(shape) or array.dtype != dtype:
        array = buffers[name] = np.empty(shape, dtype)
    return array


#: :data:`IMMERKAER_MASK` is the outer product of this second difference with itself (filtered in two passes).
SECOND_DIFFERENCE = np.array([1, -2, 1], np.float32)


def immerkaer_response(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The image filtered with :data:`IMMERKAER_MASK` (same size; the border rows/columns are not used), into
    ``out`` when given: float32, or int16 for 8-bit pixels (exact: the mask's response stays within +/-4080)."""
    if image.dtype == np.uint8:
        return cv2.sepFilter2D(image, cv2.CV_16S, SECOND_DIFFERENCE, SECOND_DIFFERENCE, dst=out)
    if image.dtype != np.uint16:  # 16-bit levels are filtered as they are (exact in float32: |response| < 2^24)
        image = np.asarray(image, np.float32)
    return cv2.sepFilter2D(image, cv2.CV_32F, SECOND_DIFFERENCE, SECOND_DIFFERENCE, dst=out)


def sigma_from_l1(l1: float, pixels: int) -> float:
    """Immerkaer's noise sigma from the absolute mask responses summed over ``pixels`` interior pixels."""
    return float(math.sqrt(math.pi / 2) * l1 / pixels / 6) if pixels > 0 else 0.0


def noise_sigma(frame: np.ndarray) -> float:
    """Pixel-noise sigma of a frame (in its own units: float, or 8/16-bit grey levels), Immerkaer's (1996) fast
    estimate: ``sqrt(pi/2) / (6 (W-2)(H-2)) * sum |I * N|`` over the interior pixels, N = :data:`IMMERKAER_MASK`."""
    if min(frame.shape) < 3:
        return 0.0
    kind = np.int16 if frame.dtype == np.uint8 else np.float32
    interior = immerkaer_response(frame, scratch_array(f"immerkaer-{kind.__name__}", frame.shape[:2], kind))[1:-1, 1:-1]
    return sigma_from_l1(cv2.norm(interior, cv2.NORM_L1), interior.size)  # one pass, double accumulator


def raw_noise_sigma(raw: np.ndarray, offset: float, scale: float) -> float | None:
    """:func:`noise_sigma` of the float frame ``(raw - offset) / scale`` measured on its stored 8- or 16-bit pixels
    ``raw`` (the same value within float rounding; 1024x768 8-bit: about half the time, a quarter of the memory
    read), or None when the float frame is not exactly that (other types; levels clipped by the intensity rule)."""
    from ..io.intensity import never_clips

    if raw.dtype not in (np.uint8, np.uint16) or not never_clips(raw.dtype, offset, scale):
        return None
    return noise_sigma(raw) / scale


def binning_for(shape: tuple[int, ...]) -> int:
    """The pixel binning structure is measured at for a frame of ``shape``: :data:`STRUCTURE_BINNING`, or 1 for a
    frame too small to bin."""
    return STRUCTURE_BINNING if min(shape[:2]) >= 4 * STRUCTURE_BINNING else 1


@functools.cache
def binned_gaussian(binning: int) -> np.ndarray:
    """The 1-D Gaussian kernel (in binned pixels) that, after ``binning`` x ``binning`` block averaging, completes
    the low-pass of :data:`STRUCTURE_SIGMA_PX` (a block of k px has variance (k^2 - 1) / 12 px^2). Made once per
    binning (every frame uses it twice); read-only."""
    sigma = math.sqrt(STRUCTURE_SIGMA_PX**2 - (binning**2 - 1) / 12) / binning
    kernel = cv2.getGaussianKernel(2 * math.ceil(4 * sigma) + 1, sigma, cv2.CV_32F)
    kernel.flags.writeable = False
    return kernel


def lowpass(frame: np.ndarray, scratch: bool = False) -> np.ndarray:
    """The frame after the low-pass that structure is measured on, in binned pixels (:func:`binning_for`): block
    average, then Gaussian; in this thread's :func:`scratch_array` buffers when ``scratch``."""
    frame = np.asarray(frame, np.float32)
    k = binning_for(frame.shape)
    rows, cols = frame.shape[0] // k, frame.shape[1] // k
    binned = frame
    if k > 1:
        out = scratch_array("binned", (rows, cols)) if scratch else None
        binned = cv2.resize(frame[: rows * k, : cols * k], (cols, rows), dst=out, interpolation=cv2.INTER_AREA)
    kernel = binned_gaussian(k)
    out = scratch_array("lowpass", (rows, cols)) if scratch else None
    return cv2.sepFilter2D(binned, cv2.CV_32F, kernel, kernel, dst=out, borderType=cv2.BORDER_REFLECT)


def noise_residue(sigma: float, binning: int = 1) -> float:
    """The standard deviation that white pixel noise of ``sigma`` leaves after :func:`lowpass` at ``binning``:
    sigma x the root of the filter's summed squared weights (1/k per block average, sum g^2 per Gaussian axis)."""
    return sigma / binning * float((binned_gaussian(binning).astype(np.float64) ** 2).sum())


class StructureMap:
    """The low-passed frame and its noise residue, to measure the structure of any region of one frame.
    ``residue``: the noise residue when it is known already (a band of a large frame, or :func:`noise_residue` of
    the stored pixels' :func:`raw_noise_sigma`), else estimated here.
    ``scratch``: keep the low-passed frame in this thread's :func:`scratch_array` — only for a map used up before
    the thread makes the next one (the next overwrites it)."""

    def __init__(self, frame: np.ndarray, residue: float | None = None, scratch: bool = False):
        img = np.asarray(frame, np.float32)
        self.shape = img.shape[:2]
        self.binning = binning_for(img.shape)
        self.lowpass = lowpass(img, scratch)
        self.noise_residue = noise_residue(noise_sigma(img), self.binning) if residue is None else residue

    def region(self, row: int, col: int, rows: int, cols: int) -> float:
        """Structure (grey-value std, noise removed) of the region with top-left (row, col) and size rows x cols
        (frame pixels)."""
        return self._structure(self.lowpass[binned_window(row, col, rows, cols, self.binning)])

    def regions(self, origins: Sequence[tuple[int, int]], size: tuple[int, int]) -> np.ndarray:
        """Structure of each ``size`` (rows, cols) region at ``origins``."""
        windows = binned_windows(tuple(map(tuple, origins)), tuple(size), self.binning)
        return np.array([self._structure(self.lowpass[window]) for window in windows], np.float32)

    def _structure(self, patch: np.ndarray) -> float:
        if patch.size == 0:
            return 0.0
        _, std = cv2.meanStdDev(patch)  # one pass, double accumulator
        return math.sqrt(max(float(std[0, 0]) ** 2 - self.noise_residue**2, 0.0))

    def fraction(
        self, origins: Sequence[tuple[int, int]], size: tuple[int, int], structure: np.ndarray | None = None
    ) -> float:
        """:func:`structured_fraction` of this frame (``structure``: the regions', else measured here)."""
        if structure is None:
            structure = self.regions(origins, size)
        return structured_fraction(self.shape, origins, size, structure)


def binned_window(row: int, col: int, rows: int, cols: int, binning: int) -> tuple[slice, slice]:
    """The slices of a low-passed map at ``binning`` that hold the region with top-left (row, col) and size
    rows x cols (frame pixels); at least one binned pixel each way."""
    r0, c0 = round(row / binning), round(col / binning)
    return slice(r0, max(round((row + rows) / binning), r0 + 1)), slice(c0, max(round((col + cols) / binning), c0 + 1))


@functools.lru_cache(maxsize=32)
def binned_windows(
    origins: tuple[tuple[int, int], ...], size: tuple[int, int], binning: int
) -> tuple[tuple[slice, slice], ...]:
    """:func:`binned_window` of each ``size`` region at ``origins``: made once per tile grid, not per frame."""
    return tuple(binned_window(r, c, *size, binning) for r, c in origins)


@functools.lru_cache(maxsize=32)
def grid_cells(
    shape: tuple[int, int], origins: tuple[tuple[int, int], ...], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The cells the edges of the ``size`` regions at ``origins`` cut a frame of ``shape`` into: (cell areas in
    pixels (R, C), each region's cell rows and columns as [first row, end row, first col, end col] (n, 4)). Made
    once per tile grid; read-only."""
    starts = np.clip(np.asarray(origins, np.int64).reshape(-1, 2), 0, shape)
    ends = np.clip(starts + np.asarray(size), 0, shape)
    edges = [np.unique(np.concatenate([[0, shape[a]], starts[:, a], ends[:, a]])) for a in (0, 1)]
    cells = [np.searchsorted(edges[axis], corner[:, axis]) for axis in (0, 1) for corner in (starts, ends)]
    bounds = np.stack(cells, axis=1)  # first row, end row, first col, end col
    area = np.outer(np.diff(edges[0]), np.diff(edges[1]))
    area.flags.writeable = bounds.flags.writeable = False
    return area, bounds


def structured_fraction(
    shape: tuple[int, int], origins: Sequence[tuple[int, int]], size: tuple[int, int], structure: np.ndarray
) -> float:
    """Fraction of a frame of ``shape`` (rows, cols) inside the ``size`` regions at ``origins`` (a tile grid) whose
    ``structure`` reaches :data:`STRUCTURE_FLOOR`. Counted on the grid of cells the regions' edges cut the frame
    into (:func:`grid_cells`), not pixel by pixel (same result)."""
    kept = np.asarray(structure) >= STRUCTURE_FLOOR
    if not kept.any() or not shape[0] or not shape[1]:
        return 0.0
    area, bounds = grid_cells(tuple(shape[:2]), tuple(map(tuple, origins)), tuple(size[:2]))
    covered = np.zeros(area.shape, bool)
    for r0, r1, c0, c1 in bounds[kept]:
        covered[r0:r1, c0:c1] = True
    return float(area[covered].sum()) / (shape[0] * shape[1])


def region_structure(frame: np.ndarray, origins: Sequence[tuple[int, int]], size: tuple[int, int]) -> np.ndarray:
    """Structure of each ``size`` region of ``frame`` at ``origins`` (see module docstring)."""
    return StructureMap(frame).regions(origins, size)


def spread_sample(count: int, k: int) -> list[int]:
    """``k`` positions of ``count`` items evenly spread from the first to the last (all of them when ``count <= k``)."""
    if count <= k:
        return list(range(count))
    if k == 1:
        return [0]
    return [round(i * (count - 1) / (k - 1)) for i in range(k)]


def most_structured_tiles(tiles: int) -> int:
    """How many tiles of a frame's grid of ``tiles`` the structure mode scores at most: :data:`SCORED_SHARE` of the
    grid, rounded up, and never fewer than :data:`MIN_SCORED_TILES` (5 of a 1024x768 frame's 16, 53 of a
    4096x3072 frame's 169; a 512x384 frame keeps all of its 4)."""
    share, of = SCORED_SHARE
    return max(MIN_SCORED_TILES, -(-tiles * share // of))


def structured_tiles(structure: np.ndarray, most: int | None = None) -> np.ndarray:
    """Boolean mask of the tiles the structure-aware score averages: of the tiles whose structure is >= 0.4 x the
    frame's highest, at most ``most`` (default :func:`most_structured_tiles`) evenly spread in reading order;
    every tile when none reaches :data:`STRUCTURE_FLOOR` (a frame without structure)."""
    structure = np.asarray(structure, np.float32)
    top = float(structure.max()) if structure.size else 0.0
    if top < STRUCTURE_FLOOR:
        return np.ones(structure.shape, bool)
    chosen = np.flatnonzero(structure >= RELATIVE_THRESHOLD * top)
    most = most_structured_tiles(structure.size) if most is None else most
    keep = np.zeros(structure.shape, bool)
    keep[chosen[spread_sample(len(chosen), most)]] = True
    return keep
