"""Read SEM images and focus series (TIFF stacks, single files, folders of frames) into a :class:`FocusSeries`.

Supported: TIFF (8/16/32-bit integer, float, palette, RGB; single or multi-page), PNG, JPEG, BMP, and folders of
such frames, read as one series. Frames are loaded lazily, one at a time, so a large stack never has to fit in
memory; napari wraps :meth:`FocusSeries.raw_frame` in a dask array.

Intensity rule (:meth:`FocusSeries.frame`): every frame becomes float32 in [0, 1] by one linear map per series,
never by per-frame stretching, so that brightness differences between frames survive and nothing is clipped:

- unsigned integers are divided by the series' *white level* ``2**b - 1``, where ``b`` is the smallest of
  8, 10, 12, 14, 16, 24, 32 (not above the dtype's bits) such that no pixel of the series exceeds ``2**b - 1``.
  So 8-bit data is divided by 255, 12-bit data stored as uint16 by 4095 and full-range 16-bit data by 65535:
  16-bit data is never squeezed into an 8-bit range.
- signed integers are shifted by the dtype minimum first, unless the series has no negative pixel;
- floats already inside [0, 1] are kept; other floats are min-max scaled over the whole series (with a note);
- NaN or infinite pixels raise :class:`~napari_sem_focus.errors.InvalidImageError`.

The burned-in data bar (see :mod:`napari_sem_focus.io.databar`) is removed from the region that ``frame`` returns;
``FocusSeries.scored_region`` reports the crop.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidImageError, MixedFrameSizesError, SeriesError, UnreadableImageError
from . import image_files
from .databar import detect_databar_rows
from .image_files import (
    _OPEN_TIFFS,
    DESCRIPTION_KEY,
    IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    _FileFrames,
    _inspect_file,
    _is_grey_page,
    _read_other,
    _read_tiff_page,
    _tiff_page_bands,
    _with_truth,
    natural_key,
    to_grey,
)
from .intensity import check_finite, intensity_map, to_float, value_range
from .metadata import SemMetadata
from .roi import clip_roi

#: The smallest scored region (rows and columns, pixels) any score or metric accepts.
MIN_SIZE_PX = 16


@dataclass
class FocusSeries:
    """A focus series: N frames of one field of view, with per-frame metadata. Frames load lazily.

    Attributes:
        source: the file or folder it was read from.
        frame_paths: the file of each frame (a multi-page TIFF repeats its path).
        metadata: per-frame :class:`SemMetadata`.
        shape: (rows, columns) of a raw frame, data bar included.
        dtype: stored dtype of the frames (after grey conversion).
        databar_rows: rows at the bottom excluded from scoring.
        databar_source: "metadata", "detected", "user" or "none".
        truth: per-frame ground truth written by our simulator ({} for real data), e.g. ``defocus_um``, ``score``.
        notes: conversions applied (RGB -> grey, palette, float scaling...), for the user to see.
        roi: region of interest (x, y, width, height) in pixels of the raw frame, or None for everything above the
            data bar; set it with :meth:`with_roi`.
        recorded: per-frame scores another tool recorded for the frame (e.g. ``{"fibsem_tenengrad": 0.53}`` of a
            fibsem-os autofocus folder, :mod:`napari_sem_focus.io.sweeps`); empty when none. They become columns of
            the result rows beside ours.
    """

    source: Path
    frame_paths: list[Path]
    metadata: list[SemMetadata]
    shape: tuple[int, int]
    dtype: np.dtype
    databar_rows: int = 0
    databar_source: str = "none"
    truth: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    roi: tuple[int, int, int, int] | None = None
    recorded: list[dict[str, float]] = field(default_factory=list)
    _loader: Callable[[int], np.ndarray] | None = field(default=None, repr=False)
    _band_loader: Callable[[int, Sequence[tuple[int, int]]], Iterator[np.ndarray]] | None = field(
        default=None, repr=False
    )
    _intensity: tuple[float, float] | None = field(default=None, repr=False)

    # --- access -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frame_paths)

    def raw_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as stored (grey, full frame including the data bar)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame {index} out of range for a series of {len(self)} frames")
        assert self._loader is not None
        return self._loader(index % len(self))

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as float32 in [0, 1] (the module's intensity rule), data bar removed."""
        return frame_and_raw(self, index)[0]

    def _to_float(self, raw: np.ndarray, index: int) -> np.ndarray:
        check_finite(raw, self.frame_paths[index % len(self)], index)
        return to_float(raw, *self.intensity_map)

    @property
    def is_large(self) -> bool:
        """True for frames above :data:`LARGE_FRAME_PIXELS`: read and scored band by band."""
        return self.shape[0] * self.shape[1] > image_files.LARGE_FRAME_PIXELS

    def raw_bands(self, index: int, windows: Sequence[tuple[int, int]]) -> Iterator[np.ndarray]:
        """Rows ``[a, b)`` of raw frame ``index`` (full width, as stored) for each ``(a, b)`` in ``windows``, which
        must not go backwards (a and b non-decreasing). A grey TIFF page is decoded strip by strip (or tile row by
        tile row), so only about one window is in memory at a time; other frames are read whole and sliced."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame {index} out of range for a series of {len(self)} frames")
        if self._band_loader is not None:
            yield from self._band_loader(index % len(self), windows)
            return
        raw = self.raw_frame(index)
        for a, b in windows:
            yield raw[a:b]

    def frame_bands(self, index: int, windows: Sequence[tuple[int, int]]) -> Iterator[np.ndarray]:
        """Rows ``[a, b)`` of the scored region of frame ``index`` for each window (non-decreasing), as
        :meth:`frame` would return them: what large frames are scored from (:meth:`raw_bands`)."""
        rows, cols = self.scored_region
        shifted = [(rows.start + a, rows.start + b) for a, b in windows]
        for raw in self.raw_bands(index, shifted):
            yield self._to_float(raw[:, cols], index)

    def frames(self) -> Iterator[np.ndarray]:
        """All frames in order, as :meth:`frame` returns them."""
        for i in range(len(self)):
            yield self.frame(i)

    # --- derived facts ----------------------------------------------------------------------------------
    @property
    def scored_region(self) -> tuple[slice, slice]:
        """Row and column slices of the region that is scored: the region of interest, else everything above the
        data bar."""
        if self.roi is not None:
            x, y, w, h = self.roi
            return slice(y, y + h), slice(x, x + w)
        return slice(0, self.shape[0] - self.databar_rows), slice(0, self.shape[1])

    @property
    def scored_shape(self) -> tuple[int, int]:
        """(rows, columns) of the scored region."""
        rows, cols = self.scored_region
        return rows.stop - rows.start, cols.stop - cols.start

    def with_roi(self, roi: Sequence[float] | None, min_shape: tuple[int, int] = (16, 16)) -> FocusSeries:
        """This series scored only inside ``roi`` = (x, y, width, height) in pixels of the raw frame (the same
        rectangle in every frame); None for the whole image.

        A region that reaches beyond the image or into the data bar is clipped to the image above the bar (with a
        note); one that lies wholly outside, or whose clipped size is below ``min_shape`` (rows, cols), raises
        :class:`~napari_sem_focus.errors.InvalidImageError`.
        """
        if roi is None:
            return replace(self, roi=None, notes=list(self.notes))
        image = (self.shape[0] - self.databar_rows, self.shape[1])
        clipped, notes = clip_roi(roi, image, min_shape, above_databar=self.databar_rows > 0)
        return replace(self, roi=clipped, notes=[*self.notes, *notes])

    @property
    def working_distance_mm(self) -> list[float | None]:
        """Working distance of each frame in mm (None where unknown)."""
        return [m.working_distance_mm for m in self.metadata]

    @property
    def magnification(self) -> float | None:
        """The vendor magnification of the first frame that states one."""
        return next((m.magnification for m in self.metadata if m.magnification), None)

    @property
    def pixel_size_nm(self) -> float | None:
        """The pixel size (nm) of the first frame that states one."""
        return next((m.pixel_size_nm for m in self.metadata if m.pixel_size_nm), None)

    @property
    def reference_magnification(self) -> float | None:
        """Vendor-independent magnification from the pixel size (see ``SemMetadata.reference_magnification``)."""
        meta = next((m for m in self.metadata if m.pixel_size_nm), None)
        return meta.reference_magnification(self.shape[1]) if meta else None

    @property
    def intensity_map(self) -> tuple[float, float]:
        """(offset, scale) with ``float = (raw - offset) / scale``; computed once per series."""
        if self._intensity is None:
            self._intensity = _series_intensity_map(self)
        return self._intensity

    def describe(self) -> dict[str, Any]:
        """Facts about the series (for ``sem-focus info`` and napari ``layer.metadata``): :func:`describe_series`."""
        return describe_series(self)


def frame_and_raw(series: FocusSeries, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(:meth:`FocusSeries.frame` ``index``, the same scored region's pixels as stored): what scoring measures the
    pixel noise on (exactly, in integer grey levels) without reading the frame twice."""
    rows, cols = series.scored_region
    raw = series.raw_frame(index)[rows, cols]
    return series._to_float(raw, index), raw


def _series_intensity_map(series: FocusSeries) -> tuple[float, float]:
    """(offset, scale) of the intensity rule for the whole series: the range of every frame's pixels (large frames
    read band by band), except for 8-bit and boolean data whose map the dtype fixes."""
    dtype = np.dtype(series.dtype)
    if dtype == np.bool_:
        return 0.0, 1.0
    if dtype == np.uint8:  # the white level can only be 255: no need to read the whole series first
        return 0.0, 255.0
    step = max(1, image_files.LARGE_FRAME_PIXELS // (8 * series.shape[1]))  # large frames: bands of <= 8 Mpx
    windows = [(a, min(a + step, series.shape[0])) for a in range(0, series.shape[0], step)]
    parts = (
        (raw, series.frame_paths[i], i)
        for i in range(len(series))
        for raw in (series.raw_bands(i, windows) if series.is_large else [series.raw_frame(i)])
    )
    return intensity_map(dtype, value_range(parts), series.notes)


def describe_series(series: FocusSeries) -> dict[str, Any]:
    """Facts about the series (for ``sem-focus info`` and napari ``layer.metadata``)."""
    first = series.metadata[0] if series.metadata else SemMetadata()
    return {
        "source": str(series.source),
        "frames": len(series),
        "shape": list(series.shape),
        "dtype": str(np.dtype(series.dtype)),
        "databar_rows": series.databar_rows,
        "databar_source": series.databar_source,
        "scored_region_rows": [series.scored_region[0].start, series.scored_region[0].stop],
        "roi": list(series.roi) if series.roi else None,
        "metadata": first.to_dict(),
        "reference_magnification": series.reference_magnification,
        "working_distance_mm": series.working_distance_mm,
        "notes": list(series.notes),
    }


def center_crop(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The centred ``shape`` (rows, cols) part of an image at least that large (the one centre-crop rule: common
    frame sizes here, the model's 320x240 crop in :func:`napari_sem_focus.scoring.infer.crop_or_pad`)."""
    r0 = (image.shape[0] - shape[0]) // 2
    c0 = (image.shape[1] - shape[1]) // 2
    return image[r0 : r0 + shape[0], c0 : c0 + shape[1]]


def list_frame_files(folder: Path) -> list[Path]:
    """Image files of a folder (not recursive, hidden files skipped), in natural filename order."""
    files = [
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    return sorted(files, key=natural_key)


def _source_files(source: str | Path | Sequence[str | Path]) -> tuple[Path, list[Path], Any]:
    """(the series' source, its files, the fibsem autofocus sweep it is or None) for a file, a folder or a list."""
    from .sweeps import fibsem_autofocus_sweep

    if not isinstance(source, str | Path):
        files = [Path(p) for p in source]
        if not files:
            raise SeriesError("no files given")
        return files[0].parent, files, None
    src = Path(source)
    if src.is_dir():
        sweep = fibsem_autofocus_sweep(src)
        files = [f.path for f in sweep.frames] if sweep else list_frame_files(src)
        if not files:
            raise SeriesError(f"'{src}': the folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return src, files, sweep
    if src.exists():
        return src, [src], None
    raise UnreadableImageError(src, "no such file or folder")


def _common_frame(infos: list[_FileFrames], common_crop: bool, notes: list[str]) -> tuple[tuple[int, int], np.dtype]:
    """(rows, cols) and dtype every frame of the series is read as: one size (or, with ``common_crop``, the
    smallest common one) and the dtype that holds every file's values."""
    shapes = {i.shape for i in infos}
    target = infos[0].shape
    if len(shapes) > 1:
        if not common_crop:
            other = next(i for i in infos if i.shape != target)
            raise MixedFrameSizesError(
                f"frames differ in size: '{infos[0].path.name}' is {target[1]}x{target[0]} but "
                f"'{other.path.name}' is {other.shape[1]}x{other.shape[0]} px; "
                "use common_crop=True (CLI: --common-crop) to centre-crop them to a common size"
            )
        target = (min(s[0] for s in shapes), min(s[1] for s in shapes))
        notes.append(f"frames of different sizes centre-cropped to {target[1]}x{target[0]} px")
    dtypes = {np.dtype(i.dtype) for i in infos}
    return target, np.result_type(*dtypes) if len(dtypes) > 1 else dtypes.pop()


def _ordered_frames(infos: list[_FileFrames], notes: list[str]) -> list[tuple[_FileFrames, int]]:
    """(file, page) of every frame: in file order, or by working distance when the series has several files and
    every frame states a working distance (and they differ)."""
    entries = [(info, page) for info in infos for page in range(info.pages)]
    wds = [info.metadata[page].working_distance_mm for info, page in entries]
    if len(infos) > 1 and all(w is not None for w in wds) and len(set(wds)) > 1:
        order = sorted(range(len(entries)), key=lambda k: wds[k])  # type: ignore[arg-type, return-value]
        entries = [entries[k] for k in order]
        notes.append("frames ordered by working distance")
    return entries


def _frame_loaders(
    entries: list[tuple[_FileFrames, int]], target: tuple[int, int], dtype: np.dtype, common_crop: bool, notes: list
) -> tuple[Callable[[int], np.ndarray], Callable[[int, Sequence[tuple[int, int]]], Iterator[np.ndarray]]]:
    """(load, bands): frame ``index`` whole, and rows of it window by window (a grey TIFF page decoded strip by
    strip, anything else read whole and sliced), both as stored, in the series' size and dtype."""

    def load(index: int) -> np.ndarray:
        info, page = entries[index]
        if info.path.suffix.lower() in TIFF_SUFFIXES:
            image = _read_tiff_page(info.path, page, notes)
        else:
            image = _read_other(info.path, notes)
        if image.shape != target:
            if not common_crop:
                raise SeriesError(f"'{info.path}': frame size changed since the series was opened")
            image = center_crop(image, target)
        return image.astype(dtype, copy=False)

    def bands(index: int, windows: Sequence[tuple[int, int]]) -> Iterator[np.ndarray]:
        info, page = entries[index]
        if info.path.suffix.lower() in TIFF_SUFFIXES and info.shape == target:
            pages, _ = _OPEN_TIFFS.pages(info.path)
            if _is_grey_page(pages[page]):
                for band in _tiff_page_bands(info.path, page, windows):
                    yield band.astype(dtype, copy=False)
                return
        image = load(index)
        for a, b in windows:
            yield image[a:b]

    return load, bands


def read_series(
    source: str | Path | Sequence[str | Path],
    *,
    databar_rows: int | None = None,
    common_crop: bool = False,
) -> FocusSeries:
    """Read a focus series from a file (single or multi-page), a folder of frames, or a list of files.

    Args:
        source: a file, a folder, or a list of files forming one series.
        databar_rows: data-bar rows to exclude; None = from metadata, else detected from the pixels.
        common_crop: allow frames of different sizes by centre-cropping all to the smallest common size
            (otherwise mixed sizes raise :class:`SeriesError`).

    Folder and list series are ordered by working distance when every frame states one (and they differ),
    otherwise by natural filename order. A fibsem-os autofocus result folder (:mod:`napari_sem_focus.io.sweeps`) is
    read as its iterations, each with the working distance and fibsem's score from its ``data.json``.
    """
    notes: list[str] = []
    src, files, sweep = _source_files(source)
    infos = [_inspect_file(f, notes) for f in files]
    if sweep is not None:
        notes.append(sweep.note)
        for info, swept in zip(infos, sweep.frames, strict=True):
            info.metadata = [replace(m, working_distance_mm=swept.working_distance_mm) for m in info.metadata]
            info.recorded = [swept.recorded] * info.pages
    target, dtype = _common_frame(infos, common_crop, notes)
    entries = _ordered_frames(infos, notes)
    load, bands = _frame_loaders(entries, target, dtype, common_crop, notes)
    series = FocusSeries(
        source=src,
        frame_paths=[info.path for info, _ in entries],
        metadata=[info.metadata[page] for info, page in entries],
        shape=target,
        dtype=dtype,
        truth=[info.truth[page] for info, page in entries],
        notes=notes,
        recorded=[info.recorded[page] if info.recorded else {} for info, page in entries],
        _loader=load,
        _band_loader=bands,
    )
    _set_databar(series, databar_rows)
    rows, cols = series.scored_shape
    if rows < MIN_SIZE_PX or cols < MIN_SIZE_PX:
        raise InvalidImageError(
            f"'{series.frame_paths[0]}': the scored region is {cols}x{rows} px, smaller than the "
            f"{MIN_SIZE_PX}x{MIN_SIZE_PX} px minimum"
        )
    return series


def _set_databar(series: FocusSeries, databar_rows: int | None) -> None:
    height = series.shape[0]
    if databar_rows is not None:
        if not 0 <= databar_rows < height:
            raise InvalidImageError(f"data-bar rows must be in [0, {height - 1}], got {databar_rows}")
        series.databar_rows, series.databar_source = int(databar_rows), "user"
        return
    stated = series.metadata[0].databar_rows
    if stated and 0 < stated < height:
        series.databar_rows, series.databar_source = int(stated), "metadata"
        return
    if series.is_large:  # a stitched map or a very large scan: no pixel detection (it would read the frame whole)
        return
    detected = detect_databar_rows(series.raw_frame(0))
    if detected:
        series.databar_rows, series.databar_source = detected, "detected"


def series_from_arrays(
    frames: Sequence[np.ndarray] | np.ndarray,
    frame_facts: Sequence[dict[str, Any]] | None = None,
    name: str = "in-memory series",
    databar_rows: int | None = 0,
) -> FocusSeries:
    """A :class:`FocusSeries` over frames already in memory (2D grey arrays of one shape and dtype).

    ``frame_facts`` may give per-frame ``magnification``, ``pixel_size_nm``, ``working_distance_mm`` (and any
    ground truth, kept in ``truth``). Used for napari layers, simulated samples and tests.
    """
    arrays = [np.asarray(f) for f in frames]
    if not arrays:
        raise SeriesError(f"{name}: no frames")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 2:
        raise SeriesError(f"{name}: frames must be 2D and of one size, got shapes {sorted(shapes)}")
    facts = list(frame_facts) if frame_facts is not None else [{} for _ in arrays]
    series = FocusSeries(
        source=Path(name),
        frame_paths=[Path(name)] * len(arrays),
        metadata=[_with_truth(SemMetadata(), f) for f in facts],
        shape=arrays[0].shape,
        dtype=np.result_type(*arrays),
        truth=facts,
        _loader=lambda i: arrays[i],
    )
    _set_databar(series, databar_rows)
    return series


def series_from_stack(
    data: Any,
    rgb: bool = False,
    frame_facts: Sequence[dict[str, Any]] | None = None,
    name: str = "layer",
    databar_rows: int | None = None,
) -> FocusSeries:
    """A lazy :class:`FocusSeries` over an array-like (numpy, dask...): (H, W), (N, H, W), or with ``rgb``
    a trailing colour axis, converted to grey. Frames are read by indexing ``data`` only when needed, so the
    caller's reference to ``data`` fixes what is scored even if a viewer layer changes meanwhile.
    """
    shape = tuple(int(s) for s in getattr(data, "shape", ()))
    core = shape[:-1] if rgb else shape
    if any(s == 0 for s in shape) or len(core) not in (2, 3):
        raise InvalidImageError(
            f"{name}: expected a 2D image or a 3D (frames, rows, cols) stack, got shape {shape}"
            + (" (empty)" if any(s == 0 for s in shape) else "")
        )
    n = core[0] if len(core) == 3 else 1
    notes: list[str] = []

    def load(index: int) -> np.ndarray:
        frame = np.asarray(data[index] if len(core) == 3 else data)
        return to_grey(frame, Path(name), notes) if rgb else frame

    first = load(0)
    facts = list(frame_facts) if frame_facts is not None else [{} for _ in range(n)]
    series = FocusSeries(
        source=Path(name),
        frame_paths=[Path(name)] * n,
        metadata=[_with_truth(SemMetadata(), f) for f in facts],
        shape=first.shape,
        dtype=first.dtype,
        truth=facts,
        notes=notes,
        _loader=load,
    )
    _set_databar(series, databar_rows)
    rows, cols = series.scored_shape
    if rows < MIN_SIZE_PX or cols < MIN_SIZE_PX:
        raise InvalidImageError(f"{name}: the image is {cols}x{rows} px, smaller than {MIN_SIZE_PX}x{MIN_SIZE_PX}")
    return series


def write_series_tiff(
    path: str | Path,
    frames: Sequence[np.ndarray] | np.ndarray,
    frame_facts: Sequence[dict[str, Any]],
) -> Path:
    """Write frames as a multi-page TIFF whose pages carry ``frame_facts`` as JSON descriptions.

    The write goes to a temporary file that replaces ``path`` only when complete (atomic).
    ``frame_facts`` entries may hold ``magnification``, ``pixel_size_nm``, ``working_distance_mm``,
    ``defocus_um``, ``score``; :func:`read_series` reads them back as metadata and ``truth``.
    """
    import tifffile

    from ..atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as writer:
        for frame, facts in zip(frames, frame_facts, strict=True):
            pixel_nm = facts.get("pixel_size_nm")
            resolution = (1e7 / pixel_nm, 1e7 / pixel_nm) if pixel_nm else None  # pixels per cm
            writer.write(
                np.asarray(frame),
                description=json.dumps({DESCRIPTION_KEY: facts}),
                metadata=None,
                resolution=resolution,
                resolutionunit="CENTIMETER" if resolution else None,
                contiguous=False,
            )
    return path


@functools.lru_cache(maxsize=32)
def _cached_series(path: Path) -> FocusSeries:
    return read_series(path)


def load_frame(path: str | Path, frame: int = 0) -> np.ndarray:
    """Frame ``frame`` of the file ``path`` as float32 [0, 1] (the labelled frames of a labels CSV): an 8-bit PNG
    directly, anything else through :func:`read_series` (each file read once, the last 32 kept)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        import cv2

        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is not None and img.ndim == 2 and img.dtype == np.uint8:
            return img.astype(np.float32) / 255.0
    return _cached_series(path).frame(frame)
