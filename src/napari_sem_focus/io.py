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

The burned-in data bar (see :mod:`napari_sem_focus.databar`) is removed from the region that ``frame`` returns;
``FocusSeries.scored_region`` reports the crop.
"""

from __future__ import annotations

import atexit
import functools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .databar import detect_databar_rows
from .errors import InvalidImageError, MixedFrameSizesError, SeriesError, UnreadableImageError
from .metadata import SemMetadata, read_sidecar, read_tiff_metadata

TIFF_SUFFIXES = (".tif", ".tiff")
OTHER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_SUFFIXES = TIFF_SUFFIXES + OTHER_SUFFIXES

#: The smallest scored region (rows and columns, pixels) any score or metric accepts.
MIN_SIZE_PX = 16

#: Frames with more pixels than this (64 Mpx, e.g. 8192x8192) are *large*: stitched maps and very high-resolution
#: scans. They are read, converted and scored band by band (:meth:`FocusSeries.frame_bands`,
#: :mod:`napari_sem_focus.large_frames`) and never held whole as float.
LARGE_FRAME_PIXELS = 64 * 2**20

#: Key of the JSON ImageDescription that our simulator writes into each TIFF page.
DESCRIPTION_KEY = "napari_sem_focus"

_BIT_DEPTHS = (8, 10, 12, 14, 16, 24, 32)


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
            fibsem-os autofocus folder, :mod:`napari_sem_focus.sweeps`); empty when none. They become columns of
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
        raw = self.raw_frame(index)
        rows, cols = self.scored_region
        return self._to_float(raw[rows, cols], index)

    def _to_float(self, raw: np.ndarray, index: int) -> np.ndarray:
        _check_finite(raw, self.frame_paths[index % len(self)], index)
        offset, scale = self.intensity_map
        if raw.dtype == np.uint8:  # a lookup of the same float32 arithmetic: identical values, half the time
            import cv2

            return cv2.LUT(raw, _uint8_table(float(offset), float(scale)))
        out = raw.astype(np.float32)
        out -= np.float32(offset)
        out *= np.float32(1.0 / scale)
        return np.clip(out, 0.0, 1.0, out=out)

    @property
    def is_large(self) -> bool:
        """True for frames above :data:`LARGE_FRAME_PIXELS`: read and scored band by band."""
        return self.shape[0] * self.shape[1] > LARGE_FRAME_PIXELS

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
        if len(roi) != 4:
            raise InvalidImageError(f"a region of interest is X Y WIDTH HEIGHT (4 numbers), got {list(roi)}")
        x, y, w, h = (float(v) for v in roi)
        if w <= 0 or h <= 0:
            raise InvalidImageError(f"the region of interest must have a positive size, got {w:g}x{h:g} px")
        rows, cols = self.shape[0] - self.databar_rows, self.shape[1]
        x0, y0 = max(0, round(x)), max(0, round(y))
        x1, y1 = min(cols, round(x + w)), min(rows, round(y + h))
        if x1 <= x0 or y1 <= y0:
            raise InvalidImageError(
                f"the region of interest (x {x:g}, y {y:g}, {w:g}x{h:g} px) lies outside the {cols}x{rows} px image"
                + (" above the data bar" if self.databar_rows else "")
            )
        notes = list(self.notes)
        if (x0, y0, x1, y1) != (round(x), round(y), round(x + w), round(y + h)):
            notes.append(f"region of interest clipped to the image: x {x0}, y {y0}, {x1 - x0}x{y1 - y0} px")
        if y1 - y0 < min_shape[0] or x1 - x0 < min_shape[1]:
            clipped = " (clipped to the image)" if len(notes) > len(self.notes) else ""
            raise InvalidImageError(
                f"the region of interest is {x1 - x0}x{y1 - y0} px{clipped}, smaller than the "
                f"{min_shape[1]}x{min_shape[0]} px the score needs: draw a larger region"
            )
        return replace(self, roi=(x0, y0, x1 - x0, y1 - y0), notes=notes)

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
            self._intensity = self._compute_intensity_map()
        return self._intensity

    def _compute_intensity_map(self) -> tuple[float, float]:
        dtype = np.dtype(self.dtype)
        if dtype == np.bool_:
            return 0.0, 1.0
        if dtype == np.uint8:  # the white level can only be 255: no need to read the whole series first
            return 0.0, 255.0
        lo, hi = np.inf, -np.inf
        step = max(1, LARGE_FRAME_PIXELS // (8 * self.shape[1]))  # bands of at most 8 Mpx for large frames
        windows = [(a, min(a + step, self.shape[0])) for a in range(0, self.shape[0], step)]
        for i in range(len(self)):
            for raw in self.raw_bands(i, windows) if self.is_large else [self.raw_frame(i)]:
                _check_finite(raw, self.frame_paths[i], i)
                lo, hi = min(lo, float(raw.min())), max(hi, float(raw.max()))
        if np.issubdtype(dtype, np.integer):
            offset = 0.0
            if lo < 0:  # signed data with negative values: shift by the dtype minimum
                offset = float(np.iinfo(dtype).min)
                hi -= offset
            return offset, white_level(dtype, hi)
        if lo >= 0.0 and hi <= 1.0:
            return 0.0, 1.0
        self.notes.append(f"float data in [{lo:.4g}, {hi:.4g}] min-max scaled to [0, 1] over the series")
        return lo, (hi - lo) if hi > lo else 1.0

    def describe(self) -> dict[str, Any]:
        """Facts about the series (for ``sem-focus info`` and napari ``layer.metadata``)."""
        first = self.metadata[0] if self.metadata else SemMetadata()
        return {
            "source": str(self.source),
            "frames": len(self),
            "shape": list(self.shape),
            "dtype": str(np.dtype(self.dtype)),
            "databar_rows": self.databar_rows,
            "databar_source": self.databar_source,
            "scored_region_rows": [self.scored_region[0].start, self.scored_region[0].stop],
            "roi": list(self.roi) if self.roi else None,
            "metadata": first.to_dict(),
            "reference_magnification": self.reference_magnification,
            "working_distance_mm": self.working_distance_mm,
            "notes": list(self.notes),
        }


# --- helpers ------------------------------------------------------------------------------------------------


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


def _check_finite(raw: np.ndarray, path: Path, index: int) -> None:
    if np.issubdtype(raw.dtype, np.floating) and not np.isfinite(raw).all():
        bad = int((~np.isfinite(raw)).sum())
        raise InvalidImageError(f"'{path}' frame {index}: {bad} pixels are NaN or infinite")


def natural_key(path: Path) -> list[Any]:
    """Sort key that orders ``frame_2`` before ``frame_10`` and ``-5`` before ``+5`` in file names."""
    parts = re.split(r"([-+]?\d+(?:\.\d+)?)", path.name)
    key: list[Any] = []
    for part in parts:
        try:
            key.append((0, float(part), ""))
        except ValueError:
            key.append((1, 0.0, part.lower()))
    return key


def to_grey(image: np.ndarray, path: Path, notes: list[str]) -> np.ndarray:
    """A 2D grey image from 2D grey, (H, W, 3|4) colour, or (H, W, 1) data; notes what was done."""
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            _note(notes, "colour file(s) with identical R, G, B channels read as grey")
            return np.ascontiguousarray(rgb[..., 0])
        _note(notes, f"'{path.name}': RGB converted to grey (ITU-R BT.601 luma)")
        luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if np.issubdtype(image.dtype, np.integer):
            return np.rint(luma).astype(image.dtype)
        return luma
    if image.ndim != 2:
        raise InvalidImageError(f"'{path}': expected a 2D grey or RGB image, got an array of shape {image.shape}")
    return image


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)


def _palette_to_grey(index: np.ndarray, colormap: np.ndarray, path: Path, notes: list[str]) -> np.ndarray:
    """Apply a TIFF palette (3 x 2**bits, uint16) and return grey values."""
    cmap = np.asarray(colormap, dtype=np.float64)
    n = cmap.shape[1]
    ramp = np.arange(n) * (65535.0 / (n - 1))
    if np.allclose(cmap, ramp[None, :], atol=257):  # a plain grey ramp: the indices are the grey values
        return index
    _note(notes, f"'{path.name}': palette image with coloured entries converted to grey (BT.601 luma)")
    lut = np.array([0.299, 0.587, 0.114]) @ cmap / 65535.0 * (n - 1)
    return np.rint(lut[index]).astype(index.dtype)


# --- readers ------------------------------------------------------------------------------------------------


def _open_tiff(path: Path) -> Any:
    import tifffile

    try:
        return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError, EOFError) as err:
        raise UnreadableImageError(path, f"not a readable TIFF ({err})") from err


def _tiff_pages(tif: Any) -> list[Any]:
    """Full-resolution pages of a TIFF (thumbnails and reduced images skipped)."""
    pages = [p for p in tif.pages if not getattr(p, "is_reduced", False)]
    if not pages:
        raise UnreadableImageError(tif.filename, "corrupt TIFF: no readable image pages")
    first = pages[0].shape
    return [p for p in pages if p.shape == first]


def _page_truth(page: Any) -> dict[str, Any]:
    """Per-frame facts our simulator stores as JSON in the page's ImageDescription."""
    desc = page.description if hasattr(page, "description") else ""
    if not desc or DESCRIPTION_KEY not in desc:
        return {}
    try:
        data = json.loads(desc)
    except json.JSONDecodeError:
        return {}
    return data.get(DESCRIPTION_KEY, {}) if isinstance(data, dict) else {}


def _with_truth(meta: SemMetadata, truth: dict[str, Any]) -> SemMetadata:
    """Fill metadata fields that the simulator stated in the page description."""
    known = {k: truth[k] for k in ("magnification", "pixel_size_nm", "working_distance_mm") if k in truth}
    if not known:
        return meta
    return replace(meta, vendor=meta.vendor or "napari-sem-focus simulator", **known)


def _decode_failure(page: Any, page_index: int, err: Exception) -> str:
    """Why a TIFF page could not be decoded: a missing codec package (with the command that installs it) or
    damaged data. tifffile decodes LZW, PackBits, JPEG and most other compressions SEMs write only with the
    ``imagecodecs`` package (a dependency of this plugin); an environment without it must not call a valid
    file corrupt."""
    if "imagecodecs" in str(err):
        compression = getattr(getattr(page, "compression", None), "name", "this")
        return (
            f"page {page_index} is {compression}-compressed and decoding it needs the 'imagecodecs' package, "
            "which is missing or broken here: pip install imagecodecs"
        )
    return f"page {page_index} is truncated or corrupt ({err})"


class _OpenTiffs:
    """The last few TIFF files read, kept open with their page lists, so that reading frame after frame of a long
    stack does not re-open the file and walk every page each time (which made a frame of a 1,000-page stack cost
    175 ms instead of 0.1 ms: benchmarks/bench_long_stack.py). A file is known by its path, size and modification
    time, so one that changed (a frame still being written) is opened afresh. Reads of one file are serialised
    (tifffile shares one file handle per file); the least recently used file is closed beyond ``size``."""

    def __init__(self, size: int = 4):
        import threading
        from collections import OrderedDict

        self.size, self.lock = size, threading.Lock()
        self.entries: OrderedDict[tuple[str, int, int], tuple[Any, list[Any], Any]] = OrderedDict()

    def pages(self, path: Path) -> tuple[list[Any], Any]:
        """(full-resolution pages, the lock to hold while decoding them) of an open TIFF."""
        import threading

        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key][1], self.entries[key][2]
        tif = _open_tiff(path)
        try:
            pages = _tiff_pages(tif)
        except Exception:
            tif.close()
            raise
        entry = (tif, pages, threading.Lock())
        with self.lock:
            self.entries[key] = entry
            while len(self.entries) > self.size:
                _, (old, _, old_lock) = self.entries.popitem(last=False)
                with old_lock:
                    old.close()
        return pages, entry[2]

    def close_all(self) -> None:
        """Close every kept file (at exit, so none is left for the interpreter to complain about)."""
        with self.lock:
            while self.entries:
                _, (tif, _, lock) = self.entries.popitem()
                with lock:
                    tif.close()


_OPEN_TIFFS = _OpenTiffs()
atexit.register(_OPEN_TIFFS.close_all)


def _read_tiff_page(path: Path, page_index: int, notes: list[str]) -> np.ndarray:
    pages, lock = _OPEN_TIFFS.pages(path)
    page = pages[page_index]
    with lock:
        try:
            data = page.asarray()
        except Exception as err:  # tifffile raises many types for damaged data
            raise UnreadableImageError(path, _decode_failure(page, page_index, err)) from err
    if page.photometric == 3 and page.colormap is not None:  # PALETTE
        data = _palette_to_grey(data, page.colormap, path, notes)
    return to_grey(data, path, notes)


def _is_grey_page(page: Any) -> bool:
    """A page of one grey sample per pixel (no palette): what :func:`_tiff_page_bands` can decode band by band."""
    return page.samplesperpixel == 1 and page.photometric in (0, 1) and len(page.shape) == 2


def _tiff_page_bands(path: Path, page_index: int, windows: Sequence[tuple[int, int]]) -> Iterator[np.ndarray]:
    """Rows ``[a, b)`` of a grey TIFF page for each window (non-decreasing), decoded one strip (or one row of tiles)
    after another: rows are dropped once no later window needs them, so memory holds about one window plus one
    row of segments, whatever the page's size. Values as stored, as :func:`_read_tiff_page` reads them."""
    tif = _open_tiff(path)  # its own handle: a long pass must not hold the shared handle's lock
    with tif:
        page = _tiff_pages(tif)[page_index]
        height, width = page.shape
        pending = list(windows)
        kept = np.empty((0, width), page.dtype)  # rows [kept_start, kept_start + len(kept)) of the page
        kept_start = 0
        block: np.ndarray | None = None  # the row of segments being assembled
        block_row = 0

        def complete(rows: np.ndarray) -> Iterator[np.ndarray]:
            nonlocal kept, kept_start
            kept = np.concatenate([kept, rows]) if len(kept) else rows
            while pending and pending[0][1] <= kept_start + len(kept):
                a, b = pending.pop(0)
                band = kept[a - kept_start : b - kept_start]
                yield band.copy()
            drop = min((pending[0][0] if pending else height) - kept_start, len(kept))
            if drop > 0:
                kept, kept_start = kept[drop:], kept_start + drop

        try:
            for segment, (_, _, y, x, _), shape in page.segments(maxworkers=1):
                if block is not None and y != block_row:
                    yield from complete(block)
                    block = None
                if block is None:
                    block_row = y
                    block = np.zeros((min(shape[1], height - y), width), page.dtype)
                if segment is not None:
                    data = np.asarray(segment).reshape(shape)[0, : block.shape[0], : width - x, 0]
                    block[: data.shape[0], x : x + data.shape[1]] = data
            if block is not None:
                yield from complete(block)
        except Exception as err:  # tifffile raises many types for damaged data
            if isinstance(err, UnreadableImageError):
                raise
            raise UnreadableImageError(path, _decode_failure(page, page_index, err)) from err
        if pending:
            raise UnreadableImageError(path, f"page {page_index} ended before rows {pending[0][0]}-{pending[0][1]}")


def _read_other(path: Path, notes: list[str]) -> np.ndarray:
    import cv2

    buffer = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if image is None:
        raise UnreadableImageError(path, "not a readable PNG/JPEG/BMP image (empty, truncated or corrupt)")
    if image.ndim == 3:
        order = [2, 1, 0, 3][: image.shape[-1]]
        image = image[..., order]  # OpenCV's BGR(A) -> RGB(A)
    return to_grey(image, path, notes)


@dataclass
class _FileFrames:
    """The frames of one file: (path, page index) pairs plus their metadata."""

    path: Path
    pages: int
    shape: tuple[int, int]
    dtype: np.dtype
    metadata: list[SemMetadata]
    truth: list[dict[str, Any]]
    recorded: list[dict[str, float]] = field(default_factory=list)


def _inspect_file(path: Path, notes: list[str]) -> _FileFrames:
    """Read a file's header and first frame: frame count, shape, dtype, metadata."""
    if not path.exists():
        raise UnreadableImageError(path, "no such file")
    if path.suffix.lower() in TIFF_SUFFIXES:
        tif = _open_tiff(path)
        with tif:
            pages = _tiff_pages(tif)
            meta = read_tiff_metadata(tif)
            axes = tif.series[0].axes if tif.series else ""
            extra = [a for a in axes if a not in "YXS"]
            if len(extra) > 1:  # e.g. an ImageJ hyperstack TZYX: every plane becomes one frame, in file order
                notes.append(
                    f"'{path.name}' has {len(axes)}-D data (axes {axes}); its {len(pages)} planes are read as one "
                    f"series in file order ({', '.join(extra)} nested): save the focus axis alone for a focus series"
                )
            truths = [_page_truth(p) for p in pages]
            page = pages[0]
            header_only = _is_grey_page(page) and page.shape[0] * page.shape[1] > LARGE_FRAME_PIXELS
        # a large grey page is not decoded here: its shape and type are in its header
        first = np.empty((0, 0), page.dtype) if header_only else _read_tiff_page(path, 0, notes)
        shape, dtype = (tuple(page.shape), page.dtype) if header_only else (first.shape, first.dtype)
        n = len(pages)
    elif path.suffix.lower() in OTHER_SUFFIXES:
        first, meta, n = _read_other(path, notes), SemMetadata(), 1
        truths = [{}]
        shape, dtype = first.shape, first.dtype
    else:
        raise UnreadableImageError(path, f"unsupported file type '{path.suffix}' (use {', '.join(IMAGE_SUFFIXES)})")
    if meta == SemMetadata():
        meta = read_sidecar(path, shape[1]) or meta
    meta, dropped = meta.plausible()
    notes += [f"'{path.name}': {note}" for note in dropped]
    metas = [_with_truth(meta, t) for t in truths]
    return _FileFrames(path, n, shape, dtype, metas, truths)


def center_crop(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The centred ``shape`` (rows, cols) part of an image at least that large (the one centre-crop rule: common
    frame sizes here, the model's 320x240 crop in :func:`napari_sem_focus.infer.crop_or_pad`)."""
    r0 = (image.shape[0] - shape[0]) // 2
    c0 = (image.shape[1] - shape[1]) // 2
    return image[r0 : r0 + shape[0], c0 : c0 + shape[1]]


def list_frame_files(folder: Path) -> list[Path]:
    """Image files of a folder (not recursive, hidden files skipped), in natural filename order."""
    files = [
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    return sorted(files, key=natural_key)


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
    otherwise by natural filename order. A fibsem-os autofocus result folder (:mod:`napari_sem_focus.sweeps`) is
    read as its iterations, each with the working distance and fibsem's score from its ``data.json``.
    """
    from .sweeps import fibsem_autofocus_sweep

    notes: list[str] = []
    sweep = None
    if isinstance(source, str | Path):
        src = Path(source)
        if src.is_dir():
            sweep = fibsem_autofocus_sweep(src)
            files = [f.path for f in sweep.frames] if sweep else list_frame_files(src)
            if not files:
                raise SeriesError(f"'{src}': the folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        elif src.exists():
            files = [src]
        else:
            raise UnreadableImageError(src, "no such file or folder")
    else:
        files = [Path(p) for p in source]
        if not files:
            raise SeriesError("no files given")
        src = files[0].parent
    infos = [_inspect_file(f, notes) for f in files]
    if sweep is not None:
        notes.append(sweep.note)
        for info, swept in zip(infos, sweep.frames, strict=True):
            info.metadata = [replace(m, working_distance_mm=swept.working_distance_mm) for m in info.metadata]
            info.recorded = [swept.recorded] * info.pages

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
    dtype = np.result_type(*dtypes) if len(dtypes) > 1 else dtypes.pop()

    entries = [(info, page) for info in infos for page in range(info.pages)]
    metas = [info.metadata[page] for info, page in entries]
    wds = [m.working_distance_mm for m in metas]
    if len(files) > 1 and all(w is not None for w in wds) and len(set(wds)) > 1:
        order = sorted(range(len(entries)), key=lambda k: wds[k])  # type: ignore[arg-type, return-value]
        entries = [entries[k] for k in order]
        notes.append("frames ordered by working distance")

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


def roi_from_vertices(vertices: Any) -> tuple[float, float, float, float]:
    """The region of interest (x, y, width, height; pixels) bounding a shape's (row, col) vertices, e.g. a
    rectangle drawn in napari. Pixel ``i`` spans ``[i - 0.5, i + 0.5]`` in napari's data coordinates, so a
    rectangle from (-0.5, -0.5) to (239.5, 319.5) is the 320x240 region at x 0, y 0."""
    points = np.asarray(vertices, dtype=float).reshape(-1, 2)
    if points.size == 0 or not np.isfinite(points).all():
        raise InvalidImageError("the region of interest has no (finite) vertices")
    (r0, c0), (r1, c1) = points.min(axis=0) + 0.5, points.max(axis=0) + 0.5
    return float(c0), float(r0), float(c1 - c0), float(r1 - r0)


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

    from .atomic import atomic_path

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
