"""Scoring frames with the learned model: crops, tiles, pooling, batching; a generator that can be cancelled.

Modes (``structure`` is the default; figures in docs/benchmarks.md "Real textures"):

- ``structure``: structure-aware tiles (:mod:`.structure`). The scored field is covered by a grid of 320x240 tiles; the
  tiles with specimen structure (low-pass grey-value contrast >= 0.4 of the frame's most structured tile) are scored and
  their scores averaged. Featureless tiles — smooth surfaces, empty background, black holes, saturated areas — say
  nothing about focus and are left out, so the score no longer depends on what lies under the image centre. A frame with
  no structure anywhere (noise, blank, flat) is scored on all tiles and flagged ``has_structure = False``.
- ``center``: the paper's test protocol — one 320x240 centre crop per frame (used for the paper's tables).
- ``tiles``: every tile scored; the frame's score is the **upper quartile (p75)** of its tiles.

Every :class:`FrameScore` carries a spread (standard deviation of the pooled tile scores; NaN for one crop), the
fraction of the scored field that shows structure, and whether the scored region has any.

Magnification fed to the model (:func:`model_magnification`): from the pixel size when known
(``127 mm / (pixel_size x 1024 px)``, vendor-independent), else the vendor magnification rescaled to a 1024-px
frame, else the caller's value.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..errors import CancelledError, SemFocusError
from ..io.metadata import plausible_magnification
from ..io.series import center_crop
from .tiles import CROP_SIZE, tile_origins

T = TypeVar("T")

TILE_QUANTILE = 0.75
MODES = ("structure", "center", "tiles")  # the first is the default (see docs/benchmarks.md)

#: A frame's crops to score: a stack (n, rows, cols) or a list of n 2-D arrays (views into the frame).
Crops = np.ndarray | list[np.ndarray]


def interpret_score(score: float) -> str:
    """A few words for a score on the paper's scale."""
    if score < 0.5:
        return "unusable (noise, blank or unrecognisable)"
    if score < 2.5:
        return "badly out of focus (specimen barely recognisable)"
    if score < 5.0:
        return "out of focus"
    if score < 7.5:
        return "slightly out of focus"
    if score < 9.0:
        return "nearly in focus"
    return "in focus"


def model_magnification(series: Any, override: float | None = None) -> tuple[float | None, str]:
    """The magnification the model gets for ``series`` and where it came from."""
    from ..io.metadata import REFERENCE_FRAME_WIDTH_PX, magnification_from_pixel_size, plausible_magnification

    if override is not None:
        return plausible_magnification(override), "given"
    if series.pixel_size_nm:
        return magnification_from_pixel_size(series.pixel_size_nm), f"pixel size {series.pixel_size_nm:.4g} nm"
    if series.magnification:
        width = series.shape[1]
        return (
            series.magnification * width / REFERENCE_FRAME_WIDTH_PX,
            f"vendor magnification {series.magnification:g}x over {width} px",
        )
    return None, "unknown"


def magnification_note(series: Any, source: str) -> str:
    """Where the model magnification came from, and the microscope's own (vendor) magnification beside it when the
    file states one: the two differ by the vendor's reference width and the frame width (docs/user-guide.md)."""
    vendor = series.magnification if series is not None else None
    return f"{source}; the microscope displays {vendor:g}x" if vendor else source


def crop_or_pad(image: np.ndarray, size: tuple[int, int], rng: np.random.Generator | None) -> np.ndarray:
    """A ``size`` (rows, cols) crop: random when ``rng`` is given (training), else centred; reflect-pads images
    smaller than ``size``."""
    rows, cols = size
    pad_r, pad_c = max(0, rows - image.shape[0]), max(0, cols - image.shape[1])
    if pad_r or pad_c:
        image = np.pad(image, ((pad_r // 2, pad_r - pad_r // 2), (pad_c // 2, pad_c - pad_c // 2)), mode="reflect")
    if rng is None:
        return center_crop(image, size)
    r0 = int(rng.integers(0, image.shape[0] - rows + 1))
    c0 = int(rng.integers(0, image.shape[1] - cols + 1))
    return image[r0 : r0 + rows, c0 : c0 + cols]


def frame_crops(
    frame: np.ndarray, mode: str, crop: tuple[int, int] = CROP_SIZE, noise_sigma: float | None = None
) -> tuple[Crops, list, dict]:
    """(crops to score, their origins, facts about the frame's structure) of one float frame for ``mode``. The crops
    are a list of 2-D views into ``frame``, not copies: :class:`CropBatches` copies each once, into the network's
    batch (``np.stack`` them for an array). The facts: ``structure_fraction`` and ``has_structure`` (of the scored
    region). ``noise_sigma``: the frame's pixel-noise sigma when the caller measured it already (else measured here)."""
    from .structure import STRUCTURE_FLOOR, StructureMap, binning_for, noise_residue, structured_tiles

    if mode not in MODES:
        raise SemFocusError(f"unknown scoring mode '{mode}'; choose from {MODES}")
    residue = None if noise_sigma is None else noise_residue(noise_sigma, binning_for(frame.shape))
    structure = StructureMap(frame, residue, scratch=True)  # used up here, before this thread's next frame
    origins = tile_origins(frame.shape, crop)
    tile_structure = structure.regions(origins, crop)
    facts: dict[str, Any] = {"structure_fraction": structure.fraction(origins, crop, tile_structure)}
    small = frame.shape[0] < crop[0] or frame.shape[1] < crop[1]
    if mode == "center" or small:
        origin = (max((frame.shape[0] - crop[0]) // 2, 0), max((frame.shape[1] - crop[1]) // 2, 0))
        facts["has_structure"] = bool(structure.region(*origin, *crop) >= STRUCTURE_FLOOR)
        return [crop_or_pad(frame, crop, None)], [origin], facts
    facts["has_structure"] = bool(tile_structure.max() >= STRUCTURE_FLOOR)
    if mode == "structure":
        keep = structured_tiles(tile_structure)
        origins = [o for o, k in zip(origins, keep, strict=True) if k]
    return [frame[r : r + crop[0], c : c + crop[1]] for r, c in origins], origins, facts


def series_crops(
    series: Any,
    index: int,
    mode: str,
    crop: tuple[int, int] = CROP_SIZE,
    on_frame: Callable[[int, np.ndarray], None] | None = None,
) -> tuple[Crops, list, dict]:
    """:func:`frame_crops` of frame ``index`` of a :class:`~napari_sem_focus.io.series.FocusSeries`, its pixel noise
    measured on the stored pixels (:func:`~.structure.raw_noise_sigma`); a large frame (above 64 Mpx) band by band,
    never whole (:mod:`napari_sem_focus.scoring.large_frames`). ``on_frame(index, frame)``: called with the float
    frame as it is read (e.g. for classic metrics of the same array; never for a large frame)."""
    from ..io.series import frame_and_raw
    from .structure import raw_noise_sigma

    if mode not in MODES:
        raise SemFocusError(f"unknown scoring mode '{mode}'; choose from {MODES}")
    if series.is_large:
        from .large_frames import large_frame_crops

        return large_frame_crops(series, index, mode, crop)
    frame, raw = frame_and_raw(series, index)
    if on_frame is not None:
        on_frame(index, frame)
    return frame_crops(frame, mode, crop, raw_noise_sigma(raw, *series.intensity_map))


@dataclass
class FrameScore:
    """The learned score of one frame.

    Attributes:
        frame: frame index.
        score: the frame's score in [0, 10] (mean of the structured tiles, p75 of all tiles, or the centre crop).
        tile_scores: score of each scored tile (len 1 in centre mode; only the structured tiles in structure mode).
        tile_origins: (row, col) of each scored tile's top-left corner in the scored region.
        tile_size: (rows, cols) of a tile.
        spread: standard deviation of the pooled tile scores (score units; NaN when one crop is scored).
        structure_fraction: fraction of the scored region covered by 320x240 tiles that show specimen structure.
        has_structure: False when the scored region shows no structure at all (noise, blank, flat, a featureless
            centre crop): the score then says "nothing to focus on", not "out of focus".
    """

    frame: int
    score: float
    tile_scores: np.ndarray
    tile_origins: list[tuple[int, int]]
    tile_size: tuple[int, int] = CROP_SIZE
    spread: float = float("nan")
    structure_fraction: float = float("nan")
    has_structure: bool = True

    def focus_map(self, shape: tuple[int, int], step: int = 1) -> np.ndarray:
        """A float image of ``shape`` (the scored region) holding each pixel's tile score (mean where tiles
        overlap; NaN outside every tile); with ``step`` > 1 at 1/``step`` of the resolution (one value per
        ``step`` x ``step`` block: :func:`focus_map_step` keeps a giant frame's map small)."""
        rows, cols = -(-shape[0] // step), -(-shape[1] // step)
        total = np.zeros((rows, cols), np.float32)
        count = np.zeros((rows, cols), np.float32)
        for (r, c), s in zip(self.tile_origins, self.tile_scores, strict=True):
            r0, c0 = r // step, c // step
            r1, c1 = -(-(r + self.tile_size[0]) // step), -(-(c + self.tile_size[1]) // step)
            total[r0:r1, c0:c1] += s
            count[r0:r1, c0:c1] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / count, np.nan).astype(np.float32)


def focus_map_step(shape: tuple[int, int], max_pixels: int = 4_000_000) -> int:
    """The smallest ``step`` (1, 2, 3, ...) at which :meth:`FrameScore.focus_map` of ``shape`` (rows, cols) has at
    most ``max_pixels`` pixels."""
    return max(1, math.ceil(math.sqrt(shape[0] * shape[1] / max_pixels)))


def pool(tile_scores: np.ndarray, mode: str = "tiles") -> tuple[float, float]:
    """(frame score, spread) from the scores of the tiles a mode scored: the mean of the structured tiles
    (``structure``), the upper quartile of all tiles (``tiles``) or the one crop (``center``); the spread is the
    tiles' standard deviation (NaN for one tile)."""
    scores = np.asarray(tile_scores, np.float64)
    spread = float(scores.std()) if scores.size > 1 else float("nan")
    if scores.size == 1:
        return float(scores[0]), spread
    if mode == "structure":
        return float(scores.mean()), spread
    return float(np.quantile(scores, TILE_QUANTILE)), spread


def frame_score(tile_scores: np.ndarray, mode: str, model: Any) -> tuple[float, float, np.ndarray]:
    """(frame score, spread, tile scores) on the model's scale: the tiles (scored on our scale) are pooled
    (:func:`pool`), then the model's remap (:meth:`~napari_sem_focus.scoring.model.FocusScoreNet.remap`: the identity
    unless
    the model was adapted to a user's scale) maps the frame score and, for display, each tile's."""
    score, _ = pool(tile_scores, mode)
    remap = getattr(model, "remap", np.asarray)
    tiles = np.asarray(remap(tile_scores), np.float32)
    spread = float(tiles.std()) if tiles.size > 1 else float("nan")
    return float(remap(np.array([score]))[0]), spread, tiles


def inference_autocast(device: str, bf16: bool | None = None) -> Any:
    """The autocast context scoring runs the model in (:mod:`napari_sem_focus.device`'s policy); ``bf16=False``
    forces float32 (None or True: reduced precision where the device has it natively)."""
    from ..device import autocast

    return autocast(device, enabled=bf16 is not False)


class ModelRunner:
    """Runs the model on stacks of crops on one device, in its precision (:mod:`napari_sem_focus.device`).

    GPU out of memory: a batch is split in halves until it fits; when not even one crop fits, the model moves to
    the CPU with a warning and every later batch runs there (the scores are the same, only slower).
    """

    def __init__(self, model: Any, device: str = "cpu", bf16: bool | None = None, max_batch: int = 64):
        self.model, self.device, self.bf16, self.max_batch = model, str(device), bf16, max_batch

    def __call__(self, crops: np.ndarray, mag_norm: Any) -> np.ndarray:
        """Scores (0-10) of ``crops`` (n, rows, cols; float [0, 1]) at normalised magnifications ``mag_norm`` (n,),
        at most ``max_batch`` crops at a time through the network (a large frame brings a thousand)."""
        import torch

        if len(crops) > self.max_batch:
            starts = range(0, len(crops), self.max_batch)
            parts = [(crops[i : i + self.max_batch], mag_norm[i : i + self.max_batch]) for i in starts]
            return np.concatenate([self(*part) for part in parts])
        try:
            with torch.inference_mode(), inference_autocast(self.device, self.bf16):
                # non-blocking from a page-locked batch (batch_buffer): the .cpu() below waits for the whole job
                x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32))
                x = x.to(self.device, non_blocking=True)[:, None]
                x = x.contiguous(memory_format=torch.channels_last)  # the model's layout (weights.load_model)
                return self.model(x, mag_norm.to(self.device)).float().cpu().numpy()
        except torch.OutOfMemoryError:
            if len(crops) > 1:
                half = len(crops) // 2
                return np.concatenate([self(crops[:half], mag_norm[:half]), self(crops[half:], mag_norm[half:])])
            if self.device == "cpu":
                raise
            warnings.warn(f"{self.device} is out of memory: scoring goes on on the CPU", stacklevel=2)
            self.model.to("cpu")
            self.device = "cpu"
            return self(crops, mag_norm)


def prepared_ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """``items`` (frames being read and cut into crops) computed in a background thread up to ``depth`` ahead of
    the consumer (:func:`prepared_in_parallel` with one thread drawing from ``items``), so that reading and preparing
    the next frames overlaps the GPU's work on this batch. Exceptions come out where the item would have; closing
    the iterator stops the thread. Not used on a CPU: measured on 2 cores, the thread slowed scoring by ~10 % (it
    takes cores from the model)."""
    import contextlib

    source, end = iter(items), object()
    ahead = prepared_in_parallel(lambda _: next(source, end), None, workers=1, depth=depth)
    with contextlib.closing(ahead):
        for item in ahead:
            if item is end:
                return
            yield item


def prepared_in_parallel(prepare: Callable[[int], T], count: int | None, workers: int, depth: int = 0) -> Iterator[T]:
    """``prepare(0)``, ..., ``prepare(count - 1)`` (without end when ``count`` is None) computed by ``workers``
    threads, up to ``depth`` (default twice the workers) ahead of the consumer, handed out in order: what feeds a GPU
    faster than one thread can read and prepare frames (OpenCV, NumPy and the file reads release the GIL).
    Exceptions come out where the item would have; closing the iterator stops submitting (the items already running
    finish)."""
    from concurrent.futures import ThreadPoolExecutor

    depth = depth or 2 * workers
    count = math.inf if count is None else count
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="sem-focus-prepare") as pool:
        queue = deque(pool.submit(prepare, i) for i in range(int(min(depth, count))))
        submitted = len(queue)
        try:
            while queue:
                item = queue.popleft().result()
                if submitted < count:
                    queue.append(pool.submit(prepare, submitted))
                    submitted += 1
                yield item
        finally:
            for future in queue:
                future.cancel()


def on_cpu(device: Any) -> bool:
    """Whether ``device`` ("cpu", "cuda:0", a torch.device ...) is the CPU."""
    return str(device).split(":")[0] == "cpu"


def prepare_workers() -> int:
    """Threads that read and prepare frames for a GPU: the CPU's cores but one for the loop itself, at most 4."""
    import os

    return max(1, min(4, (os.cpu_count() or 2) - 1))


#: A frame made ready for the model: (frame index, its crops (:data:`Crops`), their origins, structure facts).
Prepared = tuple[int, Crops, list, dict]


def score_frames(
    frames: Iterable[np.ndarray], magnification: float, model: Any, mode: str = MODES[0], **options: Any
) -> Iterator[FrameScore]:
    """Yield a :class:`FrameScore` per float [0, 1] frame, batching crops across frames; ``options``: those of
    :func:`score_prepared` (``batch_size``, ``device``, ``should_stop``, ``bf16``)."""
    prepared: Iterable[Prepared] = ((index, *frame_crops(frame, mode)) for index, frame in enumerate(frames))
    if not on_cpu(options.get("device", "cpu")):  # on a CPU the reading thread would only take cores from the model
        prepared = prepared_ahead(prepared)
    yield from score_prepared(prepared, magnification, model, mode, **options)


#: Crops per network batch when scoring: the fastest batch of the network alone measured on this project's 2-core CPU
#: (32: 15.3 ms a crop; 16: 15.9 ms; 35-40: 15.9-16.5 ms; benchmarks/performance_table.py's bare column uses it).
BATCH_SIZE = 32


def batch_buffer(shape: tuple[int, ...], device: str) -> np.ndarray:
    """An empty float32 array for the network's batches on ``device``: in page-locked (pinned) memory for a CUDA
    device, so that each batch's copy to the GPU is one direct transfer that need not block the host (ModelRunner
    copies with ``non_blocking``), else ordinary memory."""
    if str(device).startswith("cuda"):
        import torch

        return torch.empty(shape, dtype=torch.float32, pin_memory=True).numpy()
    return np.empty(shape, np.float32)


class CropBatches:
    """Crops of successive frames through the network in batches of exactly ``size`` crops (the last one may be
    smaller): a frame's crops may span two batches, and a frame is handed out once all of its crops are scored.
    Exact batches because the network's time per crop depends on the batch (:data:`BATCH_SIZE`): frames of 5 crops
    gathered into batches of 35 ran slower than the same crops in batches of 32 (medians 17.6-18.4 against 16.2
    ms a crop on this project's 2-core CPU). Each crop is copied once, into one batch buffer that is reused (the
    frames' crops are views; the frames are not kept once their crops are in the buffer)."""

    def __init__(self, runner: ModelRunner, mag: Any, size: int):
        self.runner, self.mag, self.size = runner, mag, max(1, int(size))
        self.frames: deque[tuple[Prepared, int]] = deque()  # (frame without its crops, crop count), not handed out
        self.batch: np.ndarray | None = None  # float32 (size, rows, cols), filled up to ``filled``
        self.filled = 0
        self.scores = np.empty(0, np.float32)  # scores of crops through the network, not handed out yet

    def add(self, item: Prepared) -> list[tuple[Prepared, np.ndarray]]:
        """Queue a frame's crops; the frames completed by the full batches this allowed, with their tile scores."""
        index, crops, origins, facts = item
        self.frames.append(((index, [], origins, facts), len(crops)))
        for crop in crops:
            if self.batch is None:
                self.batch = batch_buffer((self.size, *np.shape(crop)), self.runner.device)
            self.batch[self.filled] = crop
            self.filled += 1
            if self.filled == self.size:
                self._run()
        return self._completed()

    def finish(self) -> list[tuple[Prepared, np.ndarray]]:
        """Score what is left; every remaining frame with its tile scores."""
        if self.filled:
            self._run()
        return self._completed()

    def _run(self) -> None:
        scored = self.runner(self.batch[: self.filled], self.mag.expand(self.filled))
        self.scores = np.concatenate([self.scores, scored]) if len(self.scores) else scored
        self.filled = 0

    def _completed(self) -> list[tuple[Prepared, np.ndarray]]:
        done, start = [], 0
        while self.frames and start + self.frames[0][1] <= len(self.scores):
            item, count = self.frames.popleft()
            done.append((item, self.scores[start : start + count]))
            start += count
        self.scores = self.scores[start:]
        return done


def score_prepared(
    prepared: Iterable[Prepared],
    magnification: float,
    model: Any,
    mode: str = MODES[0],
    batch_size: int = BATCH_SIZE,
    device: str = "cpu",
    should_stop: Callable[[], bool] | None = None,
    bf16: bool | None = None,
) -> Iterator[FrameScore]:
    """Yield a :class:`FrameScore` per frame already cut into crops (:func:`frame_crops`, :func:`series_crops`),
    in order, the crops going through the network in batches of ``batch_size`` across frames (:class:`CropBatches`).

    ``bf16``: reduced-precision autocast where the device has it natively (None/True; False: float32; about 2x
    faster on such CPUs, scores within ~0.05 of float32 — see benchmarks/bench_inference.py). Raises
    :class:`CancelledError` between batches when ``should_stop()`` turns true.

    GPU out of memory: see :class:`ModelRunner`.
    """
    from .model import check_magnification, normalize_magnification

    plausible_magnification(magnification)  # a clear error, never a NaN score
    check_magnification(magnification)
    runner = ModelRunner(model, device, bf16, max_batch=max(1, batch_size))
    batches = CropBatches(runner, normalize_magnification(magnification), batch_size)

    def results(done: list[tuple[Prepared, np.ndarray]]) -> Iterator[FrameScore]:
        for (index, _crops, origins, facts), tiles in done:
            score, spread, tiles = frame_score(tiles, mode, runner.model)
            yield FrameScore(index, score, tiles, origins, spread=spread, **facts)

    for item in prepared:
        if should_stop is not None and should_stop():
            raise CancelledError(f"scoring cancelled at frame {item[0]}")
        yield from results(batches.add(item))
    yield from results(batches.finish())


def score_series(
    series: Any,
    weights: str | None = None,
    magnification: float | None = None,
    mode: str = MODES[0],
    device: str = "cpu",
    batch_size: int = BATCH_SIZE,
    should_stop: Callable[[], bool] | None = None,
    on_frame: Callable[[int, np.ndarray], None] | None = None,
) -> Iterator[FrameScore]:
    """Score every frame of a :class:`FocusSeries` with the given (default: bundled) weights, each frame read here
    (:func:`series_crops`; a large one band by band). ``on_frame(index, frame)``: called with each float frame as
    it is read (in the preparing threads on a GPU: it must be thread-safe), e.g. to compute classic metrics of the
    same array.
    """
    from .weights import load_model

    mag, _source = model_magnification(series, magnification)
    if mag is None:
        raise SemFocusError(
            f"the magnification of '{series.source}' is unknown (no pixel size or magnification in its "
            "metadata): give it (CLI: --mag)"
        )
    model = load_model(weights, device)

    def prepare(index: int) -> Prepared:
        return (index, *series_crops(series, index, mode, on_frame=on_frame))

    if on_cpu(device) or series.is_large:  # a large frame's crops: one frame at a time
        prepared: Iterable[Prepared] = (prepare(index) for index in range(len(series)))
    else:  # frames read and prepared by several threads ahead of the GPU
        prepared = prepared_in_parallel(prepare, len(series), prepare_workers())
    yield from score_prepared(prepared, mag, model, mode, batch_size, device, should_stop)
